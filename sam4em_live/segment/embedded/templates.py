"""Matching templates of one particle's shape, at the two pyramid levels of the pose search.

The template body (the learned contrast profile, or the smoothed mask while the
memory is young; body frame, full resolution) is turned and sampled at the
coarse and fine block sizes. Coarse templates, one per ``coarse_angle_step_deg``
over the symmetry period, are kept as conjugate FFT spectra per search-window
size (`CoarseBank`); fine ones, per angle index of the ``fine_angle_step_deg``
grid, are stacked for the angles around a coarse optimum (`FineBank`). A shape
refresh builds new banks; within one shape everything is built once and cached.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

from sam4em_live.segment.embedded.window import bilinear, zero_padded

if TYPE_CHECKING:
    from sam4em_live.segment.embedded.options import EmbeddedOptions


@dataclass(frozen=True, slots=True)
class CoarseBank:
    """The coarse-level templates for FFT correlation with an N x N cell window.

    Spectra are conjugate 2-D real FFTs of the templates zero-padded to N x N, so a
    correlation is ``irfft2(spectra * rfft2(window))``.
    """

    angles_deg: np.ndarray  # (K,) float32, one per template
    spectra: np.ndarray  # (K, N, N // 2 + 1) complex64, of the zero-mean templates
    norms: np.ndarray  # (K,) float32, L2 norms of the zero-mean templates
    size: int  # template edge, cells
    energy_spectra: np.ndarray  # (K, N, N // 2 + 1) complex64, of the squared templates (masked matching)


@dataclass(frozen=True, slots=True)
class FineBank:
    """Fine-level templates at consecutive angles, flattened for direct dot products with patches."""

    templates: np.ndarray  # (A, t * t) float32, zero mean over the disc support
    norms: np.ndarray  # (A,) float32, their L2 norms
    gains: np.ndarray  # (A,) float32, zero-mean template . template: contrast amplitude = score / gain
    size: int  # t, template edge in cells
    angles_deg: np.ndarray  # (A,) float32, unwrapped around the centre angle


class _FineTemplate(NamedTuple):
    """One fine template (flattened), its norm and gain, kept per angle index."""

    values: np.ndarray
    norm: float
    gain: float


class TemplateBanks:
    """The coarse and fine templates of one shape (a `ShapeMemory` refresh), built on demand and cached.

    ``body`` is the (2 half + 1)² template body, ``support_px`` the radius of the disc
    the templates cover, ``period_deg`` the shape's symmetry period (0: isotropic).
    """

    def __init__(self, body: np.ndarray, half: int, support_px: float, period_deg: float, coarse_factor: int,
                 fine_factor: int, options: EmbeddedOptions) -> None:
        self.half = half
        self.support_px = support_px
        self.period_deg = period_deg
        self.coarse_factor = coarse_factor
        self.fine_factor = fine_factor
        self.options = options
        self._template_body = body
        self._bodies: dict[int, np.ndarray] = {}  # zero-padded body per block size
        self._coarse: dict[int, CoarseBank] = {}
        self._coarse_turns: dict[tuple[int, int, int], CoarseBank] = {}
        self._fine: dict[int, _FineTemplate] = {}
        self._fine_stacks: dict[tuple[int, int], FineBank] = {}
        self._fine_size = 0
        # Spacing of the fine angle grid, fixed with the period: every fine search asks for it.
        count = max(1, round(period_deg / options.fine_angle_step_deg)) if period_deg > 0 else 1
        self._fine_step_deg = period_deg / count if period_deg > 0 else 360.0

    def _sample_rotated(self, angles_deg: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
        """Templates (K, t, t) at ``factor`` x coarser sampling, and the disc support (t, t)."""
        cells = math.ceil(self.support_px / factor)
        axis = np.arange(-cells, cells + 1, dtype=np.float32) * factor
        dx, dy = axis[None, :], axis[:, None]
        support = (dx**2 + dy**2) <= (self.support_px + 0.5 * factor) ** 2
        t = np.radians(np.asarray(angles_deg, dtype=np.float32))[:, None, None]
        c, s = np.cos(t), np.sin(t)
        u = dx * c + dy * s + self.half
        v = dy * c - dx * s + self.half
        if factor not in self._bodies:
            body = self._template_body
            if factor > 1:  # match the block-mean of the data
                body = ndimage.gaussian_filter(body, 0.29 * factor)
            self._bodies[factor] = zero_padded(body)
        sampled = bilinear(self._bodies[factor], v, u)
        return sampled.astype(np.float32), support

    @staticmethod
    def _zero_mean(templates: np.ndarray, support: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        flat = templates.reshape(templates.shape[0], -1)
        keep = support.ravel()
        mean = flat[:, keep].mean(axis=1, keepdims=True)
        zm = np.where(keep[None, :], flat - mean, 0.0).astype(np.float32)
        norms = np.sqrt((zm * zm).sum(axis=1))
        gains = (zm * flat).sum(axis=1)
        return zm, norms, gains

    def coarse_angles(self) -> np.ndarray:
        """Angles (degrees, float32) of the coarse templates: one for an isotropic shape."""
        step = self.options.coarse_angle_step_deg
        if self.period_deg <= 0:  # isotropic: orientation carries no information
            return np.zeros(1, dtype=np.float32)
        count = max(1, round(self.period_deg / step))
        return np.arange(count, dtype=np.float32) * np.float32(self.period_deg / count)

    def coarse_bank(self, window_cells: int) -> CoarseBank:
        """The templates at every coarse angle for a ``window_cells`` x ``window_cells`` window (cached)."""
        bank = self._coarse.get(window_cells)
        if bank is None:
            angles = self.coarse_angles()
            templates, support = self._sample_rotated(angles, self.coarse_factor)
            zm, norms, _ = self._zero_mean(templates, support)
            size = templates.shape[-1]
            padded = np.zeros((2 * angles.size, window_cells, window_cells), np.float32)
            padded[: angles.size, :size, :size] = zm.reshape(-1, size, size)
            padded[angles.size :, :size, :size] = zm.reshape(-1, size, size) ** 2
            spectra = np.conj(sfft.rfft2(padded, workers=1)).astype(np.complex64)
            bank = CoarseBank(angles, spectra[: angles.size], norms.astype(np.float32), int(size),
                              spectra[angles.size :])
            self._coarse[window_cells] = bank
        return bank

    def coarse_bank_turning(self, window_cells: int, angle_deg: float, max_turn_deg: float) -> CoarseBank:
        """`coarse_bank` with only the angles within ``max_turn_deg`` of ``angle_deg`` (cached per centre).

        The whole bank when the shape is isotropic or the restriction would keep every angle.
        """
        bank = self.coarse_bank(window_cells)
        count = bank.angles_deg.size
        step = self.period_deg / count if self.period_deg > 0 else 0.0
        reach = int(max_turn_deg // step) if step > 0 else count
        if 2 * reach + 1 >= count:
            return bank
        centre = round(angle_deg / step) % count
        key = (window_cells, centre, reach)
        subset = self._coarse_turns.get(key)
        if subset is None:
            index = np.arange(centre - reach, centre + reach + 1) % count
            subset = CoarseBank(bank.angles_deg[index], np.ascontiguousarray(bank.spectra[index]),
                                bank.norms[index], bank.size, np.ascontiguousarray(bank.energy_spectra[index]))
            self._coarse_turns[key] = subset
        return subset

    def fine_step_deg(self) -> float:
        """Spacing of the fine angle grid (360 for an isotropic shape: one angle)."""
        return self._fine_step_deg

    def fine_bank(self, centre_index: int, span: int) -> FineBank:
        """Fine templates at angle indices ``centre_index - span .. centre_index + span`` (cached per centre).

        Angles lie around ``centre_index * step`` (unwrapped); templates are built once per angle index.
        """
        key = (centre_index, span)
        stack = self._fine_stacks.get(key)
        if stack is not None:
            return stack
        step = self.fine_step_deg()
        count = max(1, round(self.period_deg / step))
        indices = np.arange(centre_index - span, centre_index + span + 1)
        wrapped = [int(i) % count for i in indices]
        missing = sorted({i for i in wrapped if i not in self._fine})
        if missing:
            angles = np.asarray(missing, np.float32) * step
            templates, support = self._sample_rotated(angles, self.fine_factor)
            zm, norms, gains = self._zero_mean(templates, support)
            self._fine_size = templates.shape[-1]
            for k, i in enumerate(missing):
                self._fine[i] = _FineTemplate(zm[k], float(norms[k]), float(gains[k]))
        rows = [self._fine[i] for i in wrapped]
        stack = FineBank(np.stack([r.values for r in rows]), np.array([r.norm for r in rows], np.float32),
                         np.array([r.gain for r in rows], np.float32), int(self._fine_size),
                         (indices * step).astype(np.float32))
        self._fine_stacks[key] = stack
        return stack
