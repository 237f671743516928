"""What every command's options share: the names, the meaning of ``--out``, one-line errors, deprecations.

The command modules (``service/commands.py``, ``monitor/commands.py``...) sit in different layers; this
module sits at the bottom so each can use it. The conventions (issue 20):

- ``--out`` is always the folder the command creates or writes its outputs into.
- Endpoints are named by what flows through them: `FRAMES_ENDPOINT`, `RESULTS_ENDPOINT`,
  `CONTROL_ENDPOINT`. Older spellings stay as hidden options that say they are deprecated.
- A refusal is one red line on stderr and exit code 2 (`fail`); a pydantic error is flattened to one
  line naming each key (`sam4em_live.config.format_validation_error`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NoReturn, TypeVar

import typer

if TYPE_CHECKING:
    from pathlib import Path

T = TypeVar("T")

FRAMES_ENDPOINT = "--frames-endpoint"
RESULTS_ENDPOINT = "--results-endpoint"
CONTROL_ENDPOINT = "--control-endpoint"


def fail(message: str) -> NoReturn:
    """Refuse with one line on stderr and exit code 2."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def warn(message: str) -> None:
    """One yellow line on stderr (the command goes on)."""
    typer.secho(f"warning: {message}", fg=typer.colors.YELLOW, err=True)


def one_line(exc: BaseException) -> str:
    """An exception as one line: a pydantic error flattened to ``key: problem; key: problem``."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        from sam4em_live.config import format_validation_error

        return format_validation_error(exc)
    return " ".join(str(exc).split())


def renamed(new_value: T | None, new_name: str, old_value: T | None, old_name: str) -> T | None:
    """The value of an option given under its new or its deprecated name (a note when the old one is used)."""
    if old_value is None:
        return new_value
    if new_value is not None and new_value != old_value:
        fail(f"{old_name} is the old name of {new_name}: give only {new_name}")
    typer.secho(f"note: {old_name} is deprecated; use {new_name}", fg=typer.colors.YELLOW, err=True)
    return old_value


def run_folder(out: Path | None) -> tuple[Path | None, str | None]:
    """``--out`` of a command that records a run (``serve``, ``demo``): (the folder it goes in, its run id).

    ``--out`` names the run folder itself, as for ``track``. An existing folder keeps the older meaning
    (the run folder is created inside it, named by its run id), with a note.
    """
    if out is None:
        return None, None
    if out.is_dir():
        typer.secho(f"note: --out {out} exists, so the run folder is created inside it (deprecated: --out now "
                    "names the run folder itself, which must not exist)", fg=typer.colors.YELLOW, err=True)
        return out, None
    return out.parent, out.name
