"""One hook on its own thread: bounded queues, coalescing, error counting, hang detection.

The pipeline thread only appends to bounded deques under a lock (microseconds),
so a slow, crashing or hung hook can never stall the stream. Pending results
are coalesced (latest wins, the skips counted and shown in ``ctx.coalesced``);
events queue separately (oldest dropped beyond the bound, counted) because a
``particle_lost`` must not be overwritten by the next ordinary frame.

A hook that raises `SystemExit` (or any other `BaseException` that is not an
`Exception`, `KeyboardInterrupt` aside) ends its own thread: that is counted,
logged, and the hook is reported ``dead`` (counter ``died`` = 1, ``dead`` in
its status, a ``hook_died`` event from the event detector); it gets no more calls.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from sam4em_live.hooks.api import HookContext, MicroscopeHandle
from sam4em_live.hooks.commands import COMMAND_TYPES

if TYPE_CHECKING:
    from sam4em_live.hooks.safety import CommandGate

logger = logging.getLogger(__name__)

POLL_S = 0.1
#: Full tracebacks for the first errors of a hook, then one summary line every `ERROR_LOG_EVERY`.
ERROR_TRACEBACKS = 10
ERROR_LOG_EVERY = 1000


class HookWorker:
    """Runs one hook's methods on a dedicated daemon thread."""

    def __init__(self, name: str, hook: Any, gate: CommandGate, queue_results: int = 1,
                 queue_events: int = 256, hang_timeout_s: float = 2.0) -> None:
        self.name = name
        self.hook = hook
        self.handle = MicroscopeHandle(gate, name)
        self.hang_timeout_s = hang_timeout_s
        self._results: deque[HookContext] = deque()
        self._events: deque[HookContext] = deque()
        self._queue_results = queue_results
        self._queue_events = queue_events
        self._start_ctx: HookContext | None = None
        self._stop_ctx: HookContext | None = None
        self._cond = threading.Condition()
        self._abandon = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"hook-{name}", daemon=True)
        self._busy_since: float | None = None
        self._busy_call = ""
        self._skipped_since_delivery = 0
        self.counters = {"calls": 0, "errors": 0, "coalesced": 0, "events_dropped": 0, "hangs": 0, "died": 0}
        self.hung = False
        self.dead = False  # the hook's thread ended on a BaseException (SystemExit...); no more calls

    # -- called from the pipeline thread -----------------------------------
    def start(self, ctx: HookContext) -> None:
        self._start_ctx = ctx
        self._thread.start()

    def offer_result(self, ctx: HookContext) -> None:
        with self._cond:
            if len(self._results) >= self._queue_results:
                self._results.popleft()
                self.counters["coalesced"] += 1
                self._skipped_since_delivery += 1
            self._results.append(ctx)
            self._cond.notify()

    def offer_event(self, ctx: HookContext) -> None:
        with self._cond:
            if len(self._events) >= self._queue_events:
                self._events.popleft()
                self.counters["events_dropped"] += 1
            self._events.append(ctx)
            self._cond.notify()

    def check_hang(self, now: float | None = None) -> bool:
        """Report (once per hang) a call running longer than ``hang_timeout_s``; True while hung."""
        since = self._busy_since
        now = time.monotonic() if now is None else now
        if since is not None and not self.hung and now - since > self.hang_timeout_s:
            self.hung = True
            self.counters["hangs"] += 1
            logger.error("hook %s appears hung: %s has run %.1f s (limit %.1f s); its results are coalesced "
                         "until it returns", self.name, self._busy_call, now - since, self.hang_timeout_s)
        return self.hung

    def stop(self, ctx: HookContext, timeout_s: float) -> bool:
        """Deliver what is pending, then ``on_stop``; True if the thread ended within ``timeout_s``."""
        with self._cond:
            self._stop_ctx = ctx
            self._cond.notify()
        if not self._thread.is_alive():
            return True
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            self._abandon.set()
            self.check_hang()
            logger.error("hook %s did not stop within %.1f s (%s still running); abandoning its thread",
                         self.name, timeout_s, self._busy_call or "idle")
            return False
        return True

    def status(self) -> dict[str, Any]:
        self.check_hang()
        busy = self._busy_since
        return {**self.counters, "hung": self.hung, "dead": self.dead,
                "busy_call": self._busy_call if busy else None, "busy_s": time.monotonic() - busy if busy else 0.0}

    # -- hook thread --------------------------------------------------------
    def _loop(self) -> None:
        try:
            if self._start_ctx is not None:
                self._call("on_start", self._start_ctx)
            while not self._abandon.is_set():
                ctx, method = self._next()
                if ctx is None:
                    continue
                self._call(method, ctx)
                if method == "on_stop":
                    return
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # SystemExit, GeneratorExit...: the thread ends, but never silently
            self._die(exc)

    def _die(self, exc: BaseException) -> None:
        self.dead = True
        self.counters["died"] += 1
        logger.error("hook %s is dead: %s raised %s%s; it gets no more calls", self.name, self._busy_call or "its loop",
                     type(exc).__name__, f" ({exc})" if str(exc) else "", exc_info=exc)
        with self._cond:  # nothing will take what is queued
            self._results.clear()
            self._events.clear()

    def _next(self) -> tuple[HookContext | None, str]:
        with self._cond:
            if not (self._events or self._results or self._stop_ctx):
                self._cond.wait(POLL_S)
            if self._events:
                return self._events.popleft(), "on_event"
            if self._results:
                ctx = self._results.popleft()
                ctx = dataclasses.replace(ctx, coalesced=self._skipped_since_delivery)
                self._skipped_since_delivery = 0
                return ctx, "on_result"
            if self._stop_ctx is not None:
                return self._stop_ctx, "on_stop"
        return None, ""

    def _call(self, method: str, ctx: HookContext) -> None:
        func = getattr(self.hook, method, None)
        if not callable(func):
            return
        ctx = dataclasses.replace(ctx, outcomes=self.handle.take_outcomes(), microscope=self.handle)
        self._busy_call = f"{method}(frame {ctx.frame_index})"
        self._busy_since = time.monotonic()
        try:
            returned = func(ctx)
            self._submit_returned(returned)
        except Exception:
            self._count_error(method, ctx)
        finally:
            elapsed = time.monotonic() - self._busy_since
            self._busy_since = None
            self.counters["calls"] += 1
            if self.hung:
                self.hung = False
                logger.warning("hook %s returned from %s after %.1f s", self.name, self._busy_call, elapsed)

    def _submit_returned(self, returned: Any) -> None:
        if returned is None:
            return
        commands = [returned] if isinstance(returned, COMMAND_TYPES) else list(returned)
        for command in commands:
            if not isinstance(command, COMMAND_TYPES):
                raise TypeError(f"hooks may return commands (sam4em_live.hooks.commands) only, "
                                f"got {type(command).__name__}")
            self.handle.submit(command)

    def _count_error(self, method: str, ctx: HookContext) -> None:
        self.counters["errors"] += 1
        count = self.counters["errors"]
        if count <= ERROR_TRACEBACKS:
            logger.exception("hook %s failed in %s on frame %s (error %d)", self.name, method, ctx.frame_index, count)
        elif count % ERROR_LOG_EVERY == 0:
            logger.error("hook %s has failed %d times; latest in %s on frame %s", self.name, count, method,
                         ctx.frame_index)
