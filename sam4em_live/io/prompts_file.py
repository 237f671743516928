"""Read and write prompts files (JSON).

Format::

    {"prompts": [
        {"frame": 0, "particle": 1, "points": [[x, y]], "labels": [1]},
        {"frame": 0, "particle": 2, "box": [x0, y0, x1, y1]},
        {"frame": 40, "particle": 2, "remove": true}
    ]}

Pixel coordinates, x = column, y = row. Points and box may be combined.
``labels`` defaults to all-positive when omitted. Edits loaded from a file have ``origin = "file"``
(the run's edits log says so); the origin itself is not part of the format.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sam4em_live.particles import ParticleEdit, Prompt, PromptError, RemoveParticle, validate_edit

if TYPE_CHECKING:
    from collections.abc import Sequence

_KEYS = {"frame", "particle", "points", "labels", "box", "remove"}


def parse_edit(entry: Any, where: str = "prompt") -> ParticleEdit:
    """Turn one JSON-like mapping into a `Prompt` or `RemoveParticle`, or raise `PromptError`."""
    if not isinstance(entry, dict):
        raise PromptError(f"{where}: must be an object, got {type(entry).__name__}")
    unknown = set(entry) - _KEYS
    if unknown:
        raise PromptError(f"{where}: unknown key(s) {sorted(unknown)}; allowed {sorted(_KEYS)}")
    try:
        particle = entry["particle"]
        frame = entry.get("frame")
        if not isinstance(particle, int) or isinstance(particle, bool):
            raise PromptError(f"{where}: 'particle' must be an integer")
        if frame is not None and (not isinstance(frame, int) or isinstance(frame, bool)):
            raise PromptError(f"{where}: 'frame' must be an integer")
        if entry.get("remove"):
            if any(k in entry for k in ("points", "labels", "box")):
                raise PromptError(f"{where}: 'remove' cannot be combined with points or box")
            return RemoveParticle(particle, frame)
        points = tuple((float(p[0]), float(p[1])) for p in entry.get("points", []) if _is_pair(p, where))
        labels = tuple(int(v) for v in entry.get("labels", [1] * len(points)))
        box_raw = entry.get("box")
        box = None
        if box_raw is not None:
            if not isinstance(box_raw, (list, tuple)) or len(box_raw) != 4:
                raise PromptError(f"{where}: 'box' must be [x0, y0, x1, y1]")
            x0, y0, x1, y1 = (float(v) for v in box_raw)
            box = (x0, y0, x1, y1)
        return Prompt(particle, frame, points, labels, box)
    except KeyError as exc:
        raise PromptError(f"{where}: missing key {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        if isinstance(exc, PromptError):
            raise
        raise PromptError(f"{where}: {exc}") from None


def _is_pair(p: Any, where: str) -> bool:
    if not isinstance(p, (list, tuple)) or len(p) != 2:
        raise PromptError(f"{where}: each point must be [x, y], got {p!r}")
    return True


def load_prompts(path: str | Path, shape: tuple[int, int] | None = None) -> list[ParticleEdit]:
    """Load a prompts file. With ``shape`` given, every entry is validated against it.

    Errors name the entry (``prompts[3]``) and the file.
    """
    path = Path(path)
    if not path.is_file():
        raise PromptError(f"prompts file not found: {path}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise PromptError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("prompts"), list):
        raise PromptError(f"{path}: expected an object with a 'prompts' list")
    edits: list[ParticleEdit] = []
    for i, entry in enumerate(data["prompts"]):
        where = f"{path.name}: prompts[{i}]"
        edit = dataclasses.replace(parse_edit(entry, where), origin="file")
        if edit.frame is None:
            raise PromptError(f"{where}: 'frame' is required in a prompts file")
        if shape is not None:
            try:
                validate_edit(edit, shape)
            except PromptError as exc:
                raise PromptError(f"{where}: {exc}") from None
        edits.append(edit)
    return edits


def edit_to_json(edit: ParticleEdit) -> dict[str, Any]:
    """Inverse of `parse_edit` (JSON-able dict)."""
    out: dict[str, Any] = {"particle": edit.particle}
    if edit.frame is not None:
        out["frame"] = edit.frame
    if isinstance(edit, RemoveParticle):
        out["remove"] = True
        return out
    if edit.points:
        out["points"] = [list(p) for p in edit.points]
        out["labels"] = list(edit.labels)
    if edit.box is not None:
        out["box"] = list(edit.box)
    return out


def save_prompts(path: str | Path, edits: Sequence[ParticleEdit]) -> None:
    """Write ``edits`` as a prompts file that `load_prompts` reads back."""
    Path(path).write_text(json.dumps({"prompts": [edit_to_json(e) for e in edits]}, indent=2) + "\n")
