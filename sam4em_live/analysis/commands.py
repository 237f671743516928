"""CLI command ``sam4em-live analyze``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from sam4em_live.cli_options import one_line


def _parse_lags(text: str) -> tuple[int, ...]:
    try:
        lags = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError as exc:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from exc
    if not lags or any(lag < 1 for lag in lags):
        raise typer.BadParameter(f"lags must be integers >= 1, got {text!r}")
    return lags


def _default_out(source: Path) -> Path:
    return source.with_name(source.stem + "_analysis") if source.is_file() else source / "analysis"


def analyze_command(
    source: Annotated[Path, typer.Argument(
        help="Run directory, trajectories CSV/Parquet, SAM-EM folder or SAM4EM masks.npy.")],
    fps: Annotated[float | None, typer.Option("--fps", help=(
        "Acquisition frame rate (frames/s); overrides run.json. Without one known, time is in frames."))] = None,
    pixel_size_nm: Annotated[float | None, typer.Option(
        "--pixel-size-nm", help="Pixel size (nm); overrides run.json.")] = None,
    out: Annotated[Path | None, typer.Option(
        "--out", help="The folder to write into (created; default: RUN_DIR/analysis, or FILE_analysis next to a "
        "file).")] = None,
    max_lag: Annotated[int | None, typer.Option(
        "--max-lag", min=1, help="Largest lag in frames (default: a quarter of each track's span).")] = None,
    fit_lags: Annotated[int | None, typer.Option(
        "--fit-lags", min=3, help="Number of first lags fitted (default: 10 % of them, at least 4).")] = None,
    pdf_lags: Annotated[str, typer.Option(
        "--pdf-lags", help="Lags (frames) of the displacement distributions, comma-separated.")] = "1,10",
    figures: Annotated[bool, typer.Option("--figures/--no-figures", help="Write PNG and PDF figures.")] = True,
    samem_csv: Annotated[bool, typer.Option(
        "--samem-csv", help="Also write the trajectories in SAM-EM's CSV layout.")] = False,
    series: Annotated[int | None, typer.Option(
        "--series", min=0, help="The series to analyse of a run with several (run.json series_list).")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
) -> None:
    """Statistics table (D, alpha, +- per particle) and figures from recorded trajectories.

    Refuses (exit 2) a run too short for the statistics asked, naming the frames each needs.
    """
    from tqdm import tqdm

    from sam4em_live.analysis.analyze import analyze

    lags = _parse_lags(pdf_lags)
    out_dir = out if out is not None else _default_out(source)
    steps = ("load", "statistics", "tables", *(("figures",) if figures else ()))
    with tqdm(total=len(steps), unit="step", desc="analyze", disable=not progress) as bar:
        def on_step(name: str) -> None:
            if bar.n or name != steps[0]:
                bar.update(1)  # the step before is done
            bar.set_postfix_str(name)

        try:
            result = analyze(source, out_dir, fps, pixel_size_nm, max_lag, fit_lags, lags, figures, samem_csv,
                             on_step=on_step, series=series)
        except (FileNotFoundError, ValueError) as exc:
            bar.close()
            typer.secho(f"error: {one_line(exc)}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2) from exc
        bar.update(len(steps) - bar.n)
    for warning in result.warnings:
        typer.secho(f"WARNING: {warning}", fg=typer.colors.RED, err=True)
    cal = result.calibration
    typer.echo(f"{len(result.summary)} particles from {result.source} "
               f"(pixel size {cal.pixel_size_nm or 'unknown'} nm; {result.time_axis.describe()})")
    ens = result.ensemble_fit
    if ens.n_points:
        typer.echo(f"ensemble: D = {ens.D:.4g} ± {ens.D_err:.2g} px²/frame^α, "
                   f"α = {ens.alpha:.3f} ± {ens.alpha_err:.3f}")
    typer.echo(f"wrote {len(result.files)} files to {out_dir}")


def register(app: typer.Typer) -> None:
    """Add the ``analyze`` command to the CLI ``app``."""
    app.command("analyze")(analyze_command)
