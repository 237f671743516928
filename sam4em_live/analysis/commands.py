"""CLI command ``sam4em-live analyze``."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

log = logging.getLogger(__name__)


def _parse_lags(text: str) -> tuple[int, ...]:
    try:
        lags = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from exc
    if not lags or any(lag < 1 for lag in lags):
        raise typer.BadParameter(f"lags must be integers >= 1, got {text!r}")
    return lags


def analyze_command(
    source: Path = typer.Argument(..., help="Run directory, trajectories CSV/Parquet, SAM-EM folder or SAM4EM masks.npy."),
    fps: float | None = typer.Option(None, "--fps", help="Frame rate (frames/s); overrides run.json."),
    pixel_size_nm: float | None = typer.Option(None, "--pixel-size-nm", help="Pixel size (nm); overrides run.json."),
    out: Path | None = typer.Option(None, "--out", help="Output folder (default: SOURCE_analysis next to the input)."),
    max_lag: int | None = typer.Option(None, "--max-lag", min=1, help="Largest lag in frames (default: span/4)."),
    fit_lags: int | None = typer.Option(None, "--fit-lags", min=3, help="Number of first lags fitted (default: 10%, >= 4)."),
    pdf_lags: str = typer.Option("1,10", "--pdf-lags", help="Lags (frames) of the displacement distributions."),
    figures: bool = typer.Option(True, "--figures/--no-figures", help="Write PNG and PDF figures."),
    samem_csv: bool = typer.Option(False, "--samem-csv", help="Also write trajectories in SAM-EM's CSV layout."),
) -> None:
    """Statistics table (D, alpha, +- per particle) and figures from recorded trajectories."""
    from sam4em_live.analysis.analyze import analyze

    lags = _parse_lags(pdf_lags)
    out_dir = out if out is not None else source.with_name(source.stem + "_analysis") if source.is_file() \
        else source / "analysis"
    try:
        result = analyze(source, out_dir, fps, pixel_size_nm, max_lag, fit_lags, lags, figures, samem_csv)
    except (FileNotFoundError, ValueError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from exc
    cal = result.calibration
    typer.echo(f"{len(result.summary)} particles from {result.source} "
               f"(pixel size {cal.pixel_size_nm or 'unknown'} nm, fps {cal.fps or 'unknown'})")
    ens = result.ensemble_fit
    if ens.n_points:
        typer.echo(f"ensemble: D = {ens.D:.4g} ± {ens.D_err:.2g} px²/frame^α, α = {ens.alpha:.3f} ± {ens.alpha_err:.3f}")
    typer.echo(f"wrote {len(result.files)} files to {out_dir}")


def register(app: typer.Typer) -> None:
    app.command("analyze")(analyze_command)
