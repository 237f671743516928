"""Whole runs as library functions: offline ``track`` and the loopback ``demo``.

The CLI commands are thin wrappers around these, and the tests call them
directly.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sam4em_live.config import ServiceConfig
from sam4em_live.io.prompts_file import load_prompts
from sam4em_live.particles import PromptError

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

    from sam4em_live.particles import Prompt
    from sam4em_live.results import FrameResult, RunInfo
    from sam4em_live.sources.base import FrameSource


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
    from sam4em_live.service.builder import build_service

    out = Path(out)
    if out.exists():
        raise ValueError(f"output directory already exists: {out} (choose a new --out)")
    shape, n_frames = probe_frames(Path(input))
    edits = load_prompts(prompts, shape)
    beyond = sorted({e.frame for e in edits if e.frame is not None and e.frame >= n_frames})
    if beyond:  # it would never be applied: a run of 0 trajectory rows that looks like a success
        raise PromptError(f"{prompts}: prompt(s) for frame(s) {', '.join(map(str, beyond[:5]))}"
                          f"{' ...' if len(beyond) > 5 else ''} after the last frame of {input} "
                          f"({n_frames} frames, 0-{n_frames - 1})")
    base = ServiceConfig.from_file(config_path) if config_path else ServiceConfig()
    cfg = base.with_overrides({
        "source": {"kind": "replay", "path": str(input), "as_fast_as_possible": True, "fps": fps},
        "pipeline.backpressure": "every-frame",
        "segmenter.backend": backend,
        "recorder.out_dir": str(out.parent),
        "recorder.enabled": True,
        "publisher.enabled": False,
        "control.enabled": False,
        "calibration.pixel_size_nm": pixel_size_nm,
        "calibration.fps": fps,
        **(overrides or {}),
    }).with_segmenter_options(segmenter_options or {})
    out.parent.mkdir(parents=True, exist_ok=True)
    built = build_service(cfg, edits=edits, run_id=out.name, extra_sinks=[ProgressSink(n_frames, progress)])
    try:
        built.service.run()
    finally:
        built.close()
    return built.run_dir or out


def initial_prompts_from_truth(preset: str, seed: int) -> list[Prompt]:
    """Point prompts at the true centroids on frame 0 of a simulated stream (demo only)."""
    from sam4em_live.sim.presets import get_preset
    from sam4em_live.sim.video import make_prompts, simulate_video

    video = simulate_video(get_preset(preset), 1, seed)
    return make_prompts(video, frames=(0,), kind="point")


def run_demo(
    seconds: float = 20.0, backend: str | None = None, out: Path = Path("runs"), preset: str = "demo",
    fps: float | None = None, seed: int = 0, echo: Callable[[str], None] = print,
) -> Path | None:
    """Stand-in camera (simulator) → ZeroMQ → service → publisher + recorder, on loopback."""
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
    built = build_service(cfg, edits=initial_prompts_from_truth(preset, seed), extra_sinks=[StatusEcho(echo)])
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
        built.service.stop()
        built.close()
        publisher.close()
    status = built.service.status()
    echo(f"demo done: {status.frames_processed} frames processed, {status.frames_dropped} dropped, "
         f"{status.frames_gap} missing upstream, particles {list(status.particles)}")
    if built.service.error is not None:
        raise RuntimeError(f"service failed: {built.service.error}")
    return built.run_dir
