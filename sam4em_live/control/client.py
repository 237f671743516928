"""A small Python client for the control channel (user scripts, the monitor).

Example::

    from sam4em_live.control import ControlClient

    with ControlClient("tcp://127.0.0.1:5557") as ctl:
        ctl.add_prompt(1, points=[(512.0, 300.0)])   # x = column, y = row, pixels
        print(ctl.status()["processed_fps"])

A request that gets no reply within ``timeout_s`` raises `ControlTimeout`;
the REQ socket is then recreated so the next call works (a REQ socket that
lost its reply cannot send again). Error replies raise `ControlError`.
Not thread-safe: use one client per thread.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import zmq

from sam4em_live.control import schema
from sam4em_live.control.keys import ClientKeys, load_client_keys

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

logger = logging.getLogger(__name__)


class ControlError(RuntimeError):
    """The server answered with an error; ``code`` is the schema's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class ControlTimeout(TimeoutError):
    """No reply in time: the service is down, busy, or refused our CURVE keys."""


class ControlClient:
    """Blocking request/reply client; every method waits at most ``timeout_s`` seconds."""

    def __init__(
        self,
        endpoint: str = "tcp://127.0.0.1:5557",
        *,
        timeout_s: float = 2.0,
        curve_keys: ClientKeys | None = None,
        context: zmq.Context | None = None,
        origin: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.timeout_s = timeout_s
        #: Sent with every edit as who made it (``control`` or ``monitor``; None: the server's default, control).
        self.origin = origin
        self._keys = curve_keys
        self._context = context or zmq.Context.instance()
        self._socket: zmq.Socket | None = None

    @classmethod
    def from_keys_dir(cls, endpoint: str, keys_dir: Path, client: str = "client", **kw: Any) -> ControlClient:
        """Client authenticating with ``keys_dir/<client>.key_secret`` against ``keys_dir/server.key``."""
        return cls(endpoint, curve_keys=load_client_keys(keys_dir, client), **kw)

    # -- prompts ---------------------------------------------------------
    def add_prompt(
        self,
        particle: int | None,
        points: Sequence[tuple[float, float]] = (),
        labels: Sequence[int] | None = None,
        box: tuple[float, float, float, float] | None = None,
        frame: int | None = None,
    ) -> dict[str, Any]:
        """Track a new particle from points (x, y px; labels 1 = particle, 0 = background) and/or a box.

        ``particle`` None: the service allocates a new id; the reply's ``particle`` says which.
        """
        return self.request("add_prompt", self._with_origin(_prompt_args(particle, points, labels, box, frame)))

    def correct(
        self,
        particle: int,
        points: Sequence[tuple[float, float]] = (),
        labels: Sequence[int] | None = None,
        box: tuple[float, float, float, float] | None = None,
        frame: int | None = None,
    ) -> dict[str, Any]:
        """Re-seed an already tracked particle (same arguments as `add_prompt`)."""
        return self.request("correct", self._with_origin(_prompt_args(particle, points, labels, box, frame)))

    def remove(self, particle: int, frame: int | None = None) -> dict[str, Any]:
        args: dict[str, Any] = {"particle": particle}
        if frame is not None:
            args["frame"] = frame
        return self.request("remove", self._with_origin(args))

    # -- discovery (docs/discovery.md) -------------------------------------
    def proposals(self) -> list[dict[str, Any]]:
        """The open proposals (``proposal`` id, x, y, diameter_px, box, outline, score...)."""
        return self.request("proposals")

    def accept(self, proposals: Sequence[int], particle: int | None = None) -> list[dict[str, int]]:
        """Track these proposals, each under a new id (or ``particle`` for a single one): [{proposal, particle}]."""
        args: dict[str, Any] = {"proposals": [int(p) for p in proposals]}
        if particle is not None:
            args["particle"] = particle
        return self.request("accept", args)

    def reject(self, proposals: Sequence[int]) -> dict[str, Any]:
        return self.request("reject", {"proposals": [int(p) for p in proposals]})

    def accept_all(self) -> list[dict[str, int]]:
        return self.request("accept_all")

    def _with_origin(self, args: dict[str, Any]) -> dict[str, Any]:
        return {**args, "origin": self.origin} if self.origin is not None else args

    # -- service ---------------------------------------------------------
    def ping(self) -> dict[str, Any]:
        return self.request("ping")

    def pause(self) -> dict[str, Any]:
        return self.request("pause")

    def resume(self) -> dict[str, Any]:
        return self.request("resume")

    def status(self) -> dict[str, Any]:
        return self.request("status")

    def config(self) -> dict[str, Any]:
        return self.request("config")

    def particles(self) -> list[dict[str, Any]]:
        return self.request("particles")

    def annotate(self, text: str) -> dict[str, Any]:
        return self.request("annotate", {"text": text})

    # -- transport -------------------------------------------------------
    def request(self, op: str, args: dict[str, Any] | None = None) -> Any:
        """Send one request and return its ``result``; raise `ControlError` / `ControlTimeout`."""
        return self._exchange(schema.encode_request(op, args), op)

    def send_raw(self, payload: bytes) -> Any:
        """Send arbitrary bytes (for testing the server's validation); same errors as `request`."""
        return self._exchange(payload, "raw")

    def _exchange(self, payload: bytes, op: str) -> Any:
        sock = self._ensure_socket()
        timeout_ms = int(self.timeout_s * 1000)
        if not sock.poll(timeout_ms, zmq.POLLOUT):
            self._reset()
            raise ControlTimeout(f"{op}: could not send to {self.endpoint} within {self.timeout_s} s")
        sock.send(payload)
        if not sock.poll(timeout_ms, zmq.POLLIN):
            self._reset()
            raise ControlTimeout(
                f"{op}: no reply from {self.endpoint} within {self.timeout_s} s "
                "(service not running, or CURVE keys not accepted)"
            )
        try:
            reply = schema.decode_reply(sock.recv())
        except schema.RequestError as exc:
            raise ControlError(exc.code, str(exc)) from None
        if not reply["ok"]:
            error = reply.get("error") or {}
            raise ControlError(str(error.get("code", "unknown")), str(error.get("message", "")))
        return reply.get("result")

    def _ensure_socket(self) -> zmq.Socket:
        if self._socket is None:
            sock = self._context.socket(zmq.REQ)
            sock.linger = 0
            if self._keys is not None:
                sock.curve_secretkey = self._keys.secret
                sock.curve_publickey = self._keys.public
                sock.curve_serverkey = self._keys.server_public
            sock.connect(self.endpoint)
            self._socket = sock
        return self._socket

    def _reset(self) -> None:
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def close(self) -> None:
        self._reset()

    def __enter__(self) -> ControlClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _prompt_args(
    particle: int | None,
    points: Sequence[tuple[float, float]],
    labels: Sequence[int] | None,
    box: tuple[float, float, float, float] | None,
    frame: int | None,
) -> dict[str, Any]:
    args: dict[str, Any] = {} if particle is None else {"particle": particle}
    if points:
        args["points"] = [[float(x), float(y)] for x, y in points]
        args["labels"] = [int(v) for v in labels] if labels is not None else [1] * len(points)
    if box is not None:
        args["box"] = [float(v) for v in box]
    if frame is not None:
        args["frame"] = frame
    return args
