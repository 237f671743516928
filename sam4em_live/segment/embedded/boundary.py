"""Where a particle's footprint ends, from its learned (blurred, averaged) contrast profile.

The learned memory is the particle's projected contrast seen through the detector's blur (MTF, defocus,
the residual jitter of the alignment). Its boundary is *not* at a fixed fraction of the peak: a flat plate
(cube, prism) has a step edge, whose blurred profile crosses the true edge at half the plateau; a rounded
body (sphere, rod) has a chord profile ``t ∝ sqrt(2 r s − s²)`` (s the depth inside the edge, r the local
radius) that reaches zero *at* the edge, where the blurred profile sits at a small fraction of the peak,
which depends on the blur and the size. Any fixed fraction (the old ``edge_fraction`` contour) is biased
outwards for plates and inwards or outwards for rounded bodies, by an amount that depends on size, blur and
the smoothing used to take the contour.

So the edge is *measured*: the memory is averaged along the whole contour of a provisional mask, giving a
mean edge profile p(s) against the signed distance s from that contour (thousands of pixels: low noise even
for faint particles), and the profile is fitted by the two physical edge models, each blurred by a Gaussian
of free width σ:

- plate:  f(t) = P for t > 0 (a step at the edge),
- chord:  f(t) = P sqrt(1 − (1 − min(t / r, 1))²) for t > 0, r the inscribed radius of the mask,

with t = s − s0, plus a constant background b. P and b are linear (solved in closed form); s0 and σ are
searched on a grid. The better model's s0 is the offset of the true edge from the provisional contour. The
fit sees the unsmoothed memory, so the smoothing used for the provisional contour does not enter the
result, and s0 is a distance, so the prompt's seed size does not either.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage, special
from skimage.morphology import convex_hull_image

if TYPE_CHECKING:
    from collections.abc import Sequence

#: Bin width (px) of the mean edge profile.
PROFILE_STEP_PX = 0.5
#: The profile reaches this far outside the provisional contour (px): the blurred edge and background ...
#: (12 px, or 2.5 fitted blur widths, were tried in session 11: a 20 px cube at CNR 0.5 with defocus read
#: its surroundings, +2 -> +42 %, and a fixed 12 px cost sam4em-150nm 1.4 points of J&F.)
PROFILE_OUTSIDE_PX = 4.0
#: ... and this far inside (px, or to the inscribed radius): enough to tell a step from a chord.
PROFILE_INSIDE_PX = 14.0
#: Candidate edge offsets from the provisional contour (px; > 0 inside): a coarse grid, then a fine one.
MAX_OFFSET_PX, COARSE_OFFSET_STEP_PX, FINE_OFFSET_STEP_PX = 4.0, 0.25, 0.025
#: Candidate Gaussian widths of the blur (px): the detector's, a defocus, the alignment's jitter together.
#: Faint memories under a soft MTF need more than 3 px (fitted: 3.5-4 px on 80-120 px particles at CNR 0.3).
BLUR_SIGMAS_PX: tuple[float, ...] = (0.4, 0.6, 0.8, 1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0)
#: A plate (step) fit that needs at least this blur does not resolve the edge of a rounded outline (`fit_profile`).
UNRESOLVED_STEP_BLUR_PX = 3.0
#: Fine grid (px) on which the blurred chord model is tabulated.
MODEL_STEP_PX = 0.1
#: The fitted plateau must stand this many standard errors above zero, else no edge is reported.
MIN_EDGE_SNR = 6.0
#: An outline is "rounded" (sphere, rod) if opening its convex hull with a disc of this fraction of the
#: hull's inscribed radius loses at most this fraction of its area (see `corner_loss`). Measured on the
#: memories of the mask-bias sweep at CNR 0.3-1 (half-peak contours, 40-120 px): spheres and rods 0.3-4.9 %
#: (8.8 % for one faint 40 px rod), cubes 3.6-13 %, prisms 5.6-16 %; the noisy outline itself, without the
#: hull, lost 6-31 % on faint spheres and rods (that was the old test, at 8 %).
ROUNDED_OPENING_FRACTION, ROUNDED_MAX_LOSS = 0.7, 0.05
#: For a rounded outline the chord model stands unless its weighted squared residual exceeds the plate's by
#: more than this factor. 1.5 let sam4em-150nm's 61 x 32 px rod be fitted as a plate at one refresh of a
#: young, cross-fitted memory (its halves are noisier than the whole) and shrink by 20 % for 150 frames.
CHORD_PREFERENCE = 2.0
#: Bins with fewer pixels are left out of the fit.
MIN_BIN_PIXELS = 3


@dataclass(frozen=True, slots=True)
class EdgeFit:
    """The fitted edge: where it lies relative to the provisional contour, and what the fit found."""

    offset_px: float  # signed distance of the true edge from the provisional contour (> 0: inside it)
    blur_px: float  # the fitted Gaussian width
    plateau: float  # P, contrast units of the memory
    model: str  # "plate" or "chord"
    snr: float  # P / its standard error
    background: float = 0.0  # b, contrast units of the memory

    @property
    def half_level(self) -> float:
        """Background + plateau / 2: where a straight step crosses its true edge under any symmetric blur."""
        return self.background + 0.5 * self.plateau


@dataclass(frozen=True, slots=True)
class EdgeProfile:
    """A field averaged in bins of the signed distance from a contour: mean distance, mean value, pixels."""

    distance_px: np.ndarray
    value: np.ndarray
    pixels: np.ndarray

    def at(self, distance_px: float) -> float:
        """The profile's value at a signed distance (linear between bins)."""
        return float(np.interp(distance_px, self.distance_px, self.value))


