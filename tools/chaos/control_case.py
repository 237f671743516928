"""Case ``control``: malformed control requests, and one flooding client while frames stream.

While a sender streams 256² frames at 200 fps into a live ``serve`` (``latest`` backpressure, as live), the
case measures the processed frame rate for a window with no control traffic, then for a window in which a
separate process floods the control channel (status polls, hostile prompt boxes, new particle ids, long
annotations, oversized and multi-part requests, as fast as replies come). The ratio of the two rates is the
figure the issue asks for (target ≥ 0.9). Two flood windows: requests only (no new particles), then requests that also add
particles (new ids with frame-sized boxes) for as long as the service accepts them; a window after the flood
shows lasting damage. A window with a process that only spins the CPU tells how much of a slow-down on a
small machine is the flooder's CPU rather than the service's handling. Then ``requests`` malformed requests go one by one over a REQ socket;
each must get an error reply (or, above the hard size limit, be dropped unread by libzmq by design), and the
service must still answer a ping afterwards.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import threading
import time
from typing import TYPE_CHECKING, Any

import msgpack

from sam4em_live.control.schema import decode_reply, encode_request
from tools.chaos.harness import (
    Control,
    FrameFeed,
    ServeProcess,
    SyntheticVideo,
    paced,
    packb,
    service_config,
)
from tools.chaos.runcheck import check_run_folder

if TYPE_CHECKING:
    from multiprocessing.synchronize import Event
    from pathlib import Path

_NUMBERS: tuple[Any, ...] = (0, -1, 1, 2**31, 2**63 - 1, -(2**63), 1.5, 1e308, -1e308, float("nan"), float("inf"),
                             True, None, "1", [], {})


def hostile_request(rng: random.Random) -> tuple[str, list[bytes]]:
    """One malformed (or valid but hostile) control request: (kind, parts)."""
    choice = rng.randrange(10)
    if choice == 0:
        return "random_bytes", [bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))]
    if choice == 1:
        return "not_a_map", [packb(rng.choice([[1, 2], "ping", 7, None, b"x"]))]
    if choice == 2:
        return "bad_version", [packb({"v": rng.choice(_NUMBERS), "op": "ping"})]
    if choice == 3:
        op = rng.choice(["", "PING", "shutdown", "x" * 500, "__class__", 1, None])
        return "unknown_op", [packb({"v": 1, "op": op})]
    if choice == 4:
        box = [rng.choice([0, -1e308, 1e308, float("nan"), 2000, 8000, 1e9]) for _ in range(4)]
        return "hostile_box", [encode_request("add_prompt", {"particle": rng.randint(1, 2**31 - 1), "box": box})]
    if choice == 5:
        points = [[rng.uniform(-1e6, 1e6), rng.uniform(-1e6, 1e6)] for _ in range(rng.choice([1, 256, 300]))]
        return "hostile_points", [encode_request("correct", {"particle": rng.choice(_NUMBERS), "points": points})]
    if choice == 6:
        args = {rng.choice(["particle", "frame", "text", "box", "extra"]): rng.choice(_NUMBERS)}
        return "bad_args", [encode_request(rng.choice(["remove", "annotate", "status", "add_prompt"]), args)]
    if choice == 7:
        text = "x" * rng.choice([0, 4096, 4097, 60000])
        return "annotation_size", [encode_request("annotate", {"text": text})]
    if choice == 8:
        # Above 4x the limit libzmq drops the message unread and no reply comes (by design): keep those rare.
        size = 300_000 if rng.random() < 0.05 else rng.choice([65537, 200_000])
        return "oversized", [packb({"v": 1, "op": "annotate", "args": {"text": "y" * size}})]
    parts = rng.choice([2, 3, 50])
    return "multipart", [encode_request("ping")] + [b"z" * rng.choice([10, 200_000])] * (parts - 1)


def flood(endpoint: str, stop: Event, counts: Any, seed: int, new_particles: bool) -> None:
    """The malicious client: hostile requests as fast as replies come, until ``stop``; runs in its own process.

    With ``new_particles`` it also adds particles (new ids, frame-sized boxes) as long as the service lets it.
    """
    rng = random.Random(seed)
    control = Control(endpoint, timeout_s=1.0)
    sent = 0
    while not stop.is_set():
        kind = rng.randrange(4)
        if kind == 0:
            control.request("status")
        elif kind == 1:
            name, parts = hostile_request(rng)
            if new_particles or name not in ("hostile_box", "hostile_points"):
                control.raw(parts)
        elif kind == 2 and new_particles:
            control.request("add_prompt", {"particle": rng.randint(10, 10_000), "box": [0, 0, 2000, 2000]})
        else:
            control.request("annotate", {"text": "flood " * 600})
        sent += 1
    counts.value = sent
    control.close()


def burn(stop: Event) -> None:
    """A process that only spins the CPU: the flood's CPU cost on a small machine, without control traffic."""
    while not stop.is_set():
        sum(range(10_000))


