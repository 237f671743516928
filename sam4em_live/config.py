"""Service configuration: frozen pydantic models read from ``configs/*.toml``.

Every model forbids unknown keys, so a typo or a wrong unit suffix
(``pixel_size_um``) is an error naming the offending key. Units live in the
field names. CLI flags override file values through `with_overrides`.

Tables that name a plugin (``[source]``, ``[[sinks]]``, ``[segmenter.options]``)
are open: their options are validated by the chosen plugin's own model when the
service is built (`sam4em_live.plugins`), with errors that name the key the same way.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)


class FrozenModel(BaseModel):
    """Base of every config model: immutable, and an unknown key is an error naming it."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key."""


class PluginTable(BaseModel):
    """A table naming a plugin by ``kind``, with the plugin's options beside it.

    ``[source] kind = "zmq"  endpoint = "tcp://..."``: the keys other than ``kind`` are the plugin's
    options. Which kinds exist, and which options each takes, is the business of the seam's registry
    (`sam4em_live.plugins`), not of this file: the set is open to plugins. The options are validated by
    the plugin's own frozen model when the service is built, and errors name the key
    (``source.endpont: Extra inputs are not permitted``).
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    kind: str

    @property
    def options(self) -> dict[str, Any]:
        """The plugin's options: every key of the table except ``kind``."""
        return dict(self.model_extra or {})


class SourceConfig(PluginTable):
    """The ``[source]`` table; without ``kind`` it is a ZeroMQ source (the live default)."""

    kind: str = "zmq"


class SinkConfig(PluginTable):
    """One ``[[sinks]]`` table: a sink beyond the publisher, recorder and hooks (e.g. ``kind = "parquet"``)."""


class ZmqSourceConfig(FrozenModel):
    """Options of the ``zmq`` source (`sam4em_live.sources.zmq_source`); the default source."""

    endpoint: str = "tcp://127.0.0.1:5555"
    socket: Literal["sub", "pull"] = "sub"
    mode: Literal["connect", "bind"] = "connect"
    rcvhwm_frames: PositiveInt = 64
    # Max size of a msgpack header part; larger headers are rejected unparsed.
    max_header_bytes: PositiveInt = 65536
    # Frame index window (docs/protocol.md): a frame more than this many indices past the last one is
    # rejected as implausible_index (and does not become the last index) unless 8 in a row follow it.
    max_index_jump: PositiveInt = 100_000


class CalibrationConfig(FrozenModel):
    """Overrides for the source's calibration (None = take the source's)."""

    pixel_size_nm: PositiveFloat | None = None
    fps: PositiveFloat | None = None


class PipelineConfig(FrozenModel):
    """``[pipeline]``: the frame queue, backpressure and the worker thread's real-time settings."""

    # latest: live view, drop the oldest queued frames (counted).
    # every-frame: never drop; frames beyond the memory queue spill to disk.
    backpressure: Literal["latest", "every-frame"] = "latest"
    queue_frames: PositiveInt = 8
    spill_dir: Path | None = None  # None = a temporary directory
    # Float frames: NaN/inf pixels are replaced by the frame's finite median (counted as frames_repaired);
    # a frame with more than this fraction of them is rejected as non_finite (docs/protocol.md).
    max_non_finite_fraction: float = Field(0.01, ge=0.0, le=1.0)
    status_interval_s: PositiveFloat = 1.0
    intensity_weighted_centroid: bool = False
    # CPython GIL switch interval while the service runs (s): short, so the ingest thread gets the
    # GIL promptly from a busy worker. CPython's default is 0.005.
    gil_switch_interval_s: PositiveFloat = 0.0005
    # Pin the worker thread to this CPU and the service's other threads and processes to the others
    # (Linux; see sam4em_live/service/realtime.py). None: let the OS schedule.
    worker_cpu: int | None = Field(None, ge=0)
    # Let glibc recycle large freed buffers (received frames) instead of unmapping each one: no page
    # faults and TLB shoot-downs per frame (sam4em_live/service/realtime.py). No effect off glibc.
    recycle_frame_buffers: bool = True


class SegmenterConfig(FrozenModel):
    """``[segmenter]``: the backend (a name in the segmenter registry) and its options table."""

    backend: str = "embedded"
    # Backend-specific options, validated by the backend's own model.
    options: dict[str, Any] = Field(default_factory=dict)
    # Run the backend in its own process (frames through shared memory): it then has a GIL of its own and
    # segments frame N+1 while the service measures, records and publishes frame N. Worth it with spare
    # cores (or a GPU backend); on a CPU-bound 2-core machine the extra copy and hand-offs cost more than
    # they give (docs/benchmarks.md), hence off by default.
    own_process: bool = False
    # Frames the backend process may hold at once (2 = one segmenting, one waiting).
    process_depth: int = Field(2, ge=1, le=8)


