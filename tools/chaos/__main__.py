"""Command line of the fault-injection campaign: ``python -m tools.chaos CASE [--out DIR] [--quick]``.

    python -m tools.chaos wire --messages 10000      # malformed wire messages into a live serve
    python -m tools.chaos control                    # malformed control requests + a flooding client
    python -m tools.chaos disk                       # run folder on a small tmpfs that fills up (root only)
    python -m tools.chaos kill --trials 8            # SIGKILL of serve at random points
    python -m tools.chaos writer                     # the mask-writer child killed mid-run
    python -m tools.chaos restarts                   # frame publisher and results subscriber restarts
    python -m tools.chaos soak --frames 25000        # long run: RSS slope, frames sent/received/processed/recorded
    python -m tools.chaos all                        # every case, one after the other

Everything is on 127.0.0.1 with kernel-chosen ports, bounded in count and time, and stops by itself. Each
case writes ``<out>/<case>.json`` and appends its summary to ``<out>/summary.md`` (default out:
``.bench-cache/chaos/<UTC time>/``, git-ignored). The exit status is 1 when any case found a failure against its target.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tools.chaos.report import summary_lines, verdict

CASES = ("wire", "control", "disk", "kill", "writer", "restarts", "soak")


def _run_case(name: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    if name == "wire":
        from tools.chaos import wire_case

        return wire_case.run(work, messages=args.messages, seed=args.seed)
    if name == "control":
        from tools.chaos import control_case

        return control_case.run(work, requests=args.requests, flood_s=args.flood_s, seed=args.seed)
    if name == "disk":
        from tools.chaos import disk_case

        return disk_case.run(work, seed=args.seed)
    if name == "kill":
        from tools.chaos import crash_case

        return crash_case.run_kill(work, trials=args.trials, seed=args.seed)
    if name == "writer":
        from tools.chaos import crash_case

        return crash_case.run_writer(work, seed=args.seed)
    if name == "restarts":
        from tools.chaos import restart_case

        return restart_case.run(work)
    from tools.chaos import soak_case

    return soak_case.run(work, frames=args.frames, fps=args.fps, size=args.size)


def _commit() -> tuple[str, list[str]]:
    """The commit under test (``+dirty`` with uncommitted changes) and the files changed since it."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True,
                               text=True, check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown", []
    changed = [line[3:] for line in dirty if line.strip()]
    return head.stdout.strip() + ("+dirty" if changed else ""), changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.chaos", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("case", choices=[*CASES, "all"])
    parser.add_argument("--out", type=Path, default=None, help="Report folder (default .bench-cache/chaos/<time>).")
    parser.add_argument("--quick", action="store_true", help="Tiny counts (a smoke run of the tool itself).")
    parser.add_argument("--messages", type=int, default=10000, help="wire: malformed messages.")
    parser.add_argument("--requests", type=int, default=10000, help="control: malformed requests.")
    parser.add_argument("--flood-s", type=float, default=8.0, help="control: seconds per throughput window.")
    parser.add_argument("--trials", type=int, default=8, help="kill: SIGKILL trials.")
    parser.add_argument("--frames", type=int, default=25000, help="soak: frames sent.")
    parser.add_argument("--fps", type=float, default=200.0, help="soak: send rate (frames/s).")
    parser.add_argument("--size", type=int, default=512, help="soak: frame edge (pixels).")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.requests, args.flood_s, args.trials, args.frames = 300, 300, 2.0, 2, 600
    out = args.out or Path(".bench-cache") / "chaos" / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for name in CASES if args.case == "all" else (args.case,):
        t0 = time.monotonic()
        with tempfile.TemporaryDirectory(prefix=f"chaos-{name}-") as tmp:
            try:
                report = _run_case(name, Path(tmp), args)
            except Exception as exc:  # the tool reports its own failure as a case result, then goes on
                report = {"case": name, "tool_error": f"{type(exc).__name__}: {exc}"}
        commit, changed = _commit()
        report.update(commit=commit, uncommitted_files=changed, wall_s=round(time.monotonic() - t0, 1),
                      verdict=verdict(report), started_utc=datetime.now(UTC).isoformat(timespec="seconds"))
        (out / f"{name}.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
        lines = summary_lines(report)
        with open(out / "summary.md", "a", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n\n")
        print("\n".join(lines), flush=True)
        failed += report["verdict"] != "pass"
    print(f"reports in {out}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
