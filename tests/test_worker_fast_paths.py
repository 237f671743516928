"""The per-frame fast paths (measurement, rolling statistics, RLE) give exactly what the slow paths give."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

import sam4em_live.measure as measure_module
from sam4em_live.measure import measure_mask
from sam4em_live.particles import ParticleMask
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
        if not crop.any():
            continue
        if measure_module._is_one_component(crop, *measure_module._pixel_indices(crop)):
            accepted += 1
            assert ndimage.label(crop, _EIGHT)[1] == 1, crop.astype(int)
    assert accepted > 500  # the fast path is really taken


@pytest.mark.parametrize("weighted", [False, True])
def test_measure_mask_is_bit_identical_with_and_without_fast_path(monkeypatch, weighted):
    rng = np.random.default_rng(11)
    pixels = rng.integers(0, 4000, size=(64, 64)).astype(np.uint16)
    masks = [ParticleMask(1, True, 0.5, (3, 5, 3 + c.shape[1], 5 + c.shape[0]), c) for c in _random_crops(rng, 800)]
    fast = [measure_mask(m, 4, pixels, weighted) for m in masks]
    monkeypatch.setattr(measure_module, "_is_one_component", lambda crop, flat_index, rows, cols: False)
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


# ---------------------------------------------------------------- measure_mask against the straightforward version


def _reference_measure(mask: ParticleMask, frame_index: int, pixels, weighted: bool):
    """The plain measurement (session 2's code without fast paths): nonzero, always label, dot-product moments."""
    import math

    from sam4em_live.particles import ParticleMeasurement

    if not mask.present or mask.crop is None or mask.bbox is None:
        return ParticleMeasurement(mask.particle, frame_index, False, score=mask.score)
    crop = mask.crop
    rows, cols = np.nonzero(crop)
    if rows.size == 0:
        return ParticleMeasurement(mask.particle, frame_index, False, score=mask.score)
    labels, count = ndimage.label(crop, structure=_EIGHT)
    split = count > 1
    if split:
        sizes = np.bincount(labels.ravel())
        sizes[0] = 0
        crop = labels == int(np.argmax(sizes))
        rows, cols = np.nonzero(crop)
    area = int(rows.size)
    x0, y0, _, _ = mask.bbox
    yc = float(rows.sum()) / area
    xc = float(cols.sum()) / area
    dy, dx = rows - yc, cols - xc
    mxx = float(dx @ dx) / area + 1 / 12
    myy = float(dy @ dy) / area + 1 / 12
    mxy = float(dx @ dy) / area
    common = math.sqrt(((mxx - myy) / 2) ** 2 + mxy**2)
    lam1 = (mxx + myy) / 2 + common
    lam2 = max((mxx + myy) / 2 - common, 0.0)
    angle = 0.5 * math.degrees(math.atan2(2 * mxy, mxx - myy))
    if angle <= -90.0:
        angle += 180.0
    ecc = math.sqrt(1 - lam2 / lam1) if lam1 > 0 else 0.0
    if weighted:
        patch = np.asarray(pixels[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]], dtype=np.float64)
        values = patch[rows, cols]
        weights = values.max() - values
        if weights.sum() > 0:
            xc = float(np.average(cols, weights=weights))
            yc = float(np.average(rows, weights=weights))
    return ParticleMeasurement(mask.particle, frame_index, True, xc + x0, yc + y0, angle, area,
                               4 * math.sqrt(lam1), 4 * math.sqrt(lam2), ecc, mask.score, split)


def _bits(m) -> tuple:
    """A measurement as a tuple in which floats are their IEEE bit patterns (NaN == NaN, 0.0 != -0.0)."""
    import dataclasses
    import struct

    return tuple(struct.pack("<d", v) if isinstance(v, float) else v for v in dataclasses.astuple(m))


