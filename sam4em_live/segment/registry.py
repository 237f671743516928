"""The segmenter registry: ``[segmenter] backend = ...`` -> a `Segmenter`, open to plugins.

Built in: ``embedded`` (the default CPU backend), ``threshold`` (the baseline) and ``sam2`` (SAM 2
streaming). Each validates the ``[segmenter.options]`` table with its own frozen model; the backends'
modules are imported only when chosen, so ``torch``/``sam2`` load only for ``sam2`` (importing sam2
initialises Hydra). Other distributions add backends through the ``sam4em_live.segmenters``
entry-point group::

    [project.entry-points."sam4em_live.segmenters"]
    my-net = "my_package.segmenter:MyNetSegmenter"

where ``MyNetSegmenter.Options`` is a frozen pydantic model (``extra="forbid"``) and
``MyNetSegmenter(options)`` builds the backend. See `sam4em_live.plugins` for the rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sam4em_live.plugins import FactoryPlugin, Lazy, Registry
from sam4em_live.segment.base import Segmenter

if TYPE_CHECKING:
    from collections.abc import Mapping

ENTRY_POINT_GROUP = "sam4em_live.segmenters"
DEFAULT_BACKEND = "embedded"


def _embedded() -> FactoryPlugin[Segmenter]:
    from sam4em_live.segment.embedded import EmbeddedOptions, EmbeddedSegmenter

    return FactoryPlugin(EmbeddedOptions, EmbeddedSegmenter)


def _threshold() -> FactoryPlugin[Segmenter]:
    from sam4em_live.segment.threshold import ThresholdOptions, ThresholdSegmenter

    return FactoryPlugin(ThresholdOptions, ThresholdSegmenter)


def _sam2() -> FactoryPlugin[Segmenter]:
    from sam4em_live.segment.sam2.options import Sam2Options

    def build(options: Sam2Options) -> Segmenter:
        from sam4em_live.segment.sam2.segmenter import Sam2Segmenter  # torch and sam2 load here

        return Sam2Segmenter(options)

    return FactoryPlugin(Sam2Options, build)


SEGMENTERS: Registry[Segmenter] = Registry(
    "backend", ENTRY_POINT_GROUP, Segmenter,
    builtins={"embedded": Lazy(_embedded), "threshold": Lazy(_threshold), "sam2": Lazy(_sam2)},
)


def create_segmenter(backend: str | None, options: Mapping[str, object] | None = None) -> Segmenter:
    """The backend called ``backend`` (None: the default), built from its ``[segmenter.options]`` table."""
    return SEGMENTERS.build(backend or DEFAULT_BACKEND, options or {}, where="segmenter.options",
                            name_at="segmenter.backend")
