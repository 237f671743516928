"""The ``sam4em-live`` command line. The only place logging is configured.

Feature packages contribute commands through a ``register(app)`` function in
their ``commands`` module, listed in `COMMAND_MODULES`.
"""

from __future__ import annotations

import importlib
import logging

import typer

app = typer.Typer(
    name="sam4em-live",
    help="Real-time single-particle tracking for liquid-phase TEM.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Each module defines `register(app: typer.Typer) -> None`.
COMMAND_MODULES: tuple[str, ...] = (
    "sam4em_live.service.commands",
    "sam4em_live.control.commands",
    "sam4em_live.monitor.commands",
    "sam4em_live.sim.commands",
    "sam4em_live.evaluate.commands",
    "sam4em_live.analysis.commands",
    "sam4em_live.segment.sam2.commands",
)

for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


@app.callback()
def _configure(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True, help="More log output (-vv for debug)."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors."),
) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose > 1 else logging.INFO
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")


def main() -> None:
    """Run the ``sam4em-live`` command line (the console-script entry point)."""
    app()
