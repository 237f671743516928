"""Backend names to segmenter factories, imported lazily.

Each backend module exposes ``create(options: dict, *, shape_hint=None) -> Segmenter``
where ``options`` is the ``[segmenter.options]`` table (validated by the
backend's own frozen model). Importing is deferred so ``sam2``/``torch`` are
only loaded when that backend is chosen (importing sam2 initialises Hydra).
"""

from __future__ import annotations

import importlib
from typing import Any

from sam4em_live.config import ConfigError
from sam4em_live.segment.base import Segmenter

DEFAULT_BACKEND = "embedded"

BACKENDS: dict[str, str] = {
    "threshold": "sam4em_live.segment.threshold",
    "embedded": "sam4em_live.segment.embedded",
    "sam2": "sam4em_live.segment.sam2",
}


def create_segmenter(backend: str | None, options: dict[str, Any] | None = None) -> Segmenter:
    name = backend or DEFAULT_BACKEND
    if name not in BACKENDS:
        raise ConfigError(f"segmenter.backend: unknown backend {name!r}; choose from {sorted(BACKENDS)}")
    module = importlib.import_module(BACKENDS[name])
    return module.create(dict(options or {}))
