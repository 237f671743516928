"""Control channel schema v1: msgpack requests and replies (see docs/control.md).

A request is one msgpack map ``{"v": 1, "op": str, "args": map}`` (``args``
optional); a reply is ``{"v": 1, "ok": true, "result": ...}`` or
``{"v": 1, "ok": false, "error": {"code": str, "message": str}}``.
Everything from the network is untrusted: `parse_request` checks size, types
and ranges and raises `RequestError` (with a code for the error reply) before
anything reaches the service. Prompt coordinates are pixels, x = column,
y = row, origin at the centre of the top-left pixel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgpack

from sam4em_live.particles import ParticleEdit, Prompt, RemoveParticle

if TYPE_CHECKING:
    from collections.abc import Mapping

SCHEMA_VERSION = 1

#: Operations and whether they take arguments.
OPERATIONS: tuple[str, ...] = (
    "ping", "add_prompt", "correct", "remove", "pause", "resume",
    "status", "config", "particles", "annotate",
    "proposals", "accept", "reject", "accept_all",  # discovery (docs/discovery.md)
)
#: Ops served by a service that implements `sam4em_live.discover.control.DiscoveryControl`.
DISCOVERY_OPERATIONS: tuple[str, ...] = ("proposals", "accept", "reject", "accept_all")
MAX_PROPOSALS_PER_REQUEST = 1024

MAX_POINTS_PER_PROMPT = 256
MAX_ANNOTATION_CHARS = 4096
MAX_PARTICLE_ID = 2**31 - 1
#: Who a client may say made an edit (``origin`` in prompt and remove args; the run's edits log records it).
CLIENT_ORIGINS = ("control", "monitor")


class RequestError(ValueError):
    """A request that cannot be served; ``code`` goes into the error reply."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Request:
    """A validated request.

    ``edit`` is set for prompt ops, ``text`` for annotate, ``proposals`` (and
    ``particle``) for accept/reject. ``new_particle``: an ``add_prompt`` without a particle id, whose
    ``edit.particle`` is a placeholder 0 until the service allocates one.
    """

    op: str
    edit: ParticleEdit | None = None
    text: str | None = None
    proposals: tuple[int, ...] = ()
    particle: int | None = None
    new_particle: bool = False


def encode_request(op: str, args: Mapping[str, Any] | None = None) -> bytes:
    """A v1 request for ``op`` with its arguments (client side)."""
    return msgpack.packb({"v": SCHEMA_VERSION, "op": op, "args": dict(args or {})}, use_bin_type=True)


def encode_ok(result: Any) -> bytes:
    """A v1 success reply carrying ``result`` (server side)."""
    return msgpack.packb({"v": SCHEMA_VERSION, "ok": True, "result": result}, use_bin_type=True)


def encode_error(code: str, message: str) -> bytes:
    """A v1 error reply: a stable ``code`` and a message cut to 1000 characters (server side)."""
    error = {"code": code, "message": message[:1000]}
    return msgpack.packb({"v": SCHEMA_VERSION, "ok": False, "error": error}, use_bin_type=True)


def decode_reply(payload: bytes) -> dict[str, Any]:
    """Decode a reply (client side); raises `RequestError` if it is not a v1 reply."""
    try:
        reply = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise RequestError("malformed_reply", f"reply is not msgpack: {exc}") from None
    if not isinstance(reply, dict) or reply.get("v") != SCHEMA_VERSION or not isinstance(reply.get("ok"), bool):
        raise RequestError("malformed_reply", f"not a v{SCHEMA_VERSION} reply: {str(reply)[:200]}")
    return reply


