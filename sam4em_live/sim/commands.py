"""CLI command ``simulate``: write a simulated clip with ground truth."""

from __future__ import annotations

from pathlib import Path

import typer


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def simulate(
    preset: str = typer.Option("sam4em-50nm", help="Preset name (see --list)."),
    frames: int = typer.Option(250, min=1, help="Number of frames."),
    seed: int = typer.Option(0, help="Random seed (same seed, same clip)."),
    out: Path | None = typer.Option(None, help="Output folder (created)."),
    jpeg: bool = typer.Option(False, "--jpeg", help="Also write 8-bit JPEG frames to OUT/jpeg/."),
    spec: Path | None = typer.Option(None, help="JSON SimulationSpec file instead of a preset."),
    list_presets: bool = typer.Option(False, "--list", help="List presets and exit."),
) -> None:
    """Simulate an LPTEM video with exact ground truth (masks, trajectories, prompts, CNR)."""
    from sam4em_live.sim.outputs import simulate_to_folder
    from sam4em_live.sim.presets import PRESETS, get_preset
    from sam4em_live.sim.spec import SimulationSpec

    if list_presets:
        for name, p in PRESETS.items():
            typer.echo(f"{name:14s} {p.imaging.shape_px[1]}x{p.imaging.shape_px[0]}  {p.description}")
        return
    if out is None:
        _fail("--out is required")
        return
    try:
        chosen = SimulationSpec.from_file(str(spec)) if spec is not None else get_preset(preset)
    except (ValueError, OSError) as exc:
        _fail(str(exc))
        return
    meta = simulate_to_folder(chosen, frames, seed, out, jpeg=jpeg)
    cnr, snr = meta["cnr_summary"]["median"], meta["snr_summary"]["median"]
    typer.echo(f"wrote {frames} frames of {chosen.name} (seed {seed}) to {out}; "
               f"CNR median {_fmt(cnr, 3)}, SNR median {_fmt(snr, 2)}")


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def register(app: typer.Typer) -> None:
    """Add the ``simulate`` command to the CLI ``app``."""
    app.command("simulate")(simulate)
