"""Faults on the control path (issue 18): quotas, hostile requests, honest status -- with the real service.

Real parts only: the service with the embedded backend, a real frame source paced like a camera, the real
control channel on loopback (port 0), and for the flood a real client in its own process.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from typing import TYPE_CHECKING, Any

import msgpack
import numpy as np
import pytest
import zmq

from sam4em_live.config import FrozenModel, PublisherConfig, ServiceConfig
from sam4em_live.control import ControlClient, ControlError, ControlServer
from sam4em_live.control.quotas import (
    FILLING_FRAMES,
    LOAD_WINDOW_S,
    PENDING_EXPIRY_S,
    RateLimit,
    ServiceQuotas,
    bound_prompt,
)
from sam4em_live.control.schema import encode_request
from sam4em_live.control_api import QuotaExceeded
from sam4em_live.frames import Calibration, Frame
from sam4em_live.particles import ParticleEdit, ParticleMask, Prompt, PromptError, RemoveParticle
from sam4em_live.segment.embedded import EmbeddedSegmenter
from sam4em_live.segment.registry import SEGMENTERS
from sam4em_live.service.builder import build_service
from sam4em_live.sinks.publisher import ResultsPublisher
from tests.conftest import disk_video
from tests.paced_source import PacedSource

if TYPE_CHECKING:
    from collections.abc import Sequence

SHAPE = (256, 256)
CENTRES = ((60.0, 60.0), (150.0, 120.0), (200.0, 200.0))  # the service is prompted on the first two
PROMPTS = [Prompt(1, 0, (CENTRES[0],), (1,)), Prompt(2, 0, (CENTRES[1],), (1,))]
CAL = Calibration(pixel_size_nm=1.0, fps=200.0)


class ResultLog:
    """A real `Sink`: when each result arrived, and every event."""

    def __init__(self) -> None:
        self.times: list[float] = []
        self.events: list[tuple[str, int | None, str]] = []

    def open(self, run: Any) -> None:
        pass

    def consume(self, result: Any) -> None:
        self.times.append(time.monotonic())
        self.events += [(e.kind, e.particle, str(e.detail.get("reason", ""))) for e in result.events]

    def on_status(self, status: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def fps_between(self, t0: float, t1: float) -> float:
        return sum(t0 <= t < t1 for t in self.times) / (t1 - t0)


def service_config(**over: dict[str, Any]) -> ServiceConfig:
    data: dict[str, Any] = {
        "recorder": {"enabled": False},
        "publisher": {"enabled": False},
        "control": {"enabled": True, "endpoint": "tcp://127.0.0.1:0"},
        "pipeline": {"backpressure": "latest", "status_interval_s": 0.2},
        # Off unless a test is about it: on a loaded machine the worker is busy and new particles are refused.
        "quotas": {"max_worker_load": 1.0},
    }
    for key, value in over.items():
        data.setdefault(key, {}).update(value)
    return ServiceConfig.from_mapping(data)


@pytest.fixture(scope="module")
def video() -> np.ndarray:
    frames, _ = disk_video(n_frames=40, shape=SHAPE, centres=CENTRES, velocity=(0.05, 0.05))
    return frames


def start_service(video: np.ndarray, fps: float = 100.0, log: ResultLog | None = None, **over: dict[str, Any]):
    built = build_service(service_config(**over), source=PacedSource(video, fps, CAL), edits=PROMPTS,
                          extra_sinks=[log] if log is not None else ())
    built.service.start()
    return built


def wait_for(predicate, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


# ---------------------------------------------------------------- prompts bounded by the frame, before any work


@pytest.mark.parametrize(
    "edit, outcome",
    [
        (Prompt(3, box=(10.0, 10.0, 40.0, 40.0)), (10.0, 10.0, 40.0, 40.0)),
        (Prompt(3, box=(-20.0, 240.0, 20.0, 300.0)), (-0.5, 240.0, 20.0, 255.5)),  # over the edge: clipped
        (Prompt(3, box=(0.0, 0.0, 2000.0, 2000.0)), "limit is 128 px a side"),  # the 6 s stall
        (Prompt(3, box=(0.0, 0.0, 1e308, 1e308)), "limit is 128 px a side"),  # failed in the segmenter before
        (Prompt(3, box=(300.0, 300.0, 400.0, 400.0)), "nothing inside the 256x256 frame"),
        (Prompt(3, box=(0.0, 0.0, float("inf"), 5.0)), "not finite"),
        (Prompt(3, points=((256.0, 5.0),), labels=(1,)), "outside the 256x256 image"),
        (Prompt(3, points=((-0.5, 255.4),), labels=(1,)), None),  # the image's own corner
        (RemoveParticle(3), None),
    ],
)
def test_prompts_are_clipped_or_refused_against_the_frame(edit, outcome) -> None:
    if isinstance(outcome, str):
        with pytest.raises(PromptError, match=outcome):
            bound_prompt(edit, SHAPE, 128)
        return
    bounded = bound_prompt(edit, SHAPE, 128)
    assert bounded == (edit if outcome is None else Prompt(3, box=outcome))


def test_rate_limit_refills_at_its_rate() -> None:
    now = [0.0]
    limit = RateLimit(2.0, clock=lambda: now[0])
    assert [limit.try_take() for _ in range(3)] == [True, True, False]  # burst: one second's worth
    assert limit.wait_s() == pytest.approx(0.5)
    now[0] = 0.5
    assert limit.try_take() and not limit.try_take()


def test_a_frame_sized_box_is_refused_at_once_with_an_event(video) -> None:
    log = ResultLog()
    built = start_service(video, log=log, quotas={"max_box_edge_px": 128})
    client = ControlClient(built.control.endpoint, timeout_s=3.0)
    try:
        assert wait_for(lambda: client.status()["frames_processed"] > 5)
        for box in ([0, 0, 2000, 2000], [0, 0, 1e308, 1e308], [500, 500, 600, 600]):
            t0 = time.monotonic()
            with pytest.raises(ControlError) as info:
                client.request("add_prompt", {"particle": 7, "box": box})
            assert info.value.code == "invalid_prompt" and time.monotonic() - t0 < 0.5
        client.add_prompt(8, box=(130.0, 100.0, 175.0, 140.0))  # a sane box is queued
        assert wait_for(lambda: len([e for e in log.events if e[0] == "prompt_rejected"]) == 3)
        processed = client.status()["frames_processed"]
        assert wait_for(lambda: client.status()["frames_processed"] > processed + 20)  # no stall
        status = client.status()
    finally:
        client.close()
        built.service.stop()
        built.close()
    rejected = [e for e in log.events if e[0] == "prompt_rejected"]
    assert [p for _, p, _ in rejected] == [7, 7, 7]
    assert "128 px a side" in rejected[0][2] and "nothing inside" in rejected[2][2]
    assert status["refused_by_quota"] == {"prompt_bounds": 3}
    assert status["control"]["errors_by_code"] == {"invalid_prompt": 3}


def test_particle_edit_and_annotation_quotas(video) -> None:
    built = start_service(video, quotas={"max_particles": 3, "max_edits_per_s": 4, "max_annotations_per_s": 2,
                                         "max_annotation_bytes": 100})
    client = ControlClient(built.control.endpoint, timeout_s=3.0)
    try:
        assert wait_for(lambda: set(client.status()["particles"]) == {1, 2})
        client.add_prompt(3, points=[(200.0, 200.0)])
        assert wait_for(lambda: 3 in client.status()["particles"])
        time.sleep(1.0)  # the edit bucket refills
        with pytest.raises(ControlError, match="quota_exceeded: max_particles") as info:
            client.add_prompt(4, points=[(20.0, 20.0)])
        client.correct(1, points=[CENTRES[0]])  # a tracked particle may still be corrected
        codes = []
        for _ in range(6):
            try:
                client.remove(9)
                codes.append("ok")
            except ControlError as exc:
                codes.append(exc.code)
        assert codes.count("quota_exceeded") >= 2  # 4 per second
        with pytest.raises(ControlError, match="max_annotation_bytes"):
            client.annotate("x" * 101)
        notes = []
        for _ in range(4):
            try:
                client.annotate("note")
                notes.append("ok")
            except ControlError as exc:
                notes.append(exc.code)
        status = client.status()
    finally:
        client.close()
        built.service.stop()
        built.close()
    assert info.value.code == "quota_exceeded"
    assert notes[:2] == ["ok", "ok"] and "quota_exceeded" in notes[2:]
    refused = status["refused_by_quota"]
    assert refused["max_particles"] == 1 and refused["max_edits_per_s"] >= 2
    assert refused["max_annotation_bytes"] == 1 and refused["max_annotations_per_s"] >= 1


# ---------------------------------------------------------------- control messages: size and parts


def test_multipart_and_oversized_requests_cost_no_copies(video) -> None:
    control = start_service(video)
    try:
        server: ControlServer = control.control
        sock = zmq.Context.instance().socket(zmq.REQ)
        sock.linger = 0
        sock.connect(server.endpoint)
        sock.send_multipart([encode_request("ping")] + [b"x" * 200_000] * 300)  # 60 MB in 300 parts
        assert sock.poll(10_000)
        reply = msgpack.unpackb(sock.recv())
        sock.close()
        assert reply["error"]["code"] == "malformed" and "301" in reply["error"]["message"]
        assert server.counters.extra_parts_discarded == 300

        huge = zmq.Context.instance().socket(zmq.REQ)  # one part over 4x the limit: libzmq drops it unread
        huge.linger = 0
        huge.connect(server.endpoint)
        huge.send(b"x" * (4 * 65536 + 1))
        assert not huge.poll(500)
        huge.close()
        with ControlClient(server.endpoint, timeout_s=3.0) as client:
            assert client.ping()["pong"] is True
            with pytest.raises(ControlError, match="too_large"):
                client.annotate("x" * 70_000)
    finally:
        control.service.stop()
        control.close()


# ---------------------------------------------------------------- status: age and stalls


class StallingSegmenter:
    """The embedded backend, stuck for ``stall_s`` on frame ``stall_at_frame`` (a registered plugin)."""

    class Options(FrozenModel):
        stall_at_frame: int = 60
        stall_s: float = 1.5

    def __init__(self, options: StallingSegmenter.Options) -> None:
        self.options = options
        self._inner = EmbeddedSegmenter()

    def describe(self) -> dict[str, Any]:
        return {**self._inner.describe(), "backend": "stalling"}

    def particles(self) -> list[int]:
        return self._inner.particles()

    def close(self) -> None:
        self._inner.close()

    def track(self, frame: Frame, edits: Sequence[ParticleEdit] = ()) -> list[ParticleMask]:
        if frame.index == self.options.stall_at_frame:
            time.sleep(self.options.stall_s)
        return self._inner.track(frame, edits)


@pytest.fixture
def stalling_backend():
    SEGMENTERS.register("stalling", StallingSegmenter)
    yield "stalling"
    SEGMENTERS.unregister("stalling")


def test_status_reports_its_age_and_a_stalled_worker(video, stalling_backend) -> None:
    built = start_service(video, segmenter={"backend": stalling_backend, "options": {"stall_at_frame": 60}})
    client = ControlClient(built.control.endpoint, timeout_s=3.0)
    try:
        assert wait_for(lambda: client.status()["frames_processed"] > 5)
        fresh = client.status()
        assert wait_for(lambda: client.status()["stalled"], timeout_s=5.0)
        stalled = client.status()
        assert wait_for(lambda: not client.status()["stalled"], timeout_s=5.0)
        recovered = client.status()
    finally:
        client.close()
        built.service.stop()
        built.close()
    assert fresh["stalled"] is False and fresh["snapshot_age_s"] < 0.5 and fresh["worker_stalled_s"] < 0.5
    assert stalled["state"] == "streaming"  # the state alone does not say it ...
    assert stalled["worker_stalled_s"] > 0.4 and stalled["snapshot_age_s"] > 0.3  # ... the age and stall do
    assert recovered["snapshot_age_s"] < 0.5


# ---------------------------------------------------------------- one hostile client, measured

FLOOD_CLIENT = r"""
import json, sys, time
import msgpack, zmq

