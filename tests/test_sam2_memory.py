"""Bounded memory: the bank keeps exactly what SAM 2's memory attention can still read, and stops growing."""

from __future__ import annotations

import gc
import itertools

import pytest

from sam4em_live.segment.sam2.memory import MemoryEntry, MemoryWindow, ParticleBank

pytestmark = pytest.mark.sam2


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    pytest.importorskip("torch")
    from tests.sam2_helpers import one_torch_thread

    yield from one_torch_thread()


def sam2_reads(n: int, num_maskmem: int, stride: int, max_ptrs: int) -> tuple[set[int], set[int]]:
    """Frames whose (spatial memory, object pointer) SAM2Base reads on frame n: the formulas of
    `_prepare_memory_conditioned_features` (forward tracking, evaluation)."""
    spatial = set()
    for t_pos in range(1, num_maskmem):
        t_rel = num_maskmem - t_pos
        if t_rel == 1:
            spatial.add(n - 1)
        else:
            spatial.add(((n - 2) // stride) * stride - (t_rel - 2) * stride)
    pointers = {n - d for d in range(1, max_ptrs)}
    return {t for t in spatial if t >= 0}, {t for t in pointers if t >= 0}


@pytest.mark.parametrize(
    "num_maskmem,stride,max_ptrs", [(7, 1, 16), (7, 3, 16), (7, 4, 8), (3, 2, 16), (2, 1, 4)]
)
def test_window_keeps_exactly_what_later_frames_read(num_maskmem, stride, max_ptrs):
    window = MemoryWindow(num_maskmem, stride, max_ptrs, True, 8)
    for last in range(120):
        later = range(last + 1, last + 2 + num_maskmem * stride + max_ptrs)
        need_spatial = set().union(*(sam2_reads(n, num_maskmem, stride, max_ptrs)[0] for n in later))
        need_ptr = set().union(*(sam2_reads(n, num_maskmem, stride, max_ptrs)[1] for n in later))
        kept_spatial = {t for t in range(last + 1) if window.keeps_spatial(t, last)}
        kept_ptr = {t for t in range(last + 1) if window.keeps_pointer(t, last)}
        assert kept_spatial == {t for t in need_spatial if t <= last}, last
        assert kept_ptr == {t for t in need_ptr if t <= last}, last


def test_conditioning_frames_pin_the_first_and_keep_the_latest():
    torch = pytest.importorskip("torch")
    bank = ParticleBank(MemoryWindow(7, 1, 16, True, 3))
    entry = MemoryEntry(torch.zeros(1, 4), torch.zeros(1, 2, 2, 2))
    for t in range(50):
        bank.add_tracked(t, MemoryEntry(torch.zeros(1, 4), torch.zeros(1, 2, 2, 2)))
        if t % 10 == 0:
            bank.add_cond(t, entry, clear_around=t == 40)
        bank.prune(t)
    assert list(bank.cond) == [0, 30, 40]
    # clear_around dropped the tracked memories within stride * num_maskmem of frame 40 (Meta's
    # clear_non_cond_mem_around_input); the pointer window alone would still hold frames 35..40.
    assert sorted(bank.non_cond) == list(range(41, 50))


@pytest.mark.slow
def test_two_thousand_frames_retained_tensors_stop_growing():
    torch = pytest.importorskip("torch")
    pytest.importorskip("sam2")
    from sam4em_live.particles import Prompt
    from tests.sam2_helpers import make_segmenter, synthetic_frames

    segmenter = make_segmenter(image_size_px=64, memory_temporal_stride_for_eval=2, max_cond_frames=3)
    frames = synthetic_frames(8, shape=(64, 64))
    with torch.inference_mode():
        images = [segmenter.preprocess(f.pixels) for f in frames]
    # The image encoder is a pure function of the image: the 8 cycled frames are encoded once so this
    # test stays near a minute. Everything stateful (memory attention, decoder, memory encoder, banks)
    # runs on every frame.
    encode, encoded = segmenter.model.forward_image, {}

    def encode_once(image):
        if id(image) not in encoded:
            encoded[id(image)] = encode(image)
        return encoded[id(image)]

    segmenter.model.forward_image = encode_once

    def census() -> tuple[int, int]:
        """All live tensors in the process (count, bytes of distinct storages)."""
        gc.collect()
        tensors = [o for o in gc.get_objects() if issubclass(type(o), torch.Tensor)]
        storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes() for t in tensors}
        return len(tensors), sum(storages.values())

    samples, banks = [], []
    with torch.inference_mode():
        for i, image in zip(range(2000), itertools.cycle(images)):
            edits = []
            if i == 0:
                edits = [Prompt(1, 0, ((20.0, 20.0),), (1,)), Prompt(2, 0, ((45.0, 40.0),), (1,))]
            if i % 150 == 75:  # regular corrections: conditioning frames must stay capped too
                edits = [Prompt(1, i, ((22.0, 21.0),), (1,))]
            segmenter.step(image, edits, (64, 64))
            if i >= 400 and i % 200 == 0:
                kept = segmenter.engine.retained_tensors()
                banks.append((len(kept), sum(t.nbytes for t in kept)))
                samples.append(census())
    assert len(set(banks)) == 1, banks  # the memory bank: identical count and bytes from frame 400 on
    assert len(set(samples)) == 1, samples  # the whole process: no tensor anywhere accumulates
    assert next(iter(segmenter.engine.banks[1].cond)) == 0 and len(segmenter.engine.banks[1].cond) == 3
