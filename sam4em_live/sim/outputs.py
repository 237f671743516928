"""Write a simulated clip to a folder, and read its ground truth back.

Folder layout (see docs/simulator.md)::

    video.tif               frames (ImageJ stack with pixel size and frame interval)
    jpeg/000000.jpeg ...    optional 8-bit JPEG frames (one grey range for the whole clip)
    gt_masks.tif            uint16 label stack, value = particle id, 0 = background
    gt_trajectories.csv     frame, particle, x, y, angle, area, t_s, x_nm, y_nm
    prompts.json            point prompts (= prompts_point.json)
    prompts_point.json, prompts_box.json, prompts_point_box.json
    meta.json               spec, seed, calibration, CNR/SNR per frame and summary

`simulate_to_folder` renders and writes frame by frame (memory stays bounded
for long 1024² clips); `write_simulation` writes a clip already in memory.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from sam4em_live.io.prompts_file import save_prompts
from sam4em_live.sim.optics import background_electrons, mtf_noise_factor
from sam4em_live.sim.video import (
    TRUTH_COLUMNS,
    SimulatedVideo,
    SimulationRun,
    calibration_of,
    prompts_from_truth,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from sam4em_live.sim.spec import SimulationSpec

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


def simulation_meta(spec: SimulationSpec, seed: int, cnr: np.ndarray, snr: np.ndarray) -> dict[str, Any]:
    """JSON-able description of a clip: how to regenerate it and its contrast figures."""
    im = spec.imaging

    def rounded(values: np.ndarray) -> list[float | None]:
        return [None if not math.isfinite(v) else round(float(v), 5) for v in values]

    return {
        "generator": f"sam4em-live {_package_version()} simulator",
        "preset": spec.name, "seed": int(seed), "frames": len(cnr),
        "calibration": calibration_of(spec).as_dict(),
        "electrons_per_pixel_unattenuated": im.electrons_per_pixel,
        "background_electrons_per_pixel": background_electrons(im, spec.cell),
        "mtf_noise_factor": mtf_noise_factor(im.shape_px, im.mtf_f0_cycles_per_px, im.mtf_power)
        if im.mtf else 1.0,
        "cnr_definition": "(mean_background - mean_particle) / std_background, per frame",
        "snr_definition": "mean_background / std_background (Yao et al. 2020), per frame",
        "cnr_summary": _stats(cnr), "snr_summary": _stats(snr), "cnr": rounded(cnr), "snr": rounded(snr),
        "spec": spec.model_dump(mode="json"),
    }


def trajectories_table(gt_table: pd.DataFrame, spec: SimulationSpec) -> pd.DataFrame:
    """Truth table with time and nm columns added (``t_s`` from fps, ``x_nm``/``y_nm`` from pixel size)."""
    table = gt_table.copy()
    table["t_s"] = table["frame"] / spec.imaging.fps
    table["x_nm"] = table["x"] * spec.imaging.pixel_size_nm
    table["y_nm"] = table["y"] * spec.imaging.pixel_size_nm
    return table


def _write_truth_files(
    out: Path, spec: SimulationSpec, seed: int, gt_labels: Any, gt_table: pd.DataFrame,
    cnr: np.ndarray, snr: np.ndarray, prompt_frames: Sequence[int], extra_meta: dict[str, Any],
) -> None:
    from sam4em_live.io.tiff_io import write_tiff_stack

    cal = calibration_of(spec)
    write_tiff_stack(out / "gt_masks.tif", gt_labels, pixel_size_nm=cal.pixel_size_nm, fps=cal.fps,
                     compression="zlib")
    trajectories_table(gt_table, spec).to_csv(out / "gt_trajectories.csv", index=False)
    for kind, name in PROMPT_FILES.items():
        save_prompts(out / name, prompts_from_truth(gt_labels, gt_table, prompt_frames, kind))  # type: ignore[arg-type]
    save_prompts(out / "prompts.json", prompts_from_truth(gt_labels, gt_table, prompt_frames, "point"))
    meta = simulation_meta(spec, seed, cnr, snr)
    meta["prompt_frames"] = [f for f in prompt_frames if 0 <= f < len(cnr)]
    meta.update(extra_meta)
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")


def write_simulation(
    video: SimulatedVideo, out_dir: str | Path, jpeg: bool = False,
    prompt_frames: Sequence[int] = DEFAULT_PROMPT_FRAMES,
) -> Path:
    """Write an in-memory ``video`` into ``out_dir`` (created; files of the same names are replaced)."""
    from sam4em_live.io.tiff_io import write_tiff_stack

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    cal = video.calibration
    write_tiff_stack(out / "video.tif", video.frames, pixel_size_nm=cal.pixel_size_nm, fps=cal.fps)
    extra: dict[str, Any] = {}
    if jpeg:
        writer = JpegWriter(out / "jpeg", video.frames[:: max(1, len(video.frames) // 16)])
        for frame in video.frames:
            writer.write(frame)
        extra["jpeg_grey_range"] = writer.grey_range
    _write_truth_files(out, video.spec, video.seed, video.gt_labels, video.gt_table, video.cnr, video.snr,
                       prompt_frames, extra)
    return out


def simulate_to_folder(
    spec: SimulationSpec, n_frames: int, seed: int, out_dir: str | Path, jpeg: bool = False,
    prompt_frames: Sequence[int] = DEFAULT_PROMPT_FRAMES, on_frame: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Render and write a clip frame by frame; returns the meta.json content.

    Frames stream into ``video.tif``; labels go to a temporary memory-mapped
    array (removed afterwards) before being compressed into ``gt_masks.tif``.
    ``on_frame(index)`` is called after each frame is rendered (a progress bar).
    """
    from sam4em_live.io.tiff_io import write_tiff_stack

    if n_frames < 1:
        raise ValueError(f"n_frames must be >= 1, got {n_frames}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    run = SimulationRun(spec, seed, n_frames)
    rows_px, cols_px = run.renderer.shape
    scratch = out / ".gt_masks.scratch.npy"
    labels = np.lib.format.open_memmap(scratch, mode="w+", dtype=np.uint16, shape=(n_frames, rows_px, cols_px))
    cnr, snr = np.full(n_frames, np.nan), np.full(n_frames, np.nan)
    table: list[dict[str, float]] = []
    jpegs: list[JpegWriter] = []

    def frames() -> Iterator[np.ndarray]:
        while (frame := run.next_frame()) is not None:
            labels[frame.index] = frame.labels
            cnr[frame.index], snr[frame.index] = frame.cnr, frame.snr
            table.extend({"frame": frame.index, **row} for row in frame.truth)
            if jpeg:
                if not jpegs:
                    jpegs.append(JpegWriter(out / "jpeg", frame.pixels[None]))
                jpegs[0].write(frame.pixels)
            if on_frame is not None:
                on_frame(frame.index)
            yield frame.pixels

    try:
        cal = calibration_of(spec)
        write_tiff_stack(out / "video.tif", frames(), pixel_size_nm=cal.pixel_size_nm, fps=cal.fps,
                         n_frames=n_frames)
        gt_table = pd.DataFrame(table, columns=list(TRUTH_COLUMNS))
        extra = {"jpeg_grey_range": jpegs[0].grey_range} if jpegs else {}
        _write_truth_files(out, spec, seed, labels, gt_table, cnr, snr, prompt_frames, extra)
    finally:
        # Unlinking a mapped file is fine on POSIX: the pages go when the map is dropped.
        scratch.unlink(missing_ok=True)
    return json.loads((out / "meta.json").read_text())


class JpegWriter:
    """8-bit JPEGs ``000000.jpeg``... with one grey range for the whole clip, set from ``sample`` frames."""

    def __init__(self, folder: Path, sample: np.ndarray, quality: int = 95) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.quality = quality
        low, high = (float(v) for v in np.percentile(np.asarray(sample, dtype=np.float32), [0.05, 99.95]))
        self.grey_range = [low, high]
        self._scale = 255.0 / max(high - low, 1e-6)
        self._count = 0

    def write(self, frame: np.ndarray) -> None:
        from PIL import Image

        grey = np.clip((frame.astype(np.float32) - self.grey_range[0]) * self._scale + 0.5, 0, 255)
        Image.fromarray(grey.astype(np.uint8)).save(self.folder / f"{self._count:06d}.jpeg", quality=self.quality)
        self._count += 1


def read_ground_truth(gt_dir: str | Path) -> tuple[np.ndarray, pd.DataFrame, dict[str, Any]]:
    """(gt_labels (T, H, W) uint16, truth table, meta) from a folder written by `sam4em-live simulate`."""
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
