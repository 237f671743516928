"""`WatchedFolderSource`: frames from a folder an acquisition program is writing, one file per frame.

Point it at the folder DigitalMicrograph, Velox, SerialEM or a camera's own software saves frames into
(any frame format of `sam4em_live.io.frame_folder`: TIFF, PNG, JPEG, DM3/DM4; any instrument format of
the reader registry holding one frame per file: MRC, Velox EMD, TIA SER...; or, with ``recursive``, a
Gatan in-situ tree of ``Hour_NN/Minute_NN/Second_NN`` folders). Each frame is streamed as soon as its file
is complete; a partly written file is never delivered:

- **complete** (``complete_when = "stable"``, the default): the file's size and modification time have
  not changed for ``settle_s`` (two looks at least that far apart), *and* it decodes (a truncated TIFF,
  PNG, JPEG or DM file does not), *and* it is still the same size and time after decoding (a writer that
  paused longer than ``settle_s`` and went on is caught there). A file that does not decode is retried
  until it has been stable for ``give_up_s``, then counted as rejected (``unreadable``).
- ``complete_when = "renamed"``: for writers that write under a temporary name and rename the finished
  file into place (atomic on one file system): a file is taken as soon as it appears, no settling.
  Names that are hidden (``.x``) or end in ``.tmp`` / ``.part`` / ``.partial`` / ``~`` are never taken.

Polling, not inotify (which network shares, where microscope PCs often save, do not deliver): every
``poll_interval_s`` the source re-lists the folders that changed (or changed within the last second: a
folder's time has a coarse tick) and stats only the files still pending. A folder being written is thus
listed every poll; with tens of thousands of files in one folder that costs milliseconds per poll
(Gatan's in-situ trees, a folder per second, stay cheap).

Frames come in the order of the numbers in their names (``frame_0012.tif``; in-situ trees by hour,
minute, second, frame). Index: the file's number in a flat folder (skipped numbers are gaps), the count of
frames so far in a tree. A file that completes after a later-numbered one was delivered is rejected
(``late_file``) unless it completes within ``max_reorder_wait_s`` of being seen, which later files wait
for; frames of another size or pixel type than the first are rejected (``size_mismatch``).
Files already in the folder when the source opens are skipped unless ``include_existing``.

Calibration: the first frame file's (TIFF/DM tags), under the options' ``fps`` and ``pixel_size_nm``;
frames are stamped with their file's modification time (the acquisition program's clock).
A folder that disappears (the acquisition program restarted and cleared it) is waited for; frames
written after it reappears start a new series.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
from pydantic import NonNegativeFloat, PositiveFloat

from sam4em_live.config import FrozenModel
from sam4em_live.frames import Calibration, Frame, SeriesInfo
from sam4em_live.io.frame_folder import decode_frame_file, file_calibration, frame_format
from sam4em_live.io.frame_readers import GreyReducer, ReplayError, wire_dtype
from sam4em_live.plugins import FactoryPlugin
from sam4em_live.sources.base import EndOfStream, SourceCounters

if TYPE_CHECKING:
    from sam4em_live.sources.registry import SourceContext

log = logging.getLogger(__name__)

_TEMPORARY = re.compile(r"(^\.|\.(tmp|part|partial|crdownload)$|~$)", re.IGNORECASE)
_NUMBER = re.compile(r"(\d+)")
_RACY_NS = 1_000_000_000


class WatchedFolderOptions(FrozenModel):
    """Options of the ``watched-folder`` source: ``[source] kind = "watched-folder"``."""

    path: Path
    recursive: bool = False  # also watch sub-folders (Gatan in-situ trees)
    complete_when: Literal["stable", "renamed"] = "stable"
    settle_s: PositiveFloat = 0.02
    give_up_s: PositiveFloat = 10.0
    # A later file that is complete waits at most this long for an earlier one still being written (parallel
    # writers); an earlier file completing after that is rejected as late_file.
    max_reorder_wait_s: NonNegativeFloat = 0.5
    poll_interval_s: PositiveFloat = 0.005
    include_existing: bool = False
    end_after_idle_s: PositiveFloat | None = None  # the series ends after this long without a new frame
    fps: PositiveFloat | None = None
    pixel_size_nm: PositiveFloat | None = None


@dataclass(slots=True)
class _Pending:
    """A frame file seen but not yet delivered: what it looked like, and since when."""

    path: Path
    key: tuple[int, ...]
    size: int
    mtime_ns: int
    stable_since: float
    first_seen: float
    failures: int = 0


@dataclass(slots=True)
class _FolderState:
    mtime_ns: dict[Path, int] = field(default_factory=dict)
    known: set[Path] = field(default_factory=set)  # every frame file ever seen (pending, delivered, dropped)


def order_key(path: Path, root: Path) -> tuple[int, ...]:
    """The numbers in ``path``'s name below ``root`` (last number of each component), for frame order."""
    key: list[int] = []
    for part in path.relative_to(root).with_suffix("").parts:
        numbers = _NUMBER.findall(part)
        key.append(int(numbers[-1]) if numbers else -1)
    return tuple(key)


