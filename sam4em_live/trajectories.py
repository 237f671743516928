"""Trajectory tables: one row per particle per frame where the particle was found.

Columns follow trackpy (``frame, particle, x, y``) plus our measurements. A
particle absent from a frame has no row (gaps are real gaps, not NaN rows).
``t_s`` is time since the first frame of the series (from ``fps`` when known,
else from timestamps); ``x_nm``/``y_nm`` appear only when ``pixel_size_nm`` is known.
"""

from __future__ import annotations

from sam4em_live.frames import Calibration
from sam4em_live.measure import ParticleMeasurement

BASE_COLUMNS: tuple[str, ...] = (
    "frame", "particle", "x", "y", "angle", "area",
    "major_axis", "minor_axis", "eccentricity", "score", "split",
)
TIME_COLUMN = "t_s"
NM_COLUMNS: tuple[str, ...] = ("x_nm", "y_nm")


def trajectory_columns(calibration: Calibration, have_time: bool) -> list[str]:
    cols = list(BASE_COLUMNS)
    if have_time:
        cols.append(TIME_COLUMN)
    if calibration.pixel_size_nm is not None:
        cols.extend(NM_COLUMNS)
    return cols


def measurement_row(m: ParticleMeasurement, calibration: Calibration, t_s: float | None) -> dict[str, object]:
    """One trajectory row for a present particle (see `trajectory_columns`)."""
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
    return row
