"""The recorder sink: one run directory per run, written by its own thread.

Layout (details and field meanings in docs/recording.md)::

    <out_dir_root>/<run_id>/
        run.json            manifest, rewritten atomically (status running/complete/aborted)
        trajectories.csv    one row per present particle per frame (trackpy columns + ours)
        masks.tif           uint16 label stack, one page per processed frame
        events.jsonl        service events, one JSON object per line
        status.jsonl        status snapshots (about one a second)
        annotations.jsonl   notes from the control channel

Threading: `Recorder.consume` only puts a small record (no pixels) on a
bounded queue; the writer thread does every file operation. Backpressure
policy: results are never dropped. If the queue is full (the disk has been
slower than the pipeline for ``queue_frames`` frames), `consume` waits in
100 ms slices until there is room, counting ``recorder_backpressure`` and
logging it; only if the writer thread has died is a result counted in
``results_lost`` instead. Files are flushed at least once a second, so a crash
loses at most about a second of results and every file stays readable.
"""

from __future__ import annotations

import csv
import io
import logging
import os
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from sam4em_live.io.mask_tiff import MASK_COMPRESSION_LEVEL
from sam4em_live.io.run_manifest import FrameRanges, build_manifest, json_line, utc_now, write_json_atomic
from sam4em_live.io.trajectories import measurement_row, trajectory_columns
from sam4em_live.particles import ParticleMask, ParticleMeasurement
from sam4em_live.results import FrameResult, RunInfo, ServiceEvent
from sam4em_live.sinks.mask_process import MaskWriterProcess

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 1.0
#: After writing, the writer thread waits this long for more results before it looks at the queue again.
BATCH_WAIT_S = 0.02
_POLL_S = 0.1
_STOP = object()


class RecorderError(RuntimeError):
    """The run directory cannot be created (it exists, or the disk refuses)."""


@dataclass(frozen=True, slots=True)
class _ResultRecord:
    """What the writer needs from a `FrameResult` (no pixels: the queue must stay small)."""

    index: int
    timestamp_s: float
    processed_s: float
    measurements: tuple[ParticleMeasurement, ...]
    masks: tuple[ParticleMask, ...]
    events: tuple[ServiceEvent, ...]


