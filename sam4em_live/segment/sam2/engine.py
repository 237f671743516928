"""The streaming frame loop around an unmodified `SAM2Base`, on preprocessed model-size tensors.

Per frame: one image encoding shared by all particles; prompted particles run
like ``SAM2VideoPredictor.add_new_points_or_box`` on a frame not yet tracked
(an initial conditioning frame: no memory, then the memory encoder on the
binarised mask as in ``propagate_in_video_preflight``); tracked particles run
like ``propagate_in_video``: memory attention batched over particles whose
banks have the same layout, then one batched mask decoder and one batched
memory encoder call. Memory features are stored in bfloat16, as Meta's
predictor stores them. See docs/sam2_backend.md for the exactness conditions.

The stages are private `SAM2Base` methods (the public ``track_step`` runs them
all for one batch sharing one output_dict); `private_api.PRIVATE_CALLS` lists
them with why, and the backend refuses to start on a sam2 release other than
the one they were written against (`private_api.check_sam2_version`).
"""

from __future__ import annotations

import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sam4em_live.segment.sam2.memory import MemoryEntry, MemoryWindow, ParticleBank, batched_output_dict

if TYPE_CHECKING:
    from collections.abc import Iterator

    import torch

#: Passed as ``num_frames``: a stream has no end, so pointer windows never clip at the video end.
ENDLESS_FRAMES = 2**62


@dataclass(frozen=True, slots=True)
class PointPrompt:
    """Points in model-input pixels (box corners first with labels 2, 3), batch of one."""

    coords: torch.Tensor  # (1, P, 2) float32
    labels: torch.Tensor  # (1, P) int32


@dataclass(slots=True)
class StepResult:
    """Outputs for the particles of one frame, in ``particles`` order."""

    frame: int
    particles: list[int]
    low_res_logits: torch.Tensor  # (P, 1, S/4, S/4) float32 mask logits
    object_score_logits: torch.Tensor  # (P, 1)
    predicted_iou: torch.Tensor  # (P,)


@dataclass(slots=True)
class StageTimer:
    """Accumulated seconds per model stage; synchronises the device when enabled."""

    enabled: bool = False
    device_type: str = "cpu"
    seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        if not self.enabled:
            yield
            return
        self._sync()
        start = time.perf_counter()
        yield
        self._sync()
        self.seconds[name] += time.perf_counter() - start

    def _sync(self) -> None:
        import torch

        if self.device_type == "cuda":
            torch.cuda.synchronize()
        elif self.device_type == "mps":
            torch.mps.synchronize()


