"""Reading a run folder written by the recorder (layout and formats in docs/recording.md).

The one reader every consumer uses (analysis, evaluation, tools)::

    folder = RunFolder.open(path)
    folder.manifest, folder.calibration, folder.warnings   # from run.json
    folder.trajectories()                                  # trajectories.csv (or .parquet) as `Trajectories`
    folder.mask_pages()                                    # masks.tif: page count, page shape, frame of each page

``run.json`` is read tolerantly: a folder without one, or with one that cannot be parsed, still
gives its trajectories (calibration unknown; the problem is logged and kept in `manifest_error`).
Only the page → frame mapping of ``masks.tif`` needs the manifest, so `mask_pages` refuses an
unreadable one rather than guessing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sam4em_live.frames import Calibration
from sam4em_live.io.run_manifest import RANDOM_WEIGHTS_WARNING, expand_ranges
from sam4em_live.io.trajectories import Trajectories, read_table_file

log = logging.getLogger(__name__)

MANIFEST_NAME = "run.json"
MASKS_NAME = "masks.tif"
#: Trajectory table names, in the order they are looked for.
TRAJECTORY_NAMES = ("trajectories.csv", "trajectories.parquet")


class RunFolderError(ValueError):
    """A run folder whose files disagree or cannot be read (the message starts with the folder)."""


@dataclass(frozen=True)
class MaskPages:
    """What ``masks.tif`` holds, without its pixels.

    ``pages`` label pages of ``page_shape`` (rows, columns); page ``k`` is frame ``frames[k]``. Read the
    pages lazily from ``path`` (e.g. ``tifffile.TiffFile(path).pages[k]``).
    """

    path: Path
    pages: int
    page_shape: tuple[int, int]
    frames: tuple[int, ...]


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
    def warnings(self) -> tuple[str, ...]:
        """Warnings the run carries (random weights must never pass silently)."""
        return tuple(run_warnings(self.manifest))

    # ------------------------------------------------------------- trajectories

    @property
    def trajectories_path(self) -> Path | None:
        return next((self.path / n for n in TRAJECTORY_NAMES if (self.path / n).is_file()), None)

    def trajectories(self) -> Trajectories:
        """The trajectory table (validated, sorted by particle and frame) with the run's calibration.

        Raises FileNotFoundError without a table, ValueError for a table that is not a trajectory table.
        """
        table_path = self.trajectories_path
        if table_path is None:
            raise FileNotFoundError(f"{self.path} has no {' or '.join(TRAJECTORY_NAMES)}")
        return Trajectories(read_table_file(table_path), self.calibration, str(table_path), self.warnings)

    # ------------------------------------------------------------- masks

    @property
    def masks_path(self) -> Path | None:
        path = self.path / MASKS_NAME
        return path if path.is_file() else None

    def mask_pages(self) -> MaskPages:
        """Page count, page shape and the frame of each page of ``masks.tif``.

        Raises FileNotFoundError without masks.tif, RunFolderError when run.json is unreadable or its
        ``mask_frames`` does not match the pages.
        """
        import tifffile  # a heavy import, needed only here

        path = self.masks_path
        if path is None:
            raise FileNotFoundError(f"{self.path}: no {MASKS_NAME} (was the run recorded with masks?)")
        with tifffile.TiffFile(path) as tif:
            pages = len(tif.pages)
            first = tif.pages.first.shape
        frames = self.mask_frames(pages)
        if len(frames) != pages:
            raise RunFolderError(f"{self.path}: run.json mask_frames lists {len(frames)} frames but "
                                 f"{MASKS_NAME} has {pages} pages")
        return MaskPages(path, pages, (int(first[0]), int(first[1])), tuple(frames))

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
