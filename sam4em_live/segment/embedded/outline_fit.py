"""The outlines LPTEM particles have, fitted to one noisy frame by matched filtering: the seed's shape.

LPTEM particles are rigid bodies of a few shapes: rods, spheres, cubes and triangular
plates. On one frame at per-pixel CNR ~1 a thresholded or smoothed outline is either
ragged or rounded (a triangle's corners smoothed at 4-6 px lose a fifth of its area:
seed IoU ~0.8 on the dense field, and 0.65 for its best ellipse), while a fitted
outline integrates every pixel of the particle. Here: a triangle (equilateral: the
plates grow so) and a rectangle (cubes, and rods seen side on), each fitted by local
ascent on the z of a flat template over the raw contrast, as `ellipse.matched_ellipse`
fits an ellipse; `best_outline` picks, among these and any other candidate (the
smoothed contour, the ellipse), the one that explains the raw contrast best.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from sam4em_live.segment.embedded.ellipse import BOUNDED_SCALES, ELLIPSE_SCALES, ellipse_start
from sam4em_live.segment.embedded.fit_scoring import ellipse_radius, ellipse_z, fit_pixels, polygon_z
from sam4em_live.segment.embedded.seed_region import REGION_FRACTION, Territory, component_at, dilated, filled

if TYPE_CHECKING:
    from collections.abc import Callable

#: Relative sizes tried around the size implied by the start region's area ...
SIZE_SCALES = (0.85, 0.93, 1.0, 1.08, 1.17, 1.3, 1.45)
#: ... and, inside a box prompt's bounds (the region found in a box can fill its slack), smaller ones too.
BOUNDED_SIZE_SCALES = (0.55, 0.65, 0.75)
#: Orientations scanned (degrees) over each shape's symmetry period before the local ascent.
ANGLE_STEP_DEG = 7.5
#: A fitted polygon replaces a smooth candidate only if its z is higher by this factor: on a disc or a
#: rounded rod the polygons' corners fit noise, and a smooth outline is the safer seed.
POLYGON_MARGIN = 1.03
#: A rectangle needs more: at 1.03 it also won on the SAM4EM rods (rounded ends) and cost sam4em-150nm a point
#: of J&F; a cube's corners beat the ellipse by far more.
RECTANGLE_MARGIN = 1.05

#: The fits start from the region above this fraction of the peak (as seeds always did) ...
START_FRACTION = 0.25
#: ... grown after a click by at most this fraction of the core's radius.
GROWTH_FRACTION = 0.3
#: Smoothing above this fraction of the particle's radius rounds its outline: an ellipse is fitted instead.
ELLIPSE_SCALE_FRACTION = 0.4

Params = list[float]  # xc, yc (window pixels), angle (rad), then the shape's sizes (pixels)


def _half_planes(params: Params, sides: int) -> tuple[np.ndarray, np.ndarray]:
    """Unit normals (sides x 2) and distances from the centre of a regular triangle or a rectangle's edges."""
    angle = params[2]
    if sides == 3:  # apothem params[3]
        turns = angle + np.arange(3) * (2 * math.pi / 3)
        distances = np.full(3, params[3])
    else:  # half length params[3] along the angle, half width params[4] across it
        turns = angle + np.arange(4) * (math.pi / 2)
        distances = np.array([params[3], params[4], params[3], params[4]])
    return np.stack([np.cos(turns), np.sin(turns)], axis=1), distances


