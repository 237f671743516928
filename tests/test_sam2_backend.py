"""SAM 2 streaming backend: options, preprocessing, checkpoints, mid-stream edits, bounded memory."""

from __future__ import annotations

import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

from sam4em_live.frames import Frame  # noqa: E402
from sam4em_live.particles import Prompt, RemoveParticle  # noqa: E402
from sam4em_live.segment.base import Segmenter  # noqa: E402
from sam4em_live.segment.registry import create_segmenter  # noqa: E402
from sam4em_live.segment.sam2.model import CheckpointError  # noqa: E402
from sam4em_live.segment.sam2.options import WEIGHTS_URL, Sam2Options  # noqa: E402
from sam4em_live.segment.sam2.preprocess import SAM2_MEAN, SAM2_STD, logits_to_frame  # noqa: E402
from tests.sam2_helpers import TINY, make_segmenter, one_torch_thread, synthetic_frames  # noqa: E402

pytestmark = pytest.mark.sam2

SIZE = 128
P1 = Prompt(1, 0, ((70.0, 60.0),), (1,))
P2 = Prompt(2, 0, ((170.0, 140.0),), (1,), box=(150.0, 120.0, 190.0, 160.0))
P3 = Prompt(3, 5, ((120.0, 100.0),), (1,))
P1_CORRECTION = Prompt(1, 5, ((76.0, 64.0), (20.0, 20.0)), (1, 0))


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    yield from one_torch_thread()


@pytest.fixture(scope="module")
def clip():
    frames = synthetic_frames(10)
    return frames, frames[0].shape


def run(segmenter, frames, schedule):
    """Logits per frame as {particle: (1, 1, rows, cols)}; ``schedule`` maps frame -> edits."""
    shape = frames[0].shape
    out = []
    with torch.inference_mode():
        for frame in frames:
            image = segmenter.preprocess(frame.pixels)
            result = segmenter.step(image, schedule.get(frame.index, []), shape)
            logits = logits_to_frame(result.low_res_logits, shape)
            out.append({p: logits[i : i + 1] for i, p in enumerate(result.particles)})
    return out


# --- options, describe, checkpoints -------------------------------------------------------------


def test_missing_checkpoint_option_says_where_to_get_weights():
    with pytest.raises(ValueError, match=r"sam2\.1_hiera_tiny\.pt") as info:
        Sam2Options()
    assert WEIGHTS_URL in str(info.value)
    with pytest.raises(ValueError, match="not both"):
        Sam2Options(checkpoint="x.pt", random_weights=True)
    with pytest.raises(ValueError, match="extra"):
        Sam2Options(random_weights=True, image_size=256)
    with pytest.raises(ValueError, match="percentiles"):
        Sam2Options(random_weights=True, normalize_percentiles=(99.0, 1.0))


def test_checkpoint_file_missing_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match=r"sam2\.1_hiera_tiny\.pt") as info:
        create_segmenter("sam2", {**TINY, "random_weights": False, "checkpoint": str(tmp_path / "nope.pt")})
    assert WEIGHTS_URL in str(info.value)


def test_random_weights_are_loud(caplog):
    with caplog.at_level(logging.WARNING):
        segmenter = create_segmenter("sam2", {**TINY, "image_size_px": SIZE})
    assert isinstance(segmenter, Segmenter)
    assert any(r.levelno == logging.WARNING and "RANDOM WEIGHTS" in r.getMessage() for r in caplog.records)
    info = segmenter.describe()
    assert info["backend"] == "sam2" and info["random_weights"] is True and info["checkpoint"] is None
    assert info["model"] == "sam2.1_hiera_t" and info["device"] == "cpu" and info["image_size_px"] == SIZE


def test_checkpoint_round_trip_gives_the_same_outputs(tmp_path, clip):
    frames, _ = clip
    reference = make_segmenter(image_size_px=SIZE, seed=3)
    path = tmp_path / "sam2.1_hiera_tiny_random.pt"
    torch.save({"model": reference.model.state_dict()}, path)
    loaded = make_segmenter(image_size_px=SIZE, random_weights=False, checkpoint=str(path), seed=99)
    assert loaded.describe()["random_weights"] is False and loaded.describe()["checkpoint"] == str(path)
    schedule = {0: [P1, P2]}
    expected, got = run(reference, frames[:4], schedule), run(loaded, frames[:4], schedule)
    for a, b in zip(expected, got, strict=True):
        assert all(torch.equal(a[p], b[p]) for p in (1, 2))
    # A differently seeded model really differs, so the comparison above could fail.
    other = run(make_segmenter(image_size_px=SIZE, seed=4), frames[:1], schedule)
    assert not torch.equal(other[0][1], expected[0][1])


