"""Probes of `Segmenter.track` alone on the particle-scaling clips (issue 23): where a frame's time goes.

`profile_track` prints a cProfile of the embedded backend with N particles; `compare_track` compares the
working tree's thread CPU per frame with a git revision's, both loaded in one process and interleaved frame
by frame. Run through ``python -m tools.bench.benchmarks.particle_scaling --profile / --ab`` (that module's
docstring).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from tools.bench.benchmarks.particle_clips import _prompts, particle_clip


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


def compare_track(rev: str, particles: int, size: int, frames: int = 100, settle: int = 45) -> str:
    """Thread CPU of `Segmenter.track` per frame, the working tree against ``rev``, interleaved frame by frame.

    Both packages load in one process (`embedded_ab.renamed_revision`) and track the same synthetic frames
    with ``particles``, alternating which goes first, so both see the machine in the same state: the
    ratio is the code's effect even on a shared machine. Frames whose masks differ are counted.
    """
    import sys
    import tempfile
    from pathlib import Path

    from tools.bench.benchmarks.embedded_ab import RENAMED, _load, _same, renamed_revision
    from tools.bench.provenance import CACHE_DIR, resolve_revision
    from tools.bench.registry import RunContext

    clip, centres = particle_clip(size, particles, 16)
    order = np.concatenate([np.arange(len(clip)), np.arange(len(clip) - 2, 0, -1)])
    with tempfile.TemporaryDirectory() as scratch:
        sys.path.insert(0, str(renamed_revision(resolve_revision(rev), RunContext(Path(scratch), CACHE_DIR))))
        sides = {}
        for label, name in (("rev", RENAMED), ("tree", "sam4em_live")):
            create, frame_type, prompt_type = _load(name)
            prompts = [prompt_type(i + 1, 0, ((float(x), float(y)),), (1,)) for i, (y, x) in enumerate(centres[0])]
            sides[label] = (create("embedded", {}), frame_type, prompts)
        cpu_ms: dict[str, list[float]] = {"rev": [], "tree": []}
        differing = 0
        for i in range(settle + frames):
            masks = {}
            for label in ("rev", "tree") if i % 2 == 0 else ("tree", "rev"):
                segmenter, frame_type, prompts = sides[label]
                start = time.thread_time()
                masks[label] = segmenter.track(frame_type("ab", i, 0.0, clip[order[i % len(order)]]),
                                               prompts if i == 0 else [])
                if i >= settle:
                    cpu_ms[label].append(1e3 * (time.thread_time() - start))
            differing += len(masks["rev"]) != len(masks["tree"]) or not all(
                _same(a, b) for a, b in zip(masks["rev"], masks["tree"], strict=True))
    rev_ms, tree_ms = np.asarray(cpu_ms["rev"]), np.asarray(cpu_ms["tree"])

    def spread(ms: np.ndarray) -> str:  # the p99 is what periodic work does (shape refreshes, map updates)
        return f"{ms.mean():.2f} ms (median {np.median(ms):.2f}, p99 {np.percentile(ms, 99):.2f}, max {ms.max():.2f})"

    return (f"{particles} particles, {size}², {frames} frames: thread CPU per frame {rev} {spread(rev_ms)}, "
            f"tree {spread(tree_ms)}; tree / {rev}: mean {tree_ms.mean() / rev_ms.mean():.3f}, median "
            f"{np.median(tree_ms) / np.median(rev_ms):.3f}, p99 "
            f"{np.percentile(tree_ms, 99) / np.percentile(rev_ms, 99):.3f}; frames with different masks: {differing}")
