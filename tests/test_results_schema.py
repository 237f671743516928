"""Results schema v1: RLE masks and message round trip through msgpack."""

from __future__ import annotations

import numpy as np
import pytest

from sam4em_live.frames import Calibration, Frame
from sam4em_live.measure import measure_mask
from sam4em_live.particles import ParticleMask
from sam4em_live.results import FrameResult, ServiceEvent
from sam4em_live.sinks.results_schema import (
    RANDOM_WEIGHTS_WARNING,
    TOPIC_RESULT,
    decode_message,
    pack,
    result_message,
    rle_decode,
    rle_encode,
)
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
    with pytest.raises(ValueError):
        rle_decode([1, 2], (2, 2))


def test_result_message_round_trip():
    full = np.zeros((20, 30), bool)
    full[5:9, 10:20] = True
    mask = ParticleMask.from_full(4, full, 0.9)
    frame = Frame("s", 7, 123.0, np.zeros((20, 30), np.uint16), Calibration(pixel_size_nm=2.0))
    result = FrameResult(frame, (mask,), (measure_mask(mask, 7),), {4: {"alpha": 1.0}},
                         (ServiceEvent("particle_near_edge", 7, 4, {"margin_px": 3}),), {"segment": 1.5}, 124.0)
    msg = result_message(result, "run", {"backend": "sam2", "random_weights": True}, include_masks=True)
    topic, body, payload = decode_message(pack(TOPIC_RESULT, msg))
    assert topic == TOPIC_RESULT and payload is None
    (p,) = body["particles"]
    assert p["id"] == 4 and p["bbox"] == [10, 5, 20, 9]
    assert p["x"] == pytest.approx(14.5) and p["y"] == pytest.approx(6.5)
    np.testing.assert_array_equal(rle_decode(p["mask_rle"], (4, 10)), full[5:9, 10:20])
    assert body["stats"] == {"4": {"alpha": 1.0}} and body["events"][0]["kind"] == "particle_near_edge"
    assert body["random_weights"] is True and body["WARNING"] == RANDOM_WEIGHTS_WARNING
    assert body["calibration"]["pixel_size_nm"] == 2.0


def test_decode_rejects_foreign_messages():
    with pytest.raises(RejectedMessage):
        decode_message([b"result", b"\x80"])  # empty map: no schema
    with pytest.raises(RejectedMessage):
        decode_message([b"other", b"\x80"])
