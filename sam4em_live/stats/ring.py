"""Ring buffers of recent positions for many particles, with per-lag running sums of squared displacements.

Storage is one row per particle: ``frames`` (rows, window) holds the frame
index in each slot (slot = frame % window, `EMPTY` if none), ``xy`` (rows,
window, 2) the positions, and ``sums``/``comp``/``counts`` (rows, max_lag + 1)
the Neumaier-compensated sums of |r(f) - r(f - lag)|^2 and the pair counts.
Every particle sees the same frame index at the same time, so the partner
slots of a new or leaving frame are the same for all rows and each update is a
handful of vectorised operations over (particles x max_lag): O(max_lag) per
particle, with small constant overhead.

Exactness: a pair's squared norm is computed with the same expression when
it enters and when it leaves (bit-identical), and the compensation term
carries the rounding of every add/subtract, so a 10^4-px jump entering and
leaving the window leaves no residue. `refresh_lag` re-sums one lag exactly
(``math.fsum``) as a safety net.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from sam4em_live.stats.msd import TrackMsd, msd_from_sums

if TYPE_CHECKING:
    from numpy.typing import DTypeLike

#: Marks an empty slot; no frame index (or frame +- lag) can equal it.
EMPTY = np.iinfo(np.int64).min

#: Rows of the storage: an index array, or a slice when they are consecutive (the usual case).
Rows = np.ndarray | slice


def _as_index(rows: np.ndarray) -> Rows:
    """``rows`` as a slice when they are ascending and consecutive: views instead of fancy-index copies."""
    listed = rows.tolist()
    if not listed:
        return rows
    first = listed[0]
    if listed == list(range(first, first + len(listed))):
        return slice(first, first + len(listed))
    return rows


def squared_norms(d: np.ndarray) -> np.ndarray:
    """|d|^2 over the last axis (x, y): ``x*x + y*y``, no einsum/FMA kernels.

    Bit-identical to ``(d * d).sum(axis=-1)`` (a two-term sum is one addition)
    but about 3x faster: numpy reductions over a length-2 axis are slow.
    """
    if d.shape[-1] != 2:
        return (d * d).sum(axis=-1)
    x, y = d[..., 0], d[..., 1]
    return x * x + y * y


class ParticleRings:
    """Rows of ring buffers; see the module docstring. Not thread-safe."""

    def __init__(self, window: int, max_lag: int, capacity: int = 8) -> None:
        self.window = window
        self.max_lag = max_lag
        self.taus = np.arange(1, max_lag + 1, dtype=np.int64)
        self._minus_taus = -self.taus
        self.rows: dict[int, int] = {}  # particle -> row
        self._free: list[int] = []
        self._allocate(capacity)

    def _allocate(self, capacity: int) -> None:
        old = getattr(self, "frames", None)
        n_old = 0 if old is None else old.shape[0]

        def grow(array: np.ndarray | None, shape: tuple[int, ...], fill: float, dtype: DTypeLike) -> np.ndarray:
            new = np.full(shape, fill, dtype=dtype)
            if array is not None:
                new[:n_old] = array
            return new

        lags = self.max_lag + 1
        self.frames = grow(old, (capacity, self.window), EMPTY, np.int64)
        self.xy = grow(getattr(self, "xy", None), (capacity, self.window, 2), 0.0, np.float64)
        self.sums = grow(getattr(self, "sums", None), (capacity, lags), 0.0, np.float64)
        self.comp = grow(getattr(self, "comp", None), (capacity, lags), 0.0, np.float64)
        self.counts = grow(getattr(self, "counts", None), (capacity, lags), 0, np.int64)
        self.held = grow(getattr(self, "held", None), (capacity,), 0, np.int64)
        self.seen = grow(getattr(self, "seen", None), (capacity,), 0, np.int64)
        self._free.extend(range(capacity - 1, n_old - 1, -1))

    def row_for(self, particle: int) -> int:
        """The particle's row, allocated (and the storage grown) on first use."""
        row = self.rows.get(particle)
        if row is None:
            if not self._free:
                self._allocate(2 * self.frames.shape[0])
            row = self.rows[particle] = self._free.pop()
        return row

    def release(self, particle: int) -> None:
        """Forget a particle and clear its row for reuse."""
        row = self.rows.pop(particle, None)
        if row is None:
            return
        self.frames[row] = EMPTY
        self.sums[row] = 0.0
        self.comp[row] = 0.0
        self.counts[row] = 0
        self.held[row] = 0
        self.seen[row] = 0
        self._free.append(row)

    def _accumulate(self, rows: Rows, values: np.ndarray) -> None:
        """Neumaier-compensated ``sums[rows, 1:] += values`` (values (r, max_lag); zeros are exact no-ops)."""
        old = self.sums[rows, 1:]
        new = old + values
        self.comp[rows, 1:] += np.where(np.abs(old) >= np.abs(values), (old - new) + values, (values - new) + old)
        self.sums[rows, 1:] = new

    def _pair_terms(self, rows: np.ndarray, frame: int, xy: np.ndarray, direction: int) -> tuple[np.ndarray, np.ndarray]:
        """Squared displacements between ``xy`` at ``frame`` and the held frames ``frame + direction*lag``."""
        partners = frame + (self.taus if direction > 0 else self._minus_taus)
        # Flat gathers (`take`) cost about half as much as 2-D fancy indexing at this size.
        flat = (rows * self.window)[:, None] + partners % self.window
        held = self.frames.reshape(-1).take(flat) == partners
        d = self.xy.reshape(-1, 2).take(flat, axis=0) - xy[:, None, :]
        return np.where(held, squared_norms(d), 0.0), held

    def add(self, rows: np.ndarray, frame: int, xy: np.ndarray) -> None:
        """Add positions ``xy`` (r, 2) of ``rows`` at ``frame`` and their pairs with earlier frames."""
        terms, held = self._pair_terms(rows, frame, xy, -1)
        index = _as_index(rows)
        self._accumulate(index, terms)
        self.counts[index, 1:] += held
        slot = frame % self.window
        self.frames[index, slot] = frame
        self.xy[index, slot] = xy
        self.held[index] += 1
        self.seen[index] += 1

    def evict(self, frame: int) -> None:
        """Remove every position at ``frame`` and its pairs with later frames."""
        slot = frame % self.window
        rows = np.flatnonzero(self.frames[:, slot] == frame)
        if rows.size == 0:
            return
        index = _as_index(rows)
        terms, held = self._pair_terms(rows, frame, self.xy[index, slot], +1)
        self._accumulate(index, -terms)
        self.counts[index, 1:] -= held
        self.frames[index, slot] = EMPTY
        self.held[index] -= 1

    def clear_all_positions(self) -> None:
        """Every position leaves at once (the stream jumped by more than a window)."""
        for particle in list(self.rows):
            self.release(particle)

    def refresh_lag(self, row: int, lag: int) -> None:
        """Replace one lag's running sum of one row by its exact value from the buffer (O(window))."""
        frames = self.frames[row]
        partner = (frames + lag) % self.window
        ok = (frames != EMPTY) & (frames[partner] == frames + lag)
        terms = squared_norms(self.xy[row, partner[ok]] - self.xy[row, ok]).tolist()
        total = math.fsum(terms)
        self.sums[row, lag] = total
        self.comp[row, lag] = math.fsum([*terms, -total])  # what rounding `total` lost
        self.counts[row, lag] = len(terms)

    def msd(self, particle: int) -> TrackMsd:
        """The particle's window tMSD (lags 1..max_lag, NaN where no pairs)."""
        row = self.rows[particle]
        counts = self.counts[row]
        total = np.where(counts > 0, np.maximum(self.sums[row] + self.comp[row], 0.0), 0.0)
        return msd_from_sums(total, counts)
