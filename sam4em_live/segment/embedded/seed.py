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

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from sam4em_live.particles import Prompt, PromptError, validate_edit
from sam4em_live.segment.base import PromptErrors
from sam4em_live.segment.embedded.dense_territory import blob_size, marked_territory, merged_region
from sam4em_live.segment.embedded.outline_fit import seed_outline
from sam4em_live.segment.embedded.seed_prompt import (
    POINT_REACH_PX,
    box_region,
    click_peaks,
    depth_in_mask,
    drawn_bounds,
    edge_contrast,
    exclude_negatives,
    moved_click,
    prompt_centre,
    prompt_level,
    reaches_a_click,
    same_particle,
    single_click,
    touches_edge,
)
from sam4em_live.segment.embedded.seed_region import (
    REGION_FRACTION,
    Background,
    Territory,
    coarse_territory,
    component_at,
    edge_threshold,
    filled,
    flattened,
    noise_gain,
    robust_background,
    smoothed,
    white_noise_after,
)
from sam4em_live.segment.embedded.shape import body_offsets
from sam4em_live.segment.embedded.window import Window, frame_window, robust_noise

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sam4em_live.particles import ParticleEdit
    from sam4em_live.segment.embedded.options import EmbeddedOptions

#: A box-prompted seed stays within the box as drawn plus this margin (pixels).
BOX_SEED_MARGIN_PX = 2.0
#: Multiples of ``seed_smoothing_px`` tried in turn until the particle clears the noise: from 1 px (a
#: contrasty particle keeps sharp edges and stays apart from a neighbour 2 px away) to 20 px (a faint one).
SMOOTHING_SCALES = (0.25, 0.5, 1.0, 1.5, 2.25, 3.4, 5.0)
#: A scale is fine enough to segment at when the prompt stands this many times ``seed_min_snr`` out.
SEGMENT_SNR_FACTOR = 2.0
#: Noise sigmas by which the strongest pixel near a click exceeds the particle's level (a max of ~80 values).
LEVEL_NOISE_LIFT = 2.0
#: The particle's territory (neighbours cut off) is found at this multiple of the segmentation scale.
TERRITORY_SCALE_FACTOR = 2.0
#: A box's centre seeded as a click counts if this fraction of its seed lies in the box.
BOX_INSIDE_FRACTION = 0.8
#: Two seeds hold a click about as deeply (pixels) when their depths at it differ by less than this.
AMBIGUOUS_DEPTH_PX = 1.0
#: A click followed to a peak must lie this deep (pixels) in the outline seeded there: a seed the click only
#: touches may be the neighbour whose edge is 2 px from the click's corner.
CLICK_DEPTH_PX = 1.2
#: ... or, when nothing is seeded at the click itself and only one particle is this close (pixels), that one.
CLICK_NEAR_PX = 2.0
#: Fewest background pixels outside a box; a box that fills its window falls back to the whole window.
MIN_BACKGROUND_PX = 200


@dataclass(frozen=True, slots=True)
class Seed:
    """A particle segmented on its prompt frame."""

    x: float  # centroid, frame pixels
    y: float
    angle_deg: float  # major axis, measure.py convention
    polarity: float  # +1 dark particle, -1 bright
    window: Window
    mask: np.ndarray  # bool, on the window
    contrast: float  # peak relative contrast of the smoothed particle
    radius_px: float  # largest distance of a mask pixel from the centroid


def seed_prompts(pixels: np.ndarray, edits: Sequence[ParticleEdit], options: EmbeddedOptions) -> dict[int, Seed]:
    """Validate every edit of a frame and seed every prompt: ``{id(prompt): Seed}``.

    Every edit is tried before anything is refused, so all the refusals of the frame go back in
    one `PromptErrors` (each `PromptError` naming its particle) and the pipeline tracks the frame
    once more without them -- two passes however many prompts are bad, and seeding stays linear
    in the number of prompts.
    """
    seeds: dict[int, Seed] = {}
    refused: list[PromptError] = []
    shape = (int(pixels.shape[0]), int(pixels.shape[1]))
    for edit in edits:
        try:
            validate_edit(edit, shape)
            if isinstance(edit, Prompt):
                seeds[id(edit)] = seed_particle(pixels, edit, options)
        except PromptError as exc:
            refused.append(exc if exc.particle is not None else PromptError(str(exc), edit.particle))
    if refused:
        raise PromptErrors(refused)
    return seeds


