"""Presets hit their published contrast; clips, streams and prompts agree with each other."""

from __future__ import annotations

import numpy as np
import pytest

from sam4em_live.particles import validate_edit
from sam4em_live.sim.presets import PRESETS, get_preset
from sam4em_live.sim.video import iter_frames, make_prompts, simulate_video


@pytest.mark.parametrize("name, target_cnr", [("sam4em-5nm", 0.64), ("sam4em-50nm", 0.56), ("sam4em-150nm", 0.42)])
def test_sam4em_presets_hit_published_cnr(name: str, target_cnr: float) -> None:
    video = simulate_video(get_preset(name), 100, seed=11)
    assert np.median(video.cnr) == pytest.approx(target_cnr, abs=0.03)
    assert 0.03 <= np.std(video.cnr) <= 0.08  # published per-frame spread ≈ 0.05
    spec = video.spec
    assert spec.imaging.shape_px == (512, 512) and spec.imaging.pixel_size_nm == 1.0
    assert video.calibration.fps == 80.0 and video.calibration.exposure_s == pytest.approx(1 / 80)
    assert len(video.gt_table) == 100  # the rod stays in view
    steps = np.hypot(*np.diff(video.gt_table[["x", "y"]].to_numpy(), axis=0).T)
    assert 2.5 < np.median(steps) < 6.0 and steps.max() <= 40.0 + 1e-9


def test_every_preset_renders_and_has_truth() -> None:
    assert {"sam4em-5nm", "sam4em-50nm", "sam4em-150nm", "multi-1024", "demo", "crossing",
            "leave-reenter"} <= set(PRESETS)
    for spec in PRESETS.values():
        video = simulate_video(spec, 2, seed=0)
        rows, cols = spec.imaging.shape_px
        assert video.frames.shape == (2, rows, cols) and video.gt_labels.dtype == np.uint16
        assert set(np.unique(video.gt_labels[0])) - {0} == set(video.gt_table.query("frame == 0")["particle"])
    assert len(get_preset("multi-1024").particles) == 4
    with pytest.raises(ValueError, match="choose from"):
        get_preset("nope")


def test_iter_frames_matches_simulate_video() -> None:
    spec = get_preset("crossing")
    video = simulate_video(spec, 6, seed=5)
    for t, (pixels, labels, rows) in enumerate(iter_frames(spec, seed=5, n_frames=6)):
        np.testing.assert_array_equal(pixels, video.frames[t])
        np.testing.assert_array_equal(labels, video.gt_labels[t])
        assert [r["x"] for r in rows] == list(video.gt_table.query("frame == @t")["x"])
    other = simulate_video(spec, 2, seed=6)
    assert not np.array_equal(other.frames[0], video.frames[0])


def test_crossing_and_leave_reenter_presets_do_what_they_say() -> None:
    crossing = simulate_video(get_preset("crossing"), 61, seed=0)
    at30 = crossing.gt_table.query("frame == 30").set_index("particle")
    assert np.hypot(at30.loc[1, "x"] - at30.loc[2, "x"], at30.loc[1, "y"] - at30.loc[2, "y"]) < 1.0
    leave = simulate_video(get_preset("leave-reenter"), 120, seed=0)
    present = set(leave.gt_table["frame"])
    assert 0 in present and 119 in present and 60 not in present


@pytest.mark.parametrize("kind", ["point", "box", "point+box"])
def test_prompts_come_from_the_truth(kind: str) -> None:
    video = simulate_video(get_preset("crossing"), 40, seed=0)
    prompts = make_prompts(video, frames=(0, 30, 125), kind=kind)  # 125 does not exist
    assert sorted({(p.frame, p.particle) for p in prompts}) == [(0, 1), (0, 2), (30, 1), (30, 2)]
    for prompt in prompts:
        validate_edit(prompt, video.frames.shape[1:])
        mask = video.gt_labels[prompt.frame] == prompt.particle
        if "point" in kind:
            x, y = prompt.points[0]
            assert mask[round(y), round(x)]  # on the visible mask, even at the crossing
        if "box" in kind:
            x0, y0, x1, y1 = prompt.box
            ys, xs = np.nonzero(mask)
            assert (x0, y0, x1, y1) == (xs.min() - 0.5, ys.min() - 0.5, xs.max() + 0.5, ys.max() + 0.5)
    with pytest.raises(ValueError, match="kind must be"):
        make_prompts(video, kind="lasso")  # type: ignore[arg-type]
