"""Seeding as users prompt (issue 16): every condition x every prompt kind, a size sweep of the seed's area
bias, and the time to seed 50 prompts at once. Prints markdown tables (docs/benchmarks.md, "Seeding").

    python tools/bench_seeding.py                 # all three parts (~2 min on the 2-core VM)
    python tools/bench_seeding.py --part prompts --seeds 0 1 2
    python tools/bench_seeding.py --part timing --baseline /tmp/parent   # before/after, side by side
    python tools/bench_seeding.py --part timing --baseline /tmp/parent --together   # both at once (loaded VM)

Only the prompt frame is rendered and only seeding runs (no tracking; each clip's prompts of one kind at
once, as `seed_each` seeds a user's batch, or with ``--alone`` one by one): a prompt is **seeded** if it
is not refused, its **IoU** is the seed mask's against the truth on that frame, and **area bias** is
(seed area - true area) / true area. Conditions and prompt kinds are those of the robustness benchmark
(`sam4em_live.sim.conditions`, `ScenarioClip.prompts`), and so is the prompt frame: a scenario's paths depend
on its length, so it is built for ``--frames`` (the robustness benchmark's 100 by default) and rendered up to
its prompt frame only. ``--list`` also prints every seed that takes in more than its particle (area over
`SUSPECT_AREA` x the truth) or misses it (IoU under `SUSPECT_IOU`), and every refusal.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from sam4em_live.particles import Prompt, PromptError
from sam4em_live.segment.embedded.background import FlatField
from sam4em_live.segment.embedded.options import EmbeddedOptions
from sam4em_live.segment.embedded.seed import Seed, seed_each, seed_particle, seed_prompts
from sam4em_live.sim.conditions import CONDITIONS
from sam4em_live.sim.scenario import PROMPT_KINDS, ScenarioClip, render_scenario
from sam4em_live.sim.spec import ImagingSpec, LiquidCellSpec, ParticleSpec, SimulationSpec
from sam4em_live.sim.video import mask_box, simulate_video

OPTIONS = EmbeddedOptions()
#: ``--list`` prints a seed whose area exceeds this multiple of its particle's (it took in a neighbour) ...
SUSPECT_AREA = 1.2
#: ... or whose IoU with its particle is below this.
SUSPECT_IOU = 0.6


def prompt_clip(condition: str, seed: int, frames: int, motion: str | None = None) -> ScenarioClip:
    """The clip of ``condition`` built for ``frames`` frames (its paths depend on it), rendered to its prompt frame."""
    info = CONDITIONS[condition]
    scenario = info.build(seed, frames, motion or info.motions[0])
    return render_scenario(dataclasses.replace(scenario, n_frames=scenario.prompt_frame + 1), seed)


def seed_on_frame(seed: Seed, shape: tuple[int, int]) -> np.ndarray:
    """The seed's mask on the whole frame."""
    full = np.zeros(shape, dtype=bool)
    rows, cols = np.nonzero(seed.mask)
    rows, cols = rows + seed.window.y0, cols + seed.window.x0
    inside = (rows >= 0) & (cols >= 0) & (rows < shape[0]) & (cols < shape[1])
    full[rows[inside], cols[inside]] = True
    return full


def score(pixels: np.ndarray, truth: np.ndarray, prompt: Prompt, label: str | None = None,
          seeded: Seed | PromptError | None = None) -> tuple[float, float] | None:
    """(IoU, area bias) of the seed of ``prompt``; None if it was refused. With ``label``, suspects are printed.

    ``seeded``: the prompt's seed or refusal from a batch (`seed_each`); None: seeded here on its own.
    """
    if seeded is None:
        try:
            seeded = seed_particle(pixels, prompt, OPTIONS)
        except PromptError as exc:
            seeded = exc
    if isinstance(seeded, PromptError):
        if label is not None:
            print(f"    {label} particle {prompt.particle}: refused ({seeded})", file=sys.stderr)
        return None
    mask = seed_on_frame(seeded, pixels.shape)
    iou = float((mask & truth).sum() / max((mask | truth).sum(), 1))
    if label is not None and (mask.sum() > SUSPECT_AREA * truth.sum() or iou < SUSPECT_IOU):
        print(f"    {label} particle {prompt.particle}: seed {int(mask.sum())} px for {int(truth.sum())} px, "
              f"IoU {100 * iou:.0f}", file=sys.stderr)
    return iou, float(mask.sum() / truth.sum() - 1)


def seeded_together(pixels: np.ndarray, prompts: list[Prompt]) -> list[Seed | PromptError]:
    """Each prompt's seed or refusal, the prompts seeded at once as a user's batch is (`seed_each`)."""
    seeds, refused = seed_each(pixels, prompts, OPTIONS)
    by_particle = {exc.particle: exc for exc in refused}
    return [seeds[id(p)] if id(p) in seeds else by_particle[p.particle] for p in prompts]


