"""Run one benchmark in this process (the child process that the runner starts).

The runner passes the package to measure in the environment: ``BENCH_PACKAGE_ROOT`` (a folder holding
an extracted ``sam4em_live`` of another revision; absent for the working tree) and ``BENCH_REVISION``
(the commit recorded in the result). `use_package_root` must run before anything imports ``sam4em_live``.
"""

from __future__ import annotations

import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from tools.bench.provenance import CACHE_DIR, load_average, machine_facts, working_tree_revision
from tools.bench.registry import Benchmark, scratch_context
from tools.bench.schema import BenchResult, ParamValue

if TYPE_CHECKING:
    from collections.abc import Mapping

PACKAGE_ROOT_VARIABLE = "BENCH_PACKAGE_ROOT"
REVISION_VARIABLE = "BENCH_REVISION"


def use_package_root(root: Path) -> None:
    """Import ``sam4em_live`` from ``root`` (ahead of the working tree and the editable install)."""
    if "sam4em_live" in sys.modules:
        raise RuntimeError("sam4em_live was imported before the package root was chosen")
    sys.path.insert(0, str(root))
    import sam4em_live

    where = Path(sam4em_live.__file__).resolve()
    if not where.is_relative_to(root.resolve()):
        raise RuntimeError(f"sam4em_live came from {where}, not from {root}")


def run_in_process(bench: Benchmark, params: Mapping[str, ParamValue], revision: str | None = None,
                   cache: Path = CACHE_DIR) -> BenchResult:
    """Run ``bench`` with ``params`` here and return its result record."""
    load_at_start = load_average()
    timestamp = datetime.now(UTC).isoformat(timespec="seconds")
    started = time.perf_counter()
    context, scratch = scratch_context(cache)
    with scratch:
        measurement = bench.function(params, context)
    wall_s = time.perf_counter() - started
    return BenchResult(benchmark=bench.name, params=dict(params), revision=revision or working_tree_revision(),
                       machine=machine_facts(load_at_start), metrics=dict(measurement.metrics),
                       timestamp=timestamp, wall_s=wall_s, fingerprints=dict(measurement.fingerprints))


def child_main(name: str, params: Mapping[str, ParamValue], out: Path) -> None:
    """The child process's work: choose the package, run one benchmark, write its result to ``out``."""
    root = os.environ.get(PACKAGE_ROOT_VARIABLE)
    if root:
        use_package_root(Path(root))
    from tools.bench.registry import get_benchmark
    from tools.bench.schema import save_results

    result = run_in_process(get_benchmark(name), params, os.environ.get(REVISION_VARIABLE))
    save_results(out, [result])
