"""The sink seam: consumers of results (publisher, recorder, hooks), and the optional extras a sink may have.

`Sink` is required. `CountingSink` and `AnnotationSink` are optional: the service checks each sink against
them once, when it is given the sink, and from then on calls only what the sink declared.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
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


@runtime_checkable
class CountingSink(Protocol):
    """A sink that keeps counters for the status snapshot (``StatusSnapshot.sinks[<class name>]``).

    ``counters`` is read on the pipeline thread when a status snapshot is taken (about once a
    second, and at teardown); it returns named integer counts (mostly running totals: messages
    sent, results lost, hook calls) and must be cheap and not raise. The service copies the
    mapping, so a sink may return its live dict if no key is added once the sink is open.
    """

    @property
    def counters(self) -> Mapping[str, int]: ...


@runtime_checkable
class AnnotationSink(Protocol):
    """A sink that keeps user notes (``ServiceControl.annotate``), e.g. the recorder's ``annotations.jsonl``.

    ``annotate(text, frame)`` is called from the thread that asked for the note (the control
    server, a hook thread), not the pipeline thread, so it must be thread-safe and return
    quickly. ``frame`` is the index of the last frame delivered to the sinks (None before the
    first). It may raise (bad text, nowhere to keep the note): the error reaches the caller, so a
    control client or a hook learns that the note was not kept.
    """

    def annotate(self, text: str, frame: int | None = None) -> None: ...


def require_sink(sink: object) -> Sink:
    """``sink`` itself if it is a `Sink` (and a well-formed `CountingSink` if it has counters).

    Called when a sink is registered, so a bad plugin fails at once with a TypeError that names
    it, not mid-run. A ``counters`` that is not a mapping (an old-style ``counters()`` method) is
    refused here too.
    """
    name = type(sink).__name__
    if not isinstance(sink, Sink):
        raise TypeError(f"{name} is not a Sink: a sink needs open(run), consume(result), on_status(status) and close()")
    if isinstance(sink, CountingSink) and not isinstance(sink.counters, Mapping):
        raise TypeError(f"{name}.counters must be a property giving a Mapping[str, int], "
                        f"got {type(sink.counters).__name__}")
    return sink
