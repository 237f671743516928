"""The commands a hook can issue: one frozen record per command (`Command` is their union).

A hook issues them through ``ctx.microscope`` (`sam4em_live.hooks.api.MicroscopeHandle`)
or returns them; the `sam4em_live.hooks.safety.CommandGate` checks each one and
dispatches it by type to the microscope adapter. Each record's ``name`` is the
command's stable string: what ``safety.allowed_commands`` lists and what logs,
outcomes and counters show, so renaming a class never changes a config file or a log.

Stage moves are relative, in nanometres, along the image axes: +dx_nm shifts the
image content by -dx_nm / pixel_size_nm columns (likewise y, rows).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, TypeAlias

from sam4em_live.particles import Prompt


@dataclass(frozen=True, slots=True)
class MoveStage:
    """Move the stage by (dx_nm, dy_nm) relative to where it is, along the image axes."""

    name: ClassVar[str] = "move_stage"
    hardware: ClassVar[bool] = True
    dx_nm: float
    dy_nm: float


@dataclass(frozen=True, slots=True)
class BlankBeam:
    """Blank the electron beam (stop dosing the sample)."""

    name: ClassVar[str] = "blank_beam"
    hardware: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class UnblankBeam:
    """Unblank the electron beam."""

    name: ClassVar[str] = "unblank_beam"
    hardware: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class StartRecording:
    """Start the instrument's own recording."""

    name: ClassVar[str] = "start_recording"
    hardware: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class StopRecording:
    """Stop the instrument's own recording."""

    name: ClassVar[str] = "stop_recording"
    hardware: ClassVar[bool] = True


@dataclass(frozen=True, slots=True)
class AddPrompt:
    """Add a particle, or correct one, on the running service (a `Prompt`, frame pixels)."""

    name: ClassVar[str] = "add_prompt"
    hardware: ClassVar[bool] = False
    prompt: Prompt


@dataclass(frozen=True, slots=True)
class RemovePrompt:
    """Stop tracking a particle on the running service."""

    name: ClassVar[str] = "remove_prompt"
    hardware: ClassVar[bool] = False
    particle: int


@dataclass(frozen=True, slots=True)
class Annotate:
    """Write a note to the run's ``annotations.jsonl``."""

    name: ClassVar[str] = "annotate"
    hardware: ClassVar[bool] = False
    text: str


Command: TypeAlias = (
    MoveStage | BlankBeam | UnblankBeam | StartRecording | StopRecording | AddPrompt | RemovePrompt | Annotate
)
#: Every command record type (``isinstance(x, COMMAND_TYPES)`` tells a command from anything else).
COMMAND_TYPES: tuple[type[Command], ...] = (
    MoveStage, BlankBeam, UnblankBeam, StartRecording, StopRecording, AddPrompt, RemovePrompt, Annotate,
)
#: Commands that act on the instrument (the dry-run switch routes them to the dry-run adapter).
HARDWARE_COMMANDS = frozenset(c.name for c in COMMAND_TYPES if c.hardware)
#: Commands that act on the service (prompts, annotations); never dry-run.
SERVICE_COMMANDS = frozenset(c.name for c in COMMAND_TYPES if not c.hardware)
COMMAND_NAMES = HARDWARE_COMMANDS | SERVICE_COMMANDS
