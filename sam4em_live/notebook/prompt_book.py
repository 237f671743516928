"""The prompts a user made by clicking: per particle, per frame, turned into the package's own edit records.

A click adds a point (positive, or negative for background), a drag sets the box, both for one particle on
one frame; together they are one `Prompt` for that (particle, frame). The first prompt of a particle adds
it; a prompt on a later frame re-seeds it (a correction); a removal stops it from a frame on. The book is
what `sam4em_live.track` is given, so the widget's run is the one a script with the same prompts would make.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from sam4em_live.particles import Prompt, RemoveParticle, validate_edit

if TYPE_CHECKING:
    from sam4em_live.particles import ParticleEdit

XY = tuple[float, float]
Box = tuple[float, float, float, float]  # x0, y0, x1, y1 px


@dataclass(frozen=True, slots=True)
class FramePrompt:
    """What the user gave for one particle on one frame: points (x, y px) with labels 1/0, and a box."""

    particle: int
    frame: int
    points: tuple[XY, ...] = ()
    labels: tuple[int, ...] = ()
    box: Box | None = None

    @property
    def usable(self) -> bool:
        """A backend needs a positive point or a box to seed; negative points alone say nothing."""
        return self.box is not None or 1 in self.labels

    def as_prompt(self) -> Prompt:
        return Prompt(self.particle, self.frame, self.points, self.labels, self.box, origin="notebook")

    def as_dict(self) -> dict[str, object]:
        return {"particle": self.particle, "frame": self.frame, "points": [list(p) for p in self.points],
                "labels": list(self.labels), "box": list(self.box) if self.box else None}


class PromptBook:
    """The user's prompts and removals, keyed by (particle, frame), on frames of ``shape`` (rows, columns).

    A point or box the pipeline would refuse (outside the frame, an empty box) raises `PromptError` and
    leaves the book as it was.
    """

    def __init__(self, shape: tuple[int, int]) -> None:
        self.shape = shape
        self._prompts: dict[tuple[int, int], FramePrompt] = {}
        self._removals: dict[int, int] = {}  # particle -> first frame it is no longer tracked

    def add_point(self, particle: int, frame: int, x: float, y: float, positive: bool = True) -> FramePrompt:
        entry = self._prompts.get((particle, frame), FramePrompt(particle, frame))
        entry = replace(entry, points=(*entry.points, (float(x), float(y))), labels=(*entry.labels, int(positive)))
        return self._put(entry)

    def set_box(self, particle: int, frame: int, box: Box) -> FramePrompt:
        x0, y0, x1, y1 = box
        ordered = (min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
        entry = self._prompts.get((particle, frame), FramePrompt(particle, frame))
        return self._put(replace(entry, box=ordered))

    def _put(self, entry: FramePrompt) -> FramePrompt:
        # checked as the pipeline will check it; labels as positive so a lone negative point (allowed here,
        # waiting for its positive one) is checked for where it is, not refused for being alone
        validate_edit(Prompt(entry.particle, entry.frame, entry.points, (1,) * len(entry.points), entry.box),
                      self.shape)
        self._prompts[(entry.particle, entry.frame)] = entry
        # a prompt at or after a removal brings the particle back from there
        if self._removals.get(entry.particle, entry.frame + 1) <= entry.frame:
            del self._removals[entry.particle]
        return entry

    def clear(self, particle: int, frame: int) -> None:
        """Forget the prompt of ``particle`` on ``frame`` (to redo it)."""
        self._prompts.pop((particle, frame), None)

    def remove(self, particle: int, frame: int) -> None:
        """Stop tracking ``particle`` from ``frame`` on; prompts from there on are dropped.

        With no earlier prompt left the particle is gone altogether (nothing to remove).
        """
        for key in [k for k in self._prompts if k[0] == particle and k[1] >= frame]:
            del self._prompts[key]
        if any(k[0] == particle for k in self._prompts):
            self._removals[particle] = frame
        else:
            self._removals.pop(particle, None)

    def at(self, particle: int, frame: int) -> FramePrompt | None:
        return self._prompts.get((particle, frame))

    def on_frame(self, frame: int) -> list[FramePrompt]:
        return [p for (_, f), p in sorted(self._prompts.items()) if f == frame]

    def particles(self) -> list[int]:
        return sorted({particle for particle, _ in self._prompts})

    def removals(self) -> dict[int, int]:
        return dict(self._removals)

    def edits(self) -> list[ParticleEdit]:
        """The usable prompts and the removals, in frame order (what `sam4em_live.track` takes)."""
        edits: list[tuple[int, int, ParticleEdit]] = [
            (p.frame, 0, p.as_prompt()) for p in self._prompts.values() if p.usable]
        edits += [(frame, 1, RemoveParticle(particle, frame, origin="notebook"))
                  for particle, frame in self._removals.items()]
        return [edit for _, _, edit in sorted(edits, key=lambda e: (e[0], e[1], e[2].particle))]

    def summary(self) -> list[dict[str, object]]:
        """One row per particle for the widget's list: its prompt frames and removal frame."""
        return [{"particle": particle,
                 "frames": sorted(f for q, f in self._prompts if q == particle),
                 "removed_from": self._removals.get(particle)}
                for particle in self.particles()]

    def prompts(self) -> list[FramePrompt]:
        return [self._prompts[key] for key in sorted(self._prompts)]