def prompts_table(seeds: list[int], conditions: list[str] | None = None, frames: int = 100,
                  listing: bool = False, alone: bool = False) -> None:
    print("| condition | " + " | ".join(PROMPT_KINDS) + " |")
    print("|---|" + "---|" * len(PROMPT_KINDS))
    for name in CONDITIONS:
        if conditions and name not in conditions:
            continue
        cells = []
        clips = [prompt_clip(name, seed, frames) for seed in seeds]
        for kind in PROMPT_KINDS:
            results = []
            for clip in clips:
                frame = clip.scenario.prompt_frame
                prompts = clip.prompts(kind)
                # The frame as the backend seeds it: divided by its first-frame background map (`FlatField`).
                pixels = FlatField(OPTIONS.background_model).peek(clip.frames[frame], prompts)
                batch = [None] * len(prompts) if alone else seeded_together(pixels, prompts)
                for prompt, seeded in zip(prompts, batch, strict=True):
                    label = f"{name} seed {clip.seed} {kind}" if listing else None
                    results.append(score(pixels, clip.gt_labels[frame] == prompt.particle, prompt,
                                         label, seeded))
            seeded_ok = [r for r in results if r is not None]
            iou = np.mean([r[0] for r in seeded_ok]) if seeded_ok else float("nan")
            bias = np.median([r[1] for r in seeded_ok]) if seeded_ok else float("nan")
            cells.append(f"{len(seeded_ok)}/{len(results)}, IoU {100 * iou:.0f}, {100 * bias:+.0f} %")
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


def sweep_table(seeds: list[int]) -> None:
    """Seed area bias vs size for each shape, tight box and centre click, at a visible contrast."""
    sizes = (5, 10, 20, 40, 80, 120)
    print("| shape | " + " | ".join(f"{s} px" for s in sizes) + " |")
    print("|---|" + "---|" * len(sizes))
    for shape in ("cube", "prism", "sphere", "rod"):
        cells = []
        for size in sizes:
            biases, refused = [], 0
            for seed in seeds:
                particle = ParticleSpec(shape=shape, width_nm=float(size) if shape != "rod" else max(size / 3, 3.0),
                                        length_nm=float(size), thickness_nm=max(0.5 * size, 10.0),
                                        start_xy_px=(size + 40.3, size + 39.6), start_angle_deg=25.0)
                edge = 2 * size + 80
                spec = SimulationSpec(imaging=ImagingSpec(shape_px=(edge, edge), dose_rate_e_per_A2s=350.0),
                                      cell=LiquidCellSpec(water_thickness_nm=50.0), particles=(particle,))
                video = simulate_video(spec, 1, seed)
                truth = video.gt_labels[0] == 1
                ys, xs = np.nonzero(truth)
                for prompt in (Prompt(1, 0, box=mask_box(truth)), Prompt(1, 0, ((float(xs.mean()), float(ys.mean())),), (1,))):
                    result = score(video.frames[0], truth, prompt)
                    if result is None:
                        refused += 1
                    else:
                        biases.append(result[1])
            cell = f"{100 * np.median(biases):+.0f} %" if biases else "-"
            cells.append(cell + (f" ({refused} refused)" if refused else ""))
        print(f"| {shape} | " + " | ".join(cells) + " |", flush=True)


def timing_prompts() -> tuple[np.ndarray, list[Prompt]]:
    """The dense field's prompt frame (seed 0) and 50 point prompts on it: 35 centre clicks, then 15 rim clicks."""
    clip = prompt_clip("dense", 0, 2, "chen")
    prompts = clip.prompts("point")
    more = [Prompt(p.particle + 100, 0, p.points, p.labels) for p in clip.prompts("point-edge")]
    return clip.frames[0], (prompts + more)[:50]


def timing_table() -> None:
    """Seconds to seed 10, 25 and 50 point prompts at once on the dense field's prompt frame."""
    pixels, prompts = timing_prompts()
    seed_prompts(pixels, prompts[:2], OPTIONS)  # first-call costs
    print("| prompts | seconds | ms per prompt |")
    print("|---|---|---|")
    for n in (10, 25, 50):
        best = min(_timed(pixels, prompts[:n]) for _ in range(3))
        print(f"| {n} | {best:.2f} | {1000 * best / n:.0f} |", flush=True)


def _timed(pixels: np.ndarray, prompts: list[Prompt]) -> float:
    start = time.perf_counter()
    with contextlib.suppress(PromptError):  # a refused prompt still costs its seeding
        seed_prompts(pixels, prompts, OPTIONS)
    return time.perf_counter() - start


