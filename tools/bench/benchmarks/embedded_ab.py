"""The embedded backend against a git revision's, interleaved frame by frame in one process.

`compare` alternates whole runs; on this VM, whose speed moves by 20-50 % between minutes and whose load
comes and goes with other jobs, runs of a few seconds can still land in different phases. This
benchmark is finer: it loads the package as it was at ``rev`` next to the working tree's (extracted with
``git archive`` and renamed ``sam4em_live_rev``, imports rewritten, so both load in one process), creates
one segmenter of each and feeds every frame of a cached clip to both, alternating which goes first. Both
see the same machine at the same moment; the ratio of their mean times is the code's effect (repeat runs
agreed within about 1.5 %). It also counts the frames whose masks differ. ``repeats`` runs the clip again
with fresh segmenters (``warmup 0`` compares the start-up).
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import shutil
import sys
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from tools.bench.data import simulated_clip
from tools.bench.figures import count, integer, mapping, text
from tools.bench.registry import Measurement, RunContext, benchmark
from tools.bench.schema import Metric

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

    from tools.bench.schema import ParamValue

RENAMED = "sam4em_live_rev"


def renamed_revision(commit: str, context: RunContext) -> Path:
    """A folder holding the package at ``commit`` as ``sam4em_live_rev`` (imports rewritten)."""
    from tools.bench.runner import extract_revision

    source = extract_revision(commit, context.cache) / "sam4em_live"
    package = context.scratch / "renamed" / RENAMED
    shutil.copytree(source, package)
    pattern = re.compile(r"\bsam4em_live\b")
    for path in package.rglob("*.py"):
        path.write_text(pattern.sub(RENAMED, path.read_text()))
    return package.parent


def _load(name: str) -> tuple[Any, Any, Any]:
    """(create_segmenter, Frame, Prompt) of the package ``name`` (Prompt where that revision kept it)."""
    registry = importlib.import_module(f"{name}.segment.registry")
    frames = importlib.import_module(f"{name}.frames")
    for module in ("particles", "segment.base"):
        try:
            prompt = importlib.import_module(f"{name}.{module}").Prompt
            break
        except (ImportError, AttributeError):
            continue
    else:
        raise ImportError(f"no Prompt in {name}")
    return registry.create_segmenter, frames.Frame, prompt


def _same(a: Any, b: Any) -> bool:
    if a.present != b.present:
        return False
    return not a.present or (tuple(a.bbox) == tuple(b.bbox) and np.array_equal(a.crop, b.crop))


@benchmark("embedded-ab", "embedded backend: working tree / a git revision, interleaved frame by frame in one process",
           {"rev": "HEAD", "preset": "multi-1024", "frames": 600, "warmup": 40, "seed": 0, "repeats": 1,
            "options": {}}, one_blas_thread=True)
def embedded_ab(params: Mapping[str, ParamValue], context: RunContext) -> Measurement:
    from tools.bench.provenance import resolve_revision

    warmup, frames = integer(params, "warmup"), integer(params, "frames")
    clip = simulated_clip(context.cache, text(params, "preset"), warmup + frames, integer(params, "seed"))
    pixels, prompts = clip.pixels, clip.prompts((0,), "point")
    sys.path.insert(0, str(renamed_revision(resolve_revision(text(params, "rev")), context)))
    loaded = {"rev": _load(RENAMED), "tree": _load("sam4em_live")}
    times: dict[str, list[float]] = {"rev": [], "tree": []}
    prompt_times: dict[str, list[float]] = {"rev": [], "tree": []}
    differing = 0
    for _ in range(integer(params, "repeats")):
        sides = {}
        for label, (create, frame_type, prompt_type) in loaded.items():
            own = [prompt_type(**{f.name: getattr(p, f.name) for f in dataclasses.fields(p)}) for p in prompts]
            sides[label] = (create("embedded", mapping(params, "options")), frame_type, own)
        for i in range(len(pixels)):
            masks = {}
            for label in ("rev", "tree") if i % 2 == 0 else ("tree", "rev"):  # alternate who goes first
                segmenter, frame_type, own = sides[label]
                edits = [p for p in own if p.frame == i]
                start = time.perf_counter()
                masks[label] = segmenter.track(frame_type("ab", i, 0.0, pixels[i]), edits)
                elapsed_ms = (time.perf_counter() - start) * 1e3
                if i >= warmup:
                    times[label].append(elapsed_ms)
                if edits:
                    prompt_times[label].append(elapsed_ms)
            a, b = masks["rev"], masks["tree"]
            differing += len(a) != len(b) or not all(_same(x, y) for x, y in zip(a, b, strict=True))
        for segmenter, _, _ in sides.values():
            segmenter.close()
    metrics = {f"{label}_{name}": Metric(float(fn(values)), "ms")
               for label, values in times.items()
               for name, fn in (("mean_ms", np.mean), ("median_ms", np.median),
                                ("p99_ms", lambda v: np.percentile(v, 99)))}
    metrics.update({f"{label}_prompt_frame_ms": Metric(float(np.mean(v)), "ms") for label, v in prompt_times.items()})
    metrics["mean_ratio_tree_over_rev"] = Metric(metrics["tree_mean_ms"].value / metrics["rev_mean_ms"].value,
                                                 "ratio")
    metrics["frames_with_different_masks"] = count(differing, "frames", "lower")
    return Measurement(metrics)
