"""Replay a recording (TIFF / OME-TIFF stack or a folder of JPEG/PNG frames) as a timed stream.

Three pacing modes: the recording's own frame rate (``fps`` given, else the
rate in the file's metadata), a chosen rate, or as fast as possible. Pacing
uses monotonic deadlines, so a slow consumer never makes the replay drift and
`ReplaySource.next_frame` never sleeps past its timeout. With ``loop`` the
recording starts again at its end while the frame index keeps counting up.

Time: frames are stamped when they are emitted (latency is measured from that), which says nothing
about when they were acquired, so the series declares ``acquisition_timestamps=False`` and the run's
``t_s`` comes from the recording's frame rate (its metadata, or ``--fps``), else it is counted in
frames (`sam4em_live.frames.TimeBase`). A reader whose file records each frame's acquisition time
(`TimedFrameReader`) is replayed with those times instead, shifted onto the wall clock. Replayed as
fast as possible, the series is not ``live``: its read rate and latency are not a camera's.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
from pydantic import PositiveFloat

from sam4em_live.config import FrozenModel
from sam4em_live.frames import Calibration, Frame, SeriesInfo, TimeBase
from sam4em_live.io.frame_readers import FrameReader, ReplayError
from sam4em_live.io.reader_registry import open_reader
from sam4em_live.plugins import FactoryPlugin
from sam4em_live.sources.base import EndOfStream, SourceCounters

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from sam4em_live.sources.registry import SourceContext

__all__ = ["REPLAY_PLUGIN", "ReplayError", "ReplayOptions", "ReplaySource", "TimedFrameReader", "open_replay"]

log = logging.getLogger(__name__)


@runtime_checkable
class TimedFrameReader(FrameReader, Protocol):
    """A `FrameReader` whose file records when each frame was acquired (optional beside `FrameReader`).

    ``frame_times_s[i]`` is frame ``i``'s acquisition time in seconds, on any origin, non-decreasing;
    an empty sequence means the file has none. A frame interval alone belongs in ``calibration.fps``.
    """

    frame_times_s: Sequence[float]


def acquisition_times(reader: FrameReader) -> np.ndarray | None:
    """The reader's per-frame acquisition times (s, from the first frame), or None if it has no usable ones."""
    if not isinstance(reader, TimedFrameReader) or len(reader.frame_times_s) == 0:
        return None
    times = np.asarray(reader.frame_times_s, dtype=np.float64)
    if times.shape != (reader.n_frames,) or not np.all(np.isfinite(times)) or np.any(np.diff(times) < 0):
        log.warning("%s: the per-frame times in the file are not one finite, non-decreasing time per frame "
                    "(%d for %d frames); not used", reader.path, times.size, reader.n_frames)
        return None
    return times - times[0]


class ReplayOptions(FrozenModel):
    """Options of the ``replay`` source: the ``[source]`` table when ``kind = "replay"``."""

    # TIFF / OME-TIFF stack or a folder of numbered JPEG/PNG frames (any format of the reader registry).
    path: Path
    # Playback rate: None = the recording's own rate (metadata or calibration.fps).
    fps: PositiveFloat | None = None
    as_fast_as_possible: bool = False
    loop: bool = False


#: When emission falls this many frame intervals behind schedule, the schedule restarts
#: from now instead of bursting frames to catch up (a camera does not burst either).
_MAX_LAG_FRAMES = 2

#: Frames decoded ahead of time for readers that decode (JPEG, compressed TIFF); memory-mapped
#: stacks need no read-ahead.
PREFETCH_FRAMES = 4
_POLL_S = 0.1


class FramePrefetcher:
    """Calls ``read`` on its own thread and keeps up to ``depth`` results ready.

    Decoding (Pillow, zlib; both release the GIL) then overlaps the consumer,
    and `get` never waits longer than its timeout. An exception from ``read``
    (including `EndOfStream`) is handed to the consumer in order and ends the thread.
    """

    def __init__(self, read: Callable[[], Frame], depth: int, name: str) -> None:
        self._read = read
        self._queue: queue.Queue[Frame | BaseException] = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            item: Frame | BaseException
            try:
                item = self._read()
            except BaseException as exc:
                item = exc
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=_POLL_S)
                    break
                except queue.Full:
                    continue
            if isinstance(item, BaseException):
                return

    def get(self, timeout_s: float) -> Frame | None:
        """The next frame, None if none is ready within ``timeout_s``; re-raises the reader's exception."""
        try:
            item = self._queue.get(timeout=max(timeout_s, 0.0)) if timeout_s > 0 else self._queue.get_nowait()
        except queue.Empty:
            return None
        if isinstance(item, BaseException):
            self._queue.put_nowait(item)  # keep raising it on later calls
            raise item
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2.0)


