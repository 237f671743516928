"""Options of the SAM 2 backend: the ``[segmenter.options]`` table when ``backend = "sam2"``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, PositiveInt, model_validator

from sam4em_live.config import FrozenModel

#: Short model names to the Hydra config shipped inside the ``sam2`` package.
NAMED_CONFIGS: dict[str, str] = {
    "sam2.1_hiera_t": "configs/sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1_hiera_s": "configs/sam2.1/sam2.1_hiera_s.yaml",
    "sam2.1_hiera_b+": "configs/sam2.1/sam2.1_hiera_b+.yaml",
    "sam2.1_hiera_l": "configs/sam2.1/sam2.1_hiera_l.yaml",
    "sam2_hiera_t": "configs/sam2/sam2_hiera_t.yaml",
    "sam2_hiera_s": "configs/sam2/sam2_hiera_s.yaml",
    "sam2_hiera_b+": "configs/sam2/sam2_hiera_b+.yaml",
    "sam2_hiera_l": "configs/sam2/sam2_hiera_l.yaml",
}

#: Where users get official weights (named in the missing-checkpoint error).
WEIGHTS_URL = "https://github.com/facebookresearch/sam2#model-description"

#: Official checkpoint file per named config, to make the error message concrete.
OFFICIAL_CHECKPOINTS: dict[str, str] = {
    "sam2.1_hiera_t": "sam2.1_hiera_tiny.pt",
    "sam2.1_hiera_s": "sam2.1_hiera_small.pt",
    "sam2.1_hiera_b+": "sam2.1_hiera_base_plus.pt",
    "sam2.1_hiera_l": "sam2.1_hiera_large.pt",
    "sam2_hiera_t": "sam2_hiera_tiny.pt",
    "sam2_hiera_s": "sam2_hiera_small.pt",
    "sam2_hiera_b+": "sam2_hiera_base_plus.pt",
    "sam2_hiera_l": "sam2_hiera_large.pt",
}


class Sam2Options(FrozenModel):
    """Validated options of the SAM 2 streaming backend.

    ``model`` is a short name (``sam2.1_hiera_t|_s|_b+|_l``, ``sam2_hiera_*``)
    or a path to a SAM 2 model YAML (e.g. a fine-tuned SAM-EM config).
    Exactly one of ``checkpoint`` and ``random_weights`` must be given;
    ``random_weights`` exists for tests and benchmarks only.
    """

    model: str = "sam2.1_hiera_t"
    checkpoint: Path | None = None
    random_weights: bool = False
    seed: int = 0
    device: Literal["auto", "cuda", "mps", "cpu"] = "auto"
    # "bfloat16" = autocast on CUDA (SAM 2's own inference setting); ignored on CPU/MPS.
    dtype: Literal["float32", "bfloat16"] = "bfloat16"
    tf32: bool = True
    compile: bool = False
    # Model input edge in pixels; None = the config's (1024). Multiples of 64 (tests use 128-256).
    image_size_px: PositiveInt | None = None
    # Stride r of the non-conditioning memory bank; None = the model's value (1).
    memory_temporal_stride_for_eval: PositiveInt | None = None
    # Conditioning (prompted/corrected) frames kept per particle: the first is pinned,
    # then the most recent ones. Exact against Meta's predictor while no particle has more.
    max_cond_frames: int = Field(default=8, ge=2)
    # Robust intensity window of each raw frame, in percent (low, high).
    normalize_percentiles: tuple[float, float] = (0.5, 99.5)
    # Every n-th pixel along each axis is used to estimate the percentiles (speed).
    percentile_subsample: PositiveInt = 4
    # SAM 2 video predictor's hole filling (px at the 1/4 mask resolution); needs sam2's CUDA ext.
    fill_hole_area_px: int = Field(default=8, ge=0)
    # Meta's `non_overlap_masks`: each pixel goes to the highest-scoring particle only.
    non_overlap_masks: bool = False
    # Meta's `clear_non_cond_mem_around_input`, applied per particle on its new conditioning frames.
    clear_non_cond_mem_around_input: bool = False
    # Run tracked particles as one batch (faster). False = one at a time: each particle's
    # results are then bit-for-bit independent of the others (batched GEMMs round differently).
    batch_particles: bool = True
    # Record per-stage timings (adds device synchronisation on CUDA; for benchmarks).
    profile: bool = False

    @model_validator(mode="after")
    def _check(self) -> Sam2Options:
        lo, hi = self.normalize_percentiles
        if not 0.0 <= lo < hi <= 100.0:
            raise ValueError(f"normalize_percentiles must satisfy 0 <= low < high <= 100, got {(lo, hi)}")
        if self.image_size_px is not None and self.image_size_px % 64:
            raise ValueError(f"image_size_px must be a multiple of 64, got {self.image_size_px}")
        if self.random_weights and self.checkpoint is not None:
            raise ValueError("give either checkpoint or random_weights=true, not both")
        if not self.random_weights and self.checkpoint is None:
            name = OFFICIAL_CHECKPOINTS.get(self.model, "sam2.1_hiera_tiny.pt")
            raise ValueError(
                f"the sam2 backend needs trained weights: set checkpoint to a SAM 2 checkpoint such as "
                f"{name} (official weights: {WEIGHTS_URL}); random_weights=true is for tests only"
            )
        return self

    def config_name(self) -> str | None:
        """The packaged Hydra config for a short model name, or None for a YAML path."""
        return NAMED_CONFIGS.get(self.model)
