"""Shared pieces of the SAM 2 tests: seeded random-init segmenters, Meta's predictor on their weights."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import numpy as np

from sam4em_live.frames import Frame

TINY = {"model": "sam2.1_hiera_t", "random_weights": True, "seed": 0, "device": "cpu", "image_size_px": 256}


def make_segmenter(**overrides: Any):
    from sam4em_live.segment.registry import create_segmenter

    return create_segmenter("sam2", {**TINY, **overrides})


def synthetic_frames(count: int, shape: tuple[int, int] = (200, 240), seed: int = 0) -> list[Frame]:
    """uint16 frames: noisy background with two drifting bright discs (a particle-like scene)."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    frames = []
    for i in range(count):
        image = rng.normal(1000.0, 60.0, shape)
        for (y0, x0), (vy, vx) in (((60.0, 70.0), (0.8, 1.2)), ((140.0, 170.0), (-0.6, -0.9))):
            disc = (rows - (y0 + vy * i)) ** 2 + (cols - (x0 + vx * i)) ** 2 < 15.0**2
            image[disc] += 400.0
        frames.append(Frame("synthetic", i, float(i), np.clip(image, 0, 65535).astype(np.uint16)))
    return frames


def meta_predictor(segmenter):
    """Meta's `SAM2VideoPredictor`, built by sam2's own builder, with the segmenter's weights."""
    from sam2.build_sam import build_sam2_video_predictor

    size = segmenter.image_size
    feat = size // 16
    predictor = build_sam2_video_predictor(
        "configs/sam2.1/sam2.1_hiera_t.yaml", None, device="cpu",
        hydra_overrides_extra=[
            f"++model.image_size={size}",
            f"++model.memory_attention.layer.self_attention.feat_sizes=[{feat},{feat}]",
            f"++model.memory_attention.layer.cross_attention.feat_sizes=[{feat},{feat}]",
        ],
    )
    predictor.load_state_dict(segmenter.model.state_dict())
    return predictor.eval()


def meta_inference_state(images, shape: tuple[int, int]) -> dict[str, Any]:
    """What `SAM2VideoPredictor.init_state` builds, but from our preprocessed (T, 3, S, S) tensor."""
    import torch

    return {
        "images": images, "num_frames": int(images.shape[0]),
        "offload_video_to_cpu": False, "offload_state_to_cpu": False,
        "video_height": shape[0], "video_width": shape[1],
        "device": torch.device("cpu"), "storage_device": torch.device("cpu"),
        "point_inputs_per_obj": {}, "mask_inputs_per_obj": {}, "cached_features": {}, "constants": {},
        "obj_id_to_idx": OrderedDict(), "obj_idx_to_id": OrderedDict(), "obj_ids": [],
        "output_dict_per_obj": {}, "temp_output_dict_per_obj": {}, "frames_tracked_per_obj": {},
    }


def one_torch_thread():
    """Generator for a module fixture: one intra-op thread (the shared 2-core CI box is oversubscribed
    otherwise, which makes torch several times slower)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
