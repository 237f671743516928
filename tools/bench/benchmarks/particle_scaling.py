"""Particles vs speed, end to end (issue 23): fps and p99 latency against the number of particles and frame size.

For every frame size in ``sizes`` and particle count in ``particles`` a synthetic clip is made
(`particle_clip`: ``clip_frames`` uint16 frames, Gaussian detector noise around ``background`` counts,
N dark discs of ``radius_px`` on a grid, at least ~3 diameters apart, each on its own slow random walk) and
the real service (`build_service`, as ``serve`` assembles it: embedded backend, publisher and recorder
with masks on) tracks it, N point prompts on frame 0, with frames arriving over ZeroMQ (PUSH/PULL over tcp
loopback) from a sender process that plays the clip forwards then backwards. Two runs per case:

- ``every-frame``, unpaced: the **max sustainable fps**. The sender keeps the service ``ahead`` frames
  ahead of what it has finished (a cross-process semaphore the result sink releases), so nothing spills
  to disk and the worker never waits for a frame: the processed rate is what the service sustains.
- ``latest`` at a ``rate`` fps camera (default 80): **latency** acquisition timestamp -> result
  published and recorded (p50/p99/max), the processed rate and the frames dropped; queue ``queue_frames``
  (``serve``'s default 8).

Live (``latest``) the prompts are seeded beside the frame loop and land frames later (`service.seeding`;
50 prompts: seconds on a busy worker): the frames before the first with all N present are cheap for the
wrong reason and are part of the warm-up (``camera_landed_after_frames`` says how many; before this, the
50- and 100-particle camera rows measured frames with no particle yet). Each run sends for ``seconds`` and
on until the service has processed ``warmup_frames + min_frames`` frames after the landing (at most ``max_frames`` and ``max_seconds``), so a slow case is measured on fewer frames (a 100-particle 2048² case on
a loaded 2-core machine: ~15 frames; its p99 is its maximum). The warm-up is left out of every figure:
the frames finished in the first ``warmup_s`` after the first result (sinks starting), and never fewer
than ``warmup_frames`` (45): the embedded backend's frames after a prompt cost 3-6x its steady state for
~40 frames (16 particles at 1024², thread CPU per frame in blocks of 10: 31, 17, 18, 16, then 4-6 ms).
``tracked_fraction`` (particles present per frame / N after the warm-up) says the backend really tracked
all N: a case whose seeding failed would be cheap for the wrong reason. The every-frame run also reports
where a frame's time goes outside the backend: the worker's stage means (``stage_segment_ms_mean``,
``measure``, ``stats``, ``events``: wall ms) and the CPU per frame of each thread and child process
(``cpu_ms_per_frame.<thread>``: the service's worker ``sam4em-service``, ZeroMQ's I/O, the recorder, the
sender and mask-writer processes ``child:python``; `tools.bench.thread_cpu`), so a change outside
`Segmenter.track` shows where it lands.

``python -m tools.bench.benchmarks.particle_scaling --profile N SIZE`` (`particle_probes`) prints where one frame's time goes
with N particles (cProfile of `Segmenter.track` alone, on the same synthetic frames); ``--ab REV N SIZE
[FRAMES]`` compares `Segmenter.track`'s thread CPU per frame (mean, median, p99, max) with a git revision's
(``A..B``: two revisions),
interleaved frame by frame in one process (a ratio that holds on a shared machine; use FRAMES >= 300 for a
p99 that includes the 128-frame shape refresh cycle). ``--spikes N SIZE [FRAMES]`` lists the costliest frames
of `Segmenter.track` and its upkeep and what each held (shape refreshes, learning, the two maps' updates):
what sets the p99 at a camera rate the worker keeps up with.
"""

from __future__ import annotations

import multiprocessing as mp
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from tools.bench import thread_cpu
from tools.bench.benchmarks.particle_clips import _prompts, particle_clip
from tools.bench.benchmarks.pipeline import _bound_endpoint
from tools.bench.figures import count, distribution, integer, number, strings
from tools.bench.registry import Measurement, RunContext, benchmark
from tools.bench.schema import Metric, ParamValue

