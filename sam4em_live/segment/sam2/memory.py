"""Bounded per-particle memory banks holding exactly what SAM 2's memory attention reads.

`SAM2Base._prepare_memory_conditioned_features` on frame ``n`` reads, per object:

- the conditioning (prompted) frames, all of them or the ``max_cond_frames_in_attn``
  closest (`sam2.modeling.sam2_utils.select_closest_cond_frames`);
- spatial memories of non-conditioning frames ``n - 1`` and, with stride ``r``
  (``memory_temporal_stride_for_eval``), ``base, base - r, ...`` for
  ``num_maskmem - 2`` entries where ``base = ((n - 2) // r) * r``;
- object pointers of the conditioning frames in the past and of the frames
  ``n - 1 ... n - (max_obj_ptrs_in_encoder - 1)``.

A `ParticleBank` keeps those and nothing else: after frame ``f`` it drops
spatial memories that no later frame can read (the lower bound above only
grows with ``n``) and pointers older than the pointer window. Conditioning
frames are capped: the first is pinned, then the most recent ones. The bank is
handed to the unmodified sam2 code as an ``output_dict``, so the selection
logic stays sam2's own.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch


@dataclass(slots=True)
class MemoryEntry:
    """One frame's memory for one particle: spatial memory (bf16, may be dropped) and object pointer."""

    obj_ptr: torch.Tensor  # (1, hidden_dim)
    maskmem_features: torch.Tensor | None  # (1, mem_dim, H/16, W/16), bfloat16 like Meta's predictor


@dataclass(frozen=True, slots=True)
class MemoryWindow:
    """What the model reads, from its attributes (see module docstring)."""

    num_maskmem: int
    stride: int
    max_obj_ptrs: int
    use_obj_ptrs: bool
    max_cond_frames: int

    @classmethod
    def from_model(cls, model: Any, max_cond_frames: int) -> MemoryWindow:
        return cls(
            num_maskmem=int(model.num_maskmem),
            stride=int(model.memory_temporal_stride_for_eval),
            max_obj_ptrs=int(model.max_obj_ptrs_in_encoder),
            use_obj_ptrs=bool(model.use_obj_ptrs_in_encoder),
            max_cond_frames=max_cond_frames,
        )

    def keeps_spatial(self, t: int, last: int) -> bool:
        """Whether frame ``t``'s spatial memory can be read by any frame after ``last``."""
        if self.num_maskmem < 2:
            return False
        if t == last:
            return True  # the "previous frame" memory of frame last + 1
        strided = self.num_maskmem - 2
        if strided <= 0 or t % self.stride:
            return False
        nxt = last + 1
        lowest = ((nxt - 2) // self.stride) * self.stride - (strided - 1) * self.stride
        return t >= lowest

    def keeps_pointer(self, t: int, last: int) -> bool:
        """Whether frame ``t``'s object pointer can be read by any frame after ``last``."""
        return self.use_obj_ptrs and t >= last + 1 - (self.max_obj_ptrs - 1)


@dataclass(slots=True)
class ParticleBank:
    """The bounded memory of one particle (frame index -> entry)."""

    window: MemoryWindow
    cond: dict[int, MemoryEntry] = field(default_factory=dict)
    non_cond: dict[int, MemoryEntry] = field(default_factory=dict)

    def add_cond(self, frame: int, entry: MemoryEntry, clear_around: bool) -> None:
        """A prompted frame: becomes a conditioning frame (first pinned, then the most recent)."""
        self.non_cond.pop(frame, None)
        self.cond[frame] = entry
        if len(self.cond) > self.window.max_cond_frames:
            first = min(self.cond)
            rest = sorted(t for t in self.cond if t != first)
            for t in rest[: len(self.cond) - self.window.max_cond_frames]:
                del self.cond[t]
        if clear_around:
            # Meta's clear_non_cond_mem_around_input: forget outdated appearance near a correction.
            reach = self.window.stride * self.window.num_maskmem
            for t in [t for t in self.non_cond if abs(t - frame) <= reach]:
                del self.non_cond[t]

    def add_tracked(self, frame: int, entry: MemoryEntry) -> None:
        self.non_cond[frame] = entry

    def prune(self, last: int) -> None:
        """Drop what no frame after ``last`` can read."""
        for t in list(self.non_cond):
            entry = self.non_cond[t]
            if entry.maskmem_features is not None and not self.window.keeps_spatial(t, last):
                entry.maskmem_features = None
            if entry.maskmem_features is None and not self.window.keeps_pointer(t, last):
                del self.non_cond[t]

    def layout(self) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        """Which frames hold what: particles with equal layouts can share one batched attention."""
        spatial = tuple(t for t, e in self.non_cond.items() if e.maskmem_features is not None)
        pointer_only = tuple(t for t, e in self.non_cond.items() if e.maskmem_features is None)
        return tuple(self.cond), spatial, pointer_only

    def tensors(self) -> list[torch.Tensor]:
        """Every tensor this bank retains (for the boundedness proof and the benchmark)."""
        out: list[torch.Tensor] = []
        for entry in (*self.cond.values(), *self.non_cond.values()):
            out.append(entry.obj_ptr)
            if entry.maskmem_features is not None:
                out.append(entry.maskmem_features)
        return out


def batched_output_dict(
    banks: list[ParticleBank], maskmem_pos_enc: list[torch.Tensor]
) -> dict[str, dict[int, dict[str, Any]]]:
    """Stack equal-layout banks into the ``output_dict`` that `SAM2Base` reads (batch = particles)."""
    import torch

    size = len(banks)
    pos = [p.expand(size, -1, -1, -1) for p in maskmem_pos_enc]

    def stacked(entries: list[MemoryEntry]) -> dict[str, Any]:
        feats = None
        if entries[0].maskmem_features is not None:
            feats = torch.cat([e.maskmem_features for e in entries], dim=0)  # type: ignore[misc]
        return {
            "maskmem_features": feats,
            "maskmem_pos_enc": pos,
            "obj_ptr": torch.cat([e.obj_ptr for e in entries], dim=0),
        }

    return {
        "cond_frame_outputs": {t: stacked([b.cond[t] for b in banks]) for t in banks[0].cond},
        "non_cond_frame_outputs": {t: stacked([b.non_cond[t] for b in banks]) for t in banks[0].non_cond},
    }
