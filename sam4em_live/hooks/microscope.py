"""Microscope adapters: what hook commands finally act on.

`Microscope` is the seam a vendor adapter implements (Thermo Fisher AutoScript,
JEOL PyJEM, Gatan DM are the next step, see docs/hooks.md). Two adapters ship:

- `DryRunMicroscope` logs every hardware command and keeps the state it would
  have reached (stage offset, beam, recording) -- nothing moves.
- `SimulatedMicroscope` moves the simulator's field of view
  (`SimulatedSource.move_stage`), closing the loop in software.

Prompt and annotation commands act on the running service through
`ServiceControl` in both adapters. Stage moves are relative, in nanometres,
along the image axes: moving the stage by +dx nm shifts the image content by
-dx / pixel_size_nm pixels in x (columns); likewise y (rows).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from sam4em_live.particles import Prompt, RemoveParticle
from sam4em_live.sources.base import MovableStage

if TYPE_CHECKING:
    from sam4em_live.control_api import ServiceControl

logger = logging.getLogger(__name__)


@runtime_checkable
class Microscope(Protocol):
    """An instrument adapter, called from hook threads through the `CommandGate` only.

    Calls are serialised by the gate (never concurrent). Each method either
    completes the action or raises; the gate reports the exception to the hook
    as a failed command. ``describe()`` returns JSON-able identity for logs.
    """

    def describe(self) -> dict[str, Any]: ...

    def move_stage(self, dx_nm: float, dy_nm: float) -> None: ...

    def blank_beam(self) -> None: ...

    def unblank_beam(self) -> None: ...

    def start_recording(self) -> None: ...

    def stop_recording(self) -> None: ...

    def add_prompt(self, prompt: Prompt) -> None: ...

    def remove_prompt(self, particle: int) -> None: ...

    def annotate(self, text: str) -> None: ...


class _ServiceCommands:
    """Prompt/annotation commands forwarded to the service; instrument state kept for inspection."""

    kind = "base"

    def __init__(self, control: ServiceControl | None = None) -> None:
        self.control = control
        self.stage_offset_nm = (0.0, 0.0)
        self.beam_blanked = False
        self.recording = False
        self.history: list[tuple[str, dict[str, Any]]] = []
        self._lock = threading.Lock()

    def describe(self) -> dict[str, Any]:
        return {"adapter": self.kind, "stage_offset_nm": list(self.stage_offset_nm),
                "beam_blanked": self.beam_blanked, "recording": self.recording}

    def _record(self, name: str, **args: Any) -> None:
        with self._lock:
            self.history.append((name, args))

    def add_prompt(self, prompt: Prompt) -> None:
        self._record("add_prompt", particle=prompt.particle)
        # The run's edits log names the hook as the edit's origin.
        self._require_control("add_prompt").submit_edit(dataclasses.replace(prompt, origin="hook"))

    def remove_prompt(self, particle: int) -> None:
        self._record("remove_prompt", particle=particle)
        self._require_control("remove_prompt").submit_edit(RemoveParticle(particle, origin="hook"))

    def annotate(self, text: str) -> None:
        self._record("annotate", text=text)
        self._require_control("annotate").annotate(text)

    def _require_control(self, name: str) -> ServiceControl:
        if self.control is None:
            raise RuntimeError(f"{name}: this adapter is not bound to a running service")
        return self.control

    def blank_beam(self) -> None:
        self._record("blank_beam")
        logger.info("%s microscope: beam blanked", self.kind)
        self.beam_blanked = True

    def unblank_beam(self) -> None:
        self._record("unblank_beam")
        logger.info("%s microscope: beam unblanked", self.kind)
        self.beam_blanked = False

    def start_recording(self) -> None:
        self._record("start_recording")
        logger.info("%s microscope: recording started", self.kind)
        self.recording = True

    def stop_recording(self) -> None:
        self._record("stop_recording")
        logger.info("%s microscope: recording stopped", self.kind)
        self.recording = False


class DryRunMicroscope(_ServiceCommands):
    """Logs hardware commands and tracks the state they would reach; moves nothing."""

    kind = "dry-run"

    def move_stage(self, dx_nm: float, dy_nm: float) -> None:
        self._record("move_stage", dx_nm=dx_nm, dy_nm=dy_nm)
        x, y = self.stage_offset_nm
        self.stage_offset_nm = (x + dx_nm, y + dy_nm)
        logger.info("dry-run microscope: would move stage by (%.1f, %.1f) nm", dx_nm, dy_nm)


class SimulatedMicroscope(_ServiceCommands):
    """Moves the simulated field of view; beam and recording state are kept here.

    ``stage`` is a `MovableStage` source (the simulator, possibly wrapped with a calibration
    override); the simulator shifts its image content by -d / pixel_size_nm pixels.
    """

    kind = "simulated"

    def __init__(self, stage: MovableStage, control: ServiceControl | None = None) -> None:
        super().__init__(control)
        if not isinstance(stage, MovableStage):
            raise TypeError(f"{type(stage).__name__} has no move_stage(dx_nm, dy_nm): not a simulator source")
        self.stage = stage

    def move_stage(self, dx_nm: float, dy_nm: float) -> None:
        self._record("move_stage", dx_nm=dx_nm, dy_nm=dy_nm)
        self.stage.move_stage(dx_nm, dy_nm)
        x, y = self.stage_offset_nm
        self.stage_offset_nm = (x + dx_nm, y + dy_nm)
        logger.debug("simulated microscope: stage moved by (%.1f, %.1f) nm", dx_nm, dy_nm)
