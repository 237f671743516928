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

import importlib
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from numpy.lib.stride_tricks import as_strided
from scipy import fft as sfft

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sam4em_live.segment.embedded.shape import ShapeMemory
    from sam4em_live.segment.embedded.templates import CoarseBank
from sam4em_live.segment.embedded.stacking import stack
from sam4em_live.segment.embedded.window import WindowExtent, robust_noise


def _checked_pocketfft() -> Any:
    """The pocketfft module itself (what `scipy.fft` calls once its argument handling is done), or None.

    A private module of scipy: its place or its call could change with a scipy release. It is used only if
    it is there and its two calls, made as below, give `scipy.fft`'s floats on a probe window here, at import;
    otherwise every transform goes through the public functions (the same floats, ~20 us a call more), never
    an error in the frame loop.
    """
    try:
        module: Any = importlib.import_module("scipy.fft._pocketfft.pypocketfft")
        probe = np.random.default_rng(0).standard_normal((2, 8, 8)).astype(np.float32)
        forward = module.r2c(probe, (1, 2), True, 0, None, 1)
        back = module.c2r(forward, (1, 2), 8, False, 2, None, 1)
        if (np.array_equal(forward, sfft.rfft2(probe, workers=1))
                and np.array_equal(back, sfft.irfftn(forward, s=(8, 8), workers=1))):
            return module
    except Exception:  # any failure means: use the public functions
        pass
    return None


_pocketfft = _checked_pocketfft()

#: Real float dtypes `scipy.fft` hands to pocketfft as they are (native byte order; an aligned array is not copied).
_DIRECT_REAL = (np.dtype(np.float32), np.dtype(np.float64))
_DIRECT_COMPLEX = (np.dtype(np.complex64), np.dtype(np.complex128))


def _rfft2(image: np.ndarray) -> np.ndarray:
    """2-D real FFT of a window: `scipy.fft.rfftn`'s floats (``workers=1``, norm "backward").

    Issue 23: scipy.fft's dispatch and argument handling cost ~20 us a call, more than transforming
    a 24-32 cell window; for an aligned float window they end in this one pocketfft call, made here
    directly (the same call, so the same floats: tests/test_embedded_search_transforms.py). Anything else
    goes through `scipy.fft.rfftn`.
    """
    if _pocketfft is not None and image.ndim == 2 and image.dtype in _DIRECT_REAL and image.flags.aligned:
        return _pocketfft.r2c(image, (0, 1), True, 0, None, 1)
    return sfft.rfftn(image, workers=1)


def _rfft2_stack(images: np.ndarray) -> np.ndarray:
    """`_rfft2` of each image of a stack (N, n, n), in one call: ``scipy.fft.rfft2``'s floats, as `_rfft2`."""
    if _pocketfft is not None and images.ndim == 3 and images.dtype in _DIRECT_REAL and images.flags.aligned:
        return _pocketfft.r2c(images, (1, 2), True, 0, None, 1)
    return sfft.rfft2(images, workers=1)


