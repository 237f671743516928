"""Which parts of a frame the background map may learn from: not the tracked particles, nor a lost one's place.

`background.FlatField` folds frames into a per-block running mean of the background. A block under a
particle must not be learned (the map would learn the particle and divide it out), but the background right
beside a particle must be: a particle that barely moves (real LPTEM motion) otherwise keeps whatever the
first frame guessed beside it, and a darker patch of texture there stays in its mask (issue 16,
`foreign-noise`: masks +11-16 % in area). So a tracked particle withholds the *pixels* of its mask grown by
`WITHHOLD_MARGIN_PX` (its blurred rim), and a block it cuts is learned from the rest of its pixels; a lost
particle's last place withholds whole blocks (its mask is not known).

Coordinates: x = column, y = row, pixels; the map's block (r, c) covers rows r*f .. r*f+f-1.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from sam4em_live.segment.embedded.morphology import dilate_disc
from sam4em_live.segment.embedded.window import _integer_max, block_mean, zero_padded

if TYPE_CHECKING:
    from sam4em_live.segment.embedded.raster import Placement

#: Pixels within this distance of a tracked particle's mask are not learned (its blurred rim).
WITHHOLD_MARGIN_PX = 3.0
#: A block partly withheld is learned from its other pixels when they are at least this share of it.
MIN_UNCOVERED_SHARE = 0.25
#: Masks are dilated in stacks of crops whose shapes agree once rounded up to this many pixels.
STACK_ROUNDING_PX = 16


def learn_beside(blocks: np.ndarray, learn: np.ndarray, pixels: np.ndarray, claims: list[Placement],
                 factor: int) -> None:
    """Withhold the pixels of each claimed mask grown by `WITHHOLD_MARGIN_PX`; blocks they cut keep the rest.

    ``blocks`` are the frame's block means (changed in place: a cut block becomes the mean of its uncovered
    pixels), ``learn`` the blocks to learn (cleared where less than `MIN_UNCOVERED_SHARE` is uncovered).

    Batched (issue 23: one call per particle was ~8 ms an update at 50 particles): the masks are dilated as
    stacks (`_withheld`), and the blocks of all regions are read in one gather where the block sums of the
    frame's integers are exact in float32 (`_exact_block_sums`): then any order of addition gives
    `block_mean`'s floats, and the result is `learn_beside_reference`'s bit for bit (tests).
    """
    withheld, regions = _withheld(learn.shape, claims, factor)
    if withheld is None:
        return
    if _exact_block_sums(pixels.dtype, factor):
        _learn_regions_together(blocks, learn, pixels, withheld, regions, factor)
    else:
        _learn_regions(blocks, learn, pixels, withheld, regions, factor)


def _exact_block_sums(dtype: np.dtype, factor: int) -> bool:
    """Whether a block's sum of ``factor``² pixels of ``dtype`` is an integer float32 holds exactly."""
    return dtype.kind == "u" and dtype.itemsize <= 2 and factor * factor * _integer_max(dtype) < 2**24


