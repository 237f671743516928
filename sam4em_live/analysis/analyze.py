"""Offline analysis of one trajectory source: statistics computed here, drawn by `figures`.

`analyze` loads trajectories (run directory, table file, SAM-EM folder or
SAM4EM ``masks.npy``), resolves the calibration (explicit arguments > the
run's ``run.json`` > frame rate implied by ``t_s`` where those are
acquisition times, `sam4em_live.analysis.time_axis`; pixel size implied by
``x_nm / x``). Without a frame rate it counts time in frames and says so; it
never takes one from the processing clock. It refuses a run too short for
the statistics asked (`sam4em_live.analysis.run_length`), then computes
per-particle and ensemble statistics with `sam4em_live.stats`, and writes:

- ``stats.csv`` / ``stats.json``: one row per particle (D, alpha, +-, see
  `sam4em_live.stats.table.particle_summary`) plus, in JSON, the
  calibration, fit conventions and ensemble results;
- ``msd.csv``: the per-particle tMSD curves (long format);
- figures as PNG and PDF (`sam4em_live.analysis.figures`).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sam4em_live.analysis.loading import load_for_analysis
from sam4em_live.analysis.result import AnalysisResult
from sam4em_live.analysis.run_length import (
    check_run_length,
    displacement_need,
    fit_need,
    longest_span,
    velocity_need,
)
from sam4em_live.analysis.time_axis import TimeAxis, resolve_time_axis
from sam4em_live.frames import Calibration
from sam4em_live.io.trajectories import (
    Trajectories,
    pixel_size_from_columns,
    to_samem_layout,
    with_units,
)
from sam4em_live.stats.displacements import displacement_distribution, displacements
from sam4em_live.stats.fit import fit_msd, fit_msd_linear
from sam4em_live.stats.msd import ensemble_msd, tmsd
from sam4em_live.stats.table import iter_tracks, msd_long_table, particle_summary, summary_records
from sam4em_live.stats.velocity import velocity_autocorrelation

if TYPE_CHECKING:
    from collections.abc import Callable

logger = logging.getLogger(__name__)

#: Default lags (frames) of the displacement distributions.
DEFAULT_PDF_LAGS: tuple[int, ...] = (1, 10)


def resolve_calibration(loaded: Trajectories, fps: float | None, pixel_size_nm: float | None,
                        time_axis: TimeAxis | None = None) -> Calibration:
    """Explicit values win over the source's; then what the table implies (acquisition ``t_s``, ``x_nm / x``).

    ``time_axis`` is the resolved frame rate (`resolve_time_axis`); without it, a table's ``t_s`` is
    taken as acquisition times.
    """
    axis = time_axis or resolve_time_axis(loaded, fps, None)
    calibration = loaded.calibration.merged(Calibration(pixel_size_nm=pixel_size_nm, fps=axis.fps))
    logger.info("time: %s", axis.describe())
    if calibration.pixel_size_nm is None:
        implied = pixel_size_from_columns(loaded.table)
        if implied is not None:
            logger.info("pixel size %.6g nm taken from the x_nm column", implied)
            calibration = calibration.merged(Calibration(pixel_size_nm=implied))
    return calibration


def compute(loaded: Trajectories, calibration: Calibration, max_lag: int | None = None,
            fit_points: int | None = None, pdf_lags: tuple[int, ...] = DEFAULT_PDF_LAGS,
            time_axis: TimeAxis | None = None) -> AnalysisResult:
    """All statistics of one trajectory set (no files written).

    Raises `RunTooShort` (a ValueError) when the longest track is too short for a statistic asked for.
    """
    table = with_units(loaded.table, calibration)
    if table.empty:
        raise ValueError(f"{loaded.source}: no trajectory rows to analyse")
    tracks = [(f, xy) for _, f, xy in iter_tracks(table)]
    pids = [pid for pid, _, _ in iter_tracks(table)]
    msds = {pid: tmsd(f, xy[:, 0], xy[:, 1], max_lag=max_lag) for pid, (f, xy) in zip(pids, tracks, strict=True)}
    ens = ensemble_msd(msds.values())
    measured = ens.measured()
    cv_lags = int(min(20, max(1, measured.lag_frames.max(initial=1))))
    velocity = velocity_autocorrelation(tracks, cv_lags)
    shifts = {lag: displacements(tracks, lag) for lag in pdf_lags}
    check_run_length([fit_need(ens, max_lag), *(displacement_need(lag, d.shape[0]) for lag, d in shifts.items()),
                      velocity_need(velocity)], longest_span(tracks), loaded.source)
    fits = {pid: fit_msd(m.lag_frames, m.msd, m.n, points=fit_points) for pid, m in msds.items()}
    distributions = [displacement_distribution(disp, lag) for lag, disp in shifts.items()]
    return AnalysisResult(
        source=loaded.source, calibration=calibration, table=table,
        summary=particle_summary(table, calibration.fps, calibration.pixel_size_nm, max_lag, fit_points, msds),
        msds=msds, fits=fits, ensemble=ens,
        ensemble_fit=fit_msd(measured.lag_frames, measured.msd, measured.n, points=fit_points),
        ensemble_fit_linear=fit_msd_linear(measured.lag_frames, measured.msd, measured.n, points=fit_points),
        velocity=velocity, distributions=distributions, warnings=loaded.warnings,
        time_axis=time_axis or TimeAxis(calibration.fps, "the calibration"),
    )


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return value if np.isfinite(value) else None
    if isinstance(value, (np.floating, np.integer)):
        return _jsonable(value.item())
    if isinstance(value, np.ndarray):
        return [_jsonable(v) for v in value.tolist()]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def stats_document(result: AnalysisResult) -> dict[str, Any]:
    """The JSON written to ``stats.json``."""
    ens = result.ensemble.measured()
    return _jsonable({
        **({"WARNING": "; ".join(result.warnings)} if result.warnings else {}),
        "source": result.source,
        "calibration": result.calibration.as_dict(),
        "time": {"unit": result.time_axis.unit, "fps": result.time_axis.fps,
                 "fps_from": result.time_axis.origin if result.time_axis.fps else None,
                 **({} if result.time_axis.fps else {"note": result.time_axis.describe()})},
        "units": {"position": "px", "lag": "frames", "D_px2_per_frame": "px^2/frame^alpha",
                  "D_nm2_per_s": "nm^2/s^alpha", "Drot": "deg^2/frame (deg^2/s with fps)"},
        "fit": {"model": "MSD = 4 D tau^alpha + offset (offset = 4 sigma_loc^2, free sign)",
                "lags": "first max(4, ceil(0.1 * measured lags)) lags unless fit_points is given",
                "weights": "N_eff / MSD^2 (Qian et al. 1991 effective independent measurements)"},
        "particles": summary_records(result.summary),
        "ensemble": {
            "lag_frames": ens.lag_frames, "msd_px2": ens.msd, "n": ens.n,
            "fit": result.ensemble_fit.as_dict(), "fit_linear": result.ensemble_fit_linear.as_dict(),
        },
        "velocity_autocorrelation": {"lag_frames": result.velocity.lag_frames, "cv": result.velocity.cv,
                                     "n": result.velocity.n, "step_frames": result.velocity.step_frames},
        "displacements": [{"lag_frames": d.lag_frames, "count": d.count, "var_dx_px2": d.var_dx,
                           "var_dy_px2": d.var_dy, "mean_r2_px2": d.mean_r2, "excess_kurtosis_dx": d.kurtosis_dx,
                           "excess_kurtosis_dy": d.kurtosis_dy, "excess_kurtosis_xy": d.kurtosis_xy,
                           "excess_kurtosis_dx_err": d.kurtosis_dx_err, "excess_kurtosis_dy_err": d.kurtosis_dy_err,
                           "excess_kurtosis_xy_err": d.kurtosis_xy_err}
                          for d in result.distributions],
    })


def write_outputs(result: AnalysisResult, out_dir: Path, figures: bool = True, samem_csv: bool = False,
                  on_step: Callable[[str], None] | None = None) -> list[Path]:
    """Write tables (and figures) into ``out_dir``; returns the paths written (``on_step`` as for `analyze`)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = [out_dir / "stats.csv", out_dir / "stats.json", out_dir / "msd.csv"]
    result.summary.to_csv(written[0], index=False)
    written[1].write_text(json.dumps(stats_document(result), indent=2, allow_nan=False), encoding="utf-8")
    msd_long_table(result.msds, result.calibration.fps, result.calibration.pixel_size_nm).to_csv(written[2], index=False)
    if samem_csv:
        written.append(out_dir / "trajectories_samem.csv")
        to_samem_layout(result.table).to_csv(written[-1], index=False)
    if figures:
        from sam4em_live.analysis.figures import draw_all

        if on_step is not None:
            on_step("figures")
        written.extend(draw_all(result, out_dir))
    result.files = written
    return written


