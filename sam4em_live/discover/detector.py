"""Candidate particles on one frame, found at low resolution: block mean → flat field → matched filter → blobs.

Why this shape: LPTEM frames are shot-noise limited (per-pixel CNR 0.4–0.65) with slow gradients, vignettes
and dose steps. A block mean (``factor`` x ``factor``) keeps a ≥ 15 px particle several cells wide while it
cuts the noise by ``factor`` and the work by ``factor²``; dividing by a wide Gaussian background turns
gradients and dose steps into a flat field of relative contrast; a Gaussian matched filter of about a small
particle's size then lifts particles well above the noise, whose level is measured on the frame itself
(median absolute deviation), so one threshold in noise sigmas works at every dose. Dark (gold) and bright
(low-density pockets, inverted contrast) particles are found alike, with their sign as ``polarity``.
Following a stream (``carry_decay`` > 0), a blob's seed and score come from the evidence carried from run to
run (`evidence.CarriedEvidence`), its extent and centroid from this frame.

Coordinates are full-resolution pixels: x = column, y = row, origin at the centre of the top-left pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from sam4em_live.discover.evidence import CarriedEvidence
from sam4em_live.discover.flat_field import flat_field, robust_sigma
from sam4em_live.discover.readout import quadrant_gains
from sam4em_live.discover.touching import split_touching
from sam4em_live.segment.embedded.window import block_mean

if TYPE_CHECKING:
    from collections.abc import Callable

#: Directions of the rough outline (a star polygon: the farthest pixel of the blob in each direction).
OUTLINE_DIRECTIONS = 16
#: Scale of the flat-field background, in full-resolution pixels: wider than the largest particle (≈120 px).
BACKGROUND_SIGMA_PX = 24.0
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
    or both; ``carry_decay``, ``carry_reach_px``, ``carry_cap``: evidence carried from run to run
    (`evidence.CarriedEvidence`; a decay of 0, the default, judges each frame alone).
    """

    cells: int = 128
    threshold_sigma: float = 5.0
    seed_sigma: float | None = None
    polarity: str = "both"
    matched_sigma_px: float = MATCHED_SIGMA_PX
    background_sigma_px: float = BACKGROUND_SIGMA_PX
    carry_decay: float = 0.0
    carry_reach_px: float = 6.0
    carry_cap: float = 6.0


def _go_on() -> None:
    """No pause between the detector's stages."""


def block_factor(shape: tuple[int, int], cells: int) -> int:
    """The block factor for a frame: about ``cells`` cells along the longer side, at least 1."""
    return max(1, math.ceil(max(shape) / cells))


class ParticleDetector:
    """Finds `Candidate` particles on a frame (one thread at a time).

    Stateless apart from its settings, unless they carry evidence from run to run (``carry_decay`` > 0):
    then it follows one stream, and its candidates' scores include what earlier frames showed.
    """

    def __init__(self, settings: DetectorSettings | None = None) -> None:
        self.settings = settings or DetectorSettings()
        self._evidence = CarriedEvidence(self.settings.carry_decay, self.settings.carry_reach_px,
                                         self.settings.carry_cap)

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
        relative = flat_field(low, factor, s.background_sigma_px, s.matched_sigma_px)
        between()
        z = np.zeros_like(relative)
        for scale in MATCHED_SCALES:  # small and large particles: the best of two matched filters, each in sigmas
            sigma = max(scale * s.matched_sigma_px / factor, 0.7)
            response = ndimage.gaussian_filter(relative, sigma, mode="nearest")
            noise = robust_sigma(response, max(4 * sigma, 3.0))
            if noise > 0:
                response /= noise
                z = np.where(np.abs(response) > np.abs(z), response, z)
        between()
        # dark particles absorb: relative < 0 → positive "darkness" z
        # blobs are this frame's (their extent and centroid), their seeds and scores the carried evidence's
        blobs = []
        for polarity in _polarities(s.polarity):
            darkness = polarity * -z
            evidence = self._evidence.update(darkness, polarity, factor)
            blobs.append(self._blobs(darkness, polarity * -relative, factor, polarity, evidence))
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

    def _blobs(self, z: np.ndarray, contrast: np.ndarray, factor: int, polarity: int,
               score: np.ndarray) -> _BlobTable | None:
        """Blobs of ``z`` (this frame, sigmas) above the low threshold that hold a seed of ``score`` (evidence).

        A blob with two separate peaks is split between them (`touching`).
        """
        high = self.settings.threshold_sigma
        seed = high if self.settings.seed_sigma is None else min(self.settings.seed_sigma, high)
        labels, n = ndimage.label(z > min(high * LOW_FRACTION, seed))
        if n == 0:
            return None
        labels, n = split_touching(labels, n, z, score, seed, factor)  # neighbours in one blob: a blob each
        # blobs that hold a seed (a lookup table by label, cheaper than a per-label maximum)
        keep = np.zeros(n + 1, bool)
        keep[labels[score >= seed]] = True
        keep[0] = False
        return _BlobTable.measure(labels, keep, z, contrast, factor, polarity, score)


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
                polarity: int, score_map: np.ndarray) -> _BlobTable | None:
        """The blobs of ``labels`` whose ``keep`` entry (by label) is set, in label order.

        Centroids are weighted by ``z``; a blob's score is the peak of ``score_map`` over its cells.
        """
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
        np.maximum.at(score, row, score_map[ys, xs].astype(np.float64))
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


def _polarities(polarity: str) -> tuple[int, ...]:
    """+1 looks for dark particles, -1 for bright ones."""
    return {"dark": (1,), "bright": (-1,), "both": (1, -1)}[polarity]
