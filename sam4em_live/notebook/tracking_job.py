"""The widget's "Track": `sam4em_live.track` on a worker thread, then the statistics the user ticked.

The kernel stays free while it runs (the widget keeps answering the slider), progress is reported per frame
pulled, and an error is carried back to the owner (`TrackingJob.wait` re-raises it), never lost in a thread.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    import pandas as pd

    from sam4em_live.api import Analysis, Run
    from sam4em_live.notebook.frame_access import FrameAccess
    from sam4em_live.particles import ParticleEdit

#: The statistics a user can tick, by `sam4em_live.analyze` figure name, with the widget's labels.
STATISTICS: dict[str, str] = {
    "tmsd": "tMSD (D, α fits)",
    "displacements": "displacement PDFs",
    "velocity_autocorrelation": "C_v",
    "trajectories": "trajectories",
}


@dataclass(frozen=True, slots=True)
class TrackRequest:
    """Everything one run needs, fixed when "Track" is pressed."""

    edits: tuple[ParticleEdit, ...]
    backend: str | None = None
    options: Mapping[str, object] = field(default_factory=dict)
    fps: float | None = None
    pixel_size_nm: float | None = None


def figure_png(analysis: Analysis, name: str, dpi: int = 80) -> bytes:
    """``analysis``'s figure ``name`` rendered to PNG bytes (the widget shows images, not live figures)."""
    buffer = io.BytesIO()
    analysis.figure(name).savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def trajectories_table(trajectories: pd.DataFrame) -> dict[str, dict[str, list[float]]]:
    """Per particle id (as a string: JSON keys), its ``frame``, ``x`` and ``y`` lists (px) for drawing."""
    table: dict[str, dict[str, list[float]]] = {}
    if trajectories.empty:
        return table
    for particle, rows in trajectories.sort_values("frame").groupby("particle"):
        table[str(particle)] = {"frame": [int(f) for f in rows["frame"]],
                                     "x": [round(float(v), 2) for v in rows["x"]],
                                     "y": [round(float(v), 2) for v in rows["y"]]}
    return table


class TrackingJob:
    """One run of the pipeline over ``frames`` on a daemon thread; ``on_progress(fraction)`` as frames go in."""

    def __init__(self, frames: FrameAccess, request: TrackRequest,
                 on_progress: Callable[[float], None], on_done: Callable[[TrackingJob], None]) -> None:
        self.request = request
        self.run: Run | None = None
        self.error: BaseException | None = None
        self._frames = frames
        self._on_progress = on_progress
        self._on_done = on_done
        self._thread = threading.Thread(target=self._work, name="sam4em-notebook-track", daemon=True)

    def start(self) -> TrackingJob:
        self._thread.start()
        return self

    @property
    def running(self) -> bool:
        return self._thread.is_alive()

    def wait(self, timeout_s: float | None = None) -> Run:
        """Block until the run ends; the `Run`, or the error it failed with raised here."""
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            raise TimeoutError(f"tracking still running after {timeout_s} s")
        if self.error is not None:
            raise self.error
        assert self.run is not None
        return self.run

    def _work(self) -> None:
        from sam4em_live.api import track

        n_frames = len(self._frames)
        step = max(1, n_frames // 100)  # at most ~100 progress updates, whatever the length

        def pulled(k: int) -> None:
            if k % step == 0:
                self._on_progress(k / n_frames)

        try:
            self.run = track(self._frames.counted(pulled), list(self.request.edits),
                             backend=self.request.backend, options=dict(self.request.options) or None,
                             fps=self.request.fps, pixel_size_nm=self.request.pixel_size_nm, progress=False)
            self._on_progress(1.0)
        except BaseException as error:  # carried to the owner: shown in the widget, raised by wait()
            self.error = error
        finally:
            self._on_done(self)


def statistics_pngs(analysis: Analysis, names: Sequence[str]) -> dict[str, bytes]:
    """The ticked figures of ``analysis`` as PNG bytes, by name, in `STATISTICS` order."""
    return {name: figure_png(analysis, name) for name in STATISTICS if name in names}
