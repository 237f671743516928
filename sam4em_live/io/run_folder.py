"""Reading a run folder written by the recorder (layout and formats in docs/recording.md).

The one reader every consumer uses (analysis, evaluation, tools)::

    folder = RunFolder.open(path)
    folder.manifest, folder.calibration, folder.warnings   # from run.json
    folder.trajectories()                                  # trajectories.csv (or .parquet) as `Trajectories`
    folder.mask_pages()                                    # masks.tif: page count, page shape, frame of each page
    folder.series_list                                     # every series: id, shape, calibration, frames, masks file
    folder.napari_tracks()                                 # tracks_napari.csv: track_id, t, y, x (napari's layout)

``run.json`` is read tolerantly: a folder without one, or with one that cannot be parsed, still
gives its trajectories (calibration unknown; the problem is logged and kept in `manifest_error`).
Only the page → frame mapping of ``masks.tif`` needs the manifest, so `mask_pages` refuses an
unreadable one rather than guessing.

A run whose process was killed never closed its run.json: it still says ``running``. `status` tells
such a run (``interrupted``: its writer process is gone) from a live one, and for both the reader
trusts the files: `trajectories` reads the whole lines only (a last line cut mid-write is left
out), `mask_pages` takes each page's frame from the page itself. `check` sets what the files
hold against what run.json says (`RunCheck`).
"""

from __future__ import annotations

import io
import json
import logging
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from sam4em_live.frames import Calibration
from sam4em_live.io.mask_tiff import complete_page_frames
from sam4em_live.io.napari_tracks import NAPARI_TRACKS, napari_tracks
from sam4em_live.io.run_manifest import RANDOM_WEIGHTS_WARNING, RUNNING, expand_ranges
from sam4em_live.io.trajectories import SERIES_COLUMN, Trajectories, normalize_table, read_table_file

log = logging.getLogger(__name__)

MANIFEST_NAME = "run.json"
MASKS_NAME = "masks.tif"
#: Trajectory table names, in the order they are looked for.
TRAJECTORY_NAMES = ("trajectories.csv", "trajectories.parquet")
#: `RunFolder.status` of a run left ``running`` by a process that is gone (killed, crashed, power cut).
INTERRUPTED = "interrupted"
#: run.json ``counts`` key -> the JSON-lines file it counts (`RunFolder.check`).
JSONL_COUNTS = {"events": "events.jsonl", "status_snapshots": "status.jsonl", "annotations": "annotations.jsonl",
                "edits": "edits.jsonl"}


class RunFolderError(ValueError):
    """A run folder whose files disagree or cannot be read (the message starts with the folder)."""


@dataclass(frozen=True)
class MaskPages:
    """What ``masks.tif`` holds, without its pixels.

    ``pages`` label pages of ``page_shape`` (rows, columns); page ``k`` is frame ``frames[k]``. Read the
    pages lazily from ``path`` (e.g. ``tifffile.TiffFile(path).pages[k]``). ``result_frames``: the frames
    that had a result (run.json ``series_list`` ``result_frames``); the other pages are the empty pages of
    frames without one (dropped, rejected). None: every page had a result (runs written before).
    """

    path: Path
    pages: int
    page_shape: tuple[int, int]
    frames: tuple[int, ...]
    result_frames: frozenset[int] | None = None

    def result_pages(self) -> list[tuple[int, int]]:
        """(page index, frame) of the pages of frames that had a result: what was segmented."""
        results = self.result_frames
        return [(k, f) for k, f in enumerate(self.frames) if results is None or f in results]


@dataclass(frozen=True)
class RunCheck:
    """What a run folder's files hold, set against its run.json (`RunFolder.check`).

    Counts are of whole records only: rows of ``trajectories.csv`` (a last line without its newline is
    left out and flagged in `cut_line`), complete pages of ``masks.tif``, lines of the JSON-lines files.
    ``disagreements`` lists where run.json says otherwise; for a run that never closed (``running``,
    ``interrupted``) run.json is an older snapshot, so only counts above the files' disagree.
    """

    status: str
    reason: str | None
    particle_rows: int | None
    cut_line: bool
    mask_frames: tuple[int, ...] | None = field(repr=False)
    lines: Mapping[str, int]
    disagreements: tuple[str, ...]

    @property
    def agrees(self) -> bool:
        return not self.disagreements


