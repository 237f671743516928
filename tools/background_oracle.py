"""Where the embedded backend loses J&F on `foreign-noise`: the learned background map against the true one.

    python tools/background_oracle.py                                   # every oracle, seeds 0-3, sim + monet
    python tools/background_oracle.py -s 4 5 6 7 --oracles learned true-under:10
    python tools/background_oracle.py --oracles true-under:10 --scale coarse   # only the true map's coarse part

The `foreign-noise` condition multiplies the scene by a known background (a 1/f texture, a Gaussian PSF, four
detector-quadrant gains: `sam4em_live.sim.conditions.foreign_noise`); `true_background` rebuilds it. Each
oracle runs the backend as the robustness benchmark does (point prompts on frame 0, the `PromptError`
contract) but divides some frames by a map that is the truth in some places and the backend's learned map
(`background.FlatField`, which learns on as usual) elsewhere:

- ``learned``: the backend as it is;
- ``true:N``: the true map everywhere on frames 0..N-1 (``true:all``: the whole clip);
- ``true-under:N``: the truth under the prompted particles (their true masks grown by `UNDER_GROW_PX`) on
  frames 0..N-1, the learned map elsewhere;
- ``true-around:N``: the reverse: the learned map under the particles, the truth everywhere else.

``--scale coarse`` / ``fine`` replace only the true map's part above / below `SCALE_SIGMA_PX` (a Gaussian).
J&F per clip is `tools.bench.benchmarks.robustness.mask_scores`; clean is run alongside for the ΔJ&F.
Findings: docs/benchmarks.md, "Background model: foreign-noise".
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

REPO_ROOT = Path(__file__).resolve().parents[1]
if __package__ in (None, ""):  # run as a script: make `tools` importable
    sys.path.insert(0, str(REPO_ROOT))

from sam4em_live.segment.embedded.background import FlatField  # noqa: E402

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sam4em_live.particles import ParticleEdit
    from sam4em_live.sim.scenario import ScenarioClip

#: The true masks are grown by this much for ``true-under`` (the particle's blurred rim).
UNDER_GROW_PX = 2
#: ``--scale``: the true map's coarse part is its Gaussian mean at this sigma, the fine part the rest.
SCALE_SIGMA_PX = 6.0
#: The `foreign-noise` condition's parameters (`conditions.foreign_noise`; `tests/test_background_oracle.py`
#: checks that dividing by the rebuilt map leaves no structure).
TEXTURE_BETA, TEXTURE_FRACTION, PSF_SIGMA_PX = 2.0, 0.03, 0.8
QUADRANT_GAINS = (0.97, 1.02, 1.0, 1.04)


def true_background(seed: int, shape: tuple[int, int]) -> np.ndarray:
    """The multiplicative background of `foreign-noise` for ``seed`` (mean 1, float32): texture x PSF x gains."""
    from sam4em_live.sim import degrade

    rng = np.random.default_rng([seed, 21])  # the condition's own stream: the texture is its first draw
    texture = degrade.fractal_texture(shape, TEXTURE_BETA, rng)
    gains = degrade.quadrant_gains(shape, QUADRANT_GAINS)
    # The texture multiplies the expected image before the PSF; the gains come after it.
    textured = ndimage.gaussian_filter(1.0 + np.float32(TEXTURE_FRACTION) * texture, PSF_SIGMA_PX)
    truth = textured * gains
    return (truth / truth.mean()).astype(np.float32)


class OracleFlatField(FlatField):
    """A `FlatField` that learns as usual but divides frames 0..``frames``-1 by a partly true map."""

    def __init__(self, truth: np.ndarray, labels: np.ndarray, kind: str, frames: int, scale: str) -> None:
        super().__init__()
        self.truth, self.labels, self.kind, self.frames = truth, labels, kind, frames
        if scale == "coarse":
            self.truth = ndimage.gaussian_filter(truth, SCALE_SIGMA_PX)
        self.scale = scale
        self.seen = 0

    def flatten(self, pixels: np.ndarray, prompts: Sequence[ParticleEdit] = ()) -> np.ndarray:
        learned = super().flatten(pixels, prompts)  # the learned map's state moves on as in the backend
        index, self.seen = self.seen, self.seen + 1
        if self.kind == "learned" or index >= self.frames:
            return learned
        ours = self._learned_full(pixels.shape)
        truth = self.truth
        if self.scale == "fine":  # the learned map's coarse part with the truth's fine part
            truth = ours * truth / ndimage.gaussian_filter(truth, SCALE_SIGMA_PX)
        under = ndimage.binary_dilation(self.labels[index] > 0, iterations=UNDER_GROW_PX)
        if self.kind == "true":
            background = truth
        elif self.kind == "true-under":
            background = np.where(under, truth, ours)
        else:
            background = np.where(under, ours, truth)
        top = float(np.iinfo(pixels.dtype).max - 1) if pixels.dtype.kind in "ui" else np.inf
        return np.clip(np.rint(pixels / background), 0, top).astype(pixels.dtype)

    def _learned_full(self, shape: tuple[int, ...]) -> np.ndarray:
        state = self.state
        if state is None or not state.active:
            return np.ones(shape, np.float32)
        full = np.repeat(np.repeat(state.relative, state.factor, 0), state.factor, 1)
        out = np.ones(shape, np.float32)
        rows, cols = min(shape[0], full.shape[0]), min(shape[1], full.shape[1])
        out[:rows, :cols] = full[:rows, :cols]
        return out / np.float32(out.mean())


def run_clip(clip: ScenarioClip, background: FlatField) -> float:
    """J&F of the prompted particles with ``background`` in place of the backend's own map."""
    from sam4em_live.frames import Frame
    from sam4em_live.segment.base import track_with_retries
    from sam4em_live.segment.embedded.segmenter import EmbeddedSegmenter
    from tools.bench.benchmarks.robustness import mask_scores

    segmenter = EmbeddedSegmenter()
    segmenter._background = background  # the one seam a diagnosis needs; the backend itself is unchanged
    prompts = clip.prompts("point")
    predicted = np.zeros(clip.frames.shape, np.uint16)
    for i, pixels in enumerate(clip.frames):
        masks, _ = track_with_retries(segmenter, Frame("oracle", i, 0.0, pixels), [p for p in prompts if p.frame == i])
        for mask in masks:
            if mask.present and mask.crop is not None and mask.bbox is not None:
                x0, y0, x1, y1 = mask.bbox
                predicted[i, y0:y1, x0:x1][mask.crop] = mask.particle
    segmenter.close()
    return mask_scores(clip, predicted)["J&F"]


