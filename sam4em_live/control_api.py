"""The service as its clients see it: state, status snapshot and the control protocol.

The control channel, the hooks and the embedding API all talk to a running service through `ServiceControl`;
this module sits below all of them (and below the service itself, which implements it), so none of them has
to import the service package.
"""

from __future__ import annotations

import ipaddress
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from sam4em_live.particles import ParticleEdit


class ServiceState(StrEnum):
    """Where a service is in its life (the legal transitions are in `sam4em_live.service.state`)."""

    IDLE = "idle"
    STARTING = "starting"
    STREAMING = "streaming"
    PAUSED = "paused"
    STOPPING = "stopping"
    STOPPED = "stopped"
    ERRORED = "errored"


class QuotaExceeded(RuntimeError):
    """A request refused by a quota (``[quotas]``, docs/control.md): too many, too often or too large.

    ``quota`` names the limit (``max_particles``, ``max_edits_per_s``...), so replies and counters can say which.
    Nothing was queued or written; the same request may succeed later (rates) or after a removal (particles).
    """

    def __init__(self, quota: str, message: str) -> None:
        super().__init__(message)
        self.quota = quota


def is_loopback_endpoint(endpoint: str) -> bool:
    """True for ``ipc://``/``inproc://`` and ``tcp://`` on 127.0.0.0/8, ::1 or localhost.

    Everything else (``*``, ``0.0.0.0``, an interface or host name, a LAN address) is taken as reachable
    from other machines. Used by every socket that binds (control channel, results publisher, frame source).
    """
    parts = urlsplit(endpoint)
    if parts.scheme in ("ipc", "inproc"):
        return True
    host = (parts.hostname or "").strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # "*", an interface name or a host name: assume reachable from outside


@dataclass(frozen=True, slots=True)
class StatusSnapshot:
    """A frozen picture of the service, published about once a second.

    Rates are per second over the last status interval; latency is from the
    frame's acquisition timestamp to its result being published (ms).

    The worker takes the snapshot; a worker stuck on one frame takes none, so a
    snapshot can be old. `ServiceControl.status` therefore fills in, at the time
    it is asked: ``snapshot_age_s`` (seconds since ``wall_time_s``, when the
    snapshot was taken), ``worker_stalled_s`` (seconds since the worker last
    finished a frame while frames were waiting; 0 when it keeps up or has
    nothing to do) and ``stalled`` (``worker_stalled_s`` over the stall limit:
    the state may still say ``streaming``, the rates are then stale).
    """

    state: ServiceState
    run_id: str | None = None
    series_id: str | None = None
    backend: str | None = None
    random_weights: bool = False
    frames_received: int = 0
    frames_processed: int = 0
    frames_dropped: int = 0  # dropped by our own backpressure policy
    frames_spilled: int = 0  # written to the disk spill (every-frame policy)
    dropped_by_reason: dict[str, int] = field(default_factory=dict)  # queue_full (latest), spill_failed
    frames_repaired: int = 0  # float frames whose few NaN/inf pixels were set to the median (docs/protocol.md)
    frames_gap: int = 0  # missing indices upstream (dropped before us)
    messages_rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    segmentation_errors: int = 0
    sink_errors: int = 0
    queue_depth: int = 0
    camera_fps: float = 0.0
    processed_fps: float = 0.0
    latency_ms_p50: float = 0.0
    latency_ms_p99: float = 0.0
    latency_ms_max: float = 0.0
    stage_ms: dict[str, float] = field(default_factory=dict)  # mean per stage over the interval
    worker_busy: float = 0.0  # fraction of the interval the worker did not wait for a frame (1: saturated)
    particles: tuple[int, ...] = ()
    sinks: dict[str, dict[str, Any]] = field(default_factory=dict)  # per-sink counters (drops, errors, hooks)
    paused: bool = False
    error: str | None = None
    wall_time_s: float = 0.0  # time.time() when the snapshot was taken
    snapshot_age_s: float = 0.0
    worker_stalled_s: float = 0.0
    stalled: bool = False
    refused_by_quota: dict[str, int] = field(default_factory=dict)  # requests refused, by quota name
    live: bool = True  # frames arrive at acquisition pace (SeriesInfo.live); False: offline, as fast as possible

    def as_dict(self) -> dict[str, Any]:
        """JSON-able status; an offline run's has no `LIVE_ONLY_STATUS_KEYS` (they would measure our reading)."""
        data = asdict(self)
        data["state"] = self.state.value
        data["particles"] = list(self.particles)
        if not self.live:
            for key in LIVE_ONLY_STATUS_KEYS:
                del data[key]
        return data


#: Status fields that describe a camera feeding the service: in an offline run (a recording read as fast as
#: possible) the "camera" rate is our read rate and the latency is time spent queued, so they are left out.
LIVE_ONLY_STATUS_KEYS: tuple[str, ...] = ("camera_fps", "latency_ms_p50", "latency_ms_p99", "latency_ms_max")


@runtime_checkable
class ServiceControl(Protocol):
    """What the control channel (and hooks) may ask of a running service.

    All methods are thread-safe and return quickly; none blocks on the pipeline.

    - ``submit_edit(edit)`` queues a prompt/removal. ``edit.frame`` None means
      the next frame processed; edits are validated against the frame shape at
      that frame boundary (invalid ones are logged, counted and reported in
      status, never applied). Raises `PromptError` at once for edits that are
      invalid regardless of shape or outside the current frame, and
      `QuotaExceeded` for one over a quota (rate, particles, pending edits).
    - ``pause()`` / ``resume()`` stop/restart processing; while paused the
      ingest keeps running under the backpressure policy.
    - ``status()`` returns the latest `StatusSnapshot`, with its age and the
      worker's stall filled in at the time of the call.
    - ``describe_config()`` returns the validated config as JSON-able data.
    - ``particles()`` returns one JSON-able dict per tracked particle with its
      last measurement.
    - ``annotate(text)`` adds a timestamped note to the run (``annotations.jsonl``);
      raises `QuotaExceeded` beyond the annotation rate or size.
    """

    def submit_edit(self, edit: ParticleEdit) -> None: ...

    def pause(self) -> None: ...

    def resume(self) -> None: ...

    def status(self) -> StatusSnapshot: ...

    def describe_config(self) -> dict[str, Any]: ...

    def particles(self) -> list[dict[str, Any]]: ...

    def annotate(self, text: str) -> None: ...
