"""The mask a prompt gives, at once: the chosen backend seeded on one frame in the kernel.

Seeding a fresh segmenter on the clicked frame is exactly what the run does at that prompt's frame, so the
preview is the mask tracking will start from. ``window_px`` (off by default) seeds on a window around the
prompt instead (at least ``window_px`` square, larger for a large box): faster for a backend whose seeding
cost grows with the frame, but not identical — the backend's background estimate then sees less of the frame
(a few percent of the mask's pixels differ in tests/test_notebook_widget.py). At 1024² the embedded
backend's seeding is local enough that the window saved nothing, so the default seeds on the whole frame.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sam4em_live.frames import Frame
from sam4em_live.particles import Prompt
from sam4em_live.segment.registry import create_segmenter

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sam4em_live.notebook.prompt_book import FramePrompt


@dataclass(frozen=True, slots=True)
class SeedResult:
    """One preview: the particle's full-frame boolean mask, the backend's score, and how long it took (s)."""

    particle: int
    mask: np.ndarray
    score: float
    seconds: float

    @property
    def pixels(self) -> int:
        return int(self.mask.sum())


def window_around(prompt: FramePrompt, shape: tuple[int, int], window_px: int | None) -> tuple[int, int, int, int]:
    """The (x0, y0, x1, y1) half-open pixel window to seed on: the prompt's extent plus margin, clipped."""
    rows, cols = shape
    if window_px is None:
        return 0, 0, cols, rows
    xs = [p[0] for p in prompt.points] + ([prompt.box[0], prompt.box[2]] if prompt.box else [])
    ys = [p[1] for p in prompt.points] + ([prompt.box[1], prompt.box[3]] if prompt.box else [])
    cx, cy = (min(xs) + max(xs)) / 2.0, (min(ys) + max(ys)) / 2.0
    # the window holds the prompt's extent twice over, so a box's particle has background all round it
    width = min(cols, max(window_px, int(2 * (max(xs) - min(xs))) + 64))
    height = min(rows, max(window_px, int(2 * (max(ys) - min(ys))) + 64))
    x0 = int(np.clip(round(cx - width / 2), 0, cols - width))
    y0 = int(np.clip(round(cy - height / 2), 0, rows - height))
    return x0, y0, x0 + width, y0 + height


class SeedPreview:
    """Seeds ``backend`` (a name in the segmenter registry) on single frames for the widget's previews."""

    def __init__(self, backend: str | None = None, options: Mapping[str, object] | None = None,
                 window_px: int | None = None) -> None:
        self.backend = backend
        self.options = dict(options or {})
        self.window_px = window_px
        self._warm_up()  # a wrong name or option fails here, not on a click

    def _warm_up(self) -> None:
        """Seed once on a small synthetic disk: the backend's first call pays its one-off costs here."""
        rows, cols = np.mgrid[0:96, 0:96]
        disk = np.where((rows - 48) ** 2 + (cols - 48) ** 2 <= 100, 60, 100).astype(np.uint16)
        segmenter = create_segmenter(self.backend, self.options)
        try:
            segmenter.track(Frame("notebook-warm-up", 0, time.time(), disk),
                            [Prompt(1, 0, ((48.0, 48.0),), (1,), origin="notebook")])
        finally:
            segmenter.close()

    def seed(self, pixels: np.ndarray, prompt: FramePrompt) -> SeedResult:
        """The mask of ``prompt``'s particle on the frame ``pixels`` (rows, columns)."""
        started = time.perf_counter()
        shape = (int(pixels.shape[0]), int(pixels.shape[1]))
        x0, y0, x1, y1 = window_around(prompt, shape, self.window_px)
        local = Prompt(prompt.particle, 0,
                       tuple((x - x0, y - y0) for x, y in prompt.points), prompt.labels,
                       None if prompt.box is None else (prompt.box[0] - x0, prompt.box[1] - y0,
                                                        prompt.box[2] - x0, prompt.box[3] - y0),
                       origin="notebook")
        # a fresh segmenter per preview: seeding must not inherit another frame's memory
        segmenter = create_segmenter(self.backend, self.options)
        try:
            window = np.ascontiguousarray(pixels[y0:y1, x0:x1])
            masks = segmenter.track(Frame("notebook-preview", 0, time.time(), window), [local])
        finally:
            segmenter.close()
        full = np.zeros(shape, dtype=bool)
        score = 0.0
        for answer in masks:
            if answer.particle == prompt.particle and answer.present:
                full[y0:y1, x0:x1] = answer.to_full(window.shape[:2])
                score = float(answer.score)
        return SeedResult(prompt.particle, full, score, time.perf_counter() - started)
