"""The ingest thread's check of each frame before it is queued: the non-finite pixel policy.

Applied once, where frames enter the pipeline (every source: ZeroMQ, replay, simulator, arrays), so the
segmenter, measurement and recorder never see a NaN or an infinity (docs/protocol.md, "Non-finite pixels"):

- integer frames cannot hold one and are passed on untouched, at no cost;
- a float frame whose non-finite pixels are at most ``max_fraction`` of the frame is *repaired*: those
  pixels are set to the median of its finite ones (background level: a hole never reads as a dark
  particle, and a bright NaN patch never as an edge), and counted (``frames_repaired``);
- a float frame with more is *rejected* (``rejected_by_reason["non_finite"]``): the tracker sees a
  one-frame gap, as for any frame lost upstream, instead of a frame with nothing to track in it.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import TYPE_CHECKING

from sam4em_live.frames import count_non_finite, fill_non_finite

if TYPE_CHECKING:
    from sam4em_live.frames import Frame

log = logging.getLogger(__name__)

#: Log the first N frames of each kind (repaired, rejected), then one in every _LOG_EVERY.
_LOG_FIRST = 3
_LOG_EVERY = 1000


class NonFiniteScreen:
    """Repair or reject float frames with NaN/inf pixels (module doc); called by the ingest thread only."""

    def __init__(self, max_fraction: float) -> None:
        if not 0.0 <= max_fraction <= 1.0:
            raise ValueError(f"max_fraction must be in [0, 1], got {max_fraction}")
        self.max_fraction = max_fraction
        # Written by the ingest thread only, read by the worker for status (plain ints and a dict: no lock needed).
        self.repaired = 0
        self.rejected = 0  # reason "non_finite" in the status's rejected_by_reason

    def admit(self, frame: Frame) -> Frame | None:
        """The frame to queue (``frame`` itself, or a repaired copy), or None if it is rejected."""
        bad = count_non_finite(frame.pixels)  # 0 at once for integer pixels
        if bad == 0:
            return frame
        fraction = bad / frame.pixels.size
        if fraction > self.max_fraction:
            self.rejected += 1
            n = self.rejected
            if n <= _LOG_FIRST or n % _LOG_EVERY == 0:
                log.warning("frame %d rejected (#%d): %d non-finite pixels (%.2f %% > %.2f %%)",
                            frame.index, n, bad, 100 * fraction, 100 * self.max_fraction)
            return None
        self.repaired += 1
        if self.repaired <= _LOG_FIRST or self.repaired % _LOG_EVERY == 0:
            log.warning("frame %d: %d non-finite pixels set to the frame's median (repaired frame #%d)",
                        frame.index, bad, self.repaired)
        return replace(frame, pixels=fill_non_finite(frame.pixels))
