"""Hard scenes for the discovery benchmark (issue 21): where detection itself is hard.

The robustness conditions (`sam4em_live.sim.conditions`) show two particles 32–61 px across at a median
per-pixel CNR ≈ 1.4; on most of them every detector tuned at all finds everything (F1 1.000 for ours and
trackpy alike). Real LPTEM brings what these scenes add, alone and together:

- **small particles**, 15–20 px across (spheres of 15.5–20 nm at 1 nm/px): a few cells of the detector's
  block mean, and their contrast is lower than a large particle's (less gold in the beam);
- **a per-pixel CNR of 0.5 or 0.4** (the published LPTEM range 0.4–0.65): the dose is set so that the
  median CNR over the clip's first frames (`sam4em_live.sim.optics.frame_contrast`, particles' footprints
  against the background) is the target; shot noise makes CNR ∝ √dose;
- **a gradient and a vignette** (the ``gradient-vignette`` condition's illumination, 60 % ramp, corners 50 %
  darker) on the low-CNR scene;
- **touching neighbours**: pairs of small spheres that approach and then stay 0.5–1.5 px apart over the
  scored frames (a merged blob finds one of two);
- **foreign noise** (the ``foreign-noise`` condition's detector: 1/f texture, Gaussian PSF, read noise,
  quadrant gains) on small particles at the same dose;
- **a crowd**: six spheres 16–36 px across in narrow strips (neighbours pass within a few px), low CNR,
  gradient and vignette.

Every particle is tracked by the simulator (prompted), so the truth is complete. Motion: real (``monet``)
paths in each particle's strip, as in the robustness conditions; the touching pairs are scripted.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from collections.abc import Callable

    from sam4em_live.sim.scenario import Finish, Scenario
    from sam4em_live.sim.spec import ParticleSpec

#: Scenes of this module by name: (diameters in nm = px, target CNR, illumination, noise, layout).
HARD_CONDITIONS = ("small-cnr0.5", "small-cnr0.4", "small-gradient", "small-touching", "small-foreign-noise",
                   "crowd-gradient")
SMALL_DIAMETERS_NM = (15.5, 17.0, 18.5, 20.0)
CROWD_DIAMETERS_NM = (16.0, 36.0, 18.0, 28.0, 20.0, 24.0)
#: Frames rendered to set the dose (the median of their CNR).
CALIBRATION_FRAMES = 20


def _spheres(diameters: tuple[float, ...]) -> list[ParticleSpec]:
    from sam4em_live.sim.spec import ParticleSpec

    return [ParticleSpec(shape="sphere", width_nm=d) for d in diameters]


def _placed(diameters: tuple[float, ...], seed: int, n: int, motion: str) -> tuple[list[ParticleSpec], dict[str, str]]:
    from sam4em_live.sim.conditions import place

    notes: dict[str, str] = {}
    return place(_spheres(diameters), motion, n, np.random.default_rng([seed, 40]), notes), notes


def _touching_pairs(seed: int, n: int) -> list[ParticleSpec]:
    """Two pairs of small spheres (left and right half): 30 px apart at first, touching from 55 % of the clip."""
    from sam4em_live.sim.spec import MotionSpec

    rng = np.random.default_rng([seed, 41])
    t = np.arange(n) / max(n - 1, 1)
    out: list[ParticleSpec] = []
    for half, (a, b) in enumerate(((16.0, 18.0), (17.0, 20.0))):
        gap = np.interp(t, [0.0, 0.55, 1.0], [30.0, 0.5, 1.5])
        start = np.array([64.0 + 128.0 * half, 128.0 + rng.uniform(-40, 40)])
        centre = start + rng.normal(0, 0.5, (n, 2)).cumsum(axis=0) * 0.5
        angle = float(rng.uniform(0, math.pi))
        axis = np.array([math.cos(angle), math.sin(angle)])
        offsets = (a / 2 + gap + b / 2)[:, None] * axis
        for d, xy in ((a, centre - offsets * b / (a + b)), (b, centre + offsets * a / (a + b))):
            waypoints = tuple((float(i), float(x), float(y)) for i, (x, y) in enumerate(xy))
            motion = MotionSpec(kind="waypoints", waypoints=waypoints)
            out.extend(p.model_copy(update={"motion": motion}) for p in _spheres((d,)))
    return out


def _lit_finish() -> Finish:
    from sam4em_live.sim import degrade
    from sam4em_live.sim.conditions import FIELD_PX
    from sam4em_live.sim.scenario import default_finish

    light = degrade.illumination_map((FIELD_PX, FIELD_PX), 0.6, 30.0, 0.5)

    def finish(electrons: np.ndarray, index: int) -> np.ndarray:
        return default_finish(electrons * light, index)

    return finish


def _scenario(name: str, particles: list[ParticleSpec], n: int, dose: float, notes: dict[str, str],
              finish: Finish | None = None, foreign: bool = False) -> Scenario:
    from sam4em_live.sim.scenario import Scenario, base_imaging, default_finish
    from sam4em_live.sim.spec import LiquidCellSpec, SimulationSpec

    imaging = base_imaging(dose=dose, shot_noise="none", mtf=False) if foreign else base_imaging(dose=dose)
    spec = SimulationSpec(name=name, imaging=imaging, cell=LiquidCellSpec(water_thickness_nm=50.0),
                          particles=tuple(particles))
    return Scenario(name, spec, tuple(range(1, len(particles) + 1)), n, finish=finish or default_finish, notes=notes)


def median_cnr(frames: np.ndarray, labels: np.ndarray) -> float:
    """Median per-pixel CNR of ``frames`` (particles' footprints in ``labels`` against the background)."""
    from sam4em_live.sim.optics import frame_contrast

    values = [frame_contrast(f, lab)[0] for f, lab in zip(frames, labels, strict=True)]
    finite = [v for v in values if math.isfinite(v)]
    return float(np.median(finite)) if finite else math.nan


@functools.cache
def dose_for_cnr(diameters: tuple[float, ...], cnr: float, motion: str) -> float:
    """The dose (e/Å²s) at which spheres of ``diameters`` show a median per-pixel CNR of ``cnr`` (flat field).

    Rendered with the default finish (seed 0), twice: CNR ∝ √dose under shot noise, and the second rendering
    corrects the first's estimate.
    """
    from sam4em_live.sim.scenario import BASE_DOSE, render_scenario

    particles, notes = _placed(diameters, 0, CALIBRATION_FRAMES, motion)
    dose = BASE_DOSE
    for _ in range(2):
        clip = render_scenario(_scenario("calibration", particles, CALIBRATION_FRAMES, dose, notes), 0)
        dose *= (cnr / median_cnr(clip.frames, clip.gt_labels)) ** 2
    return dose


def build_hard(name: str, seed: int, n: int, motion: str) -> Scenario:
    """The hard scene ``name`` (module doc) for ``seed``, ``n`` frames, ``motion`` (``monet`` or ``sim``)."""
    from sam4em_live.sim.conditions import foreign_finish

    builders: dict[str, Callable[[], Scenario]] = {
        "small-cnr0.5": lambda: _small(name, seed, n, motion, 0.5),
        "small-cnr0.4": lambda: _small(name, seed, n, motion, 0.4),
        "small-gradient": lambda: _small(name, seed, n, motion, 0.5, finish=_lit_finish()),
        "small-foreign-noise": lambda: _small(name, seed, n, motion, 0.5, finish=foreign_finish(seed), foreign=True),
        "small-touching": lambda: _scenario(name, _touching_pairs(seed, n), n,
                                            dose_for_cnr(SMALL_DIAMETERS_NM, 0.5, motion),
                                            {"motion": "scripted pairs, touching from 55 % of the clip"}),
        "crowd-gradient": lambda: _crowd(name, seed, n, motion),
    }
    try:
        return builders[name]()
    except KeyError:
        raise ValueError(f"unknown hard condition {name!r}; choose from {HARD_CONDITIONS}") from None


def _small(name: str, seed: int, n: int, motion: str, cnr: float, finish: Finish | None = None,
           foreign: bool = False) -> Scenario:
    particles, notes = _placed(SMALL_DIAMETERS_NM, seed, n, motion)
    scenario = _scenario(name, particles, n, dose_for_cnr(SMALL_DIAMETERS_NM, cnr, motion), notes, finish, foreign)
    return dataclasses.replace(scenario, notes={**notes, "target_cnr": f"{cnr}"})


def _crowd(name: str, seed: int, n: int, motion: str) -> Scenario:
    """Six spheres at the dose of ``small-cnr0.5``: the small ones at CNR ≈ 0.5, the larger ones higher."""
    particles, notes = _placed(CROWD_DIAMETERS_NM, seed, n, motion)
    return _scenario(name, particles, n, dose_for_cnr(SMALL_DIAMETERS_NM, 0.5, motion), notes, _lit_finish())
