"""Example hooks shipped with sam4em-live (entry points ``keep-centred`` and ``stop-when-lost``).

Use them from a config file::

    [[hooks.hooks]]
    target = "keep-centred"
    options = { edge_margin_px = 96, max_step_nm = 400 }
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

from pydantic import Field, NonNegativeInt, PositiveFloat, PositiveInt

from sam4em_live.config import FrozenModel

if TYPE_CHECKING:
    from sam4em_live.hooks.api import HookContext
    from sam4em_live.particles import ParticleMeasurement

logger = logging.getLogger(__name__)


class KeepCentred:
    """Move the stage to bring a tracked particle back to the image centre when it nears an edge.

    Sign convention: moving the stage by +d nm shifts the image content by
    -d / pixel_size_nm px, so a particle at offset (x - cx, y - cy) px from the
    centre is recentred by a move of (+(x - cx), +(y - cy)) * pixel_size_nm.
    Moves are clipped to ``max_step_nm``; after an accepted move the hook waits
    ``settle_frames`` frames (frames already in flight predate the move).
    Needs the pixel size (``calibration.pixel_size_nm``); without it, it does nothing
    and says so once.
    """

    class Options(FrozenModel):
        """Options of `KeepCentred` (``[[hooks.hooks]] options``)."""

        particle: PositiveInt | None = None  # None: the present particle with the lowest id
        edge_margin_px: PositiveFloat = 64.0
        max_step_nm: PositiveFloat = 500.0
        recentre_fraction: float = Field(1.0, gt=0.0, le=1.0)
        settle_frames: NonNegativeInt = 10

    def __init__(self, options: Options | None = None) -> None:
        self.options = options or self.Options()
        self.moves = 0
        self.refused = 0
        self._hold_until = -1
        self._warned = False

    def on_result(self, ctx: HookContext) -> None:
        opts = self.options
        target = self._target(ctx)
        if target is None or ctx.shape is None or ctx.frame_index is None or ctx.microscope is None:
            return
        self.refused += sum(1 for o in ctx.outcomes if not o.accepted)
        if ctx.frame_index < self._hold_until:
            return
        rows, cols = ctx.shape
        margin = min(target.x + 0.5, cols - 0.5 - target.x, target.y + 0.5, rows - 0.5 - target.y)
        if margin >= opts.edge_margin_px:
            return
        pixel_nm = ctx.calibration.pixel_size_nm
        if pixel_nm is None:
            if not self._warned:
                logger.warning("keep-centred: pixel size unknown; set calibration.pixel_size_nm to enable it")
                self._warned = True
            return
        dx_nm, dy_nm = self._step_nm(target, rows, cols, pixel_nm)
        outcome = ctx.microscope.move_stage(dx_nm, dy_nm)
        if outcome.accepted:
            self.moves += 1
            self._hold_until = ctx.frame_index + opts.settle_frames
            logger.info("keep-centred: particle %d at (%.0f, %.0f) px, %.0f px from the edge: stage moved "
                        "(%.0f, %.0f) nm", target.particle, target.x, target.y, margin, dx_nm, dy_nm)

    def _target(self, ctx: HookContext) -> ParticleMeasurement | None:
        present = ctx.present
        if self.options.particle is not None:
            return next((m for m in present if m.particle == self.options.particle), None)
        return min(present, key=lambda m: m.particle, default=None)

    def _step_nm(self, target: ParticleMeasurement, rows: int, cols: int, pixel_nm: float) -> tuple[float, float]:
        cx, cy = (cols - 1) / 2, (rows - 1) / 2
        fraction = self.options.recentre_fraction
        dx_nm = (target.x - cx) * pixel_nm * fraction
        dy_nm = (target.y - cy) * pixel_nm * fraction
        step = math.hypot(dx_nm, dy_nm)
        if step > self.options.max_step_nm:
            scale = self.options.max_step_nm / step
            dx_nm, dy_nm = dx_nm * scale, dy_nm * scale
        return dx_nm, dy_nm


class StopWhenLost:
    """Stop recording (and blank the beam) when every tracked particle has been absent for N frames.

    Counted in frame indices, so coalesced results do not delay it. Fires once
    per loss; re-armed when a particle is found again.
    """

    class Options(FrozenModel):
        """Options of `StopWhenLost` (``[[hooks.hooks]] options``)."""

        lost_frames: PositiveInt = 10
        blank_beam: bool = True
        annotate: bool = True

    def __init__(self, options: Options | None = None) -> None:
        self.options = options or self.Options()
        self.fired = 0
        self._seen_any = False
        self._lost_since: int | None = None
        self._done = False

    def on_result(self, ctx: HookContext) -> None:
        if ctx.frame_index is None or not ctx.measurements:
            return  # nothing tracked: nothing can be lost
        if ctx.present:
            self._seen_any, self._lost_since, self._done = True, None, False
            return
        if not self._seen_any or self._done:
            return
        if self._lost_since is None:
            self._lost_since = ctx.frame_index
        lost_for = ctx.frame_index - self._lost_since + 1
        if lost_for >= self.options.lost_frames and ctx.microscope is not None:
            self._done = True
            self.fired += 1
            logger.warning("stop-when-lost: all particles lost for %d frames; stopping the recording", lost_for)
            ctx.microscope.stop_recording()
            if self.options.blank_beam:
                ctx.microscope.blank_beam()
            if self.options.annotate:
                ctx.microscope.annotate(f"stop-when-lost: all particles lost since frame {self._lost_since}")
