"""Acquisition-control hooks: hook API, runner, events, safety gate, microscope adapters (docs/hooks.md)."""

from sam4em_live.hooks.api import ControlHook, HookContext, MicroscopeHandle
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
from sam4em_live.hooks.events import EventDetector
from sam4em_live.hooks.loading import load_hook
from sam4em_live.hooks.microscope import DryRunMicroscope, Microscope, SimulatedMicroscope
from sam4em_live.hooks.runner import HookRunner
from sam4em_live.hooks.safety import CommandGate, CommandOutcome

__all__ = [
    "AddPrompt",
    "Annotate",
    "BlankBeam",
    "Command",
    "CommandGate",
    "CommandOutcome",
    "ControlHook",
    "DryRunMicroscope",
    "EventDetector",
    "HookContext",
    "HookRunner",
    "Microscope",
    "MicroscopeHandle",
    "MoveStage",
    "RemovePrompt",
    "SimulatedMicroscope",
    "StartRecording",
    "StopRecording",
    "UnblankBeam",
    "load_hook",
]
