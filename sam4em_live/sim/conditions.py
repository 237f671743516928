"""Named imaging conditions that real LPTEM data brings, for the robustness benchmark (issue 16).

Every condition builds a `Scenario` (`sam4em_live.sim.scenario`) from a seed, a clip length and a motion
source. The base scene is 256², 1 nm/px, 80 fps, 50 nm of water at 4× the SAM4EM dose (median CNR ≈ 1.4,
the ``demo`` preset's imaging): a gold rod 61 × 32 nm prompted in the left half and a 40 nm sphere in the
right half, each kept in its half so that only the condition, not a collision, is under test.

Motion sources (``motion``):

- ``sim``: the simulator's heavy-tailed hops (median 3 px, log-σ 0.75, ≤ 25 px per frame), reflected
  inside the particle's half, with rotational diffusion (median turn 5° per frame);
- ``monet``: real gold-nanorod paths from liquid-cell TEM (`sam4em_live.sim.real_motion.monet_paths`),
  source units taken as pixels, shrunk to fit the half when larger (scale recorded in ``notes``);
- the ``touching`` and ``dense`` conditions script their own motion (``scripted``, ``chen``).

Conditions whose image the simulator does not make itself post-process the rendered electrons
(`sam4em_live.sim.degrade`); see docs/simulator.md, "Conditions".
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sam4em_live.sim import degrade
from sam4em_live.sim.motion import ParticleTrajectory
from sam4em_live.sim.presets import rotational_diffusion_for_median_turn
from sam4em_live.sim.scenario import DEFAULT_ADU_PER_E, FPS, Finish, Scenario, base_imaging, default_finish
from sam4em_live.sim.spec import ImagingSpec, LiquidCellSpec, MotionSpec, ParticleSpec, SimulationSpec

if TYPE_CHECKING:
    from collections.abc import Callable

FIELD_PX = 256
#: Distance (px) of the inner static blobs from the tracked particles' positions on the prompt frame.
BLOB_CLEARANCE_PX = 60.0
MOTIONS = ("sim", "monet")

ROD = ParticleSpec(shape="rod", length_nm=61.0, width_nm=32.0)
SPHERE = ParticleSpec(shape="sphere", width_nm=40.0)
#: A static gold-like dark blob, and a bright one: a low-density pocket (displaces liquid and attenuates
#: less than it; λ = 300 nm gives ~10 % more signal at its centre, about the particles' contrast reversed).
DARK_BLOB = ParticleSpec(shape="sphere", width_nm=44.0, motion=MotionSpec(kind="static"))
BRIGHT_BLOB = ParticleSpec(shape="sphere", width_nm=48.0, mean_free_path_nm=300.0, motion=MotionSpec(kind="static"))


def background_e(spec: SimulationSpec) -> float:
    """Expected electrons in a particle-free pixel of ``spec``."""
    from sam4em_live.sim.optics import background_electrons

    return background_electrons(spec.imaging, spec.cell)


def _waypoints(xy: np.ndarray) -> tuple[tuple[float, float, float], ...]:
    return tuple((float(t), float(x), float(y)) for t, (x, y) in enumerate(xy))


def _sim_path(particle: ParticleSpec, region: tuple[float, float, float, float], n: int,
              rng: np.random.Generator) -> np.ndarray:
    """The simulator's hop model, reflected inside ``region`` = (x0, y0, width, height): (n, 2) positions."""
    x0, y0, w, h = region
    radius = particle.bounding_radius_nm + 4
    motion = MotionSpec(kind="hops", step_median_nm=3.0, step_log_sigma=0.75, step_max_nm=25.0,
                        boundary="reflect", boundary_margin_px=radius)
    local = particle.model_copy(update={"motion": motion, "start_xy_px": None})
    imaging = ImagingSpec(shape_px=(round(h), round(w)), fps=FPS, exposure_s=1 / FPS)
    poses = ParticleTrajectory(local, imaging, rng, block_frames=n + 2)
    xy = np.array([(p.x_px, p.y_px) for p, _ in zip(poses, range(n), strict=False) if p is not None])
    return xy + np.array([x0, y0])