class PublisherConfig(FrozenModel):
    """``[publisher]``: the results PUB socket (`sam4em_live.sinks.publisher`)."""

    enabled: bool = True
    endpoint: str = "tcp://127.0.0.1:5556"
    sndhwm_messages: PositiveInt = 1000
    include_masks: bool = True
    preview_fps: PositiveFloat = 10.0
    preview_max_edge_px: PositiveInt = 512


class RecorderConfig(FrozenModel):
    """``[recorder]``: the run folder writer (`sam4em_live.sinks.recorder`)."""

    enabled: bool = True
    out_dir: Path = Path("runs")
    write_masks: bool = True
    queue_frames: PositiveInt = 4096
    # Who writes masks.tif: "process", a child process (live: off the segmenting process); "thread", the
    # recorder's writer thread (batch workers: one core a recording, no child; the same file).
    mask_writer: Literal["process", "thread"] = "process"


class StatsConfig(FrozenModel):
    """``[stats]``: the rolling statistics window, lags and publishing interval (frames)."""

    window_frames: PositiveInt = 1024
    max_lag_frames: PositiveInt = 100
    publish_every_frames: PositiveInt = 10


class DiscoveryConfig(FrozenModel):
    """``[discovery]``: finding particles without clicks (docs/discovery.md).

    ``mode``: ``off``; ``propose`` (candidates become proposals a client accepts or rejects) or ``auto``
    (candidates that pass the policy below become tracked particles by themselves). Sizes are equivalent
    diameters in full-resolution pixels; ``min_contrast`` is the mean relative deviation from the local
    background (0.05: 5 % darker or brighter); ``max_elongation`` the ratio of the principal axes.
    """

    mode: Literal["off", "propose", "auto"] = "off"
    every_n_frames: PositiveInt = 2
    detector_cells: PositiveInt = 128  # the detector's image: block-averaged to about this many cells a side
    # the track's mean matched-filter score, in noise standard deviations; 5.5 tuned in auto mode on held-in
    # entry clips (discovery-entry, seeds 100-101): entries within 5 frames minus false adds, 3.79-6.0 swept
    threshold_sigma: PositiveFloat = 5.5
    polarity: Literal["dark", "bright", "both"] = "both"
    min_diameter_px: PositiveFloat = 5.0
    max_diameter_px: PositiveFloat = 160.0
    min_contrast: float = Field(default=0.0, ge=0.0)
    max_elongation: PositiveFloat = 6.0
    min_distance_px: float = Field(default=8.0, ge=0.0)  # beyond the tracked particle's own radius
    persistence_frames: PositiveInt = 2  # detections (runs of the detector) in a row before a candidate counts
    ignore_static: bool = True  # candidates the stream's long-run mean already explains are not proposed
    max_proposals: PositiveInt = 64


class ControlConfig(FrozenModel):
    """``[control]``: the control channel (REQ/REP, docs/control.md)."""

    enabled: bool = True
    endpoint: str = "tcp://127.0.0.1:5557"
    # Binding beyond loopback needs CURVE keys (see `sam4em-live keys`) unless insecure.
    curve_keys_dir: Path | None = None
    insecure: bool = False
    # Requests larger than this get a "too_large" error reply (docs/control.md).
    max_message_bytes: PositiveInt = 65536
    # Requests served per second at most (burst: one second's worth). Beyond it the server stops reading
    # until a slot is free, so a flooding client waits instead of taking the service's CPU (docs/control.md).
    max_requests_per_s: PositiveFloat = 200.0


class QuotaConfig(FrozenModel):
    """``[quotas]``: what control clients and hooks may ask of a running service (docs/control.md).

    Each refusal is a clear error (``invalid_prompt`` or ``quota_exceeded``) and a count in the status's
    ``refused_by_quota``; refused prompts are also reported as ``prompt_rejected`` events.
    """

    # Particles tracked at once; a prompt for a new particle beyond it is refused (each costs the worker
    # time on every frame: 200 extra particles took the embedded backend from 50 to 1.7 fps). Dense fields
    # hold ~35-60 particles, so the default leaves room for them; lower it on a slow machine.
    max_particles: PositiveInt = 128
    # Live (``latest`` backpressure) only: a new particle from a client or hook is refused while the worker,
    # with one more particle, would be busy more than this fraction of the time (the measured busy fraction
    # of the last status interval x (n + 1) / n). Tracking keeps pace with the camera below it, so one client
    # adding particles cannot make the service drop frames it used to process. 1.0 turns it off.
    max_worker_load: float = Field(default=0.8, gt=0.0, le=1.0)
    # A prompt box is clipped to the frame, then refused if either side is longer than this (px): seeding
    # from a box costs time in proportion to its area (a 512 px box ~0.1 s on a 512^2 frame, measured).
    max_box_edge_px: PositiveInt = 256
    # Prompt, correction and removal requests per second (burst: one second's worth).
    max_edits_per_s: PositiveFloat = 10.0
    # Edits waiting for their frame (anchored to a future frame); more are refused.
    max_pending_edits: PositiveInt = 256
    # Annotations per second (burst: one second's worth) and the size of one (UTF-8 bytes).
    max_annotations_per_s: PositiveFloat = 2.0
    max_annotation_bytes: PositiveInt = 4096


