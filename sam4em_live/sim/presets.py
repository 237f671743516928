"""Named simulation presets.

``sam4em-5nm`` / ``-50nm`` / ``-150nm`` reproduce the SAM4EM benchmark videos
(one gold rod ≈ 61 × 32 nm in 5 / 50 / 150 nm of water, 512², 1 nm/px, 80 fps,
35 e⁻/Å²s, MTF on); their median per-frame CNR is calibrated to the published
0.64 / 0.56 / 0.42 (measured figures in docs/simulator.md). Motion mimics the
published clips: heavy-tailed hops (median ≈ 4 px, up to 40 px per frame) and
fast rotation (median |Δθ| ≈ 17° per frame).
"""

from __future__ import annotations

import math

from sam4em_live.sim.spec import ImagingSpec, LiquidCellSpec, MotionSpec, ParticleSpec, SimulationSpec

#: Gold mean free path (nm) that reproduces the published CNRs with this model.
GOLD_MEAN_FREE_PATH_NM = 125.0
#: Tip-to-tip length and diameter of the SAM4EM gold rod (nm).
ROD_LENGTH_NM, ROD_WIDTH_NM = 61.0, 32.0
#: Median absolute rotation per frame of the SAM4EM rods (degrees) at 80 fps.
ROD_MEDIAN_TURN_DEG = 17.0


def rotational_diffusion_for_median_turn(median_turn_deg: float, fps: float) -> float:
    """D_r (rad²/s) whose Gaussian per-frame turns have median |Δθ| = ``median_turn_deg``."""
    sigma_rad = math.radians(median_turn_deg) / 0.6744897501960817  # median of |N(0, σ)| = 0.674 σ
    return sigma_rad**2 * fps / 2.0


def diffusion_for_step(step_sigma_px: float, pixel_size_nm: float, fps: float) -> float:
    """D (nm²/s) giving a per-axis step std of ``step_sigma_px`` per frame."""
    return (step_sigma_px * pixel_size_nm) ** 2 * fps / 2.0


def _sam4em(water_nm: float) -> SimulationSpec:
    hops = MotionSpec(
        kind="hops", step_median_nm=4.0, step_log_sigma=0.75, step_max_nm=40.0,
        rotational_diffusion_rad2_per_s=rotational_diffusion_for_median_turn(ROD_MEDIAN_TURN_DEG, 80.0),
        boundary="reflect", boundary_margin_px=48.0,
    )
    return SimulationSpec(
        name=f"sam4em-{water_nm:g}nm",
        description=f"SAM4EM benchmark: one gold rod {ROD_LENGTH_NM:g}x{ROD_WIDTH_NM:g} nm in {water_nm:g} nm water",
        imaging=ImagingSpec(shape_px=(512, 512), pixel_size_nm=1.0, fps=80.0, exposure_s=1 / 80,
                            dose_rate_e_per_A2s=35.0),
        cell=LiquidCellSpec(water_thickness_nm=water_nm),
        particles=(ParticleSpec(shape="rod", length_nm=ROD_LENGTH_NM, width_nm=ROD_WIDTH_NM,
                                mean_free_path_nm=GOLD_MEAN_FREE_PATH_NM, start_xy_px=(255.5, 255.5),
                                motion=hops),),
    )


def _multi_1024() -> SimulationSpec:
    fps = 80.0
    spin = rotational_diffusion_for_median_turn(5.0, fps)

    def walk(rotational_diffusion_rad2_per_s: float = 0.0) -> MotionSpec:
        return MotionSpec(kind="brownian", diffusion_nm2_per_s=diffusion_for_step(3.0, 1.0, fps),
                          boundary="reflect", boundary_margin_px=48.0,
                          rotational_diffusion_rad2_per_s=rotational_diffusion_rad2_per_s)

    return SimulationSpec(
        name="multi-1024",
        description="1024², 1 nm/px, 50 nm water: two gold rods and two spheres, Brownian",
        imaging=ImagingSpec(shape_px=(1024, 1024), fps=fps, exposure_s=1 / fps, dose_rate_e_per_A2s=35.0),
        cell=LiquidCellSpec(water_thickness_nm=50.0),
        particles=(
            ParticleSpec(shape="rod", start_xy_px=(300.0, 300.0),
                         motion=walk(spin)),
            ParticleSpec(shape="rod", length_nm=80.0, width_nm=28.0, start_xy_px=(720.0, 320.0),
                         motion=walk(spin)),
            ParticleSpec(shape="sphere", width_nm=40.0, start_xy_px=(320.0, 720.0), motion=walk()),
            ParticleSpec(shape="sphere", width_nm=30.0, start_xy_px=(700.0, 700.0), motion=walk()),
        ),
    )


