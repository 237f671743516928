"""The segmenter seam: prompts in, one mask per particle per frame out.

Every backend (``threshold``, ``embedded``, ``sam2``) implements `Segmenter`.
The pipeline owns the frame loop and the prompt schedule: it validates each
edit against the frame shape (`validate_edit`) and hands a backend only the
edits anchored to the frame it is about to segment, so a backend never has to
guess which frame index a prompt belongs to. It reaches the backend through a
`SegmentStage` (`segment/stage.py`: on its own thread, or in a child process),
and both stages apply the `PromptError` contract with `track_with_retries`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

from sam4em_live.particles import ParticleEdit, ParticleMask, Prompt, PromptError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sam4em_live.frames import Frame


@runtime_checkable
class Segmenter(Protocol):
    """A prompt-driven video segmenter run one frame at a time by the pipeline.

    Called from the pipeline worker thread only (never concurrently).

    - ``track(frame, edits)`` is called once per frame in increasing index
      order. ``edits`` are already validated and anchored to this frame; they
      take effect before this frame is segmented (adds, corrections, removals).
      Returns one `ParticleMask` per tracked particle (absent ones included).
      If an edit cannot be applied (e.g. nothing to seed at the point), raise
      `PromptError` with ``particle`` set: the pipeline reports it and calls
      ``track`` again for the same frame without that particle's edits, so
      applying an edit must be idempotent (re-applying the same prompt on
      the same frame gives the same state). Any other exception means the
      frame could not be processed; the pipeline logs and counts it and
      carries on with the next frame.
    - ``describe()`` returns JSON-able backend and model identity for
      ``run.json`` and results messages. It must include ``"backend"`` and
      ``"random_weights"`` (True whenever outputs are not from trained weights).
    - ``particles()`` lists the ids currently tracked.
    - ``close()`` releases resources; called once at teardown.

    Optional: ``note_backlog(frames_waiting: int)``, called before each live
    frame with the number of frames queued behind it; a backend may defer
    non-essential work while the pipeline is behind (see `BacklogAware`).
    Optional: ``seed(frame, edits)`` and ``track(frame, edits, seeded=...)``,
    prompts seeded beside the frame loop in live mode (see `SeedsAside`).
    """

    def describe(self) -> dict[str, Any]: ...

    def track(self, frame: Frame, edits: Sequence[ParticleEdit] = ()) -> list[ParticleMask]: ...

    def particles(self) -> list[int]: ...

    def close(self) -> None: ...


@runtime_checkable
class BacklogAware(Protocol):
    """A segmenter that can defer non-essential work while frames queue up (live mode only).

    Offline and ``every-frame`` runs never call it, so their results do not
    depend on timing.
    """

    def note_backlog(self, frames_waiting: int) -> None: ...


@runtime_checkable
class DefersUpkeep(Protocol):
    """A segmenter that can leave work its frame's masks do not need for after them (issue 23: latency).

    ``upkeep()`` runs that work; the pipeline calls it once a frame's result has gone to the sinks, on the
    thread that calls ``track``. Until the first call ``track`` does it all itself; from then on it leaves it
    queued, and the caller keeps each frame's pixels unchanged until the next ``upkeep`` or ``track`` (which
    runs what is left first: the masks are the same either way). It raises what that work raises.
    """

    def upkeep(self) -> None: ...


def prompt_key(prompt: Prompt) -> tuple[object, ...]:
    """What identifies a prompt across re-anchoring: its particle, points, labels and box (not its frame)."""
    return (prompt.particle, prompt.points, prompt.labels, prompt.box)


@dataclass(frozen=True, slots=True)
class SeededEdits:
    """A frame's edits with their prompts seeded on that frame (``frame_index``), ready for a later frame.

    Made by `SeedsAside.seed` beside the frame loop, handed back to ``track(frame, edits, seeded=...)`` on a
    frame at or after ``frame_index``. ``edits`` are those that seeded (and the removals), in their order,
    anchored to ``frame_index``; ``rejected`` those the backend refused, with its reason (each names its
    particle). ``prepared`` is the backend's own state per prompt (`prompt_key`), opaque to the pipeline and
    used once: the backend may take it over when the edits land.
    """

    frame_index: int
    edits: tuple[ParticleEdit, ...]
    rejected: tuple[RejectedEdit, ...]
    prepared: dict[tuple[object, ...], object]


@runtime_checkable
class SeedsAside(Protocol):
    """A segmenter whose prompts can be seeded off the frame loop (live mode; docs/architecture.md).

    - ``seed(frame, edits)`` may be called from a helper thread while ``track`` runs on the
      worker: it must not read or change tracking state, only the frame and the options. It
      seeds every prompt of ``edits`` (already validated and anchored to ``frame``) and returns
      a `SeededEdits`; a prompt that cannot be seeded is in its ``rejected`` (never raised).
    - ``track(frame, edits, seeded=seeded)``, on the worker, on a frame at or after the seeded
      one: ``edits`` are ``seeded.edits`` (re-anchored to ``frame``) and apply as in ``track``,
      except that the prompts are not seeded again: each particle starts from its seed and is
      brought up to ``frame``. On the seeded frame itself the result equals
      ``track(frame, edits)``.
    """

    def seed(self, frame: Frame, edits: Sequence[ParticleEdit]) -> SeededEdits: ...

    def track(self, frame: Frame, edits: Sequence[ParticleEdit] = (), seeded: SeededEdits | None = None
              ) -> list[ParticleMask]: ...


class PromptErrors(PromptError):
    """Several edits of one frame refused at once: one `PromptError` naming its particle per refusal.

    A backend that checks every edit of a frame before changing any state (as ``embedded`` seeds
    all prompts first) raises this, so the pipeline drops all the refused edits and tracks the
    frame once more: two passes for any number of bad prompts, not one pass per bad prompt.
    """

    def __init__(self, errors: Sequence[PromptError]) -> None:
        if not errors:
            raise ValueError("PromptErrors needs at least one PromptError")
        named = {e.particle for e in errors}
        super().__init__("; ".join(str(e) for e in errors), named.pop() if len(named) == 1 else None)
        self.errors = tuple(errors)


class RejectedEdit(NamedTuple):
    """An edit the backend refused for a frame (`PromptError`), and the backend's reason."""

    edit: ParticleEdit
    reason: str


