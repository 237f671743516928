"""`TrackerWidget`: prompt particles by clicking on a frame, see their masks at once, track, plot.

The notebook face of the SAM4EM workflow (issue 20): pick a particle id, click a point (shift-click or the
"negative" toggle for background), drag a box; the chosen backend seeds on that frame in the kernel and the
mask is drawn over the frame. Prompts on later frames correct a particle, "remove" stops it from a frame on.
"Track" runs `sam4em_live.track` with those prompts on a worker thread with a progress bar; then the tracked
masks follow the frame slider, trajectories are drawn, and the ticked statistics (`sam4em_live.analyze`'s
figures) appear below. Everything the browser shows is computed here; ``widget.js`` only draws and sends
clicks (coordinates in frame pixels, x = column, y = row).
"""

from __future__ import annotations

import base64
import contextlib
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anywidget
import numpy as np
import traitlets

from sam4em_live.notebook.display import Contrast, label_overlay, mask_crop, png_bytes, stretch
from sam4em_live.notebook.frame_access import FrameAccess
from sam4em_live.notebook.prompt_book import PromptBook
from sam4em_live.notebook.seed_preview import SeedPreview
from sam4em_live.notebook.tracking_job import (
    STATISTICS,
    TrackingJob,
    TrackRequest,
    statistics_pngs,
    trajectories_table,
)
from sam4em_live.particles import ParticleMask, Prompt, RemoveParticle

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Mapping

    from sam4em_live.api import Analysis, Run
    from sam4em_live.particles import ParticleEdit


