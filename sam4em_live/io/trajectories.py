"""Trajectory tables: one row per particle per frame where the particle was found.

Columns follow trackpy (``frame, particle, x, y``) plus our measurements. A
particle absent from a frame has no row (gaps are real gaps, not NaN rows).
``t_s`` is time since the first frame of the series (from ``fps`` when known,
else from timestamps); ``x_nm``/``y_nm`` appear only when ``pixel_size_nm`` is known.

Readers (`sam4em_live.analysis.loading.load_trajectories` dispatches on what the path is):

- our run directory: `sam4em_live.io.run_folder.RunFolder` (``trajectories.csv`` or ``.parquet``,
  with the calibration from ``run.json``);
- a table file (CSV/Parquet) in our/trackpy's layout or SAM-EM's
  (``frame, particle_id, x, y, angle``);
- a SAM-EM output folder (``npz/######.npz`` with ``obj_ids`` and ``masks``,
  plus ``index.jsonl``), re-measured with `measure_mask`;
- SAM4EM's ``masks.npy`` (frames x objects x H x W), re-measured likewise.

Writers: `write_trajectories` (CSV or Parquet) and `to_samem_layout` (SAM-EM's
CSV layout, with the angle converted to SAM-EM's convention).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

    from sam4em_live.frames import Calibration
    from sam4em_live.particles import ParticleMeasurement

BASE_COLUMNS: tuple[str, ...] = (
    "frame", "particle", "x", "y", "angle", "area",
    "major_axis", "minor_axis", "eccentricity", "score", "split",
)
TIME_COLUMN = "t_s"
NM_COLUMNS: tuple[str, ...] = ("x_nm", "y_nm")
#: The run's series number (run.json ``series_list``): a row is identified by (series, frame, particle).
SERIES_COLUMN = "series"


def trajectory_columns(calibration: Calibration, have_time: bool, with_series: bool = False) -> list[str]:
    """The table's columns: `BASE_COLUMNS`, ``t_s`` (times known), ``x_nm, y_nm`` (pixel size known), ``series``.

    ``series`` only when asked: the recorder's tables always have it.
    """
    cols = list(BASE_COLUMNS)
    if have_time:
        cols.append(TIME_COLUMN)
    if calibration.pixel_size_nm is not None:
        cols.extend(NM_COLUMNS)
    if with_series:
        cols.append(SERIES_COLUMN)
    return cols


def measurement_row(m: ParticleMeasurement, calibration: Calibration, t_s: float | None,
                    series: int | None = None) -> dict[str, object]:
    """One trajectory row for a present particle (see `trajectory_columns`); ``series`` only when given."""
    row: dict[str, object] = {
        "frame": m.frame, "particle": m.particle, "x": m.x, "y": m.y, "angle": m.angle_deg,
        "area": m.area_px, "major_axis": m.major_axis_px, "minor_axis": m.minor_axis_px,
        "eccentricity": m.eccentricity, "score": m.score, "split": int(m.split),
    }
    if t_s is not None:
        row[TIME_COLUMN] = t_s
    if calibration.pixel_size_nm is not None:
        row["x_nm"] = m.x * calibration.pixel_size_nm
        row["y_nm"] = m.y * calibration.pixel_size_nm
    if series is not None:
        row[SERIES_COLUMN] = series
    return row


# ---------------------------------------------------------------------------
# Tables: build, validate, add units, read and write.
# ---------------------------------------------------------------------------

#: Columns every trajectory table must have (trackpy's names).
REQUIRED_COLUMNS: tuple[str, ...] = ("frame", "particle", "x", "y")

#: SAM-EM's trajectory CSV layout (its particle-tracking tab writes exactly these).
SAMEM_COLUMNS: tuple[str, ...] = ("frame", "particle_id", "x", "y", "angle")


@dataclass(frozen=True)
class Trajectories:
    """A trajectory table with the calibration it came with.

    ``table`` has at least `REQUIRED_COLUMNS` (frame int, particle int, x/y px
    float), sorted by (particle, frame), one row per particle per frame where
    it was found. ``calibration`` holds what the source knew (``None`` fields
    are unknown); ``source`` says where it came from, for reports.
    """

    table: pd.DataFrame
    calibration: Calibration
    source: str
    warnings: tuple[str, ...] = ()  # e.g. the run was segmented with random weights


def table_from_measurements(measurements: Iterable[ParticleMeasurement], calibration: Calibration,
                            frame_times_s: Mapping[int, float] | None = None) -> pd.DataFrame:
    """Trajectory table of the present measurements (absent ones make no row).

    ``t_s`` comes from ``frame_times_s`` (frame -> seconds since the series
    start) when given, else from ``calibration.fps``.
    """
    rows = []
    for m in measurements:
        if not m.present:
            continue
        t_s = frame_times_s.get(m.frame) if frame_times_s is not None else (
            m.frame / calibration.fps if calibration.fps else None)
        rows.append(measurement_row(m, calibration, t_s))
    have_time = frame_times_s is not None or bool(calibration.fps)
    columns = trajectory_columns(calibration, have_time)
    table = pd.DataFrame(rows, columns=columns)
    return normalize_table(table)


def normalize_table(table: pd.DataFrame) -> pd.DataFrame:
    """Validate and tidy a trajectory table: required columns, dtypes, order, no duplicates.

    Accepts SAM-EM's ``particle_id`` for ``particle``. Rows with non-finite x
    or y are dropped (they are not positions). A ``series`` column (the
    recorder's) is part of a row's identity: rows are unique by (series,
    particle, frame) and sorted by series first. Raises ``ValueError`` naming
    the problem (missing columns, non-numeric values, a particle twice on a frame).
    """
    if "particle" not in table.columns and "particle_id" in table.columns:
        table = table.rename(columns={"particle_id": "particle"})
    missing = [c for c in REQUIRED_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"trajectory table lacks column(s) {missing}; has {list(table.columns)}")
    table = table.copy()
    try:
        for col in ("x", "y"):
            table[col] = pd.to_numeric(table[col], errors="raise").astype(np.float64)
        keys = ("frame", "particle", SERIES_COLUMN) if SERIES_COLUMN in table.columns else ("frame", "particle")
        for col in keys:
            values = pd.to_numeric(table[col], errors="raise")
            if values.isna().any() or not np.all(np.mod(values, 1) == 0):
                raise ValueError(f"column {col!r} must hold integers")
            table[col] = values.astype(np.int64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"bad trajectory table: {exc}") from exc
    table = table[np.isfinite(table["x"]) & np.isfinite(table["y"])]
    order = [SERIES_COLUMN, "particle", "frame"] if SERIES_COLUMN in table.columns else ["particle", "frame"]
    dup = table.duplicated(order)
    if dup.any():
        first = table[dup].iloc[0]
        where = f" of series {first[SERIES_COLUMN]}" if SERIES_COLUMN in table.columns else ""
        raise ValueError(f"particle {first['particle']} appears twice on frame {first['frame']}{where}")
    return table.sort_values(order, kind="stable").reset_index(drop=True)


def with_units(table: pd.DataFrame, calibration: Calibration) -> pd.DataFrame:
    """Add or overwrite ``x_nm, y_nm`` (pixel size known) and ``t_s`` (fps known, unless timestamps exist).

    Per-frame timestamps already in ``t_s`` win over ``fps`` (they are what
    the detector measured); ``t_s`` is only computed where it is missing.
    """
    table = table.copy()
    if calibration.pixel_size_nm is not None:
        table["x_nm"] = table["x"] * calibration.pixel_size_nm
        table["y_nm"] = table["y"] * calibration.pixel_size_nm
    if calibration.fps and (TIME_COLUMN not in table.columns or table[TIME_COLUMN].isna().all()):
        table[TIME_COLUMN] = table["frame"] / calibration.fps
    return table


def fps_from_times(table: pd.DataFrame) -> float | None:
    """Frame rate implied by per-frame ``t_s`` (median s per frame over consecutive rows), or None."""
    if TIME_COLUMN not in table.columns:
        return None
    per_frame = table[["frame", TIME_COLUMN]].dropna().drop_duplicates("frame").sort_values("frame")
    df = np.diff(per_frame["frame"].to_numpy())
    dt = np.diff(per_frame[TIME_COLUMN].to_numpy(dtype=np.float64))
    ok = (df > 0) & (dt > 0)
    if not ok.any():
        return None
    return float(f"{1.0 / np.median(dt[ok] / df[ok]):.12g}")  # drop float noise of summed timestamps


def pixel_size_from_columns(table: pd.DataFrame) -> float | None:
    """Pixel size implied by ``x_nm / x`` when the table carries both consistently, else None."""
    if "x_nm" not in table.columns:
        return None
    x = table["x"].to_numpy(dtype=np.float64)
    x_nm = pd.to_numeric(table["x_nm"], errors="coerce").to_numpy(dtype=np.float64)
    ok = np.isfinite(x) & np.isfinite(x_nm) & (np.abs(x) > 1e-9)
    if not ok.any():
        return None
    ratio = x_nm[ok] / x[ok]
    size = float(np.median(ratio))
    if not (size > 0 and np.allclose(ratio, size, rtol=1e-6)):
        return None
    return float(f"{size:.12g}")


def write_trajectories(table: pd.DataFrame, path: Path) -> Path:
    """Write a table as CSV (``.csv``) or Parquet (``.parquet``); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".parquet":
        table.to_parquet(path, index=False)
    elif path.suffix == ".csv":
        table.to_csv(path, index=False)
    else:
        raise ValueError(f"unsupported trajectory file type {path.suffix!r} (use .csv or .parquet)")
    return path


def samem_angle_from_ours(angle_deg: np.ndarray | pd.Series) -> np.ndarray:
    """Our axis angle (from +x towards +y) -> SAM-EM's (skimage ``orientation`` in degrees).

    SAM-EM writes ``degrees(regionprops.orientation)``: the angle between the
    row axis and the major axis, in [-90, 90]. The two are related by
    ``samem = 90 - ours`` folded back into (-90, 90].
    """
    return _fold_axis(90.0 - np.asarray(angle_deg, dtype=np.float64))


def _fold_axis(angle_deg: np.ndarray) -> np.ndarray:
    folded = np.mod(angle_deg + 90.0, 180.0) - 90.0  # [-90, 90)
    return np.where(folded == -90.0, 90.0, folded)


def to_samem_layout(table: pd.DataFrame) -> pd.DataFrame:
    """Table in SAM-EM's CSV layout ``frame, particle_id, x, y, angle`` (angle in SAM-EM's convention)."""
    angle = table["angle"] if "angle" in table.columns else pd.Series(np.nan, index=table.index)
    out = pd.DataFrame({"frame": table["frame"], "particle_id": table["particle"], "x": table["x"],
                        "y": table["y"], "angle": samem_angle_from_ours(angle)})
    return out.sort_values(["particle_id", "frame"], kind="stable").reset_index(drop=True)


def from_samem_layout(table: pd.DataFrame) -> pd.DataFrame:
    """SAM-EM CSV (``frame, particle_id, x, y, angle``) -> our columns, angle in our convention.

    SAM-EM writes one row per connected component, so a split mask gives a
    particle two rows on one frame; those are rejected with a clear error
    (re-read the SAM-EM ``npz`` folder instead: we keep the largest component).
    """
    out = table.rename(columns={"particle_id": "particle"})
    if "angle" in out.columns:
        out["angle"] = _fold_axis(90.0 - pd.to_numeric(out["angle"]).to_numpy(dtype=np.float64))
    try:
        return normalize_table(out)
    except ValueError as exc:
        raise ValueError(f"{exc} (SAM-EM writes one row per mask component; read its npz/ folder "
                         "instead, which keeps the largest component)") from exc


def read_table_file(path: Path) -> pd.DataFrame:
    """Read a CSV or Parquet trajectory table (ours, trackpy's or SAM-EM's layout)."""
    path = Path(path)
    if path.suffix == ".parquet":
        raw = pd.read_parquet(path)
    elif path.suffix == ".csv":
        raw = pd.read_csv(path)
    else:
        raise ValueError(f"unsupported trajectory file {path} (use .csv or .parquet)")
    if "particle_id" in raw.columns and "particle" not in raw.columns:
        return from_samem_layout(raw)
    return normalize_table(raw)
