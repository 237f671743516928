"""The hook API: what a user hook implements and the one context object it receives.

A hook is any class with some of these methods (all optional)::

    class MyHook:
        def __init__(self, options): ...     # options: the hook's own `Options` model, if it has one
        def on_start(self, ctx): ...         # once, when the run opens
        def on_result(self, ctx): ...        # per frame (slow hooks get the latest; ctx.coalesced counts skips)
        def on_event(self, ctx): ...         # per ServiceEvent (ctx.event)
        def on_stop(self, ctx): ...          # once, at teardown

Each method gets one frozen `HookContext`; new fields may be added later, so
hooks read the fields they need by name. Commands go through
``ctx.microscope`` (a `MicroscopeHandle`), which checks the safety limits and
returns a `CommandOutcome`; outcomes are also listed in the next context's
``outcomes``. A method may instead return a `Command` (a record from
`sam4em_live.hooks.commands`, e.g. ``MoveStage(dx_nm, dy_nm)``) or a list of them.
Hooks run on their own thread, never on the pipeline thread.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol

from sam4em_live.frames import Calibration
from sam4em_live.hooks.commands import (
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

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sam4em_live.hooks.safety import CommandGate, CommandOutcome
    from sam4em_live.particles import ParticleMeasurement, Prompt
    from sam4em_live.results import ParticleStatistics, ServiceEvent

_EMPTY: Mapping[Any, Any] = MappingProxyType({})


class ControlHook(Protocol):
    """Documentation of the hook seam; every method is optional (looked up by name).

    Called on the hook's own thread, in order: ``on_start`` once, then
    ``on_event``/``on_result`` as results arrive, ``on_stop`` once at teardown.
    Exceptions are logged with their traceback and counted; the stream goes on.
    A call that runs longer than ``hooks.hang_timeout_s`` is reported as hung.
    """

    def on_start(self, ctx: HookContext) -> Any: ...

    def on_result(self, ctx: HookContext) -> Any: ...

    def on_event(self, ctx: HookContext) -> Any: ...

    def on_stop(self, ctx: HookContext) -> Any: ...


class MicroscopeHandle:
    """A hook's way to command the microscope; every call passes the `CommandGate`.

    Methods return the `CommandOutcome` at once (``outcome.accepted`` False when
    refused or failed). Stage moves are relative, in nm, along the image axes:
    +dx_nm shifts the image content by -dx_nm / pixel_size_nm columns.
    """

    def __init__(self, gate: CommandGate, hook: str) -> None:
        self._gate = gate
        self._hook = hook
        self._pending: list[CommandOutcome] = []

    def submit(self, command: Command) -> CommandOutcome:
        outcome = self._gate.submit(command, self._hook)
        self._pending.append(outcome)
        return outcome

    def move_stage(self, dx_nm: float, dy_nm: float) -> CommandOutcome:
        return self.submit(MoveStage(dx_nm, dy_nm))

    def blank_beam(self) -> CommandOutcome:
        return self.submit(BlankBeam())

    def unblank_beam(self) -> CommandOutcome:
        return self.submit(UnblankBeam())

    def start_recording(self) -> CommandOutcome:
        return self.submit(StartRecording())

    def stop_recording(self) -> CommandOutcome:
        return self.submit(StopRecording())

    def add_prompt(self, prompt: Prompt) -> CommandOutcome:
        return self.submit(AddPrompt(prompt))

    def remove_prompt(self, particle: int) -> CommandOutcome:
        return self.submit(RemovePrompt(particle))

    def annotate(self, text: str) -> CommandOutcome:
        return self.submit(Annotate(text))

    def take_outcomes(self) -> tuple[CommandOutcome, ...]:
        """Outcomes since the last call (the runner puts them in the next context)."""
        taken, self._pending = tuple(self._pending), []
        return taken


@dataclass(frozen=True, slots=True)
class HookContext:
    """Everything a hook may look at, frozen.

    Attributes
    ----------
    kind : "start" | "result" | "event" | "stop"
    run_id : the run's id (None before a run opened)
    frame_index, timestamp_s : the frame this context describes (acquisition wall time, s)
    shape : (rows, columns) of the frame, pixels
    calibration : pixel_size_nm / fps of the series (fields may be None: unknown)
    measurements : one `ParticleMeasurement` per tracked particle (x = column, y = row, px)
    stats : latest `ParticleStatistics` per particle id (from the statistics stage; read its attributes)
    events : the frame's `ServiceEvent`s; ``event`` is the one an ``on_event`` call is about
    status : latest service status snapshot (``StatusSnapshot.as_dict()``)
    coalesced : results skipped for this hook since its previous ``on_result`` (it was busy)
    outcomes : outcomes of the commands this hook issued since its previous call
    microscope : the hook's `MicroscopeHandle` (None in contexts built outside a runner)
    """

    kind: str
    run_id: str | None = None
    frame_index: int | None = None
    timestamp_s: float | None = None
    shape: tuple[int, int] | None = None
    calibration: Calibration = field(default_factory=Calibration)
    measurements: tuple[ParticleMeasurement, ...] = ()
    stats: Mapping[int, ParticleStatistics] = field(default_factory=lambda: _EMPTY)
    events: tuple[ServiceEvent, ...] = ()
    event: ServiceEvent | None = None
    status: Mapping[str, Any] = field(default_factory=lambda: _EMPTY)
    coalesced: int = 0
    outcomes: tuple[CommandOutcome, ...] = ()
    microscope: MicroscopeHandle | None = None

    @property
    def present(self) -> tuple[ParticleMeasurement, ...]:
        """Measurements of particles found on this frame (finite centroid)."""
        return tuple(m for m in self.measurements if m.present and math.isfinite(m.x) and math.isfinite(m.y))

    def particle(self, particle: int) -> ParticleMeasurement | None:
        return next((m for m in self.measurements if m.particle == particle), None)
