"""SAM 2 streaming backend: Meta's `SAM2Base` driven frame by frame with a bounded, exact memory bank.

Nothing heavy is imported here: ``torch`` and ``sam2`` load when the registry builds a segmenter
(`sam4em_live.segment.registry.create_segmenter`).
"""

from __future__ import annotations

from sam4em_live.segment.sam2.options import Sam2Options

__all__ = ["Sam2Options"]
