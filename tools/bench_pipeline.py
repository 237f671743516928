"""End-to-end pipeline speed: ZeroMQ in → segmentation → measurement → publish → record.

A sender process plays a pre-rendered simulated clip (default preset
`multi-1024`: 1024x1024 uint16, 4 particles) forwards then backwards
(ping-pong, so trajectories stay continuous) over tcp loopback at a fixed rate
(``--rate``) or as fast as the service takes them (``--rate 0``, PUSH/PULL so
nothing is lost upstream). The service runs exactly as `serve` builds it, with
the results publisher and the recorder on. Latency is acquisition timestamp →
result published and recorded, per frame; the first ``--warmup-frames``
(prompt seeding, start-up) are reported separately from the percentiles.

Prints a summary and a final JSON line: fps (overall and after the warm-up), latency p50/p90/p99/max (ms).

    python tools/bench_pipeline.py [--backend embedded] [--frames 2000] [--rate 0]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from sam4em_live.config import ServiceConfig
from sam4em_live.results import FrameResult, RunInfo
from sam4em_live.service.builder import build_service
from sam4em_live.wire import encode_frame, encode_series_end


def _render(preset: str, n: int, seed: int, late_frame: int | None = None) -> tuple[np.ndarray, list[Any]]:
    """The clip and point prompts on frame 0; with ``late_frame`` the last particle's prompt is on that frame."""
    from sam4em_live.sim.presets import get_preset
    from sam4em_live.sim.video import make_prompts, simulate_video

    video = simulate_video(get_preset(preset), n, seed)
    prompts = make_prompts(video, frames=(0,), kind="point")
    if late_frame is not None:
        if not 0 < late_frame < n:
            raise SystemExit(f"--late-prompt-frame must lie inside the clip (1..{n - 1}), got {late_frame}")
        last = max(p.particle for p in prompts)
        late = [p for p in make_prompts(video, frames=(late_frame,), kind="point") if p.particle == last]
        if not late:
            raise SystemExit(f"particle {last} is not in the field on frame {late_frame}: choose another frame")
        prompts = [p for p in prompts if p.particle != last] + late
    return np.ascontiguousarray(video.frames), prompts


def _sender(endpoint: str, clip: np.ndarray, n_frames: int, rate: float, ready: Any) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, 16)
    sock.connect(endpoint)
    order = np.concatenate([np.arange(len(clip)), np.arange(len(clip) - 2, 0, -1)])
    ready.wait()
    t0 = time.perf_counter()
    for i in range(n_frames):
        if rate > 0:
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        frame = clip[order[i % len(order)]]
        sock.send_multipart(encode_frame(frame, "bench", i, time.time()), copy=False)
    sock.send_multipart(encode_series_end("bench", n_frames))
    sock.close(linger=-1)
    ctx.term()


