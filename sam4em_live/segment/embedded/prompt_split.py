"""A seed that took in a neighbour, cut down to the particle the prompt is on, before its track starts.

In a packed field the seed of a prompt sometimes holds two particles (robustness `dense`: 2 of 70 seeds,
3266 and 3779 px where a prism is ~1550 px; their masks straddled the pair on frames 0-3, 25 px from either:
a hop on the prompt frame itself). The seed's outline has no neck there, but its contrast does: a gap of
2 px between two prisms, blurred, leaves a valley that the smoothed contrast drops into, so the seed's
pixels above a fraction of its peak fall apart into two bodies of comparable size, where a single particle
stays one body (or sheds a few noise pixels) at every level tried (`SPLIT_LEVELS`, at most 0.35 of the
peak: texture inside one particle dips less deep). The seed is then partitioned between the bodies (each
pixel to the nearest one) and the part the prompt is on is kept: the part under the point, or for a box
the part the box holds. A seed that is one body is returned unchanged.

Where two touching particles leave no valley but the seed's outline has a neck, and one side of it is a disc
(a sphere with a look-alike touching it on the prompt frame), the seed is cut at the neck (`necked_bodies`).

Where two touching particles leave no valley, a batch of prompts can still tell: in a field of like particles
prompted together (`batch_body_px`: at least `MIN_BATCH` seeds whose areas agree), a seed much larger than the
batch's typical one (`OVERSIZED`) holds more than its particle, and it is trimmed to a disc of the typical area
around the prompt's point (`trimmed_to_body`): the young memory grows its true outline from there (robustness
`dense`, seed 1: a 9816 px seed cut to 3020 px by the valley held its 1559 px prism and pieces of three
neighbours with no valley between them; its mask drifted 24 px off by frame 5).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from sam4em_live.segment.embedded.morphology import fill_holes
from sam4em_live.segment.embedded.seed_window import seed_from_mask

if TYPE_CHECKING:
    from collections.abc import Iterable

    from sam4em_live.particles import Prompt
    from sam4em_live.segment.embedded.seed_window import Seed

#: Fractions of the seed's peak contrast (90th percentile, smoothed) at which its bodies are looked for,
#: highest first: the bodies' cores, among which the rest of the seed is shared out. A gap between two particles is
#: background: smoothed, it stays below a third of the peak (the dense pairs fall apart at 0.1-0.35). A dip
#: inside one particle does not: its own thickness profile splits it only from 0.65 up, and under the 1/f
#: background texture of `foreign-noise` a rod split at 0.45 (its seed cut in half: J&F 91.1 -> 87.7 at 0.5).
SPLIT_LEVELS = (0.35, 0.3, 0.2)
#: Two bodies are two particles when the smaller holds at least this share of the two (a single particle's
#: split-off noise is under 0.06 of it on every robustness seed; the dense pairs are 0.42 and 0.49).
MIN_BODY_SHARE = 0.3
#: ... and at least this many pixels.
MIN_BODY_PX = 30
#: A box keeps the part it holds most of, if the other part lies less than this fraction inside it.
BOX_OTHER_INSIDE = 0.5
#: Fewest seeds of one batch for their typical area to stand for a body ...
MIN_BATCH = 5
#: ... and how far their middle half may spread (interquartile range over the median): like particles.
MAX_BATCH_SPREAD = 0.5
#: A seed larger than this multiple of the batch's typical area is trimmed to it (`trimmed_to_body`). The dense
#: field's single prisms are 0.86-1.09 of their batch's median, the merged seed 1.96.
OVERSIZED = 1.5
#: Two touching bodies leave no valley in the contrast but a neck in the outline: the distance to the seed's
#: outline (its inscribed radius) peaks once in each body and dips at the neck (`necked_bodies`). Two bodies when
#: the neck's inscribed radius is at most this fraction of the smaller body's peak ...
NECK_RATIO = 0.75
#: ... and the smaller body's peak is at least this fraction of the larger one's (a bump on the outline is no body) ...
NECK_PEAK_SHARE = 0.6
#: ... and at least one of them is a disc: its area at most this multiple of its inscribed disc's. A rod with a
#: waist has a neck as deep as two touching spheres (a `foreign-noise` rod: 0.7 of its peak) but both its halves
#: are elongated (1.58x), as are a dense field's prisms (1.44-2.63x); the sphere that robustness `distractors`
#: MoNet seed 2 seeded with the end of a look-alike rod touching it: 1.18x (the rod's part 1.89x).
DISC_FILL = 1.3


def bodies(seed: Seed, smoothing_px: float) -> np.ndarray | None:
    """The seed's pixels partitioned between its bodies (int labels on the seed's window, 0 off the seed).

    None when the seed is one body (see the module docstring).
    """
    rows, cols = np.nonzero(seed.mask)
    if rows.size < 2 * MIN_BODY_PX:
        return None
    pad = int(np.ceil(3 * smoothing_px))
    r0, c0 = max(int(rows.min()) - pad, 0), max(int(cols.min()) - pad, 0)
    r1, c1 = int(rows.max()) + pad + 1, int(cols.max()) + pad + 1
    mask = seed.mask[r0:r1, c0:c1]
    smooth = ndimage.gaussian_filter(seed.window.darkness[r0:r1, c0:c1].astype(np.float32), smoothing_px)
    peak = float(np.percentile(smooth[mask], 90))
    if peak <= 0:
        return None
    for level in SPLIT_LEVELS:
        labels, count = ndimage.label(mask & (smooth > level * peak))
        if count < 2:
            continue
        sizes = np.bincount(labels.ravel())[1:]
        first, second = np.sort(sizes)[::-1][:2]
        if second < MIN_BODY_PX or second < MIN_BODY_SHARE * (first + second):
            continue
        markers = np.where(np.isin(labels, np.flatnonzero(sizes >= MIN_BODY_PX) + 1), labels, 0)
        _, (near_r, near_c) = ndimage.distance_transform_edt(markers == 0, return_indices=True)
        parts = np.where(mask, markers[near_r, near_c], 0)
        out = np.zeros(seed.mask.shape, dtype=np.int32)
        out[r0:r1, c0:c1] = parts
        return out
    return necked_bodies(seed)


def necked_bodies(seed: Seed) -> np.ndarray | None:
    """The seed's pixels split at a neck of its outline between two disc-like bodies (see `NECK_RATIO`); else None."""
    mask = fill_holes(seed.mask)
    inscribed = ndimage.distance_transform_edt(mask)
    top = float(inscribed.max())
    if top <= 0:
        return None
    # Rising through the inscribed radii: the first level at which the seed's core falls apart into two
    # bodies, each with a peak comparable to the other's and well above that level (the neck).
    for level in np.arange(0.3, NECK_RATIO + 1e-6, 0.05) * top:
        labels, count = ndimage.label(inscribed > level)
        if count < 2:
            continue
        peaks = np.asarray(ndimage.maximum(inscribed, labels, np.arange(1, count + 1)))
        order = np.argsort(peaks)[::-1]
        first, second = peaks[order[0]], peaks[order[1]]
        if second < NECK_PEAK_SHARE * first or level > NECK_RATIO * second:
            continue
        keep = order[:2] + 1
        sizes = np.bincount(labels.ravel())[keep]
        if sizes.min() < MIN_BODY_PX:
            continue
        markers = np.where(np.isin(labels, keep), labels, 0)
        _, (near_r, near_c) = ndimage.distance_transform_edt(markers == 0, return_indices=True)
        parts = np.where(mask, markers[near_r, near_c], 0).astype(np.int32)
        areas = np.bincount(parts.ravel(), minlength=int(keep.max()) + 1)[keep]
        if np.all(areas > DISC_FILL * np.pi * peaks[keep - 1] ** 2):
            return None  # no disc on either side: a rod's waist, or a pair of rods (the shape cannot tell)
        return parts
    return None