def track_with_retries(segmenter: Segmenter, frame: Frame, edits: Sequence[ParticleEdit],
                       seeded: SeededEdits | None = None) -> tuple[list[ParticleMask], list[RejectedEdit]]:
    """``segmenter.track`` with the `PromptError` contract applied: returns (masks, rejected edits).

    An edit the backend rejects is dropped (all of that particle's edits on this
    frame; every edit if the error names no particle) and the frame is tracked
    again without it; a `PromptErrors` drops every particle it names in one go.
    A `PromptError` naming no remaining edit is re-raised. Both segment stages
    (in process and in a child process) call this, so the contract is applied in one place.
    ``seeded``: the prompts were seeded beside the loop (`SeedsAside`); ``segmenter`` must be one.
    """
    remaining = list(edits)
    rejected: list[RejectedEdit] = []
    while True:
        try:
            if seeded is None:
                return segmenter.track(frame, remaining), rejected
            if not isinstance(segmenter, SeedsAside):
                raise TypeError(f"{type(segmenter).__name__} cannot take prompts seeded aside")
            return segmenter.track(frame, remaining, seeded=seeded), rejected
        except PromptError as exc:
            errors = exc.errors if isinstance(exc, PromptErrors) else (exc,)
            reasons = {e.particle: str(e) for e in errors}
            if None in reasons:  # an error that names no particle: nothing on this frame can be trusted
                reasons = {e.particle: str(exc) for e in remaining}
            dropped = [e for e in remaining if e.particle in reasons]
            if not dropped:
                raise
            remaining = [e for e in remaining if e.particle not in reasons]
            rejected.extend(RejectedEdit(e, reasons[e.particle]) for e in dropped)
