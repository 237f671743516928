"""One writer per file of the run directory (formats in docs/recording.md).

Each is small and usable alone: it creates its file, gathers records in memory, appends them whole
at `flush`, and fsyncs and closes at `close`. None of them is thread-safe; the recorder drives them
all from its writer thread (`run_writer.RunDirectoryWriter`).

Whole records or nothing: the text files are written through `AppendOnlyFile`, straight to the file
descriptor (no Python buffer that could push half a line out later). A write the OS refuses (disk
full, file too large) cuts the file back to its last whole line and raises the OSError; what was
pending is dropped, so a later write after space came back can never merge or repeat a line.
Each writer counts what reached its file (`rows`, `frames`, `lines`): that is what run.json reports.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import io
import os
from typing import TYPE_CHECKING, Any

from sam4em_live.frames import AcquisitionClock, TimeBase
from sam4em_live.io.label_stack_layout import page_origin
from sam4em_live.io.mask_tiff import MASK_COMPRESSION_LEVEL, end_at_last_complete_page
from sam4em_live.io.run_manifest import FrameRanges, build_manifest, json_line, write_json_atomic
from sam4em_live.io.trajectories import measurement_row, trajectory_columns
from sam4em_live.sinks.mask_process import MaskWriterDied

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from sam4em_live.frames import Calibration
    from sam4em_live.io.label_stack_layout import LabelStackLayout
    from sam4em_live.particles import ParticleMask
    from sam4em_live.results import RunInfo
    from sam4em_live.sinks.recorder.mask_writers import MaskWriter
    from sam4em_live.sinks.recorder.messages import ResultMessage

#: Least space held back for the last words of a run on a full disk (run.json and one events line).
RESERVE_MIN_BYTES = 64 << 10
RESERVE_NAME = ".reserve"


class AppendOnlyFile:
    """A new file that grows only by whole records: each `append` lands whole, or the file is as before."""

    def __init__(self, path: Path) -> None:
        self.path = path
        # O_EXCL: a recording never overwrites anything.
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        self.size = 0

    def append(self, data: bytes) -> None:
        """Write ``data`` at the end; on a refused write cut the file back and raise OSError (naming the file)."""
        if self._fd < 0:
            raise ValueError(f"{self.path}: already closed")
        view, position = memoryview(data), self.size
        try:
            while view:
                written = os.pwrite(self._fd, view, position)
                view, position = view[written:], position + written
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, self.size)
            raise OSError(exc.errno, exc.strerror, str(self.path)) from None
        self.size = position

    def close(self) -> None:
        """Fsync and close (idempotent; raises the fsync's OSError, the descriptor is closed anyway)."""
        fd, self._fd = self._fd, -1
        if fd < 0:
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class TrajectoriesCsvWriter:
    """``trajectories.csv``: one row per present particle per frame.

    Rows gather in memory and reach the file as whole lines at `flush`, so the file is valid CSV up
    to its last row at every moment. ``t_s`` is the acquisition time on the series' ``clock``
    (`AcquisitionClock`: ``frame / fps``, the detector's timestamps from the first recorded frame,
    or empty when time is counted in frames); without a clock, ``frame / fps`` when the fps is known,
    else the timestamps. `rows` and `frames` count what is in the file. Every row carries its
    ``series`` (`start_series` switches to the next one, with its calibration and clock).
    """

    def __init__(self, path: Path, calibration: Calibration, clock: AcquisitionClock | None = None) -> None:
        self.path = path
        self.calibration = calibration
        self.clock = clock or AcquisitionClock(
            TimeBase.FPS if calibration.fps else TimeBase.DETECTOR_TIMESTAMPS, calibration.fps)
        self.columns = trajectory_columns(calibration, have_time=True, with_series=True)
        self.series = 0
        self.rows = 0
        self.frames = 0
        #: Frames whose rows a refused write dropped (`flush`): results the file will never hold.
        self.frames_dropped = 0
        self._pending_rows = 0
        self._pending_frames = 0
        self._buffer = io.StringIO()
        self._csv = csv.writer(self._buffer, lineterminator="\n")
        self._file = AppendOnlyFile(path)
        self._csv.writerow(self.columns)
        self.flush()  # the header at once: the file is a table (of no rows) from the start

    @property
    def pending_frames(self) -> int:
        return self._pending_frames

    def start_series(self, series: int, calibration: Calibration, clock: AcquisitionClock) -> None:
        """The rows written from now on belong to series ``series`` (`sinks.series_segments`)."""
        self.series, self.calibration, self.clock = series, calibration, clock

    def write(self, result: ResultMessage) -> int:
        """Add the present particles' rows of one frame; returns how many."""
        calibration = self.calibration
        t_s = self.clock.t_s(result.index, result.timestamp_s)
        # One writerows call per frame: the writer thread holds the GIL the worker needs.
        rows = [list(map(measurement_row(m, calibration, t_s, self.series).get, self.columns))
                for m in result.measurements if m.present]
        self._csv.writerows(rows)
        self._pending_rows += len(rows)
        self._pending_frames += 1
        return len(rows)

    def flush(self) -> None:
        """Append the pending rows (raises OSError, the pending rows dropped and counted, the file as before)."""
        text = self._buffer.getvalue()
        rows, frames = self._pending_rows, self._pending_frames
        self.discard()
        if text:
            try:
                self._file.append(text.encode("utf-8"))
            except OSError:
                self.frames_dropped += frames
                raise
        self.rows += rows
        self.frames += frames

    def discard(self) -> None:
        """Drop the rows not yet written."""
        self._buffer.seek(0)
        self._buffer.truncate()
        self._pending_rows = self._pending_frames = 0

    def close(self) -> None:
        """Write what is pending, fsync, close (raises OSError if the disk refuses; the file is closed anyway)."""
        try:
            self.flush()
        finally:
            self._file.close()


class JsonlWriter:
    """A JSON-lines file (events, status snapshots, annotations): strict JSON, one object per line.

    Lines gather in memory and reach the file whole at `flush`; `lines` counts those in the file.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = 0
        self._pending: list[str] = []
        self._file = AppendOnlyFile(path)

    def write(self, record: Mapping[str, Any]) -> None:
        self._pending.append(json_line(record))

    def flush(self) -> None:
        """Append the pending lines (raises OSError, the pending lines dropped, the file as before)."""
        pending, self._pending = self._pending, []
        if pending:
            self._file.append("".join(pending).encode("utf-8"))
            self.lines += len(pending)

    def discard(self) -> None:
        self._pending = []

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._file.close()


class DiskReserve:
    """A hidden file holding space so that a full disk still takes the run's last words.

    When the disk fills, the recorder deletes it and writes ``run.json`` (and the stop event) into the
    space it freed. It grows with ``run.json`` (`ensure`); a disk that cannot give that much is
    already full, and the OSError says so.
    """

    def __init__(self, path: Path, nbytes: int = RESERVE_MIN_BYTES) -> None:
        self.path = path
        self.size = 0
        self.ensure(nbytes)

    def ensure(self, nbytes: int) -> None:
        """Hold at least ``nbytes`` (raises OSError, e.g. ENOSPC)."""
        if nbytes <= self.size:
            return
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                os.posix_fallocate(fd, 0, nbytes)
            except OSError as exc:  # file systems without fallocate: write the bytes out
                if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                    raise
                os.pwrite(fd, bytes(nbytes - self.size), self.size)
        finally:
            os.close(fd)
        self.size = nbytes

    def release(self) -> None:
        self.path.unlink(missing_ok=True)
        self.size = 0


class ManifestWriter:
    """``run.json``: rewritten whole and atomically each time (`io.run_manifest.write_json_atomic`).

    Keeps a `DiskReserve` of at least twice the last manifest's size beside it.
    """

    def __init__(self, path: Path, run: RunInfo, created_utc: str, trajectory_columns: Sequence[str]) -> None:
        self.path = path
        self.run = run
        self.created_utc = created_utc
        self.trajectory_columns = list(trajectory_columns)
        self.reserve: DiskReserve | None = DiskReserve(path.with_name(RESERVE_NAME))

    def write(self, status: str, files: Mapping[str, str | None], counts: Mapping[str, int],
              mask_frames: FrameRanges, latest_status: Mapping[str, Any] | None,
              closed_utc: str | None = None, reason: str | None = None,
              stopped: Mapping[str, Any] | None = None, series_list: Sequence[Mapping[str, Any]] = ()) -> None:
        """Replace run.json (raises OSError if the disk refuses; the previous run.json is then intact).

        ``series_list`` (every series of the run, `sinks.series_segments`) goes right after ``series``
        (the first one, as the run opened).
        """
        built = build_manifest(self.run, status, self.created_utc, files, self.trajectory_columns, counts,
                               mask_frames, latest_status, closed_utc, reason, stopped)
        manifest: dict[str, Any] = {}
        for key, value in built.items():
            manifest[key] = value
            if key == "series":
                manifest["series_list"] = list(series_list)
        size = write_json_atomic(self.path, manifest)
        if self.reserve is not None:
            self.reserve.ensure(max(RESERVE_MIN_BYTES, 2 * size + (16 << 10)))

    def release_reserve(self) -> None:
        """Give the reserved space back (on a full disk, for the last words; at close, for good)."""
        if self.reserve is not None:
            self.reserve.release()
            self.reserve = None


class MaskPagesWriter:
    """``masks.tif`` through a `mask_writers.MaskWriter` (the "child" below; the writer thread itself in batch).

    The writer is the mask-writer child process (`sinks.mask_process`), or with ``recorder.mask_writer =
    "thread"`` the recorder's writer thread, which then does what the child would. The child is started with the recorder; `open` (on the writer thread) waits for it to create the
    file. Until `open` succeeded nothing is written; if it fails, `failed` is set and the run goes on
    without masks. `frames` holds each page's frame index as sent; `on_disk` those of the pages the
    file holds (``run.json`` ``mask_frames``): the child's last report while it runs, exact once closed.

    With a ``layout`` (the recorder's) the file holds one page per frame index from `page_origin` on,
    so `frames` is one range, empty pages for frames without a result included (`io.label_stack_layout`).
    One writer per file: a run with several series has one per series, all through the one child.
    """

    def __init__(self, process: MaskWriter, path: Path, layout: LabelStackLayout | None = None) -> None:
        self.path = path
        self.layout = layout
        self.frames = FrameRanges()
        self.opened = False
        self.failed = False
        #: Whether the child created the file (run.json lists masks.tif from then on).
        self.created = False
        self._process = process
        self._closed_pages: int | None = None

    @property
    def pages_on_disk(self) -> int:
        return self._closed_pages if self._closed_pages is not None else self._process.pages_on_disk

    def on_disk(self) -> FrameRanges:
        """The frames of the pages in the file (see class docstring)."""
        return self.frames.prefix(self.pages_on_disk)

    def next_file(self, path: Path, layout: LabelStackLayout) -> MaskPagesWriter:
        """A writer for the next series' file, through the same child (close this one first, ``last=False``)."""
        return MaskPagesWriter(self._process, path, layout)

    def open(self) -> None:
        """Open the file in the child (raises OSError, after marking the writer `failed`)."""
        try:
            self._process.open(self.path, MASK_COMPRESSION_LEVEL, self.layout)
        except OSError:
            self.failed = True
            raise
        self.opened = self.created = True

    def append(self, shape: tuple[int, int], masks: Sequence[ParticleMask], frame_index: int) -> bool:
        """Queue one page for the child; False (nothing written) while the file is not open.

        Raises `MaskWriterDied` (the child is gone) or OSError (it reported a refused write): then
        call `close`, which makes the file and `frames` agree.
        """
        if not self.opened:
            return False
        ranges = self.frames.ranges
        if self.layout is None:
            self.frames.append(frame_index)
        elif not ranges:
            ranges.append([page_origin(frame_index), frame_index])
        else:
            ranges[-1][1] = frame_index  # the frames in between get empty pages
        self._process.append_masks(shape, masks, frame_index)
        return True

    def push(self) -> None:
        """Send the pages appended since the last push to the child in one message (raises as `append`)."""
        if self.opened:
            self._process.push()

    def flush(self) -> None:
        if self.opened:
            self._process.flush()

    def close(self, discard_pending: bool = False, last: bool = True) -> int:
        """Finish the file and let the child go; returns the particles not drawn (ids above 65535).

        ``last=False`` keeps the child for the next series' file (`MaskWriterProcess.close_file`).
        ``discard_pending`` drops the pages not yet sent (the recording stops). Afterwards `frames`
        lists exactly the pages in the file, also when the child failed or died: a dead child's file
        is cut back to its last complete page (`end_at_last_complete_page`). Raises OSError if the
        child failed. A writer that never opened only lets its child go.
        """
        opened, self.opened = self.opened, False
        if not opened:
            if not self.failed and self._closed_pages is None and last:
                self._process.close()
            return 0
        try:
            if discard_pending:
                self._process.discard_pending()
            if last:
                self._process.close()
            else:
                self._process.close_file()
        except MaskWriterDied:
            self._closed_pages = self._recover()
            raise
        except OSError:
            self._closed_pages = self._process.pages_on_disk
            self.frames = self.frames.prefix(self._closed_pages)
            raise
        self._closed_pages = self._process.pages_on_disk
        self.frames = self.frames.prefix(self._closed_pages)
        return self._process.skipped

    def _recover(self) -> int:
        try:
            frames = end_at_last_complete_page(self.path) if self.path.exists() else []
        except (OSError, ValueError):
            frames = []
        self.frames = FrameRanges.of(frames)
        return len(frames)
