"""Wheels for a machine with torch and CUDA but no internet: collect them here, install them there.

What the check needs is found by running it (tiny, on CPU) in a subprocess and reading which top-level
modules it imported; their distributions, less torch and everything torch itself requires (the device
has those), are pinned to the versions installed here (the ones tested). Binary wheels come from the index
for the target Python and platform; a package published only as a source archive (sam2,
antlr4-python3-runtime, iopath) is built here into a wheel (``pip wheel --no-deps``; sam2 without its
optional CUDA extension, which only fills small mask holes).
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

CARRY_LIMIT_MIB = 64.0  # the device tool carries at most this much of ignored paths
LOCAL_PACKAGES = {"sam4em_live", "tools", "tests", "__main__"}
# Our distribution and the `[sam2]` extra's packages (pyproject.toml): what the check may need.
DECLARED_ROOTS = ("sam4em-live", "sam2", "hydra-core", "iopath")
PLATFORMS = ("manylinux2014_x86_64", "manylinux_2_17_x86_64", "manylinux_2_28_x86_64", "linux_x86_64")


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_closure(root: str) -> set[str]:
    """``root`` and every distribution it requires, transitively (installed ones only).

    Requirements under an extra, or whose marker is false here (Windows, PyPy, old Pythons), are left out.
    """
    from packaging.requirements import Requirement

    seen: set[str] = set()
    todo = [root]
    while todo:
        name = normalise(todo.pop())
        if name in seen:
            continue
        try:
            requires = md.requires(name) or []
        except md.PackageNotFoundError:
            continue
        seen.add(name)
        for text in requires:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


def imported_modules(tiny_args: list[str]) -> set[str]:
    """Top-level modules a tiny CPU run of the check imports (run in a subprocess)."""
    with tempfile.TemporaryDirectory() as tmp:
        listing = Path(tmp) / "modules.json"
        subprocess.run([sys.executable, "-m", "tools.gpu_check", *tiny_args, "--out", tmp,
                        "--modules-json", str(listing)], check=True, cwd=Path(__file__).resolve().parents[2])
        return set(json.loads(listing.read_text()))


def needed_distributions(modules: set[str], assumed: set[str]) -> dict[str, str]:
    """{distribution: installed version} for the third-party modules, less torch, its requirements and ``assumed``."""
    by_module = md.packages_distributions()
    preinstalled = requirement_closure("torch") | {normalise(a) for a in assumed}
    # Only declared requirements (ours and the sam2 extra's, transitively): a module some library imports
    # opportunistically because it happens to be installed here (Cython, charset_normalizer) is optional.
    declared = set().union(*(requirement_closure(root) for root in DECLARED_ROOTS))
    needed: dict[str, str] = {}
    for module in modules:
        if module in sys.stdlib_module_names or module in LOCAL_PACKAGES or module.startswith("_"):
            continue
        for dist in by_module.get(module, []):
            if normalise(dist) not in preinstalled and normalise(dist) in declared:
                needed[normalise(dist)] = md.version(dist)
    # Declared requirements of what is needed that import lazily (never seen by the tiny run), too.
    for dist in list(needed):
        for dep in requirement_closure(dist):
            if dep not in preinstalled and dep not in needed:
                needed[dep] = md.version(dep)
    return dict(sorted(needed.items()))


def _pip(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})})


def prepare(dest: Path, python_version: str, tiny_args: list[str], assumed: set[str]) -> dict[str, object]:
    """Fill ``dest`` with wheels + requirements.txt + manifest.json; returns the manifest.

    ``assumed``: distributions the device is expected to have beside torch (numpy: every PyTorch CUDA image
    ships it, and its 17 MiB wheel would take the folder past what the device tool carries).
    """
    dest.mkdir(parents=True, exist_ok=True)
    dists = needed_distributions(imported_modules(tiny_args), assumed)
    platform_args = [a for p in PLATFORMS for a in ("--platform", p)]
    failed: dict[str, str] = {}
    for name, version in dists.items():
        pin = f"{name}=={version}"
        got = _pip("download", "--no-deps", "--only-binary=:all:", "--python-version", python_version,
                   "--implementation", "cp", *platform_args, "--dest", str(dest), pin)
        if got.returncode != 0:  # no wheel published: build one here (pure-Python source archives)
            got = _pip("wheel", "--no-deps", "--no-build-isolation", "--wheel-dir", str(dest), pin,
                       env={"SAM2_BUILD_CUDA": "0"})
        if got.returncode != 0:
            failed[pin] = got.stderr.strip().splitlines()[-1] if got.stderr.strip() else "pip failed"
    (dest / "requirements.txt").write_text("".join(f"{n}=={v}\n" for n, v in dists.items()))
    wheels = {w.name: w.stat().st_size / 2**20 for w in sorted(dest.glob("*.whl"))}
    total = sum(wheels.values())
    manifest: dict[str, object] = {
        "python_version": python_version, "distributions": dists, "failed": failed,
        "wheels_mib": {k: round(v, 2) for k, v in wheels.items()}, "total_mib": round(total, 2),
        "under_carry_limit": total < CARRY_LIMIT_MIB,
        "preinstalled_assumed": sorted(requirement_closure("torch") | {normalise(a) for a in assumed}),
        "foreign_python_tags": sorted(w for w in wheels if not _fits(w, python_version)),
    }
    (dest / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def _fits(wheel: str, python_version: str) -> bool:
    """Whether a wheel's python tag can install on ``python_version`` (e.g. '3.11' -> cp311/py3/abi3)."""
    tag = wheel[:-4].split("-")[-3]
    cp = "cp" + python_version.replace(".", "")
    return any(t in ("py3", cp) or t.startswith("py3") or (t.startswith("cp3") and "abi3" in wheel)
               for t in tag.split("."))


def install(source: Path) -> list[str]:
    """Install, offline, what ``source/requirements.txt`` lists and this Python lacks; returns what it installed."""
    wanted = [line.strip() for line in (source / "requirements.txt").read_text().splitlines() if line.strip()]
    manifest = json.loads((source / "manifest.json").read_text())
    absent = [name for name in manifest["preinstalled_assumed"] if not _installed(name)]
    if absent:  # torch's own requirements are there with torch; an assumed one (numpy) may not be
        print(f"WARNING: assumed preinstalled but missing here: {', '.join(absent)}; carry their wheels too")
    missing = []
    for pin in wanted:
        name = pin.split("==")[0]
        try:
            print(f"kept preinstalled {name} {md.version(name)}")
        except md.PackageNotFoundError:
            missing.append(pin)
    if missing:
        print(f"installing offline: {' '.join(missing)}", flush=True)
        got = _pip("install", "--no-index", "--find-links", str(source), "--no-deps", *missing)
        print(got.stdout[-4000:], got.stderr[-4000:], sep="\n")
        if got.returncode != 0:
            raise SystemExit(f"offline install failed (rc {got.returncode}); see pip's output above")
    return missing


def _installed(name: str) -> bool:
    try:
        md.version(name)
    except md.PackageNotFoundError:
        return False
    return True
