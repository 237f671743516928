"""The streaming SAM 2 backend against Meta's `SAM2VideoPredictor.propagate_in_video` (seeded random weights).

Both loops get the same preprocessed frame tensors. Meta's predictor is driven in
stream order: propagate up to the frame before a prompt, add the prompt on a frame
it has not tracked yet, propagate on (docs/sam2_backend.md explains why prompting
Meta up front is different).
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

from sam4em_live.particles import Prompt  # noqa: E402
from sam4em_live.segment.sam2.preprocess import logits_to_frame  # noqa: E402
from tests.sam2_helpers import (  # noqa: E402
    make_segmenter,
    meta_inference_state,
    meta_predictor,
    one_torch_thread,
    synthetic_frames,
)

pytestmark = [
    pytest.mark.sam2,
    # Meta's predictor warns each frame that its hole filling needs the CUDA extension.
    pytest.mark.filterwarnings("ignore:.*Skipping the post-processing step:UserWarning"),
]

SIZE = 128
SECOND_PROMPT = 15
FIRST = [
    Prompt(1, 0, ((70.0, 60.0),), (1,)),
    Prompt(2, 0, ((170.0, 140.0),), (1,), box=(150.0, 120.0, 190.0, 160.0)),
]
CORRECTION = Prompt(1, SECOND_PROMPT, ((88.0, 72.0), (20.0, 20.0)), (1, 0))


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    yield from one_torch_thread()


def run_ours(segmenter, images, shape):
    logits = []
    with torch.inference_mode():
        for i in range(images.shape[0]):
            edits = FIRST if i == 0 else [CORRECTION] if i == SECOND_PROMPT else []
            result = segmenter.step(images[i : i + 1], edits, shape)
            assert result.particles == [1, 2]
            logits.append(logits_to_frame(result.low_res_logits, shape))
    return torch.stack(logits)


def add_meta_prompt(predictor, state, prompt: Prompt) -> None:
    predictor.add_new_points_or_box(
        state, prompt.frame, prompt.particle, points=[list(p) for p in prompt.points],
        labels=list(prompt.labels), box=None if prompt.box is None else list(prompt.box),
    )


def run_meta(predictor, images, shape):
    state = meta_inference_state(images, shape)
    for prompt in FIRST:
        add_meta_prompt(predictor, state, prompt)
    out = {}
    for frame, _, masks in predictor.propagate_in_video(state, 0, SECOND_PROMPT - 1):
        out[frame] = masks
    add_meta_prompt(predictor, state, CORRECTION)
    for frame, _, masks in predictor.propagate_in_video(state, SECOND_PROMPT):
        out[frame] = masks
    assert state["obj_ids"] == [1, 2] and sorted(out) == list(range(images.shape[0]))
    return torch.stack([out[i] for i in range(images.shape[0])])


def relative_difference(ours, meta):
    """Per frame and particle: max |ours - meta| / max |meta| (shape frames x particles)."""
    return (ours - meta).abs().amax(dim=(2, 3, 4)) / meta.abs().amax(dim=(2, 3, 4))


def preprocessed(segmenter, count):
    frames = synthetic_frames(count)
    with torch.inference_mode():
        images = torch.cat([segmenter.preprocess(f.pixels) for f in frames])
    return images, frames[0].shape


@pytest.mark.parametrize("batch_particles", [True, False])
def test_streaming_equals_meta_predictor(batch_particles):
    segmenter = make_segmenter(image_size_px=SIZE, batch_particles=batch_particles)
    images, shape = preprocessed(segmenter, 30)
    ours = run_ours(segmenter, images, shape)
    meta = run_meta(meta_predictor(segmenter), images, shape)
    # Not a trivial comparison: masks have both signs, and the correction changed particle 1.
    assert (meta > 0).any() and (meta < 0).any()
    rel = relative_difference(ours, meta)
    assert rel.max().item() <= 1e-4, rel
    if not batch_particles:  # each particle alone, like Meta's per-object loop: identical bits
        assert torch.equal(ours, meta)


def test_memory_stride_is_exact_and_matters():
    """Stride 3 (the 80 fps setting) against Meta at stride 3; Meta at stride 1 differs clearly."""
    segmenter = make_segmenter(image_size_px=SIZE, batch_particles=False, memory_temporal_stride_for_eval=3)
    images, shape = preprocessed(segmenter, 40)  # > 1 + 5 * 3 frames: the bank window is full and pruned
    ours = run_ours(segmenter, images, shape)
    stride3 = meta_predictor(segmenter)
    stride3.memory_temporal_stride_for_eval = 3
    assert torch.equal(ours, run_meta(stride3, images, shape))
    stride1 = meta_predictor(segmenter)
    assert stride1.memory_temporal_stride_for_eval == 1
    assert relative_difference(ours, run_meta(stride1, images, shape)).max().item() > 1e-3
