"""Segment a particle on its prompt frame: find it at the particle scale, cut it from its neighbours, fit its edge.

Per-pixel CNR is below 1, so a particle only emerges after averaging: the
window around the prompt is Gaussian-smoothed at the smallest of a few scales at
which the prompt's level stands out of the background noise, where background
and noise are measured on the background itself (`seed_region.robust_background`:
a sigma-clipped mode, the prompt's box left out -- a tight box is mostly particle,
a dense field's window mostly neighbours). The particle is the watershed basin of
the smoothed contrast that holds the prompt (neighbours 2 px away are cut along
the valley between them), bounded by the iso-contour of steepest slope (its edge,
whatever its profile). Where that basin is larger than the particle its centre
responds as (a faint particle in a dense field, merged with its neighbours at the
smoothing it needed), it is cut again: markers from the particle's size (the
scale-normalised LoG, `dense_territory`), borders at a fine scale. The outline is
the smoothed contour or the ellipse, triangle or rectangle fitted to the raw
contrast by matched filtering that explains it better (`outline_fit`). A click far
from its particle's core is also followed up the contrast to the peaks it leads to
(`seed_prompt.click_peaks`), a box alone is also seeded as a click at its centre,
and the candidate whose outline stands out most is kept. A prompt that cannot be
seeded raises `PromptError` naming its particle.
"""

from __future__ import annotations

import contextlib
import functools
import math
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage
from threadpoolctl import ThreadpoolController

from sam4em_live.particles import Prompt, PromptError, has_finite_coordinates, validate_edit
from sam4em_live.segment.base import PromptErrors
from sam4em_live.segment.embedded.seed_frame import SeedFrame, shared_extent
from sam4em_live.segment.embedded.seed_prompt import (
    POINT_REACH_PX,
    box_region,
    click_peaks,
    depth_in_mask,
    edge_contrast,
    frame_polarity,
    moved_click,
    prompt_centre,
    same_particle,
    single_click,
)
from sam4em_live.segment.embedded.seed_region import Territory, filled
from sam4em_live.segment.embedded.seed_window import (
    BOX_SEED_MARGIN_PX,
    SMOOTHING_SCALES,
    TERRITORY_SCALE_FACTOR,
    Seed,
    seed_at_prompt,
    seed_from_mask,
)
from sam4em_live.segment.embedded.shape import body_offsets

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sam4em_live.particles import ParticleEdit
    from sam4em_live.segment.embedded.options import EmbeddedOptions
    from sam4em_live.segment.embedded.window import Window

__all__ = ["Seed", "body_from_seed", "seed_each", "seed_particle", "seed_prompts"]

#: A box's centre seeded as a click counts if this fraction of its seed lies in the box.
BOX_INSIDE_FRACTION = 0.8
#: Two seeds hold a click about as deeply (pixels) when their depths at it differ by less than this.
AMBIGUOUS_DEPTH_PX = 1.0
#: A click followed to a peak must lie this deep (pixels) in the outline seeded there: a seed the click only
#: touches may be the neighbour whose edge is 2 px from the click's corner.
CLICK_DEPTH_PX = 1.2
#: ... or, when nothing is seeded at the click itself and only one particle is this close (pixels), that one.
CLICK_NEAR_PX = 2.0
#: A click outside the outline seeded from its peak still counts within this distance (pixels) when it lies
#: in that particle's basin (`in_basin`): a fitted triangle's corner falls ~5 px short of a rim click at its tip.
CLICK_OUTLINE_REACH_PX = 6.0
#: ... "in the basin": at most this far (pixels) outside the particle's territory, and in no neighbour's.
BASIN_SLACK_PX = 1.5
#: The seed at the click is the peak's particle merged with a neighbour when it holds that seed and is this many
#: times its area ...
MERGED_DIRECT_FACTOR = 1.6
#: ... while the peak's seed stands out (`edge_contrast`) at least this fraction as much.
MERGED_CONTRAST_FRACTION = 0.9


def seed_prompts(pixels: np.ndarray, edits: Sequence[ParticleEdit], options: EmbeddedOptions) -> dict[int, Seed]:
    """Validate every edit of a frame and seed every prompt: ``{id(prompt): Seed}``.

    Every edit is tried before anything is refused, so all the refusals of the frame go back in
    one `PromptErrors` (each `PromptError` naming its particle) and the pipeline tracks the frame
    once more without them -- two passes however many prompts are bad, and seeding stays linear
    in the number of prompts. The prompts share the frame's preparation (`seed_each`).
    """
    seeds, refused = seed_each(pixels, edits, options)
    if refused:
        raise PromptErrors(refused)
    return seeds