endpoint, duration_s = sys.argv[1], float(sys.argv[2])
def req(op, args=None):
    return msgpack.packb({"v": 1, "op": op, "args": args or {}}, use_bin_type=True)

mix = [
    [req("status")], [req("ping")], [req("particles")], [req("config")],
    [req("add_prompt", {"particle": 50, "box": [0, 0, 2000, 2000]})],
    [req("add_prompt", {"particle": 51, "box": [0, 0, 1e308, 1e308]})],
    [req("add_prompt", {"particle": 52, "points": [[5000.0, 5.0]]})],
    [req("add_prompt", {"particle": 53, "points": [[20.0, 20.0]]})],  # beyond max_particles
    [req("correct", {"particle": 1, "box": [45, 45, 75, 75]})],  # valid: real work, rate-limited
    [req("annotate", {"text": "x" * 4000})],
    [b"\xc1" * 1000],  # not msgpack
    [req("ping"), b"y" * 200_000, b"y" * 200_000],  # multi-part
    [b"z" * 100_000],  # too large
]
ctx = zmq.Context()
sockets = []
for _ in range(4):  # several connections, each pipelining requests (DEALER: no wait for replies)
    s = ctx.socket(zmq.DEALER)
    s.linger = 0
    s.sndhwm = 200
    s.connect(endpoint)
    sockets.append(s)