class TrackerWidget(anywidget.AnyWidget):
    """A frame viewer to prompt, track and analyse particles in a notebook.

    Parameters
    ----------
    source
        Frames: an array ``(T, rows, columns)``, a clip from `sam4em_live.simulate`, or a recording path.
    backend, options
        The segmenter (`sam4em_live.segmenters()`; default the embedded CPU backend) and its options.
    fps, pixel_size_nm
        Calibration when the frames do not carry it (time in frames and lengths in pixels otherwise).
    prompts
        Prompts to start from (`sam4em_live.Point` / `Box` / `Remove`, e.g. ``clip.prompts``).
    """

    _esm = Path(__file__).with_name("widget.js")
    _css = Path(__file__).with_name("widget.css")

    image = traitlets.Bytes(b"").tag(sync=True)  # the frame, contrast applied, PNG
    masks = traitlets.Bytes(b"").tag(sync=True)  # the frame's masks, RGBA PNG (transparent background), cropped
    masks_origin = traitlets.List([0, 0]).tag(sync=True)  # where the crop's top-left pixel goes (x0, y0)
    answered = traitlets.Int(0).tag(sync=True)  # the browser's edit id the current masks answer
    rows = traitlets.Int(0).tag(sync=True)
    cols = traitlets.Int(0).tag(sync=True)
    frame = traitlets.Int(0).tag(sync=True)
    n_frames = traitlets.Int(1).tag(sync=True)
    low_pct = traitlets.Float(1.0).tag(sync=True)
    high_pct = traitlets.Float(99.5).tag(sync=True)
    gamma = traitlets.Float(1.0).tag(sync=True)
    particle = traitlets.Int(1).tag(sync=True)
    negative = traitlets.Bool(False).tag(sync=True)
    prompts: traitlets.List[dict[str, object]] = traitlets.List().tag(sync=True)  # every (particle, frame) prompt, for the markers
    particles: traitlets.List[dict[str, object]] = traitlets.List().tag(sync=True)  # the prompt book's summary, one row per particle
    show_tracked = traitlets.Bool(True).tag(sync=True)
    phase = traitlets.Unicode("prompting").tag(sync=True)  # prompting | tracking | tracked | error
    progress = traitlets.Float(0.0).tag(sync=True)
    message = traitlets.Unicode("").tag(sync=True)
    seed_ms = traitlets.Float(0.0).tag(sync=True)  # kernel time of the last preview
    mask_pixels = traitlets.Int(0).tag(sync=True)  # mask pixels drawn on the current frame
    trajectories = traitlets.Dict().tag(sync=True)  # particle -> {"frame", "x", "y"} after a run
    statistics = traitlets.Dict(dict(STATISTICS)).tag(sync=True)  # name -> label, the choices
    ticked = traitlets.List(["tmsd"]).tag(sync=True)
    figures = traitlets.Dict().tag(sync=True)  # name -> base64 PNG
    display_px = traitlets.Int(640).tag(sync=True)  # the frame's width on screen (CSS px)

    # Class-level defaults: a constructor that fails (frames it cannot read) still gets `close` from
    # ipywidgets' __del__, which must then find nothing to release.
    _job: TrackingJob | None = None
    _release_frames: Callable[[], None] | None = None

    def __init__(self, source: object, *, backend: str | None = None, options: Mapping[str, object] | None = None,
                 fps: float | None = None, pixel_size_nm: float | None = None,
                 prompts: Iterable[ParticleEdit] = (), display_px: int = 640, **kwargs: Any) -> None:
        self._frames = FrameAccess(source)
        self._release_frames = self._frames.close
        self._preview = SeedPreview(backend, options)
        # the frames' own calibration (a simulated clip's, a recording's metadata) unless overridden
        known = self._frames.calibration
        self._request = TrackRequest((), backend, dict(options or {}), fps if fps is not None else known.fps,
                                     pixel_size_nm if pixel_size_nm is not None else known.pixel_size_nm)
        self._previews: dict[tuple[int, int], ParticleMask] = {}
        self._lock = threading.RLock()  # the comm thread and the tracking thread both redraw
        self._seed_ms = 0.0
        self.analysis: Analysis | None = None
        rows, cols = self._frames.shape
        self._book = PromptBook((rows, cols))
        super().__init__(rows=rows, cols=cols, n_frames=len(self._frames), display_px=display_px, **kwargs)
        self.on_msg(self._on_browser_message)
        for edit in prompts:
            self._apply(edit)
        self._redraw(image=True)

    # ------------------------------------------------------------------ the Python face (also the buttons')

    def add_point(self, x: float, y: float, *, particle: int | None = None, frame: int | None = None,
                  negative: bool = False) -> int:
        """Add a point (x = column, y = row, px) for ``particle`` on ``frame`` (default: the widget's); the mask's pixels."""
        particle, frame = self._target(particle, frame)
        self._book.add_point(particle, frame, x, y, positive=not negative)
        return self._reseed(particle, frame)

    def add_box(self, x0: float, y0: float, x1: float, y1: float, *, particle: int | None = None,
                frame: int | None = None) -> int:
        """Set the box (top-left, bottom-right, px) of ``particle`` on ``frame``; the mask's pixels."""
        particle, frame = self._target(particle, frame)
        self._book.set_box(particle, frame, (x0, y0, x1, y1))
        return self._reseed(particle, frame)

    def clear_prompt(self, *, particle: int | None = None, frame: int | None = None) -> None:
        """Forget ``particle``'s prompt on ``frame`` (to redo it)."""
        particle, frame = self._target(particle, frame)
        self._book.clear(particle, frame)
        self._previews.pop((particle, frame), None)
        self._redraw()

    def remove_particle(self, particle: int | None = None, *, frame: int | None = None) -> None:
        """Stop tracking ``particle`` from ``frame`` on (its prompts there and later are dropped)."""
        particle, frame = self._target(particle, frame)
        self._book.remove(particle, frame)
        for key in [k for k in self._previews if k[0] == particle and k[1] >= frame]:
            del self._previews[key]
        self._redraw()

    def new_particle(self) -> int:
        """Select a fresh particle id (one above every id in use) and return it."""
        self.particle = max([0, *self._book.particles(), *(int(p) for p in self.trajectories)]) + 1
        return self.particle

    @property
    def edits(self) -> list[ParticleEdit]:
        """The prompts and removals "Track" will run with (the package's own records)."""
        return self._book.edits()

    def track(self, *, wait: bool = False) -> TrackingJob:
        """Run the pipeline with the current prompts (on a thread; ``wait=True`` blocks until it ends)."""
        if self._job is not None and self._job.running:
            raise RuntimeError("a run is already going")
        edits = tuple(self._book.edits())
        if not any(isinstance(e, Prompt) for e in edits):
            raise ValueError("nothing to track: click on a particle (or drag a box) first")
        request = TrackRequest(edits, self._request.backend, self._request.options, self._request.fps,
                               self._request.pixel_size_nm)
        self.phase, self.progress, self.message = "tracking", 0.0, f"tracking {len(self._frames)} frames..."
        self._job = TrackingJob(self._frames, request, self._set_progress, self._tracked).start()
        if wait:
            self._job.wait()
        return self._job

    def wait(self, timeout_s: float | None = None) -> Run:
        """Block until the current run ends; its `Run` (or the error it failed with, raised)."""
        if self._job is None:
            raise RuntimeError("no run started: press Track or call track()")
        return self._job.wait(timeout_s)

    @property
    def run(self) -> Run | None:
        """The last finished run (`sam4em_live.Run`: trajectories, masks, calibration), None before one."""
        return self._job.run if self._job is not None else None

    def close(self) -> None:
        if self._job is not None and self._job.run is not None:
            self._job.run.close()
        if self._release_frames is not None:
            self._release_frames()
            self._release_frames = None
        super().close()

    # ------------------------------------------------------------------ internals

    def _target(self, particle: int | None, frame: int | None) -> tuple[int, int]:
        particle = self.particle if particle is None else int(particle)
        frame = self.frame if frame is None else int(frame)
        if particle < 1:
            raise ValueError(f"particle ids start at 1, got {particle}")
        if not 0 <= frame < len(self._frames):
            raise ValueError(f"frame {frame} outside 0-{len(self._frames) - 1}")
        return particle, frame

    def _apply(self, edit: ParticleEdit) -> None:
        frame = 0 if edit.frame is None else edit.frame
        if isinstance(edit, RemoveParticle):
            self._book.remove(edit.particle, frame)
            return
        for (x, y), label in zip(edit.points, edit.labels, strict=True):
            self._book.add_point(edit.particle, frame, x, y, positive=bool(label))
        if edit.box is not None:
            self._book.set_box(edit.particle, frame, edit.box)
        self._seed(edit.particle, frame)

    def _seed(self, particle: int, frame: int) -> None:
        entry = self._book.at(particle, frame)
        if entry is None or not entry.usable:
            self._previews.pop((particle, frame), None)
            return
        result = self._preview.seed(np.asarray(self._frames[frame]), entry)
        self._previews[(particle, frame)] = ParticleMask.from_full(particle, result.mask, result.score)
        self._seed_ms = round(result.seconds * 1000.0, 1)  # sent with the redraw, in the same message

    def _reseed(self, particle: int, frame: int) -> int:
        self._seed(particle, frame)
        if frame != self.frame:
            self.frame = frame  # redraws through the observer
        else:
            self._redraw()
        preview = self._previews.get((particle, frame))
        return int(preview.crop.sum()) if preview is not None and preview.crop is not None else 0

    def _labels(self, frame: int) -> np.ndarray:
        """The label image drawn on ``frame``: the run's masks, then this frame's previews over them."""
        labels = np.zeros((self.rows, self.cols), dtype=np.uint16)
        run = self.run
        if run is not None and self.show_tracked and run.masks is not None:
            with contextlib.suppress(KeyError):  # a frame the run wrote no page for: no masks drawn
                labels = np.array(run.masks.at_frame(frame), dtype=np.uint16)
        for (particle, at), preview in self._previews.items():
            if at == frame:
                labels[preview.to_full((self.rows, self.cols))] = particle
        return labels

    def _redraw(self, *, image: bool = False, answered: int | None = None) -> None:
        with self._lock:
            frame = self.frame
            labels = self._labels(frame)
            with self.hold_sync():  # one message: the frame, its masks and the markers arrive together
                if image:
                    contrast = Contrast(self.low_pct, self.high_pct, self.gamma)
                    self.image = png_bytes(stretch(np.asarray(self._frames[frame]), contrast))
                self.mask_pixels = int(np.count_nonzero(labels))
                crop, origin = mask_crop(labels)
                self.masks, self.masks_origin = png_bytes(label_overlay(crop)), list(origin)
                self.prompts = [p.as_dict() for p in self._book.prompts()]
                self.particles = self._book.summary()
                if answered is not None:
                    self.answered = answered
                self.seed_ms = self._seed_ms

    @traitlets.observe("frame", "low_pct", "high_pct", "gamma")
    def _on_view_change(self, change: dict[str, Any]) -> None:
        try:
            self._redraw(image=True)
        except ValueError as error:  # an impossible contrast window from the sliders: say so, keep the frame
            self.message = str(error)

    @traitlets.observe("show_tracked")
    def _on_show_tracked(self, change: dict[str, Any]) -> None:
        self._redraw()

    @traitlets.observe("ticked")
    def _on_ticked(self, change: dict[str, Any]) -> None:
        if self.analysis is not None:
            self._draw_statistics()

    def _set_progress(self, fraction: float) -> None:
        self.progress = round(fraction, 3)

    def _tracked(self, job: TrackingJob) -> None:
        """Called on the tracking thread when the run ends (or fails)."""
        if job.error is not None:
            self.phase, self.message = "error", f"tracking failed: {job.error}"
            return
        from sam4em_live.api import analyze

        assert job.run is not None
        try:
            self.trajectories = trajectories_table(job.run.trajectories)
            self.analysis = analyze(job.run)
            self._draw_statistics()
        except Exception as error:  # the run stands; the statistics could not be drawn (e.g. too few frames)
            self.message = f"tracked; statistics failed: {error}"
        else:
            n = len(self.trajectories)
            self.message = f"tracked {n} particle{'s' if n != 1 else ''} over {len(self._frames)} frames"
        self._redraw()
        self.phase = "tracked"

    def _draw_statistics(self) -> None:
        assert self.analysis is not None
        pngs = statistics_pngs(self.analysis, self.ticked)
        self.figures = {name: base64.b64encode(png).decode("ascii") for name, png in pngs.items()}

    def _on_browser_message(self, widget: object, content: dict[str, Any], buffers: list[bytes]) -> None:
        """A click, drag or button in the browser (coordinates in frame pixels)."""
        kind = content.get("kind")
        try:
            if kind == "point":
                self._book.add_point(self.particle, self.frame, float(content["x"]), float(content["y"]),
                                     positive=not bool(content.get("negative")))
                self._seed(self.particle, self.frame)
            elif kind == "box":
                self._book.set_box(self.particle, self.frame, (float(content["x0"]), float(content["y0"]),
                                                               float(content["x1"]), float(content["y1"])))
                self._seed(self.particle, self.frame)
            elif kind == "clear":
                self.clear_prompt()
            elif kind == "remove":
                self.remove_particle()
            elif kind == "new_particle":
                self.new_particle()
            elif kind == "track":
                self.track()
                return
            self._redraw(answered=int(content.get("id", 0)))
        except Exception as error:  # a refused prompt or a backend failure is shown, not lost in the comm
            self.message = f"{kind}: {error}"
            self._redraw(answered=int(content.get("id", 0)))
