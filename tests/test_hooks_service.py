"""Hooks and the control channel with the real service (threshold backend, in-process frames, real sockets)."""

from __future__ import annotations

import threading
import time

import pytest

from sam4em_live.config import ServiceConfig
from sam4em_live.control import ControlClient, ControlError
from sam4em_live.frames import Calibration
from sam4em_live.hooks.api import HookContext
from sam4em_live.particles import Prompt
from sam4em_live.service.builder import build_service
from sam4em_live.sources.array_source import ArraySource
from tests.conftest import disk_video

PROMPTS = [Prompt(1, 0, ((30.0, 40.0),), (1,)), Prompt(2, 0, box=(60.0, 50.0, 80.0, 70.0))]
CAL = Calibration(pixel_size_nm=2.0, fps=50.0)


# Hooks named by dotted path in the configs below.
SEEN: dict[str, list] = {}
RELEASE = threading.Event()


class SlowHook:
    def on_result(self, ctx: HookContext) -> None:
        time.sleep(0.05)


class CrashingHook:
    def on_result(self, ctx: HookContext) -> None:
        raise RuntimeError("bug in a user hook")


class HangingHook:
    def on_result(self, ctx: HookContext) -> None:
        RELEASE.wait(3.0)


class EventLog:
    def on_event(self, ctx: HookContext) -> None:
        SEEN.setdefault("events", []).append((ctx.event.kind, ctx.event.particle, ctx.frame_index))

    def on_result(self, ctx: HookContext) -> None:
        SEEN.setdefault("frames", []).append(ctx.frame_index)


def config(tmp_path, hooks=(), **over) -> ServiceConfig:
    data = {
        "segmenter": {"backend": "threshold"},
        "recorder": {"enabled": False},
        "publisher": {"enabled": False},
        "control": {"enabled": False},
        "pipeline": {"backpressure": "every-frame", "status_interval_s": 0.2},
        "hooks": {"hooks": [{"target": f"{__name__}:{h}"} for h in hooks], "hang_timeout_s": 0.3},
    }
    for key, value in over.items():
        data.setdefault(key, {}).update(value)
    return ServiceConfig.from_mapping(data)


class ResultLog:
    """A real `Sink` keeping the frame index and particle count of every result."""

    def __init__(self) -> None:
        self.frames: list[int] = []
        self.measured: list[int] = []
        self.times: list[float] = []

    def open(self, run) -> None:
        pass

    def consume(self, result) -> None:
        self.frames.append(result.index)
        self.times.append(time.perf_counter())
        self.measured.append(sum(m.present for m in result.measurements))

    def on_status(self, status) -> None:
        pass

    def close(self) -> None:
        pass

    @property
    def processed_fps(self) -> float:
        """Results per second between the first and the last result (teardown excluded)."""
        return (len(self.times) - 1) / (self.times[-1] - self.times[0])


def run_to_end(cfg: ServiceConfig, frames, log: ResultLog | None = None) -> tuple[float, object]:
    built = build_service(cfg, source=ArraySource(frames, CAL), edits=PROMPTS, extra_sinks=[log] if log else ())
    t0 = time.perf_counter()
    built.service.run()
    elapsed = time.perf_counter() - t0
    built.close()
    return elapsed, built


def test_bad_hooks_leave_the_pipeline_speed_and_results_intact(tmp_path) -> None:
    frames, _ = disk_video(n_frames=300)
    RELEASE.clear()
    base_log, bad_log = ResultLog(), ResultLog()
    _, _base = run_to_end(config(tmp_path / "a"), frames, base_log)
    _, bad = run_to_end(config(tmp_path / "b", hooks=("SlowHook", "CrashingHook", "HangingHook")), frames,
                            bad_log)
    RELEASE.set()
    assert base_log.frames == bad_log.frames == list(range(300))  # results complete, in order
    assert bad_log.measured == base_log.measured  # and the same: hooks cannot disturb tracking
    counters = bad.service.status().sinks["HookRunner"]  # the runner's counters reach the status snapshot
    assert counters["hooks.CrashingHook#1.errors"] > 0
    assert counters["hooks.SlowHook#0.coalesced"] > 0
    assert bad.hooks.counters["hooks.HangingHook#2.hangs"] >= 1  # found hung at the latest when closing
    base_fps, bad_fps = base_log.processed_fps, bad_log.processed_fps
    # A stalling hook would cut throughput to ~1/(hook time); allow generous noise on a shared machine.
    assert bad_fps > 0.5 * base_fps, f"{bad_fps:.0f} fps with bad hooks vs {base_fps:.0f} without"


def test_events_from_the_pipeline_reach_hooks(tmp_path) -> None:
    SEEN.clear()
    # One particle drifting out through the right edge (x = 128 - 0.5 at frame ~27).
    frames, truth = disk_video(n_frames=60, centres=((100.0, 48.0),), velocity=(1.0, 0.0))
    built = build_service(config(tmp_path, hooks=("EventLog",)), source=ArraySource(frames, CAL),
                          edits=[Prompt(1, 0, ((100.0, 48.0),), (1,))])
    built.service.run()
    built.close()
    events = {kind: frame for kind, particle, frame in reversed(SEEN["events"]) if particle == 1}
    assert list(events) == ["particle_lost", "particle_left_field", "particle_near_edge"]
    assert 127.5 - truth[events["particle_near_edge"], 0, 0] < 32 + 3  # margin 32 px, within tracking error
    assert events["particle_near_edge"] < events["particle_left_field"] <= events["particle_lost"]
    assert len(SEEN["frames"]) > 0


@pytest.fixture
def live(tmp_path):
    frames, _ = disk_video(n_frames=2000)
    cfg = config(tmp_path, control={"enabled": True, "endpoint": "tcp://127.0.0.1:0"},
                 pipeline={"backpressure": "latest", "status_interval_s": 0.1},
                 quotas={"max_worker_load": 1.0})  # not about load: a busy test machine must not refuse prompts
    built = build_service(cfg, source=ArraySource(frames, CAL, delay_s=0.01), edits=PROMPTS[:1])
    built.service.start()
    client = ControlClient(built.control.endpoint, timeout_s=3.0)
    yield built, client
    client.close()
    built.service.stop()
    built.close()


def wait_for(predicate, timeout_s: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_control_channel_drives_the_real_service(live) -> None:
    _built, client = live
    assert wait_for(lambda: client.status()["frames_processed"] > 5)
    client.add_prompt(2, box=(60.0, 50.0, 80.0, 70.0))
    assert wait_for(lambda: {p["id"] for p in client.particles()} == {1, 2})
    assert client.config()["segmenter"]["backend"] == "threshold"
    client.pause()
    assert wait_for(lambda: client.status()["state"] == "paused")
    frozen = client.status()["frames_processed"]
    time.sleep(0.3)
    assert client.status()["frames_processed"] == frozen
    client.resume()
    assert wait_for(lambda: client.status()["frames_processed"] > frozen)
    client.remove(2)
    assert wait_for(lambda: [p["id"] for p in client.particles()] == [1])
    client.annotate("salt added")
    with pytest.raises(ControlError) as info:
        client.request("add_prompt", {"particle": 3, "points": [[1.0]]})
    assert info.value.code == "bad_request"
