"""What a batch analyses: its INPUTS (globs, folders of recordings, manifest files) made into `Recording`s.

Each recording gets its prompts from, in order: the manifest's ``prompts`` or ``replay`` entry; a previous run
folder of the same name under ``replay_from`` (its edits replayed, `service.runs.run_replay`); a prompts file
beside it (``<stem>.prompts.json``, or ``prompts.json`` in a folder that holds only that recording); else
automatic discovery when asked for (``[discovery] mode = "auto"``), else it is refused before any work.
"""

from __future__ import annotations

import csv
import functools
import glob
import json
import re
import tomllib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sam4em_live.io.reader_registry import reader_plugins

MANIFEST_SUFFIXES = (".json", ".toml", ".csv")
#: Where a previous run recorded its config and edits (a run folder given as an input is replayed).
RUN_MANIFEST = "run.json"
#: A simulator's output folder (docs/simulator.md): its video and its metadata.
SIMULATION_LAYOUT = ("video.tif", "meta.json")


class BatchInputError(ValueError):
    """An input that names no recording, or a manifest that cannot be read (the message names it)."""


@dataclass(frozen=True)
class Recording:
    """One recording of the batch and where its prompts come from (exactly one of prompts/replay/discover)."""

    name: str  # unique in the batch: its run folder and its Parquet partition
    path: Path
    prompts: Path | None = None
    replay: Path | None = None  # a previous run folder whose recorded edits are replayed
    discover: bool = False
    fps: float | None = None
    pixel_size_nm: float | None = None

    @property
    def prompts_origin(self) -> str:
        if self.replay is not None:
            return f"replay:{self.replay}"
        if self.prompts is not None:
            return f"prompts:{self.prompts}"
        return "discovery" if self.discover else "none"


def expand_inputs(inputs: list[str | Path], replay_from: Path | None = None, discover: bool = False
                  ) -> list[Recording]:
    """The recordings named by ``inputs`` (globs, recordings, folders of recordings, manifests), named uniquely."""
    _file_suffixes.cache_clear()  # plugins registered since the last batch count
    _folder_suffixes.cache_clear()
    found: list[Recording] = []
    for item in inputs:
        text = str(item)
        paths = [Path(p) for p in sorted(glob.glob(text))] if glob.has_magic(text) else [Path(text)]
        if not paths:
            raise BatchInputError(f"{text}: the pattern matches nothing")
        for path in paths:
            found.extend(_recordings_of(path))
    if not found:
        raise BatchInputError("no recordings in the inputs")
    named = _unique_names(found)
    return [_with_prompts(r, replay_from, discover) for r in named]


def _recordings_of(path: Path) -> list[Recording]:
    if not path.exists():
        raise BatchInputError(f"{path}: no such file or folder")
    if path.is_file() and path.suffix.lower() in MANIFEST_SUFFIXES:
        return read_manifest(path)
    if path.is_dir() and (path / RUN_MANIFEST).is_file():
        return [_from_run_folder(path)]
    if path.is_dir() and all((path / name).is_file() for name in SIMULATION_LAYOUT):
        # `sam4em-live simulate`'s folder: one recording (video.tif; gt_masks.tif is its truth), named by the folder
        prompts = path / "prompts.json"
        return [Recording(name=path.name, path=(path / "video.tif").absolute(),
                          prompts=prompts.absolute() if prompts.is_file() else None)]
    if path.is_file() or _is_frame_folder(path):
        return [Recording(name=path.stem, path=path.absolute())]
    found = []
    # A run folder met inside a folder is output (an earlier batch's runs/), not an input to replay.
    for child in (p for p in sorted(path.iterdir()) if _is_recording(p) and not (p / RUN_MANIFEST).is_file()):
        try:
            found.extend(_recordings_of(child))
        except BatchInputError:  # a sub-folder of other things (notes, a previous batch's output) is no input
            if child.is_file():
                raise
    if not found:
        raise BatchInputError(f"{path}: a folder with no recording a reader knows (docs/formats.md)")
    return found


@functools.cache
def _file_suffixes() -> frozenset[str]:
    """Suffixes of the file readers (cached for one `expand_inputs`: loading plugins costs per call)."""
    return frozenset(s for p in reader_plugins().values() if not p.folder for s in p.suffixes)


@functools.cache
def _folder_suffixes() -> frozenset[str]:
    return frozenset(s for p in reader_plugins().values() if p.folder for s in p.suffixes)


