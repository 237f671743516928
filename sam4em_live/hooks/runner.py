"""`HookRunner`: the sink that feeds results to user hooks, one thread per hook.

Built by the service builder with `HookRunner.from_config` and bound to the
running service and source with `bind` (which picks the microscope adapter).
``consume`` only builds one frozen `HookContext` and appends it to each hook's
bounded queue, so it returns in microseconds whatever the hooks do.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from sam4em_live.config import ConfigError, HooksConfig, SafetyConfig
from sam4em_live.frames import Calibration
from sam4em_live.hooks.api import HookContext
from sam4em_live.hooks.loading import LoadedHook, load_hook
from sam4em_live.hooks.microscope import DryRunMicroscope, Microscope, SimulatedMicroscope
from sam4em_live.hooks.safety import CommandGate
from sam4em_live.hooks.worker import HookWorker
from sam4em_live.sources.base import FrameSource, MovableStage

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from sam4em_live.control_api import ServiceControl
    from sam4em_live.results import FrameResult, ParticleStatistics, RunInfo

logger = logging.getLogger(__name__)


class HookRunner:
    """A `Sink` running hooks off the pipeline thread (see `sam4em_live.hooks.worker`)."""

    def __init__(
        self,
        hooks: Sequence[LoadedHook],
        microscope: Microscope | None = None,
        safety: SafetyConfig | None = None,
        queue_results: int = 1,
        queue_events: int = 256,
        hang_timeout_s: float = 2.0,
        adapter: str = "dry-run",
    ) -> None:
        self.hooks = list(hooks)
        self.adapter = adapter
        self.gate = CommandGate(microscope or DryRunMicroscope(), safety)
        self.hang_timeout_s = hang_timeout_s
        self._queue_results = queue_results
        self._queue_events = queue_events
        self.workers: list[HookWorker] = []
        self._run: RunInfo | None = None
        self._status: Mapping[str, Any] = MappingProxyType({})
        self._stats: Mapping[int, ParticleStatistics] = MappingProxyType({})
        self._last: HookContext | None = None

    @classmethod
    def from_config(cls, config: HooksConfig) -> HookRunner:
        """Load every configured hook (raising `ConfigError` naming a bad one); adapter bound later."""
        hooks = [load_hook(spec, i) for i, spec in enumerate(config.hooks)]
        return cls(hooks, None, config.safety, config.queue_results, config.queue_events,
                   config.hang_timeout_s, config.microscope)

    def bind(self, service: ServiceControl | None = None, source: FrameSource | None = None,
             microscope: Microscope | None = None) -> None:
        """Attach the service (prompts, annotations) and build the configured adapter.

        The ``simulated`` adapter needs a ``source`` that is a `MovableStage` (the simulator).
        ``microscope`` overrides the configured adapter (a vendor adapter, a test double).
        """
        if microscope is None and self.adapter == "simulated":
            if not isinstance(source, MovableStage):
                raise ConfigError("hooks.microscope = 'simulated' needs the simulator source "
                                  "(source.kind = 'simulator')")
            microscope = SimulatedMicroscope(source, service)
        if microscope is None:
            microscope = DryRunMicroscope(service)
        self.gate = CommandGate(microscope, self.gate.limits)
        logger.info("hooks act on the %s microscope adapter%s", microscope.describe().get("adapter", "?"),
                    " (dry-run: hardware commands only logged)" if self.gate.limits.dry_run else "")

    # -- Sink ---------------------------------------------------------------
    def open(self, run: RunInfo) -> None:
        self._run = run
        ctx = HookContext("start", run_id=run.run_id, shape=run.series.shape, calibration=run.series.calibration)
        self.workers = [
            HookWorker(h.name, h.hook, self.gate, self._queue_results, self._queue_events, self.hang_timeout_s)
            for h in self.hooks
        ]
        for worker in self.workers:
            worker.start(ctx)

    def consume(self, result: FrameResult) -> None:
        if result.stats:
            self._stats = MappingProxyType(dict(result.stats))
        frame = result.frame
        ctx = HookContext(
            "result",
            run_id=self._run.run_id if self._run else None,
            frame_index=frame.index,
            timestamp_s=frame.timestamp_s,
            shape=frame.shape,
            calibration=frame.calibration,
            measurements=result.measurements,
            stats=self._stats,
            events=result.events,
            status=self._status,
        )
        self._last = ctx
        event_contexts = [dataclasses.replace(ctx, kind="event", event=event) for event in result.events]
        for worker in self.workers:
            worker.check_hang()
            for event_ctx in event_contexts:
                worker.offer_event(event_ctx)
            worker.offer_result(ctx)

    def on_status(self, status: Mapping[str, Any]) -> None:
        self._status = MappingProxyType(dict(status))
        for worker in self.workers:
            worker.check_hang()

    def close(self) -> None:
        last = self._last
        ctx = HookContext("stop", run_id=self._run.run_id if self._run else None,
                          frame_index=last.frame_index if last else None,
                          shape=last.shape if last else None,
                          calibration=last.calibration if last else Calibration(),
                          stats=self._stats, status=self._status)
        deadline = time.monotonic() + self.hang_timeout_s
        for worker in self.workers:
            worker.stop(ctx, max(deadline - time.monotonic(), 0.05))
        logger.info("hooks closed: %s", self.hook_status())

    # -- status ---------------------------------------------------------------
    @property
    def counters(self) -> Mapping[str, int]:
        """`CountingSink` counters: ``hooks.<hook>.<counter>`` and ``commands.<outcome>``.

        Per hook: ``calls``, ``errors``, ``coalesced``, ``events_dropped``, ``hangs`` and ``hung``
        (1 while a call is hung); per command outcome: ``done``, ``dry_run``, ``refused``, ``failed``.
        """
        out: dict[str, int] = {}
        for worker in self.workers:
            prefix = f"hooks.{worker.name}."
            out.update({prefix + name: count for name, count in worker.counters.items()})
            out[prefix + "hung"] = int(worker.hung)
        out.update({f"commands.{outcome}": count for outcome, count in self.gate.counts.items()})
        return out

    def hook_status(self) -> dict[str, Any]:
        """JSON-able per-hook status (counters, ``hung``, ``busy_call``, ``busy_s``), command counts, adapter."""
        return {
            "hooks": {w.name: w.status() for w in self.workers},
            "commands": dict(self.gate.counts),
            "adapter": self.gate.microscope.describe(),
        }