def signed_distance(mask: np.ndarray) -> np.ndarray:
    """Distance (px) of each pixel centre from the mask's outline, > 0 inside; pixel edges at ±0.5."""
    inside = ndimage.distance_transform_edt(mask)
    outside = ndimage.distance_transform_edt(~mask)
    return np.where(mask, inside - 0.5, 0.5 - outside).astype(np.float32)


def edge_profile(field: np.ndarray, distance: np.ndarray, inside_px: float = PROFILE_INSIDE_PX) -> EdgeProfile:
    """``field`` averaged in `PROFILE_STEP_PX` bins of the signed ``distance``, from outside to ``inside_px``."""
    return merged_profile([(field, distance)], inside_px)


def merged_profile(pairs: Sequence[tuple[np.ndarray, np.ndarray]], inside_px: float = PROFILE_INSIDE_PX
                   ) -> EdgeProfile:
    """One profile (as `edge_profile`) from the pixels of several (field, signed distance) pairs together."""
    lo = -PROFILE_OUTSIDE_PX
    bins = int(np.ceil((inside_px - lo) / PROFILE_STEP_PX))
    counts, sums, distances = np.zeros(bins), np.zeros(bins), np.zeros(bins)
    for field, distance in pairs:
        keep = (distance >= lo) & (distance < inside_px)
        d = distance[keep].astype(np.float64)
        index = np.minimum(((d - lo) / PROFILE_STEP_PX).astype(np.intp), bins - 1)
        counts += np.bincount(index, minlength=bins)
        sums += np.bincount(index, field[keep].astype(np.float64), minlength=bins)
        distances += np.bincount(index, d, minlength=bins)
    used = counts >= MIN_BIN_PIXELS
    safe = np.maximum(counts, 1)
    return EdgeProfile((distances / safe)[used], (sums / safe)[used], counts[used].astype(np.intp))


