"""Robustness matrix of a backend (issue 16), printed as the Markdown table of docs/benchmarks.md.

    python tools/bench_robustness.py                              # every condition, sim + monet motion, seeds 0 1
    python tools/bench_robustness.py -c fade-edge-artifact static-blobs -s 0 1 2 -n 120
    python tools/bench_robustness.py --threshold 0.6 --json out.json
    python tools/bench_robustness.py --segment-rev b05204b     # the backend as committed at b05204b
    python tools/bench_robustness.py --compare before.json after.json   # two --json files: "after (before)"

Runs in this process (no child, no cache). ``--segment-rev`` measures ``sam4em_live/segment`` as it was at a
git revision with everything else (the simulator's conditions, the metrics) from the working tree: a copy of
the package with that one folder replaced, put first on ``sys.path``.

The same matrix is the ``robustness`` benchmark of the harness
(``python -m tools.bench run robustness``). What each column means: tools/bench/benchmarks/robustness.py.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make `tools` importable
    sys.path.insert(0, str(REPO_ROOT))

from tools.bench.benchmarks.robustness import (  # noqa: E402
    ALL_CONDITIONS,
    DEFAULT_SCORE_THRESHOLD,
    CellResult,
    comparison_table,
    markdown_table,
    run_matrix,
)


def _use_segment_rev(rev: str) -> str:
    """Put a copy of the working tree's package, with ``segment/`` as of ``rev``, first on ``sys.path``."""
    import atexit
    import io
    import shutil
    import tarfile
    import tempfile

    commit = subprocess.run(["git", "rev-parse", "--short", rev], cwd=REPO_ROOT, capture_output=True, text=True,
                            check=True).stdout.strip()
    root = Path(tempfile.mkdtemp(prefix=f"robustness-segment-{commit}-"))
    atexit.register(shutil.rmtree, root, ignore_errors=True)
    shutil.copytree(REPO_ROOT / "sam4em_live", root / "sam4em_live", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.rmtree(root / "sam4em_live" / "segment")
    archive = subprocess.run(["git", "archive", "--format=tar", commit, "sam4em_live/segment"], cwd=REPO_ROOT,
                             capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(root, filter="data")
    sys.path.insert(0, str(root))
    # The copy lives elsewhere: point the real trajectories at the repository's neighbour folder.
    from sam4em_live.sim.real_motion import TRAJECTORY_DIR_ENV

    os.environ.setdefault(TRAJECTORY_DIR_ENV, str(REPO_ROOT.parent / "shared" / "data" / "trajectories"))
    return commit


def _commit(segment_from_rev: bool) -> str:
    """HEAD, and the package's files that differ from it (those of segment/ too unless it came from a rev)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True,
                              check=True).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--", "sam4em_live"], cwd=REPO_ROOT,
                                capture_output=True, text=True, check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    dirty = [line[3:] for line in status
             if not (segment_from_rev and line[3:].startswith("sam4em_live/segment/")) and "__pycache__" not in line]
    return head + (f" + uncommitted: {', '.join(dirty)}" if dirty else " (clean)")


def _finite(figures: dict[str, object]) -> dict[str, object]:
    """NaN as null (strict JSON)."""
    return {k: (None if isinstance(v, float) and v != v else v) for k, v in figures.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-c", "--conditions", nargs="+", default=ALL_CONDITIONS)
    parser.add_argument("-m", "--motions", nargs="+", default=["sim", "monet"])
    parser.add_argument("-s", "--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("-n", "--frames", type=int, default=100)
    parser.add_argument("--backend", default="embedded")
    parser.add_argument("--prompt", choices=["point", "point-edge", "box", "box-loose"], default="point",
                        help="how each particle is prompted on frame 0 (sam4em_live.sim.scenario.PROMPT_KINDS)")
    parser.add_argument("--threshold", type=float, default=DEFAULT_SCORE_THRESHOLD,
                        help="score threshold of the calibration column (the backend's documented one)")
    parser.add_argument("--json", type=Path, help="also write every figure of every cell to this file")
    parser.add_argument("--save-clips", type=Path, metavar="DIR",
                        help="keep every clip: DIR/CONDITION-MOTION-sSEED.tif, -truth.csv, -predictions.csv")
    parser.add_argument("--segment-rev", help="measure sam4em_live/segment as committed at this git revision")
    parser.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"),
                        help="print two --json files side by side and exit (nothing is run)")
    args = parser.parse_args(argv)
    if args.compare:
        before, after = (json.loads(path.read_text()) for path in args.compare)
        print(comparison_table(before, after))
        return 0
    code = f"segment/ at {_use_segment_rev(args.segment_rev)}, the rest" if args.segment_rev else "Working tree"

    def progress(r: CellResult) -> None:
        f = r.figures
        print(f"# {r.condition}/{r.motion}: J&F {f['J&F']:.1f}  hops {f['hops']}  false presence "
              f"{f['false_presence_frames']}/{f['absent_frames']}  missed {f['missed_frames']}", file=sys.stderr,
              flush=True)

    start = time.perf_counter()
    results = run_matrix(args.conditions, args.motions, args.seeds, args.frames, args.backend, prompt_kind=args.prompt,
                         score_threshold=args.threshold, progress=progress, save_dir=args.save_clips)
    print(f"{code} at commit {_commit(bool(args.segment_rev))}; {args.backend} backend, {args.prompt} prompts on frame 0, seeds "
          f"{' '.join(map(str, args.seeds))}, {args.frames} frames per clip, calibration at score >= "
          f"{args.threshold}; {time.perf_counter() - start:.0f} s.\n")
    print(markdown_table(results))
    if args.json is not None:
        args.json.write_text(json.dumps([{"condition": r.condition, "motion": r.motion, "seeds": r.seeds,
                                          **_finite(r.figures)} for r in results], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
