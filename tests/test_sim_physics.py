"""Forward model: Beer–Lambert, thickness maps, MTF, masks and centroids against analytic values."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sam4em_live.measure import measure_mask
from sam4em_live.particles import ParticleMask
from sam4em_live.sim.noise import poisson_uniform, shot_noise
from sam4em_live.sim.optics import apply_mtf, frame_contrast, mtf_noise_factor, mtf_response
from sam4em_live.sim.render import FrameRenderer
from sam4em_live.sim.shapes import particle_volume_nm3, render_thickness
from sam4em_live.sim.spec import ImagingSpec, LiquidCellSpec, ParticleSpec, SimulationSpec
from sam4em_live.sim.video import simulate_video

NOISELESS = ImagingSpec(shape_px=(96, 128), mtf=False, shot_noise="none", output_dtype="float32")


def _expected_background(imaging: ImagingSpec, cell: LiquidCellSpec) -> float:
    n_e = imaging.dose_rate_e_per_A2s * 100 * imaging.pixel_size_nm**2 * imaging.exposure_s
    depth = cell.water_thickness_nm / cell.water_mean_free_path_nm
    depth += cell.window_count * cell.window_thickness_nm / cell.window_mean_free_path_nm
    return n_e * math.exp(-depth)


@pytest.mark.parametrize("water_nm, pixel_nm, dose", [(5.0, 1.0, 35.0), (150.0, 0.5, 100.0), (0.0, 2.0, 10.0)])
def test_uniform_layer_matches_beer_lambert(water_nm: float, pixel_nm: float, dose: float) -> None:
    imaging = NOISELESS.model_copy(update={"pixel_size_nm": pixel_nm, "dose_rate_e_per_A2s": dose})
    cell = LiquidCellSpec(water_thickness_nm=water_nm)
    video = simulate_video(SimulationSpec(imaging=imaging, cell=cell, particles=()), 2, seed=0)
    np.testing.assert_allclose(video.frames, _expected_background(imaging, cell), rtol=1e-6)
    assert video.gt_labels.max() == 0 and video.gt_table.empty


def test_particle_slab_displaces_liquid_and_can_clip() -> None:
    cube = ParticleSpec(shape="cube", width_nm=40.0, mean_free_path_nm=125.0, start_xy_px=(64.0, 48.0),
                        start_angle_deg=0.0)
    for clip, displaced in ((False, 40.0), (True, 5.0)):
        cell = LiquidCellSpec(water_thickness_nm=5.0, clip_displaced_liquid=clip)
        video = simulate_video(SimulationSpec(imaging=NOISELESS, cell=cell, particles=(cube,)), 1, seed=0)
        inside = video.frames[0, 48, 64]
        expected = _expected_background(NOISELESS, cell) * math.exp(-(40.0 / 125.0 - displaced / 185.0))
        assert inside == pytest.approx(expected, rel=1e-5)


def test_poisson_counts_have_the_expected_mean_and_variance() -> None:
    rng = np.random.default_rng(3)
    counts = poisson_uniform(21.3, (400, 400), rng)
    assert counts.mean() == pytest.approx(21.3, abs=4 * math.sqrt(21.3 / counts.size))
    assert counts.var() == pytest.approx(21.3, rel=0.02)
    assert np.all(counts == np.round(counts))
    mean = np.full((64, 64), 9.0, dtype=np.float32)
    mean[10:20, 10:20] = 4.0
    mixed = shot_noise(mean, "poisson", rng, uniform_level=9.0, varying_boxes=[(slice(10, 20), slice(10, 20))])
    assert mixed[10:20, 10:20].mean() < 6.0 < mixed[30:, 30:].mean()


PARTICLES = [
    ParticleSpec(shape="sphere", width_nm=30.0),
    ParticleSpec(shape="rod", length_nm=61.0, width_nm=32.0),
    ParticleSpec(shape="rod", length_nm=90.0, width_nm=20.0),
    ParticleSpec(shape="prism", width_nm=50.0, thickness_nm=12.0),
    ParticleSpec(shape="cube", width_nm=25.0),
]


@pytest.mark.parametrize("particle", PARTICLES, ids=lambda p: f"{p.shape}-{p.length_nm:g}-{p.width_nm:g}")
@pytest.mark.parametrize("pixel_nm", [1.0, 0.5])
def test_thickness_map_integrates_to_volume(particle: ParticleSpec, pixel_nm: float) -> None:
    rng = np.random.default_rng(1)
    for _ in range(3):
        x, y, angle = rng.uniform(90, 110), rng.uniform(90, 110), rng.uniform(-180, 180)
        patch = render_thickness(particle, x, y, angle, pixel_nm, (200, 200))
        assert patch is not None
        volume = float(patch.thickness_nm.astype(np.float64).sum()) * pixel_nm**2
        assert volume == pytest.approx(particle_volume_nm3(particle), rel=0.015)


def test_tapered_rod_reduces_to_capsule_and_tapers() -> None:
    capsule = ParticleSpec(shape="rod", length_nm=61.0, width_nm=32.0)
    same = ParticleSpec(shape="rod", length_nm=61.0, width_nm=32.0, end_width_nm=32.0)
    a = render_thickness(capsule, 50.3, 50.7, 20.0, 1.0, (100, 100))
    b = render_thickness(same, 50.3, 50.7, 20.0, 1.0, (100, 100))
    assert a is not None and b is not None
    np.testing.assert_array_equal(a.thickness_nm, b.thickness_nm)
    cone = ParticleSpec(shape="rod", length_nm=80.0, width_nm=30.0, end_width_nm=12.0)
    patch = render_thickness(cone, 60.0, 60.0, 0.0, 1.0, (120, 120))
    assert patch is not None
    profile = patch.thickness_nm.max(axis=0)
    cols = np.flatnonzero(profile > 0)
    assert profile[cols[: cols.size // 3]].max() == pytest.approx(30.0, abs=0.2)  # wide end first (-u)
    assert profile[cols[-6:]].max() <= 12.1  # last 6 px: only the 12 nm end sphere
    assert np.all(np.diff(profile[cols[cols.size // 3 :]]) <= 1e-4)


@pytest.mark.parametrize("particle", [*PARTICLES[:3], ParticleSpec(shape="rod", length_nm=80, width_nm=30, end_width_nm=14)],
                         ids=["sphere", "rod61", "rod90", "cone"])
def test_mask_centroid_area_and_angle_match_geometry(particle: ParticleSpec) -> None:
    rng = np.random.default_rng(7)
    spec = SimulationSpec(imaging=NOISELESS.model_copy(update={"shape_px": (160, 160)}), particles=(particle,))
    renderer = FrameRenderer(spec)
    from sam4em_live.sim.motion import Pose

    for _ in range(4):
        pose = Pose(rng.uniform(60, 100), rng.uniform(60, 100), rng.uniform(-170, 170))
        labels, rows = renderer.ground_truth([pose])
        mask = labels == 1
        m = measure_mask(ParticleMask.from_full(1, mask, 1.0), 0)
        assert math.hypot(m.x - pose.x_px, m.y - pose.y_px) < 0.15  # pixelation only
        assert rows[0]["area"] == mask.sum()
        if particle.shape == "rod" and particle.end_width_nm is None:
            r = particle.width_nm / 2
            area = (particle.length_nm - 2 * r) * 2 * r + math.pi * r * r
            assert mask.sum() == pytest.approx(area, rel=0.02)
            diff = (m.angle_deg - rows[0]["angle"] + 90) % 180 - 90
            assert abs(diff) < 1.0
            assert -90 < rows[0]["angle"] <= 90
        if particle.shape == "sphere":
            assert math.isnan(rows[0]["angle"])


def test_mtf_preserves_mean_and_scales_white_noise() -> None:
    assert mtf_noise_factor((512, 512), 0.2658, 1.535) == pytest.approx(0.421, abs=0.004)
    rng = np.random.default_rng(0)
    white = rng.normal(100.0, 5.0, (512, 512)).astype(np.float32)
    response = mtf_response((512, 512), 0.2658, 1.535)
    filtered = apply_mtf(white, response)
    assert filtered.mean() == pytest.approx(white.mean(), rel=1e-5)
    assert filtered.std() / white.std() == pytest.approx(0.4189, abs=0.004)
    assert response[0, 0] == 1.0 and response.min() == 0.0  # zero beyond Nyquist (corners)


def test_frame_contrast_definitions() -> None:
    rng = np.random.default_rng(0)
    pixels = rng.normal(50.0, 2.0, (128, 128))
    labels = np.zeros((128, 128), dtype=np.uint16)
    labels[40:80, 40:80] = 1
    pixels[labels == 1] -= 3.0
    cnr, snr = frame_contrast(pixels, labels)
    assert cnr == pytest.approx(1.5, abs=0.1)
    assert snr == pytest.approx(25.0, rel=0.05)
    assert math.isnan(frame_contrast(pixels, np.zeros_like(labels))[0])


def _noiseless(**imaging: object) -> ImagingSpec:
    return NOISELESS.model_copy(update=imaging)


def test_motion_blur_averages_transmission_over_the_exposure() -> None:
    from sam4em_live.sim.spec import MotionSpec

    moving = ParticleSpec(shape="sphere", width_nm=20.0, mean_free_path_nm=50.0, motion=MotionSpec(
        kind="waypoints", waypoints=((0, 40.0, 48.0), (1, 60.0, 48.0))))
    cell = LiquidCellSpec(water_thickness_nm=0.0)
    sharp = simulate_video(SimulationSpec(imaging=NOISELESS, cell=cell, particles=(moving,)), 1, 0).frames[0]
    blurred_spec = SimulationSpec(imaging=_noiseless(motion_blur_substeps=8), cell=cell, particles=(moving,))
    blurred = simulate_video(blurred_spec, 1, 0)
    bg = _expected_background(NOISELESS, cell)
    # Same total missing signal, spread along the path; truth stays at the start-of-exposure pose.
    assert (bg - blurred.frames[0]).sum() == pytest.approx((bg - sharp).sum(), rel=0.02)
    assert blurred.frames[0][48, 40] > sharp[48, 40] and blurred.frames[0][48, 55] < bg - 1e-3
    assert blurred.gt_table.loc[0, "x"] == 40.0


def test_defocus_spreads_thickness_but_keeps_sharp_masks() -> None:
    sphere = ParticleSpec(shape="sphere", width_nm=20.0, start_xy_px=(64.0, 48.0))
    cell = LiquidCellSpec(water_thickness_nm=0.0)
    focused = simulate_video(SimulationSpec(imaging=NOISELESS, cell=cell, particles=(sphere,)), 1, 0)
    defocused = simulate_video(
        SimulationSpec(imaging=_noiseless(defocus_disk_radius_nm=4.0), cell=cell, particles=(sphere,)), 1, 0)
    np.testing.assert_array_equal(focused.gt_labels, defocused.gt_labels)
    assert defocused.frames[0][48, 64] > focused.frames[0][48, 64]  # centre less dark
    assert defocused.frames[0][48, 76] < focused.frames[0][48, 76]  # just outside the rim darker


def test_detector_options_quantise_add_noise_and_vary() -> None:
    rod = ParticleSpec(shape="rod", start_xy_px=(64.0, 48.0))
    spec8 = SimulationSpec(imaging=ImagingSpec(shape_px=(96, 128), output_dtype="uint8", read_noise_e=2.0,
                                               dose_jitter_fraction=0.1, gradient_fraction=0.2),
                           particles=(rod,))
    video = simulate_video(spec8, 6, seed=2)
    assert video.frames.dtype == np.uint8
    means = video.frames.reshape(6, -1).mean(axis=1)
    assert 90 < np.median(means) < 170 and means.std() > 2  # background ≈ 128, dose jitters
    left, right = video.frames[:, :, :20].mean(), video.frames[:, :, -20:].mean()
    assert right > left * 1.1  # gradient along +x
    with pytest.raises(ValueError, match="exposure"):
        ImagingSpec(fps=100.0, exposure_s=0.02)


def test_background_noise_is_poisson_coloured_by_the_mtf() -> None:
    imaging = ImagingSpec(shape_px=(256, 256), output_dtype="float32")
    cell = LiquidCellSpec(water_thickness_nm=50.0)
    video = simulate_video(SimulationSpec(imaging=imaging, cell=cell, particles=()), 3, seed=5)
    lam = _expected_background(imaging, cell)
    assert video.frames.mean() == pytest.approx(lam, rel=0.003)
    expected_std = math.sqrt(lam) * mtf_noise_factor((256, 256), 0.2658, 1.535)
    assert video.frames.std() == pytest.approx(expected_std, rel=0.02)
    assert np.median(video.snr) == pytest.approx(lam / expected_std, rel=0.02)
