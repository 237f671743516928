"""CLI commands of the control channel: ``sam4em-live keys`` and ``sam4em-live ctl``."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from sam4em_live.cli_options import CONTROL_ENDPOINT, renamed
from sam4em_live.control.client import ControlClient, ControlError, ControlTimeout
from sam4em_live.control.keys import generate_keys


def register(app: typer.Typer) -> None:
    """Add the ``keys`` and ``ctl`` commands to the CLI ``app``."""
    app.command("keys")(keys)
    app.command("ctl")(ctl)


def keys(
    out: Path = typer.Option(..., "--out", help="Directory for the key files (created if missing)."),
    client: list[str] = typer.Option(["client"], "--client", help="Client name; repeat for several clients."),
    force: bool = typer.Option(False, "--force", help="Replace existing keys."),
) -> None:
    """Generate CURVE keys for a control channel bound beyond loopback.

    Set ``control.curve_keys_dir`` to OUT on the service; give each client
    OUT/server.key and its own OUT/<client>.key_secret.
    """
    try:
        written = generate_keys(out, tuple(client), force=force)
    except FileExistsError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    for path in written:
        typer.echo(str(path))
    typer.echo(f"server secret: {out / 'server.key_secret'} (keep on the service host, mode 600)")


def ctl(
    op: str = typer.Argument(..., help="ping | status | config | particles | pause | resume | annotate"),
    text: str | None = typer.Argument(None, help="Text for annotate."),
    control_endpoint: str | None = typer.Option(
        None, CONTROL_ENDPOINT, help="The service's control endpoint [default: tcp://127.0.0.1:5557]."),
    endpoint: str | None = typer.Option(None, "--endpoint", hidden=True, help=f"Deprecated: {CONTROL_ENDPOINT}."),
    keys_dir: Path | None = typer.Option(None, "--keys", help="CURVE keys directory (client side)."),
    client: str = typer.Option("client", "--client", help="Client key name in --keys."),
    timeout_s: float = typer.Option(2.0, "--timeout-s", help="Reply timeout in seconds."),
) -> None:
    """Send one control request and print the reply as JSON."""
    args = {"text": text} if op == "annotate" else None
    endpoint = renamed(control_endpoint, CONTROL_ENDPOINT, endpoint, "--endpoint") or "tcp://127.0.0.1:5557"
    if keys_dir is not None:
        ctl_client = ControlClient.from_keys_dir(endpoint, keys_dir, client, timeout_s=timeout_s)
    else:
        ctl_client = ControlClient(endpoint, timeout_s=timeout_s)
    with ctl_client:
        try:
            result = ctl_client.request(op, args)
        except (ControlError, ControlTimeout) as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(1) from None
    typer.echo(json.dumps(result, indent=2, default=str))
