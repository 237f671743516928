"""How a seed's outline fits (`outline_fit`) score a batch of candidate outlines against the raw contrast.

A candidate is a flat template with a 1 px soft edge (a triangle, a rectangle or an ellipse); its z
is the template's normalised correlation with the contrast over the fit's pixels. A fit's local
ascent scores a few dozen candidates a step, a hundred or two in its first scan, and a batch of 50
prompts runs some 150 fits: the cost is candidates x pixels. Two things keep it down. The pixels
are ordered by distance from the fit's centre (`FitPixels`), and a step's candidates are scored
only out to the farthest one's outline: the pixels beyond enter z only through their count and their
sum. And candidates that share an orientation share their edges' projections (`polygon_z`,
`ellipse_z`): a scan's sizes at one orientation, an ascent's shifts and sizes, differ only by a
constant per edge.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import numpy as np

#: ``bounds`` of a box prompt: (x0, y0, x1, y1), window pixels.
Bounds = tuple[float, float, float, float]


class FitPixels(NamedTuple):
    """The pixels a fit scores its candidates on, nearest its centre first.

    A candidate's soft template is 0 beyond its outline (+ half a pixel), and the pixels there enter
    its z only through their count and their contrast's sum (the template's mean): so a batch of
    candidates is scored on the first pixels, out to the farthest candidate's reach, with ``n_pixels``
    and ``total`` standing for the rest -- the z of every pixel of the support, at a fraction of the
    work (the support reaches twice a particle's radius; the candidates of an ascent little more than it).
    """

    xs: np.ndarray  # float32, window pixels less (xc, yc), by distance from (xc, yc)
    ys: np.ndarray
    values: np.ndarray  # float32 contrast
    distance: np.ndarray  # float32 distance from (xc, yc) rounded down to a quarter pixel, ascending
    xc: float
    yc: float
    n_pixels: int  # all the pixels, the far ones too
    total: float  # sum of ``values``


def fit_pixels(xs: np.ndarray, ys: np.ndarray, values: np.ndarray, xc: float, yc: float) -> FitPixels:
    """`FitPixels` of the pixels (xs, ys) with contrast ``values``, ordered by distance from (xc, yc)."""
    dx, dy = xs - np.float32(xc), ys - np.float32(yc)
    # Ordered by quarter pixels (a radix sort of small integers: a sixth of a float sort's time); a bucket's
    # lower edge stands for its distances, so a prefix out to a reach holds every pixel within it.
    quarters = (np.hypot(dx, dy) * 4).astype(np.int16)
    order = np.argsort(quarters, kind="stable")
    values = values.astype(np.float32)
    return FitPixels(dx[order], dy[order], values[order], quarters[order] * np.float32(0.25), xc, yc,
                     int(values.size), float(values.sum()))


def _within(pixels: FitPixels, cands: np.ndarray, reach: np.ndarray) -> int:
    """How many of ``pixels`` (from the nearest) hold every pixel that candidate centres + ``reach`` cover."""
    far = np.hypot(cands[:, 0] - pixels.xc, cands[:, 1] - pixels.yc) + reach
    return int(np.searchsorted(pixels.distance, float(far.max()) + 1.0, side="right"))


def _z_of(inside: np.ndarray, pixels: FitPixels) -> np.ndarray:
    """The z of K soft templates ``inside`` (K x m: on the first m of ``pixels``, 0 on the rest)."""
    m = inside.shape[1]
    mean = inside.sum(axis=1) / np.float32(pixels.n_pixels)
    # Summed without BLAS: its threads spin between the many small products of a batch of prompts.
    dot = np.einsum("kn,n->k", inside, pixels.values[:m]) - mean * pixels.total
    norm = np.sqrt(np.maximum(np.einsum("kn,kn->k", inside, inside) - pixels.n_pixels * mean * mean, 0.0))
    return dot / np.maximum(norm, 1e-9)


def _by_orientation(angles: np.ndarray) -> list[slice]:
    """Runs of candidates that share an orientation (radians, compared exactly): a scan's sizes, a step's shifts."""
    starts = [0, *(np.flatnonzero(angles[1:] != angles[:-1]) + 1).tolist(), angles.size]
    return [slice(a, b) for a, b in itertools.pairwise(starts)]


def polygon_z(cands: np.ndarray, sides: int, pixels: FitPixels, bounds: Bounds | None) -> np.ndarray:
    """The z of each candidate polygon (K x [xc, yc, angle rad, apothem] or [..., half length, half width]).

    An edge's depth d + 1/2 - n . (p - c) is (d + 1/2 + n . (c - o)) - n . (p - o), o the pixels' centre:
    candidates of one orientation share the projections n . (p - o), and each adds its own constant
    per edge; edges whose constants agree for all of them (a scan's common centre: all three of a
    triangle's, a rectangle's opposite pairs) are one term, the nearest of their projections. -inf
    for a candidate off ``bounds`` (window pixels).
    """
    # The soft edge reaches half a pixel beyond each side: the corners of the polygon grown by it.
    reach = (2.0 * (cands[:, 3] + 0.5) if sides == 3
             else np.hypot(cands[:, 3] + 0.5, cands[:, 4] + 0.5))
    m = _within(pixels, cands, reach)
    xs, ys = pixels.xs[:m], pixels.ys[:m]
    groups = _by_orientation(cands[:, 2])
    if 1 < len(groups) == cands.shape[0]:  # each its own orientation (an ascent's turns): all at once
        inside = _depths_apart(cands, sides, xs, ys, pixels)
    else:
        inside = _depths_shared(cands, sides, xs, ys, pixels, groups)
    z = _z_of(np.clip(inside, 0.0, 1.0, out=inside), pixels)
    if bounds is not None:
        cx, cy = polygon_corners(cands, sides)
        fits = ((cx.min(axis=1) >= bounds[0]) & (cx.max(axis=1) <= bounds[2])
                & (cy.min(axis=1) >= bounds[1]) & (cy.max(axis=1) <= bounds[3]))
        z = np.where(fits, z, -np.inf)
    return z


def _depths_shared(cands: np.ndarray, sides: int, xs: np.ndarray, ys: np.ndarray, pixels: FitPixels,
                   groups: list[slice]) -> np.ndarray:
    """Each candidate's depth (K x m), the projections of its edges shared by its run of one orientation."""
    depths = np.empty((cands.shape[0], xs.size), dtype=np.float32)
    nearest = np.empty(xs.size, dtype=np.float32)  # the largest projection of the edges of one term
    for rows in groups:
        turns = cands[rows.start, 2] + np.arange(sides) * (2 * math.pi / sides)
        cos, sin = np.cos(turns).astype(np.float32), np.sin(turns).astype(np.float32)
        distance = cands[rows][:, [3, 3, 3] if sides == 3 else [3, 4, 3, 4]]
        offsets = (distance + 0.5 + np.cos(turns) * (cands[rows, 0:1] - pixels.xc)
                   + np.sin(turns) * (cands[rows, 1:2] - pixels.yc)).astype(np.float32)
        terms: dict[bytes, list[int]] = {}  # edges with the same constant for every candidate of the run
        for k in range(sides):
            terms.setdefault(offsets[:, k].tobytes(), []).append(k)
        depth = depths[rows]
        for i, edges in enumerate(terms.values()):
            np.multiply(cos[edges[0]], xs, out=nearest)
            nearest += sin[edges[0]] * ys
            for k in edges[1:]:
                np.maximum(nearest, cos[k] * xs + sin[k] * ys, out=nearest)
            if i == 0:
                np.subtract(offsets[:, edges[0]][:, None], nearest, out=depth)
            else:
                np.minimum(depth, offsets[:, edges[0]][:, None] - nearest, out=depth)
    return depths


def _depths_apart(cands: np.ndarray, sides: int, xs: np.ndarray, ys: np.ndarray, pixels: FitPixels) -> np.ndarray:
    """Each candidate's depth (K x m) where no two share an orientation (an ascent's turns): edge by edge for all."""
    params = cands.astype(np.float32)
    x0, y0 = params[:, 0] - np.float32(pixels.xc), params[:, 1] - np.float32(pixels.yc)
    depth: np.ndarray | None = None
    for k in range(sides):
        turn = params[:, 2] + np.float32(k * (2 * math.pi / sides))
        distance = params[:, 3] if sides == 3 or k % 2 == 0 else params[:, 4]
        cos, sin = np.cos(turn), np.sin(turn)
        side = (distance + np.float32(0.5) + cos * x0 + sin * y0)[:, None] - cos[:, None] * xs
        side -= sin[:, None] * ys
        depth = side if depth is None else np.minimum(depth, side, out=depth)
    assert depth is not None
    return depth


def polygon_corners(cands: np.ndarray, sides: int) -> tuple[np.ndarray, np.ndarray]:
    """The polygons' corners' x and y (K x sides) for candidates (K x params)."""
    xc, yc, angle = cands[:, 0:1], cands[:, 1:2], cands[:, 2:3]
    if sides == 3:  # the corners lie on the bisectors between the edge normals, at twice the apothem
        turns = angle + np.arange(3) * (2 * math.pi / 3) + math.pi / 3
        reach = 2.0 * cands[:, 3:4]
        return xc + reach * np.cos(turns), yc + reach * np.sin(turns)
    ux, uy = np.cos(angle), np.sin(angle)
    along, across = cands[:, 3:4] * np.array([1.0, -1.0, -1.0, 1.0]), cands[:, 4:5] * np.array([1.0, 1.0, -1.0, -1.0])
    return xc + along * ux - across * uy, yc + along * uy + across * ux


def ellipse_radius(cands: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Each pixel's elliptical radius (K x N, 1 on the outline) for candidates (K x [xc, yc, angle, a, b])."""
    params = cands.astype(np.float32)
    cos, sin = np.cos(cands[:, 2]).astype(np.float32)[:, None], np.sin(cands[:, 2]).astype(np.float32)[:, None]
    dx, dy = xs - params[:, 0:1], ys - params[:, 1:2]
    u = dx * cos + dy * sin
    v = dy * cos - dx * sin
    u /= params[:, 3:4]
    v /= params[:, 4:5]
    u *= u
    v *= v
    u += v
    return np.sqrt(u, out=u)


def ellipse_z(cands: np.ndarray, pixels: FitPixels, bounds: Bounds | None) -> np.ndarray:
    """The z of each candidate ellipse (K x [xc, yc, angle, a, b]) over ``pixels`` (a 1 px soft edge).

    Candidates of one centre and orientation (a scan's sizes, an ascent's size step) share the
    pixels' squared coordinates along their axes. -inf for a candidate off ``bounds``.
    """
    # The soft edge (1 - r) b + 1/2 is 0 at r = 1 + 1/(2b): along the longer axis, that far from the centre.
    reach = np.maximum(cands[:, 3], cands[:, 4]) * (1.0 + 0.5 / cands[:, 4])
    m = _within(pixels, cands, reach)
    xs, ys = pixels.xs[:m], pixels.ys[:m]
    shared = bool(np.all(cands[:, :3] == cands[0, :3]))
    if shared and cands.shape[0] > 1:
        cos, sin = np.float32(math.cos(cands[0, 2])), np.float32(math.sin(cands[0, 2]))
        dx, dy = xs - np.float32(cands[0, 0] - pixels.xc), ys - np.float32(cands[0, 1] - pixels.yc)
        u, v = dx * cos + dy * sin, dy * cos - dx * sin
        u *= u
        v *= v
        params = cands.astype(np.float32)
        inside = (1 / (params[:, 3:4] * params[:, 3:4])) * u
        inside += (1 / (params[:, 4:5] * params[:, 4:5])) * v
        np.sqrt(inside, out=inside)
    else:
        centred = cands.copy()
        centred[:, 0] -= pixels.xc
        centred[:, 1] -= pixels.yc
        inside = ellipse_radius(centred, xs, ys)
    np.subtract(np.float32(1.0), inside, out=inside)
    inside *= cands[:, 4].astype(np.float32)[:, None]
    inside += np.float32(0.5)
    z = _z_of(np.clip(inside, 0.0, 1.0, out=inside), pixels)
    if bounds is not None:
        cos64, sin64 = np.cos(cands[:, 2]), np.sin(cands[:, 2])
        half_width = np.hypot(cands[:, 3] * cos64, cands[:, 4] * sin64)  # the rotated ellipse's half extents
        half_height = np.hypot(cands[:, 3] * sin64, cands[:, 4] * cos64)
        fits = ((cands[:, 0] - half_width >= bounds[0]) & (cands[:, 0] + half_width <= bounds[2])
                & (cands[:, 1] - half_height >= bounds[1]) & (cands[:, 1] + half_height <= bounds[3]))
        z = np.where(fits, z, -np.inf)
    return z
