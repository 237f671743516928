"""Candidate particles on one frame, found at low resolution: block mean → flat field → matched filter → blobs.

Why this shape: LPTEM frames are shot-noise limited (per-pixel CNR 0.4–0.65) with slow gradients, vignettes
and dose steps. A block mean (``factor`` x ``factor``) keeps a ≥ 15 px particle several cells wide while it
cuts the noise by ``factor`` and the work by ``factor²``; dividing by a wide Gaussian background turns
gradients and dose steps into a flat field of relative contrast; a Gaussian matched filter of about a small
particle's size then lifts particles well above the noise, whose level is measured on the frame itself
(median absolute deviation), so one threshold in noise sigmas works at every dose. Dark (gold) and bright
(low-density pockets, inverted contrast) particles are found alike, with their sign as ``polarity``.

Coordinates are full-resolution pixels: x = column, y = row, origin at the centre of the top-left pixel.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from sam4em_live.segment.embedded.window import block_mean

#: Directions of the rough outline (a star polygon: the farthest pixel of the blob in each direction).
OUTLINE_DIRECTIONS = 16
#: Scale of the flat-field background, in full-resolution pixels: wider than the largest particle (≈120 px).
BACKGROUND_SIGMA_PX = 24.0
#: Cells above this many noise sigmas in the first pass are left out of the second pass's background.
OBJECT_SIGMA = 2.5
#: Order of the polynomial surface under the background (4: a vignette's corners, not only a ramp).
SURFACE_ORDER = 4
#: The background is fitted and smoothed on a grid of about this many coarse cells a side.
COARSE_CELLS = 48
#: Matched filter, in full-resolution pixels: about the radius of the smallest particle worth proposing.
MATCHED_SIGMA_PX = 4.0
#: Blobs extend down to this fraction of the seed threshold (hysteresis), so outlines follow the particle.
LOW_FRACTION = 0.45
#: Candidates whose centroid is closer than this to the frame's border are left out (px).
EDGE_MARGIN_PX = 8.0
#: A candidate overlapping one of the other polarity this many times stronger is its halo (`_without_halos`).
HALO_RATIO = 2.0
#: Matched-filter scales, in units of ``matched_sigma_px``.
MATCHED_SCALES = (1.0, 2.0)


@dataclass(frozen=True, slots=True)
class Candidate:
    """One candidate particle on one frame.

    ``score``: peak matched-filter response in noise sigmas; ``contrast``: mean relative deviation of the
    blob from its background (signed by ``polarity``: +1 dark, -1 bright, so it is positive);
    ``diameter_px``: equivalent diameter of the blob's area; ``elongation``: ratio of its principal axes
    (1 = round); ``box``: x0, y0, x1, y1; ``outline``: a rough star polygon of (x, y) vertices.
    """

    x: float
    y: float
    score: float
    contrast: float
    polarity: int
    area_px: float
    diameter_px: float
    elongation: float
    box: tuple[float, float, float, float]
    outline: tuple[tuple[float, float], ...]

    def as_dict(self) -> dict[str, object]:
        """JSON-able form (proposals on the control channel, events)."""
        return {"x": round(self.x, 2), "y": round(self.y, 2), "score": round(self.score, 2),
                "contrast": round(self.contrast, 4), "polarity": "dark" if self.polarity > 0 else "bright",
                "area_px": round(self.area_px, 1), "diameter_px": round(self.diameter_px, 2),
                "elongation": round(self.elongation, 2), "box": [round(v, 1) for v in self.box],
                "outline": [[round(x, 1), round(y, 1)] for x, y in self.outline]}


@dataclass(frozen=True, slots=True)
class DetectorSettings:
    """How the detector looks.

    ``cells``: the low-resolution image is about this many cells a side (the block factor follows);
    ``threshold_sigma``: level of the matched filter in noise sigmas a particle must reach (blobs extend down
    to `LOW_FRACTION` of it); ``seed_sigma``: blobs are seeded from this level (default: ``threshold_sigma``)
    — lower, so that a caller averaging scores over frames sees the faint ones; ``polarity``: dark, bright
    or both.
    """

    cells: int = 128
    threshold_sigma: float = 5.0
    seed_sigma: float | None = None
    polarity: str = "both"
    matched_sigma_px: float = MATCHED_SIGMA_PX
    background_sigma_px: float = BACKGROUND_SIGMA_PX


def block_factor(shape: tuple[int, int], cells: int) -> int:
    """The block factor for a frame: about ``cells`` cells along the longer side, at least 1."""
    return max(1, math.ceil(max(shape) / cells))


class ParticleDetector:
    """Finds `Candidate` particles on a frame (stateless apart from its settings; one thread at a time)."""

    def __init__(self, settings: DetectorSettings | None = None) -> None:
        self.settings = settings or DetectorSettings()

    def detect(self, pixels: np.ndarray) -> list[Candidate]:
        """Candidates on ``pixels`` (2-D, any real dtype), strongest first."""
        s = self.settings
        factor = block_factor((int(pixels.shape[0]), int(pixels.shape[1])), s.cells)
        rows, cols = (pixels.shape[0] // factor) * factor, (pixels.shape[1] // factor) * factor
        if rows < 4 * factor or cols < 4 * factor:
            return []
        low = block_mean(pixels[:rows, :cols], factor)
        relative = self._flat_field(low, factor)
        z = np.zeros_like(relative)
        for scale in MATCHED_SCALES:  # small and large particles: the best of two matched filters, each in sigmas
            sigma = max(scale * s.matched_sigma_px / factor, 0.7)
            response = ndimage.gaussian_filter(relative, sigma, mode="nearest")
            noise = _robust_sigma(response, max(4 * sigma, 3.0))
            if noise > 0:
                response /= noise
                z = np.where(np.abs(response) > np.abs(z), response, z)
        # dark particles absorb: relative < 0 → positive "darkness" z
        out: list[Candidate] = []
        for polarity in _polarities(s.polarity):
            out.extend(self._blobs(polarity * -z, polarity * -relative, factor, polarity))
        out = _without_halos(out)
        # the flat field is least sure at the border: a centroid that close is more often its error than a
        # particle (one entering the field is found a frame or two later, once it is further in)
        margin = EDGE_MARGIN_PX
        out = [c for c in out if margin <= c.x <= cols - 1 - margin and margin <= c.y <= rows - 1 - margin]
        out.sort(key=lambda c: -c.score)
        return out

    def _flat_field(self, low: np.ndarray, factor: int) -> np.ndarray:
        """Relative deviation from a wide background: gradients, vignettes and dose steps divide out."""
        sigma_cells = self.settings.background_sigma_px / factor
        relative = _relative(low, _wide_background(low, sigma_cells))
        # second pass without what stood out in the first: the particles' own cells are filled from around them
        smooth = ndimage.gaussian_filter(relative, max(self.settings.matched_sigma_px / factor, 0.7), mode="nearest")
        noise = _robust_sigma(smooth, max(4 * self.settings.matched_sigma_px / factor, 3.0))
        if noise <= 0:
            return relative
        objects = _inner(ndimage.binary_dilation(np.abs(smooth) > OBJECT_SIGMA * noise, iterations=2))
        return _relative(low, _wide_background(low, sigma_cells, (~objects).astype(np.float32)))

    def _blobs(self, z: np.ndarray, contrast: np.ndarray, factor: int, polarity: int) -> list[Candidate]:
        high = self.settings.threshold_sigma
        seed = high if self.settings.seed_sigma is None else min(self.settings.seed_sigma, high)
        labels, n = ndimage.label(z > min(high * LOW_FRACTION, seed))
        if n == 0:
            return []
        keep = np.unique(labels[z >= seed])  # blobs that hold a seed (cheaper than a per-label maximum)
        out = []
        objects = ndimage.find_objects(labels)
        for label in keep:
            sl = objects[label - 1]
            if sl is None:
                continue
            blob = labels[sl] == label
            out.append(_candidate(blob, sl, z[sl], contrast[sl], factor, polarity))
        return out


def _without_halos(candidates: list[Candidate]) -> list[Candidate]:
    """Candidates that are not another one's halo.

    Around a strong dark particle the background estimate and the filter leave a faint bright ring (and
    the reverse): a candidate overlapping one of the other polarity `HALO_RATIO` times stronger is that.
    """
    return [c for c in candidates
            if not any(o.polarity != c.polarity and o.score >= HALO_RATIO * c.score
                       and math.hypot(o.x - c.x, o.y - c.y) < (o.diameter_px + c.diameter_px) / 2 for o in candidates)]


def _wide_background(low: np.ndarray, sigma_cells: float, weights: np.ndarray | None = None) -> np.ndarray:
    """A Gaussian of ``sigma_cells`` at a coarser scale (a wide kernel at full size costs ~100x more), resized back.

    With ``weights`` (1 = background, 0 = a particle) it is a normalized convolution: the particles' cells
    are filled from their surroundings, so a large particle does not pull its own background towards it.
    """
    step = max(1, round(max(low.shape) / COARSE_CELLS))
    rows, cols = low.shape
    coarse_rows, coarse_cols = -(-rows // step), -(-cols // step)
    pad = ((0, coarse_rows * step - rows), (0, coarse_cols * step - cols))
    sigma = sigma_cells / step
    w = np.ones((coarse_rows, coarse_cols), np.float32) if weights is None else block_mean(
        np.pad(weights, pad, mode="edge"), step)
    values = block_mean(np.pad(low if weights is None else low * weights, pad, mode="edge"), step)
    values /= np.maximum(w, np.float32(1e-3))
    # A Gaussian reflected at the border flattens a ramp there (bias ~ slope x sigma): smooth only what a
    # quadratic surface leaves, so gradients and vignettes reach the border intact.
    surface = _quadratic_surface(values, w)
    ratio = values / np.maximum(surface, np.float32(1e-6))
    coarse = ndimage.gaussian_filter(ratio * w, sigma, mode="reflect")
    coarse /= np.maximum(ndimage.gaussian_filter(w, sigma, mode="reflect"), np.float32(1e-3))
    coarse *= surface
    # back to cells: linear interpolation between coarse-cell centres, one small matrix product per axis
    # linear interpolation between coarse-cell centres, one axis at a time (ndimage.zoom: ~10x slower)
    coarse = np.pad(coarse, ((0, 1), (0, 1)), mode="edge")  # so that the last cells have a right neighbour
    left, frac = _interpolation(rows, coarse_rows, step)
    half = coarse[left] * (1 - frac)[:, None] + coarse[left + 1] * frac[:, None]
    left, frac = _interpolation(cols, coarse_cols, step)
    return half[:, left] * (1 - frac) + half[:, left + 1] * frac


def _quadratic_surface(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weighted least-squares polynomial surface (`SURFACE_ORDER`) through a (small, coarse) image."""
    rows, cols = values.shape
    basis = _surface_basis(rows, cols)
    # Normal equations with einsum, not lstsq: a multi-threaded BLAS on a busy machine took ~200 ms for this
    # 15-term fit (measured); the sums are ~30 k multiply-adds.
    w = np.clip(weights, 0, None).reshape(-1).astype(np.float64)
    weighted = basis * w[:, None]
    gram = np.einsum("ki,kj->ij", weighted, basis) + np.eye(basis.shape[1]) * 1e-9
    rhs = np.einsum("ki,k->i", weighted, values.reshape(-1).astype(np.float64))
    coef = np.linalg.solve(gram, rhs)
    return np.einsum("ki,i->k", basis, coef).reshape(rows, cols).astype(np.float32)


