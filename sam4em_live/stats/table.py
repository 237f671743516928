"""Per-particle statistics of a trajectory table (the `trajectories` columns).

Thin DataFrame layer over the pure functions: it groups by particle, calls
`tmsd` / `fit_msd` / `rotational_msd`, and lays results out in tables with
units in the column names. Lags are in frames; ``lag_s = lag_frames / fps``
when the frame rate is known; MSD in px^2 and, with a pixel size, nm^2.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import pandas as pd

from sam4em_live.stats.fit import MsdFit, fit_msd, fit_msd_linear, to_physical
from sam4em_live.stats.msd import TrackMsd, tmsd
from sam4em_live.stats.rotation import rotational_msd

if TYPE_CHECKING:
    from collections.abc import Iterator, Mapping


def iter_tracks(table: pd.DataFrame) -> Iterator[tuple[int, np.ndarray, np.ndarray]]:
    """Yield (particle, frames, xy (N, 2) px) per particle, sorted by frame, finite positions only."""
    for key, group in table.groupby("particle", sort=True):
        xy = group[["x", "y"]].to_numpy(dtype=np.float64)
        keep = np.all(np.isfinite(xy), axis=1)
        pid = int(cast("float", key))  # the stub types group keys as any scalar; particle ids are numbers
        yield pid, group["frame"].to_numpy(dtype=np.int64)[keep], xy[keep]


def track_msds(table: pd.DataFrame, max_lag: int | None = None) -> dict[int, TrackMsd]:
    """TMSD of every particle (px^2, lags in frames)."""
    return {pid: tmsd(f, xy[:, 0], xy[:, 1], max_lag=max_lag) for pid, f, xy in iter_tracks(table) if f.size}


def msd_long_table(msds: dict[int, TrackMsd], fps: float | None, pixel_size_nm: float | None) -> pd.DataFrame:
    """Long table ``particle, lag_frames, lag_s, msd_px2, msd_nm2, n`` (measured lags only)."""
    parts = []
    for pid, m in msds.items():
        m = m.measured()
        part = pd.DataFrame({"particle": pid, "lag_frames": m.lag_frames, "msd_px2": m.msd, "n": m.n})
        part["lag_s"] = m.lag_frames / fps if fps else np.nan
        part["msd_nm2"] = m.msd * pixel_size_nm**2 if pixel_size_nm else np.nan
        parts.append(part)
    cols = ["particle", "lag_frames", "lag_s", "msd_px2", "msd_nm2", "n"]
    return pd.concat(parts, ignore_index=True)[cols] if parts else pd.DataFrame(columns=cols)


def _fit_columns(prefix: str, fit: MsdFit, unit: str) -> dict[str, float]:
    return {f"{prefix}_{unit}": fit.D, f"{prefix}_err_{unit}": fit.D_err}


def particle_summary(table: pd.DataFrame, fps: float | None = None, pixel_size_nm: float | None = None,
                     max_lag: int | None = None, fit_points: int | None = None,
                     msds: Mapping[int, TrackMsd] | None = None) -> pd.DataFrame:
    """One row per particle: track extent and fits of translational and rotational MSD.

    Columns (NaN where not determinable): ``particle, n_positions, first_frame,
    last_frame, fit_lags, D_px2_per_frame, D_err_px2_per_frame`` (units
    px^2/frame^alpha), ``alpha, alpha_err, offset_px2, offset_err_px2,
    D1_px2_per_frame, D1_err_px2_per_frame`` (alpha = 1 fit), with fps and
    pixel size also ``D_nm2_per_s, D_err_nm2_per_s`` (nm^2/s^alpha) and
    ``D1_nm2_per_s, D1_err_nm2_per_s``; with an ``angle`` column
    ``Drot_deg2_per_frame, Drot_err_deg2_per_frame`` (alpha = 1 fit of the
    rotational MSD, 2 D_r tau + offset) and, with fps, ``Drot_deg2_per_s``;
    with an ``eccentricity`` column also ``eccentricity_median`` (the angle,
    hence Drot, is meaningless for near-round particles). ``msds``: each particle's tMSD of this table and
    ``max_lag``, when the caller has them already (not computed twice).
    """
    rows = []
    angles = table.set_index(["particle", "frame"])["angle"] if "angle" in table.columns else None
    for pid, f, xy in iter_tracks(table):
        row: dict[str, Any] = {"particle": pid, "n_positions": int(f.size),
                               "first_frame": int(f[0]) if f.size else -1, "last_frame": int(f[-1]) if f.size else -1}
        known = msds.get(pid) if msds is not None else None
        m = (known or tmsd(f, xy[:, 0], xy[:, 1], max_lag=max_lag)).measured() if f.size else None
        fit = fit_msd(m.lag_frames, m.msd, m.n, points=fit_points) if m is not None else None
        lin = fit_msd_linear(m.lag_frames, m.msd, m.n, points=fit_points) if m is not None else None
        if fit is not None and lin is not None:
            row.update({"fit_lags": fit.n_points, **_fit_columns("D", fit, "px2_per_frame"),
                        "alpha": fit.alpha, "alpha_err": fit.alpha_err,
                        "offset_px2": fit.offset, "offset_err_px2": fit.offset_err,
                        **_fit_columns("D1", lin, "px2_per_frame")})
            if fps and pixel_size_nm:
                d, d_err = to_physical(fit, pixel_size_nm, fps)
                d1, d1_err = to_physical(lin, pixel_size_nm, fps)
                row.update({"D_nm2_per_s": d, "D_err_nm2_per_s": d_err, "D1_nm2_per_s": d1, "D1_err_nm2_per_s": d1_err})
        if angles is not None:
            row.update(_rotation_columns(angles.loc[pid], max_lag, fit_points, fps))
            if "eccentricity" in table.columns:  # near 0: the angle is pixel noise, so is Drot
                row["eccentricity_median"] = float(table.loc[table["particle"] == pid, "eccentricity"].median())
        rows.append(row)
    return pd.DataFrame(rows)


def _rotation_columns(angle: pd.Series, max_lag: int | None, fit_points: int | None,
                      fps: float | None) -> dict[str, float]:
    m = rotational_msd(angle.index.to_numpy(), angle.to_numpy(), max_lag=max_lag).measured()
    fit = fit_msd_linear(m.lag_frames, m.msd, m.n, dims=1, points=fit_points)
    out = {"Drot_deg2_per_frame": fit.D, "Drot_err_deg2_per_frame": fit.D_err}
    if fps:
        out.update({"Drot_deg2_per_s": fit.D * fps, "Drot_err_deg2_per_s": fit.D_err * fps})
    return out


def summary_records(summary: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON-able records (NaN -> None)."""
    records = summary.to_dict(orient="records")
    return [{str(k): (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in r.items()}
            for r in records]
