"""The command gate: every hook command passes the configured safety limits.

A command (a record from `sam4em_live.hooks.commands`) is refused (logged,
counted, reported back to the hook as a `CommandOutcome`) when its ``name`` is
not in ``allowed_commands``, when a stage step is
larger than ``max_stage_step_nm`` or not finite, or when it comes sooner than
``1 / max_stage_moves_per_s`` after the previous accepted stage move. Refused
moves are never clipped: a hook that wants a smaller step must ask for one.
With ``dry_run`` on, hardware commands go to a `DryRunMicroscope` whatever the
configured adapter. Accepted commands are dispatched by type (`send`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, assert_never

from sam4em_live.config import SafetyConfig
from sam4em_live.hooks.commands import (
    COMMAND_NAMES,
    COMMAND_TYPES,
    AddPrompt,
    Annotate,
    BlankBeam,
    Command,
    MoveStage,
    RemovePrompt,
    StartRecording,
    StopRecording,
    UnblankBeam,
)
from sam4em_live.hooks.microscope import DryRunMicroscope, Microscope
from sam4em_live.particles import Prompt

if TYPE_CHECKING:
    from collections.abc import Callable

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CommandOutcome:
    """What became of a command. ``status``: done | dry_run | refused | failed; ``reason`` says why not done."""

    command: Command
    status: str
    reason: str | None = None
    hook: str | None = None
    time_s: float = 0.0

    @property
    def accepted(self) -> bool:
        return self.status in ("done", "dry_run")


class CommandGate:
    """Checks limits, then runs the command on the adapter. Thread-safe (one command at a time)."""

    def __init__(
        self,
        microscope: Microscope,
        limits: SafetyConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.microscope = microscope
        self.limits = limits or SafetyConfig()
        unknown = set(self.limits.allowed_commands) - COMMAND_NAMES
        if unknown:
            raise ValueError(f"safety.allowed_commands: unknown commands {sorted(unknown)}; known: {sorted(COMMAND_NAMES)}")
        self.dry_run_microscope = DryRunMicroscope(getattr(microscope, "control", None))
        self._clock = clock
        self._lock = threading.Lock()
        self._last_move: float | None = None
        self.counts: dict[str, int] = {"done": 0, "dry_run": 0, "refused": 0, "failed": 0}
        self.recent: deque[CommandOutcome] = deque(maxlen=100)

    def submit(self, command: Command, hook: str | None = None) -> CommandOutcome:
        with self._lock:
            now = self._clock()
            reason = self._refusal(command, now)
            if reason is not None:
                outcome = CommandOutcome(command, "refused", reason, hook, time.time())
                logger.warning("command %s from hook %s refused: %s", command_name(command), hook, reason)
            else:
                outcome = self._execute(command, hook, now)
            self.counts[outcome.status] += 1
            self.recent.append(outcome)
            return outcome

    def _refusal(self, command: Command, now: float) -> str | None:
        limits = self.limits
        # Hooks are user code and Python does not enforce annotations: check the type, and the
        # argument types of the commands whose arguments reach hardware or the service.
        if not isinstance(command, COMMAND_TYPES):
            return f"unknown command {command_name(command)!r}"
        if command.name not in limits.allowed_commands:
            return f"{command.name} is not in safety.allowed_commands"
        if isinstance(command, MoveStage):
            dx, dy = command.dx_nm, command.dy_nm
            if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (dx, dy)):
                return f"stage step must be finite numbers in nm, got ({dx}, {dy})"
            step = math.hypot(dx, dy)
            if step > limits.max_stage_step_nm:
                return f"stage step {step:.1f} nm exceeds safety.max_stage_step_nm = {limits.max_stage_step_nm}"
            min_interval = 1.0 / limits.max_stage_moves_per_s
            if self._last_move is not None and now - self._last_move < min_interval:
                return (f"stage moves limited to {limits.max_stage_moves_per_s}/s "
                        f"(last accepted {now - self._last_move:.3f} s ago)")
        if isinstance(command, AddPrompt) and not isinstance(command.prompt, Prompt):
            return "add_prompt needs a Prompt"
        return None

    def _execute(self, command: Command, hook: str | None, now: float) -> CommandOutcome:
        dry = self.limits.dry_run and command.hardware
        target = self.dry_run_microscope if dry else self.microscope
        try:
            send(command, target)
        except Exception as exc:  # an adapter failure is reported to the hook, never raised into it
            logger.exception("command %s from hook %s failed", command.name, hook)
            return CommandOutcome(command, "failed", f"{type(exc).__name__}: {exc}", hook, time.time())
        if isinstance(command, MoveStage):
            self._last_move = now
        return CommandOutcome(command, "dry_run" if dry else "done", None, hook, time.time())

    def describe(self) -> dict[str, Any]:
        return {"microscope": self.microscope.describe(), "dry_run": self.limits.dry_run, "counts": dict(self.counts)}


def send(command: Command, microscope: Microscope) -> None:
    """Run one command on an adapter: the one place a command record becomes an adapter call."""
    match command:
        case MoveStage(dx_nm=dx_nm, dy_nm=dy_nm):
            microscope.move_stage(dx_nm, dy_nm)
        case BlankBeam():
            microscope.blank_beam()
        case UnblankBeam():
            microscope.unblank_beam()
        case StartRecording():
            microscope.start_recording()
        case StopRecording():
            microscope.stop_recording()
        case AddPrompt(prompt=prompt):
            microscope.add_prompt(prompt)
        case RemovePrompt(particle=particle):
            microscope.remove_prompt(particle)
        case Annotate(text=text):
            microscope.annotate(text)
        case _:
            assert_never(command)


def command_name(command: object) -> str:
    """The command's stable name for logs (the type's name for something that is not a command)."""
    name = getattr(command, "name", None)
    return name if isinstance(name, str) else type(command).__name__
