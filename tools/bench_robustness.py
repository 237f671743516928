"""Robustness matrix of a backend (issue 16), printed as the Markdown table of docs/benchmarks.md.

    python tools/bench_robustness.py                              # every condition, sim + monet motion, seeds 0 1
    python tools/bench_robustness.py -c fade-edge-artifact static-blobs -s 0 1 2 -n 120
    python tools/bench_robustness.py --threshold 0.6 --json out.json

Runs in this process (no child, no cache); the same matrix is the ``robustness`` benchmark of the harness
(``python -m tools.bench run robustness``). What each column means: tools/bench/benchmarks/robustness.py.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `tools` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.bench.benchmarks.robustness import (
    ALL_CONDITIONS,
    DEFAULT_SCORE_THRESHOLD,
    CellResult,
    markdown_table,
    run_matrix,
)


def _commit() -> str:
    root = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                              check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "sam4em_live"], cwd=root, capture_output=True,
                               text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" + uncommitted changes in sam4em_live/" if dirty else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--conditions", nargs="+", default=ALL_CONDITIONS)
    parser.add_argument("-m", "--motions", nargs="+", default=["sim", "monet"])
    parser.add_argument("-s", "--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("-n", "--frames", type=int, default=100)
    parser.add_argument("--backend", default="embedded")
    parser.add_argument("--prompt", choices=["point", "box"], default="point")
    parser.add_argument("--threshold", type=float, default=DEFAULT_SCORE_THRESHOLD,
                        help="score threshold of the calibration column (the backend's documented one)")
    parser.add_argument("--json", type=Path, help="also write every figure of every cell to this file")
    args = parser.parse_args(argv)

    def progress(r: CellResult) -> None:
        f = r.figures
        print(f"# {r.condition}/{r.motion}: J&F {f['J&F']:.1f}  hops {f['hops']}  false presence "
              f"{f['false_presence_frames']}/{f['absent_frames']}  missed {f['missed_frames']}", file=sys.stderr,
              flush=True)

    start = time.perf_counter()
    results = run_matrix(args.conditions, args.motions, args.seeds, args.frames, args.backend, prompt_kind=args.prompt,
                         score_threshold=args.threshold, progress=progress)
    print(f"Commit {_commit()}; {args.backend} backend, {args.prompt} prompts on frame 0, seeds "
          f"{' '.join(map(str, args.seeds))}, {args.frames} frames per clip, calibration at score >= "
          f"{args.threshold}; {time.perf_counter() - start:.0f} s.\n")
    print(markdown_table(results))
    if args.json is not None:
        args.json.write_text(json.dumps([{"condition": r.condition, "motion": r.motion, "seeds": r.seeds,
                                          **r.figures} for r in results], indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
