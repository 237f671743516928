"""End-to-end speed of the service: ZeroMQ in -> segment -> measure -> statistics -> publish -> record.

A sender process plays a cached simulated clip (default ``multi-1024``: 1024² uint16, 4 particles)
forwards then backwards (ping-pong, so trajectories stay continuous) over tcp loopback at ``rate``
frames/s (0: as fast as the service takes them; PUSH/PULL, so nothing is lost upstream). The service is
assembled by `build_service` as ``serve`` does, with the publisher and the recorder on. Latency is the
acquisition timestamp -> result published and recorded; the first ``warmup_frames`` (prompt seeding,
sinks starting) are left out of the percentiles. ``late_prompt_frame`` prompts the last particle on that
frame instead of frame 0 (the cost of adding a particle mid-stream). ``dump`` (a path) writes per-frame
latency and stage times as CSV.

What a click costs (issue 23): ``frames_dropped_at_start`` (frames lost up to the warm-up's end, where the
frame-0 prompts land), ``prompt_mask_delay_frames`` (the most frames, over the frame-0 prompts, between the
first frame processed and the first with that particle's mask: 0 when every prompt is seeded on its own
frame; live runs seed prompts beside the frame loop and they land a few frames later) and, with
``late_prompt_frame``, ``late_prompt_mask_delay_frames`` (frames from the late prompt's frame to its first mask).
``baseline`` (true) first runs the same stream without any prompt and reports its drops as
``baseline_*`` (the shared machine drops frames of its own; a click's cost is the difference).

Whose loss (``latest`` with a paced camera): the service's queue is `tests.frame_loss.LossLedger`, which notes
for every frame it drops whether the machine held the worker or the ingest thread off the cores long enough to
explain it, or the sender sent in a burst; ``frames_lost_by_service`` counts the rest (the service itself
too slow), ``frames_lost_by_machine`` and ``frames_lost_by_camera`` the others; ``landing_*`` the same over
the `LANDING_SPAN_FRAMES` frames from the frame-0 prompts' landing (where the new memories fill) and
``late_prompt_*`` over the 100 frames from the late prompt's frame.
"""


from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from tools.bench.data import simulated_clip
from tools.bench.figures import count, distribution, integer, mapping, number, text
from tools.bench.registry import Measurement, RunContext, benchmark
from tools.bench.schema import Metric, ParamValue

if TYPE_CHECKING:
    from collections.abc import Mapping

#: Frames from the frame-0 prompts' landing over which the ``landing_*`` losses are counted (the new memories fill).
LANDING_SPAN_FRAMES = 150


@benchmark("pipeline", "end to end over ZeroMQ with publisher and recorder: fps, latency percentiles",
           {"backend": "embedded", "options": {}, "preset": "multi-1024", "clip": 150, "frames": 2000,
            "rate": 0.0, "policy": "latest", "queue_frames": 8, "record": True, "masks": True,
            "switch_interval_s": 0.0005, "seed": 0, "worker_cpu": None, "own_process": False, "recycle": True,
            "late_prompt_frame": None, "warmup_frames": 100, "dump": None, "discovery": {},
            "baseline": False},
           quick={"frames": 1000, "rate": 200.0})
def pipeline(params: Mapping[str, ParamValue], context: RunContext) -> Measurement:
    clip = simulated_clip(context.cache, text(params, "preset"), integer(params, "clip"), integer(params, "seed"))
    late = params["late_prompt_frame"]
    late_frame = None if late is None else integer(params, "late_prompt_frame")
    prompts = _prompts(clip, late_frame)
    metrics: dict[str, Metric] = {}
    if params["baseline"]:  # the same stream without prompts first: drops that are the machine's, not a click's
        latency, status, _, _ = _run_service(params, context, clip, [], "baseline")
        base = _figures(latency, integer(params, "warmup_frames"), integer(params, "frames"))
        metrics.update({f"baseline_{k}": base[k] for k in ("frames_processed", "fps_after_warmup", "latency_ms_p99",
                                                            "frames_dropped_after_warmup", "stage_segment_ms_mean")})
        metrics["baseline_frames_dropped"] = count(status.frames_dropped, "frames", "lower")
        metrics["baseline_frames_dropped_at_start"] = count(
            status.frames_dropped - base["frames_dropped_after_warmup"].value, "frames", "lower")
        if late_frame is not None:
            metrics["baseline_late_prompt_frames_lost"] = _late_prompt(latency, late_frame)["late_prompt_frames_lost"]
    latency, status, run_dir, ledger = _run_service(params, context, clip, prompts, "prompted")
    n_sent = integer(params, "frames")
    if params["dump"]:
        latency.dump(Path(text(params, "dump")))
    metrics.update(_figures(latency, integer(params, "warmup_frames"), n_sent))
    metrics["frames_dropped"] = count(status.frames_dropped, "frames", "lower")
    metrics["frames_dropped_at_start"] = count(status.frames_dropped - metrics["frames_dropped_after_warmup"].value,
                                               "frames", "lower")
    metrics["particles"] = count(len(prompts))
    first = latency.indices[0] if latency.indices else 0
    early = [latency.first_mask.get(p.particle, n_sent) - first for p in prompts if (p.frame or 0) == 0]
    metrics["prompt_mask_delay_frames"] = count(max(early, default=0), "frames", "lower")
    if ledger is not None:
        landed = first + max(early, default=0)
        metrics.update(_whose_losses(ledger.losses, ""))
        metrics.update(_whose_losses(ledger.lost(landed, landed + LANDING_SPAN_FRAMES - 1), "landing_"))
    present = _present_fraction(run_dir, len(latency.latencies_ms), len(prompts))
    if present is not None:
        metrics["present_fraction"] = Metric(present, "fraction", "higher")
    if late_frame is not None:
        metrics.update(_late_prompt(latency, late_frame))
        last = max(p.particle for p in prompts)
        metrics["late_prompt_mask_delay_frames"] = count(latency.first_mask.get(last, n_sent) - late_frame,
                                                         "frames", "lower")
        if ledger is not None:
            metrics.update(_whose_losses(ledger.lost(late_frame, late_frame + 99), "late_prompt_"))
    return Measurement(metrics)