@dataclass(frozen=True)
class RunFolder:
    """One recorded run folder; build it with `RunFolder.open`."""

    path: Path
    #: The parsed ``run.json`` ({} when absent or unreadable).
    manifest: Mapping[str, Any] = field(default_factory=dict)
    #: Why ``run.json`` could not be used, or None (also None when there is no run.json).
    manifest_error: str | None = None

    @classmethod
    def open(cls, path: str | Path) -> RunFolder:
        """Read ``run.json`` of the folder at ``path`` (FileNotFoundError if it is not a folder)."""
        path = Path(path)
        if not path.is_dir():
            raise FileNotFoundError(f"{path}: no such run folder")
        manifest_path = path / MANIFEST_NAME
        if not manifest_path.is_file():
            return cls(path)
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            log.warning("ignoring unreadable %s: %s", manifest_path, exc)
            return cls(path, {}, f"{type(exc).__name__}: {exc}")
        if not isinstance(manifest, dict):
            log.warning("ignoring %s: not a JSON object", manifest_path)
            return cls(path, {}, f"not a JSON object but {type(manifest).__name__}")
        return cls(path, manifest)

    @staticmethod
    def holds_trajectories(path: str | Path) -> bool:
        """Whether ``path`` is a folder with a trajectory table of ours (what analysis opens as a run)."""
        return any((Path(path) / name).is_file() for name in TRAJECTORY_NAMES)

    # ------------------------------------------------------------- run.json

    @property
    def calibration(self) -> Calibration:
        """The calibration recorded in run.json (all None when unknown); see `calibration_from_run_json`."""
        try:
            return calibration_from_run_json(self.manifest)
        except (ValueError, TypeError, AttributeError) as exc:
            log.warning("ignoring the calibration in %s: %s", self.path / MANIFEST_NAME, exc)
            return Calibration()

    @property
    def status(self) -> str | None:
        """run.json ``status``; ``interrupted`` for a ``running`` run whose writer process is gone (None: no run.json)."""
        status = self.manifest.get("status")
        if status is None:
            return None
        if status == RUNNING and not self.writer_alive:
            return INTERRUPTED
        return str(status)

    @property
    def closed(self) -> bool:
        """Whether run.json was finalised (complete, incomplete or aborted): its counts are then exact."""
        return self.status not in (None, RUNNING, INTERRUPTED)

    @property
    def writer_alive(self) -> bool:
        """Whether the process named in run.json ``writer`` still runs (on this host; elsewhere assumed so)."""
        writer = self.manifest.get("writer")
        if not isinstance(writer, Mapping) or not isinstance(writer.get("pid"), int):
            return False
        if writer.get("host") != socket.gethostname():
            return True  # cannot tell from here: a run being written elsewhere is not called interrupted
        try:
            os.kill(writer["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    @property
    def series_list(self) -> list[Mapping[str, Any]]:
        """run.json ``series_list`` (every series of the run); for older runs, ``series`` with ``masks.tif``."""
        listed = self.manifest.get("series_list")
        if isinstance(listed, list) and all(isinstance(entry, Mapping) for entry in listed):
            return list(listed)
        series = self.manifest.get("series")
        if isinstance(series, Mapping):
            return [{**series, "series": 0, "masks": MASKS_NAME}]
        return []

    @property
    def warnings(self) -> tuple[str, ...]:
        """Warnings the run carries (random weights must never pass silently)."""
        return tuple(run_warnings(self.manifest))

    # ------------------------------------------------------------- trajectories

    @property
    def trajectories_path(self) -> Path | None:
        return next((self.path / n for n in TRAJECTORY_NAMES if (self.path / n).is_file()), None)

    def trajectories(self, series: int | None = None) -> Trajectories:
        """The trajectory table (validated, sorted by series, particle and frame) with the run's calibration.

        ``series``: only that series' rows, with its own calibration (run.json ``series_list``); a run with
        several series (a camera restart, a new series id) repeats frame numbers across them, so analyses
        of positions over time take one series at a time. Raises FileNotFoundError without a table,
        ValueError for a table that is not a trajectory table or a series the run does not have.
        """
        table_path = self.trajectories_path
        if table_path is None:
            raise FileNotFoundError(f"{self.path} has no {' or '.join(TRAJECTORY_NAMES)}")
        table: pd.DataFrame | None = None
        if table_path.suffix == ".csv":
            data = table_path.read_bytes()
            whole = _whole_lines(data)
            if len(whole) < len(data):
                log.warning("%s: last line cut short (the recording stopped mid-write); left out", table_path)
                table = normalize_table(_read_csv_bytes(whole))
        if table is None:
            table = read_table_file(table_path)
        if series is None:
            return Trajectories(table, self.calibration, str(table_path), self.warnings)
        entry = next((e for e in self.series_list if e.get("series") == series), None)
        if entry is None:
            raise ValueError(f"{self.path}: no series {series} (run.json series_list has "
                             f"{[e.get('series') for e in self.series_list]})")
        rows = table[table[SERIES_COLUMN] == series] if SERIES_COLUMN in table.columns else table
        listed = entry.get("calibration")
        calibration = Calibration.from_mapping(listed) if isinstance(listed, Mapping) else self.calibration
        return Trajectories(rows.reset_index(drop=True), calibration, f"{table_path} (series {series})", self.warnings)

    # ------------------------------------------------------------- reconciling

    def check(self) -> RunCheck:
        """Count what the files hold and set it against run.json (see `RunCheck`)."""
        raw_counts = self.manifest.get("counts")
        counts: Mapping[str, Any] = raw_counts if isinstance(raw_counts, Mapping) else {}
        closed = self.closed
        disagreements: list[str] = []

        def agree(what: str, recorded: object, actual: int) -> None:
            if not isinstance(recorded, int):
                return
            if (closed and recorded != actual) or (not closed and recorded > actual):
                disagreements.append(f"run.json {what} = {recorded}, the files hold {actual}")

        rows: int | None = None
        cut = False
        csv_path = self.path / TRAJECTORY_NAMES[0]
        if csv_path.is_file():
            data = csv_path.read_bytes()
            whole = _whole_lines(data)
            rows, cut = max(whole.count(b"\n") - 1, 0), len(whole) < len(data)
            agree("counts.particle_rows", counts.get("particle_rows"), rows)
        mask_frames: tuple[int, ...] | None = None
        if self.masks_path is not None:
            mask_frames = tuple(complete_page_frames(self.masks_path))
            agree("counts.mask_pages", counts.get("mask_pages"), len(mask_frames))
            self._later_series_pages(closed, disagreements)
            listed = self.manifest.get("mask_frames")
            if isinstance(listed, list) and all(isinstance(r, list) for r in listed):
                frames = expand_ranges(listed)
                if (closed and tuple(frames) != mask_frames) or frames != list(mask_frames[: len(frames)]):
                    disagreements.append(f"run.json mask_frames ({len(frames)} frames) differ from the frames "
                                         f"of the {len(mask_frames)} pages of {MASKS_NAME}")
        if rows and not cut:
            disagreements += self._row_disagreements(closed, rows)
        lines: dict[str, int] = {}
        for key, name in JSONL_COUNTS.items():
            if (self.path / name).is_file():
                lines[name] = _whole_lines((self.path / name).read_bytes()).count(b"\n")
                agree(f"counts.{key}", counts.get(key), lines[name])
        reason = self.manifest.get("reason")
        status = self.status or "unknown"
        if status == INTERRUPTED:
            reason = "the recording process stopped without closing the run (killed or crashed); " \
                     "the files hold what reached them, run.json an older snapshot"
        return RunCheck(status, reason if isinstance(reason, str) else None, rows, cut, mask_frames, lines,
                        tuple(disagreements))

    def _later_series_pages(self, closed: bool, disagreements: list[str]) -> int:
        """Pages in the masks files of series 1, 2...; each must hold one page per frame of its range.

        Every series' file (the first's too) must also have that series' frame shape.
        """
        import tifffile  # a heavy import, needed only here

        total = 0
        for entry in self.series_list:
            name = entry.get("masks")
            if not isinstance(name, str) or not (self.path / name).is_file():
                continue
            frames = complete_page_frames(self.path / name)
            shape = entry.get("shape")
            if frames and isinstance(shape, list):
                with tifffile.TiffFile(self.path / name) as tif:
                    page_shape = [int(n) for n in tif.pages.first.shape[:2]]
                if page_shape != shape:
                    disagreements.append(f"{name}: pages of {page_shape}, run.json series {entry.get('series')} "
                                         f"frames of {shape}")
            if entry.get("series") == 0:
                continue  # masks.tif: checked against mask_frames
            total += len(frames)
            first, listed = entry.get("mask_first_frame"), entry.get("mask_pages")
            if isinstance(first, int) and isinstance(listed, int):
                expected = list(range(first, first + listed))
                if (closed and frames != expected) or expected != frames[: len(expected)]:
                    disagreements.append(f"run.json series {entry.get('series')}: {listed} pages from frame {first}, "
                                         f"{name} holds {len(frames)} pages of other frames")
        return total

    def _row_disagreements(self, closed: bool, rows: int) -> list[str]:
        """Rows must be unique by (series, frame, particle), within their series' frame range (closed runs)."""
        try:
            table = pd.read_csv(self.path / TRAJECTORY_NAMES[0])
        except (OSError, ValueError) as exc:
            return [f"{TRAJECTORY_NAMES[0]} cannot be read ({exc})"]
        out: list[str] = []
        keys = [SERIES_COLUMN, "frame", "particle"] if SERIES_COLUMN in table.columns else ["frame", "particle"]
        duplicated = int(table.duplicated(keys).sum())
        if duplicated:
            out.append(f"{TRAJECTORY_NAMES[0]}: {duplicated} duplicate ({', '.join(keys)}) rows")
        ranges = {e.get("series"): e.get("frames") for e in self.series_list}
        if closed and SERIES_COLUMN in table.columns and ranges:
            for number in table[SERIES_COLUMN].unique():
                group = table[table[SERIES_COLUMN] == number]
                frames = ranges.get(int(number))
                if not (isinstance(frames, list) and len(frames) == 2):
                    out.append(f"{TRAJECTORY_NAMES[0]}: rows of series {number}, which run.json does not list")
                elif group["frame"].min() < frames[0] or group["frame"].max() > frames[1]:
                    out.append(f"{TRAJECTORY_NAMES[0]}: rows of series {number} outside its frames {frames}")
        files = self.manifest.get("files")
        tracks = self.path / NAPARI_TRACKS
        if closed and isinstance(files, Mapping) and files.get("napari_tracks") and tracks.is_file():
            written = _whole_lines(tracks.read_bytes()).count(b"\n") - 1
            if written != rows:
                out.append(f"{NAPARI_TRACKS} holds {written} rows, {TRAJECTORY_NAMES[0]} {rows}")
        return out

    # ------------------------------------------------------------- napari

    def napari_tracks(self) -> pd.DataFrame:
        """The run's tracks in napari's layout (``track_id, t, y, x, series, particle``; `io.napari_tracks`).

        Read from ``tracks_napari.csv`` when the run wrote it, else built from the trajectories.
        """
        path = self.path / NAPARI_TRACKS
        if path.is_file():
            return pd.read_csv(path)
        return napari_tracks(self.trajectories().table)

    # ------------------------------------------------------------- masks

    @property
    def masks_path(self) -> Path | None:
        path = self.path / MASKS_NAME
        return path if path.is_file() else None

    def mask_pages(self, series: int = 0) -> MaskPages:
        """Page count, page shape and the frame of each page of ``masks.tif`` (or of series ``series``' file).

        Raises FileNotFoundError without the file, RunFolderError when run.json is unreadable or its
        ``mask_frames`` does not match the pages.
        """
        import tifffile  # a heavy import, needed only here

        path = self.masks_path
        if series:
            entry = next((e for e in self.series_list if e.get("series") == series), {})
            name = entry.get("masks")
            path = self.path / name if isinstance(name, str) and (self.path / name).is_file() else None
        if path is None:
            name = MASKS_NAME if not series else f"masks file of series {series}"
            raise FileNotFoundError(f"{self.path}: no {name} (was the run recorded with masks?)")
        if series or self.status in (RUNNING, INTERRUPTED):
            # Never closed: trust the file. Its complete pages carry their own frame index.
            page_frames = complete_page_frames(path)
            rows, cols = _series_shape(self.manifest)
            if page_frames:
                with tifffile.TiffFile(path) as tif:
                    rows, cols = (int(n) for n in tif.pages.first.shape[:2])
            return MaskPages(path, len(page_frames), (rows, cols), tuple(page_frames), self._result_frames(series))
        with tifffile.TiffFile(path) as tif:
            pages = len(tif.pages)
            first = tif.pages.first.shape
        frames = self.mask_frames(pages)
        if len(frames) != pages:
            raise RunFolderError(f"{self.path}: run.json mask_frames lists {len(frames)} frames but "
                                 f"{MASKS_NAME} has {pages} pages")
        return MaskPages(path, pages, (int(first[0]), int(first[1])), tuple(frames), self._result_frames(series))

    def _result_frames(self, series: int) -> frozenset[int] | None:
        entry = next((e for e in self.series_list if e.get("series") == series), {})
        ranges = entry.get("result_frames")
        if not isinstance(ranges, list):
            return None
        try:
            return frozenset(expand_ranges(ranges))
        except (TypeError, ValueError):
            return None

    def mask_frames(self, pages: int) -> list[int]:
        """Frame index of each of ``pages`` pages.

        From run.json ``mask_frames``: inclusive ``[first, last]`` ranges (the recorder's encoding) or a
        plain list; ``0 .. pages-1`` when run.json has none.
        """
        if self.manifest_error is not None:
            raise RunFolderError(f"{self.path}: run.json cannot be read ({self.manifest_error}); the frame of "
                                 f"each {MASKS_NAME} page is unknown")
        raw = self.manifest.get("mask_frames")
        if raw is None:
            return list(range(pages))
        if not isinstance(raw, list):
            raise RunFolderError(f"{self.path}: run.json mask_frames must be a list, got {type(raw).__name__}")
        try:
            if all(isinstance(item, list) for item in raw):
                return expand_ranges(raw)
            return [int(f) for f in raw]
        except (TypeError, ValueError) as exc:
            raise RunFolderError(f"{self.path}: cannot read run.json mask_frames ({exc})") from None


def calibration_from_run_json(data: Mapping[str, Any]) -> Calibration:
    """Calibration recorded in a run's ``run.json``.

    Looks, in order, at ``calibration``, ``series.calibration`` and
    top-level ``pixel_size_nm``/``fps``; the first place that has a field wins.
    """
    places: list[Mapping[str, Any]] = []
    for candidate in (data.get("calibration"), (data.get("series") or {}).get("calibration"), data):
        if isinstance(candidate, Mapping):
            places.append(candidate)
    merged = Calibration()
    for place in reversed(places):
        merged = merged.merged(Calibration.from_mapping(place))
    return merged


def run_warnings(manifest: Mapping[str, Any]) -> list[str]:
    """Warnings a run's ``run.json`` carries (random weights must never pass silently)."""
    warnings = [str(manifest["WARNING"])] if manifest.get("WARNING") else []
    backend = manifest.get("backend")
    if isinstance(backend, Mapping) and backend.get("random_weights") and RANDOM_WEIGHTS_WARNING not in warnings:
        warnings.append(RANDOM_WEIGHTS_WARNING)
    return warnings


def _whole_lines(data: bytes) -> bytes:
    """``data`` up to and including its last newline (a last line cut mid-write left out)."""
    return data[: data.rfind(b"\n") + 1]


def _read_csv_bytes(data: bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(data))


def _series_shape(manifest: Mapping[str, Any]) -> tuple[int, int]:
    shape = (manifest.get("series") or {}).get("shape")
    return (int(shape[0]), int(shape[1])) if isinstance(shape, list) and len(shape) == 2 else (0, 0)
