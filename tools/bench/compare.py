"""Ratios between two sets of results of the same benchmark: new / old, with their spread.

Results are paired in order (the i-th old run with the i-th new run: in a side-by-side compare these ran
next to each other). Per metric: the median of each side, the median of the per-pair ratios new/old, and
their range. A verdict is given only when every pair agrees (the whole range on one side of 1); otherwise
the change is within the spread.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Sequence

    from tools.bench.schema import BenchResult, Better


@dataclass(frozen=True)
class MetricComparison:
    name: str
    unit: str
    better: Better
    old_median: float
    new_median: float
    ratio_median: float
    ratio_min: float
    ratio_max: float
    pairs: int

    @property
    def verdict(self) -> str:
        if self.better == "none" or self.pairs < 2 or self.ratio_min != self.ratio_min:
            return ""
        if self.ratio_min > 1.0 or self.ratio_max < 1.0:
            improved = (self.ratio_max < 1.0) == (self.better == "lower")
            return "better" if improved else "worse"
        return "within spread"


@dataclass(frozen=True)
class Comparison:
    benchmark: str
    old_revisions: tuple[str, ...]
    new_revisions: tuple[str, ...]
    metrics: tuple[MetricComparison, ...]
    #: Fingerprint name -> pairs with equal digests, out of ``pairs``.
    fingerprints_equal: dict[str, int]
    pairs: int


def _ratio(new: float, old: float) -> float:
    return new / old if old != 0 else float("nan")


def compare_results(old: Sequence[BenchResult], new: Sequence[BenchResult]) -> Comparison:
    """Compare runs of one benchmark; metrics present on both sides only."""
    names = {r.benchmark for r in (*old, *new)}
    if len(names) != 1:
        raise ValueError(f"compare one benchmark at a time, got {sorted(names)}")
    pairs = list(zip(old, new, strict=False))
    if not pairs:
        raise ValueError("nothing to compare: one side has no results")
    if {_params_key(a) for a, _ in pairs} != {_params_key(b) for _, b in pairs}:
        print("# warning: the two sides ran with different parameters")
    metrics = []
    for name, first in pairs[0][1].metrics.items():
        if not all(name in a.metrics and name in b.metrics for a, b in pairs):
            continue
        ratios = [_ratio(b.metrics[name].value, a.metrics[name].value) for a, b in pairs]
        finite = [r for r in ratios if r == r]
        metrics.append(MetricComparison(
            name, first.unit, first.better,
            statistics.median(a.metrics[name].value for a, _ in pairs),
            statistics.median(b.metrics[name].value for _, b in pairs),
            statistics.median(finite) if finite else float("nan"),
            min(finite, default=float("nan")), max(finite, default=float("nan")), len(pairs)))
    fingerprints = {name: sum(a.fingerprints.get(name) == b.fingerprints.get(name) for a, b in pairs)
                    for name in pairs[0][1].fingerprints if name in pairs[0][0].fingerprints}
    return Comparison(next(iter(names)), tuple(dict.fromkeys(r.revision for r in old)),
                      tuple(dict.fromkeys(r.revision for r in new)), tuple(metrics), fingerprints, len(pairs))


def compare_result_sets(old: Sequence[BenchResult], new: Sequence[BenchResult]) -> list[Comparison]:
    """`compare_results` for every benchmark that both sets hold."""
    names = [n for n in dict.fromkeys(r.benchmark for r in new) if any(r.benchmark == n for r in old)]
    return [compare_results([r for r in old if r.benchmark == n], [r for r in new if r.benchmark == n])
            for n in names]


def format_comparison(comparison: Comparison) -> str:
    lines = [f"## {comparison.benchmark}: new / old over {comparison.pairs} pair(s); "
             f"old {', '.join(r[:12] for r in comparison.old_revisions)}, "
             f"new {', '.join(r[:18] for r in comparison.new_revisions)}",
             f"{'metric':40s} {'unit':8s} {'old':>11s} {'new':>11s} {'new/old':>8s} {'range':>15s}  verdict"]
    for m in comparison.metrics:
        spread = f"{m.ratio_min:.3f}-{m.ratio_max:.3f}" if m.pairs > 1 else ""
        lines.append(f"{m.name:40s} {m.unit:8s} {m.old_median:11.4g} {m.new_median:11.4g} {m.ratio_median:8.3f} "
                     f"{spread:>15s}  {m.verdict}")
    for name, equal in comparison.fingerprints_equal.items():
        state = "identical" if equal == comparison.pairs else "DIFFERENT"
        lines.append(f"{name}: {state} (equal in {equal} of {comparison.pairs} pair(s))")
    return "\n".join(lines)


def _params_key(result: BenchResult) -> str:
    return json.dumps(result.params, sort_keys=True)