def place(particles: list[ParticleSpec], motion: str, n: int, rng: np.random.Generator,
          notes: dict[str, str], field_px: int = FIELD_PX) -> list[ParticleSpec]:
    """Give each particle a path in its own vertical strip of the field, from ``motion``."""
    from sam4em_live.sim.real_motion import monet_paths

    strip = field_px / len(particles)
    spin = rotational_diffusion_for_median_turn(5.0, FPS)
    if motion == "monet":
        margin = max(p.bounding_radius_nm for p in particles) + 4
        real = monet_paths(len(particles), n, (strip, field_px), margin, rng)
        notes["motion"] = "MoNet AuNR paths " + ", ".join(f"{p.source} x{p.scale:.2f}" for p in real)
        paths = [p.xy_px + np.array([i * strip, 0.0]) for i, p in enumerate(real)]
    elif motion == "sim":
        paths = [_sim_path(p, (i * strip, 0.0, strip, field_px), n, rng) for i, p in enumerate(particles)]
        notes["motion"] = "simulator hops (median 3 px, <= 25 px)"
    else:
        raise ValueError(f"unknown motion {motion!r}; choose from {MOTIONS}")
    return [p.model_copy(update={"motion": MotionSpec(kind="waypoints", waypoints=_waypoints(xy),
                                                      rotational_diffusion_rad2_per_s=spin)})
            for p, xy in zip(particles, paths, strict=True)]


@dataclass(frozen=True)
class ConditionInfo:
    """A named condition: ``build(seed, n_frames, motion)`` makes its scenario."""

    name: str
    description: str
    build: Callable[[int, int, str], Scenario]
    motions: tuple[str, ...] = MOTIONS


def _scene(name: str, seed: int, n: int, motion: str, *, extras: tuple[ParticleSpec, ...] = (),
           imaging: ImagingSpec | None = None, finish: Finish | None = None, **scenario: object) -> Scenario:
    """The base scene: unprompted ``extras`` first (drawn under), then the prompted rod and sphere."""
    rng = np.random.default_rng([seed, 16])
    notes: dict[str, str] = {}
    tracked = place([ROD, SPHERE], motion, n, rng, notes)
    spec = SimulationSpec(name=name, imaging=imaging or base_imaging(), cell=LiquidCellSpec(water_thickness_nm=50.0),
                          particles=(*extras, *tracked))
    prompted = tuple(range(len(extras) + 1, len(extras) + 3))
    return Scenario(name, spec, prompted, n, finish=finish or default_finish, notes=notes, **scenario)  # type: ignore[arg-type]


def clean(seed: int, n: int, motion: str) -> Scenario:
    """The base scene as the simulator makes it."""
    return _scene("clean", seed, n, motion)


def bright_on_dark(seed: int, n: int, motion: str) -> Scenario:
    """Contrast inverted after detection: bright particles on a dark background, same noise."""
    level = background_e(SimulationSpec(imaging=base_imaging(), cell=LiquidCellSpec(water_thickness_nm=50.0)))

    def finish(electrons: np.ndarray, index: int) -> np.ndarray:
        return default_finish(degrade.invert_contrast(electrons, level), index)

    return _scene("bright-on-dark", seed, n, motion, finish=finish)


def jpeg(seed: int, n: int, motion: str, quality: int = 80) -> Scenario:
    """8-bit frames (background at 128) through a JPEG encoder at ``quality`` and back."""
    level = background_e(SimulationSpec(imaging=base_imaging(), cell=LiquidCellSpec(water_thickness_nm=50.0)))

    def finish(electrons: np.ndarray, index: int) -> np.ndarray:
        return degrade.jpeg_roundtrip(degrade.to_uint8(electrons, 128.0 / level), quality)

    return _scene("jpeg", seed, n, motion, finish=finish)


def gradient_vignette(seed: int, n: int, motion: str) -> Scenario:
    """A 60 % linear ramp times a vignette 50 % darker in the corners, applied to the detected image."""
    light = degrade.illumination_map((FIELD_PX, FIELD_PX), 0.6, 30.0, 0.5)

    def finish(electrons: np.ndarray, index: int) -> np.ndarray:
        return default_finish(electrons * light, index)

    return _scene("gradient-vignette", seed, n, motion, finish=finish)


def stage_drift(seed: int, n: int, motion: str) -> Scenario:
    """The whole field drifts 108 px out and back along a diagonal, with 0.3 px jitter per frame."""
    rng = np.random.default_rng([seed, 17])
    phase = np.sin(np.pi * np.arange(n) / max(n - 1, 1))
    offsets = np.column_stack([100 * phase, 40 * phase]) + rng.normal(0, 0.3, (n, 2))
    offsets[0] = 0.0
    return _scene("stage-drift", seed, n, motion, stage_offsets_px=offsets)


def dose_steps(seed: int, n: int, motion: str) -> Scenario:
    """Dose ×0.45 from 30 % of the clip, ×1.6 from 60 %; the beam blanked (×0.02) on three frames."""
    doses = np.ones(n)
    doses[int(0.3 * n):] = 0.45
    doses[int(0.6 * n):] = 1.6
    for frac in (0.45, 0.46, 0.75):
        doses[min(int(frac * n), n - 1)] = 0.02
    return _scene("dose-steps", seed, n, motion, dose_factors=doses)


