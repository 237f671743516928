"""``embedded``: the default CPU backend -- prompt-seeded template matching, no trained weights.

See docs/embedded_backend.md for the method and why it was chosen.
"""

from __future__ import annotations

from typing import Any

from sam4em_live.config import parse_options
from sam4em_live.segment.embedded.options import EmbeddedOptions
from sam4em_live.segment.embedded.segmenter import EmbeddedSegmenter

__all__ = ["EmbeddedOptions", "EmbeddedSegmenter", "create"]


def create(options: dict[str, Any]) -> EmbeddedSegmenter:
    """Build the backend from a ``[segmenter.options]`` table (validated by `EmbeddedOptions`)."""
    return EmbeddedSegmenter(parse_options(EmbeddedOptions, options, "segmenter.options (embedded)"))
