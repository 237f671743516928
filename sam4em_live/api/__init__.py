"""The Python API: track, analyze and simulate from a notebook, a script or an interpreter.

Everything here is re-exported by the package (``import sam4em_live as s4; s4.track(...)``); see
docs/python_api.md. Each function runs the same code as its command (``sam4em-live track``,
``analyze``, ``simulate``); none has a pipeline of its own.
"""

from __future__ import annotations

from sam4em_live.api.analyze import Analysis, analyze
from sam4em_live.api.prompts import Box, Point, Remove
from sam4em_live.api.run import MaskStack, Run
from sam4em_live.api.service import Service, ServiceConfig, build_service, presets, segmenters
from sam4em_live.api.simulate import Simulation, simulate
from sam4em_live.api.track import RunWarning, track

__all__ = [
    "Analysis",
    "Box",
    "MaskStack",
    "Point",
    "Remove",
    "Run",
    "RunWarning",
    "Service",
    "ServiceConfig",
    "Simulation",
    "analyze",
    "build_service",
    "presets",
    "segmenters",
    "simulate",
    "track",
]
