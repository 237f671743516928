"""Live rolling tMSD per particle: O(max_lag) per update, bounded memory, equal to batch.

The window is the last ``window_frames`` frame indices seen by the service:
after ``update(F, ...)`` it holds the positions of frames ``F - window_frames
+ 1 .. F``. For every particle we keep those positions in a ring buffer
indexed by ``frame % window_frames`` and, per lag, the running sum of squared
displacements and the pair count. Adding frame F adds its pairs with frames
F - tau; frames leaving the window subtract theirs. Gaps (absent particles,
dropped frames) simply have no slot, so lags are true frame differences.

The result is, by construction, `sam4em_live.stats.msd.tmsd` of the window's
positions. Float add/subtract drift is controlled twice: the running sums are
Neumaier-compensated (a jump of 10^4 px entering and leaving the window leaves
no residue), and, as a safety net, one lag per ``window_frames // max_lag``
updates is re-summed exactly (``math.fsum``) from the buffer, so every lag is
refreshed about once per window at O(max_lag) amortised cost and no frame
pays more than one O(window) re-sum.
Tests check agreement with the batch tMSD to 1e-9 relative over long gappy
streams with occasional 10^4-px jumps.

A particle whose buffer empties (unseen for a whole window) is forgotten.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from sam4em_live.measure import ParticleMeasurement
from sam4em_live.stats.fit import fit_msd, fit_msd_linear, to_physical
from sam4em_live.stats.msd import TrackMsd, msd_from_sums

logger = logging.getLogger(__name__)

# Marks an empty ring slot; no real frame index (or frame - lag) can equal it.
_EMPTY = np.iinfo(np.int64).min


def _squared_norms(d: np.ndarray) -> np.ndarray:
    """Row-wise |d|^2, the same expression the batch path uses.

    The value subtracted when a pair leaves must be bit-identical to the one
    added when it entered (d and -d square alike; a two-term sum does not
    depend on order). ``einsum`` is avoided: it may pick kernels (FMA, other
    orders) that depend on the array size.
    """
    return (d * d).sum(axis=1)


class _TrackWindow:
    """Ring buffer of one particle's positions and its per-lag running sums."""

    __slots__ = ("size", "max_lag", "frames", "xy", "sums", "counts", "updates_since_exact",
                 "frames_seen", "oldest", "newest", "held", "comp", "next_refresh_lag")

    def __init__(self, size: int, max_lag: int) -> None:
        self.size = size
        self.max_lag = max_lag
        self.frames = np.full(size, _EMPTY, dtype=np.int64)  # frame index held by each slot
        self.xy = np.zeros((size, 2), dtype=np.float64)
        self.sums = np.zeros(max_lag + 1, dtype=np.float64)
        self.comp = np.zeros(max_lag + 1, dtype=np.float64)  # compensation of `sums`
        self.counts = np.zeros(max_lag + 1, dtype=np.int64)
        self.updates_since_exact = 0
        self.next_refresh_lag = 0
        self.frames_seen = 0
        self.oldest = -1  # smallest frame index that may still be in the buffer
        self.newest = -1  # largest frame index added
        self.held = 0  # number of positions in the buffer

    def _partners(self, frame: int, taus: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slots of frames ``frame + taus`` that are held, and the matching taus."""
        wanted = frame + taus
        slots = wanted % self.size
        held = self.frames[slots] == wanted
        return slots[held], np.abs(taus[held])

    def add(self, frame: int, x: float, y: float) -> None:
        taus = -np.arange(1, self.max_lag + 1, dtype=np.int64)
        slots, lags = self._partners(frame, taus)
        if slots.size:
            d = self.xy[slots] - (x, y)
            self._accumulate(lags, _squared_norms(d))
            self.counts[lags] += 1
        slot = frame % self.size
        self.frames[slot] = frame
        self.xy[slot] = (x, y)
        self.frames_seen += 1
        self.held += 1
        self.newest = frame
        if self.oldest < 0:
            self.oldest = frame

    def _accumulate(self, lags: np.ndarray, values: np.ndarray) -> None:
        """Neumaier-compensated ``sums[lags] += values`` (``lags`` distinct).

        Plain float add/subtract of squared steps that differ by many orders of
        magnitude (a particle that jumped) would leave rounding residue in the
        sums after those pairs leave; the compensation term carries it.
        """
        old = self.sums[lags]
        new = old + values
        self.comp[lags] += np.where(np.abs(old) >= np.abs(values), (old - new) + values, (values - new) + old)
        self.sums[lags] = new

    def evict_through(self, last_leaving: int) -> None:
        """Remove positions of frames <= ``last_leaving`` and all their pairs."""
        if self.held == 0 or last_leaving < self.oldest:
            return
        if last_leaving >= self.newest:
            self.frames.fill(_EMPTY)
            self.sums.fill(0.0)
            self.comp.fill(0.0)
            self.counts.fill(0)
            self.held = 0
            self.oldest = last_leaving + 1
            return
        taus = np.arange(1, self.max_lag + 1, dtype=np.int64)
        # The buffer holds frames in [oldest, newest], a span shorter than the window.
        for frame in range(self.oldest, last_leaving + 1):
            slot = frame % self.size
            if self.frames[slot] != frame:
                continue
            partner_slots, lags = self._partners(frame, taus)
            if partner_slots.size:
                d = self.xy[partner_slots] - self.xy[slot]
                self._accumulate(lags, -_squared_norms(d))
                self.counts[lags] -= 1
            self.frames[slot] = _EMPTY
            self.held -= 1
        self.oldest = last_leaving + 1

    def is_empty(self) -> bool:
        return self.held == 0

    def refresh_lag_exactly(self, lag: int) -> None:
        """Replace lag's running sum by its exact value from the buffer (O(window) time)."""
        partner = (self.frames + lag) % self.size
        ok = (self.frames != _EMPTY) & (self.frames[partner] == self.frames + lag)
        terms = _squared_norms(self.xy[partner[ok]] - self.xy[ok]).tolist()
        total = math.fsum(terms)
        self.sums[lag] = total
        self.comp[lag] = math.fsum(terms + [-total])  # what rounding `total` lost
        self.counts[lag] = len(terms)

    def msd(self) -> TrackMsd:
        total = np.where(self.counts > 0, np.maximum(self.sums + self.comp, 0.0), 0.0)
        return msd_from_sums(total, self.counts)


class RollingTrackStats:
    """Per-particle rolling tMSD and fits for the live service.

    Parameters
    ----------
    window_frames : length of the window in frames (memory: this many positions per particle).
    max_lag_frames : largest lag (frames); capped at ``window_frames - 1``.
    fps : frames per second, for ``lag_s`` and D in physical units (``None`` = unknown).
    pixel_size_nm : pixel size, for ``msd_nm2`` and D in nm^2 (``None`` = unknown).

    Called from the pipeline worker thread only (not thread-safe).
    """

    def __init__(self, window_frames: int, max_lag_frames: int, fps: float | None,
                 pixel_size_nm: float | None) -> None:
        if window_frames < 2:
            raise ValueError(f"window_frames must be >= 2, got {window_frames}")
        if max_lag_frames < 1:
            raise ValueError(f"max_lag_frames must be >= 1, got {max_lag_frames}")
        self.window_frames = int(window_frames)
        self.max_lag_frames = int(min(max_lag_frames, window_frames - 1))
        self.fps = fps
        self.pixel_size_nm = pixel_size_nm
        self._tracks: dict[int, _TrackWindow] = {}
        self._latest_frame: int | None = None
        # One lag is re-summed exactly every `_refresh_stride` updates: each lag about once per window.
        self._refresh_stride = max(1, self.window_frames // self.max_lag_frames)

    def update(self, frame_index: int, measurements: Sequence[ParticleMeasurement]) -> None:
        """Add one frame's measurements; absent or non-finite ones are gaps.

        Frame indices increase within a series. A repeated index is ignored
        (logged); an index that goes back means a new series: every particle's
        window is reset (logged) rather than mixing two series. A particle
        listed twice on one frame keeps its first measurement.
        """
        if self._latest_frame is not None and frame_index <= self._latest_frame:
            if frame_index == self._latest_frame:
                logger.warning("rolling stats: frame %d given twice; ignoring the repeat", frame_index)
                return
            logger.warning("rolling stats: frame index went back from %d to %d; new series, windows reset",
                           self._latest_frame, frame_index)
            self._tracks.clear()
        self._latest_frame = frame_index
        last_leaving = frame_index - self.window_frames
        for pid in list(self._tracks):
            track = self._tracks[pid]
            track.evict_through(last_leaving)
            if track.is_empty():
                del self._tracks[pid]
        for m in measurements:
            if not m.present or not (math.isfinite(m.x) and math.isfinite(m.y)):
                continue
            track = self._tracks.get(m.particle)
            if track is None:
                track = self._tracks[m.particle] = _TrackWindow(self.window_frames, self.max_lag_frames)
                # Stagger refreshes so particles added together do not all pay on one frame.
                track.updates_since_exact = (m.particle * 7919) % self._refresh_stride
            elif track.newest == frame_index:
                continue  # the same particle twice on one frame: keep the first
            track.add(frame_index, m.x, m.y)
            track.updates_since_exact += 1
            if track.updates_since_exact >= self._refresh_stride:
                track.updates_since_exact = 0
                track.next_refresh_lag = track.next_refresh_lag % self.max_lag_frames + 1
                track.refresh_lag_exactly(track.next_refresh_lag)

    def remove(self, particle: int) -> None:
        """Forget a particle (no error if unknown)."""
        self._tracks.pop(particle, None)

    def particles(self) -> list[int]:
        return sorted(self._tracks)

    def msd(self, particle: int) -> TrackMsd:
        """The window's tMSD of one particle (all lags 1..max_lag, NaN where no pairs)."""
        return self._tracks[particle].msd()

    def snapshot(self, particle: int | None = None) -> dict[int, dict[str, Any]]:
        """JSON-able statistics per particle (only lags with at least one pair).

        Keys: ``lag_frames``, ``lag_s`` (None without fps), ``msd_px2``,
        ``msd_nm2`` (None without pixel size), ``n``; fit of
        ``MSD = 4 D tau^alpha + offset`` over `fit_point_count` lags:
        ``D_px2_per_frame`` (px^2/frame^alpha), ``D_err`` (same units),
        ``alpha``, ``alpha_err``, ``offset_px2``; ``D_nm2_per_s`` and
        ``D_nm2_per_s_err`` (nm^2/s^alpha) when both fps and pixel size are
        known; the alpha = 1 fit ``D_linear_px2_per_frame``,
        ``D_linear_err``; ``window_frames``, ``frames_seen`` (positions
        ever received), ``frames_in_window``. Undeterminable values are None.
        """
        wanted = self.particles() if particle is None else [particle] if particle in self._tracks else []
        return {pid: self._particle_snapshot(self._tracks[pid]) for pid in wanted}

    def _particle_snapshot(self, track: _TrackWindow) -> dict[str, Any]:
        m = track.msd().measured()
        fit = fit_msd(m.lag_frames, m.msd, m.n)
        lin = fit_msd_linear(m.lag_frames, m.msd, m.n)
        px2 = self.pixel_size_nm**2 if self.pixel_size_nm is not None else None
        out: dict[str, Any] = {
            "lag_frames": m.lag_frames.tolist(),
            "lag_s": (m.lag_frames / self.fps).tolist() if self.fps else None,
            "msd_px2": m.msd.tolist(),
            "msd_nm2": (m.msd * px2).tolist() if px2 is not None else None,
            "n": m.n.tolist(),
            "D_px2_per_frame": _finite(fit.D),
            "D_err": _finite(fit.D_err),
            "alpha": _finite(fit.alpha),
            "alpha_err": _finite(fit.alpha_err),
            "offset_px2": _finite(fit.offset),
            "D_linear_px2_per_frame": _finite(lin.D),
            "D_linear_err": _finite(lin.D_err),
            "fit_lags": fit.n_points,
            "window_frames": self.window_frames,
            "frames_seen": track.frames_seen,
            "frames_in_window": track.held,
        }
        if self.fps and self.pixel_size_nm is not None:
            d_phys, d_phys_err = to_physical(fit, self.pixel_size_nm, self.fps)
            out["D_nm2_per_s"] = _finite(d_phys)
            out["D_nm2_per_s_err"] = _finite(d_phys_err)
        else:
            out["D_nm2_per_s"] = None
            out["D_nm2_per_s_err"] = None
        return out


def _finite(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None