@functools.lru_cache(maxsize=16)
def _interpolation(n: int, n_coarse: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``n`` cells: the coarse cell left of it (centres at i*step + (step-1)/2) and the weight of the next."""
    pos = np.clip((np.arange(n, dtype=np.float32) - (step - 1) / 2) / step, 0, n_coarse - 1)
    left = np.floor(pos).astype(np.intp)  # the coarse image is padded by one: left + 1 is always there
    return left, (pos - left).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _surface_basis(rows: int, cols: int) -> np.ndarray:
    """Monomials x^i y^j (i + j <= `SURFACE_ORDER`) on a rows x cols grid scaled to [-0.5, 0.5]: (rows*cols, terms)."""
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float64)
    yy, xx = yy / max(rows - 1, 1) - 0.5, xx / max(cols - 1, 1) - 0.5
    terms = [xx**i * yy**j for i in range(SURFACE_ORDER + 1) for j in range(SURFACE_ORDER + 1 - i)]
    return np.stack(terms, axis=-1).reshape(-1, len(terms))


def _inner(objects: np.ndarray) -> np.ndarray:
    """The objects that do not touch the border.

    There, what stands out is mostly the flat field's own error (a vignette's corner), which masking would
    carry on inwards instead of correcting.
    """
    labels, _ = ndimage.label(objects)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    return objects & ~np.isin(labels, border[border > 0])


def _relative(low: np.ndarray, background: np.ndarray) -> np.ndarray:
    np.maximum(background, np.float32(1e-6), out=background)
    relative = low / background
    relative -= np.float32(1.0)
    return relative


def _polarities(polarity: str) -> tuple[int, ...]:
    """+1 looks for dark particles, -1 for bright ones."""
    return {"dark": (1,), "bright": (-1,), "both": (1, -1)}[polarity]


def _robust_sigma(values: np.ndarray, detrend_cells: float) -> float:
    """Noise level: median absolute deviation of a subsample, minus what varies slower than ``detrend_cells``.

    A vignette the flat field did not follow must not count as noise.
    """
    sub = values[::2, ::2]
    sample = (sub - ndimage.gaussian_filter(sub, detrend_cells / 2, mode="nearest")).ravel()
    median = float(np.median(sample))
    return 1.4826 * float(np.median(np.abs(sample - median)))


def _candidate(blob: np.ndarray, sl: tuple[slice, ...], z: np.ndarray, contrast: np.ndarray, factor: int,
               polarity: int) -> Candidate:
    """Measure one blob (low-resolution cells) in full-resolution pixels."""
    ys, xs = np.nonzero(blob)
    weights = np.clip(z[ys, xs], 0, None).astype(np.float64) + 1e-9
    r0, c0 = sl[0].start, sl[1].start
    cy = float(np.average(ys, weights=weights)) + r0
    cx = float(np.average(xs, weights=weights)) + c0
    # cell (i) covers full pixels i*f .. i*f+f-1: its centre is at i*f + (f-1)/2
    to_px = lambda v: v * factor + (factor - 1) / 2  # noqa: E731
    area = float(len(ys)) * factor * factor
    dy, dx = ys + r0 - cy, xs + c0 - cx
    cov = np.cov(np.vstack([dx, dy])) if len(ys) > 2 else np.eye(2) * 0.25
    eig = np.linalg.eigvalsh(cov + np.eye(2) * (1 / 12))  # a cell's own extent
    elongation = float(math.sqrt(eig[1] / max(eig[0], 1e-9)))
    box = (float(c0 * factor), float(r0 * factor), float((sl[1].stop) * factor - 1), float((sl[0].stop) * factor - 1))
    return Candidate(
        x=to_px(cx), y=to_px(cy), score=float(z[blob].max()), contrast=float(contrast[blob].mean()),
        polarity=polarity, area_px=area, diameter_px=2.0 * math.sqrt(area / math.pi), elongation=elongation,
        box=box, outline=_outline(dx, dy, cx, cy, factor),
    )


def _outline(dx: np.ndarray, dy: np.ndarray, cx: float, cy: float, factor: int) -> tuple[tuple[float, float], ...]:
    """Star polygon: in each of `OUTLINE_DIRECTIONS` sectors, the farthest cell edge from the centroid."""
    angles = np.arctan2(dy, dx)
    radii = np.hypot(dx, dy) + 0.5
    sector = ((angles + math.pi) / (2 * math.pi) * OUTLINE_DIRECTIONS).astype(int) % OUTLINE_DIRECTIONS
    reach = np.zeros(OUTLINE_DIRECTIONS)
    np.maximum.at(reach, sector, radii)
    points = []
    for k in range(OUTLINE_DIRECTIONS):
        theta = -math.pi + (k + 0.5) * 2 * math.pi / OUTLINE_DIRECTIONS
        r = reach[k] if reach[k] > 0 else 0.5
        points.append(((cx + r * math.cos(theta)) * factor + (factor - 1) / 2,
                       (cy + r * math.sin(theta)) * factor + (factor - 1) / 2))
    return tuple(points)