class StreamingSam2:
    """Frame-by-frame SAM 2 with one bounded `ParticleBank` per particle."""

    def __init__(self, model: Any, max_cond_frames: int, *, fill_hole_area_px: int = 0,
                 clear_non_cond_mem_around_input: bool = False, batch_particles: bool = True,
                 timer: StageTimer | None = None) -> None:
        self.model = model
        self.batch_particles = batch_particles
        self.window = MemoryWindow.from_model(model, max_cond_frames)
        self.fill_hole_area_px = fill_hole_area_px
        self.clear_around = clear_non_cond_mem_around_input
        self.timer = timer or StageTimer()
        self.banks: dict[int, ParticleBank] = {}
        self.next_frame = 0
        self._maskmem_pos_enc: list[torch.Tensor] | None = None

    def particles(self) -> list[int]:
        return sorted(self.banks)

    def remove(self, particle: int) -> bool:
        return self.banks.pop(particle, None) is not None

    def retained_tensors(self) -> list[torch.Tensor]:
        """All tensors kept between frames (banks and the cached memory position encoding)."""
        kept = [t for bank in self.banks.values() for t in bank.tensors()]
        return kept + list(self._maskmem_pos_enc or [])

    def step(self, image: torch.Tensor, prompts: dict[int, PointPrompt]) -> StepResult:
        """Segment the next frame. ``image`` is (1, 3, S, S) normalised; ``prompts`` apply to this frame."""
        frame = self.next_frame
        model = self.model
        if not prompts and not self.banks:  # nothing to track: skip the image encoder
            self.next_frame += 1
            return self._collect(frame, {})
        with self.timer.stage("image_encoder"):
            backbone = model.forward_image(image)
            # Private: flatten the FPN levels to (HW, B, C) once, shared by every particle (as Meta's
            # _get_image_feature does); the public track_step only consumes the flattened features.
            _, feats, pos, sizes = model._prepare_backbone_features(backbone)
        prompted = list(prompts)
        tracked = [p for p in self.banks if p not in prompts]
        results: dict[int, tuple[Any, ...]] = {}
        for particle in prompted:
            results[particle] = self._prompted(frame, particle, prompts[particle], feats, pos, sizes)
        if tracked:
            results.update(self._tracked(frame, tracked, feats, pos, sizes))
        for bank in self.banks.values():
            bank.prune(frame)
        self.next_frame += 1
        return self._collect(frame, results)

    def _prompted(self, frame: int, particle: int, prompt: PointPrompt, feats: list, pos: list,
                  sizes: list) -> tuple[Any, ...]:
        """An initial conditioning frame for one particle (Meta: add_new_points_or_box + preflight)."""
        import torch.nn.functional as F

        model = self.model
        point_inputs = {"point_coords": prompt.coords, "point_labels": prompt.labels}
        with self.timer.stage("decoder"):
            # Private: the public track_step drops the predicted IoUs and would encode memory from the raw
            # mask; Meta's preflight re-encodes the stored (hole-filled) mask, which we do below.
            _, sam_out, _, _ = model._track_step(
                frame, True, feats, pos, sizes, point_inputs, None,
                {"cond_frame_outputs": {}, "non_cond_frame_outputs": {}}, ENDLESS_FRAMES, False, None,
            )
        _, _, ious, low_res, _, obj_ptr, score = sam_out
        low_res = self._fill_holes(low_res)
        with self.timer.stage("memory_encoder"):
            # Meta re-encodes the stored (hole-filled) low-res mask, upsampled, binarised.
            size = (model.image_size, model.image_size)
            high_res = F.interpolate(low_res, size=size, mode="bilinear", align_corners=False)
            # Private: the memory encoder, public only inside track_step (Meta's _run_memory_encoder calls it).
            maskmem, maskmem_pos = model._encode_new_memory(feats, sizes, high_res, score, True)
        self._cache_pos_enc(maskmem_pos)
        bank = self.banks.get(particle)
        if bank is None:
            bank = self.banks[particle] = ParticleBank(self.window)
        bank.add_cond(frame, MemoryEntry(obj_ptr.clone(), maskmem.to(_bf16())), self.clear_around)
        return low_res, score, _best_iou(ious)

    def _tracked(self, frame: int, particles: list[int], feats: list, pos: list,
                 sizes: list) -> dict[int, tuple[Any, ...]]:
        """Track particles from memory (Meta: propagate_in_video on a non-conditioning frame).

        Batched: memory attention once per group of equal bank layouts, then one
        decoder and one memory-encoder call for all. Unbatched: each particle alone
        (batch of one, as Meta's predictor runs each object), so its results do not
        depend on the other particles even in the last bit.
        """
        if not self.batch_particles:
            results: dict[int, tuple[Any, ...]] = {}
            for particle in particles:
                results.update(self._run_batch(frame, [[particle]], feats, pos, sizes))
            return results
        groups: dict[tuple, list[int]] = defaultdict(list)
        for particle in particles:
            groups[self.banks[particle].layout()].append(particle)
        return self._run_batch(frame, list(groups.values()), feats, pos, sizes)

    def _run_batch(self, frame: int, groups: list[list[int]], feats: list, pos: list,
                   sizes: list) -> dict[int, tuple[Any, ...]]:
        import torch

        model = self.model
        order = [p for members in groups for p in members]
        pos_enc = self._maskmem_pos_enc or []
        output_dicts = [batched_output_dict([self.banks[p] for p in members], pos_enc) for members in groups]
        pix_parts = []
        with self.timer.stage("memory_attention"):
            for members, output_dict in zip(groups, output_dicts, strict=True):
                n = len(members)
                # Private: memory attention with sam2's own memory selection, one call per group of equal
                # bank layouts (each group its own output_dict); track_step allows one output_dict per call.
                pix_parts.append(model._prepare_memory_conditioned_features(
                    frame, False, [feats[-1].expand(-1, n, -1)], [pos[-1].expand(-1, n, -1)],
                    sizes[-1:], output_dict, ENDLESS_FRAMES,
                ))
        total = len(order)
        all_feats = [f.expand(-1, total, -1) for f in feats]
        high_res_feats = [
            f.permute(1, 2, 0).view(total, f.size(2), *s)
            for f, s in zip(all_feats[:-1], sizes[:-1], strict=True)
        ]
        with self.timer.stage("decoder"):
            pix = pix_parts[0] if len(pix_parts) == 1 else torch.cat(pix_parts, dim=0)
            # Private: sam2's own multimask decision, then the mask decoder once for all tracked particles
            # (the groups concatenated), which track_step cannot do.
            multimask = model._use_multimask(False, None)
            _, _, ious, low_res, high_res, obj_ptr, score = model._forward_sam_heads(
                pix, None, None, high_res_feats or None, multimask
            )
        with self.timer.stage("memory_encoder"):
            # Private: one memory-encoder call for all tracked particles (see _prompted).
            maskmem, maskmem_pos = model._encode_new_memory(all_feats, sizes, high_res, score, False)
        self._cache_pos_enc(maskmem_pos)
        low_res = self._fill_holes(low_res)
        best_iou = _best_iou(ious)
        results = {}
        for i, particle in enumerate(order):
            entry = MemoryEntry(obj_ptr[i : i + 1].clone(), maskmem[i : i + 1].to(_bf16()))
            self.banks[particle].add_tracked(frame, entry)
            results[particle] = (low_res[i : i + 1], score[i : i + 1], best_iou[i : i + 1])
        return results

    def _collect(self, frame: int, results: dict[int, tuple[Any, ...]]) -> StepResult:
        import torch

        particles = sorted(results)
        if not particles:
            size = self.model.image_size // 4
            empty = torch.zeros((0, 1, size, size), device=self.model.device)
            return StepResult(frame, [], empty, torch.zeros((0, 1)), torch.zeros((0,)))
        low_res, score, iou = (torch.cat([results[p][k] for p in particles]) for k in range(3))
        return StepResult(frame, particles, low_res.float(), score.float(), iou.float())

    def _cache_pos_enc(self, maskmem_pos: list[torch.Tensor]) -> None:
        # Same for every frame and particle (Meta keeps one copy as a constant too).
        if self._maskmem_pos_enc is None:
            self._maskmem_pos_enc = [p[0:1].clone() for p in maskmem_pos]

    def _fill_holes(self, low_res: torch.Tensor) -> torch.Tensor:
        if self.fill_hole_area_px <= 0:
            return low_res
        from sam2.utils.misc import fill_holes_in_mask_scores

        return fill_holes_in_mask_scores(low_res, self.fill_hole_area_px)


def _best_iou(ious: torch.Tensor) -> torch.Tensor:
    """IoU estimate of the mask SAM 2 picked (the highest when it predicted several)."""
    return ious.max(dim=-1).values


def _bf16() -> Any:
    import torch

    return torch.bfloat16
