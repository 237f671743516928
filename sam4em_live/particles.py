"""Particles: the shared vocabulary of prompts, edits, masks and measurements.

Every stage speaks these types: the control channel and hooks create `Prompt` and `RemoveParticle` edits,
a segmenter answers with one `ParticleMask` per particle per frame, measurement turns a mask into a
`ParticleMeasurement`, and the sinks record both. Coordinates are pixels with x = column, y = row, origin
at the centre of the top-left pixel; angles are in degrees.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class PromptError(ValueError):
    """A prompt that cannot be applied (outside the image, empty box, nothing to seed...).

    ``particle`` names the particle whose edit failed, when known, so the
    pipeline can drop just that edit and segment the frame without it.
    """

    def __init__(self, message: str, particle: int | None = None) -> None:
        super().__init__(message)
        self.particle = particle


@dataclass(frozen=True, slots=True)
class Prompt:
    """Points and/or a box for one particle, in pixels (x = column, y = row).

    ``frame`` is the frame index the prompt is anchored to; ``None`` means
    "the next frame the engine processes" (live use). Labels are 1 (positive,
    on the particle) or 0 (negative, background). A prompt for a particle that
    already exists is a correction: it re-seeds that particle only.
    ``origin`` says who made it (one of `EDIT_ORIGINS`), for the run's edits log.
    """

    particle: int
    frame: int | None = None
    points: tuple[tuple[float, float], ...] = ()
    labels: tuple[int, ...] = ()
    box: tuple[float, float, float, float] | None = None  # x0, y0, x1, y1
    origin: str = field(default="api", compare=False)  # who made it, not what it is

    def at_frame(self, frame: int) -> Prompt:
        return Prompt(self.particle, frame, self.points, self.labels, self.box, self.origin)


@dataclass(frozen=True, slots=True)
class RemoveParticle:
    """Stop tracking a particle (from ``frame`` on; ``None`` = next frame); ``origin`` as for `Prompt`."""

    particle: int
    frame: int | None = None
    origin: str = field(default="api", compare=False)  # who made it, not what it is

    def at_frame(self, frame: int) -> RemoveParticle:
        return RemoveParticle(self.particle, frame, self.origin)


ParticleEdit = Prompt | RemoveParticle

#: Where an edit came from (``Prompt.origin``): a prompts file, a control-channel client, the monitor (a
#: control client that says so), a control hook, a library call in the same process, or the service's own
#: discovery (auto mode, or a proposal accepted: docs/discovery.md).
EDIT_ORIGINS = ("file", "control", "monitor", "hook", "api", "discovery")

#: What became of an edit (`EditRecord.outcome`).
APPLIED, REJECTED, REFUSED_BY_QUOTA = "applied", "rejected", "refused_by_quota"

#: Where it was decided (`EditRecord.checked`): when it was submitted (quotas, the frame shape known then),
#: when its frame came (quotas against that frame), by the pipeline's check of the frame, by the backend.
CHECKED_AT = ("submit", "due", "frame", "backend")


@dataclass(frozen=True, slots=True)
class EditRecord:
    """What became of one edit, for the run's edits log (``edits.jsonl``, docs/recording.md).

    ``edit`` is the edit as it was decided (anchored to ``frame``, a box as clipped to the frame);
    ``frame`` is the frame it applied to, or the frame that reported its refusal. ``kind`` is
    ``prompt`` (a new particle), ``correction`` (a prompt for a particle tracked then) or ``removal``;
    ``outcome`` one of `APPLIED`, `REJECTED`, `REFUSED_BY_QUOTA`, with the ``reason`` (and the ``quota``)
    of a refusal; ``checked`` one of `CHECKED_AT`.
    """

    edit: ParticleEdit
    frame: int
    kind: str
    outcome: str
    checked: str
    reason: str | None = None
    quota: str | None = None

    @property
    def origin(self) -> str:
        return self.edit.origin


def has_finite_coordinates(prompt: Prompt) -> bool:
    """Whether every coordinate of ``prompt`` (points and box) is a finite number.

    For code that reads a frame's prompts before each is validated (`validate_edit` refuses the others,
    naming their particle): one NaN must not take the frame's other prompts down with it.
    """
    return all(math.isfinite(v) for v in (*(prompt.box or ()), *(c for point in prompt.points for c in point)))


def validate_edit(edit: ParticleEdit, shape: tuple[int, int]) -> None:
    """Raise `PromptError` naming the problem if ``edit`` cannot apply to a frame of ``shape``."""
    if not isinstance(edit.particle, int) or isinstance(edit.particle, bool) or edit.particle < 1:
        raise PromptError(f"particle id must be an integer >= 1, got {edit.particle!r}")
    if edit.frame is not None and edit.frame < 0:
        raise PromptError(f"frame must be >= 0, got {edit.frame}")
    if isinstance(edit, RemoveParticle):
        return
    rows, cols = shape
    if not edit.points and edit.box is None:
        raise PromptError(f"prompt for particle {edit.particle} has neither points nor a box")
    if len(edit.labels) != len(edit.points):
        raise PromptError(
            f"particle {edit.particle}: {len(edit.points)} points but {len(edit.labels)} labels"
        )
    for (x, y), label in zip(edit.points, edit.labels, strict=False):
        if label not in (0, 1):
            raise PromptError(f"particle {edit.particle}: label must be 0 or 1, got {label!r}")
        if not (math.isfinite(x) and math.isfinite(y)) or not (-0.5 <= x < cols - 0.5 and -0.5 <= y < rows - 0.5):
            raise PromptError(
                f"particle {edit.particle}: point ({x}, {y}) is outside the {cols}x{rows} image"
            )
    if edit.points and not any(edit.labels) and edit.box is None:
        raise PromptError(f"particle {edit.particle}: only negative points and no box")
    if edit.box is not None:
        x0, y0, x1, y1 = edit.box
        if not all(math.isfinite(v) for v in edit.box):
            raise PromptError(f"particle {edit.particle}: box {edit.box} is not finite")
        if x1 - x0 < 1 or y1 - y0 < 1:
            raise PromptError(f"particle {edit.particle}: box {edit.box} is empty (need x1 > x0, y1 > y0)")
        if x1 <= -0.5 or y1 <= -0.5 or x0 >= cols - 0.5 or y0 >= rows - 0.5:
            raise PromptError(f"particle {edit.particle}: box {edit.box} is outside the {cols}x{rows} image")


@dataclass(frozen=True, slots=True)
class ParticleMask:
    """A backend's answer for one particle on one frame.

    The mask is stored as a boolean ``crop`` of the frame at ``bbox`` =
    (x0, y0, x1, y1), half-open pixel bounds (columns x0..x1-1, rows y0..y1-1),
    so small particles on large frames stay cheap. An absent particle has
    ``present=False`` and no crop. ``score`` is the backend's confidence in
    [0, 1]; ``predicted_iou`` and ``object_score_logit`` are SAM 2's own
    outputs where a backend has them.
    """

    particle: int
    present: bool
    score: float
    bbox: tuple[int, int, int, int] | None = None
    crop: np.ndarray | None = None
    predicted_iou: float | None = None
    object_score_logit: float | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def absent(cls, particle: int, score: float = 0.0, **kw: Any) -> ParticleMask:
        return cls(particle=particle, present=False, score=score, **kw)

    @classmethod
    def from_full(cls, particle: int, mask: np.ndarray, score: float, **kw: Any) -> ParticleMask:
        """Build from a full-frame boolean mask; an empty mask means absent."""
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size == 0:
            return cls.absent(particle, score, **kw)
        cols = np.flatnonzero(mask.any(axis=0))
        y0, y1, x0, x1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
        crop = np.ascontiguousarray(mask[y0:y1, x0:x1], dtype=bool)
        return cls(particle, True, score, (x0, y0, x1, y1), crop, **kw)

    def to_full(self, shape: tuple[int, int]) -> np.ndarray:
        full = np.zeros(shape, dtype=bool)
        if self.present and self.crop is not None and self.bbox is not None:
            x0, y0, x1, y1 = self.bbox
            full[y0:y1, x0:x1] = self.crop
        return full


@dataclass(frozen=True, slots=True)
class ParticleMeasurement:
    """Geometry of one particle on one frame (pixels, degrees)."""

    particle: int
    frame: int
    present: bool
    x: float = math.nan
    y: float = math.nan
    angle_deg: float = math.nan
    area_px: int = 0
    major_axis_px: float = math.nan
    minor_axis_px: float = math.nan
    eccentricity: float = math.nan
    score: float = 0.0
    split: bool = False  # the mask had several components; the largest was kept