def polygon_inside(params: Params, sides: int, gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    """Fraction (0..1, a 1 px soft edge) of each pixel centre (gx, gy) inside the polygon."""
    normals, distances = _half_planes(params, sides)
    dx, dy = gx - params[0], gy - params[1]
    depth = np.min(distances[:, None] - (normals[:, 0:1] * dx.ravel() + normals[:, 1:2] * dy.ravel()), axis=0)
    return np.clip(depth.reshape(gx.shape) + 0.5, 0.0, 1.0)


def matched_polygon(darkness: np.ndarray, mask: np.ndarray, sides: int, support: np.ndarray | None = None,
                    bounds: tuple[float, float, float, float] | None = None) -> np.ndarray | None:
    """The triangle (``sides`` 3) or rectangle (4) that best matches the raw contrast, started from ``mask``.

    ``support`` (bool, like ``mask``) limits the pixels the match looks at (a box; not a
    neighbour's territory); ``bounds`` (x0, y0, x1, y1, ``mask`` pixels) limits the polygons
    tried to those inside it (a box as drawn). None if no polygon fits the bounds. Every
    step scores its candidates at once (`fit_scoring.polygon_z`): a fit is a dozen array operations.
    """
    rows, cols = np.nonzero(mask)
    area = float(rows.size)
    xc, yc = float(cols.mean()), float(rows.mean())
    reach = int(math.ceil(2.2 * math.sqrt(area / math.pi) + 8))  # the largest start's corners
    r0, r1 = max(int(yc) - reach, 0), min(int(yc) + reach + 1, mask.shape[0])
    c0, c1 = max(int(xc) - reach, 0), min(int(xc) + reach + 1, mask.shape[1])
    gy, gx = np.mgrid[r0:r1, c0:c1].astype(np.float32)
    keep = (gx - xc) ** 2 + (gy - yc) ** 2 <= reach**2
    if support is not None:
        keep &= support[r0:r1, c0:c1]
    px, py, values = gx[keep], gy[keep], darkness[r0:r1, c0:c1][keep]
    sparse = ((gx % 2 == 0) & (gy % 2 == 0))[keep]  # the scan looks at every other row and column: 4x cheaper
    every = fit_pixels(px, py, values, xc, yc)

    def z(cands: np.ndarray) -> np.ndarray:
        return polygon_z(cands, sides, every, bounds)

    starts = np.asarray(_starts(mask, sides, xc, yc, area,
                                SIZE_SCALES if bounds is None else BOUNDED_SIZE_SCALES + SIZE_SCALES))
    scan = polygon_z(starts, sides, fit_pixels(px[sparse], py[sparse], values[sparse], xc, yc), bounds)
    best = starts[int(np.argmax(scan))]
    if not np.isfinite(z(best[None, :])[0]):
        return None
    best = _ascend(best, sides, z)
    out = np.zeros_like(mask)
    out[r0:r1, c0:c1] = polygon_inside(list(best), sides, gx, gy) >= 0.5
    return out if out.sum() >= 6 else None


def fitted_ellipse(darkness: np.ndarray, mask: np.ndarray, box: np.ndarray | None,
                   bounds: tuple[float, float, float, float] | None = None) -> np.ndarray:
    """`ellipse.matched_ellipse`, every step's candidates scored at once on the pixels they can reach.

    The same start (``mask``'s moments), grid of sizes, ascent and pixels as `matched_ellipse` (see
    there for ``box`` and ``bounds``); each step's candidates are scored together (`_ellipse_z`), only
    on the pixels out to the farthest one's outline (`fit_scoring.FitPixels`), and a round that moves nothing ends
    the ascent. The same z but for the order of the sums (float32 rounding).
    """
    params, (r0, r1, c0, c1), gx, gy, support = ellipse_start(mask, box)
    pixels = fit_pixels(gx[support], gy[support], darkness[r0:r1, c0:c1][support], params[0], params[1])
    scales = ELLIPSE_SCALES if bounds is None else BOUNDED_SCALES + ELLIPSE_SCALES
    starts = np.array([[*params[:3], max(params[3] * sa, 1.0), max(params[4] * sb, 1.0)]
                       for sa in scales for sb in scales])
    scores = ellipse_z(starts, pixels, bounds)
    best = starts[int(np.argmax(scores))]
    if not math.isfinite(float(scores.max())):  # no candidate fits the bounds: keep the thresholded region
        return mask
    turns = np.radians(np.arange(-24, 25, 6, dtype=float))
    shifts = np.array([(dx, dy) for dx in (-2, -1, 0, 1, 2) for dy in (-2, -1, 0, 1, 2)], dtype=float)
    sizes = np.array([(sa, sb) for sa in (0.93, 1.0, 1.07) for sb in (0.93, 1.0, 1.07)])
    for _ in range(2):
        start = best
        cands = np.repeat(best[None, :], turns.size, axis=0)
        cands[:, 2] += turns
        best = cands[int(np.argmax(ellipse_z(cands, pixels, bounds)))]
        cands = np.repeat(best[None, :], len(shifts), axis=0)
        cands[:, :2] += shifts
        best = cands[int(np.argmax(ellipse_z(cands, pixels, bounds)))]
        cands = np.repeat(best[None, :], len(sizes), axis=0)
        cands[:, 3:5] *= sizes
        best = cands[int(np.argmax(ellipse_z(cands, pixels, bounds)))]
        if np.array_equal(best, start):
            break
    ellipse = np.zeros_like(mask)
    ellipse[r0:r1, c0:c1] = ellipse_radius(best[None, :], gx.ravel(), gy.ravel()).reshape(gx.shape) <= 1.0
    return ellipse if ellipse.sum() >= 6 else mask


def _starts(mask: np.ndarray, sides: int, xc: float, yc: float, area: float,
            scales: tuple[float, ...]) -> list[Params]:
    """Polygons of the start region's area (and sizes around it) at every orientation of the scan."""
    if sides == 3:  # area = 3 sqrt(3) apothem^2
        apothem = math.sqrt(area / (3 * math.sqrt(3)))
        period = 2 * math.pi / 3
        return [[xc, yc, math.radians(a), apothem * s]
                for a in np.arange(0.0, math.degrees(period), ANGLE_STEP_DEG) for s in scales]
    rows, cols = np.nonzero(mask)
    cov = np.cov(np.stack([cols, rows]).astype(float)) + np.eye(2) / 12
    eigval, eigvec = np.linalg.eigh(cov)
    axis = math.atan2(eigvec[1, 1], eigvec[0, 1])
    half_length, half_width = math.sqrt(3 * eigval[1]), math.sqrt(3 * eigval[0])  # a uniform rectangle's moments
    return [[xc, yc, axis + math.radians(a), half_length * s, half_width * t]
            for a in np.arange(-45.0, 45.0, ANGLE_STEP_DEG) for s in scales for t in (0.93, 1.08)]


def _ascend(best: np.ndarray, sides: int, z: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """Coordinate ascent: orientation, position, size, three times (`matched_ellipse` does it twice).

    A round that moves nothing ends the ascent: the next would score the same candidates again.
    """
    turns = np.radians(np.arange(-6, 7, 2, dtype=float))
    shifts = np.array([(dx, dy) for dx in (-1.5, -0.5, 0, 0.5, 1.5) for dy in (-1.5, -0.5, 0, 0.5, 1.5)])
    sizes = np.array([(0.95, 1.0), (1.0, 1.0), (1.05, 1.0)] if sides == 3 else
                     [(a, b) for a in (0.95, 1.0, 1.05) for b in (0.95, 1.0, 1.05)])
    for _ in range(3):
        start = best
        cands = np.repeat(best[None, :], turns.size, axis=0)
        cands[:, 2] += turns
        best = cands[int(np.argmax(z(cands)))]
        cands = np.repeat(best[None, :], len(shifts), axis=0)
        cands[:, :2] += shifts
        best = cands[int(np.argmax(z(cands)))]
        cands = np.repeat(best[None, :], len(sizes), axis=0)
        cands[:, 3] *= sizes[:, 0]
        if sides == 4:
            cands[:, 4] *= sizes[:, 1]
        best = cands[int(np.argmax(z(cands)))]
        if np.array_equal(best, start):
            break
    return best


def outline_z(darkness: np.ndarray, template: np.ndarray, region: tuple[slice, slice],
              support: np.ndarray | None) -> float:
    """The z of the flat template ``template`` against the contrast over ``region`` (and ``support``)."""
    t = template[region].astype(np.float32)
    d = darkness[region]
    if support is not None:
        keep = support[region]
        t, d = t[keep], d[keep]
    t = t - t.mean()
    return float((t * d).sum()) / max(float(np.linalg.norm(t)), 1e-9)


def best_outline(darkness: np.ndarray, smooth: list[np.ndarray], polygons: list[tuple[np.ndarray, float]],
                 support: np.ndarray | None = None) -> np.ndarray:
    """The candidate outline that explains the raw contrast best, all scored on the same pixels.

    ``smooth`` candidates (the smoothed contour, the ellipse) win ties; a polygon (mask, margin) must
    beat the best of them by its margin. The pixels are those of every candidate plus a ring of half
    their radius.
    """
    union = np.zeros_like(smooth[0])
    for candidate in (*smooth, *(polygon for polygon, _ in polygons)):
        union |= candidate
    rows, cols = np.nonzero(union)
    pad = int(math.ceil(0.5 * math.sqrt(rows.size / math.pi))) + 3
    region = (slice(max(int(rows.min()) - pad, 0), int(rows.max()) + pad + 1),
              slice(max(int(cols.min()) - pad, 0), int(cols.max()) + pad + 1))
    best = max(smooth, key=lambda m: outline_z(darkness, m, region, support))
    best_z = outline_z(darkness, best, region, support)
    for polygon, margin in polygons:
        z = outline_z(darkness, polygon, region, support)
        if z > margin * best_z and z > 0:
            best, best_z = polygon, z / margin
    return best


def seed_outline(darkness: np.ndarray, territory: Territory, contour: np.ndarray, seed_rc: tuple[int, int],
                 signal: np.ndarray, level: float, peak: float, scale: float, box: np.ndarray | None,
                 bounds: tuple[float, float, float, float] | None) -> np.ndarray:
    """The seed's outline: the smoothed ``contour``, or the fitted shape that explains the raw contrast better.

    The fits (an ellipse, a triangle, a rectangle) start from the region grown to a quarter of the
    peak (`_fit_start`) -- large enough for their local ascent to reach a faint rod's ends -- and see
    only the pixels not given to a neighbour (within the loosened ``box``, if one was drawn); only
    shapes within ``bounds`` (the box as drawn + a margin, window pixels) are tried: at CNR < 1 a
    fit can swell into a loose box's slack. At coarse smoothing the contour is rounded anyway and only
    the fits compete; the round and elongated particles' thinning rim pulls the steepest contour
    inwards, where the ellipse explains more. ``signal`` is the contrast smoothed at ``scale``,
    ``level`` its value at the prompt pixel ``seed_rc``, ``peak`` the particle's.
    """
    start = _fit_start(territory, seed_rc, signal, level, peak, box)
    start = start if start is not None else contour
    support = ~ndimage.binary_dilation(territory.neighbours, iterations=1)
    if box is not None:
        support &= box
    ellipse = fitted_ellipse(darkness, start, support, bounds)
    polygons = [(p, margin) for p, margin in ((matched_polygon(darkness, start, 3, support, bounds), POLYGON_MARGIN),
                                              (matched_polygon(darkness, start, 4, support, bounds), RECTANGLE_MARGIN))
                if p is not None]
    coarse = scale > ELLIPSE_SCALE_FRACTION * math.sqrt(contour.sum() / math.pi)
    return best_outline(darkness, [ellipse] if coarse else [contour, ellipse], polygons, support)


def _fit_start(territory: Territory, seed_rc: tuple[int, int], signal: np.ndarray, level: float,
               peak: float, box: np.ndarray | None) -> np.ndarray | None:
    """The region the fits start from, grown as seeds always were (the fits are local ascents).

    The region above `REGION_FRACTION` of the prompt's level, grown to `START_FRACTION` of its peak:
    within a box, or by at most `GROWTH_FRACTION` of its radius after a click; never out of the
    particle's territory.
    """
    core = component_at(territory.own & (signal > REGION_FRACTION * level), seed_rc)
    if core is None:
        return None
    grown = territory.own & (signal > START_FRACTION * peak)
    if box is None:
        reach = max(3, int(round(GROWTH_FRACTION * math.sqrt(core.sum() / math.pi))))
        grown &= dilated(core, reach)
    start = component_at(grown | core, seed_rc)
    return filled(start) if start is not None and start.sum() >= 6 else None