def _rate(control: Control, seconds: float) -> dict[str, float]:
    """Processed and received frames per second over ``seconds`` (from status snapshots polled every 0.25 s).

    Also the worst staleness the status admitted to while polled: ``snapshot_age_s`` and ``worker_stalled_s``
    (a status that reports neither is taken at face value: 0).
    """
    first = control.status() or {}
    t0 = time.monotonic()
    worst_age = worst_stall = 0.0
    stalled_seen = unanswered = 0
    last = first
    while time.monotonic() - t0 < seconds:
        time.sleep(0.25)
        status = control.status()
        if status is None:
            unanswered += 1
            continue
        last = status
        worst_age = max(worst_age, float(status.get("snapshot_age_s") or 0.0))
        worst_stall = max(worst_stall, float(status.get("worker_stalled_s") or 0.0))
        stalled_seen += bool(status.get("stalled"))
    dt = time.monotonic() - t0
    return {
        "processed_fps": round((last.get("frames_processed", 0) - first.get("frames_processed", 0)) / dt, 1),
        "received_fps": round((last.get("frames_received", 0) - first.get("frames_received", 0)) / dt, 1),
        "dropped_fps": round((last.get("frames_dropped", 0) - first.get("frames_dropped", 0)) / dt, 1),
        "max_snapshot_age_s": round(worst_age, 2), "max_worker_stalled_s": round(worst_stall, 2),
        "polls_saying_stalled": stalled_seen, "status_polls_unanswered": unanswered,
    }


