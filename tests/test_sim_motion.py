"""Motion models: Brownian MSD slope 4D, fBm exponent α, hops, rotation, boundaries, scripted paths."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from sam4em_live.sim.motion import ParticleTrajectory, fgn_davies_harte, fold_angle_deg, reflect
from sam4em_live.sim.presets import rotational_diffusion_for_median_turn
from sam4em_live.sim.spec import ImagingSpec, MotionSpec, ParticleSpec, SimulationSpec
from sam4em_live.sim.video import simulate_video

IMAGING = ImagingSpec(shape_px=(512, 512), pixel_size_nm=2.0, fps=100.0, exposure_s=0.01)


def _path(motion: MotionSpec, n: int, seed: int, imaging: ImagingSpec = IMAGING, **kw: object) -> np.ndarray:
    particle = ParticleSpec(shape="sphere", width_nm=10.0, start_xy_px=(256.0, 256.0), motion=motion, **kw)
    track = iter(ParticleTrajectory(particle, imaging, np.random.default_rng(seed), block_frames=n + 1))
    poses = [next(track) for _ in range(n)]
    return np.array([(p.x_px, p.y_px, p.angle_deg) for p in poses])


def test_brownian_msd_slope_is_4d() -> None:
    d_nm2_s = 800.0
    path = _path(MotionSpec(kind="brownian", diffusion_nm2_per_s=d_nm2_s), 20000, seed=2)
    xy_nm = path[:, :2] * IMAGING.pixel_size_nm
    lags = np.arange(1, 11)
    msd = [np.mean(np.sum((xy_nm[lag:] - xy_nm[:-lag]) ** 2, axis=1)) for lag in lags]
    slope = np.polyfit(lags / IMAGING.fps, msd, 1)[0]
    assert slope == pytest.approx(4 * d_nm2_s, rel=0.06)


@pytest.mark.parametrize("alpha", [0.5, 1.0, 1.5])
def test_fbm_ensemble_msd_exponent(alpha: float) -> None:
    k = 300.0
    motion = MotionSpec(kind="fbm", diffusion_nm2_per_s=k, alpha=alpha)
    paths = np.stack([_path(motion, 257, seed=s)[:, :2] for s in range(150)]) * IMAGING.pixel_size_nm
    disp2 = np.sum((paths - paths[:, :1]) ** 2, axis=2).mean(axis=0)
    lags = np.array([1, 2, 4, 8, 16, 32, 64, 128, 256])
    t = lags / IMAGING.fps
    fitted_alpha, log_c = np.polyfit(np.log(t), np.log(disp2[lags]), 1)
    assert fitted_alpha == pytest.approx(alpha, abs=0.1)
    assert math.exp(log_c) == pytest.approx(4 * k, rel=0.3)


def test_fgn_has_exact_lag_one_covariance() -> None:
    hurst = 0.8
    noise = fgn_davies_harte(4096, hurst, np.random.default_rng(0), columns=2)
    lag1 = np.mean(noise[1:] * noise[:-1])
    assert np.var(noise) == pytest.approx(1.0, abs=0.05)
    assert lag1 == pytest.approx(0.5 * (2 ** (2 * hurst) - 2), abs=0.05)


def test_hops_are_heavy_tailed_and_capped() -> None:
    motion = MotionSpec(kind="hops", step_median_nm=8.0, step_log_sigma=0.75, step_max_nm=80.0)
    path = _path(motion, 4000, seed=1)
    steps = np.hypot(*np.diff(path[:, :2], axis=0).T)
    assert np.median(steps) == pytest.approx(4.0, rel=0.06)  # 8 nm at 2 nm/px
    assert steps.max() <= 40.0 + 1e-9
    assert np.percentile(steps, 99) > 5 * np.median(steps)


def test_rotational_diffusion_gives_the_requested_median_turn() -> None:
    d_r = rotational_diffusion_for_median_turn(17.0, IMAGING.fps)
    path = _path(MotionSpec(kind="static", rotational_diffusion_rad2_per_s=d_r), 4000, seed=4)
    turns = np.abs(np.diff(path[:, 2]))
    assert np.median(turns) == pytest.approx(17.0, rel=0.06)
    assert np.all(path[:, :2] == 256.0)


def test_reflecting_boundary_keeps_centres_inside() -> None:
    motion = MotionSpec(kind="brownian", diffusion_nm2_per_s=2e5, boundary="reflect", boundary_margin_px=30.0)
    path = _path(motion, 3000, seed=5)
    assert path[:, :2].min() >= 30.0 and path[:, :2].max() <= 511 - 30.0
    assert reflect(-3.0, 0.0, 10.0) == 3.0 and reflect(12.0, 0.0, 10.0) == 8.0 and reflect(25.0, 0.0, 10.0) == 5.0


def test_fold_angle_convention() -> None:
    assert fold_angle_deg(-90.0) == 90.0
    assert fold_angle_deg(100.0) == pytest.approx(-80.0)
    assert fold_angle_deg(270.0) == 90.0
    assert fold_angle_deg(45.0) == 45.0


def test_waypoints_and_leaving_the_field() -> None:
    spec = SimulationSpec(imaging=ImagingSpec(shape_px=(64, 96), mtf=False, shot_noise="none"), particles=(
        ParticleSpec(shape="sphere", width_nm=10.0,
                     motion=MotionSpec(kind="waypoints", waypoints=((0, 20.0, 32.0), (10, 140.0, 32.0)))),))
    video = simulate_video(spec, 12, seed=0)
    table = video.gt_table.set_index("frame")
    assert table.loc[5, "x"] == pytest.approx(80.0)
    assert table.loc[6, "x"] == pytest.approx(92.0)  # partly in the field: still reported
    assert 0 < table.loc[6, "area"] < table.loc[0, "area"]
    assert 8 not in table.index  # x = 116: fully outside, no row and an empty mask
    assert video.gt_labels[8].max() == 0


def test_csv_trajectory_drives_positions_and_absence(tmp_path) -> None:
    csv = tmp_path / "track.csv"
    pd.DataFrame({"frame": [0, 1, 3], "particle": [7, 7, 7], "x": [30.0, 31.5, 33.0], "y": [20.0, 21.0, 22.0],
                  "angle": [10.0, 20.0, 30.0]}).to_csv(csv, index=False)
    rod = ParticleSpec(shape="rod", length_nm=20.0, width_nm=8.0,
                       motion=MotionSpec(kind="csv", csv_path=str(csv), csv_particle=7))
    video = simulate_video(SimulationSpec(imaging=ImagingSpec(shape_px=(48, 64)), particles=(rod,)), 4, seed=0)
    assert list(video.gt_table["frame"]) == [0, 1, 3]
    assert list(video.gt_table["x"]) == [30.0, 31.5, 33.0]
    assert list(video.gt_table["angle"]) == pytest.approx([10.0, 20.0, 30.0])
    assert video.gt_labels[2].max() == 0
    bad = tmp_path / "two.csv"
    pd.DataFrame({"frame": [0, 0], "particle": [1, 2], "x": [1.0, 2.0], "y": [1.0, 2.0]}).to_csv(bad, index=False)
    with pytest.raises(ValueError, match="csv_particle"):
        ParticleTrajectory(ParticleSpec(motion=MotionSpec(kind="csv", csv_path=str(bad))), IMAGING,
                           np.random.default_rng(0))


def test_endless_trajectories_continue_across_blocks() -> None:
    particle = ParticleSpec(shape="sphere", width_nm=10.0, start_xy_px=(256.0, 256.0),
                            motion=MotionSpec(kind="fbm", diffusion_nm2_per_s=400.0, alpha=0.7))
    track = iter(ParticleTrajectory(particle, IMAGING, np.random.default_rng(0), block_frames=4))
    xy = np.array([(p.x_px, p.y_px) for p in (next(track) for _ in range(13))])
    steps = np.hypot(*np.diff(xy, axis=0).T)
    assert np.all(steps > 0) and np.all(steps < 10)  # no jumps or stalls at block boundaries (4, 8, 12)
