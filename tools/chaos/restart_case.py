"""Case ``restarts``: the frame publisher and the results subscribers restart while frames stream.

Frame publisher (the camera): its PUSH socket is closed and bound again on the same port three times, as a
restarted detector would: (1) same series, indices going on; (2) a new series from index 0 with a start
message; (3) the same series again from index 0 *without* a start message (a publisher that forgot its
state). After each restart the service must process the new frames (every-frame backpressure, so every
frame received is processed; frames it refuses must be counted with a reason).

Results subscribers: one SUB connects, reads for a second and goes away, five times over, while a second
subscriber never reads at all (a stalled client). Each session must get results, the service must not slow
down, and the publisher's counters are reported as the service states them.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import zmq

from sam4em_live.sinks.results_schema import decode_message
from tools.chaos.harness import (
    Control,
    FrameFeed,
    ServeProcess,
    Streamer,
    SyntheticVideo,
    service_config,
    settle,
)
from tools.chaos.runcheck import check_run_folder

if TYPE_CHECKING:
    from pathlib import Path

SEGMENT_S = 2.0


def _rebind(endpoint: str) -> FrameFeed:
    deadline = time.monotonic() + 10
    while True:
        try:
            return FrameFeed(endpoint, hwm=8)
        except zmq.ZMQError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def _subscriber_session(endpoint: str, seconds: float) -> int:
    sock: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.SUB)
    sock.setsockopt(zmq.SUBSCRIBE, b"result")
    sock.setsockopt(zmq.LINGER, 0)
    sock.connect(endpoint)
    received = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if sock.poll(50):
            decode_message(sock.recv_multipart())
            received += 1
    sock.close(linger=0)
    return received


def run(work: Path) -> dict[str, Any]:
    video = SyntheticVideo.make(256)
    feed = FrameFeed(hwm=8)
    endpoint = feed.endpoint
    config = service_config(work, endpoint, work / "runs", publisher={"sndhwm_messages": 50})
    serve = ServeProcess.start(config, video.prompts_file(work / "prompts.json"), work / "serve.log")
    control = Control(serve.control_endpoint)
    stalled: zmq.Socket[bytes] = zmq.Context.instance().socket(zmq.SUB)  # never reads: its queue fills, the publisher must not care
    stalled.setsockopt(zmq.SUBSCRIBE, b"")
    stalled.setsockopt(zmq.RCVHWM, 1)
    stalled.connect(serve.results_endpoint)
    segments = [("first", "chaos-a", 0, True), ("same series, indices go on", "chaos-a", None, False),
                ("new series from 0", "chaos-b", 0, True), ("same series from 0, no start message", "chaos-b", 0,
                                                             False)]
    report_segments = []
    sessions: list[int] = []
    counted_before = rejected_before = 0
    next_index = 0
    sent_total = 0
    for k, (label, series, first, announce) in enumerate(segments):
        if k:
            feed.close()
            feed = _rebind(endpoint)
        first_index = next_index if first is None else first
        streamer = Streamer(feed, video, 200.0, series_id=series, first_index=first_index, announce=announce)
        sessions.append(_subscriber_session(serve.results_endpoint, SEGMENT_S))
        sent = streamer.stop()
        sent_total += sent
        next_index = streamer.next_index
        status = settle(control, sent_total, timeout_s=15.0)
        counted = status.get("frames_processed", 0)
        rejected = status.get("messages_rejected", 0)
        report_segments.append({
            "segment": label, "frames_sent": sent, "processed": counted - counted_before,
            "rejected": rejected - rejected_before, "rejected_by_reason_so_far": status.get("rejected_by_reason"),
        })
        counted_before, rejected_before = counted, rejected
    final = control.status() or {}
    alive = serve.alive()
    stopped = serve.stop()
    stalled.close(linger=0)
    control.close()
    feed.close()
    folders = [check_run_folder(p) for p in sorted((work / "runs").glob("*")) if p.is_dir()]
    failures = []
    for seg in report_segments:
        unattributed = seg["frames_sent"] - seg["processed"] - seg["rejected"]
        if unattributed > 0:
            failures.append(f"{seg['segment']}: {unattributed} of {seg['frames_sent']} frames neither processed "
                            "nor counted as rejected")
    if not all(sessions):
        failures.append(f"a subscriber session got no results: {sessions}")
    return {
        "case": "restarts",
        "headline": {"segments (sent -> processed)": [f"{s['segment']}: {s['frames_sent']} -> {s['processed']} (+{s['rejected']} rejected)"
                                                      for s in report_segments],
                     "results per 2 s subscriber session": sessions,
                     "publisher counters": (final.get("sinks") or {}).get("ResultsPublisher"),
                     "exit code": stopped["exit_code"]},
        "segments": report_segments, "subscriber_sessions": sessions, "sinks": final.get("sinks"),
        "crashed": not alive or stopped["exit_code"] != 0, "hung_on_stop": stopped["hung_on_stop"],
        "trials": [{"name": "restarts", "failures": failures}],
        "run_folders": folders,
    }