def prompted_part(parts: np.ndarray, seed: Seed, prompt: Prompt) -> int:
    """The label of the part ``prompt`` is on (0: none can be told, keep the whole seed)."""
    point = next((p for p, label in zip(prompt.points, prompt.labels, strict=False) if label == 1), None)
    if point is not None:
        row, col = round(point[1] - seed.window.y0), round(point[0] - seed.window.x0)
        if not (0 <= row < parts.shape[0] and 0 <= col < parts.shape[1]):
            return 0
        if parts[row, col]:
            return int(parts[row, col])
        # A rim click just outside the seed: the part nearest to it.
        _, (near_r, near_c) = ndimage.distance_transform_edt(parts == 0, return_indices=True)
        return int(parts[near_r[row, col], near_c[row, col]])
    if prompt.box is None:
        return 0
    x0, y0, x1, y1 = prompt.box
    ys = np.arange(parts.shape[0]) + seed.window.y0
    xs = np.arange(parts.shape[1]) + seed.window.x0
    inside: np.ndarray = np.outer((ys >= y0) & (ys <= y1), (xs >= x0) & (xs <= x1))
    labels = np.unique(parts[parts > 0])
    share = {int(k): float(inside[parts == k].mean()) for k in labels}
    ranked = sorted(share, key=share.__getitem__, reverse=True)
    if len(ranked) < 2 or share[ranked[1]] >= BOX_OTHER_INSIDE:
        return 0  # the box holds both: the user's box, not ours to cut
    return ranked[0]


