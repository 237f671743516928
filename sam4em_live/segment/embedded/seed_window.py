"""Segment a particle in a window around its prompt: the scale it stands out at, its territory, its outline.

The pipeline of one prompt as given (`seed.seed_particle` chooses among several such seeds: a click
followed to the peaks it leads to, a box's centre). Per-pixel CNR is below 1, so a particle only
emerges after averaging: the window is Gaussian-smoothed at the smallest of a few scales at which the
prompt's level stands out of the background noise, where background and noise are measured on the
background itself (`seed_region.robust_background`). The particle is the watershed basin of the
smoothed contrast that holds the prompt, re-cut where it merged with its neighbours
(`dense_territory`), bounded by the iso-contour of steepest slope or the fitted shape that explains the
raw contrast better (`outline_fit`). The window grows while the particle reaches its edge.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from sam4em_live.particles import PromptError
from sam4em_live.segment.embedded.dense_territory import blob_size, marked_territory, merged_region
from sam4em_live.segment.embedded.outline_fit import seed_outline
from sam4em_live.segment.embedded.seed_edge import measured_edge
from sam4em_live.segment.embedded.seed_frame import WindowSmoothing, point_window
from sam4em_live.segment.embedded.seed_prompt import (
    POINT_REACH_PX,
    box_region,
    drawn_bounds,
    exclude_negatives,
    prompt_centre,
    prompt_level,
    reaches_a_click,
    touches_edge,
)
from sam4em_live.segment.embedded.seed_region import (
    REGION_FRACTION,
    Background,
    Territory,
    background_surface,
    coarse_territory,
    component_at,
    dilated,
    edge_threshold,
    filled,
    noise_gain,
    robust_background,
    white_noise_after,
    without_surface,
)
from sam4em_live.segment.embedded.window import Window, frame_window, robust_noise

if TYPE_CHECKING:
    from sam4em_live.particles import Prompt
    from sam4em_live.segment.embedded.options import EmbeddedOptions
    from sam4em_live.segment.embedded.seed_frame import SeedFrame

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


class Seeded(NamedTuple):
    """A seed and the territory it was cut from (bool, on the seed's window): which pixels are its basin."""

    seed: Seed
    territory: Territory


def seed_at_prompt(pixels: np.ndarray, prompt: Prompt, options: EmbeddedOptions,
                   frame: SeedFrame | None = None) -> Seeded:
    """`seed.seed_particle` at the prompt as given (no click followed, no box's centre tried), with its territory.

    A point prompt is first analysed in a window of half the ``seed_window_radius_px`` (cheap: most
    particles are far smaller); a region that reaches its edge or a particle not found there (one
    that fills the window leaves no background) is analysed again in a window twice as large, up to
    twice ``seed_window_radius_px``; a region that still reaches the edge is no isolated particle.
    A box sets its own window. ``frame``: the frame's smoothing shared by a batch of prompts (`seed_frame`).
    """
    cx, cy, radius = prompt_centre(prompt, options)
    radii = [radius] if prompt.box is not None else [radius // 2, radius, 2 * radius]
    refusal: PromptError | None = None
    for tried in radii:
        try:
            seed = _seed_in_window(pixels, prompt, options, cx, cy, tried, frame)
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
                    radius: int, frame: SeedFrame | None) -> Seeded | None:
    """`seed_at_prompt` in the window of half-size ``radius`` around (cx, cy) (None: reaches its edge)."""
    x0, y0 = int(math.floor(cx)) - radius, int(math.floor(cy)) - radius
    where = f"particle {prompt.particle} at ({cx:.1f}, {cy:.1f})"
    if prompt.box is None:  # a click's smallest window may have been prepared to follow it to its peaks
        raw, surface, window, pixel_noise = point_window(pixels, x0, y0, 2 * radius + 1, frame)
        box, usable = None, raw.valid
    else:
        raw = frame_window(pixels, x0, y0, 2 * radius + 1, 2 * radius + 1, polarity=1.0)
        box = box_region(prompt, raw.darkness.shape, x0, y0)
        # Background is what lies outside the (loosened) box: inside a tight box it is mostly particle.
        usable = raw.valid & ~box if box is not None else raw.valid
        if usable.sum() < MIN_BACKGROUND_PX:
            usable = raw.valid
        surface = background_surface(raw, usable, particle_left_out=usable is not raw.valid)
        window = raw if surface is None else without_surface(raw, surface)
        pixel_noise = robust_noise(window.darkness, window.valid.astype(np.float32)) or 0.0
    smooth = WindowSmoothing(frame, raw, surface, window)
    found = _significant_scale(window, smooth, prompt, options, usable, pixel_noise)
    if found is None:
        raise PromptError(f"{where}: nothing to seed (the window lies outside the frame)", prompt.particle)
    scale, signal, background, level, seed_rc = found
    polarity = {"dark": 1.0, "bright": -1.0}.get(options.polarity, 1.0 if level >= 0 else -1.0)
    if polarity < 0:  # the same window read for a bright particle: the contrast is affine in the intensity
        window = Window(window.x0, window.y0, -window.darkness, window.valid, window.background)
        smooth = smooth.negated()
        signal, level = -signal, -level
    if not level > options.seed_min_snr * background.noise:
        raise PromptError(
            f"{where}: no particle found (smoothed contrast {level:.3f} is below {options.seed_min_snr:g} x the "
            f"background noise {background.noise:.3f}); click on the particle or draw a box", prompt.particle)
    allowed = np.ones(signal.shape, dtype=bool) if box is None else box.copy()
    exclude_negatives(allowed, prompt, x0, y0, seed_rc)
    territory = coarse_territory(window, usable, TERRITORY_SCALE_FACTOR * scale, seed_rc, allowed, pixel_noise,
                                 POINT_REACH_PX, smooth)
    if not (territory.own & (signal > REGION_FRACTION * level)).any():  # background structure at that scale
        territory = coarse_territory(window, usable, scale, seed_rc, allowed, pixel_noise, POINT_REACH_PX, smooth)
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
    mask = measured_edge(window.darkness, mask, window.valid & ~dilated(territory.neighbours, 1))
    if box is not None:  # the seed keeps to the box as drawn (plus a margin): a box bounds its particle
        tight = box_region(prompt, mask.shape, x0, y0, fraction=0.0, margin_px=BOX_SEED_MARGIN_PX)
        if (mask & tight).sum() >= 6:
            mask &= tight
    # The contrast the tracker's presence test compares with: read at ``seed_smoothing_px`` whatever the
    # scale the particle was found at (heavier smoothing lowers a small particle's peak).
    reference = smooth(options.seed_smoothing_px)
    reference -= np.float32(robust_background(reference, usable, white_noise_after(pixel_noise, options.seed_smoothing_px)).level)
    return Seeded(seed_from_mask(window, mask, polarity, float(np.percentile(reference[mask], 90))), territory)


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


def _significant_scale(window: Window, smooth: WindowSmoothing, prompt: Prompt, options: EmbeddedOptions,
                       usable: np.ndarray, pixel_noise: float) -> tuple[float, np.ndarray, Background, float, tuple[int, int]] | None:
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
        smoothed = smooth(scale)
        background = robust_background(smoothed, usable, white_noise_after(pixel_noise, scale))
        signal = smoothed - np.float32(background.level)
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


def seed_from_mask(window: Window, mask: np.ndarray, polarity: float, contrast: float) -> Seed:
    """The seed of ``mask`` (bool, on ``window``): its centroid, major axis and extent."""
    rows, cols = np.nonzero(mask)
    yc, xc = rows.mean(), cols.mean()
    dy, dx = rows - yc, cols - xc
    mxx, myy, mxy = (dx * dx).mean(), (dy * dy).mean(), (dx * dy).mean()
    angle = 0.5 * math.degrees(math.atan2(2 * mxy, mxx - myy))
    radius = float(np.sqrt(dx * dx + dy * dy).max()) + 1.0
    return Seed(float(xc + window.x0), float(yc + window.y0), angle, polarity, window, mask, contrast, radius)


