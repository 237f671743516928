"""Monitor: contrast LUT, gestures → prompts, the subscriber over real loopback sockets, and the widget's pixels."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import zmq

from sam4em_live.monitor.imaging import ContrastLut, auto_levels, paint_mask, particle_colour
from sam4em_live.monitor.model import DashboardModel, msd_curve
from sam4em_live.monitor.prompts import check_edit, interpret_box, interpret_click, interpret_remove
from sam4em_live.monitor.subscriber import ResultsSubscriber
from sam4em_live.particles import Prompt, RemoveParticle
from sam4em_live.sinks.results_schema import pack
from tests.monitor_helpers import SHAPE, hue_of, open_publisher, synthetic_result

pytestmark = pytest.mark.qt

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def _wait(predicate, timeout_s=5.0, poll_s=0.02):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll_s)
    return False


# ---------------------------------------------------------------- image path


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.int16, np.float32])
def test_contrast_lut_matches_the_level_formula(dtype):
    rng = np.random.default_rng(1)
    info = np.iinfo(dtype) if np.dtype(dtype).kind != "f" else None
    low_bound, high_bound = (info.min, info.max) if info else (-500, 5000)
    pixels = rng.integers(max(low_bound, -1000), min(high_bound, 3000), size=(40, 50)).astype(dtype)
    lut = ContrastLut((20.0, 220.0))
    expected = np.clip((pixels.astype(float) - 20.0) * 255.0 / 200.0, 0, 255)
    out = lut.apply(pixels)
    assert out.dtype == np.uint8 and out.shape == pixels.shape
    assert np.abs(out.astype(float) - expected).max() <= 1.0
    lut.set_levels((0.0, 10.0))  # a level change must take effect (table rebuilt)
    assert np.abs(lut.apply(pixels).astype(float) - np.clip(pixels.astype(float) * 25.5, 0, 255)).max() <= 1.0


def test_auto_levels_are_robust_percentiles():
    pixels = np.full((100, 100), 1000, np.uint16)
    pixels[:50] = 600
    pixels[0, 0] = 65535  # a hot pixel must not set the top level
    low, high = auto_levels(pixels)
    assert 590 <= low <= 610 and 990 <= high <= 1010


def test_mask_is_painted_on_the_decimated_grid():
    overlay = np.zeros((8, 8, 4), np.uint8)
    crop = np.ones((3, 4), bool)  # full-frame rows 5..7, columns 3..6
    paint_mask(overlay, crop, (3, 5, 7, 8), step=2, rgba=(255, 0, 0, 100))
    painted = np.argwhere(overlay[..., 3] > 0)
    # preview (r, c) samples full (2r, 2c): rows 6 -> r=3; columns 4, 6 -> c=2, 3
    assert sorted(map(tuple, painted)) == [(3, 2), (3, 3)]


def test_particle_colours_are_stable_and_distinct():
    colours = [particle_colour(i) for i in range(1, 9)]
    assert colours == [particle_colour(i) for i in range(1, 9)]
    hues = sorted(hue_of(c) for c in colours)
    assert min(np.diff(hues)) > 0.05


def test_msd_curve_prefers_physical_units_and_tolerates_gaps():
    stats = {"lag_frames": [1, 2, 3], "lag_s": [0.02, 0.04, 0.06], "msd_px2": [1.0, 2.0, 3.0],
             "msd_nm2": [4.0, None, 12.0], "alpha": 0.97}
    curve = msd_curve(stats)
    assert curve.lag_unit == "s" and curve.msd_unit == "px²"  # one missing nm² value -> fall back to px²
    np.testing.assert_allclose(curve.msd, [1.0, 2.0, 3.0])
    assert curve.alpha == pytest.approx(0.97)
    assert msd_curve({"lag_frames": [1], "msd_px2": [0.0]}) is None
    assert msd_curve({}) is None


# ---------------------------------------------------------------- gestures → prompts


@pytest.mark.parametrize("case, args, expected", [
    ("new particle", (10.0, 20.0, False, None, None, None, 5), Prompt(5, points=((10.0, 20.0),), labels=(1,))),
    ("correct selected", (10.0, 20.0, False, None, 2, (30.0, 30.0), 5), Prompt(2, points=((10.0, 20.0),), labels=(1,))),
    ("negative point", (12.0, 21.0, True, None, 2, (30.0, 31.0), 5),
     Prompt(2, points=((30.0, 31.0), (12.0, 21.0)), labels=(1, 0))),
    ("negative without selection", (12.0, 21.0, True, None, None, None, 5), None),
    ("click a mask selects", (30.0, 30.0, False, 3, None, None, 5), None),
])
def test_click_interpretation(case, args, expected):
    gesture = interpret_click(*args)
    assert gesture.edit == expected, case
    if case == "click a mask selects":
        assert gesture.select == 3
    if case == "negative without selection":
        assert "select" in gesture.message


def test_box_and_remove_interpretation():
    box = interpret_box(50.0, 40.0, 20.0, 10.0, None, 4).edit
    assert box == Prompt(4, box=(20.0, 10.0, 50.0, 40.0))
    assert interpret_box(5.0, 5.0, 6.0, 5.5, None, 4).edit is None  # a shaky click
    assert interpret_remove(7).edit == RemoveParticle(7)
    assert interpret_remove(None).edit is None
    assert check_edit(Prompt(1, points=((300.0, 10.0),), labels=(1,)), SHAPE) is not None  # outside the frame
    assert check_edit(Prompt(1, points=((100.0, 10.0),), labels=(1,)), SHAPE) is None


# ---------------------------------------------------------------- subscriber over loopback


def _joined(publisher, subscriber):
    """PUB/SUB slow joiner: publish status until the subscriber sees one."""
    def seen():
        publisher.on_status({"state": "streaming"})
        return subscriber.take().status is not None
    assert _wait(seen, 5.0, 0.05), "subscriber never joined"


def test_subscriber_coalesces_results_and_keeps_only_the_latest_preview():
    publisher = open_publisher()
    subscriber = ResultsSubscriber(publisher.endpoint)
    subscriber.start()
    try:
        _joined(publisher, subscriber)
        time.sleep(0.1)
        base = subscriber.messages_received
        for i in range(40):
            publisher.consume(synthetic_result(i, {1: (50.0 + i, 60.0)}))
            time.sleep(0.002)  # > 1 / preview_fps: every result gets its preview
        assert _wait(lambda: subscriber.messages_received >= base + 80)  # 40 results + 40 previews
        time.sleep(0.1)
        update = subscriber.take()  # the GUI was busy: one take for everything
        assert update.results_received == 40
        assert [p.frame for p in update.points] == list(range(40))  # every position kept for the tails
        assert update.points[7].positions[1] == pytest.approx((57.0, 60.0), abs=1e-6)
        assert update.latest_result["frame"] == 39
        assert update.preview.frame == 39 and update.preview.step == 2  # only the newest preview is kept
        assert update.preview.pixels.shape == (128, 128)
        assert subscriber.take().latest_result is None  # handed over exactly once
    finally:
        subscriber.stop()
        publisher.close()
    assert not subscriber.alive


def test_subscriber_counts_rejected_messages_and_goes_on():
    context = zmq.Context.instance()
    pub = context.socket(zmq.PUB)
    port = pub.bind_to_random_port("tcp://127.0.0.1")
    subscriber = ResultsSubscriber(f"tcp://127.0.0.1:{port}")
    subscriber.start()
    try:
        assert _wait(lambda: pub.send_multipart(pack(b"status", {"type": "status"})) or
                     subscriber.take().status is not None)
        pub.send_multipart([b"result", b"\xc1 not msgpack"])
        pub.send_multipart([b"result", b"x", b"y", b"z"])
        pub.send_multipart(pack(b"result", {"schema": "other", "version": 9}))
        pub.send_multipart(pack(b"preview", {"type": "preview", "preview_shape": [4, 4], "preview_dtype": "|u1"}))
        pub.send_multipart(pack(b"result", {"type": "result", "run_id": "r", "frame": 3, "particles": []}))
        updates = []
        assert _wait(lambda: updates.append(subscriber.take()) or any(u.latest_result for u in updates))
        assert updates[-1].rejected_total == 4
        assert sum(updates[-1].rejected_by_reason.values()) == 4
        assert next(u.latest_result for u in updates if u.latest_result)["frame"] == 3
        assert subscriber.alive
    finally:
        subscriber.stop()
        pub.close(linger=0)


def _rebind(run_id, endpoint, timeout_s=3.0):
    """Bind a new publisher on the same endpoint (the old socket's port is released asynchronously)."""
    deadline = time.monotonic() + timeout_s
    while True:
        context = zmq.Context()  # own context: destroying it closes the socket of a failed bind
        try:
            return open_publisher(run_id, endpoint=endpoint, context=context), context
        except zmq.ZMQError:
            context.destroy(linger=0)
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


def test_reconnects_after_a_service_restart_and_resets_tails():
    first = open_publisher("run-a")
    endpoint = first.endpoint
    subscriber = ResultsSubscriber(endpoint)
    subscriber.start()
    model = DashboardModel(tail_frames=50)

    def apply_until(predicate):
        return _wait(lambda: (model.apply(subscriber.take()), predicate())[1])

    try:
        _joined(first, subscriber)
        for i in range(5):
            first.consume(synthetic_result(i, {1: (50.0 + i, 60.0)}))
        assert apply_until(lambda: 1 in model.tails and len(model.tails[1].xy) == 5)
        first.close()
        second, context = _rebind("run-b", endpoint)  # same port: the service restarted
        try:
            _joined(second, subscriber)
            second.consume(synthetic_result(0, {1: (100.0, 100.0)}))
            assert apply_until(lambda: model.run_id == "run-b" and model.result is not None), model.run_id
            assert len(model.tails[1].xy) == 1 and model.tails[1].xy[0] == pytest.approx((100.0, 100.0))
        finally:
            second.close()
            context.destroy(linger=0)
    finally:
        subscriber.stop()


# ---------------------------------------------------------------- status line


@pytest.mark.parametrize(
    "status, expected",
    [
        ({"state": "streaming", "wall_time_s": 0.0}, ""),  # age unknown: nothing claimed
        ({"state": "streaming", "age_s": 0.5}, ""),
        ({"state": "streaming", "age_s": 6.7}, " (status 7 s old)"),
        ({"state": "streaming", "age_s": 0.1, "stalled": True, "worker_stalled_s": 6.2}, " (WORKER STALLED 6 s)"),
    ],
)
def test_status_line_says_when_the_status_is_old_or_the_worker_stalled(status, expected):
    from sam4em_live.monitor.window import _staleness

    if "age_s" in status:
        status = {**status, "wall_time_s": time.time() - status.pop("age_s")}
    assert _staleness(status) == expected