@lru_cache(maxsize=64)
def _chord_table(radius_px: int) -> tuple[float, np.ndarray]:
    """The chord edge (unit plateau, radius ``radius_px``) blurred by every `BLUR_SIGMAS_PX`: (t0, table).

    ``table[k, i]`` is the model at t = t0 + i `MODEL_STEP_PX` for sigma k; beyond the radius the profile is
    taken as flat (the deep interior hardly enters the fit, see `PROFILE_INSIDE_PX`).
    """
    reach = 4 * max(BLUR_SIGMAS_PX) + MAX_OFFSET_PX + PROFILE_OUTSIDE_PX
    t = np.arange(-reach, radius_px + reach, MODEL_STEP_PX)
    fraction = np.clip(t / radius_px, 0.0, 1.0)
    chord = np.where(t > 0, np.sqrt(1.0 - (1.0 - fraction) ** 2), 0.0)
    table = np.stack([ndimage.gaussian_filter1d(chord, s / MODEL_STEP_PX, mode="nearest", truncate=3.0)
                      for s in BLUR_SIGMAS_PX])
    table.flags.writeable = False
    return float(t[0]), table


def _model_values(model: str, radius_px: int, s: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Unit-plateau blurred edge at depth s − offset: shape (sigmas, offsets, bins)."""
    t = s[None, :] - offsets[:, None]
    if model == "plate":  # a blurred step: the Gaussian's cumulative distribution, in closed form
        sigmas = np.asarray(BLUR_SIGMAS_PX)[:, None, None]
        return special.ndtr(t[None] / sigmas)
    t0, table = _chord_table(radius_px)
    position = np.clip((t - t0) / MODEL_STEP_PX, 0.0, table.shape[1] - 1.001)
    lower = position.astype(np.intp)
    frac = position - lower
    return table[:, lower] * (1 - frac) + table[:, lower + 1] * frac


def fit_edge(memory: np.ndarray, distance: np.ndarray, rounded: bool | None = None) -> EdgeFit | None:
    """The edge of ``memory`` (contrast, > 0 on the particle) relative to the contour of ``distance`` (> 0 in).

    ``rounded``: whether the particle's outline is rounded (`rounded_outline`; the caller may judge it on a
    cleaner contour, or over several refreshes); None: judged on the contour of ``distance``. None is
    returned when the profile does not show a clear edge (too faint, or the contour encloses too little).
    """
    radius = inscribed_radius(distance)
    if radius < 1:
        return None
    if rounded is None:
        rounded = rounded_outline(distance > 0)
    return fit_profile(edge_profile(memory, distance, min(PROFILE_INSIDE_PX, radius + 2.0)), radius, rounded)


def inscribed_radius(distance: np.ndarray) -> int:
    """The inscribed radius (px, rounded) of the contour of a signed distance map (`signed_distance`)."""
    return int(round(float(distance.max()) + 0.5))


def fit_profile(profile: EdgeProfile, radius: int, rounded: bool) -> EdgeFit | None:
    """The edge of a mean edge ``profile`` (`fit_edge`), for a contour of inscribed ``radius`` (px)."""
    s, p, w = profile.distance_px, profile.value, profile.pixels.astype(np.float64)
    if s.size < 8 or radius < 1:
        return None
    fits = {model: _fit_model(model, radius, s, p, w) for model in ("plate", "chord")}
    # A domed (chord) profile is a physical model only for a rounded outline, and for a rounded outline the
    # likelier one (spheres and rods are, flat discs are not, common): it stands unless the plate fits clearly
    # better. Near-equal costs are common in faint, blurred memories, where a flip to the plate model would
    # shrink a sphere by ~1-2 px.
    # A step that needs a blur of `UNRESOLVED_STEP_BLUR_PX` or more is not resolved either: on a rounded outline it
    # is a faint sphere whose averaged edge is wider than the chord model allows (multi-1024's 30 nm sphere read as
    # such a step and shrank by a quarter), so no edge is reported; on a polygon it is a blurred plate all the same.
    chord_fits = fits["chord"][0] <= CHORD_PREFERENCE * fits["plate"][0]
    plate_unresolved = BLUR_SIGMAS_PX[fits["plate"][3]] >= UNRESOLVED_STEP_BLUR_PX
    rounded = (chord_fits or plate_unresolved) and rounded
    if rounded and not chord_fits:
        return None
    cost, model, offset, sigma_index, plateau, spread = fits["chord"] if rounded else fits["plate"]
    # Standard error of P: bin means scatter by sigma_pixel / sqrt(count), so cost / (bins - 4) estimates
    # the per-pixel variance (4 fitted parameters), and var(P) = that / the model's weighted spread.
    variance = cost / max(s.size - 4, 1)
    snr = plateau / np.sqrt(max(variance, 1e-18) / max(spread, 1e-18))
    if not np.isfinite(snr) or snr < MIN_EDGE_SNR:
        return None
    values = _model_values(model, radius, s, np.array([offset]))[sigma_index, 0]
    background = float(np.average(p - plateau * values, weights=w))
    return EdgeFit(offset, BLUR_SIGMAS_PX[sigma_index], plateau, model, float(snr), background)


def _fit_model(model: str, radius: int, s: np.ndarray, p: np.ndarray, w: np.ndarray
               ) -> tuple[float, str, float, int, float, float]:
    """Best (cost, model, offset, sigma index, P, spread) of one edge model: a coarse offset grid, then a fine one."""
    centre, step = 0.0, COARSE_OFFSET_STEP_PX
    for reach in (MAX_OFFSET_PX, COARSE_OFFSET_STEP_PX):
        offsets = centre + np.arange(-reach, reach + step / 2, step)
        plateau, cost, spread = _weighted_line_fit(_model_values(model, radius, s, offsets), p, w)
        cost = np.where(plateau > 0, cost, np.inf)
        i, j = np.unravel_index(int(np.argmin(cost)), cost.shape)
        centre, step = float(offsets[j]), FINE_OFFSET_STEP_PX
    return float(cost[i, j]), model, centre, int(i), float(plateau[i, j]), float(spread[i, j])


def corner_loss(mask: np.ndarray) -> float:
    """Fraction of the convex hull of ``mask`` lost by opening it with a disc of 0.7 of its inscribed radius.

    Discs and spherocylinders (spheres, rods) lose ~0: the disc rolls everywhere inside. Polygons lose their
    corners (a square ~10 %, a triangle ~19 %, less where blur has rounded them). The hull, not the mask:
    a faint memory's outline is ragged, and every dent made the old test call a sphere a polygon.
    """
    if not mask.any():
        return 0.0
    hull = convex_hull_image(mask)
    distance = ndimage.distance_transform_edt(hull)
    radius = ROUNDED_OPENING_FRACTION * float(distance.max())
    core = distance >= radius  # centres at least `radius` from the outside
    opened = ndimage.distance_transform_edt(~core) <= radius
    return 1.0 - float((opened & hull).sum()) / float(hull.sum())


def rounded_outline(mask: np.ndarray) -> bool:
    """Whether ``mask`` is a union of discs of about its inscribed radius (sphere, rod), not a polygon."""
    return corner_loss(mask) <= ROUNDED_MAX_LOSS


def _weighted_line_fit(values: np.ndarray, p: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least squares of p ≈ P · values + b (weights w) for every model column of ``values`` (..., bins).

    Returns P, the weighted squared residual and the weighted spread Σ w (values − mean)² (for P's error).
    """
    sw = w.sum()
    sx = values @ w
    sy = float(p @ w)
    spread = (values * values) @ w - sx * sx / sw
    sxy = values @ (w * p) - sx * sy / sw
    syy = float((p * p) @ w) - sy * sy / sw
    safe = np.where(spread > 1e-18, spread, 1e-18)
    plateau = sxy / safe
    cost = np.maximum(syy - plateau * sxy, 0.0)
    return plateau, cost, spread
