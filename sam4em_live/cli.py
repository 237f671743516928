"""The ``sam4em-live`` command line. The only place logging is configured.

Feature packages contribute commands through a ``register(app)`` function in
their ``commands`` module, listed in `COMMAND_MODULES`.

Conventions every command follows (issue 20):

- ``--out`` is always the folder the command creates or writes its outputs into (``track``, ``demo`` and
  ``serve``: the run folder itself; ``simulate``, ``analyze``, ``evaluate``, ``keys``: the output folder).
- Endpoints are named by what flows through them: ``--frames-endpoint`` (detector frames),
  ``--results-endpoint`` (the service's results), ``--control-endpoint`` (its control channel), on every
  command that binds or connects one. Older spellings still work, with a deprecation note.
- ``-v``/``-q`` work anywhere on the line (``sam4em-live track ... -v``).
- Log lines go through the progress bars' writer, so they never break a bar.
"""

from __future__ import annotations

import importlib
import logging
import re
import sys
from typing import Any

import typer
import typer.core

#: -v, -vv, -q and their long forms: accepted after the subcommand too (moved before it when parsing).
_VERBOSITY = re.compile(r"^(-v+|-q|--verbose|--quiet)$")


class _VerbosityAnywhere(typer.core.TyperGroup):
    """A group that takes ``-v``/``-q`` wherever they appear, not only before the subcommand."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:  # Any: typer passes its own vendored Context
        head, tail = (args[: args.index("--")], args[args.index("--"):]) if "--" in args else (args, [])
        flags = [a for a in head if _VERBOSITY.match(a)]
        rest = [a for a in head if not _VERBOSITY.match(a)]
        return super().parse_args(ctx, [*flags, *rest, *tail])

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        """Each command's first sentence whole (click cuts it at the terminal width with "...")."""
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=1_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


app = typer.Typer(
    name="sam4em-live",
    help="Real-time single-particle tracking for liquid-phase TEM.",
    cls=_VerbosityAnywhere,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: rich's tables cut long option values with an ellipsis and read "[...]" as markup.
    rich_markup_mode=None,
    context_settings={"max_content_width": 120},
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
    "sam4em_live.batch.commands",
)

for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


class ProgressAwareHandler(logging.Handler):
    """Writes log records to stderr through ``tqdm.write``, which clears a running bar and redraws it below."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:
            self.handleError(record)


def configure_logging(verbose: int = 0, quiet: bool = False) -> None:
    """INFO by default, DEBUG with ``-vv``, WARNING with ``-q``; one handler on the root logger."""
    level = logging.WARNING if quiet else logging.DEBUG if verbose > 1 else logging.INFO
    root = logging.getLogger()
    for handler in [h for h in root.handlers if isinstance(h, ProgressAwareHandler)]:
        root.removeHandler(handler)
    handler = ProgressAwareHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root.addHandler(handler)
    root.setLevel(level)


@app.callback()
def _configure(
    verbose: int = typer.Option(0, "--verbose", "-v", count=True,
                                help="More log output (-vv for debug); also after the command."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors; also after the command."),
) -> None:
    configure_logging(verbose, quiet)


def main(args: list[str] | None = None) -> Any:
    """Run the ``sam4em-live`` command line (the console-script entry point).

    A configuration error a command did not catch still ends as one line (exit 2), never a traceback
    or a raw pydantic dump.
    """
    from pydantic import ValidationError

    from sam4em_live.config import ConfigError, format_validation_error

    try:
        return app(args=args)
    except (ConfigError, ValidationError) as exc:
        message = format_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
        typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
        sys.exit(2)
