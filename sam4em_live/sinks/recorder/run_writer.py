"""The run directory as one `MessageHandler`: each message type goes to the files it concerns.

========================  ======================================================================
message                   files
========================  ======================================================================
`ResultMessage`           ``trajectories.csv`` rows, ``events.jsonl`` and ``edits.jsonl`` lines, a ``masks.tif`` page
`StatusMessage`           a ``status.jsonl`` line; everything flushed; ``run.json`` rewritten
`AnnotationMessage`       an ``annotations.jsonl`` line
========================  ======================================================================

Created on the pipeline thread by `Recorder.open` (the files are created there, so a disk that
refuses fails the open); everything after that runs on the writer thread.

Failures (the policy of docs/recording.md, "Faults"):

- a write the OS refuses (disk full, file too large, I/O error) in any file **stops the recording**:
  every file is cut back to its last whole record (lines, pages), the reserved space is given back,
  a ``recording_stopped`` event and ``run.json`` (``incomplete``, the reason, counts of what the
  files hold) are written, and later results are only counted (``results_after_stop``). The
  service goes on streaming. Space that comes back later changes nothing: nothing is retried.
- the mask-writer child dying stops ``masks.tif`` only (cut back to its last complete page); the
  rest goes on and the run ends ``incomplete``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from sam4em_live.frames import AcquisitionClock
from sam4em_live.io.edits_log import edit_log_entry
from sam4em_live.io.napari_tracks import NAPARI_TRACKS, write_napari_tracks
from sam4em_live.io.run_manifest import INCOMPLETE, RUNNING, FrameRanges, utc_now
from sam4em_live.sinks.mask_process import MaskWriterDied
from sam4em_live.sinks.recorder.files import (
    JsonlWriter,
    ManifestWriter,
    MaskPagesWriter,
    TrajectoriesCsvWriter,
)
from sam4em_live.sinks.recorder.run_layout import (
    ANNOTATIONS,
    EDITS,
    EVENTS,
    MANIFEST,
    MANIFEST_INTERVAL_S,
    MASKS,
    RECORDING_STOPPED,
    STATUS,
    TRAJECTORIES,
    files_entry,
    series_list_entry,
)
from sam4em_live.sinks.recorder.run_outcome import RunProblems
from sam4em_live.sinks.series_segments import SeriesSegments

if TYPE_CHECKING:
    from pathlib import Path

    from sam4em_live.results import RunInfo
    from sam4em_live.sinks.recorder.messages import (
        AnnotationMessage,
        RecorderCounts,
        ResultMessage,
        StatusMessage,
    )
    from sam4em_live.sinks.series_segments import SeriesSegment

log = logging.getLogger(__name__)


class RunDirectoryWriter:
    """Writes one run directory from typed messages (a `writer_thread.MessageHandler`).

    Parameters
    ----------
    run, run_dir
        The run and its (new, empty) directory.
    counts
        The recorder's counters; this writer sets the files' counts (what the files hold) and reads
        the queue's for run.json.
    masks
        The ``masks.tif`` writer, or None when masks are not recorded.
    """

    def __init__(self, run: RunInfo, run_dir: Path, counts: RecorderCounts, masks: MaskPagesWriter | None) -> None:
        self.run = run
        self.run_dir = run_dir
        self.counts = counts
        self.masks = masks
        self.finished = False
        #: Why the whole recording stopped early (run.json ``recording_stopped``), or None.
        self.stopped: dict[str, Any] | None = None
        self._problems = RunProblems()  # why the files hold less than the run: run.json ``reason``
        self._latest_status: dict[str, Any] | None = None
        self._last_frame: int | None = None
        self._manifest_due = 0.0
        self._trajectories: TrajectoriesCsvWriter | None = None
        self._jsonl: dict[str, JsonlWriter] = {}
        self.series = SeriesSegments(run.series)
        #: Every series' masks writer, by series number (series 0's is ``masks``'s first value).
        self._mask_files: dict[int, MaskPagesWriter] = {0: masks} if masks is not None else {}
        self._files_open = True  # until `_close_files`: the writers stay, for their counts
        self._tracks_written = False
        try:
            self._trajectories = TrajectoriesCsvWriter(run_dir / TRAJECTORIES, run.series.calibration,
                                                       AcquisitionClock.of(run.series))
            for name in (EVENTS, STATUS, ANNOTATIONS, EDITS):
                self._jsonl[name] = JsonlWriter(run_dir / name)
            self.manifest = ManifestWriter(run_dir / MANIFEST, run, utc_now(), self._trajectories.columns)
            self._write_manifest(RUNNING)
        except BaseException:
            self._close_files()
            raise

    # ------------------------------------------------------------- MessageHandler

    def start(self) -> None:
        """Open masks.tif here, on the writer thread, not in `Recorder.open`.

        The child is spawned with the recorder but may still be starting (~0.3-0.5 s) when the
        first frame arrives; waiting for it in `open` held up the first frame (and, at a camera
        rate, dropped the frames behind it). Results queue meanwhile. If the child cannot open
        the file, the run is recorded without masks (counted in ``write_errors``; run.json
        then lists no masks file and ends ``incomplete``) instead of not at all.
        """
        if self.masks is None:
            return
        try:
            self.masks.open()
        except OSError as exc:
            self.counts.write_errors += 1
            self._problems.add(f"{MASKS} not written ({exc})")
            log.exception("recorder: masks.tif cannot be written; recording the run without it")

    def write_result(self, message: ResultMessage) -> None:
        trajectories = self._trajectories
        if self.stopped is not None or not self._files_open or trajectories is None:
            self.counts.results_after_stop += 1
            return
        series = self.run.series
        segment, new = self.series.place(message.series_id or series.series_id, message.index,
                                         message.shape if message.dtype else series.shape,
                                         message.dtype or series.dtype, message.calibration or series.calibration)
        if new:
            self._start_series(segment)
            if self.stopped is not None:  # the disk refused closing the last series' masks file
                self.counts.results_after_stop += 1
                return
        trajectories.write(message)
        events = self._jsonl[EVENTS]
        for event in message.events:
            events.write({"kind": event.kind, "frame": event.frame, "series": segment.number,
                          "particle": event.particle, "detail": event.detail, "wall_time_s": message.processed_s})
        edits = self._jsonl[EDITS]
        for record in message.edits:
            edits.write(edit_log_entry(record, message.processed_s))
        self._last_frame = message.index
        if self.masks is not None:
            try:
                self.masks.append(segment.shape, message.masks, message.index)
            except OSError as exc:
                self._masks_failed(exc)

    def _start_series(self, segment: SeriesSegment) -> None:
        """Rows and masks from here on are the new series': its number, clock and masks file."""
        assert self._trajectories is not None and segment.clock is not None
        self._trajectories.start_series(segment.number, segment.calibration, segment.clock)
        if segment.number == 0:
            return
        log.info("recorder: series %d (%s, %s) starts at frame %d: %s", segment.number, segment.series_id,
                 segment.shape, segment.first_frame, segment.started_by)
        masks = self.masks
        if masks is None or not masks.opened:  # not recorded, or the mask writer is gone
            return
        try:
            self.counts.masks_not_drawn += masks.close(last=False)
        except OSError as exc:
            self._masks_failed(exc)
            return
        self.masks = masks.next_file(self.run_dir / segment.masks_name, segment.layout)
        self._mask_files[segment.number] = self.masks
        try:
            self.masks.open()
        except OSError as exc:
            self._masks_failed(exc)

    def write_status(self, message: StatusMessage) -> None:
        self._latest_status = dict(message.status)
        if self.stopped is not None or not self._files_open:
            return
        self._jsonl[STATUS].write(self._latest_status)
        self._manifest_due = 0.0  # flush() rewrites run.json with this snapshot
        self.flush()

    def write_annotation(self, message: AnnotationMessage) -> None:
        if self.stopped is not None or not self._files_open:
            self.counts.results_after_stop += 1
            return
        self._jsonl[ANNOTATIONS].write(message.as_record())

    def end_batch(self) -> None:
        if self.masks is not None and self.stopped is None and self._files_open:
            try:
                self.masks.push()  # the batch's pages to the child in one message
            except OSError as exc:
                self._masks_failed(exc)

    def flush(self) -> None:
        """Append what is pending to every file; a refused write stops the recording (module docstring)."""
        if self.stopped is not None or not self._files_open or self._trajectories is None:
            return
        writers: list[tuple[str, TrajectoriesCsvWriter | JsonlWriter]] = [(TRAJECTORIES, self._trajectories),
                                                                            *self._jsonl.items()]
        for name, writer in writers:
            try:
                writer.flush()
            except OSError as exc:
                self._stop(name, exc)
                return
        if self.masks is not None:
            try:
                self.masks.flush()
            except OSError as exc:
                self._masks_failed(exc)
        self._sync_counts()
        if time.monotonic() >= self._manifest_due:
            self._write_running_manifest()

    def finish(self) -> None:
        """Flush, fsync and close every file, then finalise run.json. Idempotent.

        Called by the writer thread after the last message, or by `Recorder.close` if that thread died.
        Each step is guarded on its own, so one failing file does not cost the others. The status is
        ``aborted`` if the service ended in error, ``incomplete`` if the files hold less than the run
        (the recording stopped, masks.tif stopped, results were lost), else ``complete``.
        """
        if self.finished:
            return
        self.finished = True
        try:
            self.flush()
        except Exception:
            self.counts.write_errors += 1
            log.exception("recorder: final flush failed")
        self._close_files()
        self._write_napari_tracks()
        self.manifest.release_reserve()  # its space, for the final run.json on a disk that filled up
        status, reason = self._problems.final_status(self._latest_status, self.counts)
        try:
            self._write_manifest(status, utc_now(), reason)
        except Exception:
            self.counts.write_errors += 1
            log.exception("recorder: finalising run.json failed (it still holds the state when it was last written)")
        log.info("run %s recorded (%s): %d frames, %d trajectory rows", self.run.run_id, status,
                 self.counts.frames_recorded, self.counts.particle_rows)

    def _write_napari_tracks(self) -> None:
        """``tracks_napari.csv`` from the closed ``trajectories.csv`` (`io.napari_tracks`); not after a stop."""
        if self.stopped is not None or self._trajectories is None:
            return
        try:
            write_napari_tracks(self.run_dir / TRAJECTORIES, self.run_dir / NAPARI_TRACKS)
        except (OSError, ValueError, KeyError) as exc:
            self.counts.write_errors += 1
            self._problems.add(f"{NAPARI_TRACKS} not written ({exc})")
            log.exception("recorder: %s not written", NAPARI_TRACKS)
            return
        self._tracks_written = True

    # ------------------------------------------------------------- faults

    def _stop(self, name: str, exc: OSError) -> None:
        """Stop the whole recording after ``name`` refused a write (module docstring)."""
        self.counts.write_errors += 1
        assert self._trajectories is not None
        # rows dropped with the stop: those still pending, and those of the refused write if it was this file's
        self.counts.results_after_stop += self._trajectories.pending_frames + self._trajectories.frames_dropped
        self._trajectories.discard()
        for jsonl in self._jsonl.values():
            jsonl.discard()
        self.stopped = {"file": name, "errno": exc.errno, "error": exc.strerror or str(exc),
                        "after_frame": self._last_frame, "utc": utc_now()}
        reason = (f"recording stopped: {name}: {exc.strerror or exc}; the files end at the last whole record "
                  "written before it")
        self._problems.add(reason, first=True)
        log.error("recorder: %s (the service goes on without recording)", reason)
        if self.masks is not None:
            try:
                self.counts.masks_not_drawn += self.masks.close(discard_pending=True)
            except OSError as masks_exc:
                if name != MASKS:  # else the same error again
                    log.warning("recorder: masks.tif ends early too (%s)", masks_exc)
        self.manifest.release_reserve()  # room for the last words below, on a full disk
        self._append_stop_event(name, reason)
        self._sync_counts()
        try:
            self._write_manifest(INCOMPLETE, reason=self._problems.reason(self.counts))
        except OSError:
            self.counts.write_errors += 1
            log.exception("recorder: run.json could not say that the recording stopped")
        self._close_files()

    def _masks_failed(self, exc: OSError) -> None:
        """masks.tif cannot go on: a dead child costs the masks only; a refused write stops everything."""
        if not isinstance(exc, MaskWriterDied):
            self._stop(MASKS, exc)
            return
        assert self.masks is not None
        self.counts.write_errors += 1
        with contextlib.suppress(OSError):  # the same death again; close() makes the file and its frames agree
            self.masks.close()
        frames = self.masks.frames
        last = frames.ranges[-1][1] if frames.ranges else None
        reason = f"{self.masks.path.name} stops after {len(frames)} pages (last frame {last}): {exc}"
        self._problems.add(reason)
        log.error("recorder: %s; recording goes on without masks", reason)
        self._jsonl[EVENTS].write({"kind": RECORDING_STOPPED, "frame": self._last_frame, "particle": None,
                                   "detail": {"file": self.masks.path.name, "reason": reason}, "wall_time_s": time.time()})

    def _append_stop_event(self, name: str, reason: str) -> None:
        events = self._jsonl.get(EVENTS)
        if events is None:
            return
        events.write({"kind": RECORDING_STOPPED, "frame": self._last_frame, "particle": None,
                      "detail": {"file": name, "reason": reason}, "wall_time_s": time.time()})
        try:
            events.flush()
        except OSError:
            log.warning("recorder: no room for the %s event either", RECORDING_STOPPED)

    # ------------------------------------------------------------- internals

    def files(self) -> dict[str, str | None]:
        """run.json ``files`` (`run_layout.files_entry`)."""
        return files_entry(self._mask_files, self._tracks_written)

    def _sync_counts(self) -> None:
        """The files' counts: what each file holds (not what is still pending)."""
        counts = self.counts
        if self._trajectories is not None:
            counts.frames_recorded, counts.particle_rows = self._trajectories.frames, self._trajectories.rows
        if self._jsonl:
            counts.events = self._jsonl[EVENTS].lines
            counts.status_snapshots = self._jsonl[STATUS].lines
            counts.annotations = self._jsonl[ANNOTATIONS].lines
            counts.edits = self._jsonl[EDITS].lines
        if 0 in self._mask_files:  # pages in masks.tif; series_list has every series' file's
            counts.mask_pages = self._mask_files[0].pages_on_disk

    def _write_running_manifest(self) -> None:
        try:
            self._write_manifest(RUNNING, reason=self._problems.reason(self.counts))
        except OSError as exc:
            self._stop(MANIFEST, exc)

    def _write_manifest(self, status: str, closed_utc: str | None = None, reason: str | None = None) -> None:
        first = self._mask_files.get(0)
        mask_frames = first.on_disk() if first is not None else FrameRanges()
        self.manifest.write(status, self.files(), self.counts.as_dict(), mask_frames, self._latest_status,
                            closed_utc, reason, self.stopped, series_list_entry(self.series, self._mask_files))
        self._manifest_due = time.monotonic() + MANIFEST_INTERVAL_S

    def _close_files(self) -> None:
        if not self._files_open:
            return
        self._files_open = False
        writers = [(TRAJECTORIES, self._trajectories), *self._jsonl.items()]
        for name, writer in writers:
            if writer is None:
                continue
            try:
                writer.close()
            except OSError as exc:
                self.counts.write_errors += 1
                self._problems.add(f"{name} ends early ({exc.strerror or exc}, at close)")
                log.exception("recorder: closing %s failed", name)
        if self.masks is not None:
            try:
                self.counts.masks_not_drawn += self.masks.close()
            except OSError as exc:
                self.counts.write_errors += 1
                self._problems.add(f"{MASKS} ends early ({exc})")
                log.exception("recorder: closing masks.tif failed")
        self._sync_counts()
