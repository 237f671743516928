"""Building a `SAM2Base` from the configs shipped with the ``sam2`` package (or a YAML path).

``sam2`` and ``torch`` are imported inside the functions: importing ``sam2``
initialises Hydra, which must not happen when our package is imported.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sam4em_live.config import ConfigError
from sam4em_live.segment.sam2.options import OFFICIAL_CHECKPOINTS, WEIGHTS_URL, Sam2Options

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)


class CheckpointError(ConfigError):
    """A checkpoint that is missing or does not fit the model config (a configuration error)."""


def model_overrides(options: Sam2Options) -> dict[str, Any]:
    """Config values we set on top of the model YAML, as ``model.<key>`` -> value.

    These are the settings `build_sam2_video_predictor` applies for video
    (``apply_postprocessing=True``), so our loop and Meta's predictor run the
    same model: dynamic multimask fallback, and binarised masks in the memory
    encoder on prompted frames.
    """
    overrides: dict[str, Any] = {
        "sam_mask_decoder_extra_args.dynamic_multimask_via_stability": True,
        "sam_mask_decoder_extra_args.dynamic_multimask_stability_delta": 0.05,
        "sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh": 0.98,
        "binarize_mask_from_pts_for_mem_enc": True,
    }
    if options.image_size_px is not None:
        size = options.image_size_px
        overrides["image_size"] = size
        # RoPE tables sized for the feature map (image / 16), else sam2 rebuilds them per call.
        for attn in ("self_attention", "cross_attention"):
            overrides[f"memory_attention.layer.{attn}.feat_sizes"] = [size // 16, size // 16]
    if options.memory_temporal_stride_for_eval is not None:
        overrides["memory_temporal_stride_for_eval"] = options.memory_temporal_stride_for_eval
    return overrides


def hydra_override_strings(overrides: dict[str, Any]) -> list[str]:
    """``++model.key=value`` strings for `hydra.compose` / `sam2.build_sam.build_sam2`."""
    def fmt(value: Any) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, list):
            return "[" + ",".join(fmt(v) for v in value) + "]"
        return str(value)

    return [f"++model.{key}={fmt(value)}" for key, value in overrides.items()]


def build_model(options: Sam2Options, device: torch.device) -> torch.nn.Module:
    """Instantiate the SAM 2 model (random init seeded by ``options.seed``), load weights, eval mode."""
    import torch

    overrides = model_overrides(options)
    torch.manual_seed(options.seed)  # only matters for random_weights; a checkpoint overwrites it
    name = options.config_name()
    if name is not None:
        from sam2.build_sam import build_sam2

        model = build_sam2(
            name, ckpt_path=None, device="cpu", mode="eval",
            hydra_overrides_extra=hydra_override_strings(overrides), apply_postprocessing=False,
        )
    else:
        model = _build_from_yaml(Path(options.model), overrides)
    if options.checkpoint is not None:
        load_checkpoint(model, options.checkpoint, options.model)
    else:
        log.warning(
            "SAM 2 backend running with RANDOM WEIGHTS (seed %d): masks are not segmentations; "
            "for tests and benchmarks only", options.seed,
        )
    return model.to(device).eval()


def _build_from_yaml(path: Path, overrides: dict[str, Any]) -> torch.nn.Module:
    """Build from a user YAML (same layout as sam2's configs: a top-level ``model`` node)."""
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    if not path.is_file():
        raise FileNotFoundError(
            f"SAM 2 model config {str(path)!r} is neither a known name "
            f"(sam2.1_hiera_t, _s, _b+, _l) nor an existing YAML file"
        )
    cfg = OmegaConf.load(path)
    if "model" not in cfg:
        raise ValueError(f"{path}: a SAM 2 model YAML needs a top-level 'model' node")
    for key, value in overrides.items():
        OmegaConf.update(cfg, f"model.{key}", value, force_add=True)
    OmegaConf.resolve(cfg)
    return instantiate(cfg.model, _recursive_=True)


def load_checkpoint(model: torch.nn.Module, path: Path, model_name: str) -> None:
    """Load an official-layout checkpoint (``{"model": state_dict}``) strictly, with clear errors."""
    import torch

    path = Path(path)
    if not path.is_file():
        official = OFFICIAL_CHECKPOINTS.get(model_name, "sam2.1_hiera_tiny.pt")
        raise CheckpointError(
            f"SAM 2 checkpoint not found: {path}. Download the official weights (e.g. {official}) "
            f"from {WEIGHTS_URL} and pass its path as checkpoint / --checkpoint."
        )
    payload = torch.load(path, map_location="cpu", weights_only=True)
    state = payload.get("model") if isinstance(payload, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not a SAM 2 checkpoint (expected a dict with a 'model' state_dict)")
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not fit model {model_name!r}: {len(missing)} missing keys "
            f"(e.g. {missing[:3]}), {len(unexpected)} unexpected keys (e.g. {unexpected[:3]})"
        )
    log.info("loaded SAM 2 checkpoint %s", path)


def resolve_device(requested: str) -> torch.device:
    """``auto`` picks CUDA, then MPS, then CPU; an unavailable explicit device is an error."""
    import torch

    available = {
        "cuda": torch.cuda.is_available(),
        "mps": bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available(),
        "cpu": True,
    }
    if requested == "auto":
        requested = next(name for name in ("cuda", "mps", "cpu") if available[name])
    if not available[requested]:
        raise RuntimeError(f"device {requested!r} requested for the sam2 backend but not available")
    return torch.device(requested)
