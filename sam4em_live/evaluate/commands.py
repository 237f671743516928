"""CLI command ``evaluate``: score a recorded run against simulated ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from sam4em_live.cli_options import fail

REPORT_NAME = "evaluation.json"


def _report_path(pred: Path, out: Path | None) -> Path:
    """``--out`` is the folder the report goes into (default: the run folder); a ``.json`` path still works."""
    if out is None:
        return pred / REPORT_NAME
    if out.suffix.lower() == ".json":
        typer.secho(f"note: --out {out}: a report file name is deprecated; --out names the folder "
                    f"({REPORT_NAME} is written into it)", fg=typer.colors.YELLOW, err=True)
        return out
    return out / REPORT_NAME


def evaluate(
    pred: Path = typer.Option(..., help="Run directory with masks.tif (and run.json, trajectories.csv)."),
    gt: Path = typer.Option(..., help="Ground-truth folder written by `sam4em-live simulate`."),
    out: Path | None = typer.Option(
        None, help=f"The folder to write {REPORT_NAME} into (created; default: the run folder PRED)."),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Score a recorded run against simulated ground truth: J, F, J&F, centroid error, misses, id switches."""
    from tqdm import tqdm

    from sam4em_live.evaluate.rundir import EvaluationInputError, evaluate_directories

    target = _report_path(pred, out)
    with tqdm(unit="frame", desc="evaluate", disable=not progress) as bar:
        def on_page(done: int, total: int) -> None:
            bar.total = total
            bar.update(1)

        try:
            report = evaluate_directories(pred, gt, on_page=on_page)
        except (EvaluationInputError, FileNotFoundError) as exc:
            bar.close()
            fail(str(exc))
    typer.echo(report.table())
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(report.to_json() + "\n")
    typer.echo(f"report: {target}")
    typer.echo(json.dumps(json.loads(report.to_json())["summary"]))


def register(app: typer.Typer) -> None:
    """Add the ``evaluate`` command to the CLI ``app``."""
    app.command("evaluate")(evaluate)