def _is_frame_folder(path: Path) -> bool:
    """A folder that is itself one recording (single-frame image files), as the folder readers would open it.

    TIFF names both a frame and a stack: a folder whose first image holds several frames is a folder of stacks.
    """
    from sam4em_live.io.reader_registry import open_reader

    if not path.is_dir():
        return False
    folder_suffixes = _folder_suffixes()
    files = sorted(p for p in path.iterdir() if p.is_file())
    if any(p.suffix.lower() in _file_suffixes() - folder_suffixes for p in files):
        return False
    images = [p for p in files if p.suffix.lower() in folder_suffixes]
    if not images:
        return False
    for image in images[:8]:
        try:
            reader = open_reader(image)
        except ValueError:  # a corrupt file: judge by the next one
            continue
        try:
            return reader.n_frames <= 1
        finally:
            reader.close()
    return True  # nothing opens: the folder reader will say what is wrong with it


def _is_recording(path: Path) -> bool:
    if path.is_file():
        return path.suffix.lower() in _file_suffixes() and not path.name.endswith(".prompts.json")
    return path.is_dir() and not path.name.startswith(".")


def _from_run_folder(run_dir: Path) -> Recording:
    """A previous run folder as an input: its recording (run.json's source path), its edits replayed."""
    try:
        source = json.loads((run_dir / RUN_MANIFEST).read_text())["config"]["source"]["path"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BatchInputError(f"{run_dir}: run.json does not name its recording ({exc})") from None
    return Recording(name=run_dir.name, path=Path(source), replay=run_dir.absolute())


def read_manifest(path: Path) -> list[Recording]:
    """A manifest: rows of ``path`` and optional ``name``, ``prompts``, ``replay``, ``fps``, ``pixel_size_nm``.

    JSON (a list, or ``{"recordings": [...]}``), TOML (``[[recordings]]``) or CSV with those columns; relative
    paths are relative to the manifest.
    """
    try:
        rows = _manifest_rows(path)
    except (OSError, ValueError, tomllib.TOMLDecodeError) as exc:
        raise BatchInputError(f"{path}: not a readable manifest ({exc})") from None
    base = path.absolute().parent
    out = []
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not row.get("path"):
            raise BatchInputError(f"{path}: entry {i} has no 'path'")
        unknown = set(row) - {"path", "name", "prompts", "replay", "fps", "pixel_size_nm"}
        if unknown:
            raise BatchInputError(f"{path}: entry {i}: unknown key(s) {', '.join(sorted(unknown))}")
        recording = base / str(row["path"])
        out.append(Recording(
            name=str(row.get("name") or recording.stem), path=recording,
            prompts=base / str(row["prompts"]) if row.get("prompts") else None,
            replay=base / str(row["replay"]) if row.get("replay") else None,
            fps=_number(row.get("fps")), pixel_size_nm=_number(row.get("pixel_size_nm"))))
    return out


def _manifest_rows(path: Path) -> list[Any]:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        with path.open(newline="") as handle:
            return [{k: v for k, v in row.items() if v not in (None, "")} for row in csv.DictReader(handle)]
    data: Any = tomllib.loads(path.read_text()) if suffix == ".toml" else json.loads(path.read_text())
    rows = data.get("recordings") if isinstance(data, dict) else data
    if not isinstance(rows, list):
        raise ValueError("expected a list of recordings (or a 'recordings' list)")
    return rows


def _number(value: Any) -> float | None:
    return None if value in (None, "") else float(value)


def _unique_names(recordings: list[Recording]) -> list[Recording]:
    """Names safe as folder and partition names; duplicates get their parent folder's name, then a count."""
    seen: dict[str, int] = {}
    out = []
    for r in recordings:
        name = re.sub(r"[^A-Za-z0-9._-]+", "_", r.name).strip("._") or "recording"
        if name in seen:
            name = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{r.path.parent.name}_{name}")
        while name in seen:
            seen[name] += 1
            name = f"{name}-{seen[name]}"
        seen[name] = 0
        out.append(replace(r, name=name))
    return out


def _with_prompts(r: Recording, replay_from: Path | None, discover: bool) -> Recording:
    if r.prompts is not None or r.replay is not None:
        return r
    if replay_from is not None and (replay_from / r.name / RUN_MANIFEST).is_file():
        return replace(r, replay=(replay_from / r.name).absolute())
    beside = _prompts_beside(r.path)
    if beside is not None:
        return replace(r, prompts=beside)
    return replace(r, discover=discover)


def _prompts_beside(recording: Path) -> Path | None:
    named = recording.with_name(recording.stem + ".prompts.json")
    if named.is_file():
        return named.absolute()
    if recording.is_dir() and (recording / "prompts.json").is_file():
        return (recording / "prompts.json").absolute()
    shared = recording.parent / "prompts.json"
    siblings = [p for p in recording.parent.iterdir() if p != shared and _is_recording(p) and p.is_file()]
    if shared.is_file() and siblings == [recording]:
        return shared.absolute()
    return None