def seed_each(pixels: np.ndarray, edits: Sequence[ParticleEdit], options: EmbeddedOptions
              ) -> tuple[dict[int, Seed], list[PromptError]]:
    """Validate every edit of a frame and seed every prompt: (``{id(prompt): Seed}``, the refusals).

    The prompts share the frame's preparation (`prepared_frame`); each refusal names its particle.
    BLAS runs on the calling thread meanwhile (`one_blas_thread`).
    """
    with one_blas_thread():
        return _seed_each(pixels, edits, options)


def _seed_each(pixels: np.ndarray, edits: Sequence[ParticleEdit], options: EmbeddedOptions
               ) -> tuple[dict[int, Seed], list[PromptError]]:
    """`seed_each`, with BLAS on the calling thread."""
    seeds: dict[int, Seed] = {}
    refused: list[PromptError] = []
    shape = (int(pixels.shape[0]), int(pixels.shape[1]))
    valid: list[ParticleEdit] = []
    for edit in edits:
        try:
            validate_edit(edit, shape)
            valid.append(edit)
        except PromptError as exc:
            refused.append(exc if exc.particle is not None else PromptError(str(exc), edit.particle))
    frame = prepared_frame(pixels, [edit for edit in valid if isinstance(edit, Prompt)], options)
    for edit in valid:
        try:
            if isinstance(edit, Prompt):
                seeds[id(edit)] = seed_particle(pixels, edit, options, frame)
        except PromptError as exc:
            refused.append(exc if exc.particle is not None else PromptError(str(exc), edit.particle))
    return seeds, refused


@functools.cache
def _blas() -> ThreadpoolController:
    """The loaded BLAS libraries (found once: a search of the process's libraries costs milliseconds)."""
    import numpy  # noqa: F401  (numpy's BLAS must be loaded to be found)

    return ThreadpoolController().select(user_api="blas")


def one_blas_thread() -> AbstractContextManager[object]:
    """BLAS on the calling thread while a batch is seeded, unless it already is (the service's stage sets it).

    A batch makes thousands of small least-squares fits and products; OpenBLAS splits each between
    its threads, which spin between the calls: 50 prompts took ~1.4x the CPU time and more wall time
    with a second thread than without (`segment.blas_threads`: the service seeds with one already).
    Not `blas_threads.limit_blas_threads`: it searches the process's libraries on every call; calling
    it here instead lost frames beside a live worker (tests/test_seeding_aside.py, 2 of 2 runs, where
    this passed 2 of 2; the search is the likely cause). Here the search is made once (`_blas`).
    """
    if all(library.num_threads == 1 for library in _blas().lib_controllers):
        return contextlib.nullcontext()
    return _blas().limit(limits=1, user_api="blas")


