"""CLI command ``simulate``: write a simulated clip with ground truth."""

from __future__ import annotations

from pathlib import Path

import typer

from sam4em_live.cli_options import fail, one_line


def simulate(
    preset: str = typer.Option("sam4em-50nm", help="Preset name (see --list)."),
    frames: int = typer.Option(250, min=1, help="Number of frames."),
    seed: int = typer.Option(0, help="Random seed (same seed, same clip)."),
    out: Path | None = typer.Option(None, help="The folder to write the clip into (created)."),
    jpeg: bool = typer.Option(False, "--jpeg", help="Also write 8-bit JPEG frames to OUT/jpeg/."),
    spec: Path | None = typer.Option(None, help="JSON SimulationSpec file instead of a preset."),
    list_presets: bool = typer.Option(False, "--list", help="List presets and exit."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
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
        fail("--out is required")
    try:
        chosen = SimulationSpec.from_file(str(spec)) if spec is not None else get_preset(preset)
    except (ValueError, OSError) as exc:  # a pydantic ValidationError is a ValueError: flattened to one line
        fail(f"{spec}: {one_line(exc)}" if spec is not None else one_line(exc))
    from tqdm import tqdm

    with tqdm(total=frames, unit="frame", desc=f"simulate {chosen.name}", disable=not progress) as bar:
        def on_frame(_index: int) -> None:
            bar.update(1)

        meta = simulate_to_folder(chosen, frames, seed, out, jpeg=jpeg, on_frame=on_frame)
    cnr, snr = meta["cnr_summary"]["median"], meta["snr_summary"]["median"]
    typer.echo(f"wrote {frames} frames of {chosen.name} (seed {seed}) to {out}; "
               f"CNR median {_fmt(cnr, 3)}, SNR median {_fmt(snr, 2)}")


def _fmt(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def register(app: typer.Typer) -> None:
    """Add the ``simulate`` command to the CLI ``app``."""
    app.command("simulate")(simulate)