def seed_particle(pixels: np.ndarray, prompt: Prompt, options: EmbeddedOptions) -> Seed:
    """Segment the particle at ``prompt`` on this frame; raise `PromptError` naming its particle if there is none.

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
        return _seed_in_box(pixels, prompt, options)
    click = single_click(prompt)
    peaks = [] if click is None else click_peaks(pixels, prompt, options)
    found: list[tuple[float, Seed]] = []
    near: list[Seed] = []  # seeds the click lies just outside of (an undersized rod's rim)
    for peak in peaks:
        if any(depth_in_mask(seed.mask, peak, seed.window.x0, seed.window.y0) > 0
               for seed in [*near, *(held for _, held in found)]):
            continue  # a peak of a particle already seeded
        try:
            seed = _seed_at_prompt(pixels, moved_click(prompt, peak), options)
        except PromptError:
            continue
        assert click is not None
        depth = depth_in_mask(seed.mask, click, seed.window.x0, seed.window.y0)
        if depth >= CLICK_DEPTH_PX:
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
        direct = _seed_at_prompt(pixels, prompt, options)
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
    return max((found[0][1], direct), key=lambda seed: edge_contrast(seed.window.darkness, seed.mask))


def _seed_in_box(pixels: np.ndarray, prompt: Prompt, options: EmbeddedOptions) -> Seed:
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
        candidates.append(_seed_at_prompt(pixels, prompt, options))
    except PromptError as exc:
        refusal = exc
    negatives = tuple(p for p, label in zip(prompt.points, prompt.labels, strict=False) if label == 0)
    click = Prompt(prompt.particle, prompt.frame, (((bx0 + bx1) / 2, (by0 + by1) / 2), *negatives),
                   (1, *(0,) * len(negatives)))
    try:
        seed = seed_particle(pixels, click, options)
        kept = seed.mask & box_region(prompt, seed.mask.shape, seed.window.x0, seed.window.y0, fraction=0.0,
                                      margin_px=BOX_SEED_MARGIN_PX)
        if kept.sum() >= max(6.0, BOX_INSIDE_FRACTION * seed.mask.sum()):
            candidates.append(_seed_from_mask(seed.window, filled(kept), seed.polarity, seed.contrast))
    except PromptError:
        pass
    if not candidates:
        assert refusal is not None
        raise refusal
    return max(candidates, key=lambda seed: edge_contrast(seed.window.darkness, seed.mask))


def _seed_at_prompt(pixels: np.ndarray, prompt: Prompt, options: EmbeddedOptions) -> Seed:
    """`seed_particle` at the prompt as given.

    A point prompt is first analysed in a window of half the ``seed_window_radius_px`` (cheap: most
    particles are far smaller); a region that reaches its edge or a particle not found there (one
    that fills the window leaves no background) is analysed again in a window twice as large, up to
    twice ``seed_window_radius_px``; a region that still reaches the edge is no isolated particle.
    A box sets its own window.
    """
    cx, cy, radius = prompt_centre(prompt, options)
    radii = [radius] if prompt.box is not None else [radius // 2, radius, 2 * radius]
    refusal: PromptError | None = None
    for tried in radii:
        try:
            seed = _seed_in_window(pixels, prompt, options, cx, cy, tried)
        except PromptError as exc:  # a particle that fills the small window leaves no background in it
            refusal = exc
            continue
        if seed is not None:
            return seed
        refusal = None
    if refusal is not None:
        raise refusal
    raise PromptError(
        f"particle {prompt.particle} at ({cx:.1f}, {cy:.1f}): the region at the prompt reaches the "
        f"{2 * radii[-1] + 1} px analysis window's edge -- not an isolated particle (a background gradient or a "
        f"particle larger than the window); draw a box", prompt.particle)


def _seed_in_window(pixels: np.ndarray, prompt: Prompt, options: EmbeddedOptions, cx: float, cy: float,
                    radius: int) -> Seed | None:
    """`seed_particle` in the window of half-size ``radius`` around (cx, cy) (None: reaches its edge)."""
    x0, y0 = int(math.floor(cx)) - radius, int(math.floor(cy)) - radius
    raw = frame_window(pixels, x0, y0, 2 * radius + 1, 2 * radius + 1, polarity=1.0)
    box = box_region(prompt, raw.darkness.shape, x0, y0)
    where = f"particle {prompt.particle} at ({cx:.1f}, {cy:.1f})"
    # Background is what lies outside the (loosened) box: inside a tight box it is mostly particle.
    usable = raw.valid if box is None else raw.valid & ~box
    if usable.sum() < MIN_BACKGROUND_PX:
        usable = raw.valid
    window = flattened(raw, usable, particle_left_out=box is not None and usable is not raw.valid)
    pixel_noise = robust_noise(window.darkness, window.valid.astype(np.float32)) or 0.0
    found = _significant_scale(window, prompt, options, usable, pixel_noise)
    if found is None:
        raise PromptError(f"{where}: nothing to seed (the window lies outside the frame)", prompt.particle)
    scale, signal, background, level, seed_rc = found
    polarity = {"dark": 1.0, "bright": -1.0}.get(options.polarity, 1.0 if level >= 0 else -1.0)
    if polarity < 0:  # the same window read for a bright particle: the contrast is affine in the intensity
        window = Window(window.x0, window.y0, -window.darkness, window.valid, window.background)
        signal, level = -signal, -level
    if not level > options.seed_min_snr * background.noise:
        raise PromptError(
            f"{where}: no particle found (smoothed contrast {level:.3f} is below {options.seed_min_snr:g} x the "
            f"background noise {background.noise:.3f}); click on the particle or draw a box", prompt.particle)
    allowed = np.ones(signal.shape, dtype=bool) if box is None else box.copy()
    exclude_negatives(allowed, prompt, x0, y0, seed_rc)
    territory = coarse_territory(window, usable, TERRITORY_SCALE_FACTOR * scale, seed_rc, allowed, pixel_noise,
                                 POINT_REACH_PX)
    if not (territory.own & (signal > REGION_FRACTION * level)).any():  # background structure at that scale
        territory = coarse_territory(window, usable, scale, seed_rc, allowed, pixel_noise, POINT_REACH_PX)
    contour = _contour(territory, signal, level, seed_rc, background.noise)
    if merged_region(window.darkness, territory.own if contour is None else contour[0], scale):
        # Merged with its neighbours at this smoothing (a dense field): markers from its size, borders fine.
        size = blob_size(window.darkness, seed_rc, min_sigma=scale)
        if size is not None:
            territory = marked_territory(window, usable, signal, level, background.noise, scale, size, seed_rc,
                                         allowed, pixel_noise)
            contour = _contour(territory, signal, level, seed_rc, background.noise)
    if box is None and touches_edge(territory.own):
        return None  # a particle as large as the window (or larger): its whole outline is not in view
    if contour is None:
        raise PromptError(f"{where}: nothing segmentable at the prompt", prompt.particle)
    mask, peak = contour
    if box is None and touches_edge(mask):
        return None
    if mask.sum() < 6:
        raise PromptError(f"{where}: the particle at the prompt is too small to follow ({int(mask.sum())} px)",
                          prompt.particle)
    if math.sqrt(mask.sum() / math.pi) < scale:
        # It only stood out once smoothed more than its own size: the outline would be the smoothing's.
        raise PromptError(f"{where}: too faint to outline (it stands out only at {scale:g} px smoothing, more than "
                          f"its own radius); a stronger dose or a larger particle is needed", prompt.particle)
    if not reaches_a_click(territory.own, prompt, x0, y0):
        # A particle that fills the window leaves its own plateau as the "background": the real background
        # next to the click then reads as a particle of the other polarity. A larger window sorts it out.
        raise PromptError(f"{where}: what stands out near the click is not under it; click on the particle "
                          f"or draw a box", prompt.particle)
    mask = seed_outline(window.darkness, territory, mask, seed_rc, signal, level, peak, scale, box,
                        drawn_bounds(prompt, x0, y0, BOX_SEED_MARGIN_PX))
    if box is not None:  # the seed keeps to the box as drawn (plus a margin): a box bounds its particle
        tight = box_region(prompt, mask.shape, x0, y0, fraction=0.0, margin_px=BOX_SEED_MARGIN_PX)
        if (mask & tight).sum() >= 6:
            mask &= tight
    # The contrast the tracker's presence test compares with: read at ``seed_smoothing_px`` whatever the
    # scale the particle was found at (heavier smoothing lowers a small particle's peak).
    reference = smoothed(window, options.seed_smoothing_px)
    reference -= np.float32(robust_background(reference, usable, white_noise_after(pixel_noise, options.seed_smoothing_px)).level)
    return _seed_from_mask(window, mask, polarity, float(np.percentile(reference[mask], 90)))


def _contour(territory: Territory, signal: np.ndarray, level: float, seed_rc: tuple[int, int],
             noise: float) -> tuple[np.ndarray, float] | None:
    """The particle's steepest iso-contrast contour in its territory (holes filled) and its peak; None if empty."""
    core = territory.own & (signal > REGION_FRACTION * level)
    if not core.any():
        return None
    peak = float(np.percentile(signal[core], 90))
    threshold = edge_threshold(signal, territory, seed_rc, peak, noise)
    mask = component_at(territory.own & (signal > threshold), seed_rc)
    return None if mask is None else (filled(mask), peak)