sent = replies = 0
codes = {}
end = time.monotonic() + duration_s
i = 0
while time.monotonic() < end:
    for s in sockets:
        try:
            s.send_multipart([b""] + mix[i % len(mix)], zmq.NOBLOCK)
            sent += 1
            i += 1
        except zmq.Again:
            pass
        while s.poll(0):
            parts = s.recv_multipart()
            reply = msgpack.unpackb(parts[-1], raw=False)
            code = "ok" if reply["ok"] else reply["error"]["code"]
            codes[code] = codes.get(code, 0) + 1
            replies += 1
    time.sleep(0.0005)
print(json.dumps({"sent": sent, "replies": replies, "codes": codes}))
"""


def test_one_flooding_client_cannot_push_the_service_below_90_percent(video, tmp_path) -> None:
    log = ResultLog()
    built = start_service(video, fps=200.0, log=log, quotas={"max_particles": 2})
    endpoint = built.control.endpoint
    script = tmp_path / "flood.py"
    script.write_text(FLOOD_CLIENT)
    try:
        assert wait_for(lambda: len(log.times) > 50)
        t0 = time.monotonic()
        time.sleep(2.0)
        t1 = time.monotonic()
        flood = subprocess.run([sys.executable, str(script), endpoint, "3.0"], capture_output=True, text=True,
                               timeout=30, check=True)
        t2 = time.monotonic()
        time.sleep(2.0)
        t3 = time.monotonic()
        with ControlClient(endpoint, timeout_s=3.0) as client:
            status = client.status()
    finally:
        built.service.stop()
        built.close()
    figures = json.loads(flood.stdout)
    base_fps = (log.fps_between(t0, t1) * (t1 - t0) + log.fps_between(t2, t3) * (t3 - t2)) / (t1 - t0 + t3 - t2)
    flood_fps = log.fps_between(t1 + 0.2, t2 - 0.2)  # the client's start and exit excluded
    print(f"\nflood: {figures}; processed {base_fps:.1f} fps without, {flood_fps:.1f} fps with the flood "
          f"({flood_fps / base_fps:.1%}); control {status['control']}; refused {status['refused_by_quota']}")
    assert figures["sent"] > 1000 and figures["replies"] > 100  # it really flooded, and was answered
    # The 90 % target is a benchmark figure (`python -m tools.chaos control`, docs/benchmarks.md); here the
    # margin leaves room for a busy CI machine while still failing on a working flood (0.18x, measured).
    assert flood_fps >= 0.8 * base_fps, f"{flood_fps:.1f} fps under the flood vs {base_fps:.1f} fps without"
    assert status["control"]["paced"] > 0  # the server held the flood back
    assert status["refused_by_quota"]["max_particles"] > 0


# ---------------------------------------------------------------- the results publisher's exposure


@pytest.mark.parametrize("endpoint, loud", [("tcp://127.0.0.1:0", False), ("tcp://0.0.0.0:0", True)])
def test_publisher_beyond_loopback_warns_loudly(endpoint: str, loud: bool, caplog) -> None:
    caplog.set_level(logging.WARNING, logger="sam4em_live.sinks.publisher")
    publisher = ResultsPublisher(PublisherConfig(endpoint=endpoint))
    publisher.close()
    warned = [r for r in caplog.records if "REACHABLE FROM THE NETWORK" in r.getMessage()]
    assert len(warned) == int(loud)
    assert publisher.counters == {"sent": 0, "send_errors": 0}


# ---------------------------------------------------------------- particles a client adds: bounded by the worker's load


def test_a_new_particle_is_refused_while_the_worker_has_no_room_for_it() -> None:
    now = [0.0]
    quotas = ServiceQuotas(ServiceConfig.from_mapping({}).quotas, clock=lambda: now[0])  # max_worker_load 0.8

    def measured(busy: float, tracked: set[int], frames: int, after_s: float = LOAD_WINDOW_S + 0.1) -> None:
        now[0] += after_s  # by default the next interval's load is measured alone
        quotas.note_worker_load(busy, tracked, frames)

    new = Prompt(9, points=((20.0, 20.0),), labels=(1,))
    assert quotas.admit_edit(new, SHAPE, {1, 2}, 0) == new  # no load measured yet (offline): admitted
    now[0] += PENDING_EXPIRY_S  # and never seen tracked (refused when seeded): no longer pending
    measured(0.4, {1, 2}, 100)  # a share of 0.2; filling: 0.4 + 0.7 x 0.2 < 1
    assert quotas.admit_edit(Prompt(10, points=((20.0, 20.0),), labels=(1,)), SHAPE, {1, 2}, 0).particle == 10
    # Pending (admitted, not yet tracked): no other new particle until its cost shows in the load.
    with pytest.raises(QuotaExceeded, match="particle 10, admitted before, is not yet tracked") as refused:
        quotas.admit_edit(Prompt(11, points=((30.0, 30.0),), labels=(1,)), SHAPE, {1, 2}, 0)
    assert refused.value.quota == "max_worker_load"
    measured(0.5, {1, 2, 10}, 110)  # landed: now filling, still no other
    with pytest.raises(QuotaExceeded, match="its memory still fills"):
        quotas.admit_edit(Prompt(11, points=((30.0, 30.0),), labels=(1,)), SHAPE, {1, 2, 10}, 0)
    correction = Prompt(1, points=((30.0, 30.0),), labels=(1,))
    assert quotas.admit_edit(correction, SHAPE, {1, 2, 10}, 0) == correction  # corrections: never refused
    tracked = {1, 2, 9, 10}
    measured(0.5, tracked, 110 + FILLING_FRAMES)  # filled: its cost is measured
    assert quotas.admit_edit(Prompt(11, points=((30.0, 30.0),), labels=(1,)), SHAPE, tracked, 0).particle == 11
    now[0] += PENDING_EXPIRY_S  # 11 never seen tracked
    measured(0.5, tracked, 300)
    # A prompt on a particle present now displaces it (lost, searched each frame): 5 shares of 0.125 -> 1.125.
    placed = [(1, (50, 50, 71, 71))]
    on_one = Prompt(12, points=((60.0, 60.0),), labels=(1,))
    with pytest.raises(QuotaExceeded, match="the prompt is on particle 1, tracked now"):
        quotas.admit_edit(on_one, SHAPE, tracked, 0, placed)
    with pytest.raises(QuotaExceeded, match="on particle 1"):
        quotas.admit_edit(Prompt(12, box=(40.0, 40.0, 80.0, 80.0)), SHAPE, tracked, 0, placed)
    assert quotas.admit_edit(Prompt(12, points=((75.0, 60.0),), labels=(1,)), SHAPE, tracked, 0, placed).particle == 12
    assert quotas.admit_edit(RemoveParticle(12), SHAPE, tracked, 0) == RemoveParticle(12)  # no longer pending
    measured(0.2, tracked, 310)  # an idle worker has room for the search
    assert quotas.admit_edit(on_one, SHAPE, tracked, 0, placed) == on_one
    assert quotas.admit_edit(RemoveParticle(12), SHAPE, tracked, 0) == RemoveParticle(12)
    measured(0.75, {1, 2}, 400)  # under the limit, but filling: 0.75 + 0.7 x 0.375 >= 1
    with pytest.raises(QuotaExceeded, match="its memory filling"):
        quotas.admit_edit(Prompt(13, points=((30.0, 30.0),), labels=(1,)), SHAPE, {1, 2}, 0)
    measured(1.0, {1, 2}, 440)  # the load is that of the last ~1 s: one low reading among saturated ones is
    measured(0.5, {1, 2}, 480, after_s=0.2)  # not room (0.75 + 0.7 x 0.375 >= 1; 0.5 alone would admit)
    with pytest.raises(QuotaExceeded, match="busy 75% of the time"):
        quotas.admit_edit(Prompt(13, points=((30.0, 30.0),), labels=(1,)), SHAPE, {1, 2}, 0)
    measured(0.85, {1, 2, 10}, 500)  # already over the limit: nothing new
    with pytest.raises(QuotaExceeded, match="busy 85% of the time with 3 particles"):
        quotas.admit_edit(Prompt(14, points=((30.0, 30.0),), labels=(1,)), SHAPE, {1, 2, 10}, 0)
    measured(0.9, set(), 600)  # nothing tracked: the share of one particle is unknown, the first goes in
    assert quotas.admit_edit(Prompt(15, points=((30.0, 30.0),), labels=(1,)), SHAPE, set(), 0).particle == 15
    off = ServiceQuotas(ServiceConfig.from_mapping({"quotas": {"max_worker_load": 1.0}}).quotas)
    off.note_worker_load(1.0, {1, 2}, 10)
    assert off.admit_edit(new, SHAPE, {1, 2}, 0, placed) == new


def test_a_client_adding_particles_cannot_push_the_service_below_its_rate(video) -> None:
    log = ResultLog()
    built = start_service(video, fps=200.0, log=log, quotas={"max_worker_load": 0.8})  # the default
    endpoint = built.control.endpoint
    try:
        assert wait_for(lambda: len(log.times) > 100)
        t0 = time.monotonic()
        time.sleep(1.5)
        t1 = time.monotonic()
        answers: dict[str, int] = {}
        admitted: list[int] = []
        with ControlClient(endpoint, timeout_s=3.0) as client:
            for k in range(60):  # as fast as max_edits_per_s lets it: new ids on the particles of the field
                x, y = CENTRES[k % len(CENTRES)]
                try:
                    client.add_prompt(100 + k, points=[[x + k % 3, y]])
                    answers["ok"] = answers.get("ok", 0) + 1
                    admitted.append(100 + k)
                except ControlError as exc:
                    code = exc.code
                    answers[code] = answers.get(code, 0) + 1
                    time.sleep(0.1)
            t2 = time.monotonic()
            time.sleep(1.5)
            t3 = time.monotonic()
            status = client.status()
    finally:
        built.service.stop()
        built.close()
    base_fps = log.fps_between(t0, t1)
    after_fps = log.fps_between(t2, t3)
    print(f"\nadding particles: {answers} {admitted}; processed {base_fps:.1f} fps before, {after_fps:.1f} after "
          f"({after_fps / base_fps:.1%}); {len(status['particles'])} particles; busy {status['worker_busy']:.2f}; "
          f"refused {status['refused_by_quota']}")
    assert answers.get("ok", 0) > 0  # particles were added while there was room
    assert status["refused_by_quota"].get("max_worker_load", 0) > 0  # and refused once there was none
    # Without the load quota and the lost-particle round robin this fell to 0.31x (measured; 0.15-0.43 in 2026-12-08's
    # runs); the 90 % target is the chaos benchmark's figure (docs/benchmarks.md), the margin here is for the test
    # machine. Two of every three prompts here are on a particle tracked already: admitted, each left that one lost
    # and searched for on every frame (the backend's CPU time a frame 1.2 -> 2.9 ms with one such prompt), and
    # the worker, at busy ~0.5 with 2 particles, fell behind for good (1-2 were admitted, on a single low reading
    # of the load, before the first had landed); the quota now charges that search, a new particle's filling
    # memory, and the particles admitted but not yet landed, on the load of the last ~1 s.
    # A machine loaded by other work moves the ratio by itself: the message says what was admitted and the load.
    assert after_fps >= 0.7 * base_fps, (f"{after_fps:.1f} fps after the additions vs {base_fps:.1f} fps before; "
                                         f"admitted {admitted}; load average {os.getloadavg()[0]:.1f} "
                                         f"on {os.cpu_count()} cores")
