"""What a benchmark is, and the list of them.

A benchmark is a function from its parameters to a `Measurement`, registered with `benchmark`. Its
parameters all have defaults (JSON values); ``quick`` holds the overrides that make it part of the quick
set (`make bench`), or is ``None`` for a benchmark left out of it. Benchmark modules import
``sam4em_live`` inside their functions only (see the package docstring).
"""

from __future__ import annotations

import importlib
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tools.bench.schema import Metric, ParamValue

#: The modules under tools/bench/benchmarks/ that register benchmarks, imported on first use.
BENCHMARK_MODULES = ("embedded", "embedded_ab", "accuracy", "pipeline", "hooks", "worker_stages", "stats", "ingest",
                     "dectris", "replay", "formats", "recorder", "monitor", "sam2", "mask_bias",
                     "robustness", "batch", "discovery", "particle_scaling")


@dataclass(frozen=True)
class Measurement:
    """What a benchmark function returns: its figures, and digests of outputs that must not change."""

    metrics: Mapping[str, Metric]
    fingerprints: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RunContext:
    """Given to a benchmark function: a scratch folder removed after the run, and the data cache."""

    scratch: Path
    cache: Path


BenchmarkFunction = Callable[[Mapping[str, ParamValue], RunContext], Measurement]


@dataclass(frozen=True)
class Benchmark:
    name: str
    summary: str
    function: BenchmarkFunction
    defaults: Mapping[str, ParamValue]
    quick: Mapping[str, ParamValue] | None = None
    #: Pin BLAS/OpenMP pools to one thread (set before numpy loads in the child process).
    one_blas_thread: bool = False

    def params(self, overrides: Mapping[str, ParamValue] | None = None, *, quick: bool = False
               ) -> dict[str, ParamValue]:
        """The defaults, then the quick overrides (if ``quick``), then ``overrides``; unknown names refused."""
        merged = dict(self.defaults)
        for layer in ((self.quick or {}) if quick else {}), (overrides or {}):
            unknown = sorted(set(layer) - set(self.defaults))
            if unknown:
                raise KeyError(f"benchmark {self.name!r} has no parameter {', '.join(unknown)}; "
                               f"it takes {', '.join(sorted(self.defaults))}")
            merged.update(layer)
        return merged


_REGISTRY: dict[str, Benchmark] = {}


def benchmark(name: str, summary: str, defaults: Mapping[str, ParamValue], *,
              quick: Mapping[str, ParamValue] | None = None, one_blas_thread: bool = False
              ) -> Callable[[BenchmarkFunction], BenchmarkFunction]:
    """Register the decorated function as benchmark ``name``."""

    def register(function: BenchmarkFunction) -> BenchmarkFunction:
        if name in _REGISTRY:
            raise ValueError(f"benchmark {name!r} registered twice")
        _REGISTRY[name] = Benchmark(name, summary, function, dict(defaults), None if quick is None else dict(quick),
                                    one_blas_thread)
        return function

    return register


def all_benchmarks() -> dict[str, Benchmark]:
    # Every module, every time (an import already done costs a dict lookup): one benchmark module imported
    # on its own (a test importing its helpers) must not stand for all of them.
    for module in BENCHMARK_MODULES:
        importlib.import_module(f"tools.bench.benchmarks.{module}")
    return dict(_REGISTRY)


def get_benchmark(name: str) -> Benchmark:
    benchmarks = all_benchmarks()
    if name not in benchmarks:
        raise KeyError(f"no benchmark {name!r}; choose from {', '.join(sorted(benchmarks))}")
    return benchmarks[name]


def select(names: list[str], quick: bool = False) -> list[tuple[Benchmark, bool]]:
    """Benchmarks named in ``names`` with whether to use their quick parameters.

    ``quick`` (the name) stands for the quick set, with quick parameters; ``all`` for every benchmark;
    a benchmark named on its own runs with its defaults, or its quick parameters if ``quick`` is true.
    """
    chosen: list[tuple[Benchmark, bool]] = []
    for name in names:
        if name == "quick":
            chosen += [(b, True) for b in all_benchmarks().values() if b.quick is not None]
        elif name == "all":
            chosen += [(b, False) for b in all_benchmarks().values()]
        else:
            found = get_benchmark(name)
            chosen.append((found, quick and found.quick is not None))
    return chosen


def scratch_context(cache: Path) -> tuple[RunContext, tempfile.TemporaryDirectory[str]]:
    holder = tempfile.TemporaryDirectory(prefix="bench-")
    return RunContext(Path(holder.name), cache), holder
