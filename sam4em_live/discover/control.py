"""What a control client may ask of discovery.

The ``proposals``/``accept``/``reject``/``accept_all`` ops, and ``add_prompt`` without a particle id.
Implemented by `sam4em_live.service.service.Service`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from collections.abc import Sequence


@runtime_checkable
class DiscoveryControl(Protocol):
    """Thread-safe, quick; none waits for the pipeline.

    - ``new_particle_id()`` allocates an id never used in this run (for a prompt sent without one).
    - ``proposals()``: the open proposals, one JSON-able dict each (``proposal`` id, position, size, outline).
    - ``accept(proposals, particle)``: each proposal becomes a particle with a new id (or ``particle``, when
      one proposal is accepted under a chosen id); returns ``[{"proposal": p, "particle": id}, ...]``.
      Raises `KeyError` for a proposal that is not open.
    - ``reject(proposals)``: they are closed and not proposed again; returns the ids rejected.
    - ``accept_all()``: `accept` every open proposal.
    """

    def new_particle_id(self) -> int: ...

    def proposals(self) -> list[dict[str, Any]]: ...

    def accept(self, proposals: Sequence[int], particle: int | None = None) -> list[dict[str, int]]: ...

    def reject(self, proposals: Sequence[int]) -> list[int]: ...

    def accept_all(self) -> list[dict[str, int]]: ...