def _run_service(params: Mapping[str, ParamValue], context: RunContext, clip: Any, prompts: list[Any],
                 name: str) -> tuple[LatencySink, Any, Path | None, Any]:
    """One run of the service fed by the sender process: (latency sink, final status, run folder, the queue's
    `LossLedger`, None unless ``latest`` with a paced camera)."""
    from sam4em_live.config import ServiceConfig
    from sam4em_live.service.builder import build_service

    config = ServiceConfig.from_mapping({
        "source": {"kind": "zmq", "endpoint": "tcp://127.0.0.1:0", "socket": "pull", "mode": "bind"},
        "segmenter": {"backend": text(params, "backend"), "options": mapping(params, "options"),
                      "own_process": bool(params["own_process"])},
        "pipeline": {"backpressure": text(params, "policy"), "queue_frames": integer(params, "queue_frames"),
                     "gil_switch_interval_s": number(params, "switch_interval_s"),
                     "worker_cpu": params["worker_cpu"], "recycle_frame_buffers": bool(params["recycle"])},
        "publisher": {"endpoint": "tcp://127.0.0.1:0"},
        "recorder": {"enabled": bool(params["record"]), "out_dir": str(context.scratch / f"runs-{name}"),
                     "write_masks": bool(params["masks"])},
        "control": {"enabled": False},
        "discovery": mapping(params, "discovery"),  # e.g. {"mode": "propose"} (issue 21)
    })
    latency = LatencySink()
    n_sent = integer(params, "frames")
    built = build_service(config, edits=prompts, extra_sinks=[latency], stop_at_series_end=True)
    ledger = None
    if text(params, "policy") == "latest" and number(params, "rate") > 0:
        from tests.frame_loss import LossLedger

        ledger = built.service.queue = LossLedger(number(params, "rate"), integer(params, "queue_frames"))
    built.service.start()
    endpoint = _bound_endpoint(built.service.source)
    ready = mp.Event()
    sender = mp.Process(target=_sender, args=(endpoint, clip.pixels, n_sent, number(params, "rate"), ready))
    sender.start()
    ready.set()
    sender.join()
    built.service.wait(120)
    built.service.stop()
    built.close()
    return latency, built.service.status(), built.run_dir, ledger


def _whose_losses(losses: list[Any], prefix: str) -> dict[str, Metric]:
    """Frames dropped by the service itself, for the machine (core waits) and for the camera (bursts)."""
    machine = sum(loss.machine_lost for loss in losses)
    camera = sum(loss.camera_lost and not loss.machine_lost for loss in losses)
    return {f"{prefix}frames_lost_by_service": count(len(losses) - machine - camera, "frames", "lower"),
            f"{prefix}frames_lost_by_machine": count(machine, "frames"),
            f"{prefix}frames_lost_by_camera": count(camera, "frames")}


def _bound_endpoint(source: Any, timeout_s: float = 30.0) -> str:
    """The ZeroMQ source's endpoint once the service has bound it (port 0 becomes a real port)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        endpoint = str(getattr(source, "endpoint", None) or getattr(getattr(source, "inner", None), "endpoint", ""))
        if endpoint and not endpoint.endswith(":0"):
            return endpoint
        time.sleep(0.01)
    raise TimeoutError("the service did not bind its ZeroMQ source")


def _prompts(clip: Any, late_frame: int | None) -> list[Any]:
    """Point prompts on frame 0; with ``late_frame`` the last particle's prompt is on that frame."""
    prompts = clip.prompts((0,), "point")
    if late_frame is None:
        return prompts
    if not 0 < late_frame < clip.n_frames:
        raise ValueError(f"late_prompt_frame must lie inside the clip (1..{clip.n_frames - 1}), got {late_frame}")
    last = max(p.particle for p in prompts)
    late = [p for p in clip.prompts((late_frame,), "point") if p.particle == last]
    if not late:
        raise ValueError(f"particle {last} is not in the field on frame {late_frame}: choose another frame")
    return [p for p in prompts if p.particle != last] + late


