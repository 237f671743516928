"""Probes of `Segmenter.track` alone on the particle-scaling clips (issue 23): where a frame's time goes.

`profile_track` prints a cProfile of the embedded backend with N particles; `compare_track` compares the
working tree's thread CPU per frame with a git revision's, both loaded in one process and interleaved frame
by frame. Run through ``python -m tools.bench.benchmarks.particle_scaling --profile / --ab`` (that module's
docstring).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import numpy as np

from tools.bench.benchmarks.particle_clips import _prompts, particle_clip

if TYPE_CHECKING:
    from pathlib import Path


def profile_track(particles: int, size: int, frames: int = 40, top: int = 25, settle: int = 45) -> str:
    """cProfile of the embedded `Segmenter.track`: ``frames`` frames with ``particles``, after the prompt frame
    and ``settle`` frames (the backend's post-prompt transient) unprofiled."""
    import cProfile
    import io
    import pstats

    from sam4em_live.frames import Frame
    from sam4em_live.segment.registry import create_segmenter

    clip, centres = particle_clip(size, particles, 16)
    order = np.concatenate([np.arange(len(clip)), np.arange(len(clip) - 2, 0, -1)])  # ping-pong, as the sender
    segmenter: Any = create_segmenter("embedded", {})
    segmenter.track(Frame("profile", 0, 0.0, clip[0]), _prompts(centres[0]))
    for i in range(1, settle + 1):
        segmenter.track(Frame("profile", i, 0.0, clip[order[i % len(order)]]), [])
    profiler = cProfile.Profile()
    start, cpu = time.perf_counter(), time.thread_time()
    profiler.enable()
    for i in range(settle + 1, settle + frames + 1):
        segmenter.track(Frame("profile", i, 0.0, clip[order[i % len(order)]]), [])
    profiler.disable()
    wall_ms, cpu_ms = (1e3 * (time.perf_counter() - start) / frames, 1e3 * (time.thread_time() - cpu) / frames)
    out = io.StringIO()
    out.write(f"{particles} particles, {size}²: {wall_ms:.1f} ms wall, {cpu_ms:.1f} ms thread CPU per frame "
              "(profiled)\n")
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def _renamed(rev: str, name: str, into: Path) -> str:
    """The package at ``rev`` copied into ``into`` as ``name`` (imports rewritten, as `embedded_ab`); its name."""
    import re
    import shutil

    from tools.bench.provenance import resolve_revision
    from tools.bench.runner import extract_revision

    package = into / name
    shutil.copytree(extract_revision(resolve_revision(rev)) / "sam4em_live", package)
    pattern = re.compile(r"\bsam4em_live\b")
    for path in package.rglob("*.py"):
        path.write_text(pattern.sub(name, path.read_text()))
    return name


def _interleaved(rev: str, clip: np.ndarray, points: list[tuple[int, tuple[float, float]]], frames: int,
                 upkeep_ms: dict[str, list[float]] | None = None) -> tuple[np.ndarray, np.ndarray, int]:
    """Thread CPU (ms) of `Segmenter.track` on frames 0 .. ``frames - 1`` for ``rev`` and the working tree, and
    the frames whose masks differ. ``rev`` ``A..B`` compares revision B (in the tree's place) with A.

    A side whose backend leaves work for after its masks (``upkeep``, `segment.base.DefersUpkeep`) has it run
    after each frame, as the service does, outside the frame's time: its thread CPU per frame goes to
    ``upkeep_ms[label]`` (labels ``rev`` and ``tree``; 0 for a side without it).

    Both packages load in one process (`embedded_ab.renamed_revision`) and track the same frames (``clip``
    played ping-pong, point prompts ``(particle, (x, y))`` on frame 0), alternating which goes first, so
    both see the machine in the same state: the ratio is the code's effect even on a shared machine.
    """
    import sys
    import tempfile
    from pathlib import Path

    from tools.bench.benchmarks.embedded_ab import _load, _same

    order = np.concatenate([np.arange(len(clip)), np.arange(len(clip) - 2, 0, -1)])
    old_rev, _, new_rev = rev.partition("..")
    with tempfile.TemporaryDirectory() as scratch:
        sys.path.insert(0, scratch)
        names = {"rev": _renamed(old_rev, "sam4em_live_old", Path(scratch)),
                 "tree": _renamed(new_rev, "sam4em_live_new", Path(scratch)) if new_rev else "sam4em_live"}
        sides = {}
        for label, name in names.items():
            create, frame_type, prompt_type = _load(name)
            prompts = [prompt_type(pid, 0, (point,), (1,)) for pid, point in points]
            sides[label] = (create("embedded", {}), frame_type, prompts)
        cpu_ms: dict[str, list[float]] = {"rev": [], "tree": []}
        differing = 0
        for i in range(frames):
            masks = {}
            for label in ("rev", "tree") if i % 2 == 0 else ("tree", "rev"):
                segmenter, frame_type, prompts = sides[label]
                start = time.thread_time()
                masks[label] = segmenter.track(frame_type("ab", i, 0.0, clip[order[i % len(order)]]),
                                               prompts if i == 0 else [])
                cpu_ms[label].append(1e3 * (time.thread_time() - start))
                start = time.thread_time()
                if hasattr(segmenter, "upkeep"):
                    segmenter.upkeep()
                if upkeep_ms is not None:
                    upkeep_ms.setdefault(label, []).append(1e3 * (time.thread_time() - start))
            differing += len(masks["rev"]) != len(masks["tree"]) or not all(
                _same(a, b) for a, b in zip(masks["rev"], masks["tree"], strict=True))
    return np.asarray(cpu_ms["rev"]), np.asarray(cpu_ms["tree"]), differing


def compare_track(rev: str, particles: int, size: int, frames: int = 100, settle: int = 45) -> str:
    """Thread CPU of `Segmenter.track` per frame with ``particles`` discs, the working tree against ``rev``
    (or ``A..B``: B against A; `_interleaved`), over ``frames`` frames after ``settle`` (the post-prompt transient)."""
    clip, centres = particle_clip(size, particles, 16)
    points = [(i + 1, (float(x), float(y))) for i, (y, x) in enumerate(centres[0])]
    upkeep: dict[str, list[float]] = {}
    rev_all, tree_all, differing = _interleaved(rev, clip, points, settle + frames, upkeep)
    rev_ms, tree_ms = rev_all[settle:], tree_all[settle:]
    # The whole of a frame's work, its upkeep after the masks included (the throughput's cost).
    rev_total, tree_total = (rev_ms + np.asarray(upkeep["rev"])[settle:], tree_ms + np.asarray(upkeep["tree"])[settle:])

    def spread(ms: np.ndarray) -> str:  # the p99 is what periodic work does (shape refreshes, map updates)
        return f"{ms.mean():.2f} ms (median {np.median(ms):.2f}, p99 {np.percentile(ms, 99):.2f}, max {ms.max():.2f})"

    old, _, new = rev.partition("..")
    new = new or "tree"
    return (f"{particles} particles, {size}², {frames} frames: thread CPU per frame {old} {spread(rev_ms)}, "
            f"{new} {spread(tree_ms)}; {new} / {old}: mean {tree_ms.mean() / rev_ms.mean():.3f}, median "
            f"{np.median(tree_ms) / np.median(rev_ms):.3f}, p99 "
            f"{np.percentile(tree_ms, 99) / np.percentile(rev_ms, 99):.3f};\n  with the upkeep after the masks "
            f"(`DefersUpkeep`): {old} {spread(rev_total)}, {new} {spread(tree_total)}; mean "
            f"{tree_total.mean() / rev_total.mean():.3f}; frames with different masks: {differing}")


#: Blocks of frames after the prompts that `compare_landing` reports: the young memories (refreshed every 2nd
#: learn), the rest of the filling (every 8th, with the edge fit), then the steady state.
LANDING_BLOCKS = ((1, 15), (16, 40), (41, 80), (81, 150))


def compare_landing(rev: str, preset: str = "multi-1024", frames: int = 450) -> str:
    """What the particles prompted together on frame 0 of a simulated ``preset`` cost in the frames after it:
    `Segmenter.track`'s thread CPU per frame (mean, p99, max) by block (`LANDING_BLOCKS`), the working tree
    against ``rev``, interleaved (`_interleaved`). A click at 200 fps: no frame may cost much more than 5 ms."""
    from tools.bench.data import simulated_clip
    from tools.bench.provenance import CACHE_DIR

    clip = simulated_clip(CACHE_DIR, preset, 150, 0)
    points = [(p.particle, p.points[0]) for p in clip.prompts((0,), "point")]
    rev_ms, tree_ms, differing = _interleaved(rev, clip.pixels, points, frames + 1)
    lines = [f"{preset}, {len(points)} point prompts on frame 0, frames 1-{frames}: thread CPU per frame (ms) "
             f"{rev.partition('..')[0]} / {rev.partition('..')[2] or 'tree'}; frames with different masks: {differing}"]
    for lo, hi in (*LANDING_BLOCKS, (1, frames)):
        old, new = rev_ms[lo:hi + 1], tree_ms[lo:hi + 1]
        if old.size:
            lines.append(f"  frames {lo}-{hi}: mean {old.mean():.2f} / {new.mean():.2f} (x{new.mean() / old.mean():.3f}), "
                         f"p99 {np.percentile(old, 99):.1f} / {np.percentile(new, 99):.1f}, "
                         f"max {old.max():.1f} / {new.max():.1f}")
    return "\n".join(lines)


#: What `costliest_frames` times inside a frame: (owner module, class, method) -> label.
FRAME_PARTS = {
    ("sam4em_live.segment.embedded.shape", "ShapeMemory", "refresh"): "shape refresh",
    ("sam4em_live.segment.embedded.segmenter", "EmbeddedSegmenter", "_learn"): "learning",
    ("sam4em_live.segment.embedded.background", "FlatField", "observe"): "background map",
    ("sam4em_live.segment.embedded.static_map", "StaticMap", "observe"): "static map",
}


def costliest_frames(particles: int, size: int, frames: int = 400, top: int = 8, settle: int = 60) -> str:
    """The ``top`` costliest frames of `Segmenter.track` and its upkeep (thread CPU), and what each held.

    The p99 latency at a camera rate the worker keeps up with is set by such frames (issue 23): each is
    listed with the time of `FRAME_PARTS` in it (a learn includes its refresh). The methods are wrapped
    for the run only.
    """
    import functools
    import importlib

    from sam4em_live.frames import Frame
    from sam4em_live.segment.registry import create_segmenter

    spent: dict[str, float] = {}
    originals = []
    for (module, owner, method), label in FRAME_PARTS.items():
        cls = getattr(importlib.import_module(module), owner)
        original = getattr(cls, method)
        originals.append((cls, method, original))

        def timed(*args: Any, _original: Any = original, _label: str = label, **kwargs: Any) -> Any:
            start = time.thread_time()
            try:
                return _original(*args, **kwargs)
            finally:
                spent[_label] = spent.get(_label, 0.0) + 1e3 * (time.thread_time() - start)

        setattr(cls, method, functools.wraps(original)(timed))
    try:
        clip, centres = particle_clip(size, particles, 16)
        order = np.concatenate([np.arange(len(clip)), np.arange(len(clip) - 2, 0, -1)])
        segmenter: Any = create_segmenter("embedded", {})
        rows = []
        for i in range(settle + frames):
            spent.clear()
            start = time.thread_time()
            segmenter.track(Frame("spikes", i, 0.0, clip[order[i % len(order)]]), _prompts(centres[0]) if i == 0 else [])
            masks_ms = 1e3 * (time.thread_time() - start)
            segmenter.upkeep()
            if i >= settle:
                rows.append((1e3 * (time.thread_time() - start), masks_ms, i, dict(spent)))
    finally:
        for cls, method, original in originals:
            setattr(cls, method, original)
    total = np.array([row[0] for row in rows])
    lines = [f"{particles} particles, {size}², frames {settle}-{settle + frames - 1}: track + upkeep thread CPU per "
             f"frame mean {total.mean():.2f} ms, median {np.median(total):.2f}, p99 {np.percentile(total, 99):.2f}; "
             f"the {top} costliest:"]
    for ms, masks_ms, index, parts in sorted(rows, key=lambda row: -row[0])[:top]:
        held = ", ".join(f"{label} {value:.2f}" for label, value in parts.items() if value >= 0.05)
        lines.append(f"  frame {index}: {ms:.2f} ms (to masks {masks_ms:.2f}){'; ' + held if held else ''}")
    return "\n".join(lines)
