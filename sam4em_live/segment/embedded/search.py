"""Pose search: translation x rotation matched filtering, coarse to fine.

1. Coarse: the window is block-averaged ``coarse_factor`` x and correlated (FFT)
   with the zero-mean template at every ``coarse_angle_step_deg`` over the
   shape's symmetry period. Scores are in noise sigmas (z); a heavy-tailed
   step prior and a Gaussian turn prior (a few z at most) keep identities when
   similar particles pass close, without overriding clear evidence.
2. Fine: around the coarse optimum, direct dot products at ``fine_factor`` x
   sampling with templates every ``fine_angle_step_deg``; a parabola through
   the neighbours gives sub-cell position and angle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy import fft as sfft

from sam4em_live.segment.embedded.shape import ShapeMemory
from sam4em_live.segment.embedded.window import Window, block_mean, robust_noise


@dataclass(frozen=True, slots=True)
class MotionPrior:
    """Where the particle is expected (frame pixels, degrees) and how strongly to believe it.

    Penalties are in match z units: ``step_weight * log(1 + d² / step_scale²)``
    (Cauchy-like, so 40 px hops stay affordable) plus
    ``turn_weight * Δθ² / (2 turn_sigma²)``. Weights 0 disable the prior (re-acquisition).
    """

    x: float
    y: float
    angle_deg: float
    radius_px: float
    step_scale_px: float
    turn_sigma_deg: float
    step_weight: float
    turn_weight: float


@dataclass(frozen=True, slots=True)
class PoseEstimate:
    """Best pose (frame pixels, degrees), its match z-score and contrast amplitude."""

    x: float
    y: float
    angle_deg: float
    z: float
    amplitude: float


def _angle_gap(angles: np.ndarray, reference: float, period: float) -> np.ndarray:
    gap = np.mod(angles - reference + period / 2, period) - period / 2
    return np.abs(gap)


def _prior_penalty(xs: np.ndarray, ys: np.ndarray, angles: np.ndarray, prior: MotionPrior,
                   period: float) -> np.ndarray:
    """Negative log prior (z units) on a grid: angles (A,) x positions (P,), returns (A, P)."""
    dist2 = (xs - prior.x) ** 2 + (ys - prior.y) ** 2
    pos = prior.step_weight * np.log1p(dist2 / prior.step_scale_px**2)
    pos = np.where(dist2 <= prior.radius_px**2, pos, np.inf)
    if period <= 0:
        ang = np.zeros(angles.shape, np.float32)
    else:
        ang = prior.turn_weight * _angle_gap(angles, prior.angle_deg, period) ** 2 / (2 * prior.turn_sigma_deg**2)
    return (ang[:, None] + pos[None, :]).astype(np.float32)


#: Floor on the visible fraction of template energy (avoids dividing by ~0 far outside the frame).
MIN_VISIBLE_ENERGY = 0.05


def coarse_search(coarse: np.ndarray, x0: int, y0: int, memory: ShapeMemory, prior: MotionPrior,
                  valid: np.ndarray | None = None) -> tuple[float, float, float] | None:
    """Best (x, y, angle) on the coarse grid, or None if no position lies within the prior's radius.

    ``coarse`` is the block-mean contrast of the square window whose top-left
    full-resolution pixel is (x0, y0). ``valid`` (block-mean of the in-frame,
    unclaimed indicator) makes the match a masked one: z is normalised by the
    template energy over valid pixels only, so a particle half out of the
    frame is found where it is, not pulled inside.
    """
    factor = memory.coarse_factor
    cells = coarse.shape[0]
    angles, spectra, norms, size, energy_spectra = memory.coarse_bank(cells)
    size = int(size)
    sigma = memory.noise_level(factor, lambda: robust_noise(coarse, valid))
    corr = sfft.irfft2(spectra * sfft.rfft2(coarse, workers=1)[None], s=(cells, cells), workers=1)
    n_valid = cells - size + 1
    if valid is None:
        z = corr[:, :n_valid, :n_valid] / (sigma * norms[:, None, None])
    else:
        energy = sfft.irfft2(energy_spectra * sfft.rfft2(valid, workers=1)[None], s=(cells, cells), workers=1)
        floor = (MIN_VISIBLE_ENERGY * norms**2)[:, None, None]
        z = corr[:, :n_valid, :n_valid] / (sigma * np.sqrt(np.maximum(energy[:, :n_valid, :n_valid], floor)))
    valid = n_valid
    grid_x, grid_y = _grid(valid, factor, (size - 1) / 2 * factor + (factor - 1) / 2)
    xs, ys = grid_x + np.float32(x0), grid_y + np.float32(y0)
    objective = z.reshape(angles.size, -1) - _prior_penalty(xs, ys, angles, prior, memory.period_deg)
    best = int(np.argmax(objective))
    k, p = divmod(best, valid * valid)
    if not np.isfinite(objective.flat[best]):
        return None
    return float(xs[p]), float(ys[p]), float(angles[k])


@lru_cache(maxsize=64)
def _grid(cells: int, factor: int, offset: float) -> tuple[np.ndarray, np.ndarray]:
    """Raveled (x, y) of a cells x cells grid with spacing ``factor`` starting at ``offset``."""
    axis = np.arange(cells, dtype=np.float32) * factor + np.float32(offset)
    return np.tile(axis, cells), np.repeat(axis, cells)


def _parabola(m: float, c: float, p: float) -> float:
    """Vertex offset of the parabola through (-1, m), (0, c), (1, p), clipped to +-0.5."""
    denom = m - 2 * c + p
    if not np.isfinite(denom) or denom >= 0:
        return 0.0
    return float(np.clip(0.5 * (m - p) / denom, -0.5, 0.5))


def _fine_reach(memory: ShapeMemory) -> int:
    """Fine cells searched either side of the coarse optimum: half a coarse cell plus one for the parabola."""
    return max(1, math.ceil(memory.coarse_factor / (2 * memory.fine_factor))) + 1


def fine_window_extent(memory: ShapeMemory, x: float, y: float) -> tuple[int, int, int]:
    """Top-left (x0, y0) and edge of the full-resolution window `fine_search` needs around (x, y)."""
    factor = memory.fine_factor
    reach = _fine_reach(memory)
    cells = 2 * (int(math.ceil(memory.support_px / factor)) + reach + 1) + 1
    offset = (cells - 1) / 2 * factor + (factor - 1) / 2
    return int(round(x - offset)), int(round(y - offset)), cells * factor


def fine_search(window: Window, memory: ShapeMemory, start: tuple[float, float, float],
                prior: MotionPrior) -> PoseEstimate:
    """Refine a coarse pose by direct matching at the fine level, with sub-cell interpolation.

    ``window`` is the full-resolution contrast at `fine_window_extent` of the start.
    """
    factor = memory.fine_factor
    fine = block_mean(window.darkness, factor)
    fine_valid = None if window.valid.all() else block_mean(window.valid, factor)
    sigma = memory.noise_level(factor, lambda: robust_noise(fine, fine_valid))
    step = memory.fine_step_deg()
    span = int(math.ceil(memory.options.coarse_angle_step_deg / 2 / step)) if memory.period_deg > 0 else 0
    centre_index = int(round(start[2] / step)) if step > 0 else 0
    indices = np.arange(centre_index - span, centre_index + span + 1)
    templates, norms, gains, size = memory.fine_bank(indices)
    half = (size - 1) // 2
    offset = (factor - 1) / 2
    reach = _fine_reach(memory)
    cx = int(round((start[0] - window.x0 - offset) / factor))
    cy = int(round((start[1] - window.y0 - offset) / factor))
    limit = fine.shape[0] - size
    cols = np.clip(np.arange(cx - reach, cx + reach + 1) - half, 0, limit)
    rows = np.clip(np.arange(cy - reach, cy + reach + 1) - half, 0, limit)
    views = sliding_window_view(fine, (size, size))
    patches = views[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].reshape(-1, size * size)
    scores = patches @ templates.T  # (positions, angles)
    n_rows, n_cols = rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1
    if window.valid.all():
        energy = np.broadcast_to(norms[None, :] ** 2, scores.shape)
    else:  # masked match: template energy over in-frame, unclaimed pixels only
        valid_views = sliding_window_view(fine_valid, (size, size))
        valid_patches = valid_views[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1].reshape(-1, size * size)
        energy = np.maximum(valid_patches @ (templates**2).T, MIN_VISIBLE_ENERGY * norms[None, :] ** 2)
    z = (scores / (sigma * np.sqrt(energy))).T  # (angles, positions)
    gains = energy * (gains / norms**2)[None, :]  # gain over the visible part
    grid_x = window.x0 + (np.arange(cols[0], cols[-1] + 1) + half) * factor + offset
    grid_y = window.y0 + (np.arange(rows[0], rows[-1] + 1) + half) * factor + offset
    xs = np.broadcast_to(grid_x[None, :], (n_rows, n_cols)).ravel().astype(np.float32)
    ys = np.broadcast_to(grid_y[:, None], (n_rows, n_cols)).ravel().astype(np.float32)
    angle_values = (indices * step).astype(np.float32)
    objective = z - _prior_penalty(xs, ys, angle_values, prior, memory.period_deg)
    a, p = np.unravel_index(int(np.argmax(objective)), objective.shape)
    r, c = divmod(int(p), n_cols)
    surface = objective[a].reshape(n_rows, n_cols)
    dx = _parabola(surface[r, c - 1], surface[r, c], surface[r, c + 1]) if 0 < c < n_cols - 1 else 0.0
    dy = _parabola(surface[r - 1, c], surface[r, c], surface[r + 1, c]) if 0 < r < n_rows - 1 else 0.0
    da = _parabola(objective[a - 1, p], objective[a, p], objective[a + 1, p]) if 0 < a < len(indices) - 1 else 0.0
    return PoseEstimate(
        x=float(grid_x[c] + dx * factor),
        y=float(grid_y[r] + dy * factor),
        angle_deg=float(angle_values[a] + da * step),
        z=float(z[a, p]),
        amplitude=float(scores[p, a] / max(gains[p, a], 1e-9)),
    )


