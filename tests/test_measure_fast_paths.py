"""`measure_masks` (one pass over a frame's masks) gives exactly what `measure_mask` gives mask by mask."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

import sam4em_live.measure as measure_module
import sam4em_live.service.processor as processor_module
from sam4em_live.frames import Calibration, Frame, SeriesInfo
from sam4em_live.measure import measure_mask, measure_masks
from sam4em_live.particles import ParticleMask
from sam4em_live.results import RunInfo
from sam4em_live.segment.registry import create_segmenter
from sam4em_live.segment.stage import InProcessSegmentStage
from sam4em_live.service.processor import FrameProcessor
from sam4em_live.sinks.recorder import Recorder
from sam4em_live.stats.rolling import RollingTrackStats
from tests.test_worker_fast_paths import _random_crops

_EIGHT = np.ones((3, 3), dtype=bool)


def _masks(seed: int, count: int) -> list[ParticleMask]:
    """Random crops (blobs, split blobs, noise, empty ones) at random places, with absent and odd masks between."""
    rng = np.random.default_rng(seed)
    masks: list[ParticleMask] = []
    for pid, crop in enumerate(_random_crops(rng, count), start=1):
        x0, y0 = (int(v) for v in rng.integers(0, 30, size=2))
        draw = rng.random()
        if draw < 0.05:
            masks.append(ParticleMask.absent(pid, score=0.1))
            continue
        if draw < 0.08:
            crop = np.zeros_like(crop)  # present but empty: absent after measurement
        elif draw < 0.10:
            crop = crop.astype(np.uint8) * 3  # not boolean: measure_mask labels it
        elif draw < 0.12:
            crop = np.asfortranarray(crop)  # not C-contiguous
        masks.append(ParticleMask(pid, True, float(rng.random()), (x0, y0, x0 + crop.shape[1], y0 + crop.shape[0]),
                                  crop))
    return masks


@pytest.mark.parametrize("group", [1, 23, 24, 25, 50, 400])
def test_measure_masks_is_bit_identical_to_measure_mask_one_by_one(group):
    masks = _masks(21, 2400)
    for start in range(0, len(masks), group):
        chunk = masks[start : start + group]
        fast = measure_masks(chunk, 9)
        slow = tuple(measure_mask(m, 9) for m in chunk)
        # Field by field, floats by their bits (NaN of absent masks included): the trajectories' bytes.
        assert [_bits(m) for m in fast] == [_bits(m) for m in slow], start
    measured = [measure_mask(m, 9) for m in masks]
    assert sum(m.split for m in measured) > 50 and sum(not m.present for m in measured) > 100  # cases are hit


def test_measure_masks_with_the_intensity_weighted_centroid_is_measure_mask():
    rng = np.random.default_rng(4)
    pixels = rng.integers(0, 4000, size=(80, 80)).astype(np.uint16)
    masks = [m for m in _masks(5, 300) if m.crop is None or m.crop.ndim == 2]
    assert [_bits(m) for m in measure_masks(masks, 2, pixels, True)] == [
        _bits(measure_mask(m, 2, pixels, True)) for m in masks]


def test_batched_run_test_never_accepts_a_split_crop_and_matches_the_single_crop_chain_test(monkeypatch):
    crops = [c for c in _random_crops(np.random.default_rng(8), 3000) if c.any()]
    masks = [ParticleMask(i, True, 1.0, (0, 0, c.shape[1], c.shape[0]), c) for i, c in enumerate(crops)]
    flat = np.concatenate([c.ravel() for c in crops]).nonzero()[0]
    offsets = np.concatenate([[0], np.cumsum([c.size for c in crops])])
    starts = np.searchsorted(flat, offsets)
    owner = np.repeat(np.arange(len(crops)), np.diff(starts))
    local = flat - offsets[owner]
    widths = np.array([c.shape[1] for c in crops])
    pieced = measure_module._one_piece_by_runs(local + local // widths[owner], starts, np.diff(starts), widths)
    # The single-crop test without its bridging step is the chain test alone.
    monkeypatch.setattr(measure_module, "_breaks_bridged", lambda *args: False)
    chain = [measure_module._is_one_component(c, *measure_module._pixel_indices(c)) for c in crops]
    assert pieced.tolist() == chain
    for crop, shown in zip(crops, pieced, strict=True):
        if shown:
            assert ndimage.label(crop, _EIGHT)[1] == 1
    assert 500 < int(pieced.sum()) < len(crops)  # both outcomes occur
    assert len(masks) == len(crops)


def test_a_frame_larger_than_one_batch_is_measured_in_several(monkeypatch):
    masks = _masks(13, 200)
    monkeypatch.setattr(measure_module, "_BATCH_CROP_PIXELS", 5000)  # a few crops of up to 39 x 39 px a batch
    batches: list[int] = []
    real = measure_module._measure_batch
    monkeypatch.setattr(measure_module, "_measure_batch",
                        lambda batch, index, out: (batches.append(len(batch)), real(batch, index, out)))
    assert [_bits(m) for m in measure_masks(masks, 1)] == [_bits(measure_mask(m, 1)) for m in masks]
    assert len(batches) > 10 and max(batches) > 1 and max(batches) - min(batches) <= 1  # balanced


def _bits(m) -> tuple:
    values = (getattr(m, f.name) for f in dataclasses.fields(m))
    return tuple(np.float64(v).tobytes() if isinstance(v, float) else v for v in values)


def test_trajectories_and_statistics_are_byte_identical_with_the_per_mask_reference(tmp_path, monkeypatch):
    # The service's frame loop (threshold backend, 30 particles: the batched pass; the recorder's
    # trajectories.csv and the rolling statistics) run twice: with measure_masks, and with measure_mask
    # called mask by mask.
    from tools.bench.benchmarks.particle_clips import _prompts, particle_clip

    clip, centres = particle_clip(512, 30, 30, seed=3)

    def run(out, measure):
        monkeypatch.setattr(processor_module, "measure_masks", measure)
        calibration = Calibration(fps=100.0, pixel_size_nm=2.0)
        recorder = Recorder(out)
        recorder.open(RunInfo("run", SeriesInfo("clip", clip.shape[1:], "<u2", calibration), {"backend": "threshold"},
                              {}, {}))
        processor = FrameProcessor(InProcessSegmentStage(create_segmenter("threshold", {})),
                                   stats=RollingTrackStats(64, 10, 100.0, 2.0), stats_every_frames=5)
        stats = []
        for i, pixels in enumerate(clip):
            result = processor.process(Frame("clip", i, 100.0 + i / 100, pixels, calibration),
                                       _prompts(centres[0]) if i == 0 else [])
            recorder.consume(result)
            stats.append(result.stats)
        recorder.close()
        processor.close()
        return (recorder.run_dir / "trajectories.csv").read_bytes(), stats

    batches: list[int] = []
    real = measure_module._measure_batch
    monkeypatch.setattr(measure_module, "_measure_batch",
                        lambda batch, index, out: (batches.append(len(batch)), real(batch, index, out)))
    fast_csv, fast_stats = run(tmp_path / "fast", measure_masks)
    assert len(batches) >= len(clip)  # the batched pass was taken
    slow_csv, slow_stats = run(tmp_path / "slow", lambda masks, index, pixels, weighted: tuple(
        measure_mask(m, index, pixels, weighted) for m in masks))
    assert fast_csv == slow_csv and fast_csv.count(b"\n") > 30 * 25
    assert fast_stats == slow_stats and any(fast_stats)
