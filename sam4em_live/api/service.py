"""The live service for scripts that drive an experiment, and the names the choices take.

A script builds the service from a `ServiceConfig` (a TOML file or keyword overrides), starts it, talks
to it (``service.submit_edit(Point(...))``, ``service.pause()``, ``service.status()``), and stops it::

    import sam4em_live as s4

    cfg = s4.ServiceConfig.from_file("configs/live.toml").with_overrides({"segmenter.backend": "embedded"})
    built = s4.build_service(cfg)             # source, segmenter, publisher, recorder, control channel
    built.service.start()                     # returns at once; frames flow on worker threads
    built.service.submit_edit(s4.Point(250, 310, particle=1, frame=None))   # None: the next frame
    ...
    built.service.finish(); built.close()     # finish: stop and wait until run.json is final
    print(built.run_dir)

`build_service` returns a `BuiltService` (the service and its optional parts: ``publisher``,
``recorder``, ``control``, ``run_dir``). docs/python_api.md has a complete example.
"""

from __future__ import annotations

from sam4em_live.config import ServiceConfig
from sam4em_live.service.builder import BuiltService, build_service
from sam4em_live.service.service import Service


def segmenters() -> list[str]:
    """The segmenter backends ``track(backend=...)`` and ``--backend`` accept (built-ins and plugins)."""
    from sam4em_live.segment.registry import SEGMENTERS

    return SEGMENTERS.names()


def presets() -> list[str]:
    """The simulator presets ``simulate(preset)`` accepts."""
    from sam4em_live.sim.presets import PRESETS

    return sorted(PRESETS)


__all__ = ["BuiltService", "Service", "ServiceConfig", "build_service", "presets", "segmenters"]
