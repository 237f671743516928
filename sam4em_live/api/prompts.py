"""Prompts as Python objects: thin constructors over `sam4em_live.particles.Prompt` and `RemoveParticle`.

Coordinates are pixels, x = column, y = row, origin at the centre of the top-left pixel (as everywhere in
the package). ``frame`` is the 0-based frame the prompt is anchored to (default: the first frame;
``None``, for a live service, means the next frame it processes);
``particle`` is the id the particle keeps in the trajectories (>= 1). A prompt for a particle that is
already tracked re-seeds it from that frame on (a correction)::

    from sam4em_live import Box, Point, Remove
    prompts = [Point(120, 88, particle=1),
               Box(30, 40, 70, 75, particle=2, negative=[(50, 60)]),
               Point(140, 90, particle=1, frame=40),        # correct particle 1 at frame 40
               Remove(2, frame=100)]                        # stop tracking particle 2 at frame 100

The constructors return the package's own frozen records, so what they build is what a prompts file,
the control channel or a hook would have sent.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sam4em_live.io.prompts_file import load_prompts, save_prompts
from sam4em_live.particles import Prompt, PromptError, RemoveParticle, validate_edit

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from sam4em_live.particles import ParticleEdit

#: A point in pixels: (x = column, y = row).
XY = tuple[float, float]


def _frame(frame: int | None) -> int | None:
    return None if frame is None else int(frame)


def _pairs(points: Iterable[Sequence[float]], what: str) -> tuple[XY, ...]:
    out = []
    for p in points:
        if len(p) != 2:
            raise PromptError(f"{what}: each point must be (x, y), got {p!r}")
        out.append((float(p[0]), float(p[1])))
    return tuple(out)


def Point(
    x: float, y: float, *, particle: int = 1, frame: int | None = 0,
    negative: Iterable[Sequence[float]] = (), more: Iterable[Sequence[float]] = (),
) -> Prompt:
    """A positive point on a particle at (``x``, ``y``) px, plus optional ``more`` positive and ``negative`` points.

    Negative points (label 0) mark background the mask must not include (a neighbour, a bright rim).
    """
    positive = ((float(x), float(y)), *_pairs(more, "Point(more=...)"))
    background = _pairs(negative, "Point(negative=...)")
    return Prompt(int(particle), _frame(frame), positive + background,
                  (1,) * len(positive) + (0,) * len(background))


def Box(
    x0: float, y0: float, x1: float, y1: float, *, particle: int = 1, frame: int | None = 0,
    points: Iterable[Sequence[float]] = (), negative: Iterable[Sequence[float]] = (),
) -> Prompt:
    """A box (``x0, y0`` top-left, ``x1, y1`` bottom-right, px) around a particle, with optional points.

    ``points`` are positive points inside the particle, ``negative`` background points (label 0).
    """
    if not (x1 > x0 and y1 > y0):
        raise PromptError(f"Box: needs x1 > x0 and y1 > y0, got ({x0}, {y0}, {x1}, {y1})", int(particle))
    positive = _pairs(points, "Box(points=...)")
    background = _pairs(negative, "Box(negative=...)")
    return Prompt(int(particle), _frame(frame), positive + background, (1,) * len(positive) + (0,) * len(background),
                  (float(x0), float(y0), float(x1), float(y1)))


def Remove(particle: int, *, frame: int | None = 0) -> RemoveParticle:
    """Stop tracking ``particle`` from ``frame`` on."""
    return RemoveParticle(int(particle), _frame(frame))


def as_edits(prompts: str | Path | ParticleEdit | Iterable[ParticleEdit],
             shape: tuple[int, int] | None = None) -> list[ParticleEdit]:
    """The edits ``prompts`` stands for (`sam4em_live.track`'s ``prompts``): a prompts file is read (and checked against ``shape``), objects kept.

    Edits without a frame are anchored to frame 0 (offline there is no "next frame"). Raises `PromptError`
    for anything that is not a prompt, naming it.
    """
    if isinstance(prompts, (str, Path)):
        return load_prompts(prompts, shape)
    if isinstance(prompts, (Prompt, RemoveParticle)):
        prompts = [prompts]
    edits: list[ParticleEdit] = []
    for i, edit in enumerate(prompts):
        if not isinstance(edit, (Prompt, RemoveParticle)):
            raise PromptError(f"prompts[{i}]: expected Point(...), Box(...) or Remove(...), got "
                              f"{type(edit).__name__}")
        edits.append(edit if edit.frame is not None else edit.at_frame(0))
    if shape is not None:
        for i, edit in enumerate(edits):
            try:
                validate_edit(edit, shape)
            except PromptError as exc:
                raise PromptError(f"prompts[{i}]: {exc}", edit.particle) from None
    return edits


__all__ = ["XY", "Box", "Point", "Remove", "as_edits", "load_prompts", "save_prompts"]
