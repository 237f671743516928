"""``edits.jsonl``: every edit of a run and what became of it, one JSON object per line (docs/recording.md).

The recorder appends one line per `EditRecord` as the frame that decided it is recorded, so the log and
``trajectories.csv`` always end at the same frame. A line::

    {"frame": 12, "origin": "monitor", "kind": "correction", "outcome": "applied", "checked": "backend",
     "reason": null, "quota": null, "edit": {"particle": 2, "frame": 12, "points": [[40.0, 31.5]],
     "labels": [1]}, "wall_time_s": 1765090000.12}

``edit`` is in the prompts-file format (`io.prompts_file.edit_to_json`), as decided: anchored to
``frame`` (an edit refused when it was submitted keeps the frame it asked for, or none), a box as
clipped to the frame.

`read_edits_log` reads it back (whole lines only: a last line cut by a crash is left out) and
`replay_plan` splits it into what a replay runs again and what it reports again as it was.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from typing import TYPE_CHECKING, Any, NamedTuple

from sam4em_live.io.prompts_file import edit_to_json, parse_edit
from sam4em_live.particles import (
    APPLIED,
    CHECKED_AT,
    EDIT_ORIGINS,
    REFUSED_BY_QUOTA,
    REJECTED,
    EditRecord,
    ParticleEdit,
    PromptError,
)

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

log = logging.getLogger(__name__)

EDITS_LOG = "edits.jsonl"
_KINDS = ("prompt", "correction", "removal")
_OUTCOMES = (APPLIED, REJECTED, REFUSED_BY_QUOTA)
#: Where an edit was decided for a replay to decide it again: it reached the pipeline at its frame, so the
#: same frames and the same edits decide it the same way. Earlier refusals depended on the moment.
RERUN_CHECKS = ("frame", "backend")


class EditsLogError(ValueError):
    """An edits log that cannot be read (the message names the file and the line)."""


def edit_log_entry(record: EditRecord, wall_time_s: float) -> dict[str, Any]:
    """The ``edits.jsonl`` line of ``record`` (JSON-able; key order as documented)."""
    return {"frame": record.frame, "origin": record.origin, "kind": record.kind, "outcome": record.outcome,
            "checked": record.checked, "reason": record.reason, "quota": record.quota,
            "edit": edit_to_json(record.edit), "wall_time_s": wall_time_s}


def parse_edit_log_entry(entry: Any, where: str = "edits.jsonl") -> EditRecord:
    """The `EditRecord` of one parsed line; raises `EditsLogError` naming ``where``."""
    if not isinstance(entry, dict):
        raise EditsLogError(f"{where}: not an object")
    try:
        frame, origin, kind = entry["frame"], entry["origin"], entry["kind"]
        outcome, checked = entry["outcome"], entry["checked"]
        edit: ParticleEdit = parse_edit(entry["edit"], where)
    except KeyError as exc:
        raise EditsLogError(f"{where}: missing key {exc.args[0]!r}") from None
    except PromptError as exc:
        raise EditsLogError(str(exc)) from None
    if not isinstance(frame, int) or isinstance(frame, bool) or frame < 0:
        raise EditsLogError(f"{where}: 'frame' must be an integer >= 0, got {frame!r}")
    for key, value, allowed in (("origin", origin, EDIT_ORIGINS), ("kind", kind, _KINDS),
                                ("outcome", outcome, _OUTCOMES), ("checked", checked, CHECKED_AT)):
        if value not in allowed:
            raise EditsLogError(f"{where}: '{key}' must be one of {list(allowed)}, got {value!r}")
    reason, quota = entry.get("reason"), entry.get("quota")
    if not all(value is None or isinstance(value, str) for value in (reason, quota)):
        raise EditsLogError(f"{where}: 'reason' and 'quota' must be text or null")
    return EditRecord(dataclasses.replace(edit, origin=origin), frame, kind, outcome, checked, reason, quota)


def read_edits_log(path: Path) -> list[EditRecord]:
    """The records of an ``edits.jsonl`` file, in order; a last line without its newline (cut) is left out."""
    data = path.read_bytes()
    whole, _, cut = data.rpartition(b"\n")
    if cut:
        log.warning("%s: the last line is incomplete (the run was interrupted while writing it); left out", path)
    records = []
    for number, line in enumerate(whole.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            raise EditsLogError(f"{path}: line {number}: not JSON ({exc})") from None
        records.append(parse_edit_log_entry(entry, f"{path.name}: line {number}"))
    return records


class ReplayPlan(NamedTuple):
    """A recorded run's edits split for a replay (`replay_plan`).

    ``edits`` run again, each anchored to the frame it was decided at (applied before that frame is
    segmented; those rejected there are rejected again); ``refusals`` are reported again as recorded.
    """

    edits: list[ParticleEdit]
    refusals: list[EditRecord]


def replay_plan(records: Sequence[EditRecord]) -> ReplayPlan:
    """Split ``records`` (in log order) into the edits to run again and the refusals to repeat."""
    edits: list[ParticleEdit] = []
    refusals: list[EditRecord] = []
    for record in records:
        if record.checked in RERUN_CHECKS:
            edits.append(record.edit.at_frame(record.frame))
        else:
            refusals.append(record)
    return ReplayPlan(edits, refusals)
