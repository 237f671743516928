"""The widget's frames: random access for the slider, one at a time, whatever the source was.

A NumPy array ``(T, rows, columns)`` (or one 2-D frame), a simulated clip (`sam4em_live.simulate`'s
memory-mapped frames and calibration) or a recording path (any format the readers support, read frame by
frame through `sam4em_live.io.reader_registry`, so a long movie is never loaded whole).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from sam4em_live.frames import Calibration

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from sam4em_live.io.frame_readers import FrameReader


class FrameAccess:
    """Frames by index (``frames[k]`` a 2-D array, rows x columns), their count, shape and calibration."""

    def __init__(self, source: object) -> None:
        from sam4em_live.api.simulate import Simulation

        self._reader: FrameReader | None = None
        self._array: np.ndarray | None = None
        self.calibration = Calibration()
        if isinstance(source, Simulation):
            frames = np.asarray(source.frames)
            self._array = frames[None] if frames.ndim == 2 else frames  # a one-frame clip reads back 2-D
            self.calibration = source.calibration
        elif isinstance(source, (str, Path)):
            from sam4em_live.io.reader_registry import open_reader

            self._reader = open_reader(Path(source))
            self.calibration = self._reader.calibration
        elif isinstance(source, np.ndarray) or hasattr(source, "__array__"):
            array = np.asarray(source)
            self._array = array[None] if array.ndim == 2 else array
        else:
            raise TypeError(f"frames must be an array (T, rows, columns), a simulated clip or a recording path, "
                            f"got {type(source).__name__}")
        if self._array is not None and self._array.ndim != 3:
            raise ValueError(f"frames must be (T, rows, columns), got shape {self._array.shape}")
        if len(self) == 0:
            raise ValueError("no frames to show")

    def __len__(self) -> int:
        if self._array is not None:
            return int(self._array.shape[0])
        assert self._reader is not None
        return int(self._reader.n_frames)

    def __getitem__(self, index: int) -> np.ndarray:
        if self._array is not None:
            return self._array[index]
        assert self._reader is not None
        return self._reader.read(index)

    @property
    def shape(self) -> tuple[int, int]:
        first = self[0]
        return int(first.shape[0]), int(first.shape[1])

    def counted(self, on_frame: Callable[[int], None]) -> CountedFrames:
        """The frames as a sized iterable that reports each frame it hands out (the run's progress)."""
        return CountedFrames(self, on_frame)

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()


class CountedFrames:
    """Every frame of a `FrameAccess` in order, calling ``on_frame(k)`` as frame ``k`` is pulled."""

    def __init__(self, frames: FrameAccess, on_frame: Callable[[int], None]) -> None:
        self._frames = frames
        self._on_frame = on_frame

    def __len__(self) -> int:
        return len(self._frames)

    def __iter__(self) -> Iterator[np.ndarray]:
        for k in range(len(self._frames)):
            self._on_frame(k)
            yield np.asarray(self._frames[k])