def prepared_frame(pixels: np.ndarray, prompts: Sequence[Prompt], options: EmbeddedOptions) -> SeedFrame:
    """The preparation ``prompts`` share on this frame (`seed_frame.SeedFrame`): its smoothing over their windows.

    Each prompt's windows reach twice ``seed_window_radius_px`` (a point's largest window) or its
    box's window from its centre, and half the base radius more around a peak a click was followed to.
    Prompts need not be validated (`validate_edit`): one without a box or a positive point, or with a
    coordinate that is not a finite number, is left out (its own seeding refuses it, naming its particle;
    the others of the batch go through).
    """
    radius = options.seed_window_radius_px
    usable = [prompt for prompt in prompts
              if (prompt.box is not None or 1 in prompt.labels) and has_finite_coordinates(prompt)]
    windows = [(x, y, max(r, 2 * radius) + radius // 2)
               for x, y, r in (prompt_centre(prompt, options) for prompt in usable)]
    max_scale = options.seed_smoothing_px * max(SMOOTHING_SCALES) * TERRITORY_SCALE_FACTOR
    extent = shared_extent(windows, (int(pixels.shape[0]), int(pixels.shape[1])), max_scale, radius)
    return SeedFrame(pixels, extent, max_scale)


def frame_sign(frame: SeedFrame, options: EmbeddedOptions) -> float:
    """The frame's particle polarity for ``click_peaks``: the options' if set, else read once a frame."""
    if options.polarity in ("dark", "bright"):
        return 1.0 if options.polarity == "dark" else -1.0
    if frame.sign is None:
        frame.sign = frame_polarity(frame.pixels)
    return frame.sign


def seed_particle(pixels: np.ndarray, prompt: Prompt, options: EmbeddedOptions,
                  frame: SeedFrame | None = None) -> Seed:
    """Segment the particle at ``prompt`` on this frame; raise `PromptError` naming its particle if there is none.

    ``frame``: what the prompts of a batch share (`prepared_frame`; `seed_each` prepares it once for all
    prompts of a frame). A prompt the shared smoothing cannot seed is tried once more on its own windows
    (`_seed_particle` with no region), and refused only if that fails too: a window smoothed on its own
    repeats its edge pixels where the frame's crop reads the neighbours beyond it, and on the dense
    field either can miss a rim click or a faint box the other seeds (`docs/benchmarks.md`, "Seeding").
    """
    frame = frame if frame is not None else SeedFrame(pixels)
    try:
        return _seed_particle(pixels, prompt, options, frame)
    except PromptError:
        if frame.extent is None:
            raise
        alone = SeedFrame(pixels)
        alone.sign = frame.sign
        return _seed_particle(pixels, prompt, options, alone)


def _seed_particle(pixels: np.ndarray, prompt: Prompt, options: EmbeddedOptions, frame: SeedFrame) -> Seed:
    """`seed_particle` with the frame's preparation ``frame``.

    A click may be anywhere on the particle. One far from its particle's core (near the rim, in a
    triangle's corner) is also followed up the smoothed contrast to the peaks it can lead to
    (`seed_prompt.click_peaks`: in a dense field a corner's tip can lead to a neighbour as well) and the
    particle is seeded from each; a seed counts if the click lies `CLICK_DEPTH_PX` deep in it, and
    if two particles hold the click about as deeply it is refused ("lost beats wrong"). Among
    these and the seed at the click itself, the one whose outline stands out most from the pixels
    just outside it (`seed_prompt.edge_contrast`: a fragment of the particle has particle outside,
    a seed merged with neighbours has their gaps inside) is the particle.
    """
    if prompt.box is not None and 1 not in prompt.labels:
        return _seed_in_box(pixels, prompt, options, frame)
    click = single_click(prompt)
    peaks = [] if click is None else click_peaks(pixels, prompt, options, frame_sign(frame, options), frame)
    found: list[tuple[float, Seed]] = []
    near: list[Seed] = []  # seeds the click lies just outside of (an undersized rod's rim)
    for peak in peaks:
        if any(depth_in_mask(seed.mask, peak, seed.window.x0, seed.window.y0) > 0
               for seed in [*near, *(held for _, held in found)]):
            continue  # a peak of a particle already seeded
        try:
            seed, territory = seed_at_prompt(pixels, moved_click(prompt, peak), options, frame)
        except PromptError:
            continue
        assert click is not None
        depth = depth_in_mask(seed.mask, click, seed.window.x0, seed.window.y0)
        if depth >= CLICK_DEPTH_PX or (depth >= -CLICK_OUTLINE_REACH_PX and in_basin(territory, click, seed.window)):
            found.append((depth, seed))
        elif depth >= -CLICK_NEAR_PX:
            near.append(seed)
    found.sort(key=lambda held: -held[0])
    first, second = (found[0][1], found[1][1]) if len(found) > 1 else (None, None)
    if (first is not None and second is not None and found[1][0] > found[0][0] - AMBIGUOUS_DEPTH_PX
            and not same_particle(first.mask, (first.window.x0, first.window.y0),
                                  second.mask, (second.window.x0, second.window.y0))):
        assert click is not None
        raise PromptError(f"particle {prompt.particle} at ({click[0]:.1f}, {click[1]:.1f}): the click lies between "
                          f"two particles; click nearer the particle's centre or draw a box", prompt.particle)
    try:
        direct = seed_at_prompt(pixels, prompt, options, frame).seed
    except PromptError:
        if found:
            return found[0][1]
        if len(near) == 1:  # nothing at the click itself, and one particle right beside it: that one
            return near[0]
        raise
    if click is not None and depth_in_mask(direct.mask, click, direct.window.x0, direct.window.y0) < -POINT_REACH_PX:
        if found:
            return found[0][1]
        raise PromptError(f"particle {prompt.particle} at ({click[0]:.1f}, {click[1]:.1f}): the particle found "
                          f"near the click is not under it; click on the particle or draw a box", prompt.particle)
    if not found:
        return direct
    peak_seed = found[0][1]
    contrasts = {id(seed): edge_contrast(seed.window.darkness, seed.mask) for seed in (peak_seed, direct)}
    if (direct.mask.sum() >= MERGED_DIRECT_FACTOR * peak_seed.mask.sum()
            and same_particle(peak_seed.mask, (peak_seed.window.x0, peak_seed.window.y0),
                              direct.mask, (direct.window.x0, direct.window.y0))
            and contrasts[id(peak_seed)] >= MERGED_CONTRAST_FRACTION * contrasts[id(direct)]):
        # The seed at the click holds the peak's particle and as much again: merged with a neighbour across a
        # 2 px gap (its outline hardly stands out less for the gap inside it). A fragment would stand out less.
        return peak_seed
    return max((peak_seed, direct), key=lambda seed: contrasts[id(seed)])


def in_basin(territory: Territory, click: tuple[float, float], window: Window) -> bool:
    """Whether ``click`` (x, y, frame pixels) lies in the particle's basin and in none of its neighbours'.

    The basins split the particles along the valleys between them (`seed_region.particle_territory`,
    `dense_territory`): a click 2 px inside a triangle's tip is in its particle's basin even where
    the outline seeded from the peak rounds the corner off, and in a neighbour's basin, not this
    one's, when the peak it led to is the neighbour's.
    """
    if depth_in_mask(territory.neighbours, click, window.x0, window.y0) > 0:
        return False
    return depth_in_mask(territory.own, click, window.x0, window.y0) >= -BASIN_SLACK_PX


def _seed_in_box(pixels: np.ndarray, prompt: Prompt, options: EmbeddedOptions, frame: SeedFrame) -> Seed:
    """A box alone: seeded in the box's window, and as a click at the box's centre kept to the box.

    In a dense field the background around a box is half neighbours, and the box's own window can
    miss a faint particle or cut it short; the particle the box's centre leads to (`seed_particle`,
    clipped to the box as drawn + `BOX_SEED_MARGIN_PX`, and kept only if `BOX_INSIDE_FRACTION` of it
    was inside) is the other candidate. The one whose outline stands out more (`edge_contrast`) wins.
    """
    assert prompt.box is not None
    bx0, by0, bx1, by1 = prompt.box
    candidates: list[Seed] = []
    refusal: PromptError | None = None
    try:
        candidates.append(seed_at_prompt(pixels, prompt, options, frame).seed)
    except PromptError as exc:
        refusal = exc
    negatives = tuple(p for p, label in zip(prompt.points, prompt.labels, strict=False) if label == 0)
    click = Prompt(prompt.particle, prompt.frame, (((bx0 + bx1) / 2, (by0 + by1) / 2), *negatives),
                   (1, *(0,) * len(negatives)))
    try:
        seed = _seed_particle(pixels, click, options, frame)
        kept = seed.mask & box_region(prompt, seed.mask.shape, seed.window.x0, seed.window.y0, fraction=0.0,
                                      margin_px=BOX_SEED_MARGIN_PX)
        if kept.sum() >= max(6.0, BOX_INSIDE_FRACTION * seed.mask.sum()):
            candidates.append(seed_from_mask(seed.window, filled(kept), seed.polarity, seed.contrast))
    except PromptError:
        pass
    if not candidates:
        assert refusal is not None
        raise refusal
    return max(candidates, key=lambda seed: edge_contrast(seed.window.darkness, seed.mask))


def body_from_seed(seed: Seed) -> tuple[np.ndarray, np.ndarray]:
    """The seed's contrast and mask warped into the body frame of its pose (grid sized for the particle)."""
    half = int(math.ceil(1.3 * seed.radius_px + 6))
    u, v = body_offsets(half)
    t = math.radians(seed.angle_deg)
    c, s = math.cos(t), math.sin(t)
    cols = seed.x - seed.window.x0 + u * c - v * s
    rows = seed.y - seed.window.y0 + u * s + v * c
    appearance = ndimage.map_coordinates(seed.window.darkness, [rows, cols], order=1, cval=0.0)
    mask = ndimage.map_coordinates(seed.mask.astype(np.float32), [rows, cols], order=1, cval=0.0) > 0.5
    return appearance.astype(np.float32), mask