def defocus(seed: int, n: int, motion: str) -> Scenario:
    """Out of focus: the projected thickness convolved with a 6 px disk (the truth stays sharp)."""
    return _scene("defocus", seed, n, motion, imaging=base_imaging(defocus_disk_radius_nm=6.0))


def static_blobs(seed: int, n: int, motion: str) -> Scenario:
    """Static dark and bright blobs: two cut by the image edges, one of each inside the field.

    The inner ones start at least `BLOB_CLEARANCE_PX` from the tracked particles, so the prompt is on a
    lone particle; the particles may wander onto them later.
    """
    rng = np.random.default_rng([seed, 18])
    starts = [p.motion.waypoints[0][1:] for p in _scene("probe", seed, n, motion).spec.particles]
    inner: list[np.ndarray] = []
    while len(inner) < 2:
        xy = rng.uniform(50, FIELD_PX - 50, 2)
        if all(math.dist(xy, start) >= BLOB_CLEARANCE_PX for start in starts):
            inner.append(xy)
    blobs = (DARK_BLOB.model_copy(update={"start_xy_px": (-6.0, float(rng.uniform(40, 216)))}),
             BRIGHT_BLOB.model_copy(update={"start_xy_px": (float(rng.uniform(40, 216)), FIELD_PX + 4.0)}),
             DARK_BLOB.model_copy(update={"start_xy_px": (float(inner[0][0]), float(inner[0][1]))}),
             BRIGHT_BLOB.model_copy(update={"start_xy_px": (float(inner[1][0]), float(inner[1][1]))}))
    return _scene("static-blobs", seed, n, motion, extras=blobs)


def fade_edge_artifact(seed: int, n: int, motion: str) -> Scenario:
    """The reported failure: the rod fades out and back while a static dark blob sits at the far edge.

    The rod fades over 30–38 % of the clip, stays invisible to 58 % and is back at 66 %; the blob (gold,
    44 nm, about the rod's contrast) is cut by the right edge.
    """
    edge = DARK_BLOB.model_copy(update={"start_xy_px": (FIELD_PX + 2.0, FIELD_PX * 0.7)})
    ramp = np.interp(np.arange(n), np.array([0.30, 0.38, 0.58, 0.66]) * n, [1.0, 0.0, 0.0, 1.0])
    visibility = np.ones((n, 3))
    visibility[:, 1] = ramp
    return _scene("fade-edge-artifact", seed, n, motion, extras=(edge,), visibility=visibility)


def leave_field(seed: int, n: int, motion: str) -> Scenario:
    """The rod leaves the field and comes back while a static look-alike and an edge blob stay in view.

    The rod leaves through the left edge (20–30 % of the clip), stays out to 70 %, and comes back; an
    identical unprompted rod lies still 70–90 px (in y) from where it left and a dark blob is cut by that edge.
    A re-acquisition must wait for the rod itself: the static look-alike and the edge blob are in view
    the whole time.
    """
    rng = np.random.default_rng([seed, 23])
    scene = _scene("leave-field", seed, n, motion)
    rod, sphere = scene.spec.particles
    out = np.interp(np.arange(n), np.array([0.2, 0.3, 0.7, 0.8]) * n, [0.0, 1.0, 1.0, 0.0])
    path = [(t, x - 160.0 * float(out[round(t)]), y) for t, x, y in rod.motion.waypoints]
    leaving = rod.model_copy(update={"motion": rod.motion.model_copy(update={"waypoints": tuple(path)})})
    exit_y = path[round(0.2 * n)][2]
    twin_y = float(np.clip(exit_y + rng.choice([-1, 1]) * rng.uniform(70, 90), 40, FIELD_PX - 40))
    twin = ROD.model_copy(update={"start_xy_px": (70.0, twin_y), "start_angle_deg": float(rng.uniform(-90, 90)),
                                  "motion": MotionSpec(kind="static")})
    edge = DARK_BLOB.model_copy(update={"start_xy_px": (-4.0, float(np.clip(exit_y, 30, FIELD_PX - 30)))})
    spec = scene.spec.model_copy(update={"particles": (twin, edge, leaving, sphere)})
    return Scenario("leave-field", spec, (3, 4), n, notes=scene.notes)


def distractors(seed: int, n: int, motion: str) -> Scenario:
    """Two unprompted particles like the tracked ones, hopping across the whole field."""
    rng = np.random.default_rng([seed, 19])
    extras = []
    for like in (ROD, SPHERE):
        xy = _sim_path(like, (0.0, 0.0, FIELD_PX, FIELD_PX), n, rng)
        extras.append(like.model_copy(update={"motion": MotionSpec(kind="waypoints", waypoints=_waypoints(xy))}))
    return _scene("distractors", seed, n, motion, extras=tuple(extras))


