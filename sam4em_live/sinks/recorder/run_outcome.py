"""How a recording ends: the problems that make its files hold less than the run, and run.json's final status.

``complete`` unless something went wrong; ``incomplete`` (with the reasons) when the files hold less
than the run (the recording stopped, masks.tif stopped, results were lost); ``aborted`` when the service
itself ended in error (docs/recording.md, "Faults").
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sam4em_live.io.run_manifest import ABORTED, COMPLETE, INCOMPLETE

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sam4em_live.sinks.recorder.messages import RecorderCounts


class RunProblems:
    """Why the files hold less than the run, in the order they happened (run.json ``reason``)."""

    def __init__(self) -> None:
        self._problems: list[str] = []

    def add(self, problem: str, first: bool = False) -> None:
        """Note a problem; ``first`` puts it ahead of the others (the one that stopped the recording)."""
        if first:
            self._problems.insert(0, problem)
        else:
            self._problems.append(problem)

    def reason(self, counts: RecorderCounts) -> str | None:
        """run.json ``reason``: every problem, and the results the files lack; None when there is none."""
        problems = list(self._problems)
        lost = counts.results_lost + counts.results_after_stop
        if lost:
            problems.append(f"{lost} results or notes not recorded")
        return "; ".join(problems) or None

    def final_status(self, latest_status: Mapping[str, Any] | None, counts: RecorderCounts) -> tuple[str, str | None]:
        """run.json's closing ``status`` and ``reason`` (module docstring)."""
        latest = latest_status or {}
        error = latest.get("error") or ("the service ended in error" if latest.get("state") == "errored" else None)
        reason = self.reason(counts)
        if error:
            return ABORTED, f"service error: {error}" + (f"; {reason}" if reason else "")
        return (INCOMPLETE, reason) if reason else (COMPLETE, None)
