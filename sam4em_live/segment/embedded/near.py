"""The near search windows of a frame, prepared together, and the block levels every search reads.

Split from the segmenter: `near_windows` computes the coarse correlations of all near windows of a
frame in one stack (`search.coarse_correlations`); `block_level` is the window reader of every search.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

from sam4em_live.segment.embedded.claims import claimed
from sam4em_live.segment.embedded.search import MotionPrior, coarse_correlations
from sam4em_live.segment.embedded.window import (
    BlockLevel,
    WindowExtent,
    block_darkness,
    block_darkness_stack,
    block_mean,
    frame_window,
)

if TYPE_CHECKING:
    import numpy as np

    from sam4em_live.segment.embedded.options import EmbeddedOptions
    from sam4em_live.segment.embedded.raster import Placement
    from sam4em_live.segment.embedded.templates import CoarseBank
    from sam4em_live.segment.embedded.tracker import TrackedParticle

#: The near search tries only orientations within this turn of the last one; the full search, which a
#: larger turn falls back to (its near match is weak), tries all. Turns are ~5-17 degrees a frame.
NEAR_MAX_TURN_DEG = 45.0


class NearWindow(NamedTuple):
    """A near search's coarse window, prepared before the searches of a frame (`near_windows`)."""

    x0: int
    y0: int
    level: BlockLevel
    prior: MotionPrior  # the track's, computed once a frame: the track does not move until its search is done
    bank: CoarseBank | None  # the near bank, and
    correlation: np.ndarray | None  # its `coarse_correlations`, of an unmasked level


def near_windows(pixels: np.ndarray, tracks: list[TrackedParticle], claims: list[Placement], options: EmbeddedOptions
                 ) -> dict[int, NearWindow]:
    """The near windows `_search` will look at first, with their coarse correlations computed together.

    Windows of one size go through scipy.fft as one stack (`coarse_correlations`): the same
    floats, fewer calls. Masked windows (pixels out of the frame or claimed) are left to
    `coarse_search`. Nothing here depends on the order of the searches: no claim changes
    until they are all done.
    """
    near_px = options.near_search_radius_px
    windows: dict[int, NearWindow] = {}
    unmasked: list[NearWindow] = []  # correlation None until the stacks are transformed
    particles: list[int] = []  # of the unmasked windows,
    banks: list[CoarseBank] = []  # and their near banks
    planned: list[tuple[TrackedParticle, MotionPrior, WindowExtent]] = []
    for track in tracks:
        prior = track.prior(options)
        if track.present and 0 < near_px < prior.radius_px:
            planned.append((track, prior, track.window_origin(prior.x, prior.y, near=True)))
    for (track, prior, (x0, y0, _)), level in zip(planned, _near_levels(pixels, planned, claims), strict=True):
        if level.valid is not None:  # masked levels are matched (two more transforms) in `coarse_search`
            windows[track.particle] = NearWindow(x0, y0, level, prior, None, None)
            continue
        bank = track.memory.banks.coarse_bank_turning(level.contrast.shape[0], prior.angle_deg, NEAR_MAX_TURN_DEG)
        unmasked.append(NearWindow(x0, y0, level, prior, bank, None))
        particles.append(track.particle)
        banks.append(bank)
    correlations = coarse_correlations([window.level.contrast for window in unmasked], banks)
    for particle, window, correlation in zip(particles, unmasked, correlations, strict=True):
        # A new tuple: `_replace` costs ~2 us.
        windows[particle] = NearWindow(window.x0, window.y0, window.level, window.prior, window.bank, correlation)
    return windows


def _near_levels(pixels: np.ndarray, planned: list[tuple[TrackedParticle, MotionPrior, WindowExtent]],
                 claims: list[Placement]) -> list[BlockLevel]:
    """`block_level` of each planned near window: the unclaimed ones of one size and factor as one stack."""
    levels: list[BlockLevel | None] = [None] * len(planned)
    groups: dict[tuple[int, int], list[int]] = {}
    for i, (track, _, (x0, y0, edge)) in enumerate(planned):
        if claimed(claims, x0, y0, edge) is None:
            groups.setdefault((edge, track.memory.coarse_factor), []).append(i)
    for (edge, factor), members in groups.items():
        stacked = block_darkness_stack(pixels, [(planned[i][2].x0, planned[i][2].y0) for i in members], edge, factor,
                                       [planned[i][0].polarity for i in members])
        for i, level in zip(members, stacked, strict=True):
            levels[i] = level
    return [level if level is not None else block_level(pixels, track, claims, x0, y0, edge, track.memory.coarse_factor)
            for level, (track, _, (x0, y0, edge)) in zip(levels, planned, strict=True)]


def block_level(pixels: np.ndarray, track: TrackedParticle, claims: list[Placement], x0: int, y0: int, edge: int,
                factor: int, background: float | None = None, clip_pixels: bool = False) -> BlockLevel:
    """Block-mean contrast of the window at (x0, y0), its valid fraction (None: all valid) and background.

    Straight from the raw pixels (`block_darkness`) unless the window leaves the frame, holds
    saturated pixels or pixels claimed by other particles; then through `frame_window`.
    """
    taken = claimed(claims, x0, y0, edge)
    if taken is None:
        fast = block_darkness(pixels, x0, y0, edge, factor, track.polarity, background, clip_pixels)
        if fast is not None:
            return fast
    window = frame_window(pixels, x0, y0, edge, edge, track.polarity, taken, background)
    valid = None if window.valid.all() else block_mean(window.valid, factor)
    return BlockLevel(block_mean(window.darkness, factor), valid, window.background)
