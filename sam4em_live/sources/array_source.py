"""A finite source over frames already in memory (a numpy stack).

For notebooks and tests: run the full pipeline on an array without files or
sockets. It is an `IterableSource` over the stack's first axis (one code path
for frames in memory and frames produced lazily), with the frame count known
and optional pacing. Frames are stamped with the wall clock at emission, which
is not an acquisition time: the run's time axis is ``calibration.fps``, else
frames (`sam4em_live.frames.TimeBase`). ``delay_s`` paces them; unpaced, the
series is not ``live``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sam4em_live.sources.iterable_source import IterableSource

if TYPE_CHECKING:
    import numpy as np

    from sam4em_live.frames import Calibration


class ArraySource(IterableSource):
    """Yield ``frames[0], frames[1], ...`` (a (T, rows, columns) array), then `EndOfStream`."""

    def __init__(self, frames: np.ndarray, calibration: Calibration | None = None, delay_s: float = 0.0,
                 series_id: str = "array") -> None:
        if frames.ndim != 3:
            raise ValueError(f"frames must be (T, rows, columns), got shape {frames.shape}")
        self.frames = frames
        super().__init__(iter(frames), calibration, series_id=series_id, n_frames=int(frames.shape[0]),
                         delay_s=delay_s, source_name="array")