def run(work: Path, requests: int = 10000, flood_s: float = 8.0, seed: int = 1) -> dict[str, Any]:
    rng = random.Random(seed)
    video = SyntheticVideo.make(256)
    feed = FrameFeed(hwm=16)
    config = service_config(work, feed.endpoint, work / "runs", pipeline={"backpressure": "latest"})
    serve = ServeProcess.start(config, video.prompts_file(work / "prompts.json"), work / "serve.log")
    stop_sending = threading.Event()

    def send() -> None:
        feed.series_start("chaos-control", video.shape)
        for k in paced(200.0, 10**9, stop_sending):
            if not feed.frame(video, "chaos-control", k):
                return

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    control = Control(serve.control_endpoint)
    time.sleep(1.5)  # warm-up: first frames, prompts applied
    baseline = _rate(control, flood_s)
    context = mp.get_context("spawn")
    # The flooder is a process of its own: on a machine with few cores part of the slow-down is only its CPU.
    stop_burn = context.Event()
    burner = context.Process(target=burn, args=(stop_burn,))
    burner.start()
    time.sleep(0.5)
    busy = _rate(control, flood_s)
    stop_burn.set()
    burner.join(10)
    windows: dict[str, dict[str, float]] = {}
    flood_requests: dict[str, int] = {}
    for label, new_particles in (("requests", False), ("requests_and_new_particles", True)):
        stop_flood, flood_count = context.Event(), context.Value("q", 0)
        flooder = context.Process(target=flood, args=(serve.control_endpoint, stop_flood, flood_count, seed,
                                                      new_particles))
        flooder.start()
        time.sleep(0.5)
        windows[label] = _rate(control, flood_s)
        stop_flood.set()
        flooder.join(10)
        flood_requests[label] = flood_count.value
    flooded = min(windows.values(), key=lambda w: w["processed_fps"])
    after = _rate(control, flood_s)  # lasting damage: particles the flood added, a stalled worker
    after_flood = control.status() or {}
    replies: dict[str, int] = {}
    by_kind: dict[str, int] = {}
    unanswered: dict[str, int] = {}
    hang = None
    t0 = time.monotonic()
    for k in range(requests):
        kind, parts = hostile_request(rng)
        by_kind[kind] = by_kind.get(kind, 0) + 1
        silent_by_design = kind in ("oversized", "multipart") and sum(map(len, parts)) > 4 * 65536
        reply = control.raw(parts, timeout_ms=300 if silent_by_design else None)
        if reply is None:
            unanswered[kind] = unanswered.get(kind, 0) + 1
            if control.request("ping") is None:
                hang = f"no reply to a ping after request {k} ({kind})"
                break
            continue
        replies[_reply_code(reply)] = replies.get(_reply_code(reply), 0) + 1
    fuzz_s = time.monotonic() - t0
    final = control.status() or {}
    alive = serve.alive()
    stop_sending.set()
    sender.join(5)
    stopped = serve.stop()
    control.close()
    feed.close()
    folders = [check_run_folder(p) for p in sorted((work / "runs").glob("*")) if p.is_dir()]
    ratio = flooded["processed_fps"] / baseline["processed_fps"] if baseline["processed_fps"] else None
    # Requests above HARD_LIMIT_FACTOR x the limit are dropped unread by libzmq (documented); others must answer.
    unexpected_silence = {k: v for k, v in unanswered.items() if k not in ("oversized", "multipart")}
    return {
        "case": "control",
        "headline": {
            "malformed requests": sum(by_kind.values()), "replies by code": replies,
            "unanswered (oversized/multi-part are dropped unread by design)": unanswered,
            "processed fps: normal / flood of requests / flood adding particles": (
                f"{baseline['processed_fps']} / {windows['requests']['processed_fps']} / "
                f"{windows['requests_and_new_particles']['processed_fps']}"),
            "flood ratio (worst window)": None if ratio is None else round(ratio, 3),
            "processed fps with a CPU-only busy process instead (same CPU cost, no requests)": busy["processed_fps"],
            "processed fps after the flood stopped": after["processed_fps"],
            "particles after the flood": len(after_flood.get("particles", [])),
            "worst status age / worker stall seen during the floods (s)": (
                f"{max(w['max_snapshot_age_s'] for w in windows.values())} / "
                f"{max(w['max_worker_stalled_s'] for w in windows.values())}"),
            "flood requests sent": flood_requests, "exit code": stopped["exit_code"],
        },
        "requests": sum(by_kind.values()), "seconds": round(fuzz_s, 1), "by_kind": by_kind, "replies": replies,
        "unanswered": unanswered,
        "crashed": not alive or stopped["exit_code"] != 0,
        "hang": hang, "hung_on_stop": stopped["hung_on_stop"], "stop": stopped,
        "flood": {"normal": baseline, "windows": windows, "ratio": ratio, "cpu_busy_no_requests": busy,
                  "after_flood": after, "requests": flood_requests,
                  "window_s": flood_s, "particles_after_flood": len(after_flood.get("particles", []))},
        "status_after": {k: final.get(k) for k in ("frames_received", "frames_processed", "frames_dropped",
                                                   "particles", "sinks", "state")},
        "unattributed": [f"{v} '{k}' requests got no reply" for k, v in unexpected_silence.items()],
        "run_folders": folders,
        "serve_log_tail": serve.log_tail() if (not alive or hang) else "",
    }


def _reply_code(reply: bytes) -> str:
    try:
        decoded = decode_reply(reply)
    except (ValueError, msgpack.ExtraData, TypeError):
        return "undecodable_reply"
    if decoded.get("ok"):
        return "ok"
    return str((decoded.get("error") or {}).get("code"))