class HookSpec(FrozenModel):
    """One ``[[hooks.hooks]]`` entry: which hook, and its options (validated by the hook's own model)."""

    target: str  # dotted path "package.module:Class" or an entry-point name
    options: dict[str, Any] = Field(default_factory=dict)


class SafetyConfig(FrozenModel):
    """Limits every hook command passes through (`sam4em_live.hooks.safety.CommandGate`)."""

    # Hardware commands (stage, beam, recording) are only logged, whatever the adapter.
    dry_run: bool = False
    max_stage_step_nm: PositiveFloat = 500.0
    max_stage_moves_per_s: PositiveFloat = 2.0
    allowed_commands: tuple[str, ...] = (
        "move_stage", "blank_beam", "unblank_beam", "start_recording",
        "stop_recording", "add_prompt", "remove_prompt", "annotate",
    )


class HooksConfig(FrozenModel):
    """``[hooks]``: control hooks, the events they receive and the safety gate their commands pass."""

    hooks: tuple[HookSpec, ...] = ()
    queue_results: PositiveInt = 1
    queue_events: PositiveInt = 256
    hang_timeout_s: PositiveFloat = 2.0
    edge_margin_px: PositiveInt = 32
    lost_after_frames: PositiveInt = 3
    # processing_slow when processed fps < slow_ratio x camera fps over a status interval.
    slow_ratio: PositiveFloat = 0.9
    # alpha_change when a particle's anomalous exponent moves by more than this; 0 = off.
    alpha_change: float = Field(0.3, ge=0.0)
    # Adapter hooks act on: "dry-run" logs only; "simulated" moves the simulator's field of view.
    microscope: Literal["dry-run", "simulated"] = "dry-run"
    safety: SafetyConfig = Field(default_factory=SafetyConfig)


class ServiceConfig(FrozenModel):
    """The whole service configuration: one TOML file (see configs/), every table optional."""

    source: SourceConfig = Field(default_factory=SourceConfig)
    calibration: CalibrationConfig = Field(default_factory=CalibrationConfig)
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig)
    segmenter: SegmenterConfig = Field(default_factory=SegmenterConfig)
    publisher: PublisherConfig = Field(default_factory=PublisherConfig)
    recorder: RecorderConfig = Field(default_factory=RecorderConfig)
    stats: StatsConfig = Field(default_factory=StatsConfig)
    control: ControlConfig = Field(default_factory=ControlConfig)
    hooks: HooksConfig = Field(default_factory=HooksConfig)
    quotas: QuotaConfig = Field(default_factory=QuotaConfig)
    discovery: DiscoveryConfig = Field(default_factory=DiscoveryConfig)
    # Further sinks from the sink registry (`sam4em_live.sinks.registry`): ``[[sinks]] kind = "parquet"``.
    sinks: tuple[SinkConfig, ...] = ()
    prompts: Path | None = None  # prompts file applied at start

    @classmethod
    def from_file(cls, path: str | Path) -> ServiceConfig:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: invalid TOML ({exc})") from None
        return cls.from_mapping(data, where=str(path))

    @classmethod
    def from_mapping(cls, data: dict[str, Any], where: str = "config") -> ServiceConfig:
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"{where}: {format_validation_error(exc)}") from None

    def with_overrides(self, overrides: dict[str, Any]) -> ServiceConfig:
        """Return a copy with dotted-key overrides (``{"source.fps": 40}``); None values are ignored."""
        data = self.model_dump(mode="python")
        for dotted, value in overrides.items():
            if value is None:
                continue
            node = data
            *parents, leaf = dotted.split(".")
            for key in parents:
                node = node.setdefault(key, {})
            node[leaf] = value
        return ServiceConfig.from_mapping(data, where="overrides")

    def with_segmenter_options(self, options: dict[str, Any]) -> ServiceConfig:
        """A copy with ``options`` set in ``[segmenter.options]`` (the CLI's ``--option KEY=VALUE``).

        Unlike `with_overrides`, a None value is kept: it sets the option to None.
        """
        if not options:
            return self
        return self.with_overrides({"segmenter.options": {**self.segmenter.options, **options}})

    def to_jsonable(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One line per problem, each naming the dotted key (``recorder.out_dirr: extra ...``).

    ``prefix`` is where the validated mapping sits (``"source"``); it leads every key, and stands alone
    for a problem of the whole model.
    """
    parts = []
    for err in exc.errors():
        key = ".".join([*([prefix] if prefix else []), *(str(p) for p in err["loc"])])
        parts.append(f"{key}: {err['msg']}" if key else err["msg"])
    return "; ".join(parts)


def parse_options(model: type[ModelT], options: dict[str, Any], where: str) -> ModelT:
    """Validate backend/hook options with their own model, raising `ConfigError` naming keys."""
    try:
        return model.model_validate(options)
    except ValidationError as exc:
        raise ConfigError(f"{where}: {format_validation_error(exc)}") from None
