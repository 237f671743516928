"""Setting what a run folder's files hold against its run.json: `RunFolder.check` (docs/recording.md, "Faults").

Counts are of whole records only (`whole_lines`); a run that never closed has an older run.json, so there only
counts above the files disagree. Besides the counts: masks.tif's pages against ``mask_frames``, every series'
masks file against its ``series_list`` entry (frame shape, one page per frame of its range), duplicate
``(series, frame, particle)`` rows, rows outside their series' frames, and ``tracks_napari.csv`` against the
trajectories.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pandas as pd

from sam4em_live.io.mask_tiff import complete_page_frames
from sam4em_live.io.napari_tracks import NAPARI_TRACKS
from sam4em_live.io.run_manifest import expand_ranges
from sam4em_live.io.trajectories import SERIES_COLUMN

if TYPE_CHECKING:
    from pathlib import Path

MASKS_NAME = "masks.tif"
TRAJECTORIES_CSV = "trajectories.csv"
#: `RunFolder.status` of a run left ``running`` by a process that is gone (killed, crashed, power cut).
INTERRUPTED = "interrupted"
#: run.json ``counts`` key -> the JSON-lines file it counts.
JSONL_COUNTS = {"events": "events.jsonl", "status_snapshots": "status.jsonl", "annotations": "annotations.jsonl",
                "edits": "edits.jsonl"}


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


def check_run_files(path: Path, manifest: Mapping[str, Any], status: str, closed: bool,
                    series_list: Sequence[Mapping[str, Any]]) -> RunCheck:
    """The `RunCheck` of the run folder at ``path`` (``status``, ``closed`` and ``series_list`` as `RunFolder`'s)."""
    raw_counts = manifest.get("counts")
    counts: Mapping[str, Any] = raw_counts if isinstance(raw_counts, Mapping) else {}
    disagreements: list[str] = []

    def agree(what: str, recorded: object, actual: int) -> None:
        if not isinstance(recorded, int):
            return
        if (closed and recorded != actual) or (not closed and recorded > actual):
            disagreements.append(f"run.json {what} = {recorded}, the files hold {actual}")

    rows: int | None = None
    cut = False
    csv_path = path / TRAJECTORIES_CSV
    if csv_path.is_file():
        data = csv_path.read_bytes()
        whole = whole_lines(data)
        rows, cut = max(whole.count(b"\n") - 1, 0), len(whole) < len(data)
        agree("counts.particle_rows", counts.get("particle_rows"), rows)
    mask_frames: tuple[int, ...] | None = None
    masks_path = path / MASKS_NAME
    if masks_path.is_file():
        mask_frames = tuple(complete_page_frames(masks_path))
        agree("counts.mask_pages", counts.get("mask_pages"), len(mask_frames))
        _later_series_pages(path, series_list, closed, disagreements)
        listed = manifest.get("mask_frames")
        if isinstance(listed, list) and all(isinstance(r, list) for r in listed):
            frames = expand_ranges(listed)
            if (closed and tuple(frames) != mask_frames) or frames != list(mask_frames[: len(frames)]):
                disagreements.append(f"run.json mask_frames ({len(frames)} frames) differ from the frames "
                                     f"of the {len(mask_frames)} pages of {MASKS_NAME}")
    if rows and not cut:
        disagreements += _row_disagreements(path, manifest, series_list, closed, rows)
    lines: dict[str, int] = {}
    for key, name in JSONL_COUNTS.items():
        if (path / name).is_file():
            lines[name] = whole_lines((path / name).read_bytes()).count(b"\n")
            agree(f"counts.{key}", counts.get(key), lines[name])
    reason = manifest.get("reason")
    if status == INTERRUPTED:
        reason = "the recording process stopped without closing the run (killed or crashed); " \
                 "the files hold what reached them, run.json an older snapshot"
    return RunCheck(status, reason if isinstance(reason, str) else None, rows, cut, mask_frames, lines,
                    tuple(disagreements))


def _later_series_pages(path: Path, series_list: Sequence[Mapping[str, Any]], closed: bool,
                        disagreements: list[str]) -> int:
    """Pages in the masks files of series 1, 2...; each must hold one page per frame of its range.

    Every series' file (the first's too) must also have that series' frame shape.
    """
    import tifffile  # a heavy import, needed only here

    total = 0
    for entry in series_list:
        name = entry.get("masks")
        if not isinstance(name, str) or not (path / name).is_file():
            continue
        frames = complete_page_frames(path / name)
        shape = entry.get("shape")
        if frames and isinstance(shape, list):
            with tifffile.TiffFile(path / name) as tif:
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


def _row_disagreements(path: Path, manifest: Mapping[str, Any], series_list: Sequence[Mapping[str, Any]],
                       closed: bool, rows: int) -> list[str]:
    """Rows must be unique by (series, frame, particle), within their series' frame range (closed runs)."""
    try:
        table = pd.read_csv(path / TRAJECTORIES_CSV)
    except (OSError, ValueError) as exc:
        return [f"{TRAJECTORIES_CSV} cannot be read ({exc})"]
    out: list[str] = []
    keys = [SERIES_COLUMN, "frame", "particle"] if SERIES_COLUMN in table.columns else ["frame", "particle"]
    duplicated = int(table.duplicated(keys).sum())
    if duplicated:
        out.append(f"{TRAJECTORIES_CSV}: {duplicated} duplicate ({', '.join(keys)}) rows")
    ranges = {e.get("series"): e.get("frames") for e in series_list}
    if closed and SERIES_COLUMN in table.columns and ranges:
        for number in table[SERIES_COLUMN].unique():
            group = table[table[SERIES_COLUMN] == number]
            frames = ranges.get(int(number))
            if not (isinstance(frames, list) and len(frames) == 2):
                out.append(f"{TRAJECTORIES_CSV}: rows of series {number}, which run.json does not list")
            elif group["frame"].min() < frames[0] or group["frame"].max() > frames[1]:
                out.append(f"{TRAJECTORIES_CSV}: rows of series {number} outside its frames {frames}")
    files = manifest.get("files")
    tracks = path / NAPARI_TRACKS
    if closed and isinstance(files, Mapping) and files.get("napari_tracks") and tracks.is_file():
        written = whole_lines(tracks.read_bytes()).count(b"\n") - 1
        if written != rows:
            out.append(f"{NAPARI_TRACKS} holds {written} rows, {TRAJECTORIES_CSV} {rows}")
    return out


def whole_lines(data: bytes) -> bytes:
    """``data`` up to and including its last newline (a last line cut mid-write left out)."""
    return data[: data.rfind(b"\n") + 1]