def _region(claim: Placement, shape: tuple[int, int], factor: int, grow: int) -> tuple[int, int, int, int] | None:
    """The blocks (r0, r1, c0, c1) a claim's grown mask touches; None if none (or the crop is empty)."""
    n_rows, n_cols = shape
    x0, y0, x1, y1 = claim.box
    if not claim.crop.any():
        return None
    r0, c0 = max((y0 - grow) // factor, 0), max((x0 - grow) // factor, 0)
    r1, c1 = min(-(-(y1 + grow) // factor), n_rows), min(-(-(x1 + grow) // factor), n_cols)
    return None if r0 >= r1 or c0 >= c1 else (r0, r1, c0, c1)


def _withheld(shape: tuple[int, int], claims: list[Placement], factor: int
              ) -> tuple[np.ndarray | None, list[tuple[int, int, int, int]]]:
    """The withheld pixels of the map's area (None: no claim reaches it) and each reaching claim's blocks.

    The masks are dilated in stacks of crops padded to one shape (`morphology.dilate_disc` over the last two
    axes; a crop's own part of its padded member is its dilation, the padding being zeros), one stack per
    shape rounded up to `STACK_ROUNDING_PX`, so a large particle does not pad every small one to its size.
    """
    grow = math.ceil(WITHHOLD_MARGIN_PX)
    reaching = [(claim, region) for claim in claims if (region := _region(claim, shape, factor, grow)) is not None]
    if not reaching:
        return None, []
    n_rows, n_cols = shape
    withheld = np.zeros((n_rows * factor, n_cols * factor), bool)  # one array for all: neighbours overlap
    stacks: dict[tuple[int, int], list[tuple[Placement, tuple[int, int, int, int]]]] = {}
    for claim, region in reaching:
        height, width = claim.crop.shape
        key = (-(-height // STACK_ROUNDING_PX), -(-width // STACK_ROUNDING_PX))
        stacks.setdefault(key, []).append((claim, region))
    for members in stacks.values():
        height = max(c.crop.shape[0] for c, _ in members) + 2 * grow
        width = max(c.crop.shape[1] for c, _ in members) + 2 * grow
        padded = np.zeros((len(members), height, width), bool)
        for member, (claim, _) in zip(padded, members, strict=True):
            member[grow : grow + claim.crop.shape[0], grow : grow + claim.crop.shape[1]] = claim.crop
        grown_stack = dilate_disc(padded, WITHHOLD_MARGIN_PX)
        for grown_member, (claim, region) in zip(grown_stack, members, strict=True):
            grown = grown_member[: claim.crop.shape[0] + 2 * grow, : claim.crop.shape[1] + 2 * grow]
            _paint(withheld, grown, claim.box[1] - grow, claim.box[0] - grow, region, factor)
    return withheld, [region for _, region in reaching]


def _paint(withheld: np.ndarray, grown: np.ndarray, top: int, left: int, region: tuple[int, int, int, int],
           factor: int) -> None:
    """OR a grown crop whose origin is (``top``, ``left``) into ``withheld`` within its ``region``'s blocks."""
    r0, r1, c0, c1 = region
    ya, yb = max(top, r0 * factor), min(top + grown.shape[0], r1 * factor)
    xa, xb = max(left, c0 * factor), min(left + grown.shape[1], c1 * factor)
    if ya < yb and xa < xb:
        withheld[ya:yb, xa:xb] |= grown[ya - top : yb - top, xa - left : xb - left]


def _learn_regions(blocks: np.ndarray, learn: np.ndarray, pixels: np.ndarray, withheld: np.ndarray,
                   regions: list[tuple[int, int, int, int]], factor: int) -> None:
    """Each region's cut blocks from their uncovered pixels, one region at a time (`block_mean`)."""
    saturated = _integer_max(pixels.dtype) if pixels.dtype.kind in "ui" else None
    for r0, r1, c0, c1 in regions:
        rows, cols = slice(r0 * factor, r1 * factor), slice(c0 * factor, c1 * factor)
        crop = pixels[rows, cols]
        uncovered = ~withheld[rows, cols]
        if saturated is not None:
            uncovered &= crop < saturated
        share = block_mean(uncovered.astype(np.float32), factor)
        sums = block_mean(np.where(uncovered, crop, 0).astype(np.float32), factor)
        enough = share >= MIN_UNCOVERED_SHARE
        blocks[r0:r1, c0:c1] = np.where(enough, sums / np.maximum(share, np.float32(1e-6)), blocks[r0:r1, c0:c1])
        learn[r0:r1, c0:c1] &= enough


def _learn_regions_together(blocks: np.ndarray, learn: np.ndarray, pixels: np.ndarray, withheld: np.ndarray,
                            regions: list[tuple[int, int, int, int]], factor: int) -> None:
    """`_learn_regions` for all regions' blocks in one gather (exact integer block sums: `_exact_block_sums`).

    A block in two regions is computed once; one by one it was computed twice from the same pixels (the
    withheld array is complete by then) and the second write changed nothing.
    """
    n_rows, n_cols = learn.shape
    touched = np.zeros(learn.shape, bool)
    for r0, r1, c0, c1 in regions:
        touched[r0:r1, c0:c1] = True
    rows, cols = np.nonzero(touched)
    s0, s1 = pixels.strides
    tiles = np.lib.stride_tricks.as_strided(pixels, (n_rows, factor, n_cols, factor),
                                            (factor * s0, s0, factor * s1, s1))[rows, :, cols, :]
    uncovered = ~withheld.reshape(n_rows, factor, n_cols, factor)[rows, :, cols, :]
    uncovered &= tiles < _integer_max(pixels.dtype)
    scale = np.array(1.0 / (factor * factor), np.float32)  # as `block_mean`: its sums are these integers
    share = np.count_nonzero(uncovered, axis=(1, 2)).astype(np.float32) * scale
    sums = np.einsum("kij,kij->k", tiles, uncovered, dtype=np.int64).astype(np.float32) * scale
    enough = share >= MIN_UNCOVERED_SHARE
    blocks[rows, cols] = np.where(enough, sums / np.maximum(share, np.float32(1e-6)), blocks[rows, cols])
    learn[rows, cols] &= enough


def learn_beside_reference(blocks: np.ndarray, learn: np.ndarray, pixels: np.ndarray, claims: list[Placement],
                           factor: int) -> None:
    """`learn_beside` one claim and one region at a time: the reference its batched steps are tested against.

    Each claim's mask is dilated on its own (not in the stacks of `_withheld`), and the regions are
    learned one by one (`_learn_regions`, the batched path's fallback for frames whose block sums are not exact).
    """
    grow = math.ceil(WITHHOLD_MARGIN_PX)
    withheld: np.ndarray | None = None
    regions: list[tuple[int, int, int, int]] = []
    for claim in claims:
        region = _region(claim, learn.shape, factor, grow)
        if region is None:
            continue
        if withheld is None:  # one array for all claims: regions of neighbours overlap
            withheld = np.zeros((learn.shape[0] * factor, learn.shape[1] * factor), bool)
        grown = dilate_disc(zero_padded(claim.crop, grow), WITHHOLD_MARGIN_PX)
        _paint(withheld, grown, claim.box[1] - grow, claim.box[0] - grow, region, factor)
        regions.append(region)
    if withheld is not None:
        _learn_regions(blocks, learn, pixels, withheld, regions, factor)


def withhold_disc(learn: np.ndarray, x: float, y: float, reach: float, factor: int) -> None:
    """Clear ``learn`` on the blocks of the square around (x, y) with half-size ``reach`` (pixels)."""
    r0, r1 = max(int((y - reach) // factor), 0), max(int(-(-(y + reach + 1) // factor)), 0)
    c0, c1 = max(int((x - reach) // factor), 0), max(int(-(-(x + reach + 1) // factor)), 0)
    learn[r0:r1, c0:c1] = False
