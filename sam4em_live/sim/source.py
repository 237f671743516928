"""The LPTEM simulator as a `FrameSource`: frames rendered on the fly, nothing written.

Frames are paced at the preset's (or the given) ``fps`` unless
``as_fast_as_possible``. The stage can be moved from any thread with
`SimulatedSource.move_stage`, which shifts the field of view: particles then
appear displaced by −d in the following frames, as on a microscope. The exact
ground truth of the last emitted frame is kept in `SimulatedSource.last_truth`.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import TYPE_CHECKING

from sam4em_live.frames import Frame, SeriesInfo
from sam4em_live.sim.presets import get_preset
from sam4em_live.sim.video import SimulationRun, StageOffset, calibration_of
from sam4em_live.sources.base import EndOfStream, SourceCounters

if TYPE_CHECKING:
    from sam4em_live.sim.render import RenderedFrame
    from sam4em_live.sim.spec import SimulationSpec


class SimulatedSource:
    """Simulated detector (see module docstring).

    Parameters
    ----------
    spec_or_preset
        A `SimulationSpec` or a preset name (`sam4em_live.sim.presets.PRESETS`).
    seed
        Random seed; the same seed gives the same frames (with the same stage moves).
    n_frames
        Frames before `EndOfStream`; ``None`` streams forever.
    fps
        Emission (playback) rate in frames/s; ``None`` = the spec's ``imaging.fps``.
        The frames' calibration always carries the spec's physical fps — the
        motion was simulated with that frame interval — so statistics in
        seconds stay right when playback is slowed down or sped up.
    as_fast_as_possible
        Emit each frame as soon as it is rendered.
    measure_contrast
        Compute each frame's CNR/SNR (kept in `last_truth`); off by default because it costs
        several ms per 1024² frame.
    """

    def __init__(
        self,
        spec_or_preset: SimulationSpec | str,
        seed: int = 0,
        n_frames: int | None = None,
        fps: float | None = None,
        as_fast_as_possible: bool = False,
        measure_contrast: bool = False,
    ) -> None:
        self.spec = get_preset(spec_or_preset) if isinstance(spec_or_preset, str) else spec_or_preset
        if fps is not None and fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        if n_frames is not None and n_frames < 1:
            raise ValueError(f"n_frames must be >= 1, got {n_frames}")
        self.seed = int(seed)
        self.n_frames = n_frames
        self.fps = float(fps) if fps is not None else float(self.spec.imaging.fps)
        self.as_fast_as_possible = as_fast_as_possible
        self.measure_contrast = measure_contrast
        self.counters = SourceCounters()
        self._stage = StageOffset()
        self._run: SimulationRun | None = None
        self._series: SeriesInfo | None = None
        self._pending: RenderedFrame | None = None
        self._next_due_s = 0.0
        self._truth_lock = threading.Lock()
        self._last_truth: RenderedFrame | None = None
        self.calibration = calibration_of(self.spec)

    @property
    def series(self) -> SeriesInfo | None:
        return self._series

    @property
    def stage_position_nm(self) -> tuple[float, float]:
        """Stage (x, y) in nm relative to where the source started."""
        return self._stage.position_nm

    def move_stage(self, dx_nm: float, dy_nm: float) -> None:
        """Shift the field of view by (dx, dy) nm; thread-safe, applies from the next rendered frame."""
        self._stage.move(dx_nm, dy_nm)

    @property
    def last_truth(self) -> RenderedFrame | None:
        """Ground truth (labels, truth rows, CNR) of the last emitted frame, in its frame's pixels."""
        with self._truth_lock:
            return self._last_truth

    def open(self) -> None:
        self._run = SimulationRun(self.spec, self.seed, self.n_frames, contrast=self.measure_contrast)
        rows, cols = self._run.renderer.shape
        dtype = {"uint16": "<u2", "uint8": "|u1", "float32": "<f4"}[self.spec.imaging.output_dtype]
        metadata = {
            "source": "simulator", "simulated": True, "preset": self.spec.name, "seed": self.seed,
            "description": self.spec.description, "particles": len(self.spec.particles),
            "playback_fps": None if self.as_fast_as_possible else self.fps,
        }
        series_id = f"sim-{self.spec.name}-s{self.seed}-{uuid.uuid4().hex[:8]}"
        # Time base: the spec's fps (always known); unpaced, no camera rate or latency to report.
        self._series = SeriesInfo(series_id, (rows, cols), dtype, self.calibration, metadata,
                                  live=not self.as_fast_as_possible)
        self.counters.series_started += 1
        self._next_due_s = time.monotonic()

    def next_frame(self, timeout_s: float) -> Frame | None:
        if self._run is None or self._series is None:
            raise RuntimeError("SimulatedSource.next_frame called before open()")
        if self._pending is None:
            ox, oy = self._stage.position_nm
            px = self.spec.imaging.pixel_size_nm
            self._pending = self._run.next_frame((ox / px, oy / px))
            if self._pending is None:
                self.counters.series_ended += 1
                raise EndOfStream(f"simulator: {self.n_frames} frames done")
        if not self.as_fast_as_possible:
            wait = self._next_due_s - time.monotonic()
            if wait > timeout_s:
                time.sleep(max(timeout_s, 0.0))
                return None
            if wait > 0:
                time.sleep(wait)
            # Pace from the later of the schedule and now: a slow consumer gets no burst afterwards.
            self._next_due_s = max(self._next_due_s, time.monotonic() - 1.0 / self.fps) + 1.0 / self.fps
        rendered, self._pending = self._pending, None
        with self._truth_lock:
            self._last_truth = rendered
        self.counters.frames += 1
        return Frame(self._series.series_id, rendered.index, time.time(), rendered.pixels, self.calibration)

    def close(self) -> None:
        self._run = None
        self._pending = None
