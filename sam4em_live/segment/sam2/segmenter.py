"""`Sam2Segmenter`: the `Segmenter` protocol over `StreamingSam2` (prompts, pre/post-processing, devices)."""

from __future__ import annotations

import importlib.util
import logging
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TYPE_CHECKING, Any

import numpy as np

from sam4em_live.particles import ParticleEdit, ParticleMask, Prompt, RemoveParticle
from sam4em_live.segment.sam2.engine import PointPrompt, StageTimer, StepResult, StreamingSam2
from sam4em_live.segment.sam2.model import build_model, resolve_device
from sam4em_live.segment.sam2.preprocess import FramePreprocessor, logits_to_frame
from sam4em_live.segment.sam2.private_api import check_sam2_version

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    import torch
    from sam2.modeling.sam2_base import SAM2Base

    from sam4em_live.frames import Frame
    from sam4em_live.segment.sam2.options import Sam2Options

log = logging.getLogger(__name__)


class Sam2Segmenter:
    """SAM 2 on a live stream with bounded, exact per-particle memory (see docs/sam2_backend.md).

    Edits passed to `track` take effect on that frame, in order: a `Prompt`
    for a new particle adds it, for an existing particle it is a correction
    (a new conditioning frame for that particle only; the last prompt for a
    particle in one frame wins); `RemoveParticle` drops the particle's memory.

    Raises `Sam2VersionError` (a `ConfigError`) when the installed sam2 is not
    the release the private `SAM2Base` calls were written against (`private_api`).
    """

    def __init__(self, options: Sam2Options) -> None:
        check_sam2_version()  # before the (slow) model build: the private calls are pinned to one sam2
        self.options = options
        self.device = resolve_device(options.device)
        self.model: SAM2Base = build_model(options, self.device)
        if options.compile:
            compile_model(self.model)
        self.timer = StageTimer(options.profile, self.device.type)
        self.engine = StreamingSam2(
            self.model, options.max_cond_frames, fill_hole_area_px=_hole_filling(options.fill_hole_area_px),
            clear_non_cond_mem_around_input=options.clear_non_cond_mem_around_input,
            batch_particles=options.batch_particles, timer=self.timer,
        )
        self.image_size = int(self.engine.model.image_size)
        self.preprocess = FramePreprocessor(
            self.image_size, self.device, options.normalize_percentiles, options.percentile_subsample
        )
        self.shape: tuple[int, int] | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "backend": "sam2",
            "model": self.options.model,
            "checkpoint": None if self.options.checkpoint is None else str(self.options.checkpoint),
            "random_weights": self.options.random_weights,
            "seed": self.options.seed if self.options.random_weights else None,
            "device": str(self.device),
            "dtype": self._autocast_dtype_name(),
            "image_size_px": self.image_size,
            "memory_temporal_stride_for_eval": int(self.model.memory_temporal_stride_for_eval),
            "num_maskmem": int(self.model.num_maskmem),
            "max_obj_ptrs_in_encoder": int(self.model.max_obj_ptrs_in_encoder),
            "max_cond_frames": self.options.max_cond_frames,
            "compile": self.options.compile,
            "batch_particles": self.options.batch_particles,
        }

    def particles(self) -> list[int]:
        return self.engine.particles()

    def close(self) -> None:
        self.engine.banks.clear()

    def track(self, frame: Frame, edits: Sequence[ParticleEdit] = ()) -> list[ParticleMask]:
        import torch

        shape = self._check_shape(frame)
        with torch.inference_mode(), self._autocast(), self._tf32():
            with self.timer.stage("preprocess"):
                image = self.preprocess(frame.pixels)
            result = self.step(image, edits, shape)
            with self.timer.stage("postprocess"):
                return self.to_masks(result, shape)

    def step(self, image: torch.Tensor, edits: Sequence[ParticleEdit], shape: tuple[int, int]) -> StepResult:
        """Apply ``edits`` and run the model loop on an already preprocessed (1, 3, S, S) image."""
        prompts: dict[int, PointPrompt] = {}
        for edit in edits:
            if isinstance(edit, RemoveParticle):
                prompts.pop(edit.particle, None)
                if not self.engine.remove(edit.particle):
                    log.info("remove: particle %d is not tracked; ignored", edit.particle)
            else:
                prompts[edit.particle] = self.point_prompt(edit, shape)
        return self.engine.step(image, prompts)

    def point_prompt(self, prompt: Prompt, shape: tuple[int, int]) -> PointPrompt:
        """Frame pixels -> model-input pixels, exactly as ``add_new_points_or_box`` scales them."""
        import torch

        coords = [list(p) for p in prompt.points]
        labels = list(prompt.labels)
        if prompt.box is not None:  # SAM 2 takes a box as two leading points labelled 2 and 3
            x0, y0, x1, y1 = prompt.box
            coords = [[x0, y0], [x1, y1], *coords]
            labels = [2, 3, *labels]
        points = torch.tensor(coords, dtype=torch.float32).reshape(1, -1, 2)
        rows, cols = shape
        points = points / torch.tensor([cols, rows]) * self.image_size
        labels_t = torch.tensor([labels], dtype=torch.int32, device=self.device)
        return PointPrompt(points.to(self.device), labels_t)

    def to_masks(self, result: StepResult, shape: tuple[int, int]) -> list[ParticleMask]:
        """Logits -> one `ParticleMask` per particle at the frame's resolution."""
        if not result.particles:
            return []
        logits = logits_to_frame(result.low_res_logits, shape)
        if self.options.non_overlap_masks:
            # Private (private_api.PRIVATE_CALLS): Meta's non_overlap_masks post-processing exists only
            # as this method; it keeps the highest-scoring particle per pixel.
            logits = self.model._apply_non_overlapping_constraints(logits)
        masks = (logits[:, 0] > 0).cpu().numpy()
        scores = result.object_score_logits[:, 0].float().cpu().numpy()
        ious = result.predicted_iou.float().cpu().numpy()
        return [
            ParticleMask.from_full(
                particle, masks[i], float(1.0 / (1.0 + np.exp(-scores[i]))),
                predicted_iou=float(ious[i]), object_score_logit=float(scores[i]),
            )
            for i, particle in enumerate(result.particles)
        ]

    def _check_shape(self, frame: Frame) -> tuple[int, int]:
        if frame.pixels.ndim != 2:
            raise ValueError(f"frame {frame.index}: expected a 2-D frame, got shape {frame.pixels.shape}")
        shape = frame.shape
        if self.shape is None:
            self.shape = shape
        elif shape != self.shape:
            raise ValueError(f"frame {frame.index}: shape {shape} differs from the stream's {self.shape}")
        return shape

    def _autocast_dtype_name(self) -> str:
        return "bfloat16" if self.device.type == "cuda" and self.options.dtype == "bfloat16" else "float32"

    def _autocast(self) -> Any:
        import torch

        if self._autocast_dtype_name() == "bfloat16":
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return nullcontext()

    def _tf32(self) -> AbstractContextManager[None]:
        """TF32 for this backend's CUDA work only (``tf32 = true``); nothing on CPU/MPS."""
        return allow_tf32() if self.device.type == "cuda" and self.options.tf32 else nullcontext()


