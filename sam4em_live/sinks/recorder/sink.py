"""The recorder sink: one run directory per run, written by its own thread.

Layout (details and field meanings in docs/recording.md)::

    <out_dir_root>/<run_id>/
        run.json            manifest, rewritten atomically (status running/complete/incomplete/aborted)
        trajectories.csv    one row per present particle per frame (trackpy columns + ours + series)
        masks.tif           uint16 label stack of the first series, one page per frame index (ImageJ hyperstack)
        masks-s1.tif ...    the same for each later series (a camera restart, a shape change, a new id)
        tracks_napari.csv   the tracks in napari's layout (track_id, t, y, x), written at close
        events.jsonl        service events, one JSON object per line
        status.jsonl        status snapshots (about one a second)
        annotations.jsonl   notes from the control channel

The parts: `Recorder` (this module) turns sink calls into typed messages (`messages`); a
`writer_thread.WriterThread` queues them (bounded; its docstring states the backpressure policy:
results are never dropped, status snapshots are skipped when the queue is full) and hands each to
`run_writer.RunDirectoryWriter`, which drives one writer per file (`files`). Files are flushed at
least once a second, so a crash loses at most about a second of results and every file stays readable.
A write the disk refuses stops the recording cleanly (whole records, the reason in run.json and
events.jsonl) while the service streams on: the policy is in `run_writer`.
"""

from __future__ import annotations

import logging
import os
import queue
import shutil
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sam4em_live.io.run_manifest import utc_now
from sam4em_live.sinks.recorder.files import RESERVE_MIN_BYTES, MaskPagesWriter
from sam4em_live.sinks.recorder.mask_writers import make_mask_writer
from sam4em_live.sinks.recorder.messages import (
    AnnotationMessage,
    RecorderCounts,
    ResultMessage,
    StatusMessage,
)
from sam4em_live.sinks.recorder.run_layout import MASKS
from sam4em_live.sinks.recorder.run_writer import RunDirectoryWriter
from sam4em_live.sinks.recorder.writer_thread import WriterThread
from sam4em_live.sinks.series_segments import first_series_layout

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sam4em_live.results import FrameResult, RunInfo
    from sam4em_live.sinks.recorder.mask_writers import MaskWriterKind

log = logging.getLogger(__name__)


#: Less free space than this in ``out_dir`` refuses the start (twice the reserve `files.DiskReserve` holds).
MIN_FREE_BYTES = 2 * RESERVE_MIN_BYTES


class RecorderError(RuntimeError):
    """The run directory cannot be created (it exists, the folder is not writable, or the disk refuses)."""


