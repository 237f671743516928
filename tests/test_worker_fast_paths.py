"""The per-frame fast paths (measurement, rolling statistics, RLE) give exactly what the slow paths give."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import sam4em_live.measure as measure_module
from sam4em_live.measure import measure_mask
from sam4em_live.segment.base import ParticleMask
from sam4em_live.sinks.results_schema import rle_decode, rle_encode
from sam4em_live.stats.ring import squared_norms

_EIGHT = np.ones((3, 3), dtype=bool)


def _random_crops(rng: np.random.Generator, count: int):
    """Blobs (ellipses, with notches and stray pixels now and then) and pure noise masks."""
    for _ in range(count):
        h, w = (int(v) for v in rng.integers(1, 40, size=2))
        if rng.random() < 0.3:
            yield rng.random((h, w)) < rng.uniform(0.1, 0.95)
            continue
        yy, xx = np.mgrid[:h, :w]
        cy, cx = rng.uniform(0, h), rng.uniform(0, w)
        a, b, t = rng.uniform(0.5, 20), rng.uniform(0.5, 20), rng.uniform(0, np.pi)
        u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
        v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
        crop = (u / a) ** 2 + (v / b) ** 2 <= 1
        if rng.random() < 0.3:
            crop[rng.integers(0, h), :] = False  # a notch across a row: maybe two pieces
        if rng.random() < 0.3:
            crop[rng.integers(0, h), rng.integers(0, w)] = True  # a stray pixel
        yield crop


def test_one_component_test_never_accepts_a_split_mask():
    rng = np.random.default_rng(7)
    accepted = 0
    for crop in _random_crops(rng, 3000):
        rows, cols = np.nonzero(crop)
        if rows.size == 0:
            continue
        if measure_module._is_one_component(crop, rows, cols):
            accepted += 1
            assert ndimage.label(crop, _EIGHT)[1] == 1, crop.astype(int)
    assert accepted > 500  # the fast path is really taken


@pytest.mark.parametrize("weighted", [False, True])
def test_measure_mask_is_bit_identical_with_and_without_fast_path(monkeypatch, weighted):
    rng = np.random.default_rng(11)
    pixels = rng.integers(0, 4000, size=(64, 64)).astype(np.uint16)
    masks = [ParticleMask(1, True, 0.5, (3, 5, 3 + c.shape[1], 5 + c.shape[0]), c) for c in _random_crops(rng, 800)]
    fast = [measure_mask(m, 4, pixels, weighted) for m in masks]
    monkeypatch.setattr(measure_module, "_is_one_component", lambda crop, rows, cols: False)
    slow = [measure_mask(m, 4, pixels, weighted) for m in masks]
    assert fast == slow  # dataclass equality: every float identical (no NaN: empty crops are absent)
    assert any(m.split for m in slow) and any(m.present and not m.split for m in slow)


def test_measure_mask_non_boolean_crop_uses_labelling():
    crop = np.zeros((5, 7), dtype=np.uint8)
    crop[0, 0] = 3
    crop[3:5, 3:7] = 1
    m = measure_mask(ParticleMask(2, True, 1.0, (0, 0, 7, 5), crop), 0)
    assert m.split and m.area_px == 8


def test_squared_norms_is_bit_identical_to_summed_squares():
    rng = np.random.default_rng(3)
    d = rng.normal(size=(50, 40, 2)) * np.logspace(-4, 5, 40)[None, :, None]
    assert np.array_equal(squared_norms(d), (d * d).sum(axis=-1))
    one = rng.normal(size=(10, 1))
    assert np.array_equal(squared_norms(one), (one * one).sum(axis=-1))


def test_rle_round_trip_and_background_first():
    rng = np.random.default_rng(5)
    for crop in _random_crops(rng, 300):
        counts = rle_encode(crop)
        assert sum(counts) == crop.size
        assert all(c > 0 for c in counts[1:])
        assert np.array_equal(rle_decode(counts, crop.shape), crop)
    assert rle_encode(np.ones((2, 2), bool)) == [0, 4]
    assert rle_encode(np.zeros((0, 3), bool)) == []
