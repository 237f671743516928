"""Prompts seeded beside the frame loop (issue 23): a click never stalls a live stream.

Backend: a batch seeded aside and landed on its own frame gives exactly what seeding on that frame
gives (the synchronous path, kept for every-frame and offline runs); landed later, a moving particle
is brought up to the landing frame. Lane: edits that come due while a batch is seeded wait for it, in
order. Service, end to end over real ZeroMQ sockets (port 0) from a sender process pacing a camera at
100 fps: a dozen prompts at once (one on empty background) and prompts added mid-stream over the
control channel drop no frame while they are seeded, the bad one comes back as ``prompt_rejected``
naming its particle, the others land within the seeding helper's own time on them plus a bounded number of
frames a batch (`HelperTimeline`), the helper yields to the worker no longer than its patience, and they are
tracked.
"""

from __future__ import annotations

import multiprocessing as mp
import threading
import time
from typing import Any

import numpy as np
import pytest

from sam4em_live.config import ServiceConfig
from sam4em_live.control import ControlClient
from sam4em_live.frames import Frame
from sam4em_live.particles import Prompt, RemoveParticle
from sam4em_live.segment.blas_threads import blas_threads
from sam4em_live.segment.embedded.segmenter import EmbeddedSegmenter
from sam4em_live.segment.stage import InProcessSegmentStage
from sam4em_live.service import seeding
from sam4em_live.service.builder import build_service
from sam4em_live.service.seeding import MAX_LANDING_WAIT_FRAMES, SeedingLane, chunks
from sam4em_live.service.worker_idle import WorkerIdle
from sam4em_live.sources.array_source import ArraySource
from tests.frame_loss import LossLedger

# A particle whose statistics snapshot comes two frames after it started makes `stats.fit._solve_linear`
# divide by a zero determinant (one lag with weight): a bug of the statistics, not of seeding, hit on the
# synchronous path as well when a prompt lands just before a publishing frame. Reported; ignored here.
pytestmark = pytest.mark.filterwarnings("ignore:divide by zero encountered in divide:RuntimeWarning")

RADIUS_PX = 10.0


def disc_frames(n_frames: int, centres: list[tuple[float, float]], shape: tuple[int, int],
                velocity: tuple[float, float] = (0.0, 0.0), seed: int = 0, walk_px: float = 0.0) -> np.ndarray:
    """Dark discs (200 -> 120 counts, noise sigma 20) at ``centres`` (x, y), moving by ``velocity`` px a frame.

    ``walk_px``: each disc also takes random-walk steps of this standard deviation (px per axis and frame).
    """
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    frames = np.empty((n_frames, *shape), np.uint16)
    walks = np.cumsum(rng.normal(0.0, walk_px, (n_frames, len(centres), 2)), axis=0) if walk_px else None
    for t in range(n_frames):
        image = np.full(shape, 200.0)
        for k, (x, y) in enumerate(centres):
            dx, dy = walks[t, k] if walks is not None else (0.0, 0.0)
            cx, cy = x + velocity[0] * t + dx, y + velocity[1] * t + dy
            image[(cols - cx) ** 2 + (rows - cy) ** 2 <= RADIUS_PX**2] = 120.0
        frames[t] = np.clip(image + rng.normal(0, 20, shape), 0, 65535).astype(np.uint16)
    return frames