def analyze(source: Path, out_dir: Path, fps: float | None = None, pixel_size_nm: float | None = None,
            max_lag: int | None = None, fit_points: int | None = None,
            pdf_lags: tuple[int, ...] = DEFAULT_PDF_LAGS, figures: bool = True,
            samem_csv: bool = False, on_step: Callable[[str], None] | None = None,
            series: int | None = None) -> AnalysisResult:
    """Load ``source``, compute the statistics and write tables and figures to ``out_dir``.

    ``series``: the series to analyse of a run with several (`load_for_analysis` refuses such a run
    without one).

    ``on_step(name)`` is called as each step starts (``load``, ``statistics``, ``tables``, ``figures``):
    the command's progress bar.
    """
    step = on_step or (lambda _name: None)
    for name, value in (("fps", fps), ("pixel_size_nm", pixel_size_nm)):
        if value is not None and not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number, got {value}")
    step("load")
    found = load_for_analysis(Path(source), series)
    loaded = found.trajectories
    axis = resolve_time_axis(loaded, fps, found.time_base)
    step("statistics")
    result = compute(loaded, resolve_calibration(loaded, fps, pixel_size_nm, axis), max_lag, fit_points, pdf_lags,
                     axis)
    step("tables")
    write_outputs(result, out_dir, figures, samem_csv, on_step)
    return result


__all__ = [
    "DEFAULT_PDF_LAGS",
    "AnalysisResult",
    "analyze",
    "compute",
    "resolve_calibration",
    "stats_document",
    "write_outputs",
]
