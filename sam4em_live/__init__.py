"""sam4em-live: real-time single-particle tracking for liquid-phase TEM.

The Python API (docs/python_api.md)::

    import sam4em_live as s4
    clip = s4.simulate("sam4em-50nm", frames=200)     # or your recording: s4.track("movie.tif", ...)
    run = s4.track(clip.video, clip.prompts)          # prompts: s4.Point(x, y, particle=1), s4.Box(...)
    run.trajectories                                  # pandas DataFrame, trackpy's columns
    s4.analyze(run).figure("tmsd")                    # tMSD with D and alpha fits

The names below load on first use, so ``import sam4em_live`` stays light (the service's child
processes and the command line import the package too).
"""

from __future__ import annotations

from importlib import metadata as _metadata
from typing import TYPE_CHECKING, Any

try:
    __version__ = _metadata.version("sam4em-live")
except _metadata.PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0+unknown"

if TYPE_CHECKING:
    from sam4em_live.api import (
        Analysis,
        Box,
        MaskStack,
        Point,
        Remove,
        Run,
        RunWarning,
        Service,
        ServiceConfig,
        Simulation,
        analyze,
        build_service,
        presets,
        segmenters,
        simulate,
        track,
    )

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
    "__version__",
    "analyze",
    "batch",
    "build_service",
    "presets",
    "segmenters",
    "simulate",
    "track",
]


def __getattr__(name: str) -> Any:
    """Load the public API on first use (PEP 562)."""
    if name == "batch":  # a callable package (docs/batch.md): s4.batch(...) runs a batch on Dask
        import importlib

        return importlib.import_module("sam4em_live.batch")
    if name in __all__ and name != "__version__":
        from sam4em_live import api

        value = getattr(api, name)
        globals()[name] = value  # once loaded, a plain module attribute
        return value
    raise AttributeError(f"module 'sam4em_live' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