def _demo() -> SimulationSpec:
    fps = 50.0

    def walk(rotational_diffusion_rad2_per_s: float = 0.0) -> MotionSpec:
        return MotionSpec(kind="brownian", diffusion_nm2_per_s=diffusion_for_step(1.5, 1.0, fps),
                          boundary="reflect", boundary_margin_px=40.0,
                          rotational_diffusion_rad2_per_s=rotational_diffusion_rad2_per_s)

    return SimulationSpec(
        name="demo",
        description="Live demo: 512², 50 fps, four particles wandering but staying in view; 4x the SAM4EM "
                    "dose so they are visible by eye",
        imaging=ImagingSpec(shape_px=(512, 512), fps=fps, exposure_s=1 / fps, dose_rate_e_per_A2s=140.0),
        cell=LiquidCellSpec(water_thickness_nm=50.0),
        particles=(
            ParticleSpec(shape="rod", start_xy_px=(150.0, 150.0),
                         motion=walk(2.0)),
            ParticleSpec(shape="rod", length_nm=75.0, width_nm=30.0, start_xy_px=(360.0, 160.0),
                         motion=walk(2.0)),
            ParticleSpec(shape="sphere", width_nm=40.0, start_xy_px=(160.0, 360.0), motion=walk()),
            ParticleSpec(shape="prism", width_nm=50.0, thickness_nm=20.0, start_xy_px=(360.0, 360.0),
                         motion=walk(1.0)),
        ),
    )


def _crossing() -> SimulationSpec:
    """Two rods crossing at the centre around frame 30 (easy contrast: tests of identity keeping)."""
    return SimulationSpec(
        name="crossing",
        description="256², two rods on straight paths that cross at frame 30; 10x the SAM4EM dose",
        imaging=ImagingSpec(shape_px=(256, 256), dose_rate_e_per_A2s=350.0),
        cell=LiquidCellSpec(water_thickness_nm=50.0),
        particles=(
            ParticleSpec(shape="rod", start_angle_deg=0.0,
                         motion=MotionSpec(kind="waypoints", waypoints=((0, 50.0, 128.0), (60, 206.0, 128.0)))),
            ParticleSpec(shape="rod", start_angle_deg=90.0,
                         motion=MotionSpec(kind="waypoints", waypoints=((0, 128.0, 50.0), (60, 128.0, 206.0)))),
        ),
    )


def _leave_reenter() -> SimulationSpec:
    """One rod that leaves the field to the right (≈ frames 37-83) and comes back."""
    return SimulationSpec(
        name="leave-reenter",
        description="256², one rod leaves the field through the right edge and comes back; 10x the SAM4EM dose",
        imaging=ImagingSpec(shape_px=(256, 256), dose_rate_e_per_A2s=350.0),
        cell=LiquidCellSpec(water_thickness_nm=50.0),
        particles=(
            ParticleSpec(shape="rod", start_angle_deg=0.0, motion=MotionSpec(
                kind="waypoints", waypoints=((0, 128.0, 128.0), (60, 328.0, 128.0), (120, 128.0, 128.0)))),
        ),
    )


PRESETS: dict[str, SimulationSpec] = {
    spec.name: spec
    for spec in (_sam4em(5), _sam4em(50), _sam4em(150), _multi_1024(), _demo(), _crossing(), _leave_reenter())
}


def get_preset(name: str) -> SimulationSpec:
    """The preset called ``name``; ``ValueError`` naming the choices otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown simulation preset {name!r}; choose from {sorted(PRESETS)}") from None
