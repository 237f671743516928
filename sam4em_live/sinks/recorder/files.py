"""One writer per file of the run directory (formats in docs/recording.md).

Each is small and usable alone: it creates its file, writes, flushes to the operating system when
told, and fsyncs and closes at `close`. None of them is thread-safe; the recorder drives them all
from its writer thread (`run_writer.RunDirectoryWriter`).
"""

from __future__ import annotations

import csv
import io
import os
from typing import TYPE_CHECKING, Any

from sam4em_live.io.mask_tiff import MASK_COMPRESSION_LEVEL
from sam4em_live.io.run_manifest import FrameRanges, build_manifest, json_line, write_json_atomic
from sam4em_live.io.trajectories import measurement_row, trajectory_columns

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from sam4em_live.frames import Calibration
    from sam4em_live.particles import ParticleMask
    from sam4em_live.results import RunInfo
    from sam4em_live.sinks.mask_process import MaskWriterProcess
    from sam4em_live.sinks.recorder.messages import ResultMessage


def _create(path: Path) -> io.TextIOWrapper:
    # "x": a recording never overwrites anything. The file stays open for the run; its writer's close() closes it.
    return open(path, "x", encoding="utf-8", newline="")


def _fsync_close(fh: io.TextIOWrapper) -> None:
    try:
        fh.flush()
        os.fsync(fh.fileno())
    finally:
        fh.close()


class TrajectoriesCsvWriter:
    """``trajectories.csv``: one row per present particle per frame.

    Rows gather in memory and reach the file as whole lines at `flush`, so after a crash the file is
    valid CSV up to its last row. ``t_s`` is ``frame / fps`` when the series fps is known, else the
    frame's timestamp minus the first recorded frame's timestamp.
    """

    def __init__(self, path: Path, calibration: Calibration) -> None:
        self.path = path
        self.calibration = calibration
        self.columns = trajectory_columns(calibration, have_time=True)
        self._first_timestamp_s: float | None = None
        self._buffer = io.StringIO()
        self._csv = csv.writer(self._buffer, lineterminator="\n")
        self._file = _create(path)
        self._csv.writerow(self.columns)
        self._drain()

    def write(self, result: ResultMessage) -> int:
        """Add the present particles' rows of one frame; returns how many."""
        calibration = self.calibration
        if self._first_timestamp_s is None:
            self._first_timestamp_s = result.timestamp_s
        t_s = (result.index / calibration.fps if calibration.fps
               else result.timestamp_s - self._first_timestamp_s)
        # One writerows call per frame: the writer thread holds the GIL the worker needs.
        rows = [list(map(measurement_row(m, calibration, t_s).get, self.columns))
                for m in result.measurements if m.present]
        self._csv.writerows(rows)
        return len(rows)

    def _drain(self) -> None:
        text = self._buffer.getvalue()
        if text:
            self._file.write(text)
            self._buffer.seek(0)
            self._buffer.truncate()

    def flush(self) -> None:
        self._drain()
        self._file.flush()

    def close(self) -> None:
        """Write what is pending, fsync, close (raises OSError if the disk refuses; the file is closed anyway)."""
        try:
            self._drain()
        finally:
            _fsync_close(self._file)


class JsonlWriter:
    """A JSON-lines file (events, status snapshots, annotations): strict JSON, one object per line."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lines = 0
        self._file = _create(path)

    def write(self, record: Mapping[str, Any]) -> None:
        self._file.write(json_line(record))
        self.lines += 1

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        _fsync_close(self._file)


class ManifestWriter:
    """``run.json``: rewritten whole and atomically each time (`io.run_manifest.write_json_atomic`)."""

    def __init__(self, path: Path, run: RunInfo, created_utc: str, trajectory_columns: Sequence[str]) -> None:
        self.path = path
        self.run = run
        self.created_utc = created_utc
        self.trajectory_columns = list(trajectory_columns)

    def write(self, status: str, files: Mapping[str, str | None], counts: Mapping[str, int],
              mask_frames: FrameRanges, latest_status: Mapping[str, Any] | None,
              closed_utc: str | None = None) -> None:
        manifest = build_manifest(self.run, status, self.created_utc, files, self.trajectory_columns, counts,
                                  mask_frames, latest_status, closed_utc)
        write_json_atomic(self.path, manifest)


class MaskPagesWriter:
    """``masks.tif`` through the mask-writer child process (`sinks.mask_process`).

    The child is started with the recorder; `open` (on the writer thread) waits for it to create the
    file. Until `open` succeeded nothing is written; if it fails, `failed` is set and the run goes on
    without masks. `frames` holds each page's frame index (``run.json`` ``mask_frames``).
    """

    def __init__(self, process: MaskWriterProcess, path: Path) -> None:
        self.path = path
        self.frames = FrameRanges()
        self.opened = False
        self.failed = False
        self._process = process

    def open(self) -> None:
        """Open the file in the child (raises OSError, after marking the writer `failed`)."""
        try:
            self._process.open(self.path, MASK_COMPRESSION_LEVEL)
        except OSError:
            self.failed = True
            raise
        self.opened = True

    def append(self, shape: tuple[int, int], masks: Sequence[ParticleMask], frame_index: int) -> bool:
        """Queue one page for the child; False (nothing written) while the file is not open."""
        if not self.opened:
            return False
        self._process.append_masks(shape, masks, frame_index)
        self.frames.append(frame_index)
        return True

    def push(self) -> None:
        """Send the pages appended since the last push to the child in one message."""
        if self.opened:
            self._process.push()

    def flush(self) -> None:
        if self.opened:
            self._process.flush()

    def close(self) -> int:
        """Finish the file and let the child go; returns the particles not drawn (ids above 65535).

        Raises OSError if the child failed. A writer that never opened only lets its child go.
        """
        opened, self.opened = self.opened, False
        if opened or not self.failed:
            self._process.close()
        return self._process.skipped if opened else 0
