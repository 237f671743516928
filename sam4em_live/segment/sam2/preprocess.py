"""Raw detector frames to SAM 2 input tensors, and mask logits back to frame-resolution masks.

All work happens on the model's device: the raw frame is uploaded once (as
its own integer type), normalised to [0, 1] between robust percentiles,
resized to the model's square input, repeated to 3 channels and standardised
with the mean/std SAM 2 was trained with. No JPEG round trip.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

#: SAM 2's input normalisation (ImageNet mean/std, as in `sam2.utils.misc.load_video_frames`).
SAM2_MEAN = (0.485, 0.456, 0.406)
SAM2_STD = (0.229, 0.224, 0.225)


def percentiles_of(values: torch.Tensor, percents: tuple[float, float]) -> tuple[torch.Tensor, torch.Tensor]:
    """Linear-interpolated percentiles of a flat tensor (numpy's default method), on any device."""
    import torch

    ordered = torch.sort(values.flatten()).values
    last = ordered.numel() - 1
    out = []
    for percent in percents:
        pos = percent / 100.0 * last
        lo = int(np.floor(pos))
        hi = min(lo + 1, last)
        frac = pos - lo
        out.append(ordered[lo] * (1.0 - frac) + ordered[hi] * frac)
    return out[0], out[1]


class FramePreprocessor:
    """Raw 2-D frame (any numeric dtype) -> (1, 3, S, S) float32 normalised tensor on ``device``.

    Parameters
    ----------
    image_size_px
        Model input edge S in pixels.
    device
        Model device.
    percentiles
        (low, high) intensity percentiles mapped to 0 and 1 (clipped outside).
    subsample
        Every ``subsample``-th pixel along each axis is used for the percentiles.
    """

    def __init__(self, image_size_px: int, device: torch.device, percentiles: tuple[float, float],
                 subsample: int) -> None:
        import torch

        self.size = image_size_px
        self.device = device
        self.percentiles = percentiles
        self.subsample = subsample
        self.mean = torch.tensor(SAM2_MEAN, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(SAM2_STD, device=device).view(1, 3, 1, 1)

    def to_unit(self, pixels: np.ndarray) -> torch.Tensor:
        """The frame on the device as float32 in [0, 1] at its own resolution, shape (H, W)."""
        import torch

        if pixels.ndim != 2:
            raise ValueError(f"the sam2 backend needs single-channel 2-D frames, got shape {pixels.shape}")
        if not pixels.flags.writeable:  # a read-only network buffer: torch needs a writable array
            pixels = pixels.copy()
        if self.device.type == "mps" and pixels.dtype.kind == "u" and pixels.dtype.itemsize > 1:
            pixels = pixels.astype(np.float32)  # MPS has no uint16/uint32 tensors
        raw = torch.from_numpy(np.ascontiguousarray(pixels)).to(self.device).float()
        sample = raw[:: self.subsample, :: self.subsample]
        lo, hi = percentiles_of(sample, self.percentiles)
        span = torch.clamp(hi - lo, min=1e-12)
        return torch.clamp((raw - lo) / span, 0.0, 1.0)

    def __call__(self, pixels: np.ndarray) -> torch.Tensor:
        import torch.nn.functional as F

        unit = self.to_unit(pixels)[None, None]
        resized = F.interpolate(unit, size=(self.size, self.size), mode="bilinear",
                                align_corners=False, antialias=True)
        return (resized.expand(1, 3, -1, -1) - self.mean) / self.std


def logits_to_frame(low_res_logits: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    """(P, 1, h, w) mask logits -> (P, 1, rows, cols) logits at the frame's resolution (Meta's resize)."""
    import torch.nn.functional as F

    if tuple(low_res_logits.shape[-2:]) == shape:
        return low_res_logits
    return F.interpolate(low_res_logits, size=shape, mode="bilinear", align_corners=False)