def _irfft2(spectra: np.ndarray, n: int) -> np.ndarray:
    """Inverse of `_rfft2` over the last two axes of a stack of spectra, to ``n`` x ``n``.

    `scipy.fft.irfftn` with ``s=(n, n)``'s floats; spectra of that shape (the last axis ``n // 2 + 1``,
    nothing to crop or pad) in its one pocketfft call made directly, as in `_rfft2`.
    """
    if (_pocketfft is not None and spectra.ndim >= 2 and spectra.shape[-2:] == (n, n // 2 + 1)
            and spectra.dtype in _DIRECT_COMPLEX and spectra.flags.aligned):
        return _pocketfft.c2r(spectra, (spectra.ndim - 2, spectra.ndim - 1), n, False, 2, None, 1)
    return sfft.irfftn(spectra, s=(n, n), workers=1)


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

    def within(self, radius_px: float) -> MotionPrior:
        """The same prior with another search radius (positional: `dataclasses.replace` costs ~8 us a call)."""
        return MotionPrior(self.x, self.y, self.angle_deg, radius_px, self.step_scale_px, self.turn_sigma_deg,
                           self.step_weight, self.turn_weight)


@dataclass(frozen=True, slots=True)
class FineLevel:
    """Block-mean contrast of the fine-level window whose top-left frame pixel is (x0, y0).

    ``valid`` is the block mean of the in-frame, unclaimed indicator, or None where every pixel is.
    """

    x0: int
    y0: int
    contrast: np.ndarray
    valid: np.ndarray | None


class CoarsePose(NamedTuple):
    """Best pose on the coarse grid, sub-cell refined (frame pixels, degrees): where the fine search starts."""

    x: float
    y: float
    angle_deg: float


@dataclass(frozen=True, slots=True)
class PoseEstimate:
    """Best pose (frame pixels, degrees), its match z-score and contrast amplitude."""

    x: float
    y: float
    angle_deg: float
    z: float
    amplitude: float


def _angle_gap(angle: float, reference: float, period: float) -> float:
    """Absolute difference of two angles (degrees) modulo ``period``."""
    return abs((angle - reference + period / 2) % period - period / 2)


def coarse_correlations(windows: Sequence[np.ndarray], banks: Sequence[CoarseBank]) -> list[np.ndarray]:
    """``irfft2(bank.spectra * rfft2(window))`` for each window and its bank: the correlations of `coarse_search`.

    Windows of one size share one forward and one inverse transform of a stack: the same floats
    as a pair of calls per window (tests/test_embedded_fast_paths.py), in fewer calls into
    scipy.fft, whose argument handling costs more than transforming a 24-32 cell window.
    """
    out: list[np.ndarray] = [np.empty(0)] * len(windows)
    by_size: dict[int, list[int]] = {}
    for i, window in enumerate(windows):
        by_size.setdefault(window.shape[0], []).append(i)
    for cells, members in by_size.items():
        if len(members) == 1:
            i = members[0]
            out[i] = _irfft2(banks[i].spectra * _rfft2(windows[i]), cells)
            continue
        spectra = _rfft2_stack(stack([windows[i] for i in members]))
        counts = [banks[i].spectra.shape[0] for i in members]
        products = np.empty((sum(counts), *spectra.shape[1:]), spectra.dtype)
        start = 0
        for j, i in enumerate(members):
            np.multiply(banks[i].spectra, spectra[j], out=products[start : start + counts[j]])
            start += counts[j]
        correlations = _irfft2(products, cells)
        start = 0
        for j, i in enumerate(members):
            out[i] = correlations[start : start + counts[j]]
            start += counts[j]
    return out


#: Floor on the visible fraction of template energy (avoids dividing by ~0 far outside the frame).
MIN_VISIBLE_ENERGY = 0.05


def coarse_search(coarse: np.ndarray, x0: int, y0: int, memory: ShapeMemory, prior: MotionPrior,
                  valid: np.ndarray | None = None, max_turn_deg: float | None = None,
                  correlation: np.ndarray | None = None, bank: CoarseBank | None = None) -> CoarsePose | None:
    """Best pose on the coarse grid, or None if no position lies within the prior's radius.

    ``coarse`` is the block-mean contrast of the square window whose top-left
    full-resolution pixel is (x0, y0). ``valid`` (block-mean of the in-frame,
    unclaimed indicator) makes the match a masked one: z is normalised by the
    template energy over valid pixels only, so a particle half out of the
    frame is found where it is, not pulled inside. ``max_turn_deg`` limits the
    orientations tried to those within that turn of the prior's angle. ``correlation`` is the
    window's `coarse_correlations` with the bank searched, ``bank`` that bank, when the caller has them already.
    """
    factor = memory.coarse_factor
    cells = coarse.shape[0]
    if bank is None:
        bank = (memory.banks.coarse_bank(cells) if max_turn_deg is None
                else memory.banks.coarse_bank_turning(cells, prior.angle_deg, max_turn_deg))
    angles, norms, size = bank.angles_deg, bank.norms, bank.size
    sigma = memory.noise_level(factor, lambda: robust_noise(coarse, valid))
    corr = correlation if correlation is not None else _irfft2(bank.spectra * _rfft2(coarse)[None], cells)
    n_valid = cells - size + 1
    if valid is None:
        z = corr[:, :n_valid, :n_valid] / (sigma * norms[:, None, None])
    else:
        energy = _irfft2(bank.energy_spectra * _rfft2(valid)[None], cells)
        floor = (MIN_VISIBLE_ENERGY * norms**2)[:, None, None]
        z = corr[:, :n_valid, :n_valid] / (sigma * np.sqrt(np.maximum(energy[:, :n_valid, :n_valid], floor)))
    axis = memory.cell_axis(n_valid, factor, (size - 1) / 2 * factor + (factor - 1) / 2)
    grid_x, grid_y = axis + np.array(x0, np.float32), axis + np.array(y0, np.float32)  # 0-d: see window._ONE
    objective = z.reshape(angles.size, -1) - _prior_penalty(grid_x, grid_y, angles, prior, memory.period_deg)
    best = int(objective.argmax())  # the method: np.argmax adds a Python layer
    k, p = divmod(best, n_valid * n_valid)
    if not math.isfinite(float(objective.flat[best])):
        return None
    r, c = divmod(p, n_valid)
    # Sub-cell position from the objective's curvature, so the fine level can start close and search less.
    surface = objective[k].reshape(n_valid, n_valid)
    dx = _parabola(*surface[r, c - 1 : c + 2].tolist()) if 0 < c < n_valid - 1 else 0.0
    dy = _parabola(*surface[r - 1 : r + 2, c].tolist()) if 0 < r < n_valid - 1 else 0.0
    return CoarsePose(float(grid_x[c]) + dx * factor, float(grid_y[r]) + dy * factor, float(angles[k]))


def _parabola(m: float, c: float, p: float) -> float:
    """Vertex offset of the parabola through (-1, m), (0, c), (1, p), clipped to +-0.5."""
    denom = m - 2 * c + p
    if not math.isfinite(denom) or denom >= 0:
        return 0.0
    return min(max(0.5 * (m - p) / denom, -0.5), 0.5)


def _fine_reach(memory: ShapeMemory) -> int:
    """Fine cells searched either side of the coarse optimum: half a coarse cell plus one for the parabola."""
    return max(1, math.ceil(memory.coarse_factor / (2 * memory.fine_factor))) + 1


def _first_fine_reach(memory: ShapeMemory, full: int) -> int:
    """Fine cells searched first: a quarter coarse cell (the coarse parabola's precision) plus one.

    If the optimum lands on the rim of that square the ``full`` (`_fine_reach`) square is searched.
    """
    return min(max(1, math.ceil(memory.coarse_factor / (4 * memory.fine_factor))) + 1, full)


def fine_window_extent(memory: ShapeMemory, x: float, y: float) -> WindowExtent:
    """The full-resolution window `fine_search` needs around (x, y)."""
    factor = memory.fine_factor
    reach = _fine_reach(memory)
    cells = 2 * (int(math.ceil(memory.support_px / factor)) + reach + 1) + 1
    offset = (cells - 1) / 2 * factor + (factor - 1) / 2
    return WindowExtent(int(round(x - offset)), int(round(y - offset)), cells * factor)


def fine_search(level: FineLevel, memory: ShapeMemory, start: CoarsePose, prior: MotionPrior) -> PoseEstimate:
    """Refine a coarse pose by direct matching at the fine level, with sub-cell interpolation.

    ``level`` is the fine-level contrast at `fine_window_extent` of the start.
    Positions x angles are a few dozen by a few: the cost is in call overhead, so
    index ranges are Python ints and the prior is built separably.
    """
    factor = memory.fine_factor
    fine, fine_valid = level.contrast, level.valid
    all_valid = fine_valid is None
    sigma = memory.noise_level(factor, lambda: robust_noise(fine, fine_valid))
    step = memory.banks.fine_step_deg()
    span = int(math.ceil(memory.options.coarse_angle_step_deg / 2 / step)) if memory.period_deg > 0 else 0
    centre_index = int(round(start.angle_deg / step)) if step > 0 else 0
    bank = memory.banks.fine_bank(centre_index, span)
    templates, norms, gains, size, angle_values = bank.templates, bank.norms, bank.gains, bank.size, bank.angles_deg
    half = (size - 1) // 2
    offset = (factor - 1) / 2
    cx = int(round((start.x - level.x0 - offset) / factor))
    cy = int(round((start.y - level.y0 - offset) / factor))
    limit = fine.shape[0] - size
    full = _fine_reach(memory)
    first = _first_fine_reach(memory, full)
    x0, y0 = np.array(level.x0, np.float32), np.array(level.y0, np.float32)  # 0-d: see window._ONE
    for reach in (first, full) if first < full else (full,):
        c0, c1 = min(max(cx - reach - half, 0), limit), min(max(cx + reach - half, 0), limit)
        r0, r1 = min(max(cy - reach - half, 0), limit), min(max(cy + reach - half, 0), limit)
        n_rows, n_cols = r1 - r0 + 1, c1 - c0 + 1
        patches = _patches(fine, r0, c0, n_rows, n_cols, size)
        scores = patches @ templates.T  # (positions, angles)
        if fine_valid is None:
            z = (scores / (sigma * norms)).T  # (angles, positions); the template energy is norms²
        else:  # masked match: template energy over in-frame, unclaimed pixels only
            valid_patches = _patches(fine_valid, r0, c0, n_rows, n_cols, size)
            energy = np.maximum(valid_patches @ (templates**2).T, MIN_VISIBLE_ENERGY * norms[None, :] ** 2)
            z = (scores / (sigma * np.sqrt(energy))).T
            visible_gains = (energy * (gains / norms**2)[None, :]).T  # gain over the visible part, (A, P)
        grid_x = memory.cell_axis(n_cols, factor, (c0 + half) * factor + offset) + x0
        grid_y = memory.cell_axis(n_rows, factor, (r0 + half) * factor + offset) + y0
        objective = z - _prior_penalty(grid_x, grid_y, angle_values, prior, memory.period_deg)
        best = int(objective.argmax())  # the method: np.argmax adds a Python layer
        a, p = divmod(best, n_rows * n_cols)
        r, c = divmod(p, n_cols)
        if 0 < r < n_rows - 1 and 0 < c < n_cols - 1:
            break  # interior optimum: the parabola has its neighbours
    surface = objective[a].reshape(n_rows, n_cols)
    dx = _parabola(*surface[r, c - 1 : c + 2].tolist()) if 0 < c < n_cols - 1 else 0.0
    dy = _parabola(*surface[r - 1 : r + 2, c].tolist()) if 0 < r < n_rows - 1 else 0.0
    da = _parabola(*objective[a - 1 : a + 2, p].tolist()) if 0 < a < len(angle_values) - 1 else 0.0
    return PoseEstimate(
        x=float(grid_x[c]) + dx * factor,
        y=float(grid_y[r]) + dy * factor,
        angle_deg=float(angle_values[a]) + da * step,
        z=float(z[a, p]),
        amplitude=float(scores[p, a]) / max(float(gains[a] if all_valid else visible_gains[a, p]), 1e-9),
    )


def _patches(image: np.ndarray, r0: int, c0: int, n_rows: int, n_cols: int, size: int) -> np.ndarray:
    """(n_rows * n_cols, size²) copy of the size x size patches with top-left corners in the given ranges."""
    if image.flags.c_contiguous:
        # A strided view straight on the buffer: `as_strided` costs several times more per call.
        s0, s1 = image.strides
        views = np.ndarray((n_rows, n_cols, size, size), image.dtype, image, r0 * s0 + c0 * s1, (s0, s1, s0, s1))
    else:
        block = image[r0 : r0 + n_rows + size - 1, c0 : c0 + n_cols + size - 1]
        s0, s1 = block.strides
        views = as_strided(block, (n_rows, n_cols, size, size), (s0, s1, s0, s1), writeable=False)
    return views.reshape(n_rows * n_cols, size * size)


def _prior_penalty(grid_x: np.ndarray, grid_y: np.ndarray, angles: np.ndarray, prior: MotionPrior,
                   period: float) -> np.ndarray:
    """Negative log prior (z units) on angles (A,) x the grid ``grid_y`` (rows) x ``grid_x`` (cols): (A, rows * cols).

    Built separably (squared offsets per axis, then one outer sum): the grid is regular,
    and the arrays are small enough that the number of numpy calls is the cost.
    """
    # Scalar factors as 0-d float32 arrays (see window._ONE), results written in place: the same floats.
    dy2 = grid_y - np.array(prior.y, np.float32)
    np.square(dy2, out=dy2)
    dx2 = grid_x - np.array(prior.x, np.float32)
    np.square(dx2, out=dx2)
    dist2 = np.add.outer(dy2, dx2)
    pos = dist2 * np.array(1.0 / prior.step_scale_px**2, np.float32)
    np.log1p(pos, out=pos)
    pos *= np.array(prior.step_weight, np.float32)
    radius2 = np.float32(prior.radius_px**2) if math.isfinite(prior.radius_px) else None
    # The grid axes are monotonic, so their largest squared offsets sit at the ends.
    if radius2 is not None and max(dy2[0], dy2[-1]) + max(dx2[0], dx2[-1]) > radius2:  # some of it lies outside
        pos[dist2 > radius2] = np.inf
    if period <= 0:
        return pos.reshape(1, -1)
    scale = prior.turn_weight / (2 * prior.turn_sigma_deg**2)
    if angles.size > 4:  # the coarse bank: one vectorised expression beats a Python loop
        gap = angles - np.array(prior.angle_deg - period / 2, np.float32)
        np.remainder(gap, np.array(period, np.float32), out=gap)
        gap -= np.array(period / 2, np.float32)
        np.abs(gap, out=gap)
        turn = np.array(scale, np.float32) * np.square(gap)
    else:
        turn = [scale * _angle_gap(a, prior.angle_deg, period) ** 2 for a in angles.tolist()]
    return np.add.outer(np.asarray(turn, np.float32), pos.ravel())
