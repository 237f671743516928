"""Results schema v1: RLE masks and message round trip through msgpack."""

from __future__ import annotations

import dataclasses
import math

import msgpack
import numpy as np
import pytest

from sam4em_live.frames import Calibration, Frame
from sam4em_live.measure import measure_mask
from sam4em_live.particles import ParticleMask, ParticleMeasurement
from sam4em_live.results import FrameResult, ParticleStatistics, ServiceEvent
from sam4em_live.sinks.results_schema import (
    RANDOM_WEIGHTS_WARNING,
    TOPIC_RESULT,
    decode_message,
    pack,
    result_message,
    rle_decode,
    rle_encode,
    statistics_entry,
)
from sam4em_live.stats.rolling import RollingTrackStats
from sam4em_live.wire import RejectedMessage


@pytest.mark.parametrize("seed", range(5))
def test_rle_round_trip(seed):
    rng = np.random.default_rng(seed)
    crop = rng.random((rng.integers(1, 20), rng.integers(1, 20))) > 0.5
    counts = rle_encode(crop)
    assert sum(counts) == crop.size
    np.testing.assert_array_equal(rle_decode(counts, crop.shape), crop)


def test_rle_starts_with_background_run():
    assert rle_encode(np.array([[True, True, False]])) == [0, 2, 1]
    assert rle_encode(np.array([[False, True, True]])) == [1, 2]
    with pytest.raises(ValueError, match="RLE counts sum 3 != 4"):
        rle_decode([1, 2], (2, 2))


def test_result_message_round_trip():
    full = np.zeros((20, 30), bool)
    full[5:9, 10:20] = True
    mask = ParticleMask.from_full(4, full, 0.9)
    frame = Frame("s", 7, 123.0, np.zeros((20, 30), np.uint16), Calibration(pixel_size_nm=2.0))
    stats = ParticleStatistics(lag_frames=(1,), lag_s=None, msd_px2=(2.0,), msd_nm2=None, n=(3,), fit_lags=1,
                               window_frames=10, frames_seen=4, frames_in_window=4, alpha=1.0)
    result = FrameResult(frame, (mask,), (measure_mask(mask, 7),), {4: stats},
                         (ServiceEvent("particle_near_edge", 7, 4, {"margin_px": 3}),), {"segment": 1.5}, 124.0)
    msg = result_message(result, "run", {"backend": "sam2", "random_weights": True}, include_masks=True)
    topic, body, payload = decode_message(pack(TOPIC_RESULT, msg))
    assert topic == TOPIC_RESULT and payload is None
    (p,) = body["particles"]
    assert p["id"] == 4 and p["bbox"] == [10, 5, 20, 9]
    assert p["x"] == pytest.approx(14.5) and p["y"] == pytest.approx(6.5)
    np.testing.assert_array_equal(rle_decode(p["mask_rle"], (4, 10)), full[5:9, 10:20])
    assert body["stats"] == {"4": statistics_entry(stats)} and body["stats"]["4"]["alpha"] == 1.0
    assert body["events"][0]["kind"] == "particle_near_edge"
    assert body["random_weights"] is True and body["WARNING"] == RANDOM_WEIGHTS_WARNING
    assert body["calibration"]["pixel_size_nm"] == 2.0


#: The published keys of a particle's ``stats`` entry, in message order (schema v1, docs/results.md).
STATS_KEYS_V1 = [
    "lag_frames", "lag_s", "msd_px2", "msd_nm2", "n", "D_px2_per_frame", "D_err", "alpha", "alpha_err",
    "offset_px2", "D_linear_px2_per_frame", "D_linear_err", "fit_lags", "window_frames", "frames_seen",
    "frames_in_window", "D_nm2_per_s", "D_nm2_per_s_err",
]


@pytest.mark.parametrize("fps, pixel_size_nm", [(50.0, 2.0), (None, None)])
def test_statistics_entry_is_the_v1_stats_map(fps, pixel_size_nm):
    """The record crosses the wire as the v1 map: same keys in the same order, plain lists, no NaN."""
    rolling = RollingTrackStats(100, 20, fps, pixel_size_nm)
    rng = np.random.default_rng(1)
    for f, (x, y) in enumerate(np.cumsum(rng.normal(0, 1, (60, 2)), axis=0)):
        rolling.update(f, [ParticleMeasurement(3, f, True, float(x), float(y))])
    record = rolling.snapshot()[3]
    entry = statistics_entry(record)
    assert list(entry) == STATS_KEYS_V1
    assert {f.name for f in dataclasses.fields(ParticleStatistics)} == set(STATS_KEYS_V1)
    for key, value in entry.items():
        field_value = getattr(record, key)
        assert value == (list(field_value) if isinstance(field_value, tuple) else field_value), key
    assert all(v is None or math.isfinite(v) for v in entry.values() if not isinstance(v, list))
    decoded = msgpack.unpackb(msgpack.packb(entry, use_bin_type=True))
    assert decoded == entry and list(decoded) == STATS_KEYS_V1
    assert (entry["lag_s"] is None) == (fps is None) and (entry["D_nm2_per_s"] is None) == (fps is None)


def test_decode_rejects_foreign_messages():
    with pytest.raises(RejectedMessage):
        decode_message([b"result", b"\x80"])  # empty map: no schema
    with pytest.raises(RejectedMessage):
        decode_message([b"other", b"\x80"])
