"""SAM 2 streaming backend: Meta's `SAM2Base` driven frame by frame with a bounded, exact memory bank.

Nothing heavy is imported here: ``torch`` and ``sam2`` load when `create` builds a segmenter.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sam4em_live.segment.sam2.options import Sam2Options

if TYPE_CHECKING:
    from sam4em_live.segment.sam2.segmenter import Sam2Segmenter

__all__ = ["Sam2Options", "create"]


def create(options: dict[str, Any]) -> Sam2Segmenter:
    """Build the backend from a ``[segmenter.options]`` table (validated by `Sam2Options`)."""
    from sam4em_live.segment.sam2.segmenter import Sam2Segmenter

    return Sam2Segmenter(Sam2Options.model_validate(options))