def split_seed(seed: Seed, prompt: Prompt, smoothing_px: float) -> Seed:
    """``seed`` cut down to the part ``prompt`` is on when it holds several particles; else ``seed`` itself."""
    parts = bodies(seed, smoothing_px)
    if parts is None:
        return seed
    kept = prompted_part(parts, seed, prompt)
    if kept == 0:
        return seed
    return seed_from_mask(seed.window, fill_holes(parts == kept), seed.polarity, seed.contrast)


def batch_body_px(seeds: Iterable[Seed]) -> float | None:
    """The typical area (px) of a batch of seeds of like particles; None when the batch cannot tell (see above)."""
    areas = np.array([float(seed.mask.sum()) for seed in seeds])
    if areas.size < MIN_BATCH:
        return None
    q1, median, q3 = np.percentile(areas, [25, 50, 75])
    if median <= 0 or (q3 - q1) > MAX_BATCH_SPREAD * median:
        return None
    return float(median)


def trimmed_to_body(seed: Seed, prompt: Prompt, body_px: float | None) -> Seed:
    """``seed`` cut to a disc of ``body_px`` around the prompt's point when it is `OVERSIZED`; else ``seed``.

    Only for a point prompt (a box already bounds its particle) and a batch that knows its body size.
    """
    point = next((p for p, label in zip(prompt.points, prompt.labels, strict=False) if label == 1), None)
    if body_px is None or point is None or seed.mask.sum() <= OVERSIZED * body_px:
        return seed
    rows, cols = np.ogrid[: seed.mask.shape[0], : seed.mask.shape[1]]
    near = np.hypot(cols + seed.window.x0 - point[0], rows + seed.window.y0 - point[1]) <= np.sqrt(body_px / np.pi)
    labels, count = ndimage.label(seed.mask & near)
    if count == 0:
        return seed
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return seed_from_mask(seed.window, fill_holes(labels == int(np.argmax(sizes))), seed.polarity, seed.contrast)


def cut_to_prompt(seed: Seed, prompt: Prompt, smoothing_px: float, body_px: float | None) -> Seed:
    """``seed`` cut to the particle ``prompt`` is on (`split_seed`, then `trimmed_to_body`)."""
    return trimmed_to_body(split_seed(seed, prompt, smoothing_px), prompt, body_px)