def _sender(endpoint: str, clip: np.ndarray, n_frames: int, rate: float, ready: Any) -> None:
    import zmq

    from sam4em_live.wire import encode_frame, encode_series_end

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
        sock.send_multipart(encode_frame(clip[order[i % len(order)]], "bench", i, time.time()), copy=False)
    sock.send_multipart(encode_series_end("bench", n_frames))
    sock.close(linger=-1)
    ctx.term()


class LatencySink:
    """A sink (last in the list) noting acquisition -> published-and-recorded latency of every frame."""

    def __init__(self) -> None:
        self.latencies_ms: list[float] = []
        self.indices: list[int] = []
        self.done_s: list[float] = []
        self.stage_ms: dict[str, list[float]] = {}
        self.first_mask: dict[int, int] = {}  # particle -> index of the first frame with its mask

    def open(self, run: Any) -> None:
        pass

    def consume(self, result: Any) -> None:
        now = time.time()
        self.latencies_ms.append((now - result.frame.timestamp_s) * 1e3)
        self.done_s.append(now)
        self.indices.append(result.frame.index)
        for stage, ms in result.timings_ms.items():
            self.stage_ms.setdefault(stage, []).append(ms)
        for mask in result.masks:
            if mask.present and mask.particle not in self.first_mask:
                self.first_mask[mask.particle] = result.frame.index

    def on_status(self, status: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def dump(self, path: Path) -> None:
        """Per-frame CSV: index, done time (s, relative), latency and stage times (ms)."""
        stages = sorted(self.stage_ms)
        t0 = self.done_s[0] if self.done_s else 0.0
        with open(path, "w") as fh:
            fh.write(",".join(["index", "done_s", "latency_ms", *stages]) + "\n")
            for i, index in enumerate(self.indices):
                row = [str(index), f"{self.done_s[i] - t0:.4f}", f"{self.latencies_ms[i]:.3f}"]
                fh.write(",".join(row + [f"{self.stage_ms[k][i]:.3f}" for k in stages]) + "\n")


def _figures(latency: LatencySink, warmup: int, n_sent: int) -> dict[str, Metric]:
    n = len(latency.latencies_ms)
    all_ms = np.asarray(latency.latencies_ms or [np.nan])
    steady = all_ms[warmup:] if n > warmup else all_ms
    done = latency.done_s
    metrics = {
        "frames_processed": count(n, "frames", "higher"),
        "fps": Metric((n - 1) / (done[-1] - done[0]) if n > 1 else 0.0, "frames/s", "higher"),
        # After the warm-up: the first frame's prompts and the sinks' start-up take 0.15-0.6 s.
        "fps_after_warmup": Metric((n - 1 - warmup) / (done[-1] - done[warmup]) if n > warmup + 1 else 0.0,
                                   "frames/s", "higher"),
        "frames_dropped_after_warmup": count(_dropped_after(latency.indices, warmup, n_sent), "frames", "lower"),
        "warmup_latency_ms_max": Metric(float(np.max(all_ms[:warmup])) if n else float("nan"), "ms"),
    }
    metrics.update(distribution("latency_ms", steady.tolist(), "ms"))
    metrics.update({f"stage_{k}_ms_mean": Metric(float(np.mean(v)), "ms") for k, v in latency.stage_ms.items()})
    return metrics


def _late_prompt(latency: LatencySink, frame: int, span: int = 100) -> dict[str, Metric]:
    """What adding a particle on ``frame`` cost: frames not processed, worst latency over ``span`` frames."""
    pairs = list(zip(latency.indices, latency.latencies_ms, strict=True))
    window = [lat for i, lat in pairs if frame <= i < frame + span]
    before = [lat for i, lat in pairs if frame - span <= i < frame]
    return {"late_prompt_frames_lost": count(span - len(window), "frames", "lower"),
            "late_prompt_latency_ms_max": Metric(max(window, default=float("nan")), "ms"),
            "late_prompt_latency_ms_max_before": Metric(max(before, default=float("nan")), "ms")}


def _dropped_after(indices: list[int], warmup: int, n_sent: int) -> int:
    """Frames sent after the warm-up's last processed frame that were never processed."""
    if len(indices) <= warmup:
        return 0
    return (n_sent - 1 - indices[warmup - 1] if warmup else n_sent) - len(indices[warmup:])


def _present_fraction(run_dir: Path | None, n_frames: int, n_particles: int) -> float | None:
    if run_dir is None or not (Path(run_dir) / "trajectories.csv").exists() or n_frames == 0:
        return None
    with open(Path(run_dir) / "trajectories.csv") as table:
        rows = sum(1 for _ in table) - 1
    return rows / (n_frames * n_particles)