def file_kind(path: Path) -> str | None:
    """What a file in the folder is, or None for a file that is not a frame (ignored).

    A frame format (``"tiff"``...), or an instrument format's reader name (``"mrc"``, ``"velox-emd"``...
    of `sam4em_live.io.reader_registry`).
    """
    fmt = frame_format(path)
    if fmt is not None:
        return fmt
    from sam4em_live.io.reader_registry import reader_plugins

    suffix = path.suffix.lower()
    for name, plugin in reader_plugins().items():
        if not plugin.folder and suffix in plugin.suffixes:
            return name
    return None


def read_one_frame(path: Path, kind: str) -> tuple[np.ndarray, Calibration | None]:
    """The one frame of ``path`` and, for an instrument file, the calibration its reader found.

    ``path`` is a frame file, or an instrument file of one frame; `ReplayError` if it cannot be read or
    holds several frames.
    """
    if frame_format(path) is not None:
        return decode_frame_file(path, kind), None
    from sam4em_live.io.reader_registry import open_reader

    reader = open_reader(path)
    try:
        if reader.n_frames != 1:
            raise ReplayError(f"{path}: {reader.n_frames} frames; a watched folder takes one frame per file")
        return np.array(reader.read(0)), reader.calibration
    finally:
        reader.close()


class WatchedFolderSource:
    """Frames from files appearing in a folder (see the module docstring)."""

    def __init__(self, options: WatchedFolderOptions, stop_at_series_end: bool = False) -> None:
        self.options = options
        self.root = Path(options.path)
        self.stop_at_series_end = stop_at_series_end
        self.counters = SourceCounters()
        self._series: SeriesInfo | None = None
        self._state = _FolderState()
        self._pending: dict[Path, _Pending] = {}
        self._last_key: tuple[int, ...] | None = None
        self._delivered = 0
        self._format: str | None = None
        self._grey = GreyReducer(self.root)
        self._last_frame_at = time.monotonic()
        self._folder_present = True
        self._generation = 0
        self._first_calibration: Calibration | None = None

    @property
    def series(self) -> SeriesInfo | None:
        return self._series

    def open(self) -> None:
        if not self.root.is_dir():
            log.warning("watched folder %s does not exist (yet): waiting for it", self.root)
            self._folder_present = False
        self._scan()
        if not self.options.include_existing:
            for pending in self._pending.values():
                log.debug("skipping %s: in the folder before the source opened", pending.path.name)
            self._pending.clear()
        log.info("watching %s for frame files (%s)", self.root, self.options.complete_when)
        self._last_frame_at = time.monotonic()

    def next_frame(self, timeout_s: float) -> Frame | None:
        deadline = time.monotonic() + timeout_s
        while True:
            self._scan()
            frame = self._take_complete()
            if frame is not None:
                self._last_frame_at = time.monotonic()
                return frame
            self._maybe_end()
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            time.sleep(min(self.options.poll_interval_s, remaining))

    def close(self) -> None:
        self._pending.clear()

    # -------------------------------------------------------------- discovery

    def _scan(self) -> None:
        try:
            self._scan_folder(self.root)
        except FileNotFoundError:
            if self._folder_present:
                log.warning("watched folder %s disappeared: waiting for it to come back", self.root)
                self._end_series()
                self._state = _FolderState()
                self._pending.clear()
                self._last_key = None
            self._folder_present = False
            return
        if not self._folder_present:
            log.info("watched folder %s is back", self.root)
            self._folder_present = True

    def _scan_folder(self, folder: Path) -> None:
        mtime_ns = os.stat(folder).st_mtime_ns
        # A folder's modification time has the file system's coarse tick (ms): a file added in the same tick
        # as the last listing leaves it unchanged. So a folder modified less than a second ago is listed
        # again each poll; only a quiet folder is trusted to be unchanged ("racy" entries, as git does).
        recent = time.time_ns() - mtime_ns < _RACY_NS
        if self._state.mtime_ns.get(folder) == mtime_ns and not recent:
            if self.options.recursive:
                for sub in [p for p in self._state.mtime_ns if p.parent == folder]:
                    self._scan_sub(sub)
            return
        self._state.mtime_ns[folder] = mtime_ns
        with os.scandir(folder) as entries:
            listed = list(entries)
        for entry in listed:
            path = Path(entry.path)
            if _TEMPORARY.search(entry.name):
                continue
            if entry.is_dir():
                if self.options.recursive:
                    self._scan_sub(path)
                continue
            if path in self._state.known or file_kind(path) is None:
                continue
            try:
                stat = entry.stat()
            except FileNotFoundError:
                continue  # renamed away again between listing and stat
            self._state.known.add(path)
            now = time.monotonic()
            self._pending[path] = _Pending(path, order_key(path, self.root), stat.st_size, stat.st_mtime_ns, now, now)

    def _scan_sub(self, folder: Path) -> None:
        try:
            self._scan_folder(folder)
        except FileNotFoundError:
            self._state.mtime_ns.pop(folder, None)

    # -------------------------------------------------------------- completion

    def _take_complete(self) -> Frame | None:
        now = time.monotonic()
        for pending in sorted(self._pending.values(), key=lambda p: p.key):
            if not self._looks_complete(pending, now) or (pixels := self._decode(pending, now)) is None:
                if pending.path in self._pending and now - pending.first_seen < self.options.max_reorder_wait_s:
                    return None  # frames go out in order: wait a little for an earlier file still being written
                continue
            return self._deliver(pending, pixels)
        return None

    def _looks_complete(self, pending: _Pending, now: float) -> bool:
        if self.options.complete_when == "renamed":
            return True
        try:
            stat = pending.path.stat()
        except FileNotFoundError:
            self._pending.pop(pending.path, None)  # renamed away or deleted before it completed
            return False
        if (stat.st_size, stat.st_mtime_ns) != (pending.size, pending.mtime_ns):
            pending.size, pending.mtime_ns, pending.stable_since = stat.st_size, stat.st_mtime_ns, now
            return False
        return pending.size > 0 and now - pending.stable_since >= self.options.settle_s

    def _decode(self, pending: _Pending, now: float) -> np.ndarray | None:
        fmt = file_kind(pending.path)
        assert fmt is not None  # only frame files are pending
        try:
            pixels, calibration = read_one_frame(pending.path, fmt)
            pixels = self._grey(pixels)
            stat = pending.path.stat()
        except (ReplayError, OSError) as exc:
            pending.failures += 1
            if now - pending.stable_since >= self.options.give_up_s:
                self._reject(pending, "unreadable", str(exc))
            return None
        if (stat.st_size, stat.st_mtime_ns) != (pending.size, pending.mtime_ns):
            pending.size, pending.mtime_ns, pending.stable_since = stat.st_size, stat.st_mtime_ns, now
            return None  # written to while we decoded it: it was not complete
        if pixels.ndim != 2:
            self._reject(pending, "not_an_image", f"shape {pixels.shape}")
            return None
        if self._format is None:
            self._format = fmt
        elif fmt != self._format:
            self._reject(pending, "mixed_formats", f"a {fmt} file in a folder of {self._format} frames")
            return None
        if self._series is None and calibration is not None:
            self._first_calibration = calibration
        return pixels

    def _deliver(self, pending: _Pending, pixels: np.ndarray) -> Frame | None:
        del self._pending[pending.path]
        if self._last_key is not None and pending.key <= self._last_key:
            self._reject(pending, "late_file", "completed after a later frame was delivered")
            return None
        try:
            pixels = pixels.astype(wire_dtype(pixels.dtype, pending.path), copy=False)
        except ReplayError as exc:
            self._reject(pending, "unsupported_dtype", str(exc))
            return None
        if self._series is None:
            self._series = self._start_series(pending.path, pixels)
        elif pixels.shape != self._series.shape or pixels.dtype.str != self._series.dtype:
            self._reject(pending, "size_mismatch", f"{pixels.shape} {pixels.dtype} in a series of "
                         f"{self._series.shape} {self._series.dtype}")
            return None
        if self.options.recursive:
            index = self._delivered
        else:
            index = pending.key[-1] if pending.key[-1] >= 0 else self._delivered
            if self._last_key is not None and self._last_key[-1] >= 0:
                self.counters.gaps += max(0, index - self._last_key[-1] - 1)
        self._last_key = pending.key
        self._delivered += 1
        self.counters.frames += 1
        return Frame(self._series.series_id, index, pending.mtime_ns * 1e-9, pixels, self._series.calibration)

    def _start_series(self, path: Path, pixels: np.ndarray) -> SeriesInfo:
        fmt = file_kind(path)
        assert fmt is not None
        found: dict[str, str] = {}
        if self._first_calibration is not None:  # an instrument file: its reader read the calibration
            calibration = self._first_calibration
            missing = [k for k in ("pixel_size_nm", "fps") if getattr(calibration, k) is None]
        else:
            try:
                calibration, found, missing = file_calibration(path, fmt)
            except (ReplayError, OSError, ValueError):
                calibration, found, missing = Calibration(), {}, ["pixel_size_nm", "fps"]
        calibration = calibration.merged(Calibration(pixel_size_nm=self.options.pixel_size_nm,
                                                     fps=self.options.fps))
        self.counters.series_started += 1
        series_id = f"{self.root.name}-{time.strftime('%Y%m%dT%H%M%S')}"
        if self._generation:
            series_id += f".{self._generation}"
        self._generation += 1
        log.info("watched folder %s: series %s, %s %s frames", self.root, series_id, pixels.shape, pixels.dtype)
        return SeriesInfo(series_id, (int(pixels.shape[0]), int(pixels.shape[1])), pixels.dtype.str, calibration,
                          {"source": "watched-folder", "folder": str(self.root), "frame_format": fmt,
                           "calibration_from": found, "calibration_missing": missing},
                          acquisition_timestamps=True, live=True)

    def _end_series(self) -> None:
        if self._series is not None:
            self.counters.series_ended += 1
            log.info("watched folder %s: series %s ended", self.root, self._series.series_id)
            self._series = None
            self._format = None
            self._first_calibration = None

    def _maybe_end(self) -> None:
        idle = self.options.end_after_idle_s
        if idle is None or self._series is None or time.monotonic() - self._last_frame_at < idle:
            return
        series_id = self._series.series_id
        self._end_series()
        self._last_key = None
        if self.stop_at_series_end:
            raise EndOfStream(series_id)

    def _reject(self, pending: _Pending, reason: str, detail: str) -> None:
        self._pending.pop(pending.path, None)
        self.counters.reject(reason)
        log.warning("watched folder: %s rejected (%s): %s", pending.path.name, reason, detail)


def _build(options: WatchedFolderOptions, context: SourceContext) -> WatchedFolderSource:
    return WatchedFolderSource(options, stop_at_series_end=context.stop_at_series_end)


WATCHED_FOLDER_PLUGIN: FactoryPlugin[WatchedFolderSource] = FactoryPlugin(WatchedFolderOptions, _build)
