"""The live statistics' fast paths (shared selection and weights, a `FitMemo` of grids) change no float.

The reference below is the straightforward fit code (session 2's, without memos or sharing); every
fit, with or without a memo, and every rolling snapshot must equal it bit for bit.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import pytest

from sam4em_live.particles import ParticleMeasurement
from sam4em_live.sinks.results_schema import statistics_entry
from sam4em_live.stats.fit import (
    ALPHA_BOUNDS,
    FitMemo,
    MsdFit,
    fit_msd,
    fit_msd_both,
    fit_msd_linear,
    fit_point_count,
    to_physical,
)
from sam4em_live.stats.msd import independent_measurements
from sam4em_live.stats.rolling import RollingTrackStats

_GRID = np.linspace(*ALPHA_BOUNDS, 250)


def _ref_select(lags, msd, n, points, lag_frames):
    lags = np.asarray(lags, dtype=np.float64)
    frames = lags if lag_frames is None else np.asarray(lag_frames, dtype=np.float64)
    msd = np.asarray(msd, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    keep = (n > 0) & np.isfinite(msd) & (lags > 0)
    lags, frames, msd, n = lags[keep], frames[keep], msd[keep], n[keep]
    k = fit_point_count(lags.size) if points is None else min(points, lags.size)
    return lags[:k], frames[:k], msd[:k], n[:k]


def _ref_weights(lag_frames, msd, n):
    scale = np.abs(msd)
    if not np.any(scale > 0):
        return None
    floor = 1e-12 * float(scale.max())
    with np.errstate(all="ignore"):
        n_eff = independent_measurements(n + lag_frames, lag_frames)
    n_eff = np.where(np.isfinite(n_eff) & (n_eff > 0), n_eff, n)
    return n_eff / np.maximum(scale, floor) ** 2


def _ref_solve(basis, y, w, with_offset):
    sw, sy = w.sum(), (w * y).sum()
    sb, sbb, sby = basis @ w, (basis * basis) @ w, basis @ (w * y)
    syy = (w * y * y).sum()
    if not with_offset:
        a = sby / sbb
        return a, np.zeros_like(a), syy - a * sby
    det = sbb * sw - sb * sb
    a = (sby * sw - sb * sy) / det
    c = (sbb * sy - sb * sby) / det
    return a, c, syy - a * sby - c * sy


def _ref_covariance(jac, w, rss):
    dof = jac.shape[0] - jac.shape[1]
    if dof <= 0:
        return np.full((jac.shape[1], jac.shape[1]), np.nan)
    try:
        inv = np.linalg.inv(jac.T @ (jac * w[:, None]))
    except np.linalg.LinAlgError:
        return np.full((jac.shape[1], jac.shape[1]), np.nan)
    return inv * max(1.0, rss / dof)


def _ref_rss(alphas, log_lag, y, w, with_offset):
    with np.errstate(all="ignore"):
        rss = _ref_solve(np.exp(alphas[:, None] * log_lag[None, :]), y, w, with_offset)[2]
    return np.where(np.isfinite(rss), rss, np.inf)


def _ref_best_alpha(log_lag, y, w, with_offset):
    coarse = _ref_rss(_GRID, log_lag, y, w, with_offset)
    best = int(np.argmin(coarse))
    step = _GRID[1] - _GRID[0]
    fine_alphas = np.linspace(_GRID[best] - step, _GRID[best] + step, 41)
    fine_alphas = fine_alphas[(fine_alphas >= ALPHA_BOUNDS[0]) & (fine_alphas <= ALPHA_BOUNDS[1])]
    fine = _ref_rss(fine_alphas, log_lag, y, w, with_offset)
    k = int(np.argmin(fine))
    if 0 < k < fine.size - 1 and np.all(np.isfinite(fine[k - 1 : k + 2])):
        r0, r1, r2 = fine[k - 1 : k + 2]
        curvature = r0 - 2 * r1 + r2
        if curvature > 0:
            h = fine_alphas[1] - fine_alphas[0]
            return float(fine_alphas[k] + 0.5 * h * (r0 - r2) / curvature)
    return float(fine_alphas[k])


def _ref_nan(model, n, lags):
    lo = float(lags[0]) if lags.size else math.nan
    hi = float(lags[-1]) if lags.size else math.nan
    return MsdFit(math.nan, math.nan, math.nan, math.nan, math.nan, math.nan, n, lo, hi, model)


def reference_fit_msd(lags, msd, n, dims=2, with_offset=True, points=None, lag_frames=None) -> MsdFit:
    lag, frames, y, cnt = _ref_select(lags, msd, n, points, lag_frames)
    w = _ref_weights(frames, y, cnt) if lag.size >= (4 if with_offset else 3) else None
    if w is None:
        return _ref_nan("anomalous", int(lag.size), lag)
    log_lag = np.log(lag)
    alpha = _ref_best_alpha(log_lag, y, w, with_offset)
    basis = np.exp(alpha * log_lag)
    a, c, rss = (float(v[0]) for v in _ref_solve(basis[None, :], y, w, with_offset))
    scale = 2.0 * dims
    cols = [basis * scale, a * basis * log_lag] + ([np.ones_like(lag)] if with_offset else [])
    cov = _ref_covariance(np.column_stack(cols), w, rss)
    err = np.sqrt(np.maximum(np.diag(cov), 0.0))
    return MsdFit(a / scale, float(err[0]), alpha, float(err[1]), c, float(err[2]) if with_offset else 0.0,
                  int(lag.size), float(lag[0]), float(lag[-1]), "anomalous", float(cov[0, 1]))


def reference_fit_msd_linear(lags, msd, n, dims=2, with_offset=True, points=None, lag_frames=None) -> MsdFit:
    lag, frames, y, cnt = _ref_select(lags, msd, n, points, lag_frames)
    w = _ref_weights(frames, y, cnt) if lag.size >= (3 if with_offset else 2) else None
    if w is None:
        return _ref_nan("linear", int(lag.size), lag)
    a, c, rss = (float(v[0]) for v in _ref_solve(lag[None, :], y, w, with_offset))
    scale = 2.0 * dims
    cols = [lag * scale] + ([np.ones_like(lag)] if with_offset else [])
    cov = _ref_covariance(np.column_stack(cols), w, rss)
    err = np.sqrt(np.maximum(np.diag(cov), 0.0))
    return MsdFit(a / scale, float(err[0]), 1.0, 0.0, c, float(err[1]) if with_offset else 0.0,
                  int(lag.size), float(lag[0]), float(lag[-1]), "linear")


def _bits(value):
    """Floats as IEEE bit patterns, recursively (NaN equals NaN, -0.0 differs from 0.0)."""
    if isinstance(value, float):
        return struct.pack("<d", value)
    if isinstance(value, dict):
        return {k: _bits(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_bits(v) for v in value]
    return value


def _fit_bits(fit: MsdFit):
    import dataclasses

    return _bits(list(dataclasses.astuple(fit)))


def _curves(rng: np.random.Generator):
    """MSD curves: power laws with noise and offsets, gaps (n = 0, NaN), zeros, tiny and huge scales."""
    for _ in range(400):
        length = int(rng.integers(0, 40))
        lags = np.arange(1, length + 1)
        alpha = rng.uniform(0.05, 2.4)
        msd = 4 * rng.uniform(1e-3, 1e3) * lags**alpha + rng.normal(0, 1) * rng.uniform(0, 5)
        msd *= 1 + rng.normal(0, 0.05, size=length)
        n = np.maximum(1000 - lags, 0) if rng.random() < 0.5 else rng.integers(0, 300, size=length)
        if length and rng.random() < 0.3:
            msd[rng.integers(0, length)] = np.nan
        if length and rng.random() < 0.1:
            msd[:] = 0.0
        yield lags, msd, n


@pytest.mark.parametrize("with_offset", [True, False])
@pytest.mark.parametrize("dims", [2, 1])
def test_fits_are_bit_identical_to_the_straightforward_version(with_offset, dims):
    rng = np.random.default_rng(31 + dims)
    checked = 0
    memo = FitMemo()
    for lags, msd, n in _curves(rng):
        points = None if rng.random() < 0.7 else int(rng.integers(1, 30))
        seconds = lags / 200.0 if rng.random() < 0.3 else None
        args = (lags if seconds is None else seconds, msd, n)
        kwargs = {"dims": dims, "with_offset": with_offset, "points": points, "lag_frames": None if seconds is None else lags}
        ref = reference_fit_msd(*args, **kwargs), reference_fit_msd_linear(*args, **kwargs)
        assert _fit_bits(fit_msd(*args, **kwargs)) == _fit_bits(ref[0])
        assert _fit_bits(fit_msd_linear(*args, **kwargs)) == _fit_bits(ref[1])
        both = fit_msd_both(*args, **kwargs)
        assert [_fit_bits(f) for f in both] == [_fit_bits(f) for f in ref]
        for _ in range(2):  # the first call fills the memo, the second reads it
            remembered = fit_msd_both(*args, **kwargs, memo=memo)
            assert [_fit_bits(f) for f in remembered] == [_fit_bits(f) for f in ref]
        checked += math.isfinite(ref[0].alpha)
    assert checked > 100  # most curves really fit


def test_fits_stay_identical_when_the_memo_is_full_or_cleared():
    memo = FitMemo(entries=3)  # constant clearing
    rng = np.random.default_rng(5)
    for lags, msd, n in list(_curves(rng))[:120]:
        for _ in range(2):
            assert _fit_bits(fit_msd(lags, msd, n, memo=memo)) == _fit_bits(reference_fit_msd(lags, msd, n))
    assert 0 < len(memo) <= 2 * 3  # two tables, each bounded
    lags = np.arange(1, 401)
    long = 4 * 0.7 * lags**0.8 * (1 + rng.normal(0, 0.02, size=lags.size)), 5000 - lags
    fresh = FitMemo()
    assert _fit_bits(fit_msd(lags, *long, memo=fresh)) == _fit_bits(reference_fit_msd(lags, *long))
    assert len(fresh) == 1  # the weights' N_eff only: a 40-lag fit's grids are not kept


def test_memos_belong_to_their_owner():
    """Two owners' memos share nothing: what one holds does not change what the other holds or returns."""
    lags = np.arange(1, 11)
    first, second = FitMemo(), FitMemo()
    fit_msd(lags, 4 * 0.5 * lags**0.9, 1000 - lags, memo=first)
    assert len(first) > 0 and len(second) == 0
    shared = first.effective_counts(lags.astype(np.float64), (1000 - lags).astype(np.float64))
    assert not shared.flags.writeable  # handed out by reference, so nobody may change it


