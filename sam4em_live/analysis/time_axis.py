"""The time axis of an analysis: a frame rate the data really has, or frames -- never an invented one.

A run's ``t_s`` is an acquisition time only on some time bases (`sam4em_live.frames.TimeBase`, recorded
in ``run.json``). Runs recorded before ``run.json`` said so are judged from their source: a replay
stamped each frame when it read it, so its ``t_s`` measured our processing speed (152.6 fps on one run
of an 80 fps clip, 47.1 on the next) and is dropped. The frame rate, in order of preference: ``--fps``;
the calibration the run recorded; the rate implied by ``t_s`` where those are acquisition times (a
detector's timestamps, or a table file's own ``t_s`` column); else none: lags and times are in frames.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sam4em_live.frames import TimeBase
from sam4em_live.io.run_folder import calibration_from_run_json
from sam4em_live.io.trajectories import TIME_COLUMN, fps_from_times

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sam4em_live.io.trajectories import Trajectories

#: What `analyze` says when there is no frame rate (CLI, stats.json).
NO_FRAME_RATE = "no frame rate known: lags and times are in frames (pass --fps F, the acquisition rate, for seconds)"


@dataclass(frozen=True, slots=True)
class TimeAxis:
    """Frames per second of the analysis (None: time in frames) and where that came from, for the reader."""

    fps: float | None
    origin: str

    @property
    def unit(self) -> str:
        return "s" if self.fps else "frame"

    def describe(self) -> str:
        return f"fps {self.fps:.6g} from {self.origin}" if self.fps else NO_FRAME_RATE


def recorded_time_base(manifest: Mapping[str, Any]) -> TimeBase | None:
    """The time base of a run's ``t_s`` from its ``run.json`` (None: no run.json to tell).

    ``run.json`` ``time_base`` when written; for older runs: ``fps`` with a recorded frame rate, else
    ``frames`` for a replay (its timestamps were the processing clock), else ``detector_timestamps``.
    """
    if not manifest:
        return None
    recorded = manifest.get("time_base")
    if isinstance(recorded, str) and recorded in {base.value for base in TimeBase}:
        return TimeBase(recorded)
    try:
        if calibration_from_run_json(manifest).fps:
            return TimeBase.FPS
    except (ValueError, TypeError, AttributeError):
        pass  # an unreadable calibration: RunFolder.calibration warns about it
    config = manifest.get("config")
    source = config.get("source") if isinstance(config, dict) else None
    if isinstance(source, dict) and source.get("kind") == "replay":
        return TimeBase.FRAMES
    return TimeBase.DETECTOR_TIMESTAMPS


def times_are_acquisition(recorded: TimeBase | None) -> bool:
    """Whether a table's ``t_s`` may be read as acquisition times (a table file without a run: its own claim)."""
    return recorded is not TimeBase.FRAMES


def resolve_time_axis(loaded: Trajectories, fps: float | None, recorded: TimeBase | None) -> TimeAxis:
    """The analysis' frame rate: ``fps`` given, else the recorded calibration, else acquisition ``t_s``, else none."""
    if fps is not None:
        return TimeAxis(fps, "--fps")
    if loaded.calibration.fps:
        return TimeAxis(loaded.calibration.fps, "the run's calibration" if recorded else "the source's calibration")
    if times_are_acquisition(recorded) and TIME_COLUMN in loaded.table.columns:
        implied = fps_from_times(loaded.table)
        if implied is not None:
            origin = "the detector timestamps (t_s)" if recorded else "the table's t_s column"
            return TimeAxis(implied, origin)
    return TimeAxis(None, "nothing")
