"""Segment a particle on its prompt frame: find it at the particle scale, cut it from its neighbours, fit its edge.

Per-pixel CNR is below 1, so a particle only emerges after averaging: the
window around the prompt is Gaussian-smoothed at the smallest of a few scales at
which the prompt's level stands out of the background noise, where background
and noise are measured on the background itself (`seed_region.robust_background`:
a sigma-clipped mode, the prompt's box left out -- a tight box is mostly particle,
a dense field's window mostly neighbours). The particle is the watershed basin of
the smoothed contrast that holds the prompt (neighbours 2 px away are cut along
the valley between them), bounded by the iso-contour of steepest slope (its edge,
whatever its profile). At coarse smoothing (faint particles) an ellipse fitted to
the raw contrast by matched filtering replaces the smoothed outline. A prompt
that cannot be seeded raises `PromptError` naming its particle.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from sam4em_live.particles import Prompt, PromptError, validate_edit
from sam4em_live.segment.base import PromptErrors
from sam4em_live.segment.embedded.ellipse import match_z, matched_ellipse
from sam4em_live.segment.embedded.seed_region import (
    Background,
    Territory,
    edge_threshold,
    flattened,
    noise_gain,
    particle_territory,
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

#: Radius (pixels) around a positive point searched for the particle's darkest smoothed value.
POINT_REACH_PX = 4
#: A box without points is read this far (fraction of its smaller side) around its centre.
BOX_REACH_FRACTION = 0.2
#: Fraction of the prompt's level that marks the particle's core (its peak contrast is read there).
REGION_FRACTION = 0.5
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
#: The ellipse fit starts from the region above this fraction of the peak (as seeds always did) ...
START_FRACTION = 0.25
#: ... grown after a click by at most this fraction of the core's radius.
GROWTH_FRACTION = 0.3
#: Smoothing above this fraction of the particle's radius rounds its outline: an ellipse is fitted instead.
ELLIPSE_SCALE_FRACTION = 0.4
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


def _prompt_centre(prompt: Prompt, options: EmbeddedOptions) -> tuple[float, float, int]:
    positives = [p for p, label in zip(prompt.points, prompt.labels, strict=False) if label == 1]
    if prompt.box is not None:
        x0, y0, x1, y1 = prompt.box
        # Room for background all round: the box (loosened) plus at least its half size and 16 px.
        radius = int(math.ceil(1.1 * max(x1 - x0, y1 - y0))) + 16
        return (x0 + x1) / 2, (y0 + y1) / 2, radius
    cx, cy = np.mean(np.asarray(positives, dtype=float), axis=0)
    return float(cx), float(cy), options.seed_window_radius_px


def _box_region(prompt: Prompt, shape: tuple[int, int], x0: int, y0: int,
                fraction: float = 0.15, margin_px: float = 3.0) -> np.ndarray | None:
    """The box, loosened by ``fraction`` of its size + ``margin_px`` (boxes are drawn roughly), on the window."""
    if prompt.box is None:
        return None
    bx0, by0, bx1, by1 = prompt.box
    pad_x, pad_y = fraction * (bx1 - bx0) + margin_px, fraction * (by1 - by0) + margin_px
    cols = np.arange(shape[1]) + x0
    rows = np.arange(shape[0]) + y0
    inside_x = (cols >= bx0 - pad_x) & (cols <= bx1 + pad_x)
    inside_y = (rows >= by0 - pad_y) & (rows <= by1 + pad_y)
    return inside_y[:, None] & inside_x[None, :]


def _prompt_level(smooth: np.ndarray, prompt: Prompt, x0: int, y0: int) -> tuple[float, tuple[int, int]]:
    """Signed smoothed contrast at the prompt and the pixel (row, col) where it was read.

    Read as the strongest value within `POINT_REACH_PX` of each positive point, so a click
    near the particle's rim still finds it; a box without points is read around its centre,
    within `BOX_REACH_FRACTION` of its size (a triangle's centroid is not its box's centre).
    """
    best: tuple[float, tuple[int, int]] | None = None
    rows, cols = smooth.shape
    points, labels = prompt.points, prompt.labels
    reach = POINT_REACH_PX
    if 1 not in labels and prompt.box is not None:
        # Box only: the centre of a box drawn around a convex particle lies on it.
        bx0, by0, bx1, by1 = prompt.box
        points, labels = (((bx0 + bx1) / 2, (by0 + by1) / 2),), (1,)
        reach = max(POINT_REACH_PX, int(BOX_REACH_FRACTION * min(bx1 - bx0, by1 - by0)))
    for (x, y), label in zip(points, labels, strict=False):
        if label != 1:
            continue
        r, c = int(round(y)) - y0, int(round(x)) - x0
        ra, rb = max(r - reach, 0), min(r + reach + 1, rows)
        ca, cb = max(c - reach, 0), min(c + reach + 1, cols)
        patch = smooth[ra:rb, ca:cb]
        k = int(np.argmax(np.abs(patch)))
        pr, pc = divmod(k, patch.shape[1])
        value = float(patch[pr, pc])
        if best is None or abs(value) > abs(best[0]):
            best = (value, (ra + pr, ca + pc))
    assert best is not None  # validate_edit guarantees a positive point or a box
    return best


def _touches_edge(region: np.ndarray) -> bool:
    return bool(region[0].any() or region[-1].any() or region[:, 0].any() or region[:, -1].any())


def _reaches_a_click(mask: np.ndarray, prompt: Prompt, x0: int, y0: int) -> bool:
    """Whether ``mask`` (the particle's territory) comes within `POINT_REACH_PX` of a positive point.

    Always true of a box alone.
    """
    clicks = [(y - y0, x - x0) for (x, y), label in zip(prompt.points, prompt.labels, strict=False) if label == 1]
    if not clicks:
        return True
    rows, cols = np.nonzero(mask)
    return any(float(np.min((rows - r) ** 2 + (cols - c) ** 2)) <= POINT_REACH_PX**2 for r, c in clicks)


def _exclude_negatives(region: np.ndarray, prompt: Prompt, x0: int, y0: int, seed_rc: tuple[int, int]) -> None:
    """Cut a disc around each negative point (radius: half its distance to the seed pixel)."""
    rows, cols = np.ogrid[: region.shape[0], : region.shape[1]]
    for (x, y), label in zip(prompt.points, prompt.labels, strict=False):
        if label != 0:
            continue
        r, c = y - y0, x - x0
        radius = max(1.5, 0.5 * math.hypot(r - seed_rc[0], c - seed_rc[1]))
        region &= (rows - r) ** 2 + (cols - c) ** 2 > radius**2


def _filled(mask: np.ndarray) -> np.ndarray:
    """``binary_fill_holes`` on the mask's bounding box only (the window is much larger than a particle)."""
    rows, cols = ndimage.find_objects(mask.astype(np.int32))[0]
    out = np.zeros_like(mask)
    out[rows, cols] = ndimage.binary_fill_holes(mask[rows, cols])
    return out


def _component_at(region: np.ndarray, seed_rc: tuple[int, int]) -> np.ndarray | None:
    labels, count = ndimage.label(region)
    if count == 0:
        return None
    label = labels[seed_rc]
    if label == 0:  # seed pixel just outside: take the nearest component
        dist = ndimage.distance_transform_edt(labels == 0, return_indices=True)[1]
        label = labels[dist[0][seed_rc], dist[1][seed_rc]]
    return labels == label


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

    A point prompt is first analysed in a window of half the ``seed_window_radius_px`` (cheap: most
    particles are far smaller); a region that reaches its edge or a particle not found there (one
    that fills the window leaves no background) is analysed again in a window twice as large, up to
    twice ``seed_window_radius_px``; a region that still reaches the edge is no isolated particle.
    A box sets its own window.
    """
    cx, cy, radius = _prompt_centre(prompt, options)
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
    box = _box_region(prompt, raw.darkness.shape, x0, y0)
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
    _exclude_negatives(allowed, prompt, x0, y0, seed_rc)
    territory = _territory(window, usable, TERRITORY_SCALE_FACTOR * scale, seed_rc, allowed, pixel_noise)
    if not (territory.own & (signal > REGION_FRACTION * level)).any():  # background structure at that scale
        territory = _territory(window, usable, scale, seed_rc, allowed, pixel_noise)
    if box is None and _touches_edge(territory.own):
        return None  # a particle as large as the window (or larger): its whole outline is not in view
    core = territory.own & (signal > REGION_FRACTION * level)
    if not core.any():
        raise PromptError(f"{where}: nothing segmentable at the prompt", prompt.particle)
    peak = float(np.percentile(signal[core], 90))
    threshold = edge_threshold(signal, territory, seed_rc, peak, background.noise)
    mask = _component_at(territory.own & (signal > threshold), seed_rc)
    if mask is None:
        raise PromptError(f"{where}: nothing segmentable at the prompt", prompt.particle)
    mask = _filled(mask)
    if box is None and _touches_edge(mask):
        return None
    if mask.sum() < 6:
        raise PromptError(f"{where}: the particle at the prompt is too small to follow ({int(mask.sum())} px)",
                          prompt.particle)
    if math.sqrt(mask.sum() / math.pi) < scale:
        # It only stood out once smoothed more than its own size: the outline would be the smoothing's.
        raise PromptError(f"{where}: too faint to outline (it stands out only at {scale:g} px smoothing, more than "
                          f"its own radius); a stronger dose or a larger particle is needed", prompt.particle)
    if not _reaches_a_click(territory.own, prompt, x0, y0):
        # A particle that fills the window leaves its own plateau as the "background": the real background
        # next to the click then reads as a particle of the other polarity. A larger window sorts it out.
        raise PromptError(f"{where}: what stands out near the click is not under it; click on the particle "
                          f"or draw a box", prompt.particle)
    # The matched-filter ellipse, started (as the region grown to a quarter of the peak) large enough
    # for its local ascent to reach a faint rod's ends, and preferred where it explains the raw
    # contrast better: at coarse smoothing (the outline is rounded anyway), and for the round and
    # elongated particles whose thinning rim pulls the steepest contour inwards.
    start = _ellipse_start(territory, seed_rc, signal, level, peak, box)
    ellipse = _fitted_ellipse(window, start if start is not None else mask, prompt, box, x0, y0)
    coarse = scale > ELLIPSE_SCALE_FRACTION * math.sqrt(mask.sum() / math.pi)
    if coarse or match_z(window.darkness, ellipse, mask) > match_z(window.darkness, mask, ellipse):
        mask = ellipse
    if box is not None:  # the seed keeps to the box as drawn (plus a margin): a box bounds its particle
        tight = _box_region(prompt, mask.shape, x0, y0, fraction=0.0, margin_px=BOX_SEED_MARGIN_PX)
        if (mask & tight).sum() >= 6:
            mask &= tight
    # The contrast the tracker's presence test compares with: read at ``seed_smoothing_px`` whatever the
    # scale the particle was found at (heavier smoothing lowers a small particle's peak).
    reference = smoothed(window, options.seed_smoothing_px)
    reference -= np.float32(robust_background(reference, usable, white_noise_after(pixel_noise, options.seed_smoothing_px)).level)
    return _seed_from_mask(window, mask, polarity, float(np.percentile(reference[mask], 90)))


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
        level, seed_rc = _prompt_level(signal, prompt, window.x0, window.y0)
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


def _territory(window: Window, usable: np.ndarray, scale: float, seed_rc: tuple[int, int],
               allowed: np.ndarray, pixel_noise: float) -> Territory:
    """The prompted particle's territory, found at ``scale`` (twice the segmentation scale, or that scale).

    At the fine scale a click's strongest pixel can be a noise bump (near a corner, say) that the
    watershed would make a particle of its own; at twice the scale noise is halved and a 2 px gap
    between neighbours is still a valley. The territory is widened back by the scale (not into a
    neighbour's) so the fine outline is not cut by the coarse one.
    """
    coarse = smoothed(window, scale)
    background = robust_background(coarse, usable, white_noise_after(pixel_noise, scale))
    signal = coarse - np.float32(background.level)
    reach = max(POINT_REACH_PX, int(math.ceil(scale)))
    r, c = seed_rc
    rows = slice(max(r - reach, 0), r + reach + 1)
    cols = slice(max(c - reach, 0), c + reach + 1)
    k = int(np.argmax(signal[rows, cols]))
    peak_rc = (rows.start + k // signal[rows, cols].shape[1], cols.start + k % signal[rows, cols].shape[1])
    coarse_territory = particle_territory(signal, peak_rc, float(signal[peak_rc]), background.noise, allowed)
    widened = ndimage.binary_dilation(coarse_territory.own, iterations=int(math.ceil(scale)) + 1)
    return Territory(widened & allowed & ~coarse_territory.neighbours, coarse_territory.neighbours)


def _ellipse_start(territory: Territory, seed_rc: tuple[int, int], signal: np.ndarray, level: float,
                   peak: float, box: np.ndarray | None) -> np.ndarray | None:
    """The region an ellipse fit starts from, grown as seeds always were (the fit is a local ascent).

    The region above half the prompt's level, grown to `START_FRACTION` of its peak: within a box, or
    by at most `GROWTH_FRACTION` of its radius after a click; never out of the particle's territory.
    """
    core = _component_at(territory.own & (signal > REGION_FRACTION * level), seed_rc)
    if core is None:
        return None
    grown = territory.own & (signal > START_FRACTION * peak)
    if box is None:
        reach = max(3, int(round(GROWTH_FRACTION * math.sqrt(core.sum() / math.pi))))
        grown &= ndimage.binary_dilation(core, iterations=reach)
    start = _component_at(grown | core, seed_rc)
    return _filled(start) if start is not None and start.sum() >= 6 else None


def _fitted_ellipse(window: Window, mask: np.ndarray, prompt: Prompt, box: np.ndarray | None,
                    x0: int, y0: int) -> np.ndarray:
    """The matched-filter ellipse (`ellipse.py`) started from ``mask``, within the box as drawn when there is one.

    At CNR < 1 the ellipse fit can swell into a loose box's slack (a 30 nm sphere in a tight box
    came out at 1.3x its area): only ellipses within the box as drawn + `BOX_SEED_MARGIN_PX` are tried.
    """
    bounds = None
    if prompt.box is not None:  # in window coordinates
        bx0, by0, bx1, by1 = prompt.box
        m = BOX_SEED_MARGIN_PX
        bounds = (bx0 - x0 - m, by0 - y0 - m, bx1 - x0 + m, by1 - y0 + m)
    return matched_ellipse(window.darkness, mask, box, bounds)


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
