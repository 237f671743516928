"""A/B of the embedded backend against an earlier git revision, interleaved frame by frame.

Our 2-core VM changes speed by 20-50 % between minutes, so two benchmark runs
taken one after the other compare the machine's phases as much as the code.
This script imports the package as it was at ``--rev`` (extracted with
``git archive`` into a temporary folder and renamed ``sam4em_live_rev`` so
both versions load in one process), creates one segmenter of each, and feeds
every frame of a simulated clip to both, alternating which goes first. Both
see the same machine at the same moment; the ratio of their mean times is
the code's effect. It also counts the frames whose masks differ.

    python tools/bench_embedded_ab.py --rev HEAD~1 --frames 600

The start-up (the prompt frame, and the frames while the appearance memory fills) is
compared with ``--warmup 0 --frames 60 --repeats 10``: fresh segmenters for each repeat,
and the prompt frame's time is reported on its own as well.

Prints a line per version and, last, one JSON line.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import importlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tarfile  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

from sam4em_live.sim.presets import get_preset  # noqa: E402
from sam4em_live.sim.video import make_prompts, simulate_video  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
RENAMED = "sam4em_live_rev"


def extract_revision(rev: str, into: Path) -> None:
    """The package at ``rev`` as ``into/sam4em_live_rev`` (imports rewritten to the new name)."""
    archive = subprocess.run(["git", "-C", str(REPO), "archive", rev, "sam4em_live"], check=True,
                             capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    package = into / RENAMED
    (into / "sam4em_live").rename(package)
    pattern = re.compile(r"\bsam4em_live\b")
    for path in package.rglob("*.py"):
        path.write_text(pattern.sub(RENAMED, path.read_text()))


def _load(name: str) -> tuple[Any, Any, Any]:
    """(create, Frame, Prompt) of the package ``name``."""
    embedded = importlib.import_module(f"{name}.segment.embedded")
    frames = importlib.import_module(f"{name}.frames")
    base = importlib.import_module(f"{name}.segment.base")
    return embedded.create, frames.Frame, base.Prompt


def _same(a: Any, b: Any) -> bool:
    if a.present != b.present:
        return False
    return not a.present or (tuple(a.bbox) == tuple(b.bbox) and np.array_equal(a.crop, b.crop))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", default="HEAD", help="git revision to compare the working tree with")
    parser.add_argument("--preset", default="multi-1024")
    parser.add_argument("--frames", type=int, default=600, help="frames timed (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=40)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--options", default="{}", help="JSON options for both segmenters")
    parser.add_argument("--repeats", type=int, default=1, help="runs over the clip, each with fresh segmenters")
    args = parser.parse_args(argv)

    video = simulate_video(get_preset(args.preset), args.warmup + args.frames, args.seed)
    prompts = make_prompts(video, frames=(0,))
    options = json.loads(args.options)
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        extract_revision(args.rev, Path(tmp))
        sys.path.insert(0, tmp)
        loaded = {label: _load(name) for label, name in ((args.rev, RENAMED), ("working tree", "sam4em_live"))}
        labels = list(loaded)
        times: dict[str, list[float]] = {label: [] for label in labels}
        prompt_times: dict[str, list[float]] = {label: [] for label in labels}
        differing = 0
        for _ in range(args.repeats):
            versions = {}
            for label, (create, frame_type, prompt_type) in loaded.items():
                own_prompts = [prompt_type(**{f.name: getattr(p, f.name) for f in dataclasses.fields(p)})
                               for p in prompts]
                versions[label] = (create(options), frame_type, own_prompts)
            for i, pixels in enumerate(video.frames):
                masks = {}
                for label in labels if i % 2 == 0 else labels[::-1]:  # alternate who goes first
                    segmenter, frame_type, own_prompts = versions[label]
                    edits = [p for p in own_prompts if p.frame == i]
                    start = time.perf_counter()
                    masks[label] = segmenter.track(frame_type("ab", i, 0.0, pixels), edits)
                    elapsed_ms = (time.perf_counter() - start) * 1e3
                    if i >= args.warmup:
                        times[label].append(elapsed_ms)
                    if edits:
                        prompt_times[label].append(elapsed_ms)
                a, b = (masks[label] for label in labels)
                if len(a) != len(b) or not all(_same(x, y) for x, y in zip(a, b, strict=True)):
                    differing += 1
    summary: dict[str, Any] = {"benchmark": "embedded_ab", "preset": args.preset, "frames_timed": args.frames,
                               "repeats": args.repeats, "rev": args.rev, "frames_with_different_masks": differing}
    for label, values in times.items():
        t = np.asarray(values)
        key = "rev" if label == args.rev else "tree"
        summary[f"{key}_mean_ms"] = round(float(t.mean()), 3)
        summary[f"{key}_median_ms"] = round(float(np.median(t)), 3)
        summary[f"{key}_p99_ms"] = round(float(np.percentile(t, 99)), 3)
        summary[f"{key}_prompt_frame_ms"] = round(float(np.mean(prompt_times[label])), 3)
        print(f"# {label:>12}: mean {t.mean():.3f} ms, median {np.median(t):.3f} ms, "
              f"p99 {np.percentile(t, 99):.3f} ms per frame; prompt frame {np.mean(prompt_times[label]):.1f} ms")
    summary["mean_ratio_tree_over_rev"] = round(summary["tree_mean_ms"] / summary["rev_mean_ms"], 3)
    print(f"# working tree / {args.rev}: {summary['mean_ratio_tree_over_rev']} (mean); "
          f"{differing} frames with different masks")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
