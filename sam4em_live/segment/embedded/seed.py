"""Segment a particle on its prompt frame: denoise at the particle scale, threshold, region-grow.

Per-pixel CNR is below 1, so a particle only emerges after averaging: the
window around the prompt is Gaussian-smoothed, the prompt's local level is read
(the darkest smoothed value within a few pixels of each positive point, or
inside the box core), and the connected region above half that level that
contains the prompt is taken; it is then re-thresholded at ``edge_fraction`` of
its own peak contrast (the boundary used by the memory too) without leaving
its neighbourhood. A prompt where no region clears ``seed_min_snr`` noise
sigmas raises `PromptError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from sam4em_live.particles import Prompt, PromptError
from sam4em_live.segment.embedded.ellipse import matched_ellipse
from sam4em_live.segment.embedded.shape import body_offsets
from sam4em_live.segment.embedded.window import Window, frame_window

if TYPE_CHECKING:
    from sam4em_live.segment.embedded.options import EmbeddedOptions

#: Radius (pixels) around a positive point searched for the particle's darkest smoothed value.
POINT_REACH_PX = 4
#: Fraction of the prompt's level used to find the particle's region before the edge threshold.
REGION_FRACTION = 0.5
#: A box-prompted seed stays within the box as drawn plus this margin (pixels).
BOX_SEED_MARGIN_PX = 2.0
#: Growth from the core to the edge threshold is limited to this fraction of the core's radius (point prompts).
GROWTH_FRACTION = 0.3
#: Multiples of ``seed_smoothing_px`` tried in turn until the particle clears the noise.
SMOOTHING_SCALES = (1.0, 1.5, 2.25, 3.4, 5.0)


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
        radius = int(math.ceil(0.75 * max(x1 - x0, y1 - y0))) + 16
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

    Read as the strongest value within `POINT_REACH_PX` of each positive point
    (of the box centre when there is none), so a click near the particle's rim still finds it.
    """
    best: tuple[float, tuple[int, int]] | None = None
    rows, cols = smooth.shape
    points, labels = prompt.points, prompt.labels
    if 1 not in labels and prompt.box is not None:
        # Box only: the centre of a box drawn around a convex particle lies on it.
        bx0, by0, bx1, by1 = prompt.box
        points, labels = (((bx0 + bx1) / 2, (by0 + by1) / 2),), (1,)
    for (x, y), label in zip(points, labels, strict=False):
        if label != 1:
            continue
        r, c = int(round(y)) - y0, int(round(x)) - x0
        ra, rb = max(r - POINT_REACH_PX, 0), min(r + POINT_REACH_PX + 1, rows)
        ca, cb = max(c - POINT_REACH_PX, 0), min(c + POINT_REACH_PX + 1, cols)
        patch = smooth[ra:rb, ca:cb]
        k = int(np.argmax(np.abs(patch)))
        pr, pc = divmod(k, patch.shape[1])
        value = float(patch[pr, pc])
        if best is None or abs(value) > abs(best[0]):
            best = (value, (ra + pr, ca + pc))
    assert best is not None  # validate_edit guarantees a positive point or a box
    return best


def _exclude_negatives(region: np.ndarray, prompt: Prompt, x0: int, y0: int, seed_rc: tuple[int, int]) -> None:
    """Cut a disc around each negative point (radius: half its distance to the seed pixel)."""
    rows, cols = np.ogrid[: region.shape[0], : region.shape[1]]
    for (x, y), label in zip(prompt.points, prompt.labels, strict=False):
        if label != 0:
            continue
        r, c = y - y0, x - x0
        radius = max(1.5, 0.5 * math.hypot(r - seed_rc[0], c - seed_rc[1]))
        region &= (rows - r) ** 2 + (cols - c) ** 2 > radius**2


def _component_at(region: np.ndarray, seed_rc: tuple[int, int]) -> np.ndarray | None:
    labels, count = ndimage.label(region)
    if count == 0:
        return None
    label = labels[seed_rc]
    if label == 0:  # seed pixel just outside: take the nearest component
        dist = ndimage.distance_transform_edt(labels == 0, return_indices=True)[1]
        label = labels[dist[0][seed_rc], dist[1][seed_rc]]
    return labels == label


