"""Service state machine: the legal transitions between `ServiceState`s.

States and legal transitions::

    idle ─► starting ─► streaming ◄─► paused
                │            │          │
                └────────────┴──────────┴─► stopping ─► stopped
    any state ─► errored (an unrecoverable failure; teardown still runs)
"""

from __future__ import annotations

from sam4em_live.control_api import ServiceState

_ALLOWED: dict[ServiceState, frozenset[ServiceState]] = {
    ServiceState.IDLE: frozenset({ServiceState.STARTING, ServiceState.STOPPING}),
    ServiceState.STARTING: frozenset({ServiceState.STREAMING, ServiceState.STOPPING}),
    ServiceState.STREAMING: frozenset({ServiceState.PAUSED, ServiceState.STOPPING}),
    ServiceState.PAUSED: frozenset({ServiceState.STREAMING, ServiceState.STOPPING}),
    ServiceState.STOPPING: frozenset({ServiceState.STOPPED}),
    ServiceState.STOPPED: frozenset(),
    ServiceState.ERRORED: frozenset({ServiceState.STOPPED}),
}


class IllegalTransition(RuntimeError):
    """A state change the transition table does not allow."""


def check_transition(current: ServiceState, new: ServiceState) -> None:
    """Raise `IllegalTransition` unless ``current`` may go to ``new`` (``errored`` is always allowed)."""
    if new is ServiceState.ERRORED or new is current:
        return
    if new not in _ALLOWED[current]:
        raise IllegalTransition(f"cannot go from {current.value} to {new.value}")
