"""Write a simulated clip to a folder, and read its ground truth back.

Folder layout (see docs/simulator.md)::

    video.tif               frames (ImageJ stack with pixel size and frame interval)
    jpeg/000000.jpeg ...    optional 8-bit JPEG frames (fixed grey scale for the whole clip)
    gt_masks.tif            uint16 label stack, value = particle id, 0 = background
    gt_trajectories.csv     frame, particle, x, y, angle, area, t_s, x_nm, y_nm
    prompts.json            point prompts (= prompts_point.json)
    prompts_point.json, prompts_box.json, prompts_point_box.json
    meta.json               spec, seed, calibration, CNR/SNR per frame and summary
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from sam4em_live.segment.prompts_file import save_prompts
from sam4em_live.sim.optics import background_electrons, mtf_noise_factor
from sam4em_live.sim.video import SimulatedVideo, make_prompts

PROMPT_FILES: dict[str, str] = {"point": "prompts_point.json", "box": "prompts_box.json",
                                "point+box": "prompts_point_box.json"}
DEFAULT_PROMPT_FRAMES: tuple[int, ...] = (0, 125)


def _package_version() -> str:
    from importlib import metadata

    try:
        return metadata.version("sam4em-live")
    except metadata.PackageNotFoundError:
        return "unknown"


def _stats(values: np.ndarray) -> dict[str, float | None]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"median": None, "mean": None, "std": None, "min": None, "max": None}
    return {"median": float(np.median(finite)), "mean": float(finite.mean()), "std": float(finite.std()),
            "min": float(finite.min()), "max": float(finite.max())}


def simulation_meta(video: SimulatedVideo) -> dict[str, Any]:
    """JSON-able description of a clip: how to regenerate it and its contrast figures."""
    im = video.spec.imaging
    return {
        "generator": f"sam4em-live {_package_version()} simulator",
        "preset": video.spec.name, "seed": video.seed, "frames": video.n_frames,
        "calibration": video.calibration.as_dict(),
        "electrons_per_pixel_unattenuated": im.electrons_per_pixel,
        "background_electrons_per_pixel": background_electrons(im, video.spec.cell),
        "mtf_noise_factor": mtf_noise_factor(tuple(im.shape_px), im.mtf_f0_cycles_per_px, im.mtf_power)
        if im.mtf else 1.0,
        "cnr_definition": "(mean_background - mean_particle) / std_background, per frame",
        "snr_definition": "mean_background / std_background (Yao et al. 2020), per frame",
        "cnr_summary": _stats(video.cnr), "snr_summary": _stats(video.snr),
        "cnr": [None if not math.isfinite(v) else round(float(v), 5) for v in video.cnr],
        "snr": [None if not math.isfinite(v) else round(float(v), 5) for v in video.snr],
        "spec": video.spec.model_dump(mode="json"),
    }


def trajectories_table(video: SimulatedVideo) -> pd.DataFrame:
    """Truth table with time and nm columns added (``t_s`` from fps, ``x_nm``/``y_nm`` from pixel size)."""
    table = video.gt_table.copy()
    table["t_s"] = table["frame"] / video.spec.imaging.fps
    table["x_nm"] = table["x"] * video.spec.imaging.pixel_size_nm
    table["y_nm"] = table["y"] * video.spec.imaging.pixel_size_nm
    return table


def write_simulation(
    video: SimulatedVideo, out_dir: str | Path, jpeg: bool = False,
    prompt_frames: Sequence[int] = DEFAULT_PROMPT_FRAMES,
) -> Path:
    """Write ``video`` into ``out_dir`` (created; existing files of the same names are replaced)."""
    from sam4em_live.sources.tiff_io import write_tiff_stack

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cal = video.calibration
    write_tiff_stack(out / "video.tif", video.frames, pixel_size_nm=cal.pixel_size_nm, fps=cal.fps)
    write_tiff_stack(out / "gt_masks.tif", video.gt_labels, pixel_size_nm=cal.pixel_size_nm, fps=cal.fps,
                     compression="zlib")
    trajectories_table(video).to_csv(out / "gt_trajectories.csv", index=False)
    for kind, name in PROMPT_FILES.items():
        save_prompts(out / name, make_prompts(video, prompt_frames, kind))  # type: ignore[arg-type]
    save_prompts(out / "prompts.json", make_prompts(video, prompt_frames, "point"))
    meta = simulation_meta(video)
    meta["prompt_frames"] = [f for f in prompt_frames if 0 <= f < video.n_frames]
    if jpeg:
        meta["jpeg_grey_range"] = write_jpeg_frames(video.frames, out / "jpeg")
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    return out


def write_jpeg_frames(frames: np.ndarray, folder: Path, quality: int = 95) -> list[float]:
    """8-bit JPEGs ``000000.jpeg``... with one grey scale for the whole clip; returns [low, high]."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    sample = frames[:: max(1, len(frames) // 16)].astype(np.float32)
    low, high = (float(v) for v in np.percentile(sample, [0.05, 99.95]))
    scale = 255.0 / max(high - low, 1e-6)
    for i, frame in enumerate(frames):
        grey = np.clip((frame.astype(np.float32) - low) * scale + 0.5, 0, 255).astype(np.uint8)
        Image.fromarray(grey).save(folder / f"{i:06d}.jpeg", quality=quality)
    return [low, high]


def read_ground_truth(gt_dir: str | Path) -> tuple[np.ndarray, pd.DataFrame, dict[str, Any]]:
    """(gt_labels (T, H, W) uint16, truth table, meta) from a folder written by `write_simulation`."""
    import tifffile

    gt = Path(gt_dir)
    for name in ("gt_masks.tif", "gt_trajectories.csv"):
        if not (gt / name).is_file():
            raise FileNotFoundError(f"{gt}: missing {name} (not a folder written by `sam4em-live simulate`?)")
    labels = tifffile.imread(gt / "gt_masks.tif")
    labels = labels[None] if labels.ndim == 2 else labels
    table = pd.read_csv(gt / "gt_trajectories.csv")
    meta_path = gt / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return labels, table, meta
