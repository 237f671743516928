"""Robustness matrix (issue 16): a backend on the conditions real LPTEM data brings × motions × seeds.

Each cell is a clip of a named condition (`sam4em_live.sim.conditions`: contrast polarity, 8-bit JPEG,
gradients and vignetting, stage drift, dose changes and beam blanking, defocus, static blobs at the edge,
fading, moving distractors, touching particles, a foreign noise model, a dense field) with motion from the
simulator's own hop model (``sim``) or real LPTEM trajectories (``monet``; ``touching`` and ``dense`` bring
their own). The prompted particles get one point (or box) prompt on frame 0; the backend runs in process on
every frame (`create_segmenter`, `Segmenter.track`), as the service calls it. Per condition and motion,
pooled over the seeds:

- J, J&F (%) with `sam4em_live.evaluate.metrics` (ambiguous frames — half faded, mostly cut by the edge —
  are taken out of the prediction; a mask on an absent frame scores 0);
- centroid error median / p95, missed frames, identity hops, false presence, mask area bias and the
  confidence calibration, with `sam4em_live.evaluate.identity`;
- ms per frame of ``track`` (mean), prompts rejected.

Metric names are ``CONDITION.MOTION.FIGURE``. ``tools/bench_robustness.py`` prints the same as a Markdown
table (docs/benchmarks.md, "Robustness").
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from tools.bench.figures import count, integer, mapping, number, strings, text
from tools.bench.registry import Measurement, RunContext, benchmark
from tools.bench.schema import Metric, ParamValue

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path

    import pandas as pd

    from sam4em_live.sim.scenario import ScenarioClip

ALL_CONDITIONS = ["clean", "bright-on-dark", "jpeg", "gradient-vignette", "stage-drift", "dose-steps", "defocus",
                  "static-blobs", "fade-edge-artifact", "leave-field", "distractors", "touching", "foreign-noise", "dense"]
#: The backend's documented confidence threshold the calibration is measured at (a parameter).
DEFAULT_SCORE_THRESHOLD = 0.5


@dataclass
class CellResult:
    """One condition × motion, pooled over seeds."""

    condition: str
    motion: str
    seeds: list[int]
    figures: dict[str, Any] = field(default_factory=dict)


def track_clip(clip: ScenarioClip, backend: str, options: dict[str, Any], prompt_kind: str
               ) -> tuple[np.ndarray, pd.DataFrame, list[float], int]:
    """Run the backend on every frame: (predicted labels, per-particle-frame predictions, ms per frame, rejected)."""
    import pandas as pd

    from sam4em_live.frames import Frame
    from sam4em_live.segment.base import RejectedEdit, track_with_retries
    from sam4em_live.segment.registry import create_segmenter

    prompts = clip.prompts(prompt_kind)
    predicted = np.zeros(clip.frames.shape, np.uint16)
    rows: list[dict[str, Any]] = []
    elapsed_ms: list[float] = []
    rejected = 0
    segmenter = create_segmenter(backend, options)
    try:
        for i, pixels in enumerate(clip.frames):
            edits = [p for p in prompts if p.frame == i]
            start = time.perf_counter()
            try:  # the service's PromptError contract: a refused prompt is dropped, the others go through
                masks, refused = track_with_retries(segmenter, Frame("robustness", i, 0.0, pixels), edits)
            except Exception as exc:  # the whole frame failed: count it, the clip goes on
                refused = [RejectedEdit(e, str(exc)) for e in edits]
                masks = []
            finally:
                elapsed_ms.append((time.perf_counter() - start) * 1e3)
            for edit, reason in refused:
                rejected += 1
                print(f"# {clip.scenario.name} seed {clip.seed} frame {i}: particle {edit.particle} refused: "
                      f"{reason}", file=sys.stderr)
            for mask in masks:
                row: dict[str, Any] = {"frame": i, "particle": mask.particle, "present": bool(mask.present),
                                       "x": math.nan, "y": math.nan, "area": 0.0, "score": float(mask.score)}
                if mask.present and mask.crop is not None and mask.bbox is not None:
                    x0, y0, x1, y1 = mask.bbox
                    predicted[i, y0:y1, x0:x1][mask.crop] = mask.particle
                    ys, xs = np.nonzero(mask.crop)
                    if xs.size:
                        row.update(x=float(xs.mean()) + x0, y=float(ys.mean()) + y0, area=float(xs.size))
                    else:
                        row["present"] = False
                rows.append(row)
    finally:
        segmenter.close()
    columns = ["frame", "particle", "present", "x", "y", "area", "score"]
    return predicted, pd.DataFrame(rows, columns=columns), elapsed_ms, rejected


def mask_scores(clip: ScenarioClip, predicted: np.ndarray) -> dict[str, float]:
    """J, F, J&F of the prompted particles, ambiguous frames taken out of the prediction."""
    from sam4em_live.evaluate.metrics import evaluate_run

    cleaned = predicted.copy()
    truth = clip.truth
    for frame, particle in truth.loc[truth["state"] == "ambiguous", ["frame", "particle"]].itertuples(index=False):
        page = cleaned[int(frame)]
        page[page == int(particle)] = 0
    tracked = np.isin(cleaned, np.asarray(clip.scenario.prompted, dtype=np.uint16))
    cleaned[~tracked] = 0
    visible = truth[truth["state"] == "visible"]
    summary = evaluate_run(cleaned, clip.gt_labels, gt_table=visible[["frame", "particle", "x", "y"]]).summary()
    return {"J": float(summary["J"]), "F": float(summary["F"]), "J&F": float(summary["J&F"])}


def run_cell(condition: str, motion: str, seeds: list[int], frames: int, backend: str, options: dict[str, Any],
             prompt_kind: str, score_threshold: float, save_dir: Path | None = None) -> CellResult:
    """One condition × motion over ``seeds``; ``save_dir`` keeps each clip (TIFF) with its truth and predictions."""
    import pandas as pd

    from sam4em_live.evaluate.identity import score_tracks
    from sam4em_live.sim.conditions import get_condition
    from sam4em_live.sim.scenario import render_scenario

    info = get_condition(condition)
    truths, predictions, scores, times = [], [], [], []
    rejected = prompted = 0
    notes: dict[str, str] = {}
    per_seed: dict[str, str] = {}
    for seed in seeds:
        clip = render_scenario(info.build(seed, frames, motion), seed)
        notes.update({f"{key} (seed {seed})": value for key, value in clip.scenario.notes.items()})
        predicted, table, elapsed_ms, refused = track_clip(clip, backend, options, prompt_kind)
        if save_dir is not None:
            _save(save_dir / f"{condition}-{motion}-s{seed}", clip, table)
        scores.append(mask_scores(clip, predicted))
        truths.append(clip.truth.assign(run=seed))
        predictions.append(table.assign(run=seed))
        times.extend(elapsed_ms[1:])  # the prompt frame (seeding) is reported by embedded-track
        rejected += refused
        prompted += len(clip.prompts(prompt_kind))
        alone = score_tracks(clip.truth, table, score_threshold)
        per_seed[str(seed)] = (f"J&F {scores[-1]['J&F']:.1f}, hops {alone.hops}, false presence "
                               f"{alone.false_presence_frames}/{alone.absent_frames}, missed {alone.missed_frames}, "
                               f"refused {refused}")
    figures = score_tracks(pd.concat(truths), pd.concat(predictions), score_threshold).as_dict()
    for key in ("J", "F", "J&F"):
        figures[key] = float(np.mean([s[key] for s in scores]))
    figures["J&F_min_seed"] = float(np.min([s["J&F"] for s in scores]))
    figures["track_ms_mean"] = float(np.mean(times)) if times else math.nan
    figures["prompts_rejected"] = rejected
    figures["prompted"] = prompted
    figures["notes"] = "; ".join(f"{k}: {v}" for k, v in notes.items())
    figures["per_seed"] = "; ".join(f"seed {k}: {v}" for k, v in per_seed.items())
    return CellResult(condition, motion, list(seeds), figures)


def _save(stem: Path, clip: ScenarioClip, predictions: pd.DataFrame) -> None:
    import tifffile

    stem.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(stem.with_suffix(".tif"), clip.frames)
    clip.truth.to_csv(f"{stem}-truth.csv", index=False)
    predictions.to_csv(f"{stem}-predictions.csv", index=False)


def cells(conditions: list[str], motions: list[str]) -> list[tuple[str, str]]:
    """(condition, motion) pairs: each condition with the requested motions it takes, else its own."""
    from sam4em_live.sim.conditions import get_condition

    out: list[tuple[str, str]] = []
    for name in conditions:
        own = get_condition(name).motions
        chosen = [m for m in motions if m in own] or list(own)
        out.extend((name, m) for m in chosen)
    return out


def run_matrix(conditions: list[str], motions: list[str], seeds: list[int], frames: int, backend: str = "embedded",
               options: dict[str, Any] | None = None, prompt_kind: str = "point",
               score_threshold: float = DEFAULT_SCORE_THRESHOLD,
               progress: Callable[[CellResult], None] | None = None, save_dir: Path | None = None
               ) -> list[CellResult]:
    """Every cell of ``conditions`` × ``motions`` (see `cells`), pooled over ``seeds``."""
    results = []
    for condition, motion in cells(conditions, motions):
        result = run_cell(condition, motion, seeds, frames, backend, options or {}, prompt_kind, score_threshold,
                          save_dir)
        if progress is not None:
            progress(result)
        results.append(result)
    return results


TABLE_COLUMNS = (
    ("J&F", "J&F", "{:.1f}"), ("ΔJ&F", "delta", "{:+.1f}"), ("J", "J", "{:.1f}"),
    ("err med/p95 px", "err", ""), ("missed", "missed_frames", "{:d}"), ("hops", "hops", "{:d}"),
    ("hop frames", "hop_frames", "{:d}"), ("false pres.", "false", ""), ("area bias", "area_bias_median", "{:+.1%}"),
    ("conf. ≥ thr right", "calibration", ""), ("ms/frame", "track_ms_mean", "{:.1f}"),
)


def markdown_table(results: list[CellResult]) -> str:
    """One row per condition × motion; ΔJ&F against ``clean`` with the same motion (when in the matrix)."""
    clean = {r.motion: r.figures["J&F"] for r in results if r.condition == "clean"}
    head = "| condition | motion | " + " | ".join(c[0] for c in TABLE_COLUMNS) + " |"
    lines = [head, "|" + "---|" * (len(TABLE_COLUMNS) + 2)]
    for r in results:
        f = r.figures
        cells_text = []
        for _, key, fmt in TABLE_COLUMNS:
            if key == "delta":
                ref = clean.get(r.motion)
                cells_text.append("–" if ref is None or r.condition == "clean" else fmt.format(f["J&F"] - ref))
            elif key == "err":
                cells_text.append(f"{f['centroid_error_px_median']:.2f} / {f['centroid_error_px_p95']:.1f}")
            elif key == "false":
                cells_text.append(f"{f['false_presence_frames']}/{f['absent_frames']}" if f["absent_frames"] else "–")
            elif key == "calibration":
                value = f["confident_correct_fraction"]
                cells_text.append("–" if value != value else f"{value:.1%} of {f['confident_frames']}")
            else:
                value = f[key]
                cells_text.append("–" if isinstance(value, float) and value != value else fmt.format(value))
        lines.append(f"| {r.condition} | {r.motion} | " + " | ".join(cells_text) + " |")
    return "\n".join(lines)


def comparison_table(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> str:
    """Two matrices side by side (records as ``tools/bench_robustness.py --json`` writes them): "after (before)"."""
    old = {(r["condition"], r["motion"]): r for r in before}
    clean = {r["motion"]: r["J&F"] for r in after if r["condition"] == "clean"}

    def shown(record: dict[str, Any], key: str, fmt: str) -> str:
        value = record.get(key)
        return "–" if value is None or value != value else fmt.format(value)

    def pair(r: dict[str, Any], key: str, fmt: str) -> str:
        prior = old.get((r["condition"], r["motion"]))
        now = shown(r, key, fmt)
        if prior is None:
            return now
        then = shown(prior, key, fmt)
        return now if now == then else f"{now} ({then})"

    lines = ["| condition | motion | J&F | ΔJ&F vs clean | hops | hop frames | false presence | missed | "
             "err p95 px | area bias | conf. ≥ thr right | conf. wrong | prompts refused | ms/frame |",
             "|" + "---|" * 14]
    for r in after:
        ref = clean.get(r["motion"])
        delta = "–" if ref is None or r["condition"] == "clean" else f"{r['J&F'] - ref:+.1f}"
        false = f"{pair(r, 'false_presence_frames', '{:d}')} of {r['absent_frames']}" if r["absent_frames"] else "–"
        lines.append(" | ".join([
            f"| {r['condition']}", r["motion"], pair(r, "J&F", "{:.1f}"), delta, pair(r, "hops", "{:d}"),
            pair(r, "hop_frames", "{:d}"), false, pair(r, "missed_frames", "{:d}"),
            pair(r, "centroid_error_px_p95", "{:.1f}"), pair(r, "area_bias_median", "{:+.1%}"),
            pair(r, "confident_correct_fraction", "{:.0%}"), pair(r, "confident_wrong_frames", "{:d}"),
            f"{pair(r, 'prompts_rejected', '{:d}')} of {r['prompted']}", pair(r, "track_ms_mean", "{:.1f}"),
        ]) + " |")
    return "\n".join(lines)


@benchmark("robustness", "identity hops, false presence, J&F, calibration per condition x motion (issue 16)",
           {"backend": "embedded", "options": {}, "conditions": [*ALL_CONDITIONS], "motions": ["sim", "monet"],
            "seeds": [0, 1], "frames": 100, "prompt": "point", "score_threshold": DEFAULT_SCORE_THRESHOLD})
def robustness(params: Mapping[str, ParamValue], context: RunContext) -> Measurement:
    seeds = [int(s) for s in strings(params, "seeds")]
    results = run_matrix(strings(params, "conditions"), strings(params, "motions"), seeds, integer(params, "frames"),
                         text(params, "backend"), mapping(params, "options"), text(params, "prompt"),
                         number(params, "score_threshold"),
                         progress=lambda r: print(f"# {r.condition}/{r.motion}: J&F {r.figures['J&F']:.1f} "
                                                  f"hops {r.figures['hops']}", flush=True))
    metrics: dict[str, Metric] = {}
    for r in results:
        f, key = r.figures, f"{r.condition}.{r.motion}"
        for figure in ("J", "J&F"):
            metrics[f"{key}.{figure}"] = Metric(f[figure], "%", "higher")
        metrics[f"{key}.centroid_error_px_median"] = Metric(f["centroid_error_px_median"], "px")
        metrics[f"{key}.centroid_error_px_p95"] = Metric(f["centroid_error_px_p95"], "px")
        metrics[f"{key}.missed_frames"] = count(f["missed_frames"], "frames", "lower")
        metrics[f"{key}.identity_hops"] = count(f["hops"], "count", "lower")
        metrics[f"{key}.hop_frames"] = count(f["hop_frames"], "frames", "lower")
        metrics[f"{key}.false_presence_frames"] = count(f["false_presence_frames"], "frames", "lower")
        metrics[f"{key}.absent_frames"] = count(f["absent_frames"], "frames")
        metrics[f"{key}.area_bias_median"] = Metric(f["area_bias_median"], "fraction")
        metrics[f"{key}.confident_correct_fraction"] = Metric(f["confident_correct_fraction"], "fraction", "higher")
        metrics[f"{key}.confident_wrong_frames"] = count(f["confident_wrong_frames"], "frames", "lower")
        metrics[f"{key}.track_ms_mean"] = Metric(f["track_ms_mean"], "ms")
        metrics[f"{key}.prompts_rejected"] = count(f["prompts_rejected"], "count", "lower")
    metrics["total.identity_hops"] = count(sum(r.figures["hops"] for r in results), "count", "lower")
    metrics["total.false_presence_frames"] = count(sum(r.figures["false_presence_frames"] for r in results),
                                                   "frames", "lower")
    print(markdown_table(results), flush=True)
    return Measurement(metrics)