#: Run by `side_by_side` in a child process whose ``sam4em_live`` is one tree's: seeds the 50 prompts
#: saved in argv[1] once (after a warm-up on two) and prints wall and CPU seconds.
_CHILD = """
import contextlib, sys, time
import numpy as np
from sam4em_live.particles import Prompt, PromptError
from sam4em_live.segment.embedded.options import EmbeddedOptions
from sam4em_live.segment.embedded.seed import seed_prompts
saved = np.load(sys.argv[1])
pixels = saved["pixels"]
prompts = [Prompt(int(p), 0, ((float(x), float(y)),), (1,)) for p, x, y in saved["points"]]
with contextlib.suppress(PromptError):
    seed_prompts(pixels, prompts[:2], EmbeddedOptions())
wall, cpu = time.perf_counter(), time.process_time()
with contextlib.suppress(PromptError):
    seed_prompts(pixels, prompts, EmbeddedOptions())
print(time.perf_counter() - wall, time.process_time() - cpu)
"""


def side_by_side(baseline: str, rounds: int, together: bool = False) -> None:
    """`timing_prompts` seeded by the ``baseline`` tree's package and by this one, ``rounds`` times.

    Each run is a fresh process importing ``sam4em_live`` from its tree (``baseline``: e.g. a
    ``git worktree`` of the parent revision), the two alternated; the load average is printed with
    each run. ``together``: the two trees' processes run at the same time instead, so that on a
    loaded machine each round's pair shares the same load (alternated runs a few seconds apart
    scattered by +-15 % CPU and 0.5-1.6x wall at load 6-16); compare their CPU seconds.
    """
    pixels, prompts = timing_prompts()
    this = str(Path(__file__).resolve().parents[1])
    trees = (("before", baseline), ("after", this))
    with tempfile.TemporaryDirectory() as folder:
        saved = str(Path(folder) / "prompts.npz")
        np.savez(saved, pixels=pixels, points=np.array([(p.particle, *p.points[0]) for p in prompts]))
        print("| run | tree | wall s | CPU s | load (1 min) |")
        print("|---|---|---|---|---|")
        ratios, cpu_ratios = [], []
        for run in range(rounds):
            load = Path("/proc/loadavg").read_text().split()[0]
            children = {name: _timed_child(tree, saved) for name, tree in trees} if together else {}
            times = {}
            for name, tree in trees:
                if not together:
                    load = Path("/proc/loadavg").read_text().split()[0]
                child = children[name] if together else _timed_child(tree, saved)
                out, _ = child.communicate()
                if child.returncode:
                    raise RuntimeError(f"the {name} tree's run failed ({child.returncode})")
                times[name] = (float(out.split()[0]), float(out.split()[1]))
                print(f"| {run + 1} | {name} ({tree}) | {times[name][0]:.2f} | {times[name][1]:.2f} | {load} |",
                      flush=True)
            ratios.append(times["before"][0] / times["after"][0])
            cpu_ratios.append(times["before"][1] / times["after"][1])
        print(f"\nbefore / after, wall: {', '.join(f'{r:.2f}' for r in ratios)}; "
              f"CPU: {', '.join(f'{r:.2f}' for r in cpu_ratios)}")


def _timed_child(tree: str, saved: str) -> subprocess.Popen[str]:
    """A fresh process seeding the saved prompts with ``tree``'s package (`_CHILD`), started."""
    env = {**os.environ, "PYTHONPATH": tree}
    return subprocess.Popen([sys.executable, "-c", _CHILD, saved], env=env, cwd=tree, stdout=subprocess.PIPE,
                            text=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("prompts", "sweep", "timing", "all"), default="all")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("-c", "--conditions", nargs="+", choices=sorted(CONDITIONS),
                        help="only these conditions in the prompts table (default: all)")
    parser.add_argument("-n", "--frames", type=int, default=100,
                        help="length the scenarios are built for (the robustness benchmark's; paths depend on it)")
    parser.add_argument("--list", action="store_true",
                        help="print (stderr) every refusal and every seed that takes in a neighbour or misses")
    parser.add_argument("--baseline", metavar="TREE",
                        help="with --part timing: time 50 prompts with TREE's package (e.g. a git worktree of the "
                             "parent revision) and this one's, alternately, in fresh processes")
    parser.add_argument("--rounds", type=int, default=3, help="alternations of --baseline (default 3)")
    parser.add_argument("--together", action="store_true",
                        help="with --baseline: run the two trees at the same time each round (a loaded machine)")
    parser.add_argument("--alone", action="store_true",
                        help="prompts table: seed each prompt on its own (`seed_particle`), not the frame's "
                             "prompts of a kind at once (`seed_each`, sharing the frame's preparation)")
    args = parser.parse_args()
    if args.part in ("prompts", "all"):
        prompts_table(args.seeds, args.conditions, args.frames, args.list, args.alone)
    if args.part in ("sweep", "all"):
        sweep_table(args.seeds)
    if args.part in ("timing", "all"):
        if args.baseline:
            side_by_side(args.baseline, args.rounds, args.together)
        else:
            timing_table()


if __name__ == "__main__":
    main()