def _significant_scale(window: Window, prompt: Prompt, options: EmbeddedOptions, usable: np.ndarray,
                       pixel_noise: float) -> tuple[float, np.ndarray, Background, float, tuple[int, int]] | None:
    """(scale px, smoothed contrast above background, background, level at the prompt, its pixel).

    The smallest smoothing at which the prompt stands `SEGMENT_SNR_FACTOR` x ``seed_min_snr``
    noise sigmas out (sharp edges, neighbours still apart); failing that, the scale where it
    stands out most (a faint particle). Noise is measured on each smoothed window itself, so
    correlated noise (JPEG blocks, 1/f texture) counts as it is.
    """
    if not window.valid.any():
        return None
    best: tuple[float, np.ndarray, Background, float, tuple[int, int]] | None = None
    best_snr = -math.inf
    for factor in SMOOTHING_SCALES:
        scale = options.seed_smoothing_px * factor
        smooth = smoothed(window, scale)
        background = robust_background(smooth, usable, white_noise_after(pixel_noise, scale))
        signal = smooth - np.float32(background.level)
        level, seed_rc = prompt_level(signal, prompt, window.x0, window.y0)
        if not window.valid.all():  # near the frame's edge fewer pixels are averaged: more noise
            background = Background(background.level, background.noise * noise_gain(window.valid, scale, seed_rc))
        candidate = (scale, signal, background, level, seed_rc)
        # The level is the strongest of ~80 pixels near the click: at fine scales noise alone lifts it.
        snr = abs(level) / background.noise - LEVEL_NOISE_LIFT
        if snr >= SEGMENT_SNR_FACTOR * options.seed_min_snr:
            return candidate
        if best is None or snr > best_snr:
            best, best_snr = candidate, snr
    return best


def _seed_from_mask(window: Window, mask: np.ndarray, polarity: float, contrast: float) -> Seed:
    rows, cols = np.nonzero(mask)
    yc, xc = rows.mean(), cols.mean()
    dy, dx = rows - yc, cols - xc
    mxx, myy, mxy = (dx * dx).mean(), (dy * dy).mean(), (dx * dy).mean()
    angle = 0.5 * math.degrees(math.atan2(2 * mxy, mxx - myy))
    radius = float(np.sqrt(dx * dx + dy * dy).max()) + 1.0
    return Seed(float(xc + window.x0), float(yc + window.y0), angle, polarity, window, mask, contrast, radius)


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
