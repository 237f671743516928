"""The published results' masks encoded for a whole frame at once are the bytes of mask-by-mask encoding."""

from __future__ import annotations

import time

import numpy as np
import pytest

import sam4em_live.sinks.results_schema as schema
from sam4em_live.frames import Calibration, Frame
from sam4em_live.measure import measure_mask
from sam4em_live.particles import ParticleMask
from sam4em_live.results import FrameResult
from sam4em_live.sinks.results_schema import pack, result_message, rle_decode, rle_encode, rle_encode_many
from tests.test_worker_fast_paths import _random_crops


def _odd_crops(rng: np.random.Generator) -> list[np.ndarray]:
    crops = list(_random_crops(rng, 400))
    crops += [np.ones((3, 4), bool), np.zeros((5, 2), bool), np.ones((1, 1), bool), np.zeros((1, 1), bool),
              np.zeros((0, 4), bool), np.asfortranarray(crops[0]), crops[1].astype(np.uint8) * 7, crops[2][::2, ::3]]
    order = rng.permutation(len(crops))
    return [crops[i] for i in order]


@pytest.mark.parametrize("group", [1, 2, 9, 50, 408])
def test_rle_encode_many_is_rle_encode_of_each(group):
    crops = _odd_crops(np.random.default_rng(6))
    for start in range(0, len(crops), group):
        chunk = crops[start : start + group]
        assert rle_encode_many(chunk) == [rle_encode(c) for c in chunk], start
    for crop, rle in zip(crops, rle_encode_many(crops), strict=True):
        if crop.size:
            assert np.array_equal(rle_decode(rle, crop.shape), crop.astype(bool))
    assert rle_encode_many([]) == [] and rle_encode_many([np.zeros((0, 3), bool)]) == [[]]


def test_result_message_bytes_equal_mask_by_mask_encoding(monkeypatch):
    rng = np.random.default_rng(2)
    masks: list[ParticleMask] = []
    for pid, crop in enumerate(_odd_crops(rng)[:120], start=1):
        if crop.ndim != 2 or crop.size == 0 or rng.random() < 0.1:
            masks.append(ParticleMask.absent(pid, score=0.2))
        else:
            masks.append(ParticleMask(pid, True, 0.7, (4, 6, 4 + crop.shape[1], 6 + crop.shape[0]), crop,
                                      predicted_iou=0.8 if pid % 3 == 0 else None))
    frame = Frame("s", 7, 12.5, np.zeros((80, 80), np.uint16), Calibration(fps=50.0, pixel_size_nm=1.5))
    result = FrameResult(frame, tuple(masks), tuple(measure_mask(m, 7) for m in masks), {}, (), {"segment": 1.0},
                         time.time())
    for include in (True, False):
        fast = pack(b"result", result_message(result, "run", {"backend": "embedded"}, include))
        monkeypatch.setattr(schema, "rle_encode_many", lambda crops: [rle_encode(c) for c in crops])
        slow = pack(b"result", result_message(result, "run", {"backend": "embedded"}, include))
        monkeypatch.undo()
        assert fast == slow
        assert (b"mask_rle" in fast[1]) == include