def test_checkpoint_for_another_model_is_rejected(tmp_path):
    state = make_segmenter(image_size_px=SIZE).model.state_dict()
    state.pop(next(iter(state)))
    path = tmp_path / "broken.pt"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointError, match="missing keys"):
        make_segmenter(image_size_px=SIZE, random_weights=False, checkpoint=str(path))
    torch.save({"weights": state}, path)
    with pytest.raises(CheckpointError, match="not a SAM 2 checkpoint"):
        make_segmenter(image_size_px=SIZE, random_weights=False, checkpoint=str(path))


# --- preprocessing ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_preprocessing_percentile_window_channels_and_mean_std(dtype):
    segmenter = make_segmenter(image_size_px=SIZE, percentile_subsample=1, normalize_percentiles=(2.0, 98.0))
    rng = np.random.default_rng(1)
    top = 250 if dtype == np.uint8 else 60000
    pixels = rng.integers(0, top, (SIZE, SIZE)).astype(dtype)
    pixels.setflags(write=False)  # like a zero-copy network buffer
    lo, hi = np.percentile(pixels.astype(np.float64), [2.0, 98.0])
    expected = np.clip((pixels - lo) / (hi - lo), 0.0, 1.0)
    with torch.inference_mode():
        image = segmenter.preprocess(pixels)
    assert image.shape == (1, 3, SIZE, SIZE) and image.dtype == torch.float32
    mean = torch.tensor(SAM2_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(SAM2_STD).view(1, 3, 1, 1)
    unit = (image * std + mean).numpy()[0]
    for channel in unit:  # same-size resize is the identity; three equal channels
        np.testing.assert_allclose(channel, expected, atol=1e-5)
    assert (expected == 0).any() and (expected == 1).any()


def test_preprocessing_resizes_and_rejects_bad_frames():
    segmenter = make_segmenter(image_size_px=SIZE)
    pixels = np.zeros((300, 200), np.uint16)
    pixels[:, 100:] = 1000  # left half dark, right half bright
    with torch.inference_mode():
        image = segmenter.preprocess(pixels)
        unit = image[0, 0] * SAM2_STD[0] + SAM2_MEAN[0]
    assert image.shape == (1, 3, SIZE, SIZE)
    assert unit[:, : SIZE // 2 - 2].max() < 1e-5 and unit[:, SIZE // 2 + 2 :].min() > 1 - 1e-5
    with pytest.raises(ValueError, match="2-D"):
        segmenter.track(Frame("s", 0, 0.0, np.zeros((8, 8, 3), np.uint8)), [])


# --- tracking outputs and mid-stream edits --------------------------------------------------------


def test_track_returns_particle_masks_at_frame_resolution(clip):
    frames, shape = clip
    segmenter, twin = make_segmenter(image_size_px=SIZE), make_segmenter(image_size_px=SIZE)
    logits = run(twin, frames[:3], {0: [P1, P2]})
    for frame, expected in zip(frames[:3], logits, strict=True):
        masks = segmenter.track(frame, [P1, P2] if frame.index == 0 else [])
        assert [m.particle for m in masks] == [1, 2]
        for m in masks:
            assert m.score == pytest.approx(1.0 / (1.0 + np.exp(-m.object_score_logit)))
            assert 0.0 <= m.predicted_iou <= 1.0
            np.testing.assert_array_equal(m.to_full(shape), (expected[m.particle][0, 0] > 0).numpy())
    with pytest.raises(ValueError, match="differs"):
        segmenter.track(Frame("s", 3, 0.0, np.zeros((50, 50), np.uint16)), [])


def test_new_particle_mid_stream_leaves_others_bit_identical(clip):
    frames, _ = clip
    base = run(make_segmenter(image_size_px=SIZE, batch_particles=False), frames, {0: [P1, P2]})
    segmenter = make_segmenter(image_size_px=SIZE, batch_particles=False)
    added = run(segmenter, frames, {0: [P1, P2], 5: [P3]})
    assert segmenter.particles() == [1, 2, 3]
    assert [sorted(f) for f in added] == [[1, 2]] * 5 + [[1, 2, 3]] * 5
    for a, b in zip(base, added, strict=True):
        assert torch.equal(a[1], b[1]) and torch.equal(a[2], b[2])


def test_removal_leaves_others_bit_identical(clip):
    frames, _ = clip
    base = run(make_segmenter(image_size_px=SIZE, batch_particles=False), frames, {0: [P1, P2]})
    segmenter = make_segmenter(image_size_px=SIZE, batch_particles=False)
    removed = run(segmenter, frames, {0: [P1, P2], 5: [RemoveParticle(2, 5), RemoveParticle(7, 5)]})
    assert segmenter.particles() == [1]
    assert [sorted(f) for f in removed] == [[1, 2]] * 5 + [[1]] * 5
    for a, b in zip(base, removed, strict=True):
        assert torch.equal(a[1], b[1])


def test_correction_is_a_new_conditioning_frame_for_that_particle_only(clip):
    frames, _shape = clip
    base = run(make_segmenter(image_size_px=SIZE, batch_particles=False), frames, {0: [P1, P2]})
    segmenter = make_segmenter(image_size_px=SIZE, batch_particles=False)
    corrected = run(segmenter, frames, {0: [P1, P2], 5: [P1_CORRECTION]})
    assert list(segmenter.engine.banks[1].cond) == [0, 5] and list(segmenter.engine.banks[2].cond) == [0]
    for i, (a, b) in enumerate(zip(base, corrected, strict=True)):
        assert torch.equal(a[2], b[2])
        assert torch.equal(a[1], b[1]) == (i < 5)
    # On its frame the correction is SAM on that frame alone (an initial conditioning frame).
    fresh = run(make_segmenter(image_size_px=SIZE), [frames[5]], {5: [P1_CORRECTION]})
    assert torch.equal(fresh[0][1], corrected[5][1])


def test_batched_particles_match_one_at_a_time_closely(clip):
    frames, _ = clip
    schedule = {0: [P1, P2], 3: [P3], 5: [P1_CORRECTION], 7: [RemoveParticle(2)]}
    single = run(make_segmenter(image_size_px=SIZE, batch_particles=False), frames, schedule)
    batched = run(make_segmenter(image_size_px=SIZE, batch_particles=True), frames, schedule)
    for a, b in zip(single, batched, strict=True):
        assert sorted(a) == sorted(b)
        for p in a:
            assert ((a[p] - b[p]).abs().max() / a[p].abs().max()).item() <= 1e-5


def test_remove_and_prompt_in_one_frame_restarts_the_particle(clip):
    frames, _ = clip
    segmenter = make_segmenter(image_size_px=SIZE)
    run(segmenter, frames[:6], {0: [P1, P2], 4: [RemoveParticle(2), Prompt(2, 4, ((30.0, 30.0),), (1,))]})
    assert list(segmenter.engine.banks[2].cond) == [4]
    assert max(segmenter.engine.banks[2].non_cond) == 5 and min(segmenter.engine.banks[2].non_cond) == 5


def test_frames_before_any_prompt_are_cheap_and_empty(clip):
    frames, _ = clip
    segmenter = make_segmenter(image_size_px=SIZE)
    calls = []
    encode = segmenter.model.forward_image
    segmenter.model.forward_image = lambda image: calls.append(1) or encode(image)
    assert segmenter.track(frames[0], []) == [] and calls == []
    masks = segmenter.track(frames[1], [P1.at_frame(1)])
    assert [m.particle for m in masks] == [1] and calls == [1]
    assert list(segmenter.engine.banks[1].cond) == [1]


def test_sam2_check_command(tmp_path):
    import json

    from typer.testing import CliRunner

    from sam4em_live.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["sam2-check", "--random-weights", "--device", "cpu", "--image-size", "128",
                                 "--frames", "1"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["backend"] == "sam2" and info["random_weights"] is True and len(info["ms_per_frame"]) == 1
    missing = runner.invoke(app, ["sam2-check", "--checkpoint", str(tmp_path / "sam2.1_hiera_tiny.pt")])
    assert missing.exit_code == 2 and WEIGHTS_URL in missing.output


def test_model_yaml_path_builds_the_same_model(tmp_path):
    import shutil
    from importlib.util import find_spec

    packaged = find_spec("sam2").submodule_search_locations[0] + "/configs/sam2.1/sam2.1_hiera_t.yaml"
    custom = tmp_path / "sam-em_finetune.yaml"
    shutil.copy(packaged, custom)
    named = make_segmenter(image_size_px=SIZE)
    from_path = make_segmenter(image_size_px=SIZE, model=str(custom))
    assert from_path.describe()["model"] == str(custom)
    expected, built = named.model.state_dict(), from_path.model.state_dict()
    assert list(expected) == list(built)
    for key, value in expected.items():
        assert torch.equal(value, built[key]), key
    assert from_path.model.image_size == SIZE and from_path.model.binarize_mask_from_pts_for_mem_enc
    assert from_path.model.sam_mask_decoder.dynamic_multimask_via_stability
    with pytest.raises(FileNotFoundError, match="neither a known name"):
        make_segmenter(model=str(tmp_path / "missing.yaml"))