def check_out_dir(out_dir_root: str | Path) -> Path:
    """Make sure run directories can be created in ``out_dir_root`` (created if missing); returns it.

    Checked when the recorder is built, so that a service whose recording could never start refuses
    to start rather than stream unrecorded. Writes and removes a small hidden probe file: only a real
    write tells a read-only file system (or a full disk, or a quota) from a writable one, even as root.
    Raises `RecorderError` naming the folder and the reason.
    """
    root = Path(out_dir_root)
    blocker = next((p for p in (root, *root.parents) if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise RecorderError(f"cannot record to {root}: {blocker} is a file, not a folder")
    try:
        root.mkdir(parents=True, exist_ok=True)
        probe = root / f".sam4em-write-probe-{os.getpid()}"
        try:
            probe.write_bytes(b"probe\n")
        finally:
            probe.unlink(missing_ok=True)
    except OSError as exc:
        raise RecorderError(f"cannot record to {root}: {exc.strerror or exc}") from None
    stat = os.statvfs(root)
    free = stat.f_bavail * stat.f_frsize
    if free < MIN_FREE_BYTES:  # the run's files and the reserve for its last words would not fit
        raise RecorderError(f"cannot record to {root}: the disk is full ({free // 1024} KiB free)")
    return root


class Recorder:
    """A `Sink` that records a run directory (see module docstring).

    Parameters
    ----------
    out_dir_root
        Parent folder; the run goes to ``out_dir_root / run.run_id`` which must not exist. It is
        created if missing and must be writable: otherwise `RecorderError` at once (`check_out_dir`).
    write_masks
        Write ``masks.tif``.
    queue_frames
        Capacity of the writer queue in results (each holds measurements and
        mask crops only, a few kB).
    mask_writer
        Who draws and compresses the ``masks.tif`` pages: ``process``, a child process (live: off the
        segmenting process), or ``thread``, the writer thread itself (a batch worker: one core a
        recording, no child to start); the file is the same (`mask_writers`).
    """

    def __init__(self, out_dir_root: str | Path, write_masks: bool = True, queue_frames: int = 4096,
                 mask_writer: MaskWriterKind = "process") -> None:
        self.out_dir_root = check_out_dir(out_dir_root)
        self.write_masks = write_masks
        self._counts = RecorderCounts()
        self._writer_thread = WriterThread(queue_frames, self._counts)
        self._put_nowait = self._writer_thread.put_nowait
        self._run_writer: RunDirectoryWriter | None = None
        self._close_lock = threading.Lock()
        self._closed = False
        # Started now, not at the first frame: spawning a child takes ~0.3 s.
        self._mask_process = make_mask_writer(mask_writer) if write_masks else None

    @property
    def run_dir(self) -> Path | None:
        """The run directory (None until `open` succeeded)."""
        return self._run_writer.run_dir if self._run_writer is not None else None

    @property
    def counters(self) -> dict[str, int]:
        """A snapshot of the recorder's counters (`messages.RecorderCounts`; run.json ``counts``)."""
        return self._counts.as_dict()

    # ------------------------------------------------------------- pipeline thread

    def open(self, run: RunInfo) -> None:
        """Create the run directory and its files, write run.json, start the writer thread."""
        if self._run_writer is not None or self._closed:
            raise RecorderError("Recorder.open() called twice or after close()")
        run_dir = self.out_dir_root / run.run_id
        try:
            self.out_dir_root.mkdir(parents=True, exist_ok=True)
            run_dir.mkdir()
        except FileExistsError:
            raise RecorderError(f"run directory {run_dir} already exists; refusing to overwrite it "
                                "(choose another run id / output folder)") from None
        except OSError as exc:
            raise RecorderError(f"cannot create run directory {run_dir}: {exc}") from None
        masks = (MaskPagesWriter(self._mask_process, run_dir / MASKS, first_series_layout(run.series))
                 if self._mask_process is not None else None)
        try:
            self._run_writer = RunDirectoryWriter(run, run_dir, self._counts, masks)
        except OSError as exc:  # the disk refused the first bytes: leave nothing half made behind
            shutil.rmtree(run_dir, ignore_errors=True)
            raise RecorderError(f"cannot write run directory {run_dir}: {exc.strerror or exc}") from None
        self._writer_thread.start(self._run_writer)
        log.info("recording run %s to %s", run.run_id, run_dir)

    def consume(self, result: FrameResult) -> None:
        """Queue a result for writing; returns at once unless the queue is full (see the policy)."""
        if self._closed:
            self._counts.results_lost += 1
            if self._counts.results_lost == 1:
                log.error("recorder already closed; results after close() are not recorded")
            return
        # This runs at the camera rate: build the message inline and try the queue directly (one call
        # fewer than `submit`); only a full queue goes through the policy.
        frame = result.frame
        pixels = frame.pixels
        message = ResultMessage(frame.index, frame.timestamp_s, result.processed_s, tuple(result.measurements),
                                tuple(result.masks) if self.write_masks else (), tuple(result.events),
                                result.edits, frame.series_id, (pixels.shape[0], pixels.shape[1]),
                                pixels.dtype.str, frame.calibration)
        try:
            self._put_nowait(message)
        except queue.Full:
            self._writer_thread.when_full(message)

    def on_status(self, status: Mapping[str, Any]) -> None:
        """Record a status snapshot (status.jsonl, run.json counts); skipped if the queue is full."""
        self._writer_thread.submit(StatusMessage(dict(status)))

    def annotate(self, text: str, frame: int | None = None) -> None:
        """Add a timestamped note to annotations.jsonl (thread-safe; any thread)."""
        if not isinstance(text, str):
            raise TypeError(f"annotation text must be a string, got {type(text).__name__}")
        if self._closed:
            log.warning("recorder closed; annotation %r not recorded", text)
            return
        self._writer_thread.submit(AnnotationMessage(utc_now(), time.time(), frame, text))

    def close(self) -> None:
        """Drain the queue, flush and close every file, finalise run.json. Safe to call twice."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        run_writer = self._run_writer
        if run_writer is None or not self._writer_thread.started:
            self._release_unused_mask_process()
            if self._writer_thread.queued:
                log.warning("recorder closed before it opened; %d queued items not recorded",
                            self._writer_thread.queued)
            return
        self._writer_thread.close()
        if not run_writer.finished:  # the writer thread died without finalising
            run_writer.finish()

    def _release_unused_mask_process(self) -> None:
        if self._mask_process is None:
            return
        try:
            self._mask_process.close()
        except OSError:
            self._counts.write_errors += 1
            log.exception("recorder: stopping the mask writer failed")
