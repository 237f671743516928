"""User-given calibration (CLI flags, config) laid over a source's own metadata.

`calibrated(source, override)` wraps any `FrameSource`. The wrapper forwards only the
`FrameSource` seam; a source that can also move its stage (`MovableStage`, the simulator) is
wrapped in `CalibratedStageSource`, which forwards ``move_stage`` too, so a closed-loop hook
still reaches the stage through the wrapper and ``isinstance(wrapper, MovableStage)`` tells the
truth.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from sam4em_live.sources.base import FrameSource, MovableStage, SourceCounters

if TYPE_CHECKING:
    from sam4em_live.frames import Calibration, Frame, SeriesInfo


class CalibratedSource:
    """A `FrameSource` whose frames and series carry ``override`` merged over their own calibration.

    Fields set in ``override`` win; fields it leaves unset keep the source's values
    (`Calibration.merged`).
    """

    def __init__(self, inner: FrameSource, override: Calibration) -> None:
        self.inner = inner
        self.override = override

    @property
    def counters(self) -> SourceCounters:
        return self.inner.counters

    @property
    def series(self) -> SeriesInfo | None:
        series = self.inner.series
        if series is None:
            return None
        return dataclasses.replace(series, calibration=series.calibration.merged(self.override))

    def open(self) -> None:
        self.inner.open()

    def next_frame(self, timeout_s: float) -> Frame | None:
        frame = self.inner.next_frame(timeout_s)
        if frame is None:
            return None
        return dataclasses.replace(frame, calibration=frame.calibration.merged(self.override))

    def close(self) -> None:
        self.inner.close()


class CalibratedStageSource(CalibratedSource):
    """`CalibratedSource` over a source with a movable stage; ``move_stage`` goes to that stage."""

    def __init__(self, inner: FrameSource, override: Calibration) -> None:
        if not isinstance(inner, MovableStage):
            raise TypeError(f"{type(inner).__name__} has no move_stage(dx_nm, dy_nm); use CalibratedSource")
        super().__init__(inner, override)
        self.stage: MovableStage = inner

    def move_stage(self, dx_nm: float, dy_nm: float) -> None:
        self.stage.move_stage(dx_nm, dy_nm)


def calibrated(source: FrameSource, override: Calibration) -> CalibratedSource:
    """Wrap ``source`` so ``override`` wins over its metadata, keeping its stage if it has one."""
    if isinstance(source, MovableStage):
        return CalibratedStageSource(source, override)
    return CalibratedSource(source, override)
