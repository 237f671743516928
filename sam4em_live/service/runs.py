"""Whole runs as library functions: offline ``track`` (and its ``--replay``) and the loopback ``demo``.

The CLI commands are thin wrappers around these, and the tests call them
directly.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sam4em_live.config import ServiceConfig
from sam4em_live.io.edits_log import EDITS_LOG, read_edits_log, replay_plan
from sam4em_live.io.prompts_file import load_prompts
from sam4em_live.particles import PromptError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from sam4em_live.frames import Frame, SeriesInfo
    from sam4em_live.particles import ParticleEdit, Prompt
    from sam4em_live.results import FrameResult, RunInfo
    from sam4em_live.sinks.base import Sink
    from sam4em_live.sources.base import FrameSource, SourceCounters

log = logging.getLogger(__name__)


class ProgressSink:
    """A sink that drives a tqdm progress bar (offline runs)."""

    def __init__(self, total: int | None, enabled: bool = True) -> None:
        self.total = total
        self.enabled = enabled
        self._bar: Any = None

    def open(self, run: RunInfo) -> None:
        if self.enabled:
            from tqdm import tqdm

            self._bar = tqdm(total=self.total, unit="frame", desc=run.run_id)

    def consume(self, result: FrameResult) -> None:
        if self._bar is not None:
            self._bar.update(1)

    def on_status(self, status: Mapping[str, Any]) -> None:
        pass

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


class StatusEcho:
    """A sink that prints one status line a second (the demo's live view)."""

    def __init__(self, echo: Callable[[str], None]) -> None:
        self.echo = echo

    def open(self, run: RunInfo) -> None:
        self.echo(f"run {run.run_id}: {run.series.shape[1]}x{run.series.shape[0]} {run.series.dtype}, "
                  f"backend {run.backend.get('backend')}")

    def consume(self, result: FrameResult) -> None:
        pass

    def on_status(self, s: Mapping[str, Any]) -> None:
        self.echo(
            f"[{s['state']}] frame {s['frames_processed']:>6}  camera {s['camera_fps']:5.1f} fps  "
            f"processed {s['processed_fps']:5.1f} fps  latency p50 {s['latency_ms_p50']:5.1f} ms "
            f"p99 {s['latency_ms_p99']:5.1f} ms  queue {s['queue_depth']}  dropped {s['frames_dropped']}  "
            f"gaps {s['frames_gap']}  rejected {s['messages_rejected']}  particles {s['particles']}"
        )

    def close(self) -> None:
        pass


def probe_frames(path: Path) -> tuple[tuple[int, int], int]:
    """(shape, number of frames) of a recording, read the way replay reads it."""
    from sam4em_live.io.reader_registry import open_reader

    if not Path(path).exists():
        raise FileNotFoundError(f"input not found: {path}")
    reader = open_reader(Path(path))
    try:
        return reader.shape, reader.n_frames
    finally:
        reader.close()


def run_track(
    input: Path, prompts: Path, out: Path, backend: str | None = None, fps: float | None = None,
    pixel_size_nm: float | None = None, config_path: Path | None = None, progress: bool = True,
    overrides: Mapping[str, Any] | None = None, segmenter_options: dict[str, Any] | None = None,
) -> Path:
    """Track a recording offline (every frame, as fast as possible); returns the run directory.

    ``overrides`` are dotted config keys (`ServiceConfig.with_overrides`); ``segmenter_options`` are set in
    ``[segmenter.options]`` on top of the config's (the CLI's ``--option KEY=VALUE``).
    """
    out = Path(out)
    if out.exists():
        raise ValueError(f"output directory already exists: {out} (choose a new --out)")
    input, prompts = Path(input).absolute(), Path(prompts).absolute()  # run.json names them from anywhere
    shape, n_frames = probe_frames(input)
    edits = load_prompts(prompts, shape)  # checked against the frames before any work; the builder loads them
    beyond = sorted({e.frame for e in edits if e.frame is not None and e.frame >= n_frames})
    if beyond:  # it would never be applied: a run of 0 trajectory rows that looks like a success
        raise PromptError(f"{prompts}: prompt(s) for frame(s) {', '.join(map(str, beyond[:5]))}"
                          f"{' ...' if len(beyond) > 5 else ''} after the last frame of {input} "
                          f"({n_frames} frames, 0-{n_frames - 1})")
    cfg = offline_config({"kind": "replay", "path": str(input), "as_fast_as_possible": True, "fps": fps},
                         out.parent, backend=backend, fps=fps, pixel_size_nm=pixel_size_nm, config_path=config_path,
                         overrides={"prompts": str(prompts), **(overrides or {})},
                         segmenter_options=segmenter_options)
    return run_offline(cfg, out, n_frames, progress)


def offline_config(
    source: Mapping[str, Any] | None, out_parent: Path, backend: str | None = None, fps: float | None = None,
    pixel_size_nm: float | None = None, config_path: Path | None = None,
    overrides: Mapping[str, Any] | None = None, segmenter_options: dict[str, Any] | None = None,
) -> ServiceConfig:
    """The config of an offline run (`run_track`, the Python API's ``track``): every frame, recorded, no sockets.

    ``source`` is the ``[source]`` table (None: the frames come from a source handed to `run_offline`).
    """
    base = ServiceConfig.from_file(config_path) if config_path else ServiceConfig()
    return base.with_overrides({
        **({"source": dict(source)} if source is not None else {}),
        "pipeline.backpressure": "every-frame",
        "segmenter.backend": backend,
        "recorder.out_dir": str(out_parent),
        "recorder.enabled": True,
        "publisher.enabled": False,
        "control.enabled": False,
        "calibration.pixel_size_nm": pixel_size_nm,
        "calibration.fps": fps,
        **(overrides or {}),
    }).with_segmenter_options(segmenter_options or {})


def run_offline(cfg: ServiceConfig, out: Path, total: int | None, progress: bool = True,
                source: FrameSource | None = None, edits: Sequence[ParticleEdit] = (),
                extra_sinks: Sequence[Sink] = ()) -> Path:
    """Run an offline config (`offline_config`) into the run folder ``out``; returns the run directory.

    ``source`` replaces ``cfg.source``, ``edits`` are applied besides the config's prompts file; ``total``
    frames (if known) sizes the progress bar; ``extra_sinks`` see every result too.
    """
    from sam4em_live.service.builder import build_service

    out.parent.mkdir(parents=True, exist_ok=True)
    built = build_service(cfg, source=source, edits=edits, run_id=out.name,
                          extra_sinks=[ProgressSink(total, progress), *extra_sinks])
    try:
        built.service.run()
    finally:
        built.close()
    return built.run_dir or out


class ReplayError(ValueError):
    """A run folder that cannot be replayed (the message names the folder and what is missing)."""


class FramesFrom:
    """A frame source that starts at frame ``first``: a replay starts where the live run's results did."""

    def __init__(self, inner: FrameSource, first: int) -> None:
        self._inner = inner
        self._first = first

    @property
    def counters(self) -> SourceCounters:
        return self._inner.counters

    @property
    def series(self) -> SeriesInfo | None:
        return self._inner.series

    def open(self) -> None:
        self._inner.open()

    def next_frame(self, timeout_s: float) -> Frame | None:
        frame = self._inner.next_frame(timeout_s)
        while frame is not None and frame.index < self._first:  # as fast as possible: skipping costs a read
            frame = self._inner.next_frame(timeout_s)
        return frame

    def close(self) -> None:
        self._inner.close()


def _recorded_frames(manifest: dict[str, Any], run_dir: Path) -> tuple[int, int | None]:
    """The live run's first and last frame with a result, from run.json (``series_list``), else (0, None)."""
    series = manifest.get("series_list")
    if isinstance(series, list) and series and all(isinstance(s, dict) and "frames" in s for s in series):
        return min(s["frames"][0] for s in series), max(s["frames"][1] for s in series)
    log.warning("%s: run.json does not say which frames the live run processed; replaying from frame 0 to "
                "the end of the recording", run_dir)
    return 0, None


def replay_config(manifest: dict[str, Any], input: Path, out: Path) -> ServiceConfig:
    """The live run's recorded config, made a replay: ``input`` every frame, recorded to ``out``, nothing else.

    Hooks and registered sinks are left out (a hook's edits are in the edits log and replayed from it; the
    recorder is the replay's only output), the prompts file too (its edits are in the log as well).
    """
    data = dict(manifest["config"])
    data["prompts"] = None
    data["hooks"] = {**data.get("hooks", {}), "hooks": []}
    data["sinks"] = []
    recorded = ServiceConfig.from_mapping(data, where="run.json config")
    return recorded.with_overrides({
        "source": {"kind": "replay", "path": str(input), "as_fast_as_possible": True},
        "pipeline.backpressure": "every-frame",
        "recorder.out_dir": str(out.parent),
        "recorder.enabled": True,
        "publisher.enabled": False,
        "control.enabled": False,
    })


def run_replay(input: Path, replay: Path, out: Path, progress: bool = True,
               overrides: Mapping[str, Any] | None = None) -> Path:
    """Re-run the live session recorded in the run folder ``replay`` on its recording ``input``; returns the run.

    The live run's config (backend and its options, quotas, statistics, calibration) and its edits at the same
    frames (``edits.jsonl``, `io.edits_log.replay_plan`): every edit the live pipeline decided at frame F is
    handed to the backend again with frame F, before F is segmented (those rejected there are rejected again);
    refusals decided before their frame (quotas, on the client's request) are reported again as recorded.
    Every frame from the live run's first result to its last is processed (every-frame): for a live run that
    was itself every-frame and lost no frame, the trajectories are identical (tests/test_provenance_replay.py).
    ``overrides`` (dotted config keys) apply on top, for settings that do not change results (the batch's
    ``recorder.mask_writer``).
    """
    from sam4em_live.service.builder import build_service, build_source

    run_dir, out, input = Path(replay), Path(out), Path(input).absolute()
    if out.exists():
        raise ValueError(f"output directory already exists: {out} (choose a new --out)")
    try:
        manifest = json.loads((run_dir / "run.json").read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ReplayError(f"{run_dir}: no readable run.json ({exc})") from None
    edits_name = (manifest.get("files") or {}).get("edits") or EDITS_LOG
    if not isinstance(manifest.get("config"), dict) or not (run_dir / edits_name).is_file():
        raise ReplayError(f"{run_dir}: not a run folder with its config and {EDITS_LOG} (recorded by an older "
                          "version?); nothing to replay")
    plan = replay_plan(read_edits_log(run_dir / edits_name))
    _warn_if_frames_were_lost(manifest, run_dir)
    first, last = _recorded_frames(manifest, run_dir)
    _, n_frames = probe_frames(input)
    cfg = replay_config(manifest, input, out).with_overrides(dict(overrides or {}))
    out.parent.mkdir(parents=True, exist_ok=True)
    source = build_source(cfg)
    max_frames = None if last is None else last - first + 1
    built = build_service(cfg, source=FramesFrom(source, first) if first > 0 else source, edits=plan.edits,
                          run_id=out.name, max_frames=max_frames,
                          extra_sinks=[ProgressSink(max_frames or n_frames, progress)])
    built.service.edits.add_recorded_refusals(plan.refusals)
    # The replay's own folder says what it replays (annotations.jsonl; run.json's config names the recording).
    built.service.annotate(f"replay of the live run {run_dir.absolute()} ({len(plan.edits)} edits re-run, "
                           f"{len(plan.refusals)} refusals repeated)")
    try:
        built.service.run()
    finally:
        built.close()
    return built.run_dir or out


def _warn_if_frames_were_lost(manifest: dict[str, Any], run_dir: Path) -> None:
    config, counts = manifest["config"], manifest.get("counts") or {}
    lost = {key: counts[key] for key in ("frames_dropped", "frames_gap") if counts.get(key)}
    backpressure = (config.get("pipeline") or {}).get("backpressure")
    if lost or backpressure != "every-frame":
        log.warning("%s: the live run was %s (%s); the replay processes every frame, so its trajectories may "
                    "differ from the live run's", run_dir, backpressure,
                    ", ".join(f"{k} {v}" for k, v in lost.items()) or "no frames lost")


def initial_prompts_from_truth(preset: str, seed: int) -> list[Prompt]:
    """Point prompts at the true centroids on frame 0 of a simulated stream (demo only)."""
    from sam4em_live.sim.presets import get_preset
    from sam4em_live.sim.video import make_prompts, simulate_video

    video = simulate_video(get_preset(preset), 1, seed)
    return make_prompts(video, frames=(0,), kind="point")


def run_demo(
    seconds: float = 20.0, backend: str | None = None, out: Path = Path("runs"), preset: str = "demo",
    fps: float | None = None, seed: int = 0, echo: Callable[[str], None] = print, run_id: str | None = None,
) -> Path | None:
    """Stand-in camera (simulator) → ZeroMQ → service → publisher + recorder, on loopback.

    The run folder is ``out/run_id`` (``run_id`` None: a new run id).
    """
    from sam4em_live.service.builder import build_service
    from sam4em_live.sim.source import SimulatedSource
    from sam4em_live.sources.camera import FramePublisher, pump

    camera_source: FrameSource = SimulatedSource(preset, seed=seed, fps=fps)
    publisher = FramePublisher("tcp://127.0.0.1:0")
    cfg = ServiceConfig().with_overrides({
        "source": {"kind": "zmq", "endpoint": publisher.endpoint},
        "segmenter.backend": backend,
        "recorder.out_dir": str(out),
        "publisher.endpoint": "tcp://127.0.0.1:0",
        "control.endpoint": "tcp://127.0.0.1:0",
    })
    built = build_service(cfg, edits=initial_prompts_from_truth(preset, seed), extra_sinks=[StatusEcho(echo)],
                          run_id=run_id)
    assert built.publisher is not None  # publisher.enabled is the default
    echo(f"demo: camera on {publisher.endpoint}, results on {built.publisher.endpoint}, "
         f"control on {getattr(built.control, 'endpoint', '-')}; streaming for {seconds:.0f} s")
    stop_camera = threading.Event()
    camera = threading.Thread(target=pump, args=(camera_source, publisher, stop_camera),
                              kwargs={"series_start_delay_s": 0.5}, name="demo-camera", daemon=True)
    built.service.start()
    camera.start()
    try:
        time.sleep(seconds)
    except KeyboardInterrupt:
        echo("interrupted")
    finally:
        stop_camera.set()
        camera.join(5)
        built.service.finish()
        built.close()
        publisher.close()
    status = built.service.status()
    echo(f"demo done: {status.frames_processed} frames processed, {status.frames_dropped} dropped, "
         f"{status.frames_gap} missing upstream, particles {list(status.particles)}")
    if built.service.error is not None:
        raise RuntimeError(f"service failed: {built.service.error}")
    return built.run_dir
