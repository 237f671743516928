"""Segmentation accuracy (J, F, J&F in %) of a backend on the SAM4EM-like simulated presets.

For each preset a cached clip with exact ground truth is prompted with points, boxes or both on frames
0 and 125 (as the SAM4EM paper did) and scored with `sam4em_live.evaluate` (DAVIS J and F, 6 px boundary
tolerance). ``mode = direct`` drives the segmenter frame by frame (the pipeline's contract: edits
anchored to their frame; a failing frame is counted and skipped); ``mode = track`` runs the real offline
pipeline (replay source -> service -> recorder) and scores the recorded ``masks.tif``. Metric names are
``PRESET.PROMPT.FIGURE``; in direct mode the predicted label stack's digest is a fingerprint.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tools.bench.data import SimulatedClip, simulated_clip
from tools.bench.figures import array_digest, count, integer, mapping, strings, text
from tools.bench.registry import Measurement, RunContext, benchmark
from tools.bench.schema import Metric, ParamValue

if TYPE_CHECKING:
    from collections.abc import Mapping

PROMPT_FILES = {"point": "prompts_point.json", "box": "prompts_box.json", "point+box": "prompts_point_box.json"}


@benchmark("accuracy", "J, F, J&F (%) of a backend on simulated SAM4EM clips, prompts on frames 0 and 125",
           {"backend": "embedded", "options": {}, "presets": ["sam4em-5nm", "sam4em-50nm", "sam4em-150nm"],
            "prompts": ["point"], "frames": 250, "seed": 0, "mode": "direct"},
           quick={"presets": ["sam4em-150nm"], "frames": 130})
def accuracy(params: Mapping[str, ParamValue], context: RunContext) -> Measurement:
    metrics: dict[str, Metric] = {}
    fingerprints: dict[str, str] = {}
    mode = text(params, "mode")
    if mode not in ("direct", "track"):
        raise ValueError(f"mode must be direct or track, got {mode!r}")
    for preset in strings(params, "presets"):
        clip = simulated_clip(context.cache, preset, integer(params, "frames"), integer(params, "seed"))
        for kind in strings(params, "prompts"):
            start = time.perf_counter()
            if mode == "direct":
                summary, labels_digest = _direct(clip, kind, text(params, "backend"), mapping(params, "options"))
                fingerprints[f"{preset}.{kind}.labels_sha256"] = labels_digest
            else:
                summary = _track(clip, kind, text(params, "backend"), mapping(params, "options"),
                                 context.scratch / f"{preset}-{kind.replace('+', '_')}")
            elapsed = time.perf_counter() - start
            key = f"{preset}.{kind}"
            for figure in ("J", "F", "J&F"):
                metrics[f"{key}.{figure}"] = Metric(float(summary[figure]), "%", "higher")
            metrics[f"{key}.centroid_error_px_median"] = Metric(float(summary["centroid_error_px_median"]), "px")
            metrics[f"{key}.missed_frames"] = count(summary["missed_frames"], "frames", "lower")
            metrics[f"{key}.identity_switches"] = count(summary["identity_switches"], "count", "lower")
            metrics[f"{key}.prompts_rejected"] = count(summary.get("prompts_rejected", 0), "count", "lower")
            metrics[f"{key}.fps_end_to_end"] = Metric(clip.n_frames / elapsed, "frames/s", "higher")
            print(f"# {key}: J&F {summary['J&F']:.2f}", flush=True)
    return Measurement(metrics, fingerprints)


def _direct(clip: SimulatedClip, kind: str, backend: str, options: dict[str, Any]) -> tuple[dict[str, Any], str]:
    import numpy as np

    from sam4em_live.evaluate.metrics import evaluate_run
    from sam4em_live.frames import Frame
    from sam4em_live.io.prompts_file import load_prompts
    from sam4em_live.segment.registry import create_segmenter

    frames = clip.pixels
    gt_labels, gt_table, _ = clip.truth
    edits = load_prompts(clip.folder / PROMPT_FILES[kind], frames.shape[1:])
    predicted = np.zeros(frames.shape, np.uint16)
    segmenter = create_segmenter(backend, options)
    failed = rejected = 0
    try:
        for i, pixels in enumerate(frames):
            anchored = [e for e in edits if e.frame == i]
            try:
                masks = segmenter.track(Frame("bench", i, 0.0, pixels), anchored)
            except Exception as exc:
                failed += 1
                rejected += len(anchored)
                print(f"# frame {i}: {type(exc).__name__}: {exc}", file=sys.stderr)
                continue
            for mask in masks:
                if mask.present and mask.crop is not None and mask.bbox is not None:
                    x0, y0, x1, y1 = mask.bbox
                    predicted[i, y0:y1, x0:x1][mask.crop] = mask.particle
    finally:
        segmenter.close()
    summary = evaluate_run(predicted, np.asarray(gt_labels), None, gt_table).summary()
    summary["prompts_rejected"] = rejected
    summary["segmentation_errors"] = failed
    return summary, array_digest(predicted)


def _track(clip: SimulatedClip, kind: str, backend: str, options: dict[str, Any], out: Path) -> dict[str, Any]:
    import json

    from sam4em_live.evaluate.rundir import evaluate_directories
    from sam4em_live.service.runs import run_track

    run_dir = Path(run_track(clip.folder / "video.tif", clip.folder / PROMPT_FILES[kind], out, backend=backend,
                             progress=False, overrides={"segmenter.options": options} if options else None))
    summary = evaluate_directories(run_dir, clip.folder).summary()
    events = run_dir / "events.jsonl"
    lines = events.read_text().splitlines() if events.is_file() else []
    summary["prompts_rejected"] = sum(json.loads(line).get("kind") == "prompt_rejected" for line in lines)
    return summary
