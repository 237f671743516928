"""A rounded particle's seed moved to its measured edge: the rule the shape memory applies, on one frame.

The seed's outline is a fitted shape or a smoothed contour, chosen by the z of a *flat* template
(`outline_fit`). A flat template is a plate's own profile, and a fitted triangle or rectangle is unbiased;
on a rounded particle (sphere, rod: its thickness, hence its contrast, falls to zero at the rim) it scores
best inside the rim, and seeds were 13-26 % smaller than the robustness conditions' rods and spheres.
Here the raw contrast is averaged along a rounded seed's outline into a mean edge profile (a hundred
pixels or more per half-pixel bin: little noise on one frame) and fitted by the shape memory's edge models
(`boundary.fit_profile`: a blurred chord, or a blurred step where that fits clearly better); the outline
moves to the fitted edge, and is fitted again from there (the chord's radius is the outline's). Pixels of
the neighbours' basins are neither read nor taken. Where the profile shows no single edge (no clear one,
one wider than the blur allows, or farther than the flat template's bias explains: a look-alike pressed
against the particle, a texture patch) the outline stands.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from sam4em_live.segment.embedded.boundary import (
    MAX_OFFSET_PX,
    PROFILE_INSIDE_PX,
    PROFILE_OUTSIDE_PX,
    ROUNDED_MAX_LOSS,
    ROUNDED_OPENING_FRACTION,
    edge_profile,
    fit_profile,
    inscribed_radius,
    signed_distance,
)
from sam4em_live.segment.embedded.seed_region import filled

#: Fits at most: the chord model's radius is the outline's, so a seed that moved refits once more.
EDGE_ROUNDS = 3
#: A round whose fitted edge lies farther than this from the outline (px), or whose profile needs this much
#: blur (px, the largest widths `boundary.BLUR_SIGMAS_PX` tries) did not see one edge: the outline stands.
MAX_STEP_PX, UNRESOLVED_BLUR_PX = 3.0, 5.0
#: The outline moves at most this far out / in (px) in all: the flat template's bias on a rounded
#: particle is ~1.5-2.5 px (a 40 px sphere, a 32 px wide rod, with the detector's blur).
MAX_OUTWARD_PX, MAX_INWARD_PX = 3.0, 2.0


def measured_edge(darkness: np.ndarray, mask: np.ndarray, usable: np.ndarray) -> np.ndarray:
    """``mask`` (bool, on the window) moved to the edge of the raw contrast ``darkness`` across its outline.

    ``usable``: the pixels the profile may read (not a neighbour's basin, inside the frame).
    """
    rows, cols = np.nonzero(mask)
    pad = int(math.ceil(PROFILE_OUTSIDE_PX + MAX_OFFSET_PX)) + 2
    r0, r1 = max(int(rows.min()) - pad, 0), min(int(rows.max()) + pad + 1, mask.shape[0])
    c0, c1 = max(int(cols.min()) - pad, 0), min(int(cols.max()) + pad + 1, mask.shape[1])
    start = mask[r0:r1, c0:c1]
    readable = usable[r0:r1, c0:c1]
    start_distance = signed_distance(start)
    distance, crop, shift = start_distance, start, 0.0
    if inscribed_radius(distance) < 2 or _corner_loss(start, start_distance) > ROUNDED_MAX_LOSS:
        return mask  # a polygon: the flat template is a plate's own profile, and its fit is unbiased
    for _ in range(EDGE_ROUNDS):
        radius = inscribed_radius(distance)
        read = np.where(readable, distance, np.nan).astype(np.float32)
        profile = edge_profile(darkness[r0:r1, c0:c1], read, min(PROFILE_INSIDE_PX, radius + 2.0))
        edge = fit_profile(profile, radius, rounded=True)
        if edge is None or abs(edge.offset_px) > MAX_STEP_PX or edge.blur_px >= UNRESOLVED_BLUR_PX:
            break  # no edge, or not one edge: a neighbour pressed against it, a texture patch
        shift = float(np.clip(shift + edge.offset_px, -MAX_OUTWARD_PX, MAX_INWARD_PX))
        moved = filled(start_distance > shift) & readable
        if moved.sum() < 6:
            break
        crop = moved
        if abs(edge.offset_px) < 0.5:
            break
        distance = signed_distance(crop)
    out = np.zeros_like(mask)
    out[r0:r1, c0:c1] = crop
    return out


def _corner_loss(mask: np.ndarray, distance: np.ndarray) -> float:
    """`boundary.corner_loss` of a convex outline (the seed's fitted shapes are), from its signed ``distance``.

    The hull is the outline itself: one distance transform instead of a hull and two (the shape
    memory's outlines are noisy and need the hull; a seed's fitted ellipse, triangle or rectangle is not).
    """
    radius = ROUNDED_OPENING_FRACTION * (float(distance.max()) + 0.5)
    core = distance + 0.5 >= radius
    opened = ndimage.distance_transform_edt(~core) <= radius
    return 1.0 - float((opened & mask).sum()) / float(mask.sum())
