"""Closed loop in software: simulator → (ZeroMQ) → service → keep-centred hook → simulated stage.

The ``leave-reenter`` preset has one rod drifting right at ~3.3 px/frame; it
leaves the 256-px field around frame 38 and comes back from frame ~83. With
the keep-centred hook moving the simulated stage, it must stay in view (by the
simulator's ground truth) on every frame; without it, it leaves.
"""

from __future__ import annotations

import threading
import time

import pytest

from sam4em_live.config import ServiceConfig
from sam4em_live.control import ControlClient
from sam4em_live.frames import Frame, SeriesInfo
from sam4em_live.hooks.microscope import SimulatedMicroscope
from sam4em_live.particles import Prompt
from sam4em_live.service.builder import build_service
from sam4em_live.sim.source import SimulatedSource
from sam4em_live.sources.base import SourceCounters
from sam4em_live.sources.camera import FramePublisher, pump
from tests.loopback import ResultsCollector

FRAMES, FPS = 70, 25.0
PROMPT = Prompt(1, 0, ((128.0, 128.0),), (1,))
KEEP_CENTRED = {"target": "keep-centred", "options": {"edge_margin_px": 64, "max_step_nm": 40, "settle_frames": 3}}
SAFETY = {"max_stage_step_nm": 50.0, "max_stage_moves_per_s": 5.0}


class TruthTap:
    """Wraps the simulator; notes whether the rod's true centroid is inside each emitted frame.

    A `FrameSource` and a `MovableStage`, like the simulator it wraps: it forwards exactly those.
    """

    def __init__(self, sim: SimulatedSource) -> None:
        self.sim = sim
        self.in_view: dict[int, bool] = {}

    @property
    def counters(self) -> SourceCounters:
        return self.sim.counters

    @property
    def series(self) -> SeriesInfo | None:
        return self.sim.series

    def open(self) -> None:
        self.sim.open()

    def close(self) -> None:
        self.sim.close()

    def move_stage(self, dx_nm: float, dy_nm: float) -> None:
        self.sim.move_stage(dx_nm, dy_nm)

    def next_frame(self, timeout_s: float) -> Frame | None:
        frame = self.sim.next_frame(timeout_s)
        if frame is not None:
            rows, cols = frame.shape
            truth = self.sim.last_truth.truth  # same thread, right after emission: this frame's truth
            self.in_view[frame.index] = any(
                t["particle"] == 1 and 0 <= t["x"] <= cols - 1 and 0 <= t["y"] <= rows - 1 for t in truth
            )
        return frame


def simulator() -> TruthTap:
    return TruthTap(SimulatedSource("leave-reenter", seed=0, n_frames=FRAMES, fps=FPS))


def run_over_sockets(with_hook: bool) -> tuple[TruthTap, ResultsCollector, object, list[dict]]:
    """Camera thread → PUSH/PULL loopback → service; results and events read back over PUB/SUB."""
    tap = simulator()
    camera = FramePublisher("tcp://127.0.0.1:0", socket_kind="push")
    cfg = ServiceConfig.from_mapping({
        "source": {"kind": "zmq", "endpoint": camera.endpoint, "socket": "pull"},
        "segmenter": {"backend": "threshold"},
        "recorder": {"enabled": False},
        "publisher": {"endpoint": "tcp://127.0.0.1:0"},
        "control": {"endpoint": "tcp://127.0.0.1:0"},
        "pipeline": {"backpressure": "every-frame", "status_interval_s": 0.2},
        "hooks": {"hooks": [KEEP_CENTRED] if with_hook else [], "safety": SAFETY},
    })
    built = build_service(cfg, edits=[PROMPT], stop_at_series_end=True)
    if built.hooks is not None:  # the frames come over a socket: bind the stage of the simulator itself
        built.hooks.bind(service=built.service, microscope=SimulatedMicroscope(tap, built.service))
    subscriber = ResultsCollector(built.publisher.endpoint)
    built.service.start()
    stop = threading.Event()
    camera_thread = threading.Thread(target=pump, args=(tap, camera, stop), kwargs={"series_start_delay_s": 0.4})
    camera_thread.start()
    statuses = []
    with ControlClient(built.control.endpoint, timeout_s=3.0) as client:
        while camera_thread.is_alive():
            statuses.append(client.status())
            time.sleep(0.3)
    finished = built.service.wait(15)
    time.sleep(0.2)  # let the last published messages arrive
    subscriber.close()
    camera.close()
    built.close()
    assert finished and built.service.error is None
    return tap, subscriber, built, statuses


@pytest.mark.slow
def test_keep_centred_closes_the_loop_over_sockets() -> None:
    tap, subscriber, built, statuses = run_over_sockets(with_hook=True)
    assert len(tap.in_view) == FRAMES and all(tap.in_view.values()), "the rod left the field despite the hook"
    results = subscriber.of(b"result")
    assert [r["frame"] for r in results] == list(range(FRAMES))
    assert all(p["present"] for r in results for p in r["particles"] if p["id"] == 1)
    assert tap.sim.stage_position_nm[0] > 80.0  # the stage followed the rod to the right
    assert built.hooks.counters["commands.done"] >= 3
    lost = [e for e in subscriber.of(b"event") if e["kind"] in ("particle_lost", "particle_left_field")]
    assert lost == []
    assert any(s["state"] == "streaming" for s in statuses)  # control channel answered during the run


@pytest.mark.slow
def test_without_the_hook_the_rod_leaves() -> None:
    tap, subscriber, _, _ = run_over_sockets(with_hook=False)
    assert not all(tap.in_view.values())
    assert tap.sim.stage_position_nm == (0.0, 0.0)
    kinds = {e["kind"] for e in subscriber.of(b"event") if e.get("particle") == 1}
    assert {"particle_near_edge", "particle_lost"} <= kinds


def test_simulated_adapter_from_config() -> None:
    """hooks.microscope = "simulated" binds the source's stage through the normal builder path."""
    tap = simulator()
    cfg = ServiceConfig.from_mapping({
        "source": {"kind": "simulator", "preset": "leave-reenter", "frames": FRAMES, "fps": FPS},
        "segmenter": {"backend": "threshold"},
        "recorder": {"enabled": False}, "publisher": {"enabled": False}, "control": {"enabled": False},
        "hooks": {"hooks": [KEEP_CENTRED], "microscope": "simulated", "safety": SAFETY},
    })
    built = build_service(cfg, source=tap, edits=[PROMPT])
    built.service.run()
    built.close()
    assert all(tap.in_view.values()) and len(tap.in_view) == FRAMES
    assert built.hooks.hook_status()["adapter"]["adapter"] == "simulated"
    assert tap.sim.stage_position_nm[0] > 80.0
