"""Unbiased masks of the embedded backend: the learned memory's edge is measured, not a fixed fraction of it.

Synthetic profiles with a known footprint (the simulator's thickness maps, blurred by its detector MTF)
test the edge fit; a `ShapeMemory` started from a wrong-sized seed tests that the mask does not inherit the
seed's size or the smoothing scale; short simulated clips test the mask area end to end (issue 16).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import ndimage

from sam4em_live.frames import Frame
from sam4em_live.segment.embedded import EmbeddedSegmenter
from sam4em_live.segment.embedded.boundary import (
    corner_loss,
    edge_profile,
    fit_edge,
    fit_profile,
    inscribed_radius,
    merged_profile,
    rounded_outline,
    signed_distance,
)
from sam4em_live.segment.embedded.options import EmbeddedOptions
from sam4em_live.segment.embedded.raster import mask_lookup, rasterize_mask
from sam4em_live.segment.embedded.shape import ShapeMemory
from sam4em_live.sim.optics import apply_mtf, mtf_response
from sam4em_live.sim.shapes import thickness_body
from sam4em_live.sim.spec import ImagingSpec, LiquidCellSpec, MotionSpec, ParticleSpec, SimulationSpec
from sam4em_live.sim.video import make_prompts, simulate_video

GOLD_MINUS_WATER_PER_NM = 1 / 125 - 1 / 185  # the simulator's contrast per nm of gold displacing water


def particle(shape: str, size_px: float) -> ParticleSpec:
    geometry = {"sphere": {"width_nm": size_px}, "rod": {"length_nm": size_px, "width_nm": size_px / 2},
                "cube": {"width_nm": size_px}, "prism": {"width_nm": size_px, "thickness_nm": 10.0}}[shape]
    return ParticleSpec(shape=shape, **geometry)  # type: ignore[arg-type]


def blurred_contrast(shape: str, size_px: float, half: int, f0: float = 0.2658, noise: float = 0.0,
                     seed: int = 0, correlated: bool = False) -> tuple[np.ndarray, float]:
    """Relative contrast of a particle at the centre of a (2 half + 1)² grid through the MTF, and its true area.

    ``noise``: white noise of that std relative to the peak; ``correlated``: instead, noise seen through the
    same MTF (as a learned memory's is), of that std relative to the mean contrast over the footprint.
    """
    axis = np.arange(-half, half + 1, dtype=float)
    spec = particle(shape, size_px)
    sub = (np.arange(4) - 1.5) / 4  # 4 x 4 supersampling: the footprint's edge pixels are partial
    thickness = sum(thickness_body(spec, axis[None, :] + a, axis[:, None] + b) for a in sub for b in sub) / 16
    contrast = 1 - np.exp(-thickness * GOLD_MINUS_WATER_PER_NM)
    mtf = mtf_response(contrast.shape, f0, 1.535)
    image = apply_mtf(contrast.astype(np.float32), mtf)
    footprint = thickness_body(spec, axis[None, :], axis[:, None]) > 0
    rng = np.random.default_rng(seed)
    if noise and correlated:
        grain = apply_mtf(rng.standard_normal(image.shape).astype(np.float32), mtf)
        image = image + noise * float(contrast[footprint].mean()) * grain / float(grain.std())
    elif noise:
        image = image + noise * float(contrast.max()) * rng.standard_normal(image.shape).astype(np.float32)
    return image.astype(np.float32), float(footprint.sum())


def area_at_fitted_edge(image: np.ndarray, provisional: np.ndarray, smoothing_px: float = 2.5) -> float:
    """Area of the smoothed image's contour at the level found at the fitted edge (what `ShapeMemory` does)."""
    distance = signed_distance(provisional)
    fit = fit_edge(image, distance)
    assert fit is not None
    smooth = ndimage.gaussian_filter(image, smoothing_px)
    level = edge_profile(smooth, distance).at(fit.offset_px)
    labels, _ = ndimage.label(smooth > level)
    centre = image.shape[0] // 2
    return float((labels == labels[centre, centre]).sum())


@pytest.mark.parametrize("shape, size_px", [("sphere", 40), ("sphere", 100), ("rod", 80), ("cube", 40),
                                                ("cube", 80), ("prism", 60)])
@pytest.mark.parametrize("f0", [0.2658, 0.13])
def test_edge_fit_recovers_the_true_area_where_a_fixed_fraction_is_biased(shape: str, size_px: float,
                                                                          f0: float) -> None:
    image, true_area = blurred_contrast(shape, size_px, int(0.8 * size_px) + 16, f0, noise=0.3)
    smooth = ndimage.gaussian_filter(image, 2.5)
    labels, _ = ndimage.label(smooth > 0.25 * float(np.percentile(smooth, 99.5)))
    centre = image.shape[0] // 2
    provisional = labels == labels[centre, centre]  # the old mask: the 0.25 contour of the smoothed profile
    new_bias = area_at_fitted_edge(image, provisional) / true_area - 1
    assert abs(new_bias) <= 0.05, f"{shape} {size_px}px f0 {f0}: area bias {new_bias:+.3f}"
    if shape in ("cube", "prism"):  # a step edge: its 0.25 contour lies well outside the edge
        assert provisional.sum() / true_area - 1 > 0.04


def test_plates_and_rounded_bodies_are_told_apart() -> None:
    for shape, rounded in (("sphere", True), ("rod", True), ("cube", False), ("prism", False)):
        image, _ = blurred_contrast(shape, 60, 64)
        assert rounded_outline(image > 0.5 * float(image.max())) is rounded, shape


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_ragged_outline_of_a_rounded_body_is_still_rounded(seed: int) -> None:
    """A disc whose outline is dented and bumped by up to 4 px (a faint memory's contour) is no polygon (the
    old test, an opening of the outline itself, called all three polygons)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[-60:61, -60:61]
    angle = np.arctan2(yy, xx)
    wobble = sum(rng.uniform(0.3, 1.0) * np.cos(k * angle + rng.uniform(0, 2 * np.pi)) for k in range(6, 20))
    ragged = np.hypot(xx, yy) <= 40 + 4 * wobble / np.abs(wobble).max()
    assert corner_loss(ragged) <= 0.03
    square = (np.abs(xx) <= 35) & (np.abs(yy) <= 35)
    triangle = (yy <= 30) & (yy >= 1.732 * np.abs(xx) - 60)
    assert corner_loss(square) >= 0.09 and corner_loss(triangle) >= 0.15


@pytest.mark.parametrize("shape, size_px, seed", [("sphere", 80, 0), ("sphere", 80, 1), ("rod", 100, 1),
                                                  ("rod", 100, 3)])
def test_a_faint_rounded_memory_is_not_fitted_as_a_step(shape: str, size_px: float, seed: int) -> None:
    """A faint sphere or rod memory (soft MTF, correlated noise half its mean contrast, as at CNR ~0.3):
    its low, ragged contour failed the old outline test, the step model was fitted and the mask shrank by
    6-12 %. Judged on the half-peak contour's hull, it keeps the chord model and does not shrink."""
    half = int(0.8 * size_px) + 16
    image, true_area = blurred_contrast(shape, size_px, half, 0.13, noise=0.5, seed=seed, correlated=True)
    smooth = ndimage.gaussian_filter(image, 2.5)
    labels, _ = ndimage.label(smooth > 0.25 * float(smooth.max()))
    memory = ShapeMemory(image, labels == labels[half, half], EmbeddedOptions())
    memory.n_obs = 20
    for _ in range(6):
        memory.refresh()
    assert memory.edge is not None and memory.edge.model == "chord"
    bias = memory.area_px / true_area - 1
    # One image: both halves of the memory hold the same noise, so the contour's noise is in the profile
    # and the fit sits ~1 px out (+8 to +19 % here); a tracked memory's halves are independent (see below).
    assert -0.05 <= bias <= 0.25, f"area bias {bias:+.3f}"


def test_no_edge_is_reported_in_pure_noise() -> None:
    rng = np.random.default_rng(3)
    noise = rng.standard_normal((81, 81)).astype(np.float32)
    yy, xx = np.mgrid[-40:41, -40:41]
    assert fit_edge(noise, signed_distance(xx**2 + yy**2 <= 15**2)) is None


@pytest.mark.parametrize("seed_scale, smoothing_px", [(0.85, 2.5), (1.25, 2.5), (1.0, 1.5), (1.0, 4.0)])
def test_learned_mask_inherits_neither_the_seed_size_nor_the_smoothing(seed_scale: float, smoothing_px: float) -> None:
    """A memory holding a converged 50 px cube: the mask converges to its area from a seed too small or too big."""
    half = 50
    image, true_area = blurred_contrast("cube", 50, half, noise=0.1)
    yy, xx = np.mgrid[-half : half + 1, -half : half + 1]
    seed_mask = (np.abs(xx) <= 25 * seed_scale) & (np.abs(yy) <= 25 * seed_scale)
    memory = ShapeMemory(image, seed_mask, EmbeddedOptions(mask_smoothing_px=smoothing_px))
    memory.n_obs = 20  # a converged memory: the learned shape is derived at every refresh
    for _ in range(6):  # a boundary moves at most 2 px per refresh
        memory.refresh()
    assert memory.edge is not None and memory.edge.model == "plate"
    assert abs(memory.area_px / true_area - 1) <= 0.05


def test_a_mask_thinner_than_its_sampling_still_covers_its_centre_pixel() -> None:
    level = np.full((9, 9), -1.0, np.float32)
    level[4, 4] = 0.01  # inside only at the centre, which the 2x lookup samples between pixels
    lookup = mask_lookup(level, 4, 1.0)
    for x, y in ((10.3, 20.7), (0.2, 0.4), (15.5, 15.5)):
        placed = rasterize_mask(lookup, 1.0, x, y, 33.0, (32, 32))
        assert placed is not None and placed.area_px >= 1 and placed.crop.sum() >= 1


def one_particle_clip(shape: str, size_px: float, frames: int) -> tuple[SimulationSpec, int]:
    motion = MotionSpec(kind="brownian", diffusion_nm2_per_s=80.0 * 1.5**2 / 2, rotational_diffusion_rad2_per_s=0.2,
                        boundary="reflect", boundary_margin_px=size_px)
    spec = SimulationSpec(imaging=ImagingSpec(shape_px=(192, 192), dose_rate_e_per_A2s=140.0),
                          cell=LiquidCellSpec(water_thickness_nm=50.0),
                          particles=(particle(shape, size_px).model_copy(
                              update={"start_xy_px": (95.5, 95.5), "motion": motion}),))
    return spec, frames


@pytest.mark.parametrize("shape, size_px", [("sphere", 40), ("cube", 40)])
def test_tracked_masks_match_the_true_area_on_every_frame(shape: str, size_px: float) -> None:
    spec, frames = one_particle_clip(shape, size_px, 60)
    video = simulate_video(spec, frames, seed=1)
    prompts = make_prompts(video, frames=(0,), kind="point")
    segmenter = EmbeddedSegmenter()
    ratios = []
    for index, pixels in enumerate(video.frames):
        masks = segmenter.track(Frame("bias", index, 0.0, pixels), [p for p in prompts if p.frame == index])
        truth = video.gt_labels[index] == 1
        assert len(masks) == 1 and masks[0].present, f"frame {index}: no mask for a particle in the field"
        if index >= 30:
            ratios.append(masks[0].to_full(truth.shape).sum() / truth.sum())
    bias = np.asarray(ratios) - 1
    assert math.isclose(float(np.median(bias)), 0.0, abs_tol=0.05), f"median area bias {np.median(bias):+.3f}"
    assert float(np.abs(bias).max()) <= 0.1



@pytest.mark.parametrize("shape, size_px", [("sphere", 80), ("rod", 80)])
def test_a_profile_read_across_another_memorys_contour_is_not_biased_outwards(shape: str, size_px: float) -> None:
    """Why `ShapeMemory` keeps two halves: a contour drawn on a noisy memory follows its noise (pixels just inside
    were let in by noise above the level), so the same memory's profile across it shows a false step and the
    fitted edge of a faint sphere or rod lies outside the true one; the other half's profile does not."""
    half = int(0.8 * size_px) + 16
    same, crossed = [], []
    for seed in range(6):
        drawn, true_area = blurred_contrast(shape, size_px, half, 0.13, noise=0.7, seed=seed, correlated=True)
        other, _ = blurred_contrast(shape, size_px, half, 0.13, noise=0.7, seed=seed + 50, correlated=True)
        smooth = ndimage.gaussian_filter(drawn, 4.0)
        labels, _ = ndimage.label(smooth > 0.25 * float(smooth.max()))
        distance = signed_distance(labels == labels[half, half])
        radius = inscribed_radius(distance)
        for memory, biases in ((drawn, same), (other, crossed)):
            fit = fit_profile(merged_profile([(memory, distance)], min(14.0, radius + 2.0)), radius, True)
            assert fit is not None and fit.model == "chord"
            biases.append(float((distance >= fit.offset_px).sum()) / true_area - 1)
    assert float(np.mean(same)) >= 0.03, same  # the bias the halves remove
    assert abs(float(np.mean(crossed))) <= 0.03, crossed


@pytest.mark.parametrize("shape, size_px", [("cube", 40), ("prism", 60)])
def test_a_plate_mask_is_its_half_height_contour_whatever_the_smoothing(shape: str, size_px: float) -> None:
    """A plate's level is the fitted step's half height (`EdgeFit.half_level`), the same for every smoothing."""
    half = int(0.8 * size_px) + 16
    image, _ = blurred_contrast(shape, size_px, half, noise=0.05)
    exact_area = size_px**2 if shape == "cube" else math.sqrt(3) / 4 * size_px**2
    biases = []
    for smoothing_px in (1.5, 2.5, 4.0):
        smooth = ndimage.gaussian_filter(image, smoothing_px)
        labels, _ = ndimage.label(smooth > 0.25 * float(smooth.max()))
        memory = ShapeMemory(image, labels == labels[half, half], EmbeddedOptions(mask_smoothing_px=smoothing_px))
        memory.n_obs = 20
        for _ in range(6):
            memory.refresh()
        assert memory.edge is not None and memory.edge.model == "plate"
        biases.append(memory.area_px / exact_area - 1)
    assert all(abs(b) <= 0.03 for b in biases), biases
    assert max(biases) - min(biases) <= 0.005, f"the smoothing scale enters the mask: {biases}"
