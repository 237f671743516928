"""Robustness floor (issue 16): the conditions real data brings, scored for identity, presence and J&F.

The first tests check the instrument itself — the conditions' truth (fading, blanking, unprompted
particles), the frame effects, and the identity metrics on hand-made tracks. The floor tests run the
embedded backend on short clips of a few conditions (docs/benchmarks.md, "Robustness", has the full
matrix) and hold it to today's level minus a margin, with no identity hop and no false presence.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sam4em_live.evaluate.identity import score_tracks
from sam4em_live.sim import degrade
from sam4em_live.sim.conditions import CONDITIONS, get_condition
from sam4em_live.sim.real_motion import real_trajectories_available
from sam4em_live.sim.scenario import render_scenario
from tools.bench.benchmarks.robustness import run_cell

needs_real_motion = pytest.mark.skipif(not real_trajectories_available(),
                                       reason="real LPTEM trajectories (shared/data/trajectories) not present")


def test_fading_and_blanking_make_absent_truth_and_leave_the_image() -> None:
    clip = render_scenario(get_condition("fade-edge-artifact").build(0, 50, "sim"), 0)
    rod = clip.truth[clip.truth["particle"] == clip.scenario.prompted[0]]
    states, xs, ys = rod["state"].to_numpy(), rod["x"].to_numpy(dtype=float), rod["y"].to_numpy(dtype=float)
    assert states[0] == "visible" and states[25] == "absent"
    assert math.isfinite(xs[25])  # still in the field: a report far from here is a hop
    assert not (clip.gt_labels[25] == clip.scenario.prompted[0]).any()
    # Unprompted (the edge blob, id 1) never appears in the labels; the faded rod leaves no dark trace.
    assert not (clip.gt_labels == 1).any()
    x, y = round(xs[25]), round(ys[25])
    patch = clip.frames[25, y - 5 : y + 6, x - 5 : x + 6].astype(float)
    background = np.median(clip.frames[25].astype(float))
    assert abs(patch.mean() - background) < 0.05 * background

    blanked = render_scenario(get_condition("dose-steps").build(0, 40, "sim"), 0)
    per_frame = blanked.truth.groupby("frame")["state"].first().to_numpy()
    assert per_frame[18] == "absent" and per_frame[17] == "visible"
    assert blanked.frames[18].mean() < 0.1 * blanked.frames[17].mean()


def test_frame_effects() -> None:
    rng = np.random.default_rng(0)
    frame = rng.normal(100.0, 5.0, (64, 64)).astype(np.float32)
    inverted = degrade.invert_contrast(frame, 100.0)
    assert inverted.mean() == pytest.approx(25.0, abs=1.0) and inverted.std() == pytest.approx(frame.std(), rel=0.01)
    encoded = degrade.jpeg_roundtrip(degrade.to_uint8(frame, 1.28), 80)
    assert encoded.dtype == np.uint8 and 0 < np.abs(encoded.astype(int) - degrade.to_uint8(frame, 1.28)).mean() < 8
    texture = degrade.fractal_texture((128, 128), 1.0, rng)
    assert texture.std() == pytest.approx(1.0, rel=1e-3)
    # 1/f: neighbouring pixels are correlated, unlike white noise.
    assert np.corrcoef(texture[:, :-1].ravel(), texture[:, 1:].ravel())[0, 1] > 0.2


def _truth(xs: list[float], states: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"frame": range(len(xs)), "particle": 1, "x": xs, "y": 50.0, "area": 300.0,
                         "full_area": 300.0, "radius_px": 9.8, "visibility": 1.0, "state": states})


def test_identity_metrics_count_hops_false_presence_and_calibration() -> None:
    truth = _truth([50.0] * 6, ["visible", "visible", "absent", "absent", "visible", "visible"])
    truth.loc[[2, 3], "area"] = [300.0, 0.0]  # frame 2 faded in the field, frame 3 out of the field
    predictions = pd.DataFrame({
        "frame": range(6), "particle": 1,
        "present": [True, True, True, True, True, False],
        "x": [50.5, 51.0, 200.0, 210.0, 80.0, math.nan], "y": 50.0,
        "area": [330.0, 300.0, 300.0, 300.0, 300.0, 0.0], "score": [0.9, 0.4, 0.8, 0.8, 0.9, 0.1],
    })
    figures = score_tracks(truth, predictions, score_threshold=0.5)
    assert figures.false_presence_frames == 2 and figures.absent_frames == 2
    assert figures.hop_frames == 2  # frames 2 (faded, in the field) and 4; frame 3 is out of the field
    assert figures.hops == 2  # two separate runs: frame 2, then frame 4
    assert figures.missed_frames == 1
    assert figures.confident_frames == 4 and figures.confident_correct_fraction == pytest.approx(0.25)
    assert figures.confident_wrong_frames == 3  # frames 2 and 3 (absent) and 4 (hop), all with score >= 0.5
    assert figures.area_bias_median == pytest.approx(0.0) and figures.area_bias_mean == pytest.approx(0.1 / 3)


def test_every_condition_renders_with_prompts() -> None:
    for name, info in CONDITIONS.items():
        if name == "dense" or (not real_trajectories_available() and info.motions == ("chen",)):
            continue
        clip = render_scenario(info.build(3, 6, info.motions[0]), 3)
        assert len(clip.prompts()) == len(clip.scenario.prompted), name
        assert clip.frames.dtype == (np.uint8 if name == "jpeg" else np.uint16), name


# Floors: today's figures on these exact clips (seed 0) minus a margin; a hop or a false presence fails.
FLOORS = [
    ("clean", "sim", 60, 91.0),
    pytest.param("fade-edge-artifact", "monet", 80, 89.0, marks=needs_real_motion),
    ("jpeg", "sim", 60, 91.0),
    ("static-blobs", "sim", 80, 91.0),
]


@pytest.mark.parametrize("condition, motion, frames, floor", FLOORS)
def test_robustness_floor(condition: str, motion: str, frames: int, floor: float) -> None:
    result = run_cell(condition, motion, [0], frames, "embedded", {}, "point", 0.5)
    figures = result.figures
    assert figures["hops"] == 0, figures
    assert figures["false_presence_frames"] == 0, figures
    assert figures["prompts_rejected"] == 0, figures
    assert figures["J&F"] >= floor, figures


def test_registered_benchmark_reports_every_cell(tmp_path: Path) -> None:
    from tools.bench.registry import RunContext, get_benchmark

    bench = get_benchmark("robustness")
    params = bench.params({"conditions": ["touching", "dose-steps"], "motions": ["sim"], "seeds": [0], "frames": 24})
    measurement = bench.function(params, RunContext(tmp_path, tmp_path))
    for cell in ("touching.scripted", "dose-steps.sim"):
        assert measurement.metrics[f"{cell}.J&F"].value > 50.0
        assert measurement.metrics[f"{cell}.identity_hops"].value == 0
    assert measurement.metrics["dose-steps.sim.absent_frames"].value == 6  # 3 blanked frames x 2 particles
