"""Event detection: a pure per-frame stage turning measurements into `ServiceEvent`s.

Events (``kind``, see docs/hooks.md) are edge-triggered -- raised once when a
condition starts, not on every frame it holds:

- ``frame_gap``: frame indices were skipped upstream (``missing`` frames).
- ``particle_near_edge``: a centroid came within ``edge_margin_px`` of the image border.
- ``particle_left_field``: a particle last seen within the margin is absent.
- ``particle_lost``: absent for ``lost_after_frames`` frames (counted by frame index).
- ``particle_reacquired``: present again after ``particle_lost``.
- ``processing_slow`` / ``processing_recovered``: processed fps below ``slow_ratio`` x
  camera fps over a status interval, frames dropped by backpressure, or the
  queue growing over two intervals; then back to normal. Live runs only: an offline
  run (status ``live`` false, a recording read as fast as possible) has no camera to keep up with.
- ``alpha_change``: a particle's anomalous exponent (`ParticleStatistics.alpha`)
  moved by more than ``alpha_change`` since the last event (optional; 0 = off).
- ``hook_died``: a hook's thread ended on `SystemExit` or another `BaseException`
  (its ``hooks.<name>.died`` counter in the status's sink counters turned 1).

Pixel coordinates: x = column, y = row, origin at the centre of the top-left
pixel, so the image spans [-0.5, columns - 0.5] x [-0.5, rows - 0.5].
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, is_dataclass
from typing import TYPE_CHECKING, Any

from sam4em_live.results import ParticleStatistics, ServiceEvent

if TYPE_CHECKING:
    from sam4em_live.config import HooksConfig
    from sam4em_live.particles import ParticleMeasurement


@dataclass(slots=True)
class _ParticleState:
    last_seen: int | None = None
    last_xy: tuple[float, float] = (math.nan, math.nan)
    near_edge: bool = False
    edge: str | None = None
    lost: bool = False
    left_reported: bool = False
    alpha_ref: float | None = None


def edge_distance(x: float, y: float, shape: tuple[int, int]) -> tuple[float, str]:
    """Distance (px) from a centroid to the nearest image border, and which border."""
    rows, cols = shape
    # Plain comparisons (called per particle per frame); ties go to the first of left, right, top, bottom.
    distance, edge = x + 0.5, "left"
    for candidate, name in ((cols - 0.5 - x, "right"), (y + 0.5, "top"), (rows - 0.5 - y, "bottom")):
        if candidate < distance:
            distance, edge = candidate, name
    return distance, edge


class EventDetector:
    """Per-frame event stage, called by the pipeline worker once per processed frame.

    Not thread-safe (one caller). State is bounded by the number of tracked particles.
    """

    def __init__(
        self,
        edge_margin_px: float = 32,
        lost_after_frames: int = 3,
        slow_ratio: float = 0.9,
        alpha_change: float = 0.3,
    ) -> None:
        self.edge_margin_px = edge_margin_px
        self.lost_after_frames = lost_after_frames
        self.slow_ratio = slow_ratio
        self.alpha_change = alpha_change
        self._particles: dict[int, _ParticleState] = {}
        self._last_frame: int | None = None
        self._status_time: float | None = None
        self._queue_depths: list[int] = []
        self._dropped: int | None = None
        self._slow = False
        self._dead_hooks: set[str] = set()

    @classmethod
    def from_config(cls, config: HooksConfig) -> EventDetector:
        return cls(config.edge_margin_px, config.lost_after_frames, config.slow_ratio, config.alpha_change)

    def update(
        self,
        frame_index: int,
        shape: tuple[int, int],
        measurements: Sequence[ParticleMeasurement],
        status: Any = None,
        stats: Mapping[int, ParticleStatistics] | None = None,
    ) -> list[ServiceEvent]:
        """Return the events of one frame.

        ``status`` is the latest `StatusSnapshot` (or its ``as_dict()``, or None);
        it is only examined when it is a new snapshot. ``stats`` maps particle id
        to its `ParticleStatistics` (only needed for ``alpha_change``).
        """
        events = self._frame_events(frame_index)
        seen: set[int] = set()
        for m in measurements:
            seen.add(m.particle)
            state = self._particles.setdefault(m.particle, _ParticleState())
            if m.present and math.isfinite(m.x) and math.isfinite(m.y):
                events += self._present(state, m, frame_index, shape)
            else:
                events += self._absent(state, m.particle, frame_index)
        for gone in set(self._particles) - seen:  # removed by the user: forget it
            del self._particles[gone]
        events += self._status_events(frame_index, status)
        if stats and self.alpha_change > 0:
            events += self._alpha_events(frame_index, stats)
        return events

    def _frame_events(self, frame_index: int) -> list[ServiceEvent]:
        previous, self._last_frame = self._last_frame, frame_index
        if previous is None or frame_index == previous + 1:
            return []
        if frame_index <= previous:  # a new series restarted the numbering
            self._particles.clear()
            return []
        missing = frame_index - previous - 1
        return [ServiceEvent("frame_gap", frame_index, None, {"missing": missing, "previous_frame": previous})]

    def _present(
        self, state: _ParticleState, m: ParticleMeasurement, frame_index: int, shape: tuple[int, int]
    ) -> list[ServiceEvent]:
        events = []
        if state.lost and state.last_seen is not None:
            absent = frame_index - state.last_seen - 1
            events.append(ServiceEvent("particle_reacquired", frame_index, m.particle,
                                       {"absent_frames": absent, "x": m.x, "y": m.y}))
        distance, edge = edge_distance(m.x, m.y, shape)
        near = distance < self.edge_margin_px
        if near and not state.near_edge:
            events.append(ServiceEvent("particle_near_edge", frame_index, m.particle, {
                "x": m.x, "y": m.y, "edge": edge, "distance_px": distance, "margin_px": self.edge_margin_px,
            }))
        state.near_edge, state.edge = near, edge
        state.lost, state.left_reported = False, False
        state.last_seen, state.last_xy = frame_index, (m.x, m.y)
        return events

    def _absent(self, state: _ParticleState, particle: int, frame_index: int) -> list[ServiceEvent]:
        if state.last_seen is None:
            return []  # never seen yet (prompt not taken): nothing was lost
        events = []
        last = {"last_x": state.last_xy[0], "last_y": state.last_xy[1], "last_frame": state.last_seen}
        if state.near_edge and not state.left_reported:
            state.left_reported = True
            events.append(ServiceEvent("particle_left_field", frame_index, particle, {**last, "edge": state.edge}))
        absent = frame_index - state.last_seen
        if not state.lost and absent >= self.lost_after_frames:
            state.lost = True
            events.append(ServiceEvent("particle_lost", frame_index, particle, {**last, "absent_frames": absent}))
        return events

    def _status_events(self, frame_index: int, status: Any) -> list[ServiceEvent]:
        stamp = status.get("wall_time_s") if isinstance(status, Mapping) else getattr(status, "wall_time_s", None)
        if status is None or stamp == self._status_time:
            return []  # the same snapshot as last frame: nothing new to judge
        self._status_time = stamp
        data = _status_mapping(status)
        return self._hook_events(frame_index, data) + self._rate_events(frame_index, data)

    def _hook_events(self, frame_index: int, data: Mapping[str, Any]) -> list[ServiceEvent]:
        """``hook_died`` once per hook whose ``hooks.<name>.died`` counter is set (see hooks/worker.py)."""
        counters = (data.get("sinks") or {}).get("HookRunner") or {}
        dead = {key[len("hooks."):-len(".died")] for key, value in counters.items()
                if key.startswith("hooks.") and key.endswith(".died") and value}
        events = [ServiceEvent("hook_died", frame_index, None, {"hook": name}) for name in sorted(dead - self._dead_hooks)]
        self._dead_hooks |= dead
        return events

    def _rate_events(self, frame_index: int, data: Mapping[str, Any]) -> list[ServiceEvent]:
        if data.get("live") is False:
            return []  # offline (read as fast as possible): the queue grows by design, nothing is "slow"
        camera_fps = float(data.get("camera_fps") or 0.0)
        processed_fps = float(data.get("processed_fps") or 0.0)
        depth = int(data.get("queue_depth") or 0)
        dropped = int(data.get("frames_dropped") or 0)
        dropped_now = self._dropped is not None and dropped > self._dropped
        self._dropped = dropped
        self._queue_depths = ([*self._queue_depths, depth])[-3:]
        growing = len(self._queue_depths) == 3 and self._queue_depths[0] < self._queue_depths[1] < depth
        behind = camera_fps > 0 and processed_fps < self.slow_ratio * camera_fps
        slow = behind or growing or dropped_now
        if slow == self._slow:
            return []
        self._slow = slow
        detail = {"processed_fps": processed_fps, "camera_fps": camera_fps, "queue_depth": depth,
                  "frames_dropped": dropped, "queue_growing": growing}
        return [ServiceEvent("processing_slow" if slow else "processing_recovered", frame_index, None, detail)]

    def _alpha_events(self, frame_index: int, stats: Mapping[int, ParticleStatistics]) -> list[ServiceEvent]:
        events = []
        for particle, values in stats.items():
            alpha, error = values.alpha, values.alpha_err
            state = self._particles.get(particle)
            if state is None or alpha is None or not math.isfinite(alpha):
                continue
            if error is not None and not error <= self.alpha_change:
                continue  # the fit is too uncertain to call a change (early in a track, noisy MSD)
            if state.alpha_ref is None:
                state.alpha_ref = alpha
            elif abs(alpha - state.alpha_ref) > self.alpha_change:
                events.append(ServiceEvent("alpha_change", frame_index, particle,
                                           {"alpha": alpha, "previous_alpha": state.alpha_ref}))
                state.alpha_ref = alpha
        return events


def _status_mapping(status: Any) -> Mapping[str, Any]:
    if status is None:
        return {}
    if isinstance(status, Mapping):
        return status
    if hasattr(status, "as_dict"):
        return status.as_dict()
    if is_dataclass(status) and not isinstance(status, type):
        return asdict(status)
    return {}
