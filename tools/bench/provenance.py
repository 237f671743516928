"""Where the harness lives, which code a result measured, and on what machine."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

from tools.bench.schema import Machine

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Git-ignored: simulated clips, extracted revisions, result files of past runs (``BENCH_CACHE_DIR`` moves it).
CACHE_DIR = Path(os.environ.get("BENCH_CACHE_DIR") or REPO_ROOT / ".bench-cache")
BASELINE_DIR = REPO_ROOT / "benchmarks" / "baselines"
#: Paths whose changes make a working tree "dirty" for a result (what a benchmark measures).
MEASURED_PATHS = ("sam4em_live", "tools/bench")


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO_ROOT), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def resolve_revision(rev: str) -> str:
    """The full commit id of ``rev`` (a branch, tag, ``HEAD~1``...)."""
    return git("rev-parse", "--verify", f"{rev}^{{commit}}")


def working_tree_revision() -> str:
    """HEAD's commit id, with ``+dirty`` when the measured paths differ from it."""
    head = resolve_revision("HEAD")
    dirty = git("status", "--porcelain", "--untracked-files=no", "--", *MEASURED_PATHS)
    return f"{head}+dirty" if dirty else head


def load_average() -> float:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return float("nan")


def machine_facts(load_at_start: float) -> Machine:
    import numpy

    return Machine(platform=f"{platform.system()} {platform.machine()}", cpu=_cpu_model(),
                   cpus=os.cpu_count() or 0, python=platform.python_version(), numpy=numpy.__version__,
                   load_avg_1min_start=load_at_start, load_avg_1min_end=load_average())


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()