@contextmanager
def allow_tf32() -> Iterator[None]:
    """Allow TF32 in float32 CUDA matmuls and cuDNN convolutions inside the block; restore the flags after.

    The flags are process-wide in torch (there is no per-call setting), so they are set for the
    duration of `Sam2Segmenter.track` only, instead of for the whole process from the moment the
    backend is built: other code in the process (statistics, a user's hook) keeps full float32
    outside the block. Code on another thread running CUDA float32 matmuls during the block would
    see TF32 too; in the service only the pipeline worker runs the model. Compiled graphs
    (``compile = true``) are traced inside the block, so they see the same flags on every call.
    """
    import torch

    matmul, cudnn = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = cudnn


def compile_model(model: Any) -> None:
    """`torch.compile` the heavy modules (as sam2's VOS predictor does; batch sizes vary, so dynamic)."""
    import torch

    model.image_encoder.forward = torch.compile(model.image_encoder.forward, dynamic=False)
    model.memory_attention.forward = torch.compile(model.memory_attention.forward, dynamic=True)
    model.memory_encoder.forward = torch.compile(model.memory_encoder.forward, dynamic=True)
    model.sam_mask_decoder.forward = torch.compile(model.sam_mask_decoder.forward, dynamic=True)


def _hole_filling(area_px: int) -> int:
    """Meta's hole filling needs sam2's CUDA extension; without it Meta skips it too (with a warning)."""
    if area_px > 0 and importlib.util.find_spec("sam2._C") is None:
        log.info("sam2 CUDA extension not built: mask hole filling off (as in Meta's predictor)")
        return 0
    return area_px
