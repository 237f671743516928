"""Control channel: ZeroMQ REQ/REP with a msgpack schema (docs/control.md)."""

from sam4em_live.control.client import ControlClient, ControlError, ControlTimeout
from sam4em_live.control.server import ControlSecurityError, ControlServer, is_loopback_endpoint

__all__ = [
    "ControlClient",
    "ControlError",
    "ControlSecurityError",
    "ControlServer",
    "ControlTimeout",
    "is_loopback_endpoint",
]
