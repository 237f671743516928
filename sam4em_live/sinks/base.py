"""The sink seam: consumers of results (publisher, recorder, hooks)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from sam4em_live.results import FrameResult, RunInfo


@runtime_checkable
class Sink(Protocol):
    """A consumer of per-frame results.

    - ``open(run)`` is called once on the pipeline thread before the first result.
    - ``consume(result)`` is called on the pipeline thread for every result, in
      frame order. It must return quickly (hand heavy work to its own thread)
      because a slow sink would stall the pipeline. Exceptions are logged and
      counted by the pipeline; the stream goes on.
    - ``on_status(status)`` is called about once a second with the service
      status snapshot as a JSON-able mapping.
    - ``close()`` is called once at teardown, even after errors; it flushes
      everything consumed so far.
    """

    def open(self, run: RunInfo) -> None: ...

    def consume(self, result: FrameResult) -> None: ...

    def on_status(self, status: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...
