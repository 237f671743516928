"""CLI command ``evaluate``: score a recorded run against simulated ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def evaluate(
    pred: Path = typer.Option(..., help="Run directory with masks.tif (and run.json, trajectories.csv)."),
    gt: Path = typer.Option(..., help="Ground-truth folder written by `sam4em-live simulate`."),
    out: Path | None = typer.Option(None, help="JSON report path (default PRED/evaluation.json)."),
) -> None:
    """Score a recorded run against simulated ground truth: J, F, J&F, centroid error, misses, id switches."""
    from sam4em_live.evaluate.rundir import EvaluationInputError, evaluate_directories

    try:
        report = evaluate_directories(pred, gt)
    except (EvaluationInputError, FileNotFoundError) as exc:
        _fail(str(exc))
        return
    typer.echo(report.table())
    target = out or (pred / "evaluation.json")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(report.to_json() + "\n")
    typer.echo(f"report: {target}")
    typer.echo(json.dumps(json.loads(report.to_json())["summary"]))


def register(app: typer.Typer) -> None:
    """Add the ``evaluate`` command to the CLI ``app``."""
    app.command("evaluate")(evaluate)
