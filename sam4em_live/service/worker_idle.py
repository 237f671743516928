"""Whether the worker holds a frame: the one signal the service's side threads wait on (live runs).

Two side threads share the worker's interpreter (the GIL) and its two cores: the seeding helper
(`service.seeding`, a click's seeding) and the discovery detector (`service.discovery_thread`). Both are
mostly Python between numpy calls; run while the worker segments a frame, each hand-over of the GIL between
them costs the worker up to a switch interval, and its frame takes longer (a seeding beside a 200 fps stream
doubled the worker's frame time: docs/benchmarks.md, "A click at 200 fps"). So both wait, at their own pause
points, while the worker holds a frame, and each bounds its own waits (a worker that is never idle still gets
its prompts seeded and its discovery run, later): the seeding helper at every Python call of the seeding,
the detector between its stages.

The service owns one `WorkerIdle` per run. Its worker thread calls `took` when it takes a frame (before
anything of that frame: discovery's offer, the edits), with the frames waiting behind it, and `delivered` once
the frame's result has gone to
the sinks (publishing and recording are the worker's work as much as segmenting), or its segmentation
failed, or its submission raised: one `delivered` for every `took`, in order (a segment stage in its own
process holds up to its depth in flight). The worker counts as idle when it holds no frame and none waited
behind the last one it took. (Frames that arrive while it works do not count: it takes the next one at once
anyway, and a stricter test kept the seeding helper waiting so long on a loaded machine that a click's
prompt landed hundreds of frames later, with frames lost meanwhile: tests/test_seeding_aside.py.)
"""

from __future__ import annotations

import threading


class WorkerIdle:
    """Set while the worker holds no frame and none waits; side threads `wait` for it, each with its own bound.

    `took` and `delivered` are called from the worker thread only; `idle`, `wait` from any thread.
    """

    def __init__(self) -> None:
        self._idle = threading.Event()
        self._idle.set()
        self._held = 0  # frames taken and not delivered yet (worker thread only)
        self._behind_last = False  # frames waited behind the frame taken last (worker thread only)
        #: Frames taken so far with frames waiting behind them (the worker behind its camera; worker thread writes).
        self.behind = 0

    @property
    def idle(self) -> bool:
        return self._idle.is_set()

    @property
    def held(self) -> int:
        """Frames the worker has taken and not delivered yet."""
        return self._held

    def took(self, frames_waiting: int = 0) -> None:
        """The worker has taken a frame, with ``frames_waiting`` more in its queue (worker thread)."""
        self._idle.clear()
        self._held += 1
        self._behind_last = frames_waiting > 0
        if frames_waiting:
            self.behind += 1

    def delivered(self) -> None:
        """The worker is done with its oldest frame (worker thread)."""
        self._held = max(self._held - 1, 0)
        if self._held == 0 and not self._behind_last:
            self._idle.set()

    def wait(self, timeout_s: float) -> bool:
        """Wait until the worker is idle, at most ``timeout_s``: whether it was idle (False: timed out).

        True means it was idle when the wait ended, not that it still is: by the time a side thread has the
        interpreter back the worker may have taken its next frame. A caller that asks `idle` again instead
        of trusting the return value takes a worker that went idle and busy again for one that never caught
        up (the seeding helper then seeded a forced slice beside every frame).
        """
        if timeout_s <= 0:
            return self._idle.is_set()
        return self._idle.wait(timeout_s)
