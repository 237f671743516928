"""CLI: ``sam4em-live monitor --results-endpoint tcp://HOST:PORT [--control-endpoint ...] [--snapshot PATH.png]``."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from sam4em_live.cli_options import CONTROL_ENDPOINT, RESULTS_ENDPOINT, renamed

log = logging.getLogger(__name__)


def run_monitor(connect: str, control: str | None = None, snapshot: Path | None = None, after_s: float = 5.0,
                levels: tuple[float, float] | None = None, tail_frames: int = 200,
                control_timeout_s: float = 2.0) -> int:
    """Open the dashboard; with ``snapshot``, render it after ``after_s`` seconds, save and return.

    Returns the number of results received (so scripts can tell an empty snapshot).
    """
    if snapshot is not None:
        # Headless: no display needed for reports and CI.
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PySide6 import QtCore, QtWidgets

    from sam4em_live.monitor.subscriber import ResultsSubscriber
    from sam4em_live.monitor.window import MonitorWindow

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication([])
    subscriber = ResultsSubscriber(connect)
    sink = proposal_sink = None
    if control is not None:
        from sam4em_live.control.client import ControlClient

        sink = ControlClient(control, timeout_s=control_timeout_s, origin="monitor")  # edits logged as the monitor's
        # discovery proposals go on their own thread, and a client serves one thread
        proposal_sink = ControlClient(control, timeout_s=control_timeout_s, origin="monitor")
    subscriber.start()
    window = MonitorWindow(subscriber, sink, levels=levels, tail_frames=tail_frames, source_name=connect,
                           proposal_sink=proposal_sink)
    window.resize(1400, 820)
    window.show()
    if snapshot is not None:
        def take_snapshot() -> None:
            window.refresh()  # include everything received up to now
            window.snapshot(str(snapshot))
            app.quit()

        QtCore.QTimer.singleShot(int(after_s * 1000), take_snapshot)
    try:
        app.exec()
    finally:
        window.shutdown()
        for client in (sink, proposal_sink):
            if client is not None:
                client.close()
    return window.model.results_received


def monitor(
    results_endpoint: Annotated[str | None, typer.Option(
        RESULTS_ENDPOINT, help="The service's results endpoint [default: tcp://127.0.0.1:5556].")] = None,
    control_endpoint: Annotated[str | None, typer.Option(
        CONTROL_ENDPOINT, help="The service's control endpoint (enables prompts).")] = None,
    connect: Annotated[str | None, typer.Option(
        "--connect", hidden=True, help=f"Deprecated: {RESULTS_ENDPOINT}.")] = None,
    control: Annotated[str | None, typer.Option(
        "--control", hidden=True, help=f"Deprecated: {CONTROL_ENDPOINT}.")] = None,
    snapshot: Annotated[Path | None, typer.Option(
        "--snapshot", help="Render the dashboard to this PNG after --after seconds and exit (headless).")] = None,
    after: Annotated[float, typer.Option("--after", min=0.0, help="Seconds to collect before the snapshot.")] = 5.0,
    levels: Annotated[tuple[float, float] | None, typer.Option(
        "--levels", help="Fixed display levels LOW HIGH (raw pixel values); default: from the first frame.")] = None,
    tail_frames: Annotated[int, typer.Option("--tail-frames", min=1, help="Trajectory tail length (frames).")] = 200,
) -> None:
    """Live dashboard: frame with masks, ids and tails, rolling tMSD, service status; prompts by mouse.

    With discovery in propose mode, its proposals are drawn (dashed outlines) and listed to accept or reject.
    """
    connect = renamed(results_endpoint, RESULTS_ENDPOINT, connect, "--connect") or "tcp://127.0.0.1:5556"
    control = renamed(control_endpoint, CONTROL_ENDPOINT, control, "--control")
    if snapshot is not None and snapshot.suffix.lower() != ".png":
        typer.secho("error: --snapshot must be a .png path", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    if levels is not None and levels[1] <= levels[0]:
        typer.secho("error: --levels needs LOW < HIGH", fg=typer.colors.RED, err=True)
        raise typer.Exit(2)
    from sam4em_live.monitor.qt_runtime import BrokenQtBindings

    try:
        received = run_monitor(connect, control, snapshot, after, levels, tail_frames)
    except BrokenQtBindings as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(2) from None
    if snapshot is not None:
        typer.echo(f"snapshot written to {snapshot} ({received} results received)")
        if received == 0:
            typer.secho(f"warning: no results received from {connect}", fg=typer.colors.YELLOW, err=True)
            raise typer.Exit(3)


def register(app: typer.Typer) -> None:
    """Add the ``monitor`` command to the CLI ``app``."""
    app.command()(monitor)
