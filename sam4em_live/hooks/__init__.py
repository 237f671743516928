"""Acquisition-control hooks: hook API, runner, events, safety gate, microscope adapters (docs/hooks.md)."""

from sam4em_live.hooks.api import ControlHook, HookContext, MicroscopeHandle
from sam4em_live.hooks.events import EventDetector
from sam4em_live.hooks.loading import load_hook
from sam4em_live.hooks.microscope import DryRunMicroscope, Microscope, SimulatedMicroscope
from sam4em_live.hooks.runner import HookRunner
from sam4em_live.hooks.safety import Command, CommandGate, CommandOutcome

__all__ = [
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
    "SimulatedMicroscope",
    "load_hook",
]
