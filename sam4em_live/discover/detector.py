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
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from sam4em_live.discover.readout import quadrant_gains
from sam4em_live.segment.embedded.window import block_mean

if TYPE_CHECKING:
    from collections.abc import Callable

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
#: A candidate overlapping one of the other polarity this many times stronger is its halo (`_BlobTable.halos`).
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


def _go_on() -> None:
    """No pause between the detector's stages."""


def block_factor(shape: tuple[int, int], cells: int) -> int:
    """The block factor for a frame: about ``cells`` cells along the longer side, at least 1."""
    return max(1, math.ceil(max(shape) / cells))


class ParticleDetector:
    """Finds `Candidate` particles on a frame (stateless apart from its settings; one thread at a time)."""

    def __init__(self, settings: DetectorSettings | None = None) -> None:
        self.settings = settings or DetectorSettings()

    def detect(self, pixels: np.ndarray, pause: Callable[[], None] | None = None) -> list[Candidate]:
        """Candidates on ``pixels`` (2-D, any real dtype), strongest first.

        ``pause`` is called between the stages (a caller on another thread may wait there for its turn).
        """
        between = pause or _go_on
        s = self.settings
        factor = block_factor((int(pixels.shape[0]), int(pixels.shape[1])), s.cells)
        rows, cols = (pixels.shape[0] // factor) * factor, (pixels.shape[1] // factor) * factor
        if rows < 4 * factor or cols < 4 * factor:
            return []
        low = block_mean(pixels[:rows, :cols], factor)
        gains = quadrant_gains(low, (int(pixels.shape[0]), int(pixels.shape[1])), factor)
        if gains is not None:  # a 4-port camera's gain steps: a particle's contrast, which the flat field cannot follow
            low /= gains
        between()
        relative = self._flat_field(low, factor)
        between()
        z = np.zeros_like(relative)
        for scale in MATCHED_SCALES:  # small and large particles: the best of two matched filters, each in sigmas
            sigma = max(scale * s.matched_sigma_px / factor, 0.7)
            response = ndimage.gaussian_filter(relative, sigma, mode="nearest")
            noise = _robust_sigma(response, max(4 * sigma, 3.0))
            if noise > 0:
                response /= noise
                z = np.where(np.abs(response) > np.abs(z), response, z)
        between()
        # dark particles absorb: relative < 0 → positive "darkness" z
        blobs = [self._blobs(polarity * -z, polarity * -relative, factor, polarity) for polarity in _polarities(s.polarity)]
        found = _BlobTable.concat([b for b in blobs if b is not None])
        if found is None:
            return []
        # the flat field is least sure at the border: a centroid that close is more often its error than a
        # particle (one entering the field is found a frame or two later, once it is further in)
        margin = EDGE_MARGIN_PX
        keep = (~found.halos() & (found.x >= margin) & (found.x <= cols - 1 - margin)
                & (found.y >= margin) & (found.y <= rows - 1 - margin))
        out = found.candidates(np.flatnonzero(keep))
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
        objects = _inner(_dilated(np.abs(smooth) > OBJECT_SIGMA * noise, 2))
        return _relative(low, _wide_background(low, sigma_cells, (~objects).astype(np.float32)))

    def _blobs(self, z: np.ndarray, contrast: np.ndarray, factor: int, polarity: int) -> _BlobTable | None:
        high = self.settings.threshold_sigma
        seed = high if self.settings.seed_sigma is None else min(self.settings.seed_sigma, high)
        labels, n = ndimage.label(z > min(high * LOW_FRACTION, seed))
        if n == 0:
            return None
        # blobs that hold a seed (a lookup table by label, cheaper than a per-label maximum)
        keep = np.zeros(n + 1, bool)
        keep[labels[z >= seed]] = True
        keep[0] = False
        return _BlobTable.measure(labels, keep, z, contrast, factor, polarity)


@dataclass(frozen=True, slots=True)
class _BlobTable:
    """The blobs of one run as columns (one row per blob), measured in a few whole-array passes.

    Why columns: a frame holds tens of blobs (the faint seeds are kept for the caller's score mean), and
    measuring each with its own small numpy calls cost ~10 ms a run at 1024², nearly all of it holding the
    GIL the frame loop needs; per-label sums (`numpy.bincount`) measure them all at once. Units:
    low-resolution cells unless noted; cell i covers full-resolution pixels i*f .. i*f+f-1.
    """

    factor: int
    polarity: np.ndarray  # (n,) +1 dark, -1 bright
    cx: np.ndarray  # response-weighted centroid, cells
    cy: np.ndarray
    cells: np.ndarray  # area, cells
    score: np.ndarray  # peak response, noise sigmas
    contrast: np.ndarray  # mean relative deviation, signed by polarity
    elongation: np.ndarray
    box: np.ndarray  # (n, 4) x0, y0, x1, y1, full-resolution pixels
    reach: np.ndarray  # (n, OUTLINE_DIRECTIONS) farthest cell edge from the centroid per sector, cells

    @property
    def x(self) -> np.ndarray:
        """Centroid column, full-resolution pixels (a cell's centre is at i*f + (f-1)/2)."""
        return np.asarray(self.cx * self.factor + (self.factor - 1) / 2)

    @property
    def y(self) -> np.ndarray:
        return np.asarray(self.cy * self.factor + (self.factor - 1) / 2)

    @property
    def diameter_px(self) -> np.ndarray:
        """Equivalent diameter of the blob's area, full-resolution pixels."""
        return np.asarray(2.0 * np.sqrt(self.cells * self.factor * self.factor / math.pi))

    @staticmethod
    def measure(labels: np.ndarray, keep: np.ndarray, z: np.ndarray, contrast: np.ndarray, factor: int,
                polarity: int) -> _BlobTable | None:
        """The blobs of ``labels`` whose ``keep`` entry (by label) is set, in label order."""
        ys, xs = np.nonzero(keep[labels])
        if len(ys) == 0:
            return None
        kept = np.flatnonzero(keep)
        row_of = np.zeros(len(keep), np.intp)
        row_of[kept] = np.arange(len(kept))
        row = row_of[labels[ys, xs]]
        n = len(kept)
        zs = z[ys, xs].astype(np.float64)
        cells = np.bincount(row, minlength=n).astype(np.float64)
        weights = np.clip(zs, 0, None) + 1e-9
        total = np.bincount(row, weights, n)
        cx = np.bincount(row, weights * xs, n) / total
        cy = np.bincount(row, weights * ys, n) / total
        score = np.full(n, -np.inf)
        np.maximum.at(score, row, zs)
        mean_contrast = np.bincount(row, contrast[ys, xs].astype(np.float64), n) / cells
        dx, dy = xs - cx[row], ys - cy[row]
        # rough outline: in each sector around the centroid, the farthest cell edge
        sector = ((np.arctan2(dy, dx) + math.pi) / (2 * math.pi) * OUTLINE_DIRECTIONS).astype(int) % OUTLINE_DIRECTIONS
        reach = np.zeros(n * OUTLINE_DIRECTIONS)
        np.maximum.at(reach, row * OUTLINE_DIRECTIONS + sector, np.hypot(dx, dy) + 0.5)
        slices = ndimage.find_objects(labels)
        bounds = np.array([(sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
                           for sl in (slices[label - 1] for label in kept) if sl is not None], dtype=np.float64)
        box = np.column_stack([bounds[:, 0] * factor, bounds[:, 1] * factor,
                               bounds[:, 2] * factor - 1, bounds[:, 3] * factor - 1])
        return _BlobTable(factor, np.full(n, polarity), cx, cy, cells, score, mean_contrast,
                          _elongation(row, dx, dy, cells, n), box, reach.reshape(n, OUTLINE_DIRECTIONS))

    @staticmethod
    def concat(tables: list[_BlobTable]) -> _BlobTable | None:
        if len(tables) <= 1:
            return tables[0] if tables else None
        columns = [np.concatenate([getattr(t, name) for t in tables]) for name in
                   ("polarity", "cx", "cy", "cells", "score", "contrast", "elongation", "box", "reach")]
        return _BlobTable(tables[0].factor, *columns)

    def halos(self) -> np.ndarray:
        """Which blobs are another one's halo.

        Around a strong dark particle the background estimate and the filter leave a faint bright ring (and
        the reverse): a blob overlapping one of the other polarity `HALO_RATIO` times stronger is that.
        """
        x, y, d = self.x, self.y, self.diameter_px
        other = self.polarity[:, None] != self.polarity[None, :]
        stronger = self.score[None, :] >= HALO_RATIO * self.score[:, None]
        overlaps = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :]) < (d[:, None] + d[None, :]) / 2
        return np.asarray((other & stronger & overlaps).any(axis=1))

    def candidates(self, rows: np.ndarray) -> list[Candidate]:
        """`Candidate` records of the blobs in ``rows`` (full-resolution pixels)."""
        f = self.factor
        theta = -math.pi + (np.arange(OUTLINE_DIRECTIONS) + 0.5) * 2 * math.pi / OUTLINE_DIRECTIONS
        reach = np.where(self.reach[rows] > 0, self.reach[rows], 0.5)
        ox = (self.cx[rows, None] + reach * np.cos(theta)) * f + (f - 1) / 2
        oy = (self.cy[rows, None] + reach * np.sin(theta)) * f + (f - 1) / 2
        columns = zip(self.x[rows].tolist(), self.y[rows].tolist(), self.score[rows].tolist(),
                      self.contrast[rows].tolist(), self.polarity[rows].tolist(), (self.cells[rows] * f * f).tolist(),
                      self.diameter_px[rows].tolist(), self.elongation[rows].tolist(), self.box[rows].tolist(),
                      np.stack([ox, oy], axis=-1).tolist(), strict=True)
        return [Candidate(x, y, score, contrast, int(polarity), area, diameter, elongation, (b[0], b[1], b[2], b[3]),
                          tuple((p[0], p[1]) for p in outline))
                for x, y, score, contrast, polarity, area, diameter, elongation, b, outline in columns]