def main(argv: list[str] | None = None) -> int:
    from sam4em_live.sim.conditions import get_condition
    from sam4em_live.sim.scenario import render_scenario

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-s", "--seeds", nargs="+", type=int, default=[0, 1, 2, 3])
    parser.add_argument("-m", "--motions", nargs="+", default=["sim", "monet"])
    parser.add_argument("-n", "--frames", type=int, default=100)
    parser.add_argument("--oracles", nargs="+", default=["learned", "true:all", "true:1", "true:10", "true-under:1",
                                                         "true-under:10", "true-around:10"])
    parser.add_argument("--scale", choices=["all", "coarse", "fine"], default="all")
    args = parser.parse_args(argv)
    print(f"| motion | seed | clean | {' | '.join(args.oracles)} |")
    print("|---|---|---|" + "---|" * len(args.oracles))
    totals: dict[str, list[float]] = {}
    for motion in args.motions:
        for seed in args.seeds:
            noisy = render_scenario(get_condition("foreign-noise").build(seed, args.frames, motion), seed)
            clean = render_scenario(get_condition("clean").build(seed, args.frames, motion), seed)
            truth = true_background(seed, (int(noisy.frames.shape[1]), int(noisy.frames.shape[2])))
            row = {"clean": run_clip(clean, FlatField())}
            for oracle in args.oracles:
                kind, _, upto = oracle.partition(":")
                frames = args.frames if upto in ("", "all") else int(upto)
                row[oracle] = run_clip(noisy, OracleFlatField(truth, noisy.gt_labels, kind, frames, args.scale))
            for key, value in row.items():
                totals.setdefault(f"{motion}/{key}", []).append(value)
            print(f"| {motion} | {seed} | " + " | ".join(f"{row[k]:.1f}" for k in ["clean", *args.oracles]) + " |",
                  flush=True)
    for motion in args.motions:
        means = [float(np.mean(totals[f"{motion}/{k}"])) for k in ["clean", *args.oracles]]
        print(f"| {motion} | mean | " + " | ".join(f"{m:.1f}" for m in means) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
