"""The run directory as one `MessageHandler`: each message type goes to the files it concerns.

========================  ======================================================================
message                   files
========================  ======================================================================
`ResultMessage`           ``trajectories.csv`` rows, ``events.jsonl`` lines, a ``masks.tif`` page
`StatusMessage`           a ``status.jsonl`` line; everything flushed; ``run.json`` rewritten
`AnnotationMessage`       an ``annotations.jsonl`` line
========================  ======================================================================

Created on the pipeline thread by `Recorder.open` (the files are created there, so a disk that
refuses fails the open); everything after that runs on the writer thread.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from sam4em_live.io.run_manifest import FrameRanges, utc_now
from sam4em_live.sinks.recorder.files import (
    JsonlWriter,
    ManifestWriter,
    MaskPagesWriter,
    TrajectoriesCsvWriter,
)

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from sam4em_live.results import RunInfo
    from sam4em_live.sinks.recorder.messages import (
        AnnotationMessage,
        RecorderCounts,
        ResultMessage,
        StatusMessage,
    )

log = logging.getLogger(__name__)

TRAJECTORIES = "trajectories.csv"
MASKS = "masks.tif"
EVENTS = "events.jsonl"
STATUS = "status.jsonl"
ANNOTATIONS = "annotations.jsonl"
MANIFEST = "run.json"


class RunDirectoryWriter:
    """Writes one run directory from typed messages (a `writer_thread.MessageHandler`).

    Parameters
    ----------
    run, run_dir
        The run and its (new, empty) directory.
    counts
        The recorder's counters; this writer bumps the files' counts and reads the queue's for run.json.
    masks
        The ``masks.tif`` writer, or None when masks are not recorded.
    """

    def __init__(self, run: RunInfo, run_dir: Path, counts: RecorderCounts, masks: MaskPagesWriter | None) -> None:
        self.run = run
        self.run_dir = run_dir
        self.counts = counts
        self.masks = masks
        self.finished = False
        self._latest_status: dict[str, Any] | None = None
        self._trajectories: TrajectoriesCsvWriter | None = None
        self._jsonl: dict[str, JsonlWriter] = {}
        try:
            self._trajectories = TrajectoriesCsvWriter(run_dir / TRAJECTORIES, run.series.calibration)
            for name in (EVENTS, STATUS, ANNOTATIONS):
                self._jsonl[name] = JsonlWriter(run_dir / name)
            self.manifest = ManifestWriter(run_dir / MANIFEST, run, utc_now(), self._trajectories.columns)
            self._write_manifest("running")
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
        then lists no masks file) instead of not at all.
        """
        if self.masks is None:
            return
        try:
            self.masks.open()
        except OSError:
            self.counts.write_errors += 1
            log.exception("recorder: masks.tif cannot be written; recording the run without it")

    def write_result(self, message: ResultMessage) -> None:
        trajectories = self._trajectories
        assert trajectories is not None, "write after finish()"
        self.counts.particle_rows += trajectories.write(message)
        events = self._jsonl[EVENTS]
        for event in message.events:
            events.write({"kind": event.kind, "frame": event.frame, "particle": event.particle,
                          "detail": event.detail, "wall_time_s": message.processed_s})
            self.counts.events += 1
        if self.masks is not None and self.masks.append(self.run.series.shape, message.masks, message.index):
            self.counts.mask_pages += 1
        self.counts.frames_recorded += 1

    def write_status(self, message: StatusMessage) -> None:
        self._latest_status = dict(message.status)
        self._jsonl[STATUS].write(self._latest_status)
        self.counts.status_snapshots += 1
        self.flush()
        self._write_manifest("running")

    def write_annotation(self, message: AnnotationMessage) -> None:
        self._jsonl[ANNOTATIONS].write(message.as_record())
        self.counts.annotations += 1

    def end_batch(self) -> None:
        if self.masks is not None:
            self.masks.push()  # the batch's pages to the child in one message

    def flush(self) -> None:
        if self._trajectories is not None:
            self._trajectories.flush()
        for writer in self._jsonl.values():
            writer.flush()
        if self.masks is not None:
            self.masks.flush()

    def finish(self) -> None:
        """Flush, fsync and close every file, then finalise run.json (complete or aborted). Idempotent.

        Called by the writer thread after the last message, or by `Recorder.close` if that thread died.
        Each step is guarded on its own, so one failing file does not cost the others.
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
        latest = self._latest_status or {}
        failed = latest.get("state") == "errored" or latest.get("error") or self.counts.results_lost
        try:
            self._write_manifest("aborted" if failed else "complete", utc_now())
        except Exception:
            self.counts.write_errors += 1
            log.exception("recorder: finalising run.json failed")
        log.info("run %s recorded: %d frames, %d trajectory rows", self.run.run_id, self.counts.frames_recorded,
                 self.counts.particle_rows)

    # ------------------------------------------------------------- internals

    def files(self) -> dict[str, str | None]:
        """run.json ``files``: masks is null when not written (disabled, or the writer failed)."""
        masks = MASKS if self.masks is not None and not self.masks.failed else None
        return {"trajectories": TRAJECTORIES, "masks": masks, "events": EVENTS, "status": STATUS,
                "annotations": ANNOTATIONS}

    def _write_manifest(self, status: str, closed_utc: str | None = None) -> None:
        mask_frames = self.masks.frames if self.masks is not None else FrameRanges()
        self.manifest.write(status, self.files(), self.counts.as_dict(), mask_frames, self._latest_status,
                            closed_utc)

    def _close_files(self) -> None:
        closers: list[tuple[str, Callable[[], None]]] = []
        if self._trajectories is not None:
            closers.append((TRAJECTORIES, self._trajectories.close))
        closers.extend((name, writer.close) for name, writer in self._jsonl.items())
        self._trajectories, self._jsonl = None, {}
        for name, close in closers:
            try:
                close()
            except OSError:
                self.counts.write_errors += 1
                log.exception("recorder: flushing %s failed", name)
        if self.masks is not None:
            try:
                self.counts.masks_not_drawn += self.masks.close()
            except OSError:
                self.counts.write_errors += 1
                log.exception("recorder: closing masks.tif failed")