def _ragged(crop: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Flip a few outline pixels (segmentation-like ragged edges: extra runs, notches, stray pixels)."""
    edge = crop ^ ndimage.binary_erosion(crop, _EIGHT)
    outline = np.argwhere(edge | (ndimage.binary_dilation(crop, _EIGHT) & ~crop))
    if outline.size:
        picks = outline[rng.integers(0, len(outline), size=rng.integers(1, 6))]
        crop = crop.copy()
        crop[picks[:, 0], picks[:, 1]] ^= True
    return crop


def _identity_crops(rng: np.random.Generator):
    """Rods, discs, ragged outlines, edge-touching and wrapping masks, single pixels, lines, noise."""
    yield from _random_crops(rng, 400)
    for _ in range(600):
        h, w = (int(v) for v in rng.integers(2, 70, size=2))
        yy, xx = np.mgrid[:h, :w]
        cy, cx = rng.uniform(-2, h + 2), rng.uniform(-2, w + 2)  # may lie off the crop: touches its edges
        a, b, t = rng.uniform(1, 35), rng.uniform(0.5, 8), rng.uniform(0, np.pi)  # rods and discs
        u = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t)
        v = -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
        crop = (u / a) ** 2 + (v / b) ** 2 <= 1
        yield _ragged(crop, rng) if rng.random() < 0.6 else crop
    for h, w in ((1, 1), (1, 7), (7, 1), (3, 3)):
        yield np.ones((h, w), bool)
    wrap = np.zeros((4, 5), bool)
    wrap[0, 4] = wrap[1, 0] = wrap[1, 4] = wrap[2, 3] = True  # a run that would wrap across rows
    yield wrap
    yield np.eye(6, dtype=bool)  # diagonal: 8-connected only
    yield np.eye(6, dtype=bool)[::-1]
    two = np.zeros((5, 9), bool)
    two[1:4, 0:3] = two[1:4, 6:9] = True  # two equal pieces: the first label wins
    yield two


@pytest.mark.parametrize("weighted", [False, True])
def test_measure_mask_is_bit_identical_to_the_straightforward_version(weighted):
    rng = np.random.default_rng(21)
    pixels = rng.integers(0, 4000, size=(80, 80)).astype(np.uint16)
    crops = list(_identity_crops(rng))
    masks = [ParticleMask(3, True, 0.7, (4, 2, 4 + c.shape[1], 2 + c.shape[0]), c) for c in crops]
    masks += [ParticleMask(3, True, 0.7, (4, 2, 4 + c.shape[1], 2 + c.shape[0]), c[::-1, ::-1])  # strided views
              for c in crops[:200]]
    masks += [ParticleMask(3, True, 0.7, (4, 2, 4 + c.shape[0], 2 + c.shape[1]), c.T) for c in crops[:200]]
    masks += [ParticleMask(3, False, 0.1, None, None), ParticleMask(3, True, 0.2, (0, 0, 3, 3), np.zeros((3, 3), bool))]
    masks += [ParticleMask(3, True, 0.7, (0, 0, 7, 5), c.astype(np.uint8) * 2) for c in crops[:50]]
    fast = [_bits(measure_mask(m, 9, pixels, weighted)) for m in masks]
    reference = [_bits(_reference_measure(m, 9, pixels, weighted)) for m in masks]
    assert fast == reference
    measured = [measure_mask(m, 9, pixels, weighted) for m in masks]
    assert sum(m.split for m in measured) > 50 and sum(m.present and not m.split for m in measured) > 500


def test_one_component_test_on_ragged_outlines_is_sound_and_usually_decides():
    rng = np.random.default_rng(23)
    accepted = one_piece = 0
    for crop in _identity_crops(rng):
        if not crop.any():
            continue
        pieces = ndimage.label(crop, _EIGHT)[1]
        one_piece += pieces == 1
        if measure_module._is_one_component(crop, *measure_module._pixel_indices(crop)):
            accepted += 1
            assert pieces == 1, crop.astype(int)
    assert accepted > 0.75 * one_piece  # ragged outlines too take the fast path (86 % here)


def test_measure_mask_on_a_simulated_clip_is_bit_identical():
    from sam4em_live.sim.presets import get_preset
    from sam4em_live.sim.video import simulate_video

    video = simulate_video(get_preset("crossing"), 12, 3)
    checked = 0
    for k, (pixels, labels) in enumerate(zip(video.frames, video.gt_labels, strict=True)):
        for sl, pid in zip(ndimage.find_objects(labels), range(1, labels.max() + 1), strict=False):
            if sl is None:
                continue
            crop = labels[sl] == pid
            bbox = (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
            for weighted in (False, True):
                mask = ParticleMask(pid, True, 1.0, bbox, crop)
                assert _bits(measure_mask(mask, k, pixels, weighted)) == _bits(_reference_measure(mask, k, pixels, weighted))
                checked += 1
    assert checked >= 24


def test_one_component_test_never_accepts_a_split_small_noisy_mask():
    """Small noise and speckled blobs: many breaks between runs, many splits (bridging must not be fooled)."""
    rng = np.random.default_rng(29)
    accepted = split = 0
    for _ in range(6000):
        h, w = (int(v) for v in rng.integers(1, 12, size=2))
        crop = rng.random((h, w)) < rng.uniform(0.2, 0.9)
        if not crop.any():
            continue
        one_piece = ndimage.label(crop, _EIGHT)[1] == 1
        split += not one_piece
        if measure_module._is_one_component(crop, *measure_module._pixel_indices(crop)):
            accepted += 1
            assert one_piece, crop.astype(int)
    assert accepted > 1000 and split > 1000
