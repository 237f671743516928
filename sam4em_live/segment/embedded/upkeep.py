"""A frame's work that its masks do not wait for, run after they have gone out (issue 23: latency).

Two kinds of per-frame work of the embedded backend change what later frames see, not the frame's own
masks: the background and static maps' updates (`FlatField.observe`, `StaticMap.observe`: every 4th and
every 16th frame, 2-16 ms an update at 1024², growing with the particles) and a particle's appearance
learning (`EmbeddedSegmenter._learn`: the aligned window folded into its memory, ~0.15 ms a particle, and
every 128 frames or so a shape refresh, 4-7 ms). On the frames that do them they set the latency's tail
(p99 at an 80 fps camera, docs/benchmarks.md). Once its caller has asked for it (the first
`DefersUpkeep.upkeep` call) the segmenter queues them here in the order it would have run them; the service
runs the queue once the frame's result has gone to the sinks, and the next `track` runs whatever is still
queued before it reads anything. The next frame thus starts from exactly the state it starts from when the
work runs inline: the masks are bit-identical (tests/test_embedded_upkeep.py); only when the work is done
moves. One thing a frame reports differs: a shape refresh re-centres the particle's pose, and the mask of
its frame now reports (``extras`` x, y) the pose the mask was placed at, not the re-centred one (nothing
downstream reads ``extras``; the next frame starts from the re-centred pose, as before).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable


class FrameUpkeep:
    """Work queued during a frame, run in order by `run` (from the segmenter's thread only)."""

    def __init__(self) -> None:
        self._queued: list[Callable[[], None]] = []

    def __len__(self) -> int:
        return len(self._queued)

    def defer(self, work: Callable[[], None]) -> None:
        """Queue ``work`` behind what is queued already."""
        self._queued.append(work)

    def run(self) -> None:
        """Run everything queued, oldest first, and empty the queue.

        Work that raises is dropped with the rest of its frame's queue (the exception propagates: it is
        the frame's failure, as it would have been inline); the next frame starts from an empty queue.
        """
        queued, self._queued = self._queued, []
        for work in queued:
            work()

    def clear(self) -> None:
        """Drop what is queued (the particles are gone: `close`)."""
        self._queued.clear()
