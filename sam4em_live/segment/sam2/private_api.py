"""The private `SAM2Base` methods the backend calls, pinned to the sam2 release they were written against.

sam2's only public per-frame entry point, ``SAM2Base.track_step``, runs memory
attention, the mask decoder and the memory encoder for one batch of objects that
share one ``output_dict``, and returns no IoU estimate. Our frame loop needs the
stages apart: one image encoding shared by all particles, memory attention per
group of particles whose banks have the same layout (each with its own
``output_dict``), then one decoder and one memory-encoder call for every tracked
particle, and the memory of a prompted frame encoded from the stored low-res
mask as ``SAM2VideoPredictor.propagate_in_video_preflight`` does (the
predictor itself calls these private methods for that). So the engine calls
the stages directly; each call site names its entry in `PRIVATE_CALLS`.

Private methods may change in any sam2 release without notice, and a change in
what one computes need not change its signature: the masks would then differ
from Meta's predictor without any error. The exactness tests
(tests/test_sam2_exactness.py) were run against `SAM2_VERSION` only, so the
backend refuses to start on any other installed version (`check_sam2_version`,
called when a `Sam2Segmenter` is built) rather than warn: a live service
should not run a segmentation it cannot vouch for, and the fix (``pip install
sam2==1.1.0``, or re-validating this module against the new release) is one
command away. The check also compares each method's parameter names, so a
patched sam2 that still reports 1.1.0 fails with a precise message.
"""

from __future__ import annotations

import importlib.metadata
import inspect
from dataclasses import dataclass

from sam4em_live.config import ConfigError

#: The sam2 release the private calls (and the exactness tests) were written against.
SAM2_VERSION = "1.1.0"


class Sam2VersionError(ConfigError):
    """The installed sam2 is not the release whose private methods the backend was written against."""


@dataclass(frozen=True, slots=True)
class PrivateCall:
    """One private `SAM2Base` method: its parameters in `SAM2_VERSION`, what it does, why we call it."""

    method: str
    parameters: tuple[str, ...]
    does: str
    why_not_public: str


PRIVATE_CALLS = (
    PrivateCall(
        "_prepare_backbone_features", ("backbone_out",),
        "flattens the image encoder's FPN levels to (HW, B, C) features, position encodings and sizes",
        "the public path (track_step) takes these flattened features as input; only the private "
        "helper makes them, and Meta's predictor calls it too (_get_image_feature)",
    ),
    PrivateCall(
        "_track_step",
        ("frame_idx", "is_init_cond_frame", "current_vision_feats", "current_vision_pos_embeds", "feat_sizes",
         "point_inputs", "mask_inputs", "output_dict", "num_frames", "track_in_reverse", "prev_sam_mask_logits"),
        "a prompted particle's initial conditioning frame: no-memory embedding, then the mask decoder on the "
        "points, returning all SAM outputs",
        "track_step drops the predicted IoUs (published as predicted_iou), and its memory encoder would run "
        "on the raw mask, not on the stored hole-filled low-res mask Meta's preflight re-encodes",
    ),
    PrivateCall(
        "_encode_new_memory",
        ("current_vision_feats", "feat_sizes", "pred_masks_high_res", "object_score_logits", "is_mask_from_pts"),
        "the memory encoder: a frame's features and mask (binarised on prompted frames) to spatial memory",
        "public only inside track_step; we run it once for all tracked particles, and on prompted frames "
        "on the upsampled stored mask as Meta's _run_memory_encoder does",
    ),
    PrivateCall(
        "_prepare_memory_conditioned_features",
        ("frame_idx", "is_init_cond_frame", "current_vision_feats", "current_vision_pos_embeds", "feat_sizes",
         "output_dict", "num_frames", "track_in_reverse"),
        "memory attention: selects the memories an object may read from its output_dict and fuses them "
        "with the frame's features",
        "public only inside track_step, with one output_dict per call; we call it per group of particles "
        "with equal bank layouts (their banks batched into one output_dict) and keep sam2's selection logic",
    ),
    PrivateCall(
        "_use_multimask", ("is_init_cond_frame", "point_inputs"),
        "whether the mask decoder predicts several masks (by the model's multimask settings)",
        "the decision is sam2's own and private; reimplementing it would drift from the model config",
    ),
    PrivateCall(
        "_forward_sam_heads",
        ("backbone_features", "point_inputs", "mask_inputs", "high_res_features", "multimask_output"),
        "the prompt encoder and mask decoder: masks, IoUs, object pointer and object score",
        "public only inside track_step; we run it once on the memory-conditioned features of every tracked "
        "particle (groups concatenated), which track_step cannot",
    ),
    PrivateCall(
        "_apply_non_overlapping_constraints", ("pred_masks",),
        "keeps only the highest-scoring particle at each pixel (non_overlap_masks = true)",
        "the post-processing Meta's predictor applies with non_overlap_masks; it exists only as this method",
    ),
)


def installed_sam2_version() -> str | None:
    """The installed sam2 distribution's version (None when sam2 has no package metadata)."""
    try:
        return importlib.metadata.version("sam2")
    except importlib.metadata.PackageNotFoundError:
        return None


def check_sam2_version(installed: str | None = None) -> None:
    """Raise `Sam2VersionError` unless sam2 `SAM2_VERSION` with the expected private methods is installed.

    ``installed`` defaults to the installed distribution's version. Called when a
    `Sam2Segmenter` is built, before the model; imports sam2 (which initialises Hydra).
    """
    installed = installed_sam2_version() if installed is None else installed
    if installed != SAM2_VERSION:
        found = "no sam2 package metadata was found" if installed is None else f"sam2 {installed} is installed"
        raise Sam2VersionError(
            f"the sam2 backend calls private SAM2Base methods written against sam2 {SAM2_VERSION}, but "
            f"{found}; install it with `pip install --no-build-isolation sam2=={SAM2_VERSION}` "
            f"(docs/sam2_backend.md, 'Pinned sam2 version')"
        )
    from sam2.modeling.sam2_base import SAM2Base

    check_private_methods(SAM2Base)


def check_private_methods(model_class: type) -> None:
    """Raise `Sam2VersionError` if a method of `PRIVATE_CALLS` is missing or has other parameters."""
    for call in PRIVATE_CALLS:
        method = getattr(model_class, call.method, None)
        found = None if method is None else tuple(inspect.signature(method).parameters)[1:]
        if found != call.parameters:
            raise Sam2VersionError(
                f"{model_class.__name__}.{call.method} {'is missing' if found is None else f'takes {found}'}; "
                f"the sam2 backend expects {call.parameters} (sam2 {SAM2_VERSION}). A modified sam2? "
                f"Install the release: `pip install --no-build-isolation sam2=={SAM2_VERSION}`"
            )