class _LatencySink:
    """Records acquisition → (published + recorded) latency of every frame; last in the sink list."""

    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.indices: list[int] = []
        self.first_s = self.last_s = 0.0
        self.stage_ms: dict[str, list[float]] = {}
        self.done_s: list[float] = []

    def open(self, run: RunInfo) -> None:
        pass

    def consume(self, result: FrameResult) -> None:
        now = time.time()
        if not self.latencies_ms:
            self.first_s = time.perf_counter()
        self.last_s = time.perf_counter()
        self.latencies_ms.append((now - result.frame.timestamp_s) * 1e3)
        self.done_s.append(now)
        self.indices.append(result.frame.index)
        for k, v in result.timings_ms.items():
            self.stage_ms.setdefault(k, []).append(v)

    def on_status(self, status: Mapping[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="embedded")
    parser.add_argument("--options", default="{}", help="segmenter options as JSON")
    parser.add_argument("--preset", default="multi-1024")
    parser.add_argument("--clip", type=int, default=150, help="frames rendered (played ping-pong)")
    parser.add_argument("--frames", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=0.0, help="camera fps; 0 = as fast as accepted")
    parser.add_argument("--policy", default="latest", choices=["latest", "every-frame"])
    parser.add_argument("--queue-frames", type=int, default=8, help="pipeline.queue_frames")
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--no-masks", action="store_true", help="record trajectories but not masks.tif")
    parser.add_argument("--switch-interval-s", type=float, default=0.0005, help="pipeline.gil_switch_interval_s")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--worker-cpu", type=int, default=None,
                        help="pipeline.worker_cpu: pin the worker to this CPU, the rest (sender included) off it")
    parser.add_argument("--own-process", action="store_true", help="segmenter.own_process: backend in a child")
    parser.add_argument("--no-recycle", action="store_true", help="pipeline.recycle_frame_buffers = false")
    parser.add_argument("--late-prompt-frame", type=int, default=None,
                        help="prompt the last particle on this frame (< --clip) instead of frame 0: "
                             "the cost of adding a particle mid-stream")
    parser.add_argument("--dump", type=Path, default=None,
                        help="write per-frame index, acquisition time, latency and stage times (CSV) here")
    parser.add_argument("--warmup-frames", type=int, default=100,
                        help="first processed frames (prompt seeding, start-up) left out of the percentiles")
    args = parser.parse_args()

    clip, prompts = _render(args.preset, args.clip, args.seed, args.late_prompt_frame)
    out = Path(tempfile.mkdtemp(prefix="bench-pipeline-"))
    cfg = ServiceConfig.from_mapping({
        "source": {"kind": "zmq", "endpoint": "tcp://127.0.0.1:0", "socket": "pull", "mode": "bind"},
        "segmenter": {"backend": args.backend, "options": json.loads(args.options),
                      "own_process": args.own_process},
        "pipeline": {"backpressure": args.policy, "queue_frames": args.queue_frames,
                     "gil_switch_interval_s": args.switch_interval_s, "worker_cpu": args.worker_cpu,
                     "recycle_frame_buffers": not args.no_recycle},
        "publisher": {"endpoint": "tcp://127.0.0.1:0"},
        "recorder": {"enabled": not args.no_record, "out_dir": str(out), "write_masks": not args.no_masks},
        "control": {"enabled": False},
    })
    latency = _LatencySink()
    built = build_service(cfg, edits=prompts, extra_sinks=[latency], stop_at_series_end=True)
    source = built.service.source
    built.service.start()
    while getattr(source, "_socket", None) is None:  # wait until the PULL socket is bound
        time.sleep(0.01)
    ready = mp.Event()
    sender = mp.Process(target=_sender, args=(source.endpoint, clip, args.frames, args.rate, ready))
    sender.start()
    ready.set()
    sender.join()
    built.service.wait(120)
    built.service.stop()
    built.close()
    status = built.service.status()
    all_lat = np.asarray(latency.latencies_ms)
    n = len(all_lat)
    lat = all_lat[args.warmup_frames:] if n > args.warmup_frames else all_lat
    fps = (n - 1) / (latency.last_s - latency.first_s) if n > 1 else 0.0
    # Steady state: processed frames per second after the warm-up (the first frame's prompts and the
    # sinks' start-up take 0.15-0.6 s, during which the camera's frames queue and some are dropped).
    w = args.warmup_frames
    fps_steady = (n - 1 - w) / (latency.done_s[-1] - latency.done_s[w]) if n > w + 1 else 0.0
    stages = {k: round(float(np.mean(v)), 3) for k, v in latency.stage_ms.items()}
    summary = {
        "benchmark": "pipeline", "backend": args.backend, "preset": args.preset,
        "frame": f"{clip.shape[2]}x{clip.shape[1]} {clip.dtype}", "particles": len(prompts),
        "camera_rate_fps": args.rate or "max", "policy": args.policy, "recording": not args.no_record,
        "frames_sent": args.frames, "frames_processed": n, "frames_dropped": status.frames_dropped,
        "frames_dropped_after_warmup": _dropped_after(latency.indices, args.warmup_frames, args.frames),
        "worker_cpu": args.worker_cpu, "own_process": args.own_process, "recycle_frame_buffers": not args.no_recycle,
        "fps": round(fps, 1), "fps_after_warmup": round(fps_steady, 1),
        "latency_ms_p50": round(float(np.percentile(lat, 50)), 2),
        "latency_ms_p90": round(float(np.percentile(lat, 90)), 2),
        "latency_ms_p99": round(float(np.percentile(lat, 99)), 2),
        "latency_ms_max": round(float(lat.max()), 2), "warmup_frames": args.warmup_frames,
        "warmup_latency_ms_max": round(float(all_lat[: args.warmup_frames].max()), 2), "stage_ms_mean": stages,
        "present_fraction": _present_fraction(built.run_dir, n, len(prompts)),
    }
    if args.late_prompt_frame is not None:
        summary["late_prompt"] = _late_prompt(latency, args.late_prompt_frame)
    if args.dump is not None:
        _dump(args.dump, latency)
    print(f"processed {n} frames at {fps:.1f} fps ({fps_steady:.1f} after the warm-up); latency p50 {summary['latency_ms_p50']} ms, "
          f"p99 {summary['latency_ms_p99']} ms; stages {stages}")
    print(json.dumps(summary))


def _dump(path: Path, latency: _LatencySink) -> None:
    """Per-frame CSV for spike analysis: index, done time (s, relative), latency and stage times (ms)."""
    stages = sorted(latency.stage_ms)
    t0 = latency.done_s[0] if latency.done_s else 0.0
    with open(path, "w") as fh:
        fh.write(",".join(["index", "done_s", "latency_ms", *stages]) + "\n")
        for i, index in enumerate(latency.indices):
            row = [str(index), f"{latency.done_s[i] - t0:.4f}", f"{latency.latencies_ms[i]:.3f}"]
            row += [f"{latency.stage_ms[k][i]:.3f}" for k in stages]
            fh.write(",".join(row) + "\n")


def _late_prompt(latency: _LatencySink, frame: int, span: int = 100) -> dict[str, Any]:
    """What adding a particle on ``frame`` cost: frames not processed and the worst latency over ``span`` frames."""
    window = [(i, lat) for i, lat in zip(latency.indices, latency.latencies_ms, strict=True) if frame <= i < frame + span]
    before = [lat for i, lat in zip(latency.indices, latency.latencies_ms, strict=True) if frame - span <= i < frame]
    return {"frame": frame, "span_frames": span, "frames_lost": span - len(window),
            "latency_ms_max": round(max((lat for _, lat in window), default=float("nan")), 2),
            "latency_ms_max_before": round(max(before, default=float("nan")), 2)}


def _dropped_after(indices: list[int], warmup: int, n_sent: int) -> int:
    """Frames sent after the warm-up's last processed frame that were never processed."""
    if len(indices) <= warmup:
        return 0
    after = indices[warmup:]
    return (n_sent - 1 - indices[warmup - 1] if warmup else n_sent) - len(after)


def _present_fraction(run_dir: Path | None, n_frames: int, n_particles: int) -> float | None:
    if run_dir is None or not (run_dir / "trajectories.csv").exists() or n_frames == 0:
        return None
    rows = sum(1 for _ in open(run_dir / "trajectories.csv")) - 1
    return round(rows / (n_frames * n_particles), 4)


if __name__ == "__main__":
    main()
