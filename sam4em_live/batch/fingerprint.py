"""What a recording's result depends on, as one digest: a re-run skips a recording whose digest is unchanged.

Inputs are identified by path, size and modification time (not their content: hashing a months-long archive
on the client would cost as much as reading it); prompts files and replayed run folders, being small, by
content. The code version is the package version, the installed versions of what it computes with, and a
digest of the package's own source files (an editable install keeps its version number across edits).
"""

from __future__ import annotations

import functools
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sam4em_live.versions import package_versions

if TYPE_CHECKING:
    from sam4em_live.batch.inputs import Recording

PACKAGE_ROOT = Path(__file__).resolve().parents[1]


@functools.cache
def code_version() -> str:
    """The package version, its dependencies' versions and a digest of its source (computed once a process)."""
    digest = hashlib.sha256()
    for path in sorted(PACKAGE_ROOT.rglob("*.py")):
        digest.update(str(path.relative_to(PACKAGE_ROOT)).encode())
        digest.update(path.read_bytes())
    versions = package_versions()
    return f"{versions.get('sam4em-live', '0+unknown')}+src.{digest.hexdigest()[:12]}"


def _file_identity(path: Path) -> list[Any]:
    if path.is_dir():
        return [_file_identity(p) for p in sorted(path.rglob("*")) if p.is_file()]
    stat = path.stat()
    return [str(path.absolute()), stat.st_size, stat.st_mtime_ns]


def _content(path: Path) -> str:
    if path.is_dir():
        return hashlib.sha256(b"".join(_content(p).encode() for p in sorted(path.iterdir())
                                       if p.name in ("run.json", "edits.jsonl"))).hexdigest()
    return hashlib.sha256(path.read_bytes()).hexdigest()


def config_digest(settings: dict[str, Any]) -> str:
    """Digest of the batch settings that change results (backend, options, config file content)."""
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]


def fingerprint(recording: Recording, settings_digest: str, version: str) -> str:
    """The digest a finished recording is stored with (`batch.task`), compared on the next run."""
    try:
        inputs: Any = _file_identity(recording.path)
    except OSError as exc:  # missing now: the task reports it; the digest just never matches a finished one
        inputs = f"unreadable: {exc}"
    parts = {
        "inputs": inputs,
        "prompts": _content(recording.prompts) if recording.prompts and recording.prompts.exists() else None,
        "replay": _content(recording.replay) if recording.replay and recording.replay.exists() else None,
        "discover": recording.discover,
        "calibration": [recording.fps, recording.pixel_size_nm],
        "settings": settings_digest,
        "code": version,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()
