"""Is a run folder readable, and does ``run.json`` say what its files hold? (docs/recording.md)

The checks a user's analysis would trip over, made with the libraries users read the files with:

- every file parses: ``run.json`` with `json`, ``trajectories.csv`` with `pandas.read_csv` (a merged or cut
  line raises or leaves NaN in ``frame``/``particle``), every page of ``masks.tif`` with `tifffile`, every line
  of the ``*.jsonl`` files with `json`; text files end with a newline (whole lines or nothing);
- ``run.json`` agrees with the files: ``counts.particle_rows`` = CSV rows, ``counts.mask_pages`` = pages =
  frames listed by ``mask_frames`` (and each page's ``{"frame": n}`` description is the frame listed),
  ``counts.events`` / ``status_snapshots`` / ``annotations`` = lines; no duplicate (frame, particle) row.

A run whose ``status`` is still ``running`` after its process ended was not closed: its counts are an older
snapshot, so they are checked as lower bounds and the folder is reported ``closed: false``.

The package has its own reconciler (`sam4em_live.io.run_folder.RunFolder.check`, what users call); it is run
too and reported beside these checks (``package_check``), which deliberately read the files with pandas,
tifffile and json instead of the code under test.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CLOSED_STATUSES = ("complete", "incomplete", "aborted")
_JSONL_COUNTS = {"events.jsonl": "events", "status.jsonl": "status_snapshots", "annotations.jsonl": "annotations"}


def check_run_folder(path: Path) -> dict[str, Any]:
    """Check the run folder at ``path``; ``ok`` is True when every file parses and agrees with run.json."""
    problems: list[str] = []
    notes: list[str] = []
    files: dict[str, Any] = {}
    manifest = _read_manifest(path / "run.json", problems)
    counts = manifest.get("counts") or {} if manifest else {}
    status = manifest.get("status") if manifest else None
    closed = status in CLOSED_STATUSES

    def agree(what: str, recorded: Any, actual: int) -> None:
        if recorded is None:
            return
        if closed and recorded != actual:
            problems.append(f"run.json {what} = {recorded} but the files hold {actual}")
        elif not closed and isinstance(recorded, int) and recorded > actual:
            problems.append(f"run.json {what} = {recorded} (unclosed snapshot) exceeds the {actual} in the files")

    table = path / "trajectories.csv"
    if table.exists():
        files["trajectories.csv"] = rows = _check_csv(table, problems, notes)
        if rows is not None:
            agree("counts.particle_rows", counts.get("particle_rows"), rows)
    masks = path / "masks.tif"
    if masks.exists():
        files["masks.tif"] = pages = _check_masks(masks, manifest, problems)
        if pages is not None:
            agree("counts.mask_pages", counts.get("mask_pages"), pages)
    elif manifest and (manifest.get("files") or {}).get("masks"):
        problems.append("run.json lists masks.tif but there is none")
    for name, key in _JSONL_COUNTS.items():
        if (path / name).exists():
            files[name] = lines = _check_jsonl(path / name, problems)
            if lines is not None:
                agree(f"counts.{key}", counts.get(key), lines)
    package_check = _check_with_package_reader(path, closed, problems, notes)
    leftovers = sorted(p.name for p in path.iterdir() if p.name.endswith(".tmp"))
    if leftovers:
        files["leftover_tmp"] = leftovers
    return {
        "path": str(path), "ok": not problems and closed, "parse_ok": not any(p.startswith("cannot") for p in problems),
        "status": status, "closed": closed, "reason": manifest.get("reason") if manifest else None,
        "files": files, "problems": problems, "notes": notes, "package_check": package_check,
    }


def _check_with_package_reader(path: Path, closed: bool, problems: list[str], notes: list[str]) -> dict[str, Any]:
    """Open the folder as analysis and evaluation do (`sam4em_live.io.run_folder.RunFolder`), and its own check.

    Returns what `RunFolder.check` says (its status: ``interrupted`` for a dead writer; its disagreements),
    reported beside this module's own checks, which read the files with the users' libraries instead.
    """
    from sam4em_live.io.run_folder import RunFolder

    folder = RunFolder.open(path)
    for what, read in (("trajectories", folder.trajectories), ("mask pages", folder.mask_pages)):
        try:
            read()
        except FileNotFoundError:
            continue
        except Exception as exc:  # whatever it raises, analysis of this folder fails
            message = f"RunFolder.{what}: {type(exc).__name__}: {str(exc)[:200]}"
            # An unclosed run's manifest is an older snapshot: a mismatch there is expected, not a defect.
            (problems if closed else notes).append(f"cannot read with sam4em_live's reader: {message}")
    check = getattr(folder, "check", None)
    if check is None:
        return {}
    try:
        result = check()
    except Exception as exc:  # the package's checker failing is itself a finding
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"status": result.status, "reason": result.reason, "cut_line": result.cut_line,
            "disagreements": list(result.disagreements)}


def _read_manifest(path: Path, problems: list[str]) -> dict[str, Any]:
    if not path.exists():
        problems.append("cannot read run.json: missing")
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        problems.append(f"cannot parse run.json: {type(exc).__name__}: {exc}")
        return {}
    if not isinstance(data, dict):
        problems.append("cannot use run.json: not a JSON object")
        return {}
    return data


def _ends_with_newline(path: Path, problems: list[str]) -> None:
    size = path.stat().st_size
    if size:
        with open(path, "rb") as fh:
            fh.seek(size - 1)
            if fh.read(1) != b"\n":
                problems.append(f"{path.name}: last line cut (no final newline)")


def _check_csv(path: Path, problems: list[str], notes: list[str]) -> int | None:
    import pandas as pd

    try:
        table = pd.read_csv(path)
    except Exception as exc:  # whatever pandas raises, the user cannot read the file
        problems.append(f"cannot parse trajectories.csv with pandas: {type(exc).__name__}: {str(exc)[:200]}")
        return None
    _ends_with_newline(path, problems)
    for column in ("frame", "particle"):
        if column in table and table[column].isna().any():
            problems.append(f"trajectories.csv: {int(table[column].isna().sum())} rows without {column}")
    if {"frame", "particle"} <= set(table.columns):
        duplicated = int(table.duplicated(["frame", "particle"]).sum())
        if duplicated:  # legitimate when a series restarts its indices within one run; noted, not failed
            notes.append(f"trajectories.csv: {duplicated} duplicate (frame, particle) rows")
    return len(table)


def _check_masks(path: Path, manifest: dict[str, Any], problems: list[str]) -> int | None:
    import tifffile

    from sam4em_live.io.label_stack_layout import page_frame
    from sam4em_live.io.run_manifest import expand_ranges

    page_frames: list[int | None] = []
    try:
        with tifffile.TiffFile(path) as tif:
            for page in tif.pages:
                page.asarray()
                try:
                    page_frames.append(page_frame(page.description))  # type: ignore[arg-type]
                except (ValueError, KeyError, TypeError):
                    page_frames.append(None)
    except Exception as exc:  # tifffile raises many types on a broken file
        problems.append(f"cannot read masks.tif with tifffile (page {len(page_frames)}): "
                        f"{type(exc).__name__}: {str(exc)[:200]}")
        return None
    ranges = manifest.get("mask_frames") if manifest else None
    if isinstance(ranges, list):
        try:
            listed = expand_ranges(ranges)
        except (TypeError, ValueError) as exc:
            problems.append(f"cannot read run.json mask_frames: {exc}")
            return len(page_frames)
        closed = manifest.get("status") in CLOSED_STATUSES
        if closed and len(listed) != len(page_frames):
            problems.append(f"run.json mask_frames lists {len(listed)} frames but masks.tif has {len(page_frames)} pages")
        elif len(listed) > len(page_frames):
            problems.append(f"run.json mask_frames lists {len(listed)} frames (unclosed snapshot) but masks.tif "
                            f"has only {len(page_frames)} pages")
        shared = min(len(listed), len(page_frames))
        wrong = sum(1 for a, b in zip(listed[:shared], page_frames[:shared], strict=True) if b is not None and a != b)
        if wrong:
            problems.append(f"masks.tif: {wrong} pages whose frame differs from run.json mask_frames")
    return len(page_frames)


def _check_jsonl(path: Path, problems: list[str]) -> int | None:
    lines = 0
    try:
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                if line.strip():
                    json.loads(line)
                    lines += 1
    except (OSError, ValueError) as exc:
        problems.append(f"cannot parse {path.name} line {lines + 1}: {type(exc).__name__}: {str(exc)[:120]}")
        return None
    _ends_with_newline(path, problems)
    return lines


def summarize(checks: list[dict[str, Any]]) -> dict[str, Any]:
    """Totals over several folder checks (for a case's report)."""
    return {
        "folders": len(checks),
        "unreadable_files": sum(1 for c in checks for p in c["problems"] if p.startswith("cannot")),
        "disagreements": sum(1 for c in checks for p in c["problems"] if not p.startswith("cannot")),
        "not_closed": sum(1 for c in checks if not c["closed"]),
        "statuses": sorted({str(c["status"]) for c in checks}),
    }
