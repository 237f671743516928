"""A scenario: a simulation plus what happens to it frame by frame, rendered with presence-aware truth.

`Scenario` extends a `SimulationSpec` with per-frame stage offsets (drift of the whole field), dose factors
(dose changes, beam blanking), per-particle visibility (fading along the beam), a ``finish`` step that turns
the rendered electrons into detector frames (`sam4em_live.sim.degrade`), and the ids of the particles a
user prompts; the others (static blobs, distractors) are in the image but nobody tracks them.

`render_scenario` returns a `ScenarioClip` whose truth says, for every prompted particle on every frame,
whether it can be seen:

- ``visible``: in the field, visibility ≥ `VISIBLE_AT`, at least `VISIBLE_AREA_FRACTION` of its footprint
  inside the frame, and the beam on — a tracker must report it;
- ``absent``: out of the field, faded to ≤ `ABSENT_AT`, or the beam blanked — reporting it is *false
  presence*;
- ``ambiguous``: in between (half faded, mostly cut by the edge) — neither a miss nor a false presence.

The label stack holds visible prompted particles only. Positions are frame pixels, x = column, y = row;
a particle cut by the frame edge is at the centroid of its part inside the frame (what an image can
show), found from its footprint (rods, spheres and cubes are symmetric under the 180° fold of the
truth angle; a prism cut by the edge would not be — the scenes keep prompted prisms inside).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from sam4em_live.particles import Prompt
from sam4em_live.sim.degrade import to_uint16
from sam4em_live.sim.shapes import render_thickness
from sam4em_live.sim.spec import ImagingSpec
from sam4em_live.sim.video import SimulationRun, point_on_mask

if TYPE_CHECKING:
    from sam4em_live.sim.spec import SimulationSpec

#: Visibility (thickness factor) from which a particle counts as visible, and at or below which as absent.
VISIBLE_AT, ABSENT_AT = 0.5, 0.15
#: Dose factor below which the beam counts as blanked (nothing is visible).
BLANKED_BELOW = 0.1
#: Fraction of a particle's full footprint that must be inside the frame for it to count as visible.
VISIBLE_AREA_FRACTION = 0.3
#: A particle with less of its footprint in the frame is cut by the edge: its truth position becomes the
#: centroid of the part inside the frame (the full footprint's centroid cannot be measured from the image).
WHOLE_FOOTPRINT = 0.98
#: Detector gain of the default finish: ADU per electron (uint16, as the presets use).
DEFAULT_ADU_PER_E = 8.0

#: Imaging of the scenes: 80 fps, 4x the SAM4EM dose (e-/Å²s), the demo preset's.
FPS, BASE_DOSE = 80.0, 140.0

Finish = Callable[[np.ndarray, int], np.ndarray]
TRUTH_STATE_COLUMNS = ("frame", "particle", "x", "y", "area", "full_area", "radius_px", "visibility", "state")


def base_imaging(shape_px: int = 256, dose: float = BASE_DOSE, **update: object) -> ImagingSpec:
    """Electron-valued square imaging (float32, gain 1): the scenario's ``finish`` makes the detector frame."""
    imaging = ImagingSpec(shape_px=(shape_px, shape_px), fps=FPS, exposure_s=1 / FPS, dose_rate_e_per_A2s=dose,
                          output_dtype="float32", adu_per_electron=1.0)
    return imaging.model_copy(update=update) if update else imaging


def default_finish(electrons: np.ndarray, index: int) -> np.ndarray:
    """Electrons to uint16 at `DEFAULT_ADU_PER_E` (what the simulator's presets write)."""
    return to_uint16(electrons, DEFAULT_ADU_PER_E)


