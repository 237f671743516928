"""The ``batch`` command: `sam4em_live.batch.runner.run_batch` from the shell (docs/batch.md)."""

from __future__ import annotations

from pathlib import Path

import typer

from sam4em_live.cli_options import fail, one_line
from sam4em_live.plugins import parse_assignments


def batch_command(
    inputs: list[str] = typer.Argument(..., help="Recordings, globs ('archive/*.tif'), folders of recordings, "
                                       "manifest files (.json/.toml/.csv) or previous run folders."),
    out: Path = typer.Option(..., help="The batch folder: runs/, trajectories/ (Parquet), ensemble.csv, "
                             "batch.json. Re-running into it skips what is finished and unchanged."),
    scheduler: str | None = typer.Option(None, help="A running Dask scheduler, e.g. tcp://host:8786 "
                                         "(default: a local cluster of process workers)."),
    workers: int | None = typer.Option(None, help="Workers of the local cluster (default: one per CPU core)."),
    backend: str | None = typer.Option(None, help="Segmenter backend (as for track; default embedded)."),
    option: list[str] = typer.Option([], "--option", help="A segmenter option KEY=VALUE (as for track)."),
    config: Path | None = typer.Option(None, "--config", "-c", help="Config TOML for every recording."),
    fps: float | None = typer.Option(None, help="Frame rate for recordings whose metadata lack it."),
    pixel_size_nm: float | None = typer.Option(None, help="Pixel size (nm) for recordings whose metadata lack it."),
    replay_from: Path | None = typer.Option(None, help="A folder of previous run folders (e.g. an earlier "
                                            "batch's runs/): a recording with a run of its name replays its edits."),
    discover: bool = typer.Option(False, help="Recordings without prompts find their particles themselves "
                                  "([discovery] mode = auto)."),
    resources: list[str] = typer.Option([], "--resources", help="Worker resources each task needs, NAME=N "
                                        "(e.g. GPU=1; a cuda device option asks for GPU=1 by itself)."),
    retries: int = typer.Option(2, help="Further attempts of a recording that failed or lost its worker."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Re-analyse many recordings on a Dask cluster, each through track's pipeline (resumable)."""
    from sam4em_live.batch.inputs import BatchInputError
    from sam4em_live.batch.runner import run_batch
    from sam4em_live.config import ConfigError

    try:
        needs = {key: float(str(value)) for key, value in parse_assignments(resources).items()}
        report = run_batch(inputs, out, backend=backend, options=parse_assignments(option), config=config, fps=fps,
                           pixel_size_nm=pixel_size_nm, replay_from=replay_from, discover=discover,
                           scheduler=scheduler, workers=workers, resources=needs, retries=retries,
                           progress=progress)
    except (BatchInputError, ConfigError, OSError, ValueError) as exc:
        fail(one_line(exc))
    for line in report.lines():
        typer.echo(line)
    if report.failed:
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add the ``batch`` command to the CLI ``app``."""
    app.command("batch")(batch_command)