class Recorder:
    """A `Sink` that records a run directory (see module docstring).

    Parameters
    ----------
    out_dir_root
        Parent folder; the run goes to ``out_dir_root / run.run_id`` which must not exist.
    write_masks
        Write ``masks.tif``.
    queue_frames
        Capacity of the writer queue in results (each holds measurements and
        mask crops only, a few kB).
    """

    def __init__(self, out_dir_root: str | Path, write_masks: bool = True, queue_frames: int = 4096) -> None:
        self.out_dir_root = Path(out_dir_root)
        self.write_masks = write_masks
        self.counters: dict[str, int] = dict.fromkeys((
            "frames_recorded", "particle_rows", "mask_pages", "events", "annotations", "status_snapshots",
            "recorder_backpressure", "results_lost", "write_errors", "masks_not_drawn", "status_skipped"), 0)
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_frames)
        self._run: RunInfo | None = None
        self._run_dir: Path | None = None
        self._thread: threading.Thread | None = None
        self._close_lock = threading.Lock()
        self._closed = False
        self._files: dict[str, TextIO] = {}
        self._csv_buffer = io.StringIO()
        self._csv = csv.writer(self._csv_buffer, lineterminator="\n")
        self._masks: MaskWriterProcess | None = None  # set once the writer thread has opened masks.tif
        self._masks_failed = False
        # Started now, not at the first frame: spawning the child takes ~0.3 s.
        self._mask_writer = MaskWriterProcess() if write_masks else None
        self._mask_frames = FrameRanges()
        self._columns: list[str] = []
        self._first_timestamp_s: float | None = None
        self._latest_status: dict[str, Any] | None = None
        self._created_utc = ""
        self._last_error_log = 0.0

    @property
    def run_dir(self) -> Path | None:
        """The run directory (None until `open` succeeded)."""
        return self._run_dir

    # ------------------------------------------------------------- pipeline thread

    def open(self, run: RunInfo) -> None:
        """Create the run directory and its files, write run.json, start the writer thread."""
        if self._run is not None or self._closed:
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
        try:
            self._open_files(run, run_dir)
        except BaseException:
            self._close_files()
            raise
        self._run, self._run_dir = run, run_dir
        self._write_manifest("running")
        self._thread = threading.Thread(target=self._writer_loop, name="sam4em-recorder", daemon=True)
        self._thread.start()
        log.info("recording run %s to %s", run.run_id, run_dir)

    def _open_files(self, run: RunInfo, run_dir: Path) -> None:
        self._created_utc = utc_now()
        self._columns = trajectory_columns(run.series.calibration, have_time=True)
        for name in ("trajectories.csv", "events.jsonl", "status.jsonl", "annotations.jsonl"):
            self._files[name] = open(run_dir / name, "x", encoding="utf-8", newline="")  # noqa: SIM115
        self._csv.writerow(self._columns)
        self._flush_csv()

    def consume(self, result: FrameResult) -> None:
        """Queue a result for writing; returns at once unless the queue is full (see policy)."""
        if self._closed:
            self.counters["results_lost"] += 1
            if self.counters["results_lost"] == 1:
                log.error("recorder already closed; results after close() are not recorded")
            return
        record = _ResultRecord(result.frame.index, result.frame.timestamp_s, result.processed_s,
                               tuple(result.measurements), tuple(result.masks) if self.write_masks else (),
                               tuple(result.events))
        try:
            self._queue.put_nowait(record)
        except queue.Full:
            self._put_waiting(record)

    def _put_waiting(self, item: Any) -> None:
        self.counters["recorder_backpressure"] += 1
        n = self.counters["recorder_backpressure"]
        if n in (1, 10, 100) or n % 1000 == 0:
            log.warning("recorder_backpressure: writer queue full (%d items), the pipeline waits for the disk "
                        "(%d times so far)", self._queue.maxsize, n)
        while self._thread is not None and self._thread.is_alive():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue
        self.counters["results_lost"] += 1
        log.error("recorder writer thread is not running; result not recorded")

    def on_status(self, status: Mapping[str, Any]) -> None:
        """Record a status snapshot (status.jsonl, run.json counts); skipped if the queue is full."""
        try:
            self._queue.put_nowait(("status", dict(status)))
        except queue.Full:
            self.counters["status_skipped"] += 1

    def annotate(self, text: str, frame: int | None = None) -> None:
        """Add a timestamped note to annotations.jsonl (thread-safe; any thread)."""
        if not isinstance(text, str):
            raise TypeError(f"annotation text must be a string, got {type(text).__name__}")
        if self._closed:
            log.warning("recorder closed; annotation %r not recorded", text)
            return
        note = ("annotation", {"wall_time_utc": utc_now(), "wall_time_s": time.time(), "frame": frame, "text": text})
        try:
            self._queue.put(note, timeout=1.0)
        except queue.Full:
            self.counters["results_lost"] += 1
            log.error("recorder queue full; annotation %r not recorded", text)

    def close(self) -> None:
        """Drain the queue, flush and close every file, finalise run.json. Safe to call twice."""
        with self._close_lock:
            if self._closed:
                return
            self._closed = True
        thread = self._thread
        if thread is None:
            if self._mask_writer is not None:  # never opened (or open failed): let the child go
                self._guarded(self._mask_writer.close)
            if self._queue.qsize():
                log.warning("recorder closed before it opened; %d queued items not recorded", self._queue.qsize())
            return
        t0 = time.monotonic()
        while thread.is_alive():
            try:
                self._queue.put(_STOP, timeout=_POLL_S)
                break
            except queue.Full:
                continue
        while thread.is_alive():
            thread.join(5.0)
            if thread.is_alive():
                log.info("recorder: still writing, %d items queued (%.0f s)", self._queue.qsize(), time.monotonic() - t0)
        if self._files:  # the writer died without finalising
            self._finalise()

    # ------------------------------------------------------------- writer thread

    def _open_masks(self) -> None:
        """Open masks.tif in the writer child, here on the writer thread, not in `open`.

        The child is spawned with the recorder but may still be starting (~0.3-0.5 s) when the
        first frame arrives; waiting for it in `open` held up the first frame (and, at a camera
        rate, dropped the frames behind it). Results queue meanwhile. If the child cannot open
        the file, the run is recorded without masks (counted in ``write_errors``; run.json
        then lists no masks file) instead of not at all.
        """
        assert self._mask_writer is not None and self._run_dir is not None
        try:
            self._mask_writer.open(self._run_dir / "masks.tif", MASK_COMPRESSION_LEVEL)
            self._masks = self._mask_writer
        except OSError:
            self.counters["write_errors"] += 1
            self._masks_failed = True
            log.exception("recorder: masks.tif cannot be written; recording the run without it")

    def _writer_loop(self) -> None:
        if self._mask_writer is not None:
            self._open_masks()
        next_flush = time.monotonic() + FLUSH_INTERVAL_S
        dirty = False
        while True:
            timeout = min(_POLL_S, max(0.0, next_flush - time.monotonic())) if dirty else _POLL_S
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = None
            if item is _STOP:
                break
            if item is not None:
                self._handle(item)
                dirty = True
                if self._queue.empty():
                    if self._masks is not None:
                        self._guarded(self._masks.push)  # the batch's pages to the child in one message
                    # Let results gather: this thread then takes the GIL (which the segmenting worker
                    # needs) once per batch instead of once per frame. Flushing and closing are unaffected.
                    time.sleep(BATCH_WAIT_S)
            now = time.monotonic()
            if dirty and (item is None or now >= next_flush):
                self._guarded(self._flush)
                dirty, next_flush = False, now + FLUSH_INTERVAL_S
        self._finalise()

    def _handle(self, item: Any) -> None:
        if isinstance(item, _ResultRecord):
            self._guarded(self._write_result, item)
        elif item[0] == "status":
            self._guarded(self._write_status, item[1])
        elif item[0] == "annotation":
            self._guarded(self._write_line, "annotations.jsonl", item[1])
            self.counters["annotations"] += 1

    def _guarded(self, fn: Any, *args: Any) -> None:
        # A write error (disk full...) must not kill the writer: the queue would fill and stall the pipeline.
        try:
            fn(*args)
        except Exception:
            self.counters["write_errors"] += 1
            now = time.monotonic()
            if now - self._last_error_log > 5.0:
                self._last_error_log = now
                log.exception("recorder: write failed (%d errors so far)", self.counters["write_errors"])

    def _write_result(self, record: _ResultRecord) -> None:
        run = self._run
        assert run is not None
        calibration = run.series.calibration
        if self._first_timestamp_s is None:
            self._first_timestamp_s = record.timestamp_s
        t_s = (record.index / calibration.fps if calibration.fps
               else record.timestamp_s - self._first_timestamp_s)
        # One writerows call per frame: this thread holds the GIL the worker needs.
        rows = [list(map(measurement_row(m, calibration, t_s).get, self._columns))
                for m in record.measurements if m.present]
        self._csv.writerows(rows)
        self.counters["particle_rows"] += len(rows)
        for event in record.events:
            self._write_line("events.jsonl", {"kind": event.kind, "frame": event.frame, "particle": event.particle,
                                              "detail": event.detail, "wall_time_s": record.processed_s})
            self.counters["events"] += 1
        if self._masks is not None:
            self._masks.append_masks(run.series.shape, record.masks, record.index)
            self._mask_frames.append(record.index)
            self.counters["mask_pages"] += 1
        self.counters["frames_recorded"] += 1

    def _write_status(self, status: dict[str, Any]) -> None:
        self._latest_status = status
        self._write_line("status.jsonl", status)
        self.counters["status_snapshots"] += 1
        self._flush()
        self._write_manifest("running")

    def _write_line(self, name: str, data: Any) -> None:
        self._files[name].write(json_line(data))

    def _flush_csv(self) -> None:
        text = self._csv_buffer.getvalue()
        if text:
            # Whole lines only reach the file, so trajectories.csv always ends with a complete row.
            self._files["trajectories.csv"].write(text)
            self._csv_buffer.seek(0)
            self._csv_buffer.truncate()

    def _flush(self) -> None:
        self._flush_csv()
        for fh in self._files.values():
            fh.flush()
        if self._masks is not None:
            self._masks.flush()

    def _write_manifest(self, status: str, closed_utc: str | None = None) -> None:
        assert self._run is not None and self._run_dir is not None
        files = {"trajectories": "trajectories.csv",
                 "masks": "masks.tif" if self.write_masks and not self._masks_failed else None,
                 "events": "events.jsonl", "status": "status.jsonl", "annotations": "annotations.jsonl"}
        manifest = build_manifest(self._run, status, self._created_utc, files, self._columns, self.counters,
                                  self._mask_frames, self._latest_status, closed_utc)
        write_json_atomic(self._run_dir / "run.json", manifest)

    def _finalise(self) -> None:
        self._guarded(self._flush)
        self._close_files()
        latest = self._latest_status or {}
        failed = latest.get("state") == "errored" or latest.get("error") or self.counters["results_lost"]
        self._guarded(self._write_manifest, "aborted" if failed else "complete", utc_now())
        log.info("run %s recorded: %d frames, %d trajectory rows", self._run.run_id if self._run else "?",
                 self.counters["frames_recorded"], self.counters["particle_rows"])

    def _close_files(self) -> None:
        files, self._files = self._files, {}
        masks, self._masks = self._masks, None
        for fh in files.values():
            try:
                fh.flush()
                os.fsync(fh.fileno())
            except OSError:
                self.counters["write_errors"] += 1
                log.exception("recorder: flushing %s failed", fh.name)
            finally:
                fh.close()
        if masks is not None:
            try:
                masks.close()
                self.counters["masks_not_drawn"] += masks.skipped
            except OSError:
                self.counters["write_errors"] += 1
                log.exception("recorder: closing masks.tif failed")