def _simulated_tracks(frames: int, seed: int) -> dict[int, np.ndarray]:
    """Trajectories (frames, 2) of the simulator's multi-1024 particles, px."""
    from sam4em_live.sim.motion import ParticleTrajectory
    from sam4em_live.sim.presets import get_preset

    spec = get_preset("multi-1024")
    rng = np.random.default_rng(seed)
    tracks = {}
    for pid, particle in enumerate(spec.particles, start=1):
        poses = iter(ParticleTrajectory(particle, spec.imaging, rng))
        tracks[pid] = np.array([(p.x_px, p.y_px) for p in (next(poses) for _ in range(frames))])
    return tracks


def _reference_snapshot(stats: RollingTrackStats, pid: int) -> dict:
    """`RollingTrackStats._particle_snapshot` with the reference fits."""
    m = stats.msd(pid).measured()
    fit = reference_fit_msd(m.lag_frames, m.msd, m.n)
    lin = reference_fit_msd_linear(m.lag_frames, m.msd, m.n)

    def finite(v):
        return float(v) if math.isfinite(v) else None

    row = stats._rings.rows[pid]
    out = {
        "lag_frames": m.lag_frames.tolist(), "lag_s": (m.lag_frames / stats.fps).tolist(),
        "msd_px2": m.msd.tolist(), "msd_nm2": (m.msd * stats.pixel_size_nm**2).tolist(), "n": m.n.tolist(),
        "D_px2_per_frame": finite(fit.D), "D_err": finite(fit.D_err), "alpha": finite(fit.alpha),
        "alpha_err": finite(fit.alpha_err), "offset_px2": finite(fit.offset),
        "D_linear_px2_per_frame": finite(lin.D), "D_linear_err": finite(lin.D_err), "fit_lags": fit.n_points,
        "window_frames": stats.window_frames, "frames_seen": int(stats._rings.seen[row]),
        "frames_in_window": int(stats._rings.held[row]),
    }
    d_phys, d_err = to_physical(fit, stats.pixel_size_nm, stats.fps)
    out["D_nm2_per_s"], out["D_nm2_per_s_err"] = finite(d_phys), finite(d_err)
    return out


def test_rolling_snapshots_on_simulated_tracks_are_bit_identical():
    rng = np.random.default_rng(8)
    tracks = _simulated_tracks(900, 8)
    stats = RollingTrackStats(200, 40, 200.0, 1.5)
    compared = 0
    for frame in range(900):
        if rng.random() < 0.03:
            continue  # a dropped frame: every particle has a gap
        found = []
        for pid, xy in tracks.items():
            present = rng.random() > 0.05
            x = float(xy[frame, 0]) if rng.random() > 0.01 else math.nan
            found.append(ParticleMeasurement(pid, frame, present, x, float(xy[frame, 1])))
        stats.update(frame, found)
        if frame % 7 == 0:
            for pid, record in stats.snapshot().items():
                snap = statistics_entry(record)  # the published map, compared key for key
                assert snap.keys() == _reference_snapshot(stats, pid).keys()
                assert _bits(snap) == _bits(_reference_snapshot(stats, pid)), (frame, pid)
                compared += record.alpha is not None
    assert compared > 200

