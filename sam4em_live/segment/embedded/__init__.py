"""``embedded``: the default CPU backend -- prompt-seeded template matching, no trained weights.

See docs/embedded_backend.md for the method and why it was chosen.
"""

from __future__ import annotations

from sam4em_live.segment.embedded.options import EmbeddedOptions
from sam4em_live.segment.embedded.segmenter import EmbeddedSegmenter

__all__ = ["EmbeddedOptions", "EmbeddedSegmenter"]
