"""A dense field: ~50 gold prisms on a 512² frame, gaps down to 2 px, vibrating as in a real lattice.

Prisms (edge 60 nm, 30 nm thick, random orientation) are placed one by one at random where their
footprint keeps at least `MIN_GAP_PX` from every placed one (random sequential adsorption), until
`TARGET_PARTICLES` fit or the attempts run out. The `PROMPTED` particles with the widest gap to their
nearest neighbour are prompted (a user prompts the isolated ones); the rest stay unprompted neighbours.
Each particle vibrates about its site with the displacements of a particle of the Chen lab's rod
lattice (`sam4em_live.sim.real_motion.chen_vibrations`, drift and mean removed, source units × 0.5:
a ~1000-unit lattice mapped onto 512 px).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from sam4em_live.sim.scenario import Scenario, base_imaging
from sam4em_live.sim.shapes import render_thickness
from sam4em_live.sim.spec import LiquidCellSpec, MotionSpec, ParticleSpec, SimulationSpec

FIELD_PX = 512
TARGET_PARTICLES = 50
PROMPTED = 35
MIN_GAP_PX = 2
PRISM = ParticleSpec(shape="prism", width_nm=60.0, thickness_nm=30.0)
VIBRATION_SCALE = 0.5


def _place_prisms(rng: np.random.Generator) -> tuple[list[tuple[float, float, float]], np.ndarray]:
    """Sites (x, y, angle) and a label image of the placed footprints."""
    labels = np.zeros((FIELD_PX, FIELD_PX), dtype=np.int32)
    sites: list[tuple[float, float, float]] = []
    margin = PRISM.bounding_radius_nm + 3
    grow = ndimage.generate_binary_structure(2, 1)
    for _ in range(4000):
        if len(sites) == TARGET_PARTICLES:
            break
        x, y = rng.uniform(margin, FIELD_PX - 1 - margin, 2)
        angle = float(rng.uniform(0, 120))
        patch = render_thickness(PRISM, float(x), float(y), angle, 1.0, (FIELD_PX, FIELD_PX))
        if patch is None:
            continue
        pad = MIN_GAP_PX + 1
        sl = (slice(max(patch.y0 - pad, 0), patch.slices[0].stop + pad),
              slice(max(patch.x0 - pad, 0), patch.slices[1].stop + pad))
        local = np.zeros((sl[0].stop - sl[0].start, sl[1].stop - sl[1].start), dtype=bool)
        rows, cols = patch.thickness_nm.shape
        local[patch.y0 - sl[0].start : patch.y0 - sl[0].start + rows,
              patch.x0 - sl[1].start : patch.x0 - sl[1].start + cols] = patch.footprint
        near = ndimage.binary_dilation(local, grow, iterations=MIN_GAP_PX)
        window = labels[sl][: near.shape[0], : near.shape[1]]
        if (window[near[: window.shape[0], : window.shape[1]]] != 0).any():
            continue
        sites.append((float(x), float(y), angle))
        window[local[: window.shape[0], : window.shape[1]]] = len(sites)
    return sites, labels


def _gaps(labels: np.ndarray, count: int) -> np.ndarray:
    """Distance (px) from each particle's footprint to its nearest neighbour's footprint."""
    gaps = np.empty(count)
    for k in range(1, count + 1):
        others = (labels != 0) & (labels != k)
        distance = ndimage.distance_transform_edt(~others)
        gaps[k - 1] = float(distance[labels == k].min())
    return gaps


def dense_field(seed: int, n_frames: int) -> Scenario:
    """The dense-field scenario (see module docstring) for ``seed``."""
    from sam4em_live.sim.real_motion import chen_vibrations

    rng = np.random.default_rng([seed, 22])
    sites, labels = _place_prisms(rng)
    gaps = _gaps(labels, len(sites))
    order = np.argsort(-gaps, kind="stable")
    prompted_sites = set(order[:PROMPTED].tolist())
    vibration = chen_vibrations(len(sites), n_frames, VIBRATION_SCALE, rng)
    unprompted: list[ParticleSpec] = []
    prompted: list[ParticleSpec] = []
    for k, (x, y, angle) in enumerate(sites):
        path = np.array([x, y]) + vibration[k]
        waypoints = tuple((float(t), float(px), float(py)) for t, (px, py) in enumerate(path))
        particle = PRISM.model_copy(update={"start_angle_deg": angle,
                                            "motion": MotionSpec(kind="waypoints", waypoints=waypoints)})
        (prompted if k in prompted_sites else unprompted).append(particle)
    spec = SimulationSpec(name="dense", imaging=base_imaging(FIELD_PX),
                          cell=LiquidCellSpec(water_thickness_nm=50.0), particles=(*unprompted, *prompted))
    ids = tuple(range(len(unprompted) + 1, len(sites) + 1))
    notes = {"motion": f"Chen rod-lattice vibration x{VIBRATION_SCALE}",
             "layout": f"{len(sites)} prisms, smallest gap {gaps.min():.1f} px, "
                       f"prompted gaps >= {gaps[order[min(PROMPTED, len(sites)) - 1]]:.1f} px"}
    return Scenario("dense", spec, ids, n_frames, notes=notes)
