"""Case ``soak``: a long live run, reporting memory growth and where every frame went.

``frames`` simulated frames (512² by default, three moving particles) go at ``fps`` through a PUSH socket
into ``serve`` in its live configuration (``latest`` backpressure, recorder with masks, publisher with a
subscriber reading, control channel polled once a second). Once a second the case samples the service's
resident set size (and its mask writer's) with the status' ``frames_processed``; the RSS slope is a
least-squares fit over the samples after warm-up (the first ``warmup_fraction`` of the frames), in MiB per
10,000 processed frames (target ≤ 1).

Frames are accounted for at every step: sent (sender) → received + rejected (service ingest) → processed +
dropped by backpressure → recorded + recorder losses; whatever no counter explains is reported as
unattributed.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq

from tools.chaos.harness import (
    Control,
    FrameFeed,
    ServeProcess,
    Streamer,
    SyntheticVideo,
    rss_kib,
    service_config,
    settle,
)
from tools.chaos.runcheck import check_run_folder


def _reader(endpoint: str, stop: threading.Event, counts: dict[str, int]) -> None:
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"result")
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    while not stop.is_set():
        if sock.poll(100):
            sock.recv_multipart()
            counts["results"] += 1
    sock.close(linger=0)


def rss_slope(samples: list[tuple[int, float]], warmup_frames: int) -> float | None:
    """Least-squares slope of RSS (MiB) against frames processed after ``warmup_frames``, per 10,000 frames."""
    kept = [(f, r) for f, r in samples if f >= warmup_frames]
    if len(kept) < 5 or kept[-1][0] == kept[0][0]:
        return None
    frames, rss = np.array(kept, dtype=float).T
    return float(np.polyfit(frames, rss, 1)[0] * 10_000)


def run(work: Path, frames: int = 25000, fps: float = 200.0, size: int = 512,
        warmup_fraction: float = 0.2) -> dict[str, Any]:
    video = SyntheticVideo.make(size)
    feed = FrameFeed(hwm=64)
    config = service_config(work, feed.endpoint, work / "runs", pipeline={"backpressure": "latest"})
    serve = ServeProcess.start(config, video.prompts_file(work / "prompts.json"), work / "serve.log")
    control = Control(serve.control_endpoint)
    stop_reader, results = threading.Event(), {"results": 0}
    reader = threading.Thread(target=_reader, args=(serve.results_endpoint, stop_reader, results), daemon=True)
    reader.start()
    mask_writer = next((pid for pid, cmd in serve.children() if "spawn_main" in cmd), None)
    streamer = Streamer(feed, video, fps, series_id="chaos-soak", max_frames=frames)
    samples: list[dict[str, Any]] = []
    t0 = time.monotonic()
    while not streamer.done() and serve.alive() and time.monotonic() - t0 < 3 * frames / fps + 60:
        time.sleep(1.0)
        status = control.status() or {}
        samples.append({"t_s": round(time.monotonic() - t0, 2), "sent": streamer.sent,
                        "processed": status.get("frames_processed"), "rss_kib": rss_kib(serve.pid),
                        "mask_writer_rss_kib": rss_kib(mask_writer) if mask_writer else None,
                        "processed_fps": status.get("processed_fps"), "latency_ms_p99": status.get("latency_ms_p99")})
    sent = streamer.stop()
    elapsed = time.monotonic() - t0
    alive = serve.alive()
    status = settle(control, sent, timeout_s=30.0) if alive else {}
    stop_reader.set()
    reader.join(5)
    stopped = serve.stop(timeout_s=60.0)
    control.close()
    feed.close()
    folders = [check_run_folder(p) for p in sorted((work / "runs").glob("*")) if p.is_dir()]
    manifest = _manifest(folders)
    counts = manifest.get("counts") or {}
    warmup = int(frames * warmup_fraction)
    points = [(s["processed"], s["rss_kib"] / 1024) for s in samples if s["processed"] and s["rss_kib"]]
    writer_points = [(s["processed"], s["mask_writer_rss_kib"] / 1024) for s in samples
                     if s["processed"] and s["mask_writer_rss_kib"]]
    slope = rss_slope(points, warmup)
    received = status.get("frames_received", 0)
    rejected = status.get("messages_rejected", 0)
    processed = status.get("frames_processed", 0)
    dropped = status.get("frames_dropped", 0)
    recorded = counts.get("frames_recorded")
    recorder_lost = (counts.get("results_lost") or 0) + (counts.get("results_after_stop") or 0)
    unattributed = []
    if sent - received - rejected - streamer.feed.send_timeouts > 0:
        unattributed.append(f"{sent - received - rejected} frames sent but neither received nor rejected")
    if received - processed - dropped > 0:
        unattributed.append(f"{received - processed - dropped} frames received but neither processed nor dropped")
    if recorded is not None and processed - recorded - recorder_lost > 0:
        unattributed.append(f"{processed - recorded - recorder_lost} frames processed but not recorded, uncounted")
    return {
        "case": "soak",
        "headline": {
            "frames": f"sent {sent}, received {received}, processed {processed}, dropped (latest-frame "
                      f"backpressure) {dropped}, recorded {recorded}",
            "send rate / wall": f"{fps:g} fps {size}² / {elapsed:.0f} s",
            "RSS slope after warm-up (MiB per 10k frames)": None if slope is None else round(slope, 3),
            "mask writer RSS slope (MiB per 10k frames)": _round(rss_slope(writer_points, warmup)),
            "RSS first / last (MiB)": f"{points[0][1]:.0f} / {points[-1][1]:.0f}" if points else None,
            "results read by a subscriber": results["results"], "exit code": stopped["exit_code"],
        },
        "frames_sent": sent, "frames_received": received, "messages_rejected": rejected,
        "frames_processed": processed, "frames_dropped": dropped, "frames_recorded": recorded,
        "recorder_results_lost": recorder_lost, "send_timeouts": streamer.feed.send_timeouts,
        "results_published_read": results["results"],
        "rss_slope_mib_per_10k_frames": slope, "warmup_frames": warmup,
        "crashed": not alive or stopped["exit_code"] != 0, "hung_on_stop": stopped["hung_on_stop"],
        "unattributed": unattributed, "samples": samples, "run_folders": folders,
        "serve_log_tail": "" if alive else serve.log_tail(),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


def _manifest(folders: list[dict[str, Any]]) -> dict[str, Any]:
    for folder in folders:
        try:
            data = json.loads((Path(folder["path"], "run.json")).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            return data
    return {}
