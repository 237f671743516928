"""The control server: a ZeroMQ REP socket that feeds validated requests to a `ServiceControl`.

Security model (docs/control.md): the server binds loopback by default. A
non-loopback bind needs CURVE keys (``curve_keys_dir``); only clients whose
public key is in ``authorized_clients/`` complete the handshake, others never
get a reply. ``insecure=True`` allows a plain non-loopback bind and logs a
loud warning. Every request is validated by `schema.parse_request`; a bad
request gets an error reply and the server carries on.

Denial of service (issue 18): each message part larger than
``HARD_LIMIT_FACTOR x max_message_bytes`` is refused by libzmq itself
(``zmq.MAXMSGSIZE``: the peer is disconnected, nothing is read); a request is
read one part at a time without copying, and the parts after the first are
discarded unread by Python; at most ``max_requests_per_s`` requests are served
per second -- beyond it the server stops reading until a slot is free, so a
flooding client waits for its replies instead of taking the worker's CPU.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import zmq
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils.monitor import recv_monitor_message

from sam4em_live.control import schema
from sam4em_live.control.keys import load_server_keys
from sam4em_live.control.quotas import RateLimit
from sam4em_live.control_api import QuotaExceeded, is_loopback_endpoint
from sam4em_live.discover.control import DiscoveryControl
from sam4em_live.particles import PromptError

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from sam4em_live.config import ControlConfig
    from sam4em_live.control_api import ServiceControl

logger = logging.getLogger(__name__)

POLL_MS = 100
#: Message parts above this multiple of the limit are dropped by libzmq (connection closed) unread.
HARD_LIMIT_FACTOR = 4
#: Receive queue per client (messages): a client that floods waits in its own socket, not in our memory.
RCVHWM_MESSAGES = 16

__all__ = ["ControlCounters", "ControlSecurityError", "ControlServer", "is_loopback_endpoint"]


class ControlSecurityError(RuntimeError):
    """A bind that the security policy refuses (non-loopback without keys or --insecure)."""


@dataclass(slots=True)
class ControlCounters:
    """Requests served, errors (by code), paced requests and refused CURVE handshakes since the server started."""

    requests: int = 0
    errors: int = 0
    refused_handshakes: int = 0  # CURVE clients without an authorized key (or no keys at all)
    paced: int = 0  # requests that waited because more than max_requests_per_s arrived
    extra_parts_discarded: int = 0  # message parts after the first, discarded unread (multi-part requests)
    errors_by_code: dict[str, int] = field(default_factory=dict)

    def error(self, code: str) -> None:
        self.errors += 1
        self.errors_by_code[code] = self.errors_by_code.get(code, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        """JSON-able copy (the ``control`` entry of the ``status`` reply)."""
        return asdict(self)


class ControlServer:
    """Serve control requests on ``endpoint`` from a thread.

    ``start()`` binds at once (errors are raised to the caller) and returns the
    bound endpoint (``tcp://127.0.0.1:0`` picks a free port). The thread polls
    its stop event every 100 ms; ``stop()`` joins it and closes the socket.
    """

    def __init__(
        self,
        control: ServiceControl,
        endpoint: str = "tcp://127.0.0.1:5557",
        *,
        curve_keys_dir: Path | None = None,
        insecure: bool = False,
        max_message_bytes: int = 65536,
        max_requests_per_s: float = 200.0,
    ) -> None:
        self._control = control
        self._requested_endpoint = endpoint
        self._keys_dir = curve_keys_dir
        self._insecure = insecure
        self._max_bytes = max_message_bytes
        self._requests = RateLimit(max_requests_per_s)
        self._held_back = False
        self._context: zmq.Context | None = None
        self._socket: zmq.Socket | None = None
        self._monitor: zmq.Socket | None = None
        self._auth: ThreadAuthenticator | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.endpoint: str | None = None
        self.counters = ControlCounters()

    @classmethod
    def from_config(cls, config: ControlConfig, control: ServiceControl) -> ControlServer:
        return cls(
            control,
            config.endpoint,
            curve_keys_dir=config.curve_keys_dir,
            insecure=config.insecure,
            max_message_bytes=config.max_message_bytes,
            max_requests_per_s=config.max_requests_per_s,
        )

    @property
    def secure(self) -> bool:
        return self._keys_dir is not None

    def start(self) -> str:
        self._check_policy()
        self._context = zmq.Context()
        try:
            self._socket = self._bind()
        except Exception:
            self._teardown()
            raise
        self._thread = threading.Thread(target=self._serve, name="control-server", daemon=True)
        self._thread.start()
        logger.info("control channel on %s (%s)", self.endpoint, "CURVE" if self.secure else "plain")
        return self.endpoint or ""

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            if self._thread.is_alive():
                logger.error("control server thread did not stop within 5 s")
            self._thread = None
        else:
            self._teardown()

    close = stop  # the builder's teardown calls close()

    def __enter__(self) -> ControlServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _check_policy(self) -> None:
        if is_loopback_endpoint(self._requested_endpoint) or self.secure:
            return
        if not self._insecure:
            raise ControlSecurityError(
                f"refusing to bind the control channel to {self._requested_endpoint} without CURVE keys: "
                "anyone on the network could steer the service. Make keys with `sam4em-live keys --out DIR` "
                "and set control.curve_keys_dir, or pass --insecure on a trusted network."
            )
        logger.warning(
            "INSECURE CONTROL CHANNEL: %s is bound without encryption or authentication; "
            "anyone who can reach it can pause the service and edit prompts",
            self._requested_endpoint,
        )

    def _bind(self) -> zmq.Socket:
        assert self._context is not None
        sock = self._context.socket(zmq.REP)
        sock.linger = 0
        sock.setsockopt(zmq.MAXMSGSIZE, self._max_bytes * HARD_LIMIT_FACTOR)  # per part, before reading
        sock.rcvhwm = RCVHWM_MESSAGES
        if ":" in (urlsplit(self._requested_endpoint).hostname or ""):
            sock.ipv6 = True
        if self._keys_dir is not None:
            keys = load_server_keys(self._keys_dir)
            self._auth = ThreadAuthenticator(self._context)
            self._auth.start()
            self._auth.configure_curve(domain="*", location=str(keys.authorized_dir))
            sock.curve_secretkey = keys.secret
            sock.curve_publickey = keys.public
            sock.curve_server = True
        try:
            sock.bind(self._requested_endpoint)
        except zmq.ZMQError as exc:
            sock.close(linger=0)
            raise OSError(f"cannot bind control channel to {self._requested_endpoint}: {exc}") from None
        self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        if self._keys_dir is not None:  # watch handshakes so refused clients show in logs and counters
            self._monitor = sock.get_monitor_socket(
                zmq.EVENT_HANDSHAKE_FAILED_AUTH | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
                | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
            )
        return sock

    def _serve(self) -> None:
        assert self._socket is not None
        poller = zmq.Poller()
        poller.register(self._socket, zmq.POLLIN)
        if self._monitor is not None:
            poller.register(self._monitor, zmq.POLLIN)
        try:
            while not self._stop.is_set():
                ready = dict(poller.poll(POLL_MS))
                if self._monitor is not None and self._monitor in ready:
                    self._note_handshake(recv_monitor_message(self._monitor, zmq.NOBLOCK))
                if self._socket in ready and self._paced():
                    self._socket.send(self._answer(self._socket))
        except Exception:  # a socket failure ends the channel, never the service
            logger.exception("control server stopped after a socket error")
        finally:
            self._teardown()

    def _paced(self) -> bool:
        """Take a request slot; False (after waiting up to one poll) while over ``max_requests_per_s``."""
        wait_s = self._requests.wait_s()
        if wait_s > 0:
            self._held_back = True
            self._stop.wait(min(wait_s, POLL_MS / 1000))
            return False
        if not self._requests.try_take():
            return False
        if self._held_back:
            self.counters.paced += 1
            self._held_back = False
        return True

    def _answer(self, sock: zmq.Socket) -> bytes:
        """Read one request part by part and answer it.

        libzmq hands over a multi-part message only once all its parts have
        arrived, so they are in its memory already; here the first part is read
        without a copy and the others are released unread (``copy=False``), so a
        300-part request never becomes 300 Python byte strings.
        """
        first = sock.recv(zmq.NOBLOCK, copy=False)
        parts = 1
        while sock.getsockopt(zmq.RCVMORE):
            sock.recv(copy=False)
            parts += 1
        if parts > 1:
            self.counters.extra_parts_discarded += parts - 1
            self.counters.requests += 1
            self.counters.error("malformed")
            return schema.encode_error("malformed", f"expected one message part, got {parts}")
        return self.handle([first.bytes])  # at most HARD_LIMIT_FACTOR x the limit (MAXMSGSIZE)

    def handle(self, parts: list[bytes]) -> bytes:
        """Answer one raw request (a list of frames); never raises."""
        self.counters.requests += 1
        try:
            if len(parts) != 1:
                raise schema.RequestError("malformed", f"expected one message part, got {len(parts)}")
            request = schema.parse_request(parts[0], self._max_bytes)
            return schema.encode_ok(self._dispatch(request))
        except QuotaExceeded as exc:
            self.counters.error("quota_exceeded")
            return schema.encode_error("quota_exceeded", f"{exc.quota}: {exc}")
        except schema.RequestError as exc:
            self.counters.error(exc.code)
            logger.info("control request refused (%s): %s", exc.code, exc)
            return schema.encode_error(exc.code, str(exc))
        except PromptError as exc:
            self.counters.error("invalid_prompt")
            return schema.encode_error("invalid_prompt", str(exc))
        except Exception as exc:  # the service failed; report it, keep serving
            self.counters.error("internal")
            logger.exception("control request failed")
            return schema.encode_error("internal", f"{type(exc).__name__}: {exc}")

    def _dispatch(self, request: schema.Request) -> Any:
        control = self._control
        op = request.op
        if op == "ping":
            return {"pong": True, "schema": schema.SCHEMA_VERSION}
        if op in schema.DISCOVERY_OPERATIONS or request.new_particle:
            return self._discovery(request)
        if request.edit is not None:
            control.submit_edit(request.edit)
            return {"queued": True, "particle": request.edit.particle}
        if op == "annotate":
            control.annotate(request.text or "")
            return {"annotated": True}
        if op in ("pause", "resume"):
            control.pause() if op == "pause" else control.resume()
            return {"paused": op == "pause"}
        if op == "status":
            return {**control.status().as_dict(), "control": self.counters.as_dict()}
        if op == "config":
            return control.describe_config()
        if op == "particles":
            return control.particles()
        raise schema.RequestError("unknown_op", f"unknown op {op!r}")  # pragma: no cover - schema guards

    def _discovery(self, request: schema.Request) -> Any:
        """Discovery ops and prompts without an id (docs/discovery.md): only a `DiscoveryControl` serves them."""
        control = self._control
        if not isinstance(control, DiscoveryControl):
            raise schema.RequestError("unsupported", f"{request.op}: this service does not own particle ids")
        if request.new_particle and request.edit is not None:
            particle = control.new_particle_id()
            control.submit_edit(dataclasses.replace(request.edit, particle=particle))
            return {"queued": True, "particle": particle}
        try:
            if request.op == "proposals":
                return control.proposals()
            if request.op == "accept":
                return control.accept(request.proposals, request.particle)
            if request.op == "reject":
                return {"rejected": control.reject(request.proposals)}
            return control.accept_all()
        except KeyError as exc:
            raise schema.RequestError("unknown_proposal", str(exc.args[0] if exc.args else exc)) from None

    def _note_handshake(self, event: Mapping[str, object]) -> None:
        self.counters.refused_handshakes += 1
        count = self.counters.refused_handshakes
        if count <= 5 or count % 100 == 0:  # a refused client retries every ~100 ms: do not flood the log
            logger.warning("control channel refused a client handshake (%s; %d so far): missing, wrong or "
                           "unauthorized CURVE key", getattr(event.get("event"), "name", event.get("event")), count)

    def _teardown(self) -> None:
        if self._monitor is not None:
            self._monitor.close(linger=0)
            self._monitor = None
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None
        if self._auth is not None:
            self._auth.stop()
            self._auth = None
        if self._context is not None:
            self._context.term()
            self._context = None
