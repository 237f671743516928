"""``run.json``: what a recorded run is, written atomically (see docs/recording.md).

The manifest is rewritten whole (temporary file + ``os.replace``) so a reader
never sees half a file: after a crash it holds the last complete snapshot,
with ``"status": "running"`` telling that the run did not close cleanly (and
``writer`` naming the process, so a reader can tell a live run from a dead one).
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import json
import math
import os
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sam4em_live.versions import package_versions

if TYPE_CHECKING:
    from sam4em_live.results import RunInfo

MANIFEST_FORMAT = "sam4em-live run"
MANIFEST_VERSION = 1
RANDOM_WEIGHTS_WARNING = "random weights — outputs are not segmentation"

#: ``status`` values: the run is being written (or its process died: see ``writer``); every result reached
#: the files; the files stop early (``reason`` says why); the service ended in error.
RUNNING, COMPLETE, INCOMPLETE, ABORTED = "running", "complete", "incomplete", "aborted"

#: Status fields copied from the latest service status into ``counts``.
STATUS_COUNTS = (
    "frames_received", "frames_processed", "frames_dropped", "frames_spilled", "frames_gap",
    "messages_rejected", "rejected_by_reason", "segmentation_errors", "sink_errors",
)


def utc_now() -> str:
    """The current UTC time in ISO 8601 with milliseconds (``2026-01-01T12:00:00.123+00:00``)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


def jsonable(value: Any) -> Any:
    """A strict-JSON copy of ``value``: numpy scalars unwrapped, NaN/inf -> None, paths -> str."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, np.generic):
        return jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, enum.Enum):
        return jsonable(value.value)
    if isinstance(value, Path):
        return str(value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return jsonable(dataclasses.asdict(value))
    if value is None or isinstance(value, (str, int, bool)):
        return value
    return str(value)


def json_line(value: Any) -> str:
    """``value`` as one strict-JSON line (newline included), for the JSON-lines files."""
    return json.dumps(jsonable(value), allow_nan=False, ensure_ascii=False) + "\n"


class FrameRanges:
    """Frame indices kept as inclusive ranges ``[[first, last], ...]`` in append order."""

    def __init__(self) -> None:
        self.ranges: list[list[int]] = []

    def append(self, index: int) -> None:
        if self.ranges and index == self.ranges[-1][1] + 1:
            self.ranges[-1][1] = index
        else:
            self.ranges.append([index, index])

    def __len__(self) -> int:
        return sum(last - first + 1 for first, last in self.ranges)

    @classmethod
    def of(cls, frames: Iterable[int]) -> FrameRanges:
        ranges = cls()
        for index in frames:
            ranges.append(index)
        return ranges

    def prefix(self, n: int) -> FrameRanges:
        """The first ``n`` frames (all of them if there are fewer)."""
        out = FrameRanges()
        for first, last in self.ranges:
            if n <= 0:
                break
            take = min(last - first + 1, n)
            out.ranges.append([first, first + take - 1])
            n -= take
        return out


def expand_ranges(ranges: Iterable[Iterable[int]]) -> list[int]:
    """Frame indices from ``mask_frames`` ranges (page ``k`` of masks.tif is frame ``result[k]``)."""
    out: list[int] = []
    for first, last in ranges:
        out.extend(range(first, last + 1))
    return out


def write_json_atomic(path: Path, data: Any) -> int:
    """Replace ``path`` by ``data`` as strict JSON (temporary file, fsync, ``os.replace``): never half a file.

    The temporary file is hidden (``.run.json.tmp``) and removed if the write fails, so a refused write
    (disk full) leaves the previous file as it was and nothing else. Returns the bytes written.
    """
    text = json.dumps(jsonable(data), indent=2, allow_nan=False, ensure_ascii=False) + "\n"
    encoded = text.encode("utf-8")
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as fh:
            fh.write(encoded)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return len(encoded)


def writer_identity() -> dict[str, Any]:
    """``run.json`` ``writer``: the process writing the run (a reader on the same host can see if it lives)."""
    return {"pid": os.getpid(), "host": socket.gethostname()}


#: Config keys that hold a file or folder (besides any ``*_dir`` / ``*_path`` key): `provenance` lists them
#: resolved, so a run can be found again from anywhere.
PATH_KEYS = frozenset({"path", "prompts", "checkpoint"})


def provenance(run: RunInfo) -> dict[str, Any]:
    """``run.json`` ``provenance``: what it takes to run this again (docs/recording.md).

    ``inputs``: every path in the config, absolute (resolved against this process's working folder, the
    one the run used); ``model``: the backend, its model and checkpoint (absolute path, size, time);
    ``backend_options``: the backend's options as it runs with them (its own defaults filled in);
    ``seeds``: every seed in the config and the backend's.
    """
    backend = run.backend
    options = backend.get("options")
    if not isinstance(options, Mapping):
        segmenter = run.config.get("segmenter")
        options = segmenter.get("options", {}) if isinstance(segmenter, Mapping) else {}
    seeds = {key: value for key, value in _leaves(run.config) if key.rsplit(".", 1)[-1].endswith("seed")}
    if backend.get("seed") is not None:
        seeds["backend.seed"] = backend["seed"]
    return {
        "inputs": {key: _absolute(value) for key, value in _leaves(run.config)
                   if _is_path_key(key) and isinstance(value, str) and value},
        "model": {"backend": backend.get("backend"), "model": backend.get("model"),
                  "checkpoint": _file_identity(backend.get("checkpoint"))},
        "backend_options": dict(options),
        "seeds": seeds,
    }


def _leaves(tree: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    """(dotted key, value) of every leaf of a nested mapping."""
    for key, value in tree.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, Mapping):
            yield from _leaves(value, dotted + ".")
        else:
            yield dotted, value


def _is_path_key(dotted: str) -> bool:
    name = dotted.rsplit(".", 1)[-1]
    return name in PATH_KEYS or name.endswith(("_dir", "_path"))


def _absolute(value: str) -> str:
    return str(Path(value).expanduser().absolute())


def _file_identity(path: Any) -> dict[str, Any] | None:
    """A checkpoint's absolute path, size and modification time (no hash: it may be gigabytes)."""
    if not isinstance(path, str) or not path:
        return None
    resolved = Path(path).expanduser().absolute()
    try:
        stat = resolved.stat()
    except OSError:
        return {"path": str(resolved), "bytes": None, "modified_utc": None}
    modified = _dt.datetime.fromtimestamp(stat.st_mtime, _dt.UTC).isoformat(timespec="seconds")
    return {"path": str(resolved), "bytes": stat.st_size, "modified_utc": modified}


