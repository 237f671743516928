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
hold against what run.json says (`RunCheck`, computed in `io.run_check`).
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
from sam4em_live.io.run_check import (
    INTERRUPTED,
    JSONL_COUNTS,
    MASKS_NAME,
    TRAJECTORIES_CSV,
    RunCheck,
    check_run_files,
    whole_lines,
)
from sam4em_live.io.run_manifest import RANDOM_WEIGHTS_WARNING, RUNNING, expand_ranges
from sam4em_live.io.trajectories import SERIES_COLUMN, Trajectories, normalize_table, read_table_file

__all__ = ["INTERRUPTED", "JSONL_COUNTS", "MANIFEST_NAME", "MASKS_NAME", "TRAJECTORY_NAMES", "MaskPages", "RunCheck",
           "RunFolder", "RunFolderError", "calibration_from_run_json", "run_warnings"]

log = logging.getLogger(__name__)

MANIFEST_NAME = "run.json"
#: Trajectory table names, in the order they are looked for.
TRAJECTORY_NAMES = (TRAJECTORIES_CSV, "trajectories.parquet")


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
            whole = whole_lines(data)
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
        """Count what the files hold and set it against run.json (see `RunCheck`, `io.run_check`)."""
        return check_run_files(self.path, self.manifest, self.status or "unknown", self.closed, self.series_list)

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


def _read_csv_bytes(data: bytes) -> pd.DataFrame:
    return pd.read_csv(io.BytesIO(data))


def _series_shape(manifest: Mapping[str, Any]) -> tuple[int, int]:
    shape = (manifest.get("series") or {}).get("shape")
    return (int(shape[0]), int(shape[1])) if isinstance(shape, list) and len(shape) == 2 else (0, 0)
