"""The embedded backend's pose search of one particle: near its prediction first, then its full radius.

`PoseSearches` is the part of `EmbeddedSegmenter` that searches one particle at a time (moved out of
segmenter.py, which keeps the frame loop): the coarse-to-fine matched filtering of `search` on the block
levels of its window (`near.block_level`). The batched near searches of a frame's particles
(`batched_search`) give the same answers as these, particle for particle (tests/test_embedded_batched_search.py).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

from sam4em_live.segment.embedded.near import NEAR_MAX_TURN_DEG, NearWindow, block_level
from sam4em_live.segment.embedded.search import (
    CoarsePose,
    FineLevel,
    MotionPrior,
    PoseEstimate,
    coarse_search,
    fine_search,
    fine_window_extent,
)

if TYPE_CHECKING:
    import numpy as np

    from sam4em_live.segment.embedded.options import EmbeddedOptions
    from sam4em_live.segment.embedded.raster import Placement
    from sam4em_live.segment.embedded.tracker import TrackedParticle

#: A near-window match is kept (no full-radius search) if its z is at least this fraction of the typical z.
NEAR_ACCEPT_Z_FRACTION = 0.7


class SearchOutcome(NamedTuple):
    """A pose search's best estimate (None: nothing within reach) and the background of its window."""

    estimate: PoseEstimate | None
    background: float


class PoseSearches:
    """One particle's pose search (a part of `EmbeddedSegmenter`)."""

    options: EmbeddedOptions

    def _search(self, pixels: np.ndarray, track: TrackedParticle, claims: list[Placement],
                radius_px: float | None = None, centre: tuple[float, float] | None = None,
                prepared: NearWindow | None = None) -> SearchOutcome:
        """Coarse-to-fine pose search near the prediction (or ``centre``): the estimate and its window's background.

        A present particle is first searched within ``near_search_radius_px``; that
        answer stands if it is clear (z >= NEAR_ACCEPT_Z_FRACTION of the particle's
        typical z) and interior (not on the near window's rim, where the best
        match may lie further out). Otherwise the full radius is searched.
        ``prepared`` is the near window when `_near_windows` made it.
        """
        prior = prepared.prior if prepared is not None else track.prior(self.options, reacquire=centre is not None)
        if radius_px is not None:
            prior = prior.within(radius_px)
        near_px = self.options.near_search_radius_px
        if centre is None and radius_px is None and track.present and 0 < near_px < prior.radius_px:
            near = self._search_window(pixels, track, claims, prior.within(near_px), prior, near=True,
                                       prepared=prepared)
            estimate = near.estimate
            if (estimate is not None and estimate.z >= NEAR_ACCEPT_Z_FRACTION * track.z_ref
                    and math.hypot(estimate.x - prior.x, estimate.y - prior.y)
                    <= near_px - track.memory.coarse_factor):
                return near
        return self._search_window(pixels, track, claims, prior, prior, centre=centre)

    def _search_window(self, pixels: np.ndarray, track: TrackedParticle, claims: list[Placement],
                       coarse_prior: MotionPrior, fine_prior: MotionPrior, near: bool = False,
                       centre: tuple[float, float] | None = None, prepared: NearWindow | None = None
                       ) -> SearchOutcome:
        if prepared is None:
            cx, cy = centre if centre is not None else (coarse_prior.x, coarse_prior.y)
            x0, y0, edge = track.window_origin(cx, cy, near=near)
            coarse = block_level(pixels, track, claims, x0, y0, edge, track.memory.coarse_factor)
            bank, correlation = None, None
        else:
            x0, y0, coarse, _, bank, correlation = prepared
        start: CoarsePose | None = coarse_search(coarse.contrast, x0, y0, track.memory, coarse_prior, coarse.valid,
                                                 max_turn_deg=NEAR_MAX_TURN_DEG if near else None,
                                                 correlation=correlation, bank=bank)
        if start is None:
            return SearchOutcome(None, coarse.background)
        fx0, fy0, fedge = fine_window_extent(track.memory, start.x, start.y)
        fine = block_level(pixels, track, claims, fx0, fy0, fedge, track.memory.fine_factor, coarse.background,
                            clip_pixels=True)
        level = FineLevel(fx0, fy0, fine.contrast, fine.valid)
        return SearchOutcome(fine_search(level, track.memory, start, fine_prior), coarse.background)
