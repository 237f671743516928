"""Motion measured on real LPTEM videos, to drive simulated particles (positions only, no images).

Two public data sets (see ``shared/data/trajectories/README.md``; both MIT):

- ``monet_aunr_lctem.csv`` (Jamali et al., PNAS 2021): 459 gold-nanorod trajectories of 300 frames in
  liquid-cell TEM — heavy-tailed steps (median 3.9, 99th percentile 35 source units), pauses, anomalous
  diffusion. Used as single-particle paths.
- ``chen_lptem_assemblies_raw.csv`` (Chen lab, UIUC): particles vibrating in self-assembled lattices,
  raw tracker output. Used, after removing the common drift and each particle's mean position, as the
  small displacements of particles in a dense field.

Units: the sources do not state them (pixels of the original videos are likely). A MoNet path is used in
source units as pixels (scale 1) when it fits the region it is given, and is otherwise shrunk uniformly
until it fits; the scale applied is returned so a report can state it. Chen displacements are multiplied
by a caller-given scale (the dense field maps a ~1000-unit lattice onto 512 px: 0.5).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd

#: Environment variable naming the folder of the trajectory files (default: ``../shared/data/trajectories``
#: beside the repository).
TRAJECTORY_DIR_ENV = "SAM4EM_TRAJECTORY_DIR"
MONET_FILE = "monet_aunr_lctem.csv"
CHEN_FILE = "chen_lptem_assemblies_raw.csv"


def trajectory_dir() -> Path:
    """The folder of the real trajectory files: ``$SAM4EM_TRAJECTORY_DIR`` or ``<repo>/../shared/data/trajectories``."""
    if os.environ.get(TRAJECTORY_DIR_ENV):
        return Path(os.environ[TRAJECTORY_DIR_ENV])
    return Path(__file__).resolve().parents[3] / "shared" / "data" / "trajectories"


def real_trajectories_available() -> bool:
    """Whether both trajectory files are in `trajectory_dir`."""
    folder = trajectory_dir()
    return (folder / MONET_FILE).is_file() and (folder / CHEN_FILE).is_file()


@dataclass(frozen=True)
class RealPath:
    """One measured path placed in a region: ``xy_px`` (n_frames, 2) in region pixels, ``scale`` px per unit."""

    source: str
    xy_px: np.ndarray
    scale: float


@lru_cache(maxsize=2)
def _read(name: str) -> pd.DataFrame:
    path = trajectory_dir() / name
    if not path.is_file():
        raise FileNotFoundError(f"real LPTEM trajectories not found at {path} (set ${TRAJECTORY_DIR_ENV})")
    return pd.read_csv(path)


def monet_paths(count: int, n_frames: int, region_wh_px: tuple[float, float], margin_px: float,
                rng: np.random.Generator) -> list[RealPath]:
    """``count`` distinct MoNet rod paths of ``n_frames`` frames, each placed inside a region of that size.

    A path starts at a random frame of its trajectory; it keeps its source units as pixels when its extent
    fits ``region − 2 margin`` and is shrunk to fit otherwise; its bounding box is centred in the region.
    """
    table = _read(MONET_FILE)
    lengths = table.groupby("trajectory")["frame"].count()
    candidates = lengths[lengths >= n_frames].index.to_numpy()
    if candidates.size < count:
        raise ValueError(f"only {candidates.size} MoNet trajectories have {n_frames} frames")
    chosen = rng.choice(candidates, size=count, replace=False)
    usable = np.maximum(np.asarray(region_wh_px, dtype=np.float64) - 2 * margin_px, 1.0)
    out = []
    for trajectory in chosen:
        rows = table[table["trajectory"] == trajectory].sort_values("frame")
        start = int(rng.integers(0, len(rows) - n_frames + 1))
        xy = rows[["x", "y"]].to_numpy(dtype=np.float64)[start : start + n_frames]
        lo, hi = xy.min(axis=0), xy.max(axis=0)
        scale = float(min(1.0, *(usable / np.maximum(hi - lo, 1e-9))))
        placed = (xy - (lo + hi) / 2) * scale + np.asarray(region_wh_px) / 2
        out.append(RealPath(f"monet:{int(trajectory)}@{start}", placed, scale))
    return out


def chen_vibrations(count: int, n_frames: int, scale: float, rng: np.random.Generator,
                    assembly: str = "Rod") -> np.ndarray:
    """(count, n_frames, 2) displacements (px) of particles in a real lattice: drift and mean removed.

    Particles tracked on every frame of ``assembly`` are drawn at random (with replacement when there are
    fewer than ``count``); series shorter than ``n_frames`` are played forwards then backwards.
    """
    table = _read(CHEN_FILE)
    table = table[table["assembly"] == assembly]
    n_source = int(table["frame"].nunique())
    complete = table.groupby("particle")["frame"].nunique()
    ids = complete[complete == n_source].index.to_numpy()
    table = table[table["particle"].isin(ids)].sort_values(["particle", "frame"])
    xy = table[["x", "y"]].to_numpy(dtype=np.float64).reshape(len(ids), n_source, 2)
    xy -= xy.mean(axis=0, keepdims=True)  # the lattice's common drift, frame by frame
    xy -= xy.mean(axis=1, keepdims=True)  # each particle's site
    picks = rng.choice(len(ids), size=count, replace=len(ids) < count)
    period = np.concatenate([np.arange(n_source), np.arange(n_source - 2, 0, -1)]) if n_source > 1 else [0]
    frames = np.asarray(period)[np.arange(n_frames) % len(period)]
    return xy[picks][:, frames, :] * scale