def parse_request(payload: bytes, max_bytes: int) -> Request:
    """Validate one raw request.

    Raises
    ------
    RequestError
        ``too_large``, ``malformed`` (not a msgpack map), ``unsupported_version``,
        ``unknown_op`` or ``bad_request`` (wrong argument names, types or ranges).
    """
    if len(payload) > max_bytes:
        raise RequestError("too_large", f"request is {len(payload)} bytes; the limit is {max_bytes}")
    try:
        message = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except (ValueError, TypeError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise RequestError("malformed", f"request is not a msgpack message: {exc}") from None
    if not isinstance(message, dict):
        raise RequestError("malformed", f"request must be a map, got {type(message).__name__}")
    _check_keys(message, required={"v", "op"}, optional={"args"}, where="request")
    if message["v"] != SCHEMA_VERSION:
        raise RequestError("unsupported_version", f"schema version {message['v']!r}; this server speaks 1")
    op = message["op"]
    if not isinstance(op, str) or op not in OPERATIONS:
        raise RequestError("unknown_op", f"unknown op {str(op)[:64]!r}; known: {', '.join(OPERATIONS)}")
    args = message.get("args", {})
    if not isinstance(args, dict):
        raise RequestError("bad_request", "args must be a map")
    return _parse_args(op, args)


def _parse_args(op: str, args: dict[str, Any]) -> Request:
    if op == "add_prompt" and "particle" not in args:  # the service allocates the id
        return Request(op, edit=_parse_prompt({**args, "particle": 1}, particle=0), new_particle=True)
    if op in ("add_prompt", "correct"):
        return Request(op, edit=_parse_prompt(args))
    if op in ("accept", "reject"):
        _check_keys(args, required={"proposals"}, optional={"particle"} if op == "accept" else set(), where=op)
        ids = args["proposals"]
        if not isinstance(ids, list) or not ids or len(ids) > MAX_PROPOSALS_PER_REQUEST:
            raise RequestError("bad_request", f"{op}: proposals must be a list of 1 to {MAX_PROPOSALS_PER_REQUEST} ids")
        proposals = tuple(_int({"proposal": p}, "proposal", 1, MAX_PARTICLE_ID) for p in ids)
        return Request(op, proposals=proposals, particle=_optional_int(args, "particle", 1, MAX_PARTICLE_ID))
    if op == "remove":
        _check_keys(args, required={"particle"}, optional={"frame", "origin"}, where=op)
        frame = _optional_int(args, "frame", 0, 2**62)
        return Request(op, edit=RemoveParticle(_int(args, "particle", 1, MAX_PARTICLE_ID), frame, _origin(args)))
    if op == "annotate":
        _check_keys(args, required={"text"}, optional=set(), where=op)
        text = args["text"]
        if not isinstance(text, str) or not text.strip():
            raise RequestError("bad_request", "annotate: text must be a non-empty string")
        if len(text) > MAX_ANNOTATION_CHARS:
            raise RequestError("bad_request", f"annotate: text longer than {MAX_ANNOTATION_CHARS} characters")
        return Request(op, text=text)
    _check_keys(args, required=set(), optional=set(), where=op)
    return Request(op)


def _parse_prompt(args: dict[str, Any], particle: int | None = None) -> Prompt:
    """The prompt in ``args``; ``particle`` given: that id instead (0: allocated later by the service)."""
    _check_keys(args, required={"particle"}, optional={"points", "labels", "box", "frame", "origin"}, where="prompt")
    particle = _int(args, "particle", 1, MAX_PARTICLE_ID) if particle is None else particle
    frame = _optional_int(args, "frame", 0, 2**62)
    points = args.get("points", [])
    labels = args.get("labels", [1] * len(points) if isinstance(points, list) else [])
    if not isinstance(points, list) or len(points) > MAX_POINTS_PER_PROMPT:
        raise RequestError("bad_request", f"points must be a list of at most {MAX_POINTS_PER_PROMPT} [x, y] pairs")
    parsed_points = tuple(_pair(p) for p in points)
    if not isinstance(labels, list) or len(labels) != len(parsed_points):
        raise RequestError("bad_request", "labels must be a list with one 0/1 label per point")
    if not all(label in (0, 1) and not isinstance(label, float) for label in labels):
        raise RequestError("bad_request", "labels must be 0 (background) or 1 (particle)")
    box = args.get("box")
    if box is not None:
        if not isinstance(box, list) or len(box) != 4:
            raise RequestError("bad_request", "box must be [x0, y0, x1, y1] in pixels")
        box = tuple(_number(v, "box") for v in box)
    if not parsed_points and box is None:
        raise RequestError("bad_request", "a prompt needs points or a box")
    return Prompt(particle, frame, parsed_points, tuple(int(v) for v in labels), box, _origin(args))


def _origin(args: dict[str, Any]) -> str:
    origin = args.get("origin", "control")
    if origin not in CLIENT_ORIGINS:
        raise RequestError("bad_request", f"origin must be one of {', '.join(CLIENT_ORIGINS)}, got {str(origin)[:32]}")
    return str(origin)


def _check_keys(data: dict[str, Any], required: set[str], optional: set[str], where: str) -> None:
    keys = set(data)
    if not all(isinstance(k, str) for k in keys):
        raise RequestError("bad_request", f"{where}: keys must be strings")
    missing = required - keys
    extra = keys - required - optional
    if missing:
        raise RequestError("bad_request", f"{where}: missing {', '.join(sorted(missing))}")
    if extra:
        raise RequestError("bad_request", f"{where}: unknown keys {', '.join(sorted(k[:32] for k in extra))}")


def _int(data: dict[str, Any], key: str, low: int, high: int) -> int:
    value = data[key]
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise RequestError("bad_request", f"{key} must be an integer in [{low}, {high}], got {str(value)[:32]}")
    return value


def _optional_int(data: dict[str, Any], key: str, low: int, high: int) -> int | None:
    return None if data.get(key) is None else _int(data, key, low, high)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RequestError("bad_request", f"{where}: coordinates must be finite numbers, got {str(value)[:32]}")
    return float(value)


def _pair(value: Any) -> tuple[float, float]:
    if not isinstance(value, list) or len(value) != 2:
        raise RequestError("bad_request", "each point must be [x, y] in pixels (x = column, y = row)")
    return (_number(value[0], "point"), _number(value[1], "point"))