@dataclass(frozen=True)
class Scenario:
    """One clip's worth of conditions (see module docstring). Arrays are per frame (and per particle).

    ``spec`` must render electrons (``output_dtype="float32"``, ``adu_per_electron=1``); ``finish`` makes
    the detector frame. ``prompted`` are 1-based particle ids; ``prompt_frame`` is where they are prompted.
    """

    name: str
    spec: SimulationSpec
    prompted: tuple[int, ...]
    n_frames: int
    stage_offsets_px: np.ndarray | None = None  # (T, 2) x, y
    dose_factors: np.ndarray | None = None  # (T,)
    visibility: np.ndarray | None = None  # (T, n_particles)
    finish: Finish = default_finish
    prompt_frame: int = 0
    notes: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ScenarioClip:
    """A rendered scenario: detector frames, labels of visible prompted particles, truth with states."""

    scenario: Scenario
    seed: int
    frames: np.ndarray  # (T, H, W) detector dtype
    gt_labels: np.ndarray  # (T, H, W) uint16
    truth: pd.DataFrame  # TRUTH_STATE_COLUMNS, one row per prompted particle per frame (x, y NaN when out)

    def prompts(self, kind: str = "point") -> list[Prompt]:
        """One prompt per prompted particle visible on the prompt frame, drawn as a user would (`PROMPT_KINDS`).

        ``point``: on the true centroid; ``point-edge``: on the particle 2 px inside its outline, in a
        direction that differs between particles; ``box``: the tight bounding box (the particle touches all
        four sides, SAM 2's convention); ``box-loose``: that box grown by a quarter of its size on every side.
        """
        if kind not in PROMPT_KINDS:
            raise ValueError(f"prompt kind must be one of {PROMPT_KINDS}, got {kind!r}")
        frame = self.scenario.prompt_frame
        rows = self.truth[(self.truth["frame"] == frame) & (self.truth["state"] == "visible")]
        out = []
        for particle, x, y in zip(rows["particle"].to_numpy(dtype=np.int64), rows["x"].to_numpy(dtype=float),
                                  rows["y"].to_numpy(dtype=float), strict=True):
            mask = self.gt_labels[frame] == particle
            if mask.any():
                out.append(_prompt(kind, int(particle), frame, mask, float(x), float(y)))
        return out


PROMPT_KINDS = ("point", "point-edge", "box", "box-loose")


def _prompt(kind: str, particle: int, frame: int, mask: np.ndarray, x: float, y: float) -> Prompt:
    from scipy import ndimage

    from sam4em_live.sim.video import mask_box

    if kind in ("box", "box-loose"):
        x0, y0, x1, y1 = mask_box(mask)
        if kind == "box-loose":
            rows, cols = mask.shape
            grow_x, grow_y = (x1 - x0) / 4, (y1 - y0) / 4
            x0, x1 = max(x0 - grow_x, -0.5), min(x1 + grow_x, cols - 0.5)
            y0, y1 = max(y0 - grow_y, -0.5), min(y1 + grow_y, rows - 0.5)
        return Prompt(particle, frame, box=(x0, y0, x1, y1))
    point = point_on_mask(mask, x, y)
    if kind == "point-edge":
        inner = ndimage.binary_erosion(mask, iterations=2)
        if inner.any():
            ys, xs = np.nonzero(inner)
            angle = math.radians(137.5 * particle)  # golden angle: neighbouring ids point different ways
            k = int(np.argmax((xs - x) * math.cos(angle) + (ys - y) * math.sin(angle)))
            point = (float(xs[k]), float(ys[k]))
    return Prompt(particle, frame, (point,), (1,))