def _elongation(row: np.ndarray, dx: np.ndarray, dy: np.ndarray, cells: np.ndarray, n: int) -> np.ndarray:
    """Ratio of the principal axes of each blob's cells: their sample covariance plus a cell's own extent."""
    mx, my = np.bincount(row, dx, n) / cells, np.bincount(row, dy, n) / cells
    ex, ey = dx - mx[row], dy - my[row]
    dof = np.maximum(cells - 1, 1)
    sxx, syy = np.bincount(row, ex * ex, n) / dof, np.bincount(row, ey * ey, n) / dof
    sxy = np.bincount(row, ex * ey, n) / dof
    few = cells <= 2  # too few cells for a covariance: a round quarter-cell spread
    sxx, syy, sxy = np.where(few, 0.25, sxx) + 1 / 12, np.where(few, 0.25, syy) + 1 / 12, np.where(few, 0.0, sxy)
    half_sum, half_diff = (sxx + syy) / 2, np.hypot((sxx - syy) / 2, sxy)
    return np.asarray(np.sqrt((half_sum + half_diff) / np.maximum(half_sum - half_diff, 1e-9)))


def _wide_background(low: np.ndarray, sigma_cells: float, weights: np.ndarray | None = None) -> np.ndarray:
    """A Gaussian of ``sigma_cells`` at a coarser scale (a wide kernel at full size costs ~100x more), resized back.

    With ``weights`` (1 = background, 0 = a particle) it is a normalized convolution: the particles' cells
    are filled from their surroundings, so a large particle does not pull its own background towards it.
    """
    step = max(1, round(max(low.shape) / COARSE_CELLS))
    rows, cols = low.shape
    coarse_rows, coarse_cols = -(-rows // step), -(-cols // step)
    pad = (coarse_rows * step - rows, coarse_cols * step - cols)
    sigma = sigma_cells / step
    w = np.ones((coarse_rows, coarse_cols), np.float32) if weights is None else block_mean(
        _edge_padded(weights, *pad), step)
    values = block_mean(_edge_padded(low if weights is None else low * weights, *pad), step)
    values /= np.maximum(w, np.float32(1e-3))
    # A Gaussian reflected at the border flattens a ramp there (bias ~ slope x sigma): smooth only what a
    # quadratic surface leaves, so gradients and vignettes reach the border intact.
    surface = _quadratic_surface(values, w)
    ratio = values / np.maximum(surface, np.float32(1e-6))
    coarse = ndimage.gaussian_filter(ratio * w, sigma, mode="reflect")
    coarse /= np.maximum(ndimage.gaussian_filter(w, sigma, mode="reflect"), np.float32(1e-3))
    coarse *= surface
    # back to cells: linear interpolation between coarse-cell centres, one axis at a time (ndimage.zoom: ~10x slower)
    coarse = _edge_padded(coarse, 1, 1)  # so that the last cells have a right neighbour
    left, frac = _interpolation(rows, coarse_rows, step)
    half = coarse[left] * (1 - frac)[:, None] + coarse[left + 1] * frac[:, None]
    left, frac = _interpolation(cols, coarse_cols, step)
    return half[:, left] * (1 - frac) + half[:, left + 1] * frac


def _edge_padded(image: np.ndarray, rows_after: int, cols_after: int) -> np.ndarray:
    """``np.pad(image, ((0, rows_after), (0, cols_after)), mode="edge")`` without its generic machinery (~10x)."""
    if rows_after == 0 and cols_after == 0:
        return image
    rows, cols = image.shape
    out = np.empty((rows + rows_after, cols + cols_after), image.dtype)
    out[:rows, :cols] = image
    out[rows:, :cols] = image[-1:]
    out[:, cols:] = out[:, cols - 1 : cols]
    return out


def _quadratic_surface(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weighted least-squares polynomial surface (`SURFACE_ORDER`) through a (small, coarse) image."""
    rows, cols = values.shape
    py, px = _powers(rows), _powers(cols)
    low_py, low_px = py[:, : SURFACE_ORDER + 1], px[:, : SURFACE_ORDER + 1]
    # Normal equations from separable moments: every sum of w·x^i·y^j over the grid is one entry of
    # Y^T W X, a product of (9 x 43) (43 x 43) (43 x 9) matrices, ~15x cheaper than summing over the
    # (cells x terms) basis; no large product either (a multi-threaded BLAS on a busy machine took ~200 ms
    # for an lstsq of this fit, measured).
    w = np.clip(weights, 0, None).astype(np.float64)
    moments = py.T @ w @ px  # [q, p]: sum of w y^q x^p
    first = low_py.T @ (w * values.astype(np.float64)) @ low_px  # [j, i]: sum of w v y^j x^i
    xi, yj = _SURFACE_TERMS
    gram = moments[yj[:, None] + yj[None, :], xi[:, None] + xi[None, :]] + np.eye(len(xi)) * 1e-9
    coef = np.linalg.solve(gram, first[yj, xi])
    grid = np.zeros((SURFACE_ORDER + 1, SURFACE_ORDER + 1))
    grid[yj, xi] = coef
    return np.asarray(low_py @ grid @ low_px.T, dtype=np.float32)


#: The surface's monomials x^i y^j with i + j <= `SURFACE_ORDER`: (exponents of x, exponents of y).
_SURFACE_TERMS = (np.array([i for i in range(SURFACE_ORDER + 1) for _ in range(SURFACE_ORDER + 1 - i)]),
                  np.array([j for i in range(SURFACE_ORDER + 1) for j in range(SURFACE_ORDER + 1 - i)]))


@functools.lru_cache(maxsize=16)
def _powers(n: int) -> np.ndarray:
    """(n, 2 * `SURFACE_ORDER` + 1): t^k for n points t spread over [-0.5, 0.5] (rows or columns of the grid)."""
    t = np.arange(n, dtype=np.float64) / max(n - 1, 1) - 0.5
    return np.asarray(t[:, None] ** np.arange(2 * SURFACE_ORDER + 1))


@functools.lru_cache(maxsize=16)
def _interpolation(n: int, n_coarse: int, step: int) -> tuple[np.ndarray, np.ndarray]:
    """For each of ``n`` cells: the coarse cell left of it (centres at i*step + (step-1)/2) and the weight of the next."""
    pos = np.clip((np.arange(n, dtype=np.float32) - (step - 1) / 2) / step, 0, n_coarse - 1)
    left = np.floor(pos).astype(np.intp)  # the coarse image is padded by one: left + 1 is always there
    return left, (pos - left).astype(np.float32)


def _dilated(mask: np.ndarray, steps: int) -> np.ndarray:
    """``ndimage.binary_dilation(mask, iterations=steps)`` (4-connected steps), by shifted ORs: ~20x cheaper."""
    out = mask.copy()
    for _ in range(steps):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


def _inner(objects: np.ndarray) -> np.ndarray:
    """The objects that do not touch the border.

    There, what stands out is mostly the flat field's own error (a vignette's corner), which masking would
    carry on inwards instead of correcting.
    """
    labels, n = ndimage.label(objects)
    touching = np.zeros(n + 1, bool)  # by label (a lookup table: np.isin sorts)
    touching[labels[0]] = touching[labels[-1]] = touching[labels[:, 0]] = touching[labels[:, -1]] = True
    return objects & ~touching[labels]


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
    sample -= _median(sample)
    return 1.4826 * _median(np.abs(sample, out=sample))


def _median(values: np.ndarray) -> float:
    """``np.median`` of a 1-D array, without its generic machinery (a third of its time on 4 k values); reorders it."""
    n = len(values)
    if n == 0:
        return math.nan
    half = n // 2
    values.partition([half - 1, half] if n % 2 == 0 else [half])
    return float(values[half]) if n % 2 else float((values[half - 1] + values[half]) / 2)