def build_manifest(
    run: RunInfo,
    status: str,
    created_utc: str,
    files: Mapping[str, str | None],
    columns: list[str],
    counters: Mapping[str, Any],
    mask_frames: FrameRanges,
    latest_status: Mapping[str, Any] | None,
    closed_utc: str | None = None,
    reason: str | None = None,
    stopped: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``run.json`` document (field meanings in docs/recording.md).

    ``reason`` says why the status is not ``complete`` (None when it is, or while running without a
    problem); ``stopped`` describes a recording that stopped early (file, error, last frame written).
    """
    manifest: dict[str, Any] = {"format": MANIFEST_FORMAT, "format_version": MANIFEST_VERSION}
    if run.backend.get("random_weights") is True:
        manifest["WARNING"] = RANDOM_WEIGHTS_WARNING
    series = run.series
    latest = dict(latest_status or {})
    manifest.update({
        "run_id": run.run_id,
        "status": status,
        "reason": reason,
        "recording_stopped": dict(stopped) if stopped else None,
        "created_utc": created_utc,
        "updated_utc": utc_now(),
        "closed_utc": closed_utc,
        "writer": writer_identity(),
        "series": {
            "series_id": series.series_id, "shape": list(series.shape), "dtype": series.dtype,
            "calibration": series.calibration.as_dict(), "metadata": dict(series.metadata),
        },
        # where t_s comes from (frames.TimeBase) and its unit; "frames": t_s is empty, time counts frames
        "time_base": run.time_base.value, "time_unit": run.time_base.unit, "live": run.live,
        "backend": dict(run.backend),
        "config": dict(run.config),
        "provenance": provenance(run),
        "versions": {**package_versions(), **run.versions},
        "files": dict(files),
        "trajectory_columns": columns,
        "counts": {**{k: latest[k] for k in STATUS_COUNTS if k in latest}, **counters},
        "mask_frames": mask_frames.ranges,
        "mask_frames_encoding": "inclusive [first, last] frame-index ranges; page k of masks.tif "
                                "is the k-th frame listed",
        "last_status": latest or None,
    })
    return manifest