def touching(seed: int, n: int, motion: str = "scripted") -> Scenario:
    """Two prompted 40 nm spheres approach, touch (gap 0–1 px) for ~20 % of the clip and separate."""
    rng = np.random.default_rng([seed, 20])
    t = np.arange(n) / max(n - 1, 1)
    gap = np.interp(t, [0.0, 0.35, 0.55, 1.0], [60.0, 0.5, 0.5, 60.0])
    centre = np.array([128.0, 128.0]) + rng.normal(0, 0.4, (n, 2)).cumsum(axis=0) * 0.5
    angle = math.radians(float(rng.uniform(0, 180)))
    axis = np.array([math.cos(angle), math.sin(angle)])
    half = (40.0 + gap[:, None]) / 2
    paths = [centre - half * axis, centre + half * axis]
    spheres = tuple(SPHERE.model_copy(update={"motion": MotionSpec(kind="waypoints", waypoints=_waypoints(xy))})
                    for xy in paths)
    spec = SimulationSpec(name="touching", imaging=base_imaging(), cell=LiquidCellSpec(water_thickness_nm=50.0),
                          particles=spheres)
    return Scenario("touching", spec, (1, 2), n, notes={"motion": "scripted approach, contact, separation"})


def foreign_finish(seed: int) -> Finish:
    """The foreign detector model (`foreign_noise`) as a finish of a noise-free expected image (uint16)."""
    rng = np.random.default_rng([seed, 21])
    texture = degrade.fractal_texture((FIELD_PX, FIELD_PX), 2.0, rng)
    gains = degrade.quadrant_gains((FIELD_PX, FIELD_PX), (0.97, 1.02, 1.0, 1.04))

    def finish(mean: np.ndarray, index: int) -> np.ndarray:
        electrons = degrade.foreign_detector(mean, rng, texture=texture, texture_fraction=0.03, psf_sigma_px=0.8,
                                             read_noise_e=4.0, gains=gains)
        return degrade.to_uint16(electrons, DEFAULT_ADU_PER_E)

    return finish


def foreign_noise(seed: int, n: int, motion: str) -> Scenario:
    """Noise not from our model, applied to the noise-free expected image.

    1/f texture (amplitude spectrum ∝ 1/f, power ∝ 1/f², 3 % rms), Poisson, a Gaussian PSF σ 0.8 px
    instead of our MTF, read noise 4 e⁻, quadrant gains 0.97/1.02/1.0/1.04.
    """
    imaging = base_imaging(shot_noise="none", mtf=False)
    return _scene("foreign-noise", seed, n, motion, imaging=imaging, finish=foreign_finish(seed))


def _dense(seed: int, n: int, motion: str = "chen") -> Scenario:
    from sam4em_live.sim.dense import dense_field

    return dense_field(seed, n)


CONDITIONS: dict[str, ConditionInfo] = {c.name: c for c in (
    ConditionInfo("clean", "the base scene, dark particles on a bright background, uint16", clean),
    ConditionInfo("bright-on-dark", "contrast inverted (HAADF / dark field), same noise", bright_on_dark),
    ConditionInfo("jpeg", "8-bit JPEG, quality 80 (quantisation and 8x8 blocks)", jpeg),
    ConditionInfo("gradient-vignette", "60 % linear ramp times a vignette 50 % darker at the corners",
                  gradient_vignette),
    ConditionInfo("stage-drift", "whole field drifts 108 px and back, 0.3 px jitter", stage_drift),
    ConditionInfo("dose-steps", "dose x0.45 then x1.6, three beam-blanked frames", dose_steps),
    ConditionInfo("defocus", "out of focus: thickness blurred by a 6 px disk", defocus),
    ConditionInfo("static-blobs", "static dark (gold) and bright (bubble) blobs, two cut by the edge", static_blobs),
    ConditionInfo("fade-edge-artifact", "the rod fades out and back; a static dark blob at the far edge",
                  fade_edge_artifact),
    ConditionInfo("leave-field", "the rod leaves the field for 40 % of the clip; a static look-alike and an edge "
                  "blob stay in view", leave_field),
    ConditionInfo("distractors", "two unprompted moving look-alikes cross the field", distractors),
    ConditionInfo("touching", "two spheres approach, touch and separate", touching, ("scripted",)),
    ConditionInfo("foreign-noise", "1/f texture, Poisson + read noise, Gaussian PSF, quadrant gains", foreign_noise),
    ConditionInfo("dense", "512², ~50 prisms, gaps down to 2 px, 35 isolated prompted; lattice vibration",
                  _dense, ("chen",)),
)}


def get_condition(name: str) -> ConditionInfo:
    """The condition called ``name``; ``ValueError`` naming the choices otherwise."""
    try:
        return CONDITIONS[name]
    except KeyError:
        raise ValueError(f"unknown condition {name!r}; choose from {sorted(CONDITIONS)}") from None