def render_scenario(scenario: Scenario, seed: int) -> ScenarioClip:
    """Render every frame of ``scenario`` with ``seed`` (motion and noise streams as `SimulationRun`)."""
    n = scenario.n_frames
    n_particles = len(scenario.spec.particles)
    offsets = scenario.stage_offsets_px if scenario.stage_offsets_px is not None else np.zeros((n, 2))
    doses = scenario.dose_factors if scenario.dose_factors is not None else np.ones(n)
    visibility = scenario.visibility if scenario.visibility is not None else np.ones((n, n_particles))
    run = SimulationRun(scenario.spec, seed, n, contrast=False)
    rows, cols = run.renderer.shape
    frames: np.ndarray | None = None
    labels = np.zeros((n, rows, cols), dtype=np.uint16)
    seen: list[dict[str, float]] = []
    for t in range(n):
        frame = run.next_frame((float(offsets[t, 0]), float(offsets[t, 1])), float(doses[t]),
                               [float(v) for v in visibility[t]])
        if frame is None:
            break
        pixels = scenario.finish(frame.pixels, t)
        if frames is None:
            frames = np.empty((n, rows, cols), dtype=pixels.dtype)
        frames[t] = pixels
        labels[t] = frame.labels
        seen.extend({"frame": t, **row} for row in frame.truth if int(row["particle"]) in scenario.prompted)
    assert frames is not None
    truth = _truth_states(scenario, pd.DataFrame(seen), doses, visibility)
    visible = truth[truth["state"] == "visible"]
    keep = np.zeros((n, int(max(scenario.prompted)) + 1), dtype=bool)
    keep[visible["frame"].to_numpy(dtype=np.intp), visible["particle"].to_numpy(dtype=np.intp)] = True
    for t in range(n):
        lut = np.zeros(n_particles + 1, dtype=np.uint16)
        ids = np.flatnonzero(keep[t])
        lut[ids] = ids
        labels[t] = lut[labels[t]]
    return ScenarioClip(scenario, int(seed), frames, labels, truth)


def _in_frame_centroid(scenario: Scenario, particle: int, x: float, y: float, angle_deg: float
                       ) -> tuple[float, float]:
    """Centroid of the part of a particle's (sharp) footprint inside the frame: what can be measured of it."""
    spec = scenario.spec
    patch = render_thickness(spec.particles[particle - 1], x, y, 0.0 if math.isnan(angle_deg) else angle_deg,
                             spec.imaging.pixel_size_nm, (int(spec.imaging.shape_px[0]), int(spec.imaging.shape_px[1])))
    if patch is None or not patch.footprint.any():
        return x, y
    rows, cols = np.nonzero(patch.footprint)
    return float(cols.mean()) + patch.x0, float(rows.mean()) + patch.y0


def _truth_states(scenario: Scenario, seen: pd.DataFrame, doses: np.ndarray, visibility: np.ndarray
                  ) -> pd.DataFrame:
    """One row per prompted particle per frame, with its state (see module docstring)."""
    found: dict[tuple[int, int], tuple[float, float, float]] = {}
    angles: dict[tuple[int, int], float] = {}
    if len(seen):
        for t, p, x, y, area in zip(seen["frame"].to_numpy(dtype=np.int64), seen["particle"].to_numpy(dtype=np.int64),
                                    seen["x"].to_numpy(dtype=np.float64), seen["y"].to_numpy(dtype=np.float64),
                                    seen["area"].to_numpy(dtype=np.float64), strict=True):
            found[(int(t), int(p))] = (float(x), float(y), float(area))
        angles = {(int(t), int(p)): float(a) for t, p, a in zip(seen["frame"], seen["particle"], seen["angle"],
                                                                 strict=True)}
    out = []
    for particle in scenario.prompted:
        areas = [v[2] for k, v in found.items() if k[1] == particle]
        full_area = max(areas) if areas else math.nan
        radius = math.sqrt(full_area / math.pi) if areas else math.nan
        for t in range(scenario.n_frames):
            vis = float(visibility[t, particle - 1])
            x, y, area = found.get((t, particle), (math.nan, math.nan, 0.0))
            if 0 < area < WHOLE_FOOTPRINT * full_area:
                x, y = _in_frame_centroid(scenario, particle, x, y, angles[(t, particle)])
            if area <= 0 or vis <= ABSENT_AT or doses[t] < BLANKED_BELOW:
                state = "absent"
            elif vis >= VISIBLE_AT and area >= VISIBLE_AREA_FRACTION * full_area:
                state = "visible"
            else:
                state = "ambiguous"
            out.append({"frame": t, "particle": particle, "x": x, "y": y, "area": area, "full_area": full_area,
                        "radius_px": radius, "visibility": vis, "state": state})
    return pd.DataFrame(out, columns=list(TRUTH_STATE_COLUMNS))
