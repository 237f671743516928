"""Command line of the benchmark harness: ``python -m tools.bench COMMAND``.

    python -m tools.bench list                                  # names, quick set, parameters
    python -m tools.bench run quick                             # the quick set (make bench)
    python -m tools.bench run embedded-track -p frames=300      # one benchmark, a parameter changed
    python -m tools.bench run quick --rev HEAD --save-baseline  # store as benchmarks/baselines/NAME.json
    python -m tools.bench compare embedded-track --rev HEAD~1 --repeats 4   # side by side, interleaved
    python -m tools.bench compare-files old.json new.json       # ratios new / old of two result files

Every run writes its results to .bench-cache/results/ (or ``--out``) as a JSON list of records
(tools/bench/schema.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tools.bench.registry import Benchmark
    from tools.bench.schema import BenchResult, ParamValue


def _parse_value(text: str) -> ParamValue:
    try:
        value: ParamValue = json.loads(text)
    except json.JSONDecodeError:
        return text  # a bare word: a string
    return value


def parse_overrides(pairs: list[str], names: list[str]) -> dict[str, dict[str, ParamValue]]:
    """``-p key=value`` (for every chosen benchmark that takes ``key``) or ``-p bench.key=value``."""
    from tools.bench.registry import get_benchmark

    overrides: dict[str, dict[str, ParamValue]] = {name: {} for name in names}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep:
            raise SystemExit(f"-p takes key=value, got {pair!r}")
        bench, dot, param = key.rpartition(".")
        targets = [bench] if dot else [n for n in names if param in get_benchmark(n).defaults]
        if not targets or (dot and bench not in overrides):
            raise SystemExit(f"no chosen benchmark takes the parameter {key!r}")
        for target in targets:
            # A parameter whose default is a string takes the text as it is ("93953e6" is a commit, not a number).
            default = get_benchmark(target).defaults.get(param)
            overrides[target][param] = text if isinstance(default, str) else _parse_value(text)
    return overrides


def _default_out(command: str) -> Path:
    from tools.bench.provenance import CACHE_DIR

    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return CACHE_DIR / "results" / f"{stamp}-{command}.json"


def print_result(result: BenchResult) -> None:
    print(f"## {result.benchmark} ({result.wall_s:.1f} s, revision {result.revision[:18]}, "
          f"load {result.machine.load_avg_1min_start}->{result.machine.load_avg_1min_end})")
    for name, metric in result.metrics.items():
        print(f"  {name:44s} {metric.value:12.5g} {metric.unit}")
    for name, digest in result.fingerprints.items():
        print(f"  {name:44s} {digest[:16]}")


def command_list(_: argparse.Namespace) -> int:
    from tools.bench.registry import all_benchmarks

    for bench in all_benchmarks().values():
        quick = "quick" if bench.quick is not None else "     "
        print(f"{bench.name:16s} {quick}  {bench.summary}")
        print(f"{'':24s}defaults {json.dumps(bench.defaults)}")
        if bench.quick:
            print(f"{'':24s}quick    {json.dumps(bench.quick)}")
    return 0


def command_run(args: argparse.Namespace) -> int:
    from tools.bench.compare import compare_results, format_comparison
    from tools.bench.provenance import BASELINE_DIR
    from tools.bench.runner import PackageUnderTest, run_child
    from tools.bench.schema import load_results, save_results

    chosen = _select(args)
    overrides = parse_overrides(args.param, [b.name for b, _ in chosen])
    package = PackageUnderTest.at_revision(args.rev) if args.rev else PackageUnderTest.working_tree()
    results = []
    failed = []
    for bench, quick in chosen:
        try:
            result = run_child(bench, bench.params(overrides[bench.name], quick=quick), package)
        except RuntimeError as exc:  # the child printed its traceback; go on with the others
            print(f"# {exc}", file=sys.stderr)
            failed.append(bench.name)
            continue
        results.append(result)
        print_result(result)
        baseline = BASELINE_DIR / f"{bench.name}.json"
        if args.save_baseline:
            save_results(baseline, [result])
            print(f"# stored as {baseline.relative_to(BASELINE_DIR.parents[1])}")
        elif args.against_baseline and baseline.is_file():
            print("# against the stored baseline (a different run: machine phases included)")
            print(format_comparison(compare_results(load_results(baseline), [result])))
    out = args.out or _default_out("run")
    save_results(out, results)
    print(f"# results: {out}")
    if failed:
        print(f"# failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


def command_compare(args: argparse.Namespace) -> int:
    from tools.bench.compare import compare_results, format_comparison
    from tools.bench.runner import compare_with_revision
    from tools.bench.schema import save_results

    chosen = _select(args)
    overrides = parse_overrides(args.param, [b.name for b, _ in chosen])
    everything: list[BenchResult] = []
    reports = []
    for bench, quick in chosen:
        old, new = compare_with_revision(bench, bench.params(overrides[bench.name], quick=quick), args.rev,
                                         args.repeats)
        everything += old + new
        reports.append(format_comparison(compare_results(old, new)))
        print(reports[-1], flush=True)
    out = args.out or _default_out("compare")
    save_results(out, everything)
    print("\n\n".join(["# summary", *reports]))
    print(f"# results of both sides: {out}")
    return 0


def command_compare_files(args: argparse.Namespace) -> int:
    from tools.bench.compare import compare_result_sets, format_comparison
    from tools.bench.schema import load_results

    comparisons = compare_result_sets(load_results(args.old), load_results(args.new))
    if not comparisons:
        print("no benchmark appears in both files", file=sys.stderr)
        return 1
    print("\n\n".join(format_comparison(c) for c in comparisons))
    return 0


def _select(args: argparse.Namespace) -> list[tuple[Benchmark, bool]]:
    from tools.bench.registry import select

    try:
        return select(args.names, quick=args.quick)
    except KeyError as exc:
        raise SystemExit(str(exc.args[0])) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="{list,run,compare,compare-files}")
    commands.add_parser("list", help="list the benchmarks").set_defaults(handler=command_list)

    def selection(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("names", nargs="+", help="benchmark names, 'quick' (the quick set) or 'all'")
        sub.add_argument("--quick", action="store_true", help="named benchmarks take their quick parameters")
        sub.add_argument("-p", "--param", action="append", default=[], metavar="[BENCH.]KEY=VALUE",
                         help="override a parameter (value parsed as JSON, else a string)")
        sub.add_argument("--out", type=Path, default=None, help="result file (default .bench-cache/results/)")

    run = commands.add_parser("run", help="run benchmarks for the working tree (or a git revision)")
    selection(run)
    run.add_argument("--rev", default=None, help="measure the package at this git revision instead")
    run.add_argument("--save-baseline", action="store_true", help="store each result in benchmarks/baselines/")
    run.add_argument("--against-baseline", action="store_true", help="print ratios against the stored baselines")
    run.set_defaults(handler=command_run)

    compare = commands.add_parser("compare", help="working tree vs a git revision, side by side")
    selection(compare)
    compare.add_argument("--rev", default="HEAD", help="git revision to compare the working tree with")
    compare.add_argument("--repeats", type=int, default=3, help="runs of each side, alternated")
    compare.set_defaults(handler=command_compare)

    files = commands.add_parser("compare-files", help="ratios new / old of two result files")
    files.add_argument("old", type=Path)
    files.add_argument("new", type=Path)
    files.set_defaults(handler=command_compare_files)

    child = commands.add_parser("_child")  # internal: one benchmark in this process (tools/bench/child.py)
    child.add_argument("name")
    child.add_argument("--params", required=True)
    child.add_argument("--out", type=Path, required=True)
    child.set_defaults(handler=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "_child":
        from tools.bench.child import child_main

        child_main(args.name, json.loads(args.params), args.out)
        return 0
    try:
        return int(args.handler(args))
    except RuntimeError as exc:
        print(f"# {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    raise SystemExit(main())