if TYPE_CHECKING:
    from collections.abc import Mapping


#: Frames between two samples of the threads' CPU time (a sample reads /proc for each thread: ~0.2 ms).
CPU_SAMPLE_FRAMES = 20


class ScalingSink:
    """The last sink: latency acquisition -> published-and-recorded, and particles present, per frame.

    Each finished frame releases one credit of the sender's semaphore (every-frame runs), so the sender
    stays a fixed number of frames ahead of the service.
    """

    def __init__(self, credits: Any, processed: Any, particles: int, cpu_every: int = CPU_SAMPLE_FRAMES) -> None:
        self.credits = credits
        self.cpu_every = cpu_every
        self.processed = processed  # frames finished since every prompt landed (the sender's stop criterion)
        self.particles = particles
        #: Frames finished before the first one with every particle present (live, prompts are seeded beside
        #: the frame loop and land frames later; until then frames are cheap for the wrong reason).
        self.landed_after: int | None = None
        self.latencies_ms: list[float] = []
        self.done_s: list[float] = []
        self.indices: list[int] = []
        self.present: list[int] = []
        self.stage_ms: dict[str, list[float]] = {}
        #: (frames finished, CPU seconds by thread) every ``cpu_every`` frames: where the CPU goes.
        self.cpu_samples: list[tuple[int, dict[str, float]]] = []

    def open(self, run: Any) -> None:
        pass

    def consume(self, result: Any) -> None:
        now = time.time()
        self.latencies_ms.append((now - result.frame.timestamp_s) * 1e3)
        self.done_s.append(now)
        self.indices.append(result.frame.index)
        self.present.append(sum(1 for mask in result.masks if mask.present))
        if self.landed_after is None and self.present[-1] >= self.particles:
            self.landed_after = len(self.present) - 1
        for stage, ms in result.timings_ms.items():
            self.stage_ms.setdefault(stage, []).append(ms)
        if len(self.done_s) % self.cpu_every == 0:
            self.cpu_samples.append((len(self.done_s), thread_cpu.sample()))
        if self.landed_after is not None:
            with self.processed.get_lock():
                self.processed.value += 1
        if self.credits is not None:
            self.credits.release()

    def on_status(self, status: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _sender(endpoint: str, clip: np.ndarray, rate: float, seconds: float, max_seconds: float, min_processed: int,
            max_frames: int, credits: Any, processed: Any, ready: Any) -> None:
    """Send the clip ping-pong, paced at ``rate`` or by ``credits``, for ``seconds`` and until the service
    has processed ``min_processed`` frames (at most ``max_seconds`` and ``max_frames`` frames)."""
    import zmq

    from sam4em_live.wire import encode_frame, encode_series_end

    ctx = zmq.Context()
    sock = ctx.socket(zmq.PUSH)
    sock.setsockopt(zmq.SNDHWM, 4)
    sock.connect(endpoint)
    order = np.concatenate([np.arange(len(clip)), np.arange(len(clip) - 2, 0, -1)])
    ready.wait()
    t0 = time.perf_counter()
    sent = 0
    def more() -> bool:
        elapsed = time.perf_counter() - t0
        return sent < max_frames and elapsed < max_seconds and (elapsed < seconds or processed.value < min_processed)

    while more():
        if rate > 0:
            delay = t0 + sent / rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        elif credits is not None and not credits.acquire(timeout=max_seconds):
            break
        sock.send_multipart(encode_frame(clip[order[sent % len(order)]], "bench", sent, time.time()), copy=False)
        sent += 1
    sock.send_multipart(encode_series_end("bench", sent))
    sock.close(linger=-1)
    ctx.term()


def _run(params: Mapping[str, ParamValue], context: RunContext, clip: np.ndarray, prompts: list[Any],
         policy: str, rate: float) -> tuple[ScalingSink, Any]:
    """One service run over ``clip``; returns the sink and the final status."""
    from sam4em_live.config import ServiceConfig
    from sam4em_live.service.builder import build_service

    ahead = integer(params, "ahead")
    config = ServiceConfig.from_mapping({
        "source": {"kind": "zmq", "endpoint": "tcp://127.0.0.1:0", "socket": "pull", "mode": "bind"},
        # own_process: the backend in a child process (`segment.process_host`), segmenting the next frame
        # while this one is measured, published and recorded (the second core's share, issue 23).
        "segmenter": {"backend": "embedded", "own_process": bool(params["own_process"])},
        # every-frame: the queue holds the `ahead` frames in flight; latest: the configured queue (serve's 8).
        "pipeline": {"backpressure": policy,
                     "queue_frames": max(ahead, 2) if policy == "every-frame" else integer(params, "queue_frames"),
                     "gil_switch_interval_s": number(params, "switch_interval_s")},
        "publisher": {"endpoint": "tcp://127.0.0.1:0"},
        "recorder": {"enabled": bool(params["record"]), "out_dir": str(context.scratch / "runs"),
                     "write_masks": bool(params["record"])},
        "control": {"enabled": False},
        # The prompts are the run's own, on frame 0: no admission gate (it is for clients adding particles).
        "quotas": {"max_worker_load": 1.0, "max_particles": max(128, len(prompts))},
    })
    credits = mp.Semaphore(ahead) if policy == "every-frame" else None
    processed = mp.Value("i", 0)
    sink = ScalingSink(credits, processed, len(prompts), min(CPU_SAMPLE_FRAMES, max(integer(params, "warmup_frames"), 1)))
    built = build_service(config, edits=prompts, extra_sinks=[sink], stop_at_series_end=True)
    built.service.start()
    ready = mp.Event()
    seconds = number(params, "seconds")
    min_processed = integer(params, "warmup_frames") + integer(params, "min_frames")
    sender = mp.Process(target=_sender, args=(_bound_endpoint(built.service.source), clip, rate, seconds,
                                              number(params, "max_seconds"), min_processed,
                                              integer(params, "max_frames"), credits, processed, ready))
    sender.start()
    ready.set()
    sender.join(number(params, "max_seconds") + 60)
    # The frames still queued when the sender stops: up to `ahead` (every-frame) or the queue (latest).
    built.service.wait(120)
    built.service.stop()
    built.close()
    if sender.is_alive():
        sender.terminate()
    return sink, built.service.status()


def _warmup_frames(done_s: list[float], at_least: int, seconds: float, landed_after: int = 0) -> int:
    """Frames finished in the first ``seconds`` after the first result, and never fewer than ``at_least``
    frames after the prompts landed (``landed_after`` frames finished before the first with all of them)."""
    within = int(np.searchsorted(np.asarray(done_s) - done_s[0], seconds)) if done_s else 0
    return max(landed_after + at_least, within)


def _cpu_per_frame(sink: ScalingSink, warmup: int, least_share: float = 0.01) -> list[tuple[str, float]]:
    """CPU ms per frame finished after the warm-up, by thread (and child process), largest first.

    Between the first CPU sample at or after the warm-up's end and the last one; threads with less than
    ``least_share`` of the total are summed as ``other``; ``all`` is the total of this process and its
    children (the sender process included: it shares the cores).
    """
    samples = [(n, cpu) for n, cpu in sink.cpu_samples if n >= warmup]
    if len(samples) < 2 or not samples[0][1]:
        return []
    (n0, first), (n1, last) = samples[0], samples[-1]
    spent = {name: 1e3 * s / (n1 - n0) for name, s in thread_cpu.difference(last, first).items()}
    total = sum(spent.values())
    named = sorted(((name, ms) for name, ms in spent.items() if ms >= least_share * total), key=lambda p: -p[1])
    other = total - sum(ms for _, ms in named)
    return [("all", total), *[(name.replace(" ", "_"), ms) for name, ms in named], ("other", other)]


def _case_figures(key: str, sink: ScalingSink, status: Any, params: Mapping[str, ParamValue], particles: int,
                  paced: bool) -> dict[str, Metric]:
    n = len(sink.done_s)
    if sink.landed_after is None:
        raise RuntimeError(f"{key}: the {particles} prompts never all showed on a frame ({n} frames processed)")
    warmup = _warmup_frames(sink.done_s, integer(params, "warmup_frames"), number(params, "warmup_s"),
                            sink.landed_after)
    if n < warmup + 2:
        raise RuntimeError(f"{key}: only {n} frames processed, fewer than the warm-up + 2 = {warmup + 2}; "
                           "give it more seconds or min_frames")
    done, steady = sink.done_s, sink.latencies_ms[warmup:]
    fps = (n - 1 - warmup) / (done[-1] - done[warmup])
    tracked = float(np.mean(sink.present[warmup:])) / particles
    if not paced:
        return {f"{key}.max_fps": Metric(fps, "frames/s", "higher"),
                f"{key}.max_fps_frames": count(n - warmup, "frames"),
                f"{key}.tracked_fraction": Metric(tracked, "fraction", "higher"),
                **{f"{key}.stage_{stage}_ms_mean": Metric(float(np.mean(ms[warmup:])), "ms")
                   for stage, ms in sink.stage_ms.items()},
                **{f"{key}.cpu_ms_per_frame.{name}": Metric(ms, "ms") for name, ms in _cpu_per_frame(sink, warmup)}}
    metrics = {f"{key}.camera_processed_fps": Metric(fps, "frames/s", "higher"),
               f"{key}.camera_frames": count(n - warmup, "frames"),
               f"{key}.camera_tracked_fraction": Metric(tracked, "fraction", "higher"),
               f"{key}.camera_landed_after_frames": count(sink.landed_after, "frames"),
               # Frames lost between the first and the last measured one (the warm-up's drops are not counted).
               f"{key}.camera_frames_dropped": count(sink.indices[-1] - sink.indices[warmup] + 1 - (n - warmup),
                                                     "frames", "lower"),
               f"{key}.camera_frames_dropped_all": count(status.frames_dropped, "frames", "lower")}
    metrics.update({f"{key}.camera_{name}": metric for name, metric in
                    distribution("latency_ms", steady, "ms").items() if not name.endswith(("_mean", "_p90"))})
    return metrics


@benchmark("particle-scaling", "end to end, embedded: max fps and p99 latency at an 80 fps camera vs particles "
           "and frame size (issue 23)",
           {"sizes": [1024, 2048], "particles": [1, 4, 16, 50, 100], "rate": 80.0, "seconds": 5.0, "max_seconds": 150.0,
            "min_frames": 15, "max_frames": 20000, "warmup_frames": 45, "warmup_s": 1.0, "ahead": 4, "queue_frames": 8,
            "clip_frames": 16, "record": True,
            "switch_interval_s": 0.0005, "seed": 0, "own_process": False})
def particle_scaling(params: Mapping[str, ParamValue], context: RunContext) -> Measurement:
    metrics: dict[str, Metric] = {}
    for size in (int(s) for s in strings(params, "sizes")):
        for particles in (int(p) for p in strings(params, "particles")):
            clip, centres = particle_clip(size, particles, integer(params, "clip_frames"),
                                          seed=integer(params, "seed"))
            prompts = _prompts(centres[0])
            key = f"size{size}.particles{particles}"
            sink, status = _run(params, context, clip, prompts, "every-frame", 0.0)
            metrics.update(_case_figures(key, sink, status, params, particles, paced=False))
            sink, status = _run(params, context, clip, prompts, "latest", number(params, "rate"))
            metrics.update(_case_figures(key, sink, status, params, particles, paced=True))
    return Measurement(metrics)


def _cases(metrics: Mapping[str, Metric]) -> dict[tuple[int, int], dict[str, float]]:
    """{(size, particles): {figure: value}} from a result's metric names ``sizeS.particlesN.figure``."""
    cases: dict[tuple[int, int], dict[str, float]] = {}
    for name, metric in metrics.items():
        size, particles, figure = name.split(".", 2)
        cases.setdefault((int(size.removeprefix("size")), int(particles.removeprefix("particles"))), {})[figure] = \
            metric.value
    return cases


def table(metrics: Mapping[str, Metric]) -> str:
    """The docs' Markdown table of one result."""
    lines = ["| frame | particles | max fps (every-frame) | p50 / p99 latency at 80 fps (ms) | processed fps at 80 fps "
             "| dropped at 80 fps | frames measured (max fps / 80 fps) |", "|---|---|---|---|---|---|---|"]
    for (size, particles), f in sorted(_cases(metrics).items()):
        lines.append(f"| {size}² | {particles} | {f['max_fps']:.0f} | {f['camera_latency_ms_p50']:.1f} / "
                     f"{f['camera_latency_ms_p99']:.1f} | {f['camera_processed_fps']:.0f} | "
                     f"{f['camera_frames_dropped']:.0f} | {f['max_fps_frames']:.0f} / {f['camera_frames']:.0f} |")
    return "\n".join(lines)


def plot(metrics: Mapping[str, Metric], path: str, title: str) -> None:
    """Max fps and p99 latency at 80 fps against particles, one line per frame size, with the issue-23 targets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = _cases(metrics)
    figure, (fps_axis, p99_axis) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for size in sorted({s for s, _ in cases}):
        counts = sorted(n for s, n in cases if s == size)
        fps_axis.plot(counts, [cases[size, n]["max_fps"] for n in counts], "o-", label=f"{size}²")
        p99_axis.plot(counts, [cases[size, n]["camera_latency_ms_p99"] for n in counts], "o-", label=f"{size}²")
    fps_axis.plot([4, 50], [400, 100], "k*", markersize=12, label="target (1024²)")
    fps_axis.axhline(80, color="grey", linestyle=":", label="80 fps camera")
    fps_axis.set(xscale="log", yscale="log", xlabel="particles", ylabel="max sustainable fps (every-frame)")
    p99_axis.axhline(15, color="k", linestyle="--", label="target p99 ≤ 15 ms (≤ 50 particles)")
    p99_axis.set(xscale="log", yscale="log", xlabel="particles", ylabel="p99 latency at an 80 fps camera (ms)")
    for axis in (fps_axis, p99_axis):
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(title, fontsize=10)
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    import sys
    from pathlib import Path

    from tools.bench.benchmarks.particle_probes import (
        compare_landing,
        compare_track,
        costliest_frames,
        profile_track,
    )
    from tools.bench.schema import load_results

    if len(sys.argv) >= 4 and sys.argv[1] == "--profile":
        print(profile_track(int(sys.argv[2]), int(sys.argv[3])))
    elif len(sys.argv) >= 3 and sys.argv[1] == "--ab-landing":  # REV [PRESET [FRAMES]]
        landing = sys.argv[2:] + ["multi-1024", "450"][len(sys.argv) - 3:]
        print(compare_landing(landing[0], landing[1], int(landing[2])))
    elif len(sys.argv) >= 5 and sys.argv[1] == "--ab":  # REV PARTICLES SIZE [FRAMES]
        print(compare_track(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), *(int(a) for a in sys.argv[5:6])))
    elif len(sys.argv) >= 4 and sys.argv[1] == "--spikes":  # PARTICLES SIZE [FRAMES]
        print(costliest_frames(int(sys.argv[2]), int(sys.argv[3]), *(int(a) for a in sys.argv[4:5])))
    elif len(sys.argv) >= 4 and sys.argv[1] == "--report":  # RESULT.json PLOT.png [TITLE]
        (record,) = [r for r in load_results(Path(sys.argv[2])) if r.benchmark == "particle-scaling"]
        print(table(record.metrics))
        plot(record.metrics, sys.argv[3], sys.argv[4] if len(sys.argv) > 4 else "")
    else:
        sys.exit("usage: python -m tools.bench.benchmarks.particle_scaling --profile PARTICLES SIZE\n"
                 "       python -m tools.bench.benchmarks.particle_scaling --ab REV PARTICLES SIZE [FRAMES]\n"
                 "       python -m tools.bench.benchmarks.particle_scaling --ab-landing REV [PRESET [FRAMES]]\n"
                 "       python -m tools.bench.benchmarks.particle_scaling --spikes PARTICLES SIZE [FRAMES]\n"
                 "       python -m tools.bench.benchmarks.particle_scaling --report RESULT.json PLOT.png [TITLE]")
