"""From mouse gestures to prompts for the service (Qt-free).

Gestures (full-frame pixels, x = column, y = row):

- click on a tracked particle's mask: select it (click again to deselect);
- click elsewhere: positive point prompt for the selected particle (a
  correction), or for a new particle id when nothing is selected;
- shift/ctrl click: negative point for the selected particle, sent with a
  positive point at its current centroid (a prompt needs a positive cue);
- drag: box prompt for the selected particle, or a new one;
- remove: stop tracking the selected particle.

Edits are checked with `validate_edit` before sending, then handed to a
`PromptSink` on a dispatcher thread, so a slow control channel never freezes
the display.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from sam4em_live.particles import ParticleEdit, Prompt, PromptError, RemoveParticle, validate_edit

if TYPE_CHECKING:
    from collections.abc import Sequence

log = logging.getLogger(__name__)

MIN_BOX_EDGE_PX = 2.0  # a smaller drag is a shaky click, not a box


@runtime_checkable
class PromptSink(Protocol):
    """Where the monitor's prompts go (the service's control channel).

    Called from the monitor's dispatcher thread, one call at a time. Both
    methods may block briefly and raise on failure (the error is shown).
    Coordinates are full-frame pixels; ``labels`` 1 = positive, 0 = negative.
    """

    def add_prompt(self, particle: int, points: Sequence[tuple[float, float]], labels: Sequence[int],
                   box: tuple[float, float, float, float] | None) -> Any: ...

    def remove(self, particle: int) -> Any: ...


@dataclass(frozen=True, slots=True)
class Gesture:
    """What a gesture means: a selection change, an edit to send, or a message."""

    select: int | None = None
    deselect: bool = False
    edit: ParticleEdit | None = None
    message: str = ""


def interpret_click(x: float, y: float, negative: bool, hit: int | None, selected: int | None,
                    selected_xy: tuple[float, float] | None, new_id: int) -> Gesture:
    """Turn a click at full-frame (x, y) into a `Gesture` (see module docstring)."""
    if negative:
        if selected is None or selected_xy is None:
            return Gesture(message="select a visible particle first for a negative point")
        prompt = Prompt(selected, points=(selected_xy, (x, y)), labels=(1, 0))
        return Gesture(edit=prompt, message=f"negative point for #{selected}")
    if hit is not None:
        if hit == selected:
            return Gesture(deselect=True, message=f"#{hit} deselected")
        return Gesture(select=hit, message=f"#{hit} selected")
    particle = selected if selected is not None else new_id
    what = "correction" if selected is not None else "new particle"
    return Gesture(edit=Prompt(particle, points=((x, y),), labels=(1,)), message=f"point prompt: {what} #{particle}")


def interpret_box(x0: float, y0: float, x1: float, y1: float, selected: int | None, new_id: int) -> Gesture:
    """A dragged rectangle (any corner order) → box prompt for the selected or a new particle."""
    left, right = sorted((x0, x1))
    top, bottom = sorted((y0, y1))
    if right - left < MIN_BOX_EDGE_PX or bottom - top < MIN_BOX_EDGE_PX:
        return Gesture(message="box too small")
    particle = selected if selected is not None else new_id
    return Gesture(edit=Prompt(particle, box=(left, top, right, bottom)), message=f"box prompt #{particle}")


def interpret_remove(selected: int | None) -> Gesture:
    """The Delete key: remove the selected particle (a message when nothing is selected)."""
    if selected is None:
        return Gesture(message="select a particle to remove")
    return Gesture(edit=RemoveParticle(selected), deselect=True, message=f"removing #{selected}")


def check_edit(edit: ParticleEdit, shape: tuple[int, int] | None) -> str | None:
    """Validate against the frame shape; returns the problem or None if fine."""
    if shape is None:
        return "no frame received yet"
    try:
        validate_edit(edit, shape)
    except PromptError as exc:
        return str(exc)
    return None


def send_edit(sink: PromptSink, edit: ParticleEdit) -> Any:
    """Hand ``edit`` to the matching `PromptSink` method; returns what the sink returns."""
    if isinstance(edit, RemoveParticle):
        return sink.remove(edit.particle)
    return sink.add_prompt(edit.particle, list(edit.points), list(edit.labels), edit.box)


@dataclass(frozen=True, slots=True)
class SendOutcome:
    """How sending one edit went: ``ok`` and the sink's answer or error in ``detail``."""

    edit: ParticleEdit
    ok: bool
    detail: str


class PromptDispatcher:
    """Sends edits to a `PromptSink` on its own thread; outcomes are collected by the GUI timer."""

    def __init__(self, sink: PromptSink) -> None:
        self.sink = sink
        self._todo: queue.Queue[ParticleEdit] = queue.Queue(maxsize=64)
        self._done: queue.Queue[SendOutcome] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sam4em-monitor-prompts", daemon=True)
        self._thread.start()

    def submit(self, edit: ParticleEdit) -> bool:
        """Queue an edit; False if too many are waiting (the channel is stuck)."""
        try:
            self._todo.put_nowait(edit)
        except queue.Full:
            return False
        return True

    def outcomes(self) -> list[SendOutcome]:
        out = []
        while True:
            try:
                out.append(self._done.get_nowait())
            except queue.Empty:
                return out

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                edit = self._todo.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                reply = send_edit(self.sink, edit)
                self._done.put(SendOutcome(edit, True, "" if reply is None else str(reply)[:200]))
            except Exception as exc:
                log.warning("prompt %s failed: %s", edit, exc)
                self._done.put(SendOutcome(edit, False, f"{type(exc).__name__}: {exc}"))