def grid_centres(count: int, shape: tuple[int, int], spacing: float = 64.0) -> list[tuple[float, float]]:
    per_row = int((shape[1] - spacing) // spacing)
    return [(spacing * (1 + i % per_row), spacing * (1 + i // per_row)) for i in range(count)]


def frame(pixels: np.ndarray, index: int) -> Frame:
    return Frame("test", index, float(index), pixels)


def click(particle: int, x: float, y: float, at: int | None = 0) -> Prompt:
    return Prompt(particle, at, ((x, y),), (1,))


def same_masks(a: list[Any], b: list[Any]) -> bool:
    return len(a) == len(b) and all(
        m.particle == n.particle and m.present == n.present and m.bbox == n.bbox and m.score == n.score
        and (m.crop is None if n.crop is None else np.array_equal(m.crop, n.crop)) for m, n in zip(a, b, strict=True))


# ---------------------------------------------------------------------------------------------- the backend


def test_a_batch_landing_on_its_own_frame_equals_seeding_there() -> None:
    centres = grid_centres(3, (192, 256))
    frames = disc_frames(30, centres, (192, 256), velocity=(0.7, 0.4))
    prompts = [click(p + 1, x, y) for p, (x, y) in enumerate(centres)]
    synchronous, aside = EmbeddedSegmenter(), EmbeddedSegmenter()
    seeded = aside.seed(frame(frames[0], 0), prompts)
    assert seeded.rejected == () and len(seeded.prepared) == 3
    assert same_masks(synchronous.track(frame(frames[0], 0), prompts),
                      aside.track(frame(frames[0], 0), list(seeded.edits), seeded=seeded))
    for i in range(1, len(frames)):  # and the particles go on identically
        assert same_masks(synchronous.track(frame(frames[i], i)), aside.track(frame(frames[i], i)))


def test_a_prompt_landing_later_is_brought_up_to_the_landing_frame() -> None:
    velocity, late = (1.5, -1.0), 12
    frames = disc_frames(late + 1, [(80.0, 120.0)], (192, 192), velocity=velocity)
    segmenter = EmbeddedSegmenter()
    seeded = segmenter.seed(frame(frames[0], 0), [click(1, 80.0, 120.0)])
    (mask,) = segmenter.track(frame(frames[late], late), [e.at_frame(late) for e in seeded.edits], seeded=seeded)
    truth = (80.0 + velocity[0] * late, 120.0 + velocity[1] * late)  # 21.6 px from the click
    assert mask.present and mask.crop is not None
    rows, cols = np.nonzero(mask.crop)
    x0, y0 = mask.bbox[0], mask.bbox[1]
    assert np.hypot(cols.mean() + x0 - truth[0], rows.mean() + y0 - truth[1]) < 2.0


def test_a_prompt_that_cannot_be_seeded_aside_is_returned_naming_its_particle() -> None:
    frames = disc_frames(1, [(60.0, 60.0)], (128, 128))
    seeded = EmbeddedSegmenter().seed(frame(frames[0], 0), [click(1, 60.0, 60.0), click(7, 110.0, 10.0)])
    assert [e.particle for e in seeded.edits] == [1]
    ((edit, reason),) = seeded.rejected
    assert edit.particle == 7 and "particle 7 " in reason


# ---------------------------------------------------------------------------------------------- the lane


def land(lane: SeedingLane, pixels: np.ndarray, first: int, timeout_s: float = 30.0) -> tuple[int, Any]:
    """Route empty frames from ``first`` on until a batch lands: (its frame, the landing)."""
    deadline = time.monotonic() + timeout_s
    index = first
    while time.monotonic() < deadline:
        landing = lane.route(frame(pixels, index), [])
        if landing.seeded is not None or landing.edits:
            return index, landing
        index += 1
        time.sleep(0.005)
    raise AssertionError("the batch never landed")


def test_edits_due_while_a_batch_is_seeded_wait_for_it_in_order() -> None:
    pixels = disc_frames(1, [(60.0, 60.0), (140.0, 60.0)], (128, 200))[0]
    lane = SeedingLane(EmbeddedSegmenter())
    try:
        assert lane.route(frame(pixels, 0), [click(1, 60.0, 60.0, 0)]) == ([], None)  # seeding aside
        assert lane.busy
        removal = RemoveParticle(1, 1)
        assert lane.route(frame(pixels, 1), [removal]).edits == []  # waits: particle 1 is not there yet
        index, landing = land(lane, pixels, 2)
        assert [type(e).__name__ for e in landing.edits] == ["Prompt", "RemoveParticle"]  # in their order
        assert all(e.frame == index for e in landing.edits)  # anchored where they take effect
        assert landing.seeded is not None and landing.seeded.frame_index == 0
        assert lane.last_delay_frames == index and not lane.busy
        # Nothing in flight, no prompt: edits pass straight through on their own frame.
        removal = RemoveParticle(2, index + 1)
        assert lane.route(frame(pixels, index + 1), [removal]) == ([removal], None)
    finally:
        lane.close()


def test_a_batch_is_cut_after_each_prompt_in_order() -> None:
    p1, p2 = click(1, 10.0, 10.0), click(2, 20.0, 20.0)
    r3, r4 = RemoveParticle(3, 0), RemoveParticle(4, 0)
    assert chunks([r3, p1, p2, r4]) == [(r3, p1), (p2, r4)]
    assert chunks([p1]) == [(p1,)] and chunks([r3]) == [(r3,)]


def _route_until(lane: SeedingLane, pixels: np.ndarray, first: int, n_frames: int, backlog: int = 0
                 ) -> dict[int, Any]:
    """Route ``n_frames`` empty frames (worker caught up unless ``backlog``): landings by frame index."""
    landed = {}
    for index in range(first, first + n_frames):
        landing = lane.route(frame(pixels, index), [], backlog)
        if landing.edits:
            landed[index] = landing
        if not lane.busy:
            break
        time.sleep(0.01)
    return landed


class CountingSeeder(EmbeddedSegmenter):
    """The embedded backend, noting each ``seed`` call's particles (a real seeder, seen from outside)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[int]] = []

    def seed(self, frame: Frame, edits: Any) -> Any:
        self.calls.append([e.particle for e in edits if isinstance(e, Prompt)])
        return super().seed(frame, edits)


def test_a_batch_is_seeded_one_prompt_at_a_time_and_lands_whole_in_order() -> None:
    centres = grid_centres(3, (192, 256))
    pixels = disc_frames(1, centres, (192, 256))[0]
    seeder = CountingSeeder()
    lane = SeedingLane(seeder)
    try:
        prompts = [click(p + 1, x, y) for p, (x, y) in enumerate(centres)]
        removal = RemoveParticle(9, 0)
        assert lane.route(frame(pixels, 0), [prompts[0], removal, *prompts[1:]], 0) == ([], None)
        landed = _route_until(lane, pixels, 1, 3000)
        assert not lane.busy and seeder.calls == [[1], [2], [3]]
        ((index, landing),) = landed.items()
        assert [e.particle for e in landing.edits] == [1, 9, 2, 3]
        assert landing.seeded is not None and landing.seeded.frame_index == 0 and len(landing.seeded.prepared) == 3
        assert all(e.frame == index for e in landing.edits)
    finally:
        lane.close()


def test_a_seeded_batch_waits_for_a_frame_with_no_backlog_but_not_forever() -> None:
    pixels = disc_frames(1, [(60.0, 60.0), (140.0, 60.0)], (128, 200))[0]
    for caught_up_after in (MAX_LANDING_WAIT_FRAMES // 2, None):
        lane = SeedingLane(EmbeddedSegmenter())
        try:
            lane.route(frame(pixels, 0), [click(1, 60.0, 60.0), click(2, 140.0, 60.0)], 0)
            deadline = time.monotonic() + 30
            index = 1
            while not lane.seeded_waiting and time.monotonic() < deadline:  # seeding, frames waiting behind
                assert lane.route(frame(pixels, index), [], 5).edits == []
                index += 1
                time.sleep(0.01)
            ready_on = index - 1
            if caught_up_after is not None:
                assert _route_until(lane, pixels, index, caught_up_after, backlog=5) == {}
                ((landed_on, _),) = _route_until(lane, pixels, index + caught_up_after, 1).items()
                assert landed_on == index + caught_up_after  # the first frame with nothing behind it
            else:  # never caught up: it lands anyway
                ((landed_on, _),) = _route_until(lane, pixels, index, 3 * MAX_LANDING_WAIT_FRAMES, 5).items()
                assert landed_on == ready_on + MAX_LANDING_WAIT_FRAMES
        finally:
            lane.close()


class SteppingSeeder(EmbeddedSegmenter):
    """The embedded backend whose seeding first takes many small Python steps (noted), as real seeding does."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        self.steps, self.taken = steps, 0
        self.started = threading.Event()

    def _step(self) -> None:
        self.taken += 1
        time.sleep(0.001)  # C: no Python call, so the lane can pause the helper only between steps

    def seed(self, frame: Frame, edits: Any) -> Any:
        for _ in range(self.steps):
            self._step()
            self.started.set()
        return super().seed(frame, edits)


def test_the_helper_seeds_only_while_the_worker_is_idle(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seeding shares the interpreter: once the worker takes a frame the helper pauses mid-seed until it is done."""
    monkeypatch.setattr(seeding, "MAX_YIELD_S", 30.0)  # no forced slice within the test
    monkeypatch.setattr(seeding, "SEEDING_PATIENCE_S", 30.0)
    pixels = disc_frames(1, [(60.0, 60.0)], (128, 200))[0]
    seeder = SteppingSeeder(steps=400)
    worker = WorkerIdle()  # as the service drives it: took at each frame, delivered after the sinks
    lane = SeedingLane(seeder, worker)
    try:
        worker.took(0)
        assert lane.route(frame(pixels, 0), [click(1, 60.0, 60.0)], 0) == ([], None)
        worker.delivered()  # idle: the helper seeds
        assert seeder.started.wait(30)
        worker.took(3)
        lane.route(frame(pixels, 1), [], 3)  # the worker holds frame 1, 3 more wait behind it
        time.sleep(0.02)  # the helper reaches its next step and pauses there
        paused_at = seeder.taken
        time.sleep(0.2)  # 200 steps' time: none taken while the worker holds the frame
        assert seeder.taken == paused_at < seeder.steps
        worker.delivered()  # frame 1 delivered, but frames waited behind it: not idle yet
        time.sleep(0.1)
        assert seeder.taken == paused_at
        worker.took(0)
        lane.route(frame(pixels, 2), [], 0)
        worker.delivered()  # caught up
        landed = _route_until(lane, pixels, 3, 3000)
        assert seeder.taken == seeder.steps and len(landed) == 1
    finally:
        lane.close()


def test_the_stage_runs_blas_on_one_thread_while_it_is_open() -> None:
    before = blas_threads()
    if not before:
        pytest.skip("no OpenBLAS loaded (numpy built against another BLAS)")
    stage = InProcessSegmentStage(EmbeddedSegmenter())
    try:
        assert set(blas_threads().values()) == {1}
    finally:
        stage.close()
    assert blas_threads() == before


def test_only_live_runs_seed_aside() -> None:
    pixels = disc_frames(3, [(60.0, 60.0)], (128, 128))
    for backpressure, aside in (("latest", True), ("every-frame", False)):
        config = ServiceConfig.from_mapping({"recorder": {"enabled": False}, "publisher": {"enabled": False},
                                             "pipeline": {"backpressure": backpressure}})
        built = build_service(config, source=ArraySource(pixels), edits=[click(1, 60.0, 60.0)])
        try:
            built.service.run()
        finally:
            built.close()
        processor = built.service.processor
        assert processor is not None and (processor.seeding is not None) is aside


# ---------------------------------------------------------------------------------------------- end to end

# 100 fps, not the 200: these tests check that a click drops no frame of a camera the machine keeps
# up with (here ~2x its rate, on a loaded CI machine too); the 200 fps figure is the pipeline benchmark's
# (docs/benchmarks.md "End to end"), since at 200 fps on 2 shared cores the margin is the machine's load.
CAMERA_FPS = 100.0
#: Frames processed after the prompts' landing before the camera stops (the checks look at 20 of them).
SETTLED_FRAMES = 30


def _send(endpoint: str, frames: np.ndarray, n_frames: int, fps: float, go: Any, stop: Any, sent: Any) -> None:
    """A camera over ZeroMQ (PUSH): up to ``n_frames`` at ``fps`` (``frames`` forwards, then backwards), then the end.

    It ends early once ``stop`` is set; ``sent`` holds the number of frames sent.
    """
    import zmq

    from sam4em_live.wire import encode_frame, encode_series_end

    context = zmq.Context()
    socket = context.socket(zmq.PUSH)
    socket.setsockopt(zmq.SNDHWM, 64)
    socket.connect(endpoint)
    order = [*range(len(frames)), *range(len(frames) - 2, 0, -1)]  # continuous paths, played to and fro
    go.wait()
    start = time.perf_counter()
    i = 0
    while i < n_frames and not stop.is_set():
        delay = start + i / fps - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        socket.send_multipart(encode_frame(frames[order[i % len(order)]], "camera", i, time.time()), copy=False)
        i += 1
    sent.value = i
    socket.send_multipart(encode_series_end("camera", i))
    socket.close(linger=-1)
    context.term()


class FrameLog:
    """A real sink: which particles each processed frame had, and the prompt rejections."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.present: dict[int, set[int]] = {}
        self.rejected: list[tuple[int, int | None, str]] = []
        self.applied: dict[int, int] = {}  # particle -> the frame its (last) prompt was applied on: its landing

    def open(self, run: Any) -> None:
        pass

    def consume(self, result: Any) -> None:
        with self.lock:
            self.present[result.frame.index] = {m.particle for m in result.masks if m.present}
            self.rejected += [(e.frame, e.particle, str(e.detail.get("reason", "")))
                              for e in result.events if e.kind == "prompt_rejected"]
            self.applied.update({r.edit.particle: r.frame for r in result.edits
                                 if r.outcome == "applied" and r.kind != "removal"})

    def on_status(self, status: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def settled(self, particles: set[int]) -> bool:
        """Whether the prompts of ``particles`` have all landed or been refused, `SETTLED_FRAMES` processed frames ago."""
        with self.lock:
            decided = {**self.applied, **{p: f for f, p, _ in self.rejected if p is not None}}
            if not particles <= set(decided):
                return False
            landed = max(decided[p] for p in particles)
            return sum(1 for f in self.present if f > landed) >= SETTLED_FRAMES

    def first_with(self, particles: set[int]) -> int | None:
        with self.lock:
            return min((f for f, present in self.present.items() if particles <= present), default=None)


def _camera_run(frames: np.ndarray, n_frames: int, edits: list[Prompt], control: bool = False,
                during: Any = None, settled: set[int] | None = None) -> tuple[FrameLog, Any, LossLedger, int]:
    """The live service (embedded, ``latest``, queue 8) fed over ZeroMQ at ``CAMERA_FPS`` by a sender process.

    The camera stops once the prompts of the ``settled`` particles have landed and `SETTLED_FRAMES` more
    frames were processed (or after ``n_frames``): the test lasts as long as the machine needs to seed them,
    neither cut off on a slow machine nor longer than that on a fast one. Returns the frames' log, the final
    status, the queue's ledger of the frames it dropped (`LossLedger`) and the number of frames sent.
    """
    config = ServiceConfig.from_mapping({
        "source": {"kind": "zmq", "endpoint": "tcp://127.0.0.1:0", "socket": "pull", "mode": "bind"},
        "recorder": {"enabled": False}, "publisher": {"enabled": False},
        "control": {"enabled": control, "endpoint": "tcp://127.0.0.1:0"},
        "pipeline": {"backpressure": "latest", "queue_frames": 8, "status_interval_s": 0.2},
        "quotas": {"max_worker_load": 1.0, "max_edits_per_s": 100.0},
    })
    log = FrameLog()
    built = build_service(config, edits=edits, extra_sinks=[log], stop_at_series_end=True)
    ledger = built.service.queue = LossLedger(CAMERA_FPS, 8)
    built.service.start()
    go, stop, sent = mp.Event(), mp.Event(), mp.Value("i", 0)
    sender = mp.Process(target=_send, args=(_bound(built.service.source), frames, n_frames, CAMERA_FPS, go, stop,
                                            sent))
    sender.start()
    try:
        go.set()
        if during is not None:
            during(built, log)
        while settled is not None and sender.is_alive() and not log.settled(settled):
            time.sleep(0.02)
        stop.set()
        sender.join(60)
        assert built.service.wait(60)
    finally:
        if sender.is_alive():
            sender.kill()
        built.service.stop()
        built.close()
    return log, built.service.status(), ledger, int(sent.value)


def _bound(source: Any, timeout_s: float = 10.0) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        endpoint = str(getattr(source, "endpoint", ""))
        if endpoint and not endpoint.endswith(":0"):
            return endpoint
        time.sleep(0.01)
    raise TimeoutError("the service did not bind its ZeroMQ source")


#: Frames a batch may take beyond the helper's time on it: its wait for a frame with no backlog
#: (`MAX_LANDING_WAIT_FRAMES`), the worker's lag behind the camera when it routes the prompts and when it takes
#: the first frame after they are seeded (up to the queue's 8 frames each), and 30 frames (0.3 s) for the
#: hand-offs between threads, the worker's frame in progress and a prompt's trip over the control channel.
LANE_FRAMES_PER_BATCH = MAX_LANDING_WAIT_FRAMES + 2 * 8 + 30
#: The helper yields to a busy worker for at most `seeding.SEEDING_PATIENCE_S` a batch; its last wait may
#: straddle the end of the patience (`seeding.MAX_YIELD_S`), and the thread may get a core late to notice it.
MAX_YIELDED_PER_BATCH_S = seeding.SEEDING_PATIENCE_S + seeding.MAX_YIELD_S + 0.1
#: The seeding helper's thread (`SeedingLane`).
HELPER_THREAD = "sam4em-seeding"
#: The camera's frames at most (it stops once the prompts have settled: a bound for a run that never does).
MAX_CAMERA_FRAMES = 3000


class HelperTimeline:
    """What the seeding helper thread did in a run: its seed calls and its waits for the worker, timed.

    Installed over `EmbeddedSegmenter.seed` and `WorkerIdle.wait` (``monkeypatch``); only calls from the
    helper thread (`SeedingLane`, thread ``sam4em-seeding``) are noted. A batch is the calls for one frame.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.lock = threading.Lock()
        self.busy_s: dict[int, float] = {}  # batch (its frame) -> wall time in seed calls (their waits included)
        self.yielded_s: dict[int, float] = {}  # batch -> of which waiting for the worker, and just before them
        self._batch: int | None = None
        self._yielded_outside = 0.0  # waits before a seed call (the trace hook's pause at its call event)
        seed, wait = EmbeddedSegmenter.seed, WorkerIdle.wait

        def timed_seed(segmenter: EmbeddedSegmenter, at: Frame, edits: Any) -> Any:
            if threading.current_thread().name != HELPER_THREAD:
                return seed(segmenter, at, edits)
            with self.lock:
                self._batch = at.index
                yielded_before, self._yielded_outside = self._yielded_outside, 0.0
                self.yielded_s[at.index] = self.yielded_s.get(at.index, 0.0) + yielded_before
            started = time.perf_counter()
            try:
                return seed(segmenter, at, edits)
            finally:
                with self.lock:
                    self.busy_s[at.index] = self.busy_s.get(at.index, 0.0) + yielded_before + (
                        time.perf_counter() - started)
                    self._batch = None

        def timed_wait(idle: WorkerIdle, timeout_s: float) -> bool:
            if threading.current_thread().name != HELPER_THREAD:
                return wait(idle, timeout_s)
            started = time.perf_counter()
            try:
                return wait(idle, timeout_s)
            finally:
                with self.lock:
                    waited = time.perf_counter() - started
                    if self._batch is None:
                        self._yielded_outside += waited
                    else:
                        self.yielded_s[self._batch] = self.yielded_s.get(self._batch, 0.0) + waited

        monkeypatch.setattr(EmbeddedSegmenter, "seed", timed_seed)
        monkeypatch.setattr(WorkerIdle, "wait", timed_wait)

    def landing_limit(self, since: int) -> int:
        """Frames from frame ``since`` within which the batches seeded for frames from it must have landed.

        The helper's own time on them (the seeding as this machine runs it now, its yields to the worker
        included) at the camera's rate, plus `LANE_FRAMES_PER_BATCH` a batch: the lane's waits, which are
        bounded. What is not bounded by the lane (the seeding's speed on a loaded machine) is measured, so a
        lane that stalls (a batch not started, a seeded batch that never lands) fails on any machine.
        """
        with self.lock:
            batches = [b for b in self.busy_s if b >= since]
            busy_s = sum(self.busy_s[b] for b in batches)
        assert batches, "no prompt was seeded on the helper thread"
        return round(busy_s * CAMERA_FPS) + LANE_FRAMES_PER_BATCH * len(batches)

    def assert_patient(self) -> None:
        """No batch waited for the worker longer than the lane's patience (then it seeds regardless)."""
        with self.lock:
            too_long = {b: round(s, 3) for b, s in self.yielded_s.items() if s > MAX_YIELDED_PER_BATCH_S}
        assert not too_long, f"the helper yielded to the worker past its patience (batch frame: s): {too_long}"


def _assert_seeded_without_a_drop(log: FrameLog, ledger: LossLedger, prompted_on: int, good: set[int], bad: int,
                                  timeline: HelperTimeline, one_batch: bool = True) -> int:
    """No frame lost to the service from the prompts' frame to their landing; the bad one named; the landing frame.

    The landing is the frame the last of the ``good`` prompts was applied on (the edits' records), not the
    first frame where all of them are present: a particle missing on its landing frame would stretch the
    window into the frames after it, which pay the new particles' first frames and are not the seeding's.
    A frame lost while the machine held the worker off both cores, or pushed out by a burst from a late
    sender, is not the service's (`tests.frame_loss`); the test machine is shared with the sender process.
    ``one_batch``: the prompts were sent as one batch, so the bad one is refused on the good ones' landing
    frame. Prompts sent one by one over the control channel may be seeded in more than one batch (the lane
    takes what has arrived when the worker is idle), so the refusal may come on a later landing.
    """
    with log.lock:
        applied = [log.applied.get(p) for p in good]
    assert None not in applied, f"the prompts never landed: {sorted(p for p in good if p not in log.applied)}"
    landed = max(f for f in applied if f is not None)
    lost = ledger.lost(prompted_on, landed)
    processed = sorted(f for f in log.present if prompted_on <= f <= landed)
    assert sorted({*processed, *(loss.frame for loss in lost)}) == list(range(prompted_on, landed + 1))
    to_service = [loss.describe() for loss in lost if loss.service_lost]
    assert not to_service, f"frames lost while seeding: {to_service[:10]}"
    # The landing is bounded by the helper's own time on the prompts, not a frame count at the camera's rate
    # (which a loaded machine stretched past any fixed limit: 404 frames once, with nothing lost).
    timeline.assert_patient()
    limit = timeline.landing_limit(prompted_on)
    assert landed - prompted_on < limit, f"landed {landed - prompted_on} frames after the prompts (limit {limit})"
    ((frame_index, _, reason),) = [r for r in log.rejected if r[1] == bad]
    assert (frame_index == landed if one_batch else frame_index >= prompted_on) and f"particle {bad} " in reason
    # and they are tracked: the next 20 frames processed (under load 10 the 20 frames after the landing were all
    # dropped: the landing's own cost, the new particles' first frames)
    with log.lock:
        later = sorted(f for f in log.present if f > landed)[:20]
        assert len(later) == 20 and all(good <= log.present[f] for f in later)
    return landed


@pytest.mark.slow
def test_a_dozen_prompts_at_once_drop_no_frame_of_a_fast_camera(monkeypatch: pytest.MonkeyPatch) -> None:
    shape = (320, 448)
    centres = grid_centres(12, shape)
    frames = disc_frames(60, centres, shape, walk_px=1.5)
    good = {p + 1 for p in range(12)}
    edits = [click(p + 1, x, y, at=10) for p, (x, y) in enumerate(centres)]
    edits.append(click(99, 32.0, 300.0, at=10))  # empty background: cannot be seeded
    timeline = HelperTimeline(monkeypatch)
    log, status, ledger, sent = _camera_run(frames, MAX_CAMERA_FRAMES, edits, settled={*good, 99})
    _assert_seeded_without_a_drop(log, ledger, 10, good, 99, timeline)
    assert status.frames_received == sent and status.segmentation_errors == 0


@pytest.mark.slow
def test_prompts_added_mid_stream_over_the_control_channel_drop_no_frame(monkeypatch: pytest.MonkeyPatch) -> None:
    shape = (320, 448)
    centres = grid_centres(8, shape)
    # The clicks below are on the frame-0 centres but land on whatever frame is next: the discs wander
    # little (≤ ~4 px over the 60-frame loop), so a click stays well inside its disc, as a user's would.
    frames = disc_frames(60, centres, shape, walk_px=0.5)
    tracked = [click(p + 1, x, y, at=0) for p, (x, y) in enumerate(centres[:2])]
    clicked_on: list[int] = []

    def add_particles(built: Any, log: FrameLog) -> None:
        deadline = time.monotonic() + 20
        while log.first_with({1, 2}) is None and time.monotonic() < deadline:
            time.sleep(0.01)
        client = ControlClient(built.control.endpoint, timeout_s=5.0)
        try:
            with log.lock:
                clicked_on.append(max(log.present) + 1)  # the prompts are for the next frame processed
            for p, (x, y) in enumerate(centres[2:], start=3):
                client.add_prompt(p, points=[(x, y)])
            client.add_prompt(98, points=[(32.0, 300.0)])
        finally:
            client.close()

    timeline = HelperTimeline(monkeypatch)
    log, _, ledger, _ = _camera_run(frames, MAX_CAMERA_FRAMES, tracked, control=True, during=add_particles,
                                    settled={*range(1, 9), 98})
    _assert_seeded_without_a_drop(log, ledger, clicked_on[0], set(range(1, 9)), 98, timeline, one_batch=False)


def test_an_accepted_discovery_proposal_is_seeded_aside(tmp_path: Any) -> None:
    shape = (160, 192)
    frames = disc_frames(150, [(60.0, 70.0), (130.0, 90.0)], shape, walk_px=0.3)
    config = ServiceConfig.from_mapping({
        "recorder": {"out_dir": str(tmp_path / "runs")}, "publisher": {"enabled": False},
        "control": {"endpoint": "tcp://127.0.0.1:0"},
        "pipeline": {"backpressure": "latest", "status_interval_s": 0.2},
        "discovery": {"mode": "propose", "every_n_frames": 2, "persistence_frames": 2},
    })
    log = FrameLog()
    built = build_service(config, source=ArraySource(frames, delay_s=0.02), extra_sinks=[log])
    assert built.control is not None and built.control.endpoint is not None
    built.service.start()
    try:
        with ControlClient(built.control.endpoint, timeout_s=3.0) as client:
            deadline = time.monotonic() + 20
            proposals: list[dict[str, Any]] = []
            while not proposals and time.monotonic() < deadline:
                proposals = client.proposals()
                time.sleep(0.05)
            assert proposals, "nothing was proposed"
            ((accepted,),) = [client.accept([proposals[0]["proposal"]])]
            particle = accepted["particle"]
            while log.first_with({particle}) is None and time.monotonic() < deadline:
                time.sleep(0.02)
    finally:
        built.service.stop()
        built.close()
    processor = built.service.processor
    assert processor is not None and processor.seeding is not None
    assert processor.seeding.batches == 1  # the proposal went through the lane, as a click does
    assert log.first_with({particle}) is not None  # and its particle is tracked


def test_two_open_stages_keep_one_blas_thread_until_both_close() -> None:
    before = blas_threads()
    if not before:
        pytest.skip("no OpenBLAS loaded (numpy built against another BLAS)")
    first, second = InProcessSegmentStage(EmbeddedSegmenter()), InProcessSegmentStage(EmbeddedSegmenter())
    first.close()
    assert set(blas_threads().values()) == {1}  # the second service still runs
    second.close()
    assert blas_threads() == before