def seed_particle(pixels: np.ndarray, prompt: Prompt, options: EmbeddedOptions) -> Seed:
    """Segment the particle at ``prompt`` on this frame; raise `PromptError` if there is none."""
    cx, cy, radius = _prompt_centre(prompt, options)
    x0, y0 = int(math.floor(cx)) - radius, int(math.floor(cy)) - radius
    window = _flattened(frame_window(pixels, x0, y0, 2 * radius + 1, 2 * radius + 1, polarity=1.0))
    box = _box_region(prompt, window.darkness.shape, x0, y0)
    where = f"particle {prompt.particle} at ({cx:.1f}, {cy:.1f})"
    # Smallest smoothing at which the particle clears the noise: sharper edges when contrast allows.
    for scale in SMOOTHING_SCALES:
        smooth = ndimage.gaussian_filter(window.darkness, options.seed_smoothing_px * scale)
        level, seed_rc = _prompt_level(smooth, prompt, x0, y0)
        background = smooth[window.valid]
        noise = max(1.4826 * float(np.median(np.abs(background - np.median(background)))), 1e-9)
        if abs(level) > options.seed_min_snr * noise:
            break
    polarity = {"dark": 1.0, "bright": -1.0}.get(options.polarity, 1.0 if level >= 0 else -1.0)
    if polarity < 0:
        window = _flattened(frame_window(pixels, x0, y0, 2 * radius + 1, 2 * radius + 1, polarity=-1.0))
        smooth = -smooth
        level = -level
    if not level > options.seed_min_snr * noise:
        raise PromptError(
            f"{where}: no particle found (smoothed contrast {level:.3f} is below "
            f"{options.seed_min_snr:g} x the background noise {noise:.3f}); click on the particle or draw a box"
        )
    region = smooth > REGION_FRACTION * level
    if box is not None:
        region &= box
    _exclude_negatives(region, prompt, x0, y0, seed_rc)
    core = _component_at(region, seed_rc)
    if core is None:
        raise PromptError(f"{where}: nothing segmentable at the prompt")
    peak = float(np.percentile(smooth[core], 90))
    grown = smooth > options.edge_fraction * peak
    if box is not None:
        grown &= box
    else:  # keep away from neighbours: grow at most a fraction of the core's size
        reach = max(3, int(round(GROWTH_FRACTION * math.sqrt(core.sum() / math.pi))))
        grown &= ndimage.binary_dilation(core, iterations=reach)
    mask = _component_at(grown | core, seed_rc)
    assert mask is not None
    mask = ndimage.binary_fill_holes(mask)
    if box is None and (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any()):
        raise PromptError(
            f"{where}: the region at the prompt reaches the {2 * radius + 1} px analysis window's edge -- "
            f"not an isolated particle (a background gradient or a particle larger than the window); draw a box"
        )
    if mask.sum() < 6:
        raise PromptError(f"{where}: the particle at the prompt is too small to follow ({int(mask.sum())} px)")
    # The loosened box lets a roughly drawn box find the whole particle, but at CNR < 1 the ellipse fit can
    # swell into that slack (a 30 nm sphere in a tight box came out at 1.3x its area, elongated): the seed
    # keeps to the box as drawn plus BOX_SEED_MARGIN_PX. Only ellipses that fit it are tried; if none does,
    # the thresholded region is used, clipped to it. The memory learns the true outline.
    bounds = None
    if prompt.box is not None:  # in window coordinates
        bx0, by0, bx1, by1 = prompt.box
        m = BOX_SEED_MARGIN_PX
        bounds = (bx0 - x0 - m, by0 - y0 - m, bx1 - x0 + m, by1 - y0 + m)
    ellipse = matched_ellipse(window.darkness, mask, box, bounds)
    if box is not None:
        tight = _box_region(prompt, window.darkness.shape, x0, y0, fraction=0.0, margin_px=BOX_SEED_MARGIN_PX)
        if (ellipse & tight).sum() >= 6:
            ellipse &= tight
    return _seed_from_mask(window, ellipse, polarity, peak)


def _flattened(window: Window) -> Window:
    """Remove a background plane (strong illumination gradients) fitted over the window's valid pixels."""
    rows, cols = np.nonzero(window.valid[::2, ::2])
    values = window.darkness[::2, ::2][rows, cols]
    design = np.stack([np.ones(rows.size), 2.0 * rows, 2.0 * cols], axis=1)
    coeffs = np.linalg.lstsq(design, values, rcond=None)[0]
    # Refit without the particle (the strongest 10 % of the residual) so it does not tilt the plane.
    keep = (values - design @ coeffs) < np.percentile(values - design @ coeffs, 90)
    coeffs = np.linalg.lstsq(design[keep], values[keep], rcond=None)[0]
    r, c = np.mgrid[0 : window.darkness.shape[0], 0 : window.darkness.shape[1]]
    plane = (coeffs[0] + coeffs[1] * r + coeffs[2] * c).astype(np.float32)
    flat = np.where(window.valid, window.darkness - plane, 0.0).astype(np.float32)
    return Window(window.x0, window.y0, flat, window.valid, window.background)


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