class ReplaySource:
    """A `FrameSource` replaying a recording.

    Parameters
    ----------
    path
        TIFF / OME-TIFF stack, or folder of numbered JPEG/PNG frames.
    fps
        Playback rate in frames per second; None = the recording's own rate
        (``calibration_override.fps``, else the file metadata). Playback rate
        does not change the calibration: frames carry the acquisition ``fps``.
    as_fast_as_possible
        Ignore timing and emit frames as soon as they are read.
    loop
        Start again at the end; indices keep increasing
        (``index = loops_completed * n_frames + position``).
    calibration_override
        Fields that are set win over the file's metadata.
    """

    def __init__(self, path: str | Path, fps: float | None = None, as_fast_as_possible: bool = False,
                 loop: bool = False, calibration_override: Calibration | None = None) -> None:
        if fps is not None and not fps > 0:
            raise ReplayError(f"{path}: playback fps must be > 0, got {fps}")
        self.path = Path(path)
        self.playback_fps = fps
        self.as_fast_as_possible = as_fast_as_possible
        self.loop = loop
        self.calibration_override = calibration_override or Calibration()
        self.counters = SourceCounters()
        self.late_restarts = 0  # times emission fell behind and the schedule restarted
        self._reader: FrameReader | None = None
        self._series: SeriesInfo | None = None
        self._interval_s = 0.0
        self._next_index = 0
        self._pending: Frame | None = None
        self._due: float | None = None
        self._closed = False
        self._prefetcher: FramePrefetcher | None = None
        self._loops_emitted = 0
        self._frame_times_s: np.ndarray | None = None  # the file's acquisition times, from its first frame
        self._first_emitted_s: float | None = None  # wall clock when the first frame was emitted
        self._loop_period_s = 0.0  # recorded duration of one loop, one median frame interval included

    @classmethod
    def from_config(cls, config: ReplayOptions, calibration_override: Calibration | None = None) -> ReplaySource:
        return cls(config.path, config.fps, config.as_fast_as_possible, config.loop, calibration_override)

    @property
    def series(self) -> SeriesInfo | None:
        return self._series

    @property
    def interval_s(self) -> float:
        """Seconds between emitted frames (0 = as fast as possible); known after `open`."""
        return self._interval_s

    def open(self) -> None:
        """Open and check the recording; idempotent (`open_replay` opens early to fail early)."""
        if self._reader is not None:
            return
        if self._closed:
            raise ReplayError(f"{self.path}: replay source already closed")
        reader = open_reader(self.path)
        try:
            calibration = reader.calibration.merged(self.calibration_override)
            self._interval_s = self._resolve_interval(calibration)
        except BaseException:
            reader.close()
            raise
        self._reader = reader
        self._frame_times_s = times = acquisition_times(reader)
        if times is not None:
            self._loop_period_s = float(times[-1] + (np.median(np.diff(times)) if times.size > 1 else 0.0))
        metadata = {"source": "replay", "path": str(self.path.resolve()), "n_frames": reader.n_frames,
                    "loop": self.loop, "loops_completed": 0,
                    "playback_fps": None if self._interval_s == 0 else 1.0 / self._interval_s, **reader.metadata}
        series_id = f"{self.path.stem}-{uuid.uuid4().hex[:8]}"
        self._series = SeriesInfo(series_id, reader.shape, reader.dtype, calibration, metadata,
                                  acquisition_timestamps=self._frame_times_s is not None,
                                  live=not self.as_fast_as_possible)
        self.counters.series_started += 1
        log.info("replaying %s: %d frames %dx%d %s, %s; time axis: %s", self.path, reader.n_frames, reader.shape[1],
                 reader.shape[0], reader.dtype,
                 "as fast as possible" if self._interval_s == 0 else f"{1 / self._interval_s:.3g} fps",
                 self._series.time_base.value)
        if self._series.time_base is TimeBase.FRAMES:
            log.warning("%s records no frame rate and no frame times: t_s is left empty and time is counted "
                        "in frames (pass --fps F, the acquisition rate, for times in seconds)", self.path)

    def _resolve_interval(self, calibration: Calibration) -> float:
        if self.as_fast_as_possible:
            return 0.0
        fps = self.playback_fps or calibration.fps
        if fps is None:
            raise ReplayError(f"{self.path}: the recording has no frame rate in its metadata; "
                              "pass --fps F (playback rate) or replay as fast as possible")
        return 1.0 / fps

    def next_frame(self, timeout_s: float) -> Frame | None:
        """The next frame when it is due, else None after at most ``timeout_s``; `EndOfStream` at the end.

        Decoding readers run on a read-ahead thread (`FramePrefetcher`);
        memory-mapped stacks are read in place (a view, no decoding).
        """
        deadline = time.monotonic() + max(timeout_s, 0.0)
        if self._pending is None:
            self._pending = self._next_read(timeout_s)
            if self._pending is None:
                return None
        now = time.monotonic()
        if self._due is None:
            self._due = now
        if self._due > now:
            time.sleep(max(0.0, min(self._due, deadline) - now))
            now = time.monotonic()
            if self._due > now:
                return None
        frame = dataclasses.replace(self._pending, timestamp_s=self._stamp(self._pending.index))
        self._pending = None
        self._schedule_next(now)
        self._note_loops(frame.index)
        self.counters.frames += 1
        return frame

    def _stamp(self, index: int) -> float:
        """The emitted frame's ``timestamp_s``: now, or its acquisition time when the file records one.

        Recorded times are shifted so the first frame is stamped with the wall clock at its emission
        (latency stays meaningful at the recording's pace); a loop starts one median frame interval
        after the previous loop's last frame.
        """
        now = time.time()
        times = self._frame_times_s
        if times is None:
            return now
        if self._first_emitted_s is None:
            self._first_emitted_s = now
        loops, position = divmod(index, times.size)
        return self._first_emitted_s + loops * self._loop_period_s + float(times[position])

    def _next_read(self, timeout_s: float) -> Frame | None:
        reader = self._reader
        if reader is None or reader.metadata.get("memory_mapped"):
            return self._read_next()
        if self._prefetcher is None:
            self._prefetcher = FramePrefetcher(self._read_next, PREFETCH_FRAMES, f"replay-read-{self.path.name}")
        return self._prefetcher.get(timeout_s)

    def _note_loops(self, index: int) -> None:
        series = self._series
        n = series.metadata["n_frames"] if series else 0
        if series is None or not n or index // n <= self._loops_emitted:
            return
        self._loops_emitted = index // n
        self._series = dataclasses.replace(series, metadata={**series.metadata, "loops_completed": self._loops_emitted})
        log.info("%s: looping (%d loops completed)", self.path, self._loops_emitted)

    def _schedule_next(self, now: float) -> None:
        assert self._due is not None
        self._due += self._interval_s
        if self._interval_s and now - self._due > _MAX_LAG_FRAMES * self._interval_s:
            self.late_restarts += 1
            if self.late_restarts in (1, 10, 100) or self.late_restarts % 1000 == 0:
                log.warning("%s: replay is %d x behind its %.3g fps schedule (reading is too slow); "
                            "restarting the schedule from now", self.path, self.late_restarts, 1 / self._interval_s)
            self._due = now

    def _read_next(self) -> Frame:
        """Read the frame at ``_next_index`` (on the read-ahead thread for decoding readers).

        A frame that cannot be decoded is counted (``rejected``, reason
        ``unreadable_frame``), logged and skipped: its index stays empty.
        """
        reader, series = self._reader, self._series
        if reader is None or series is None:
            if self._closed:
                raise EndOfStream(f"{self.path}: replay source closed")
            raise RuntimeError("ReplaySource.open() must be called before next_frame()")
        n = reader.n_frames
        for _ in range(n):
            loops, position = divmod(self._next_index, n)
            if loops > 0 and not self.loop:
                if self.counters.series_ended < self.counters.series_started:
                    self.counters.series_ended += 1
                raise EndOfStream(f"{self.path}: end of recording after {n} frames")
            index = self._next_index
            self._next_index += 1
            try:
                pixels = reader.read(position)
            except ReplayError as exc:
                self.counters.reject("unreadable_frame")
                if self.counters.rejected <= 5 or self.counters.rejected % 1000 == 0:
                    log.warning("skipping frame %d: %s", index, exc)
                continue
            return Frame(series.series_id, index, 0.0, _read_only(pixels), series.calibration)
        raise ReplayError(f"{self.path}: {n} frames in a row could not be read")

    def close(self) -> None:
        self._closed = True
        prefetcher, self._prefetcher = self._prefetcher, None
        if prefetcher is not None:
            prefetcher.close()  # before closing the reader it may be using
        reader, self._reader = self._reader, None
        self._pending = None
        if reader is not None:
            reader.close()


def _read_only(pixels: np.ndarray) -> np.ndarray:
    # Frames may be sent zero-copy by the stand-in camera: nobody may write into them.
    if pixels.flags.writeable:
        pixels.flags.writeable = False
    return pixels


def open_replay(config: ReplayOptions, calibration_override: Calibration | None = None) -> ReplaySource:
    """Build and open a `ReplaySource` from its config, so bad paths fail here with a clear `ReplayError`."""
    source = ReplaySource.from_config(config, calibration_override)
    source.open()
    return source


def _build(options: ReplayOptions, context: SourceContext) -> ReplaySource:
    # The replay paces itself, so it needs a user-given fps before it opens.
    return open_replay(options, calibration_override=context.calibration_override)


#: The ``replay`` entry of the source registry (`sam4em_live.sources.registry`).
REPLAY_PLUGIN: FactoryPlugin[ReplaySource] = FactoryPlugin(ReplayOptions, _build)
