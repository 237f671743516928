"""ZeroMQ CURVE key files for the control channel.

Layout of a keys directory (made by ``sam4em-live keys --out DIR``)::

    DIR/server.key                     server public key (give to clients)
    DIR/server.key_secret              server key pair (keep on the service host)
    DIR/client.key_secret              a client key pair (give to one trusted client)
    DIR/authorized_clients/client.key  public keys the server accepts (one file per client)

The server accepts exactly the clients whose public key file is in
``authorized_clients/``; revoke a client by deleting its file and restarting.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.auth

SERVER_NAME = "server"
AUTHORIZED_DIR = "authorized_clients"


class KeyFileError(RuntimeError):
    """Missing or unreadable key files; the message names the file."""


@dataclass(frozen=True, slots=True)
class ServerKeys:
    """The server's CURVE key pair and the folder of client public keys it accepts."""

    public: bytes
    secret: bytes
    authorized_dir: Path


@dataclass(frozen=True, slots=True)
class ClientKeys:
    """A client's CURVE key pair and the public key of the server it talks to."""

    public: bytes
    secret: bytes
    server_public: bytes


def generate_keys(out_dir: Path, clients: tuple[str, ...] = ("client",), force: bool = False) -> list[Path]:
    """Create a server key pair and one key pair per client name; return the files written.

    Refuses to overwrite existing keys unless ``force``. Secret files are made
    readable by the owner only.
    """
    if not zmq.has("curve"):
        raise RuntimeError("this libzmq was built without CURVE support")
    out_dir = Path(out_dir)
    names = (SERVER_NAME, *clients)
    existing = [out_dir / f"{n}.key_secret" for n in names if (out_dir / f"{n}.key_secret").exists()]
    if existing and not force:
        raise FileExistsError(f"keys already exist ({existing[0]}); pass --force to replace them")
    authorized = out_dir / AUTHORIZED_DIR
    authorized.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for name in names:
        public, secret = zmq.auth.create_certificates(str(out_dir), name)
        os.chmod(secret, 0o600)
        written += [Path(public), Path(secret)]
        if name != SERVER_NAME:
            written.append(Path(shutil.copy(public, authorized / f"{name}.key")))
    return written


def load_server_keys(keys_dir: Path) -> ServerKeys:
    """The server keys `generate_keys` wrote to ``keys_dir``; raises if there is no authorized client key."""
    keys_dir = Path(keys_dir)
    public, secret = _load_pair(keys_dir / f"{SERVER_NAME}.key_secret")
    authorized = keys_dir / AUTHORIZED_DIR
    if not authorized.is_dir() or not any(authorized.glob("*.key")):
        raise KeyFileError(f"no authorized client keys in {authorized}: nobody could connect")
    return ServerKeys(public, secret, authorized)


def load_client_keys(keys_dir: Path, client: str = "client") -> ClientKeys:
    """Load a client key pair and the server's public key from one directory."""
    keys_dir = Path(keys_dir)
    public, secret = _load_pair(keys_dir / f"{client}.key_secret")
    server_public, _ = _load(keys_dir / f"{SERVER_NAME}.key")
    return ClientKeys(public, secret, server_public)


def _load_pair(path: Path) -> tuple[bytes, bytes]:
    public, secret = _load(path)
    if secret is None:
        raise KeyFileError(f"{path} holds no secret key")
    return public, secret


def _load(path: Path) -> tuple[bytes, bytes | None]:
    if not path.is_file():
        raise KeyFileError(f"key file not found: {path} (make keys with `sam4em-live keys --out DIR`)")
    try:
        return zmq.auth.load_certificate(str(path))
    except (ValueError, OSError) as exc:
        raise KeyFileError(f"cannot read key file {path}: {exc}") from None
