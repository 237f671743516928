"""The sink registry: ``[[sinks]] kind = ...`` -> a `Sink`, open to plugins.

The publisher, the recorder and the hooks keep their own config sections (``[publisher]``,
``[recorder]``, ``[hooks]``); further consumers of results are listed as ``[[sinks]]`` tables, each
naming a plugin by ``kind`` with its options beside it::

    [[sinks]]
    kind = "parquet"
    path = "runs/{run_id}.parquet"

Plugins come from the ``sam4em_live.sinks`` entry-point group (the package's own Parquet sink is
declared there too, to show that a new sink is its module plus one line in ``pyproject.toml``)::

    [project.entry-points."sam4em_live.sinks"]
    parquet = "sam4em_live.sinks.parquet:ParquetSink"

A plugin has ``Options`` (a frozen pydantic model, ``extra="forbid"``) and is built as
``Plugin(options)``; what it builds must satisfy `Sink`. See `sam4em_live.plugins` for the rules.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from sam4em_live.plugins import Registry
from sam4em_live.sinks.base import Sink

if TYPE_CHECKING:
    from sam4em_live.config import SinkConfig

ENTRY_POINT_GROUP = "sam4em_live.sinks"

SINKS: Registry[Sink] = Registry("sink", ENTRY_POINT_GROUP, Sink)


def build_sink(config: SinkConfig, index: int) -> Sink:
    """The sink the ``index``-th ``[[sinks]]`` table names, built and checked against `Sink`."""
    return SINKS.build(config.kind, config.options, where=f"sinks[{index}]")
