"""CLI: ``sam4em-live sam2-check``, a pre-flight check of a SAM 2 model, checkpoint and device."""

from __future__ import annotations

import json
import time
from pathlib import Path

import typer


def sam2_check(
    model: str = typer.Option("sam2.1_hiera_t", help="sam2.1_hiera_t|_s|_b+|_l or a model YAML path."),
    checkpoint: Path | None = typer.Option(None, help="SAM 2 checkpoint (.pt, official layout)."),
    random_weights: bool = typer.Option(
        False, "--random-weights", help="Seeded random weights: for tests and benchmarks ONLY."
    ),
    device: str = typer.Option("auto", help="auto | cuda | mps | cpu"),
    image_size: int | None = typer.Option(None, help="Model input edge in px (default: the config's)."),
    frames: int = typer.Option(3, help="Synthetic 1024x1024 uint16 frames to run, one particle."),
) -> None:
    """Load the model, run a few synthetic frames, print the backend description and timings as JSON."""
    import numpy as np

    from sam4em_live.config import ConfigError
    from sam4em_live.frames import Frame
    from sam4em_live.particles import Prompt
    from sam4em_live.segment.registry import create_segmenter
    from sam4em_live.segment.sam2.model import CheckpointError

    options = {"model": model, "checkpoint": checkpoint, "random_weights": random_weights, "device": device,
               "image_size_px": image_size}
    try:
        segmenter = create_segmenter("sam2", {k: v for k, v in options.items() if v is not None})
    except (ConfigError, CheckpointError, FileNotFoundError, RuntimeError) as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    rng = np.random.default_rng(0)
    seconds = []
    for i in range(frames):
        pixels = rng.normal(1000.0, 60.0, (1024, 1024)).clip(0, 65535).astype(np.uint16)
        start = time.perf_counter()
        edits = [Prompt(1, i, ((512.0, 512.0),), (1,))] if i == 0 else []
        segmenter.track(Frame("sam2-check", i, time.time(), pixels), edits)
        seconds.append(time.perf_counter() - start)
    typer.echo(json.dumps({**segmenter.describe(), "ms_per_frame": [round(1000 * s, 1) for s in seconds]}))


def register(app: typer.Typer) -> None:
    """Add the sam2-check command to ``app``."""
    app.command("sam2-check")(sam2_check)
