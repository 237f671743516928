"""Run benchmarks in child processes, for the working tree or for a git revision, side by side.

Every benchmark runs in a fresh Python process, so one benchmark's imports, caches and thread settings
do not leak into the next, and the package measured can be chosen per process. A revision is measured
with the working tree's harness and that revision's package: ``git archive`` extracts ``sam4em_live`` at
the commit into the cache (nothing is registered in .git, nothing is checked out), and the child puts it
first on ``sys.path``. A benchmark that uses an entry point the revision lacks fails for that revision
with the import error.

Why interleave: this 2-core VM's speed moves by 20-50 % between minutes, so two runs taken one after
the other compare the machine's phases as much as the code. `compare_with_revision` alternates the two
sides (new, old, old, new, ...) so each pair sees the same phase, and reports the spread of the ratios.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from tools.bench.child import PACKAGE_ROOT_VARIABLE, REVISION_VARIABLE
from tools.bench.provenance import CACHE_DIR, REPO_ROOT, resolve_revision, working_tree_revision
from tools.bench.schema import BenchResult, ParamValue, load_results

if TYPE_CHECKING:
    from collections.abc import Mapping

    from tools.bench.registry import Benchmark

_ONE_THREAD = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class PackageUnderTest:
    """Which ``sam4em_live`` a child imports: the working tree's (``root`` None) or an extracted one."""

    revision: str
    root: Path | None = None

    @classmethod
    def working_tree(cls) -> PackageUnderTest:
        return cls(working_tree_revision())

    @classmethod
    def at_revision(cls, rev: str, cache: Path = CACHE_DIR) -> PackageUnderTest:
        commit = resolve_revision(rev)
        return cls(commit, extract_revision(commit, cache))


def extract_revision(commit: str, cache: Path = CACHE_DIR) -> Path:
    """A folder holding ``sam4em_live`` as it was at ``commit`` (extracted once, then reused)."""
    folder = cache / "revisions" / commit
    if (folder / "sam4em_live" / "__init__.py").is_file():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(REPO_ROOT), "archive", commit, "sam4em_live"], check=True,
                             capture_output=True).stdout
    staging = Path(tempfile.mkdtemp(prefix=f".{commit[:12]}-", dir=folder.parent))
    try:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(staging, filter="data")
        staging.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def run_child(bench: Benchmark, params: Mapping[str, ParamValue], package: PackageUnderTest) -> BenchResult:
    """Run ``bench`` in a child process against ``package``; its output passes through to ours."""
    env = dict(os.environ)
    env[REVISION_VARIABLE] = package.revision
    env.pop(PACKAGE_ROOT_VARIABLE, None)
    if package.root is not None:
        env[PACKAGE_ROOT_VARIABLE] = str(package.root)
        # Grandchildren started with subprocess (not multiprocessing) find the same package.
        env["PYTHONPATH"] = os.pathsep.join([str(package.root), str(REPO_ROOT)])
    if bench.one_blas_thread:
        env.update(dict.fromkeys(_ONE_THREAD, "1"))
    with tempfile.TemporaryDirectory(prefix="bench-result-") as tmp:
        out = Path(tmp) / "result.json"
        command = [sys.executable, "-m", "tools.bench", "_child", bench.name, "--params", json.dumps(params),
                   "--out", str(out)]
        completed = subprocess.run(command, cwd=REPO_ROOT, env=env, check=False)
        if completed.returncode != 0 or not out.is_file():
            side = "working tree" if package.root is None else f"revision {package.revision[:12]}"
            raise RuntimeError(f"benchmark {bench.name} failed for the {side} (exit {completed.returncode})")
        return load_results(out)[0]


def compare_with_revision(bench: Benchmark, params: Mapping[str, ParamValue], rev: str, repeats: int,
                          cache: Path = CACHE_DIR) -> tuple[list[BenchResult], list[BenchResult]]:
    """(results at ``rev``, results of the working tree), ``repeats`` each, run alternately."""
    old, new = PackageUnderTest.at_revision(rev, cache), PackageUnderTest.working_tree()
    olds: list[BenchResult] = []
    news: list[BenchResult] = []
    for repeat in range(repeats):
        # The working tree goes first in the first pair, so any data it simulates is cached for both sides.
        sides = [(new, news), (old, olds)] if repeat % 2 == 0 else [(old, olds), (new, news)]
        for package, into in sides:
            print(f"# {bench.name}: repeat {repeat + 1}/{repeats}, "
                  f"{'working tree' if package.root is None else package.revision[:12]}", flush=True)
            into.append(run_child(bench, params, package))
    return olds, news
