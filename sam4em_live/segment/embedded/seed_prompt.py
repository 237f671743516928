"""What a prompt says about its particle: where to look, the box as drawn, the level at a click.

A point prompt may be anywhere on the particle (near its rim too), a box tight (SAM 2's
convention: the particle touches all four sides) or loose, and negative points mark
what is not the particle. A click far from its particle's core is followed up the
smoothed contrast to the peaks it leads to (`click_peaks`), and the candidates seeded
from them are judged by how deep the click lies in each (`depth_in_mask`) and how much
each outline stands out (`edge_contrast`). Window coordinates: (row, col) from the
window's origin (x0, y0) in frame pixels, x = column, y = row.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from sam4em_live.segment.embedded.seed_frame import WindowSmoothing, point_window
from sam4em_live.segment.embedded.seed_region import (
    eroded,
    flattened,
    robust_background,
    white_noise_after,
)
from sam4em_live.segment.embedded.window import Window, block_mean

if TYPE_CHECKING:
    from sam4em_live.particles import Prompt
    from sam4em_live.segment.embedded.options import EmbeddedOptions
    from sam4em_live.segment.embedded.seed_frame import SeedFrame

#: Radius (pixels) around a positive point searched for the particle's darkest smoothed value.
POINT_REACH_PX = 4
#: A box without points is read this far (fraction of its smaller side) around its centre.
BOX_REACH_FRACTION = 0.2
#: Multiples of ``seed_smoothing_px`` at which a click is followed up to its particle's peak.
CLIMB_SCALES = (1.0, 2.0)
#: A click is also climbed from 8 points at each of these distances (pixels) around it: from a corner's
#: tip the ascent can lead to a neighbour, from a little way into the corner it leads to its own particle.
CLIMB_SPREADS_PX = (3.0, 7.0)
#: A click reading this fraction of the contrast of the peak it climbs to is on the particle's core.
CORE_FRACTION = 0.75
#: A click's peak must stand this many times ``seed_min_snr`` white-noise sigmas out (`seed.SEGMENT_SNR_FACTOR`).
PEAK_SNR_FACTOR = 2.0
#: At most this many peaks found from a click are seeded.
MAX_CLICK_PEAKS = 3
#: `frame_polarity` reads the frame on at most this many block means a side ...
POLARITY_BLOCKS = 128
#: ... and tells dark from bright particles when the skew of their contrast is at least this (the robustness
#: conditions: 0.15-1.4 where particles are few or 34 % of a dense field, 0.06-0.11 under 1/f texture).
CLEAR_SKEW = 0.15


def prompt_centre(prompt: Prompt, options: EmbeddedOptions) -> tuple[float, float, int]:
    """The window's centre (x, y, frame pixels) and half-size: a box's own, or ``seed_window_radius_px``."""
    positives = [p for p, label in zip(prompt.points, prompt.labels, strict=False) if label == 1]
    if prompt.box is not None:
        x0, y0, x1, y1 = prompt.box
        # Room for background all round: the box (loosened) plus at least its half size and 16 px.
        radius = int(math.ceil(1.1 * max(x1 - x0, y1 - y0))) + 16
        return (x0 + x1) / 2, (y0 + y1) / 2, radius
    cx, cy = np.mean(np.asarray(positives, dtype=float), axis=0)
    return float(cx), float(cy), options.seed_window_radius_px


def box_region(prompt: Prompt, shape: tuple[int, int], x0: int, y0: int,
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


def prompt_level(smooth: np.ndarray, prompt: Prompt, x0: int, y0: int) -> tuple[float, tuple[int, int]]:
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


def touches_edge(region: np.ndarray) -> bool:
    """Whether ``region`` reaches the window's border."""
    return bool(region[0].any() or region[-1].any() or region[:, 0].any() or region[:, -1].any())


def reaches_a_click(mask: np.ndarray, prompt: Prompt, x0: int, y0: int) -> bool:
    """Whether ``mask`` (the particle's territory) comes within `POINT_REACH_PX` of a positive point.

    Always true of a box alone.
    """
    clicks = [(y - y0, x - x0) for (x, y), label in zip(prompt.points, prompt.labels, strict=False) if label == 1]
    if not clicks:
        return True
    rows, cols = np.nonzero(mask)
    return any(float(np.min((rows - r) ** 2 + (cols - c) ** 2)) <= POINT_REACH_PX**2 for r, c in clicks)


def exclude_negatives(region: np.ndarray, prompt: Prompt, x0: int, y0: int, seed_rc: tuple[int, int]) -> None:
    """Cut a disc around each negative point (radius: half its distance to the seed pixel)."""
    rows, cols = np.ogrid[: region.shape[0], : region.shape[1]]
    for (x, y), label in zip(prompt.points, prompt.labels, strict=False):
        if label != 0:
            continue
        r, c = y - y0, x - x0
        radius = max(1.5, 0.5 * math.hypot(r - seed_rc[0], c - seed_rc[1]))
        region &= (rows - r) ** 2 + (cols - c) ** 2 > radius**2


def drawn_bounds(prompt: Prompt, x0: int, y0: int, margin_px: float) -> tuple[float, float, float, float] | None:
    """A box prompt as drawn + ``margin_px``, in window coordinates (x0, y0, x1, y1); None for points."""
    if prompt.box is None:
        return None
    bx0, by0, bx1, by1 = prompt.box
    return bx0 - x0 - margin_px, by0 - y0 - margin_px, bx1 - x0 + margin_px, by1 - y0 + margin_px


def single_click(prompt: Prompt) -> tuple[float, float] | None:
    """The prompt's one positive point (x, y) when it is a click without a box; None otherwise."""
    positives = [p for p, label in zip(prompt.points, prompt.labels, strict=False) if label == 1]
    return positives[0] if prompt.box is None and len(positives) == 1 else None


def moved_click(prompt: Prompt, to: tuple[float, float]) -> Prompt:
    """``prompt`` with its positive click moved to ``to`` (x, y); negative points kept."""
    negatives = tuple(p for p, label in zip(prompt.points, prompt.labels, strict=False) if label == 0)
    return replace(prompt, points=(to, *negatives), labels=(1, *(0,) * len(negatives)))


def climb(signal: np.ndarray, start: tuple[int, int]) -> tuple[int, int]:
    """The local maximum of ``signal`` reached from ``start`` (row, col) by steepest ascent over 8 neighbours.

    A click near a particle's rim (in a triangle's corner, 30 px from its centre) reads the
    particle's contrast diluted by the background; smoothed at the particle's scale the contrast
    rises towards the particle's interior, and the ascent follows it there.
    """
    rows, cols = signal.shape
    r, c = start
    for _ in range(rows + cols):
        ra, ca = max(r - 1, 0), max(c - 1, 0)
        patch = signal[ra : min(r + 2, rows), ca : min(c + 2, cols)]
        k = int(np.argmax(patch))
        pr, pc = divmod(k, patch.shape[1])
        if not patch[pr, pc] > signal[r, c]:
            break
        r, c = ra + pr, ca + pc
    return r, c


def depth_in_mask(mask: np.ndarray, point: tuple[float, float], x0: int, y0: int) -> float:
    """How deep ``point`` (x, y, frame pixels) lies in ``mask`` (window at x0, y0), in pixels.

    Inside: the distance to the nearest pixel outside it; outside: minus the distance to the mask.
    """
    r, c = point[1] - y0, point[0] - x0
    ri, ci = int(round(r)), int(round(c))
    inside = 0 <= ri < mask.shape[0] and 0 <= ci < mask.shape[1] and bool(mask[ri, ci])
    rows, cols = np.nonzero(~mask if inside else mask)
    if rows.size == 0:
        return math.inf if inside else -math.inf
    distance = math.sqrt(float(np.min((rows - r) ** 2 + (cols - c) ** 2)))
    return distance if inside else -distance


def edge_contrast(darkness: np.ndarray, mask: np.ndarray) -> float:
    """Mean contrast inside ``mask`` (its 1 px rim left out: blur) less that of the 2 px just outside it."""
    rows, cols = np.nonzero(mask)
    r0, c0 = max(int(rows.min()) - 4, 0), max(int(cols.min()) - 4, 0)
    crop = mask[r0 : int(rows.max()) + 5, c0 : int(cols.max()) + 5]
    values = darkness[r0 : r0 + crop.shape[0], c0 : c0 + crop.shape[1]]
    inner = eroded(crop)
    ring = ndimage.binary_dilation(crop, iterations=2) & ~crop
    if not inner.any() or not ring.any():
        return -math.inf
    return float(values[inner].mean()) - float(values[ring].mean())


def frame_polarity(pixels: np.ndarray) -> float:
    """+1 if the frame's particles are darker than its background, -1 if brighter, 0 if it cannot tell.

    The skew of the frame's contrast, on block means (noise averaged out; at most `POLARITY_BLOCKS`
    a side, so a 4k frame costs what a 512² one does) with the background's gradient and vignette
    removed (`flattened`): particles are the frame's minority, its tail. A prompt's window cannot
    tell: in a dense field it is as much particle as background, and its skew can point either way.
    """
    block = max(4, -(-max(pixels.shape) // POLARITY_BLOCKS))
    rows, cols = (pixels.shape[0] // block) * block, (pixels.shape[1] // block) * block
    if rows < 8 * block or cols < 8 * block:
        return 0.0
    means = block_mean(pixels[:rows, :cols], block)
    level = float(np.median(means))
    if not abs(level) > 0:
        return 0.0
    coarse = Window(0, 0, (1.0 - means / np.float32(level)).astype(np.float32), np.ones(means.shape, dtype=bool), 1.0)
    values = flattened(coarse, coarse.valid).darkness.astype(np.float64).ravel()
    centred = values - values.mean()
    spread = float((centred**2).mean())
    skew = float((centred**3).mean()) / spread**1.5 if spread > 0 else 0.0
    return 0.0 if abs(skew) < CLEAR_SKEW else math.copysign(1.0, skew)


def click_peaks(pixels: np.ndarray, prompt: Prompt, options: EmbeddedOptions,
                frame_sign: float = 0.0, frame: SeedFrame | None = None) -> list[tuple[float, float]]:
    """Where the click's particle may be (x, y): peaks of the smoothed contrast climbed from around the click.

    Climbed (`climb`) from the click and from 8 points at each of `CLIMB_SPREADS_PX` around it, at
    ``seed_smoothing_px`` and twice that (the particle's scale, where noise maxima no longer stop the
    ascent); the first scale whose best peak stands `PEAK_SNR_FACTOR` x ``seed_min_snr`` white-noise
    sigmas above the background counts, strongest peak first. The window's background noise is no
    test here: in a dense field the window is as much particle as background, and its "noise" is their
    pattern. With ``polarity`` auto the particles are darker or brighter as the frame says (``frame_sign``,
    `frame_polarity`: a dense window's skew can point to the gaps between particles, and the climbs then
    end there), and where it cannot tell (0), the tail the window's smoothed contrast is skewed to.
    Empty when nothing stands out, or the click is on its particle's core: the
    climb from it ends within `POINT_REACH_PX`, or the click reads `CORE_FRACTION` of the peak's contrast.
    ``frame``: the frame's smoothing shared by a batch of prompts (`seed_frame`).
    """
    cx, cy, radius = prompt_centre(prompt, options)
    radius //= 2
    x0, y0 = int(math.floor(cx)) - radius, int(math.floor(cy)) - radius
    # The click's own seed analyses this window first (`seed_window.seed_at_prompt`): kept for it.
    raw, surface, window, pixel_noise = point_window(pixels, x0, y0, 2 * radius + 1, frame, keep=True)
    if not raw.valid[min(max(int(round(cy)) - y0, 0), 2 * radius), min(max(int(round(cx)) - x0, 0), 2 * radius)]:
        return []
    smooth_at = WindowSmoothing(frame, raw, surface, window)
    start = (int(round(cy)) - y0, int(round(cx)) - x0)
    turns = np.radians(np.arange(0, 360, 45))
    starts = [start] + [(min(max(start[0] + int(round(spread * math.sin(t))), 0), 2 * radius),
                         min(max(start[1] + int(round(spread * math.cos(t))), 0), 2 * radius))
                        for spread in CLIMB_SPREADS_PX for t in turns]
    for factor in CLIMB_SCALES:
        scale = factor * options.seed_smoothing_px
        smooth = smooth_at(scale)
        background = robust_background(smooth, raw.valid, white_noise_after(pixel_noise, scale))
        signal = smooth - np.float32(background.level)
        sign = {"dark": 1.0, "bright": -1.0}.get(options.polarity, frame_sign)
        if sign == 0.0:
            sample = signal[::2, ::2][raw.valid[::2, ::2]]  # outside the frame: no pixels, not zeros
            centred = sample - sample.mean()
            sign = 1.0 if float((centred**3).mean()) >= 0 else -1.0
        uphill = np.where(raw.valid, sign * signal, -np.inf)  # outside the frame is no particle to climb to
        peaks = sorted({peak for peak in (climb(uphill, rc) for rc in starts) if raw.valid[peak]},
                       key=lambda rc: -sign * float(signal[rc]))
        if not peaks:
            continue
        if sign * float(signal[peaks[0]]) < PEAK_SNR_FACTOR * options.seed_min_snr * white_noise_after(
                pixel_noise, scale):
            continue
        direct = climb(uphill, start)
        on_core = sign * float(signal[start]) >= CORE_FRACTION * sign * float(signal[direct])
        if on_core or math.hypot(direct[0] - start[0], direct[1] - start[1]) <= POINT_REACH_PX:
            return []
        return [(float(x0 + c), float(y0 + r)) for r, c in peaks[:MAX_CLICK_PEAKS]]
    return []


def same_particle(a: np.ndarray, a_origin: tuple[int, int], b: np.ndarray, b_origin: tuple[int, int]) -> bool:
    """Whether masks ``a`` and ``b`` (windows at (x0, y0) origins) overlap by half the smaller one."""
    x0, y0 = min(a_origin[0], b_origin[0]), min(a_origin[1], b_origin[1])
    shape = (a.shape[0] + b.shape[0] + abs(a_origin[1] - b_origin[1]),
             a.shape[1] + b.shape[1] + abs(a_origin[0] - b_origin[0]))
    on_a, on_b = np.zeros(shape, dtype=bool), np.zeros(shape, dtype=bool)
    on_a[a_origin[1] - y0 : a_origin[1] - y0 + a.shape[0], a_origin[0] - x0 : a_origin[0] - x0 + a.shape[1]] = a
    on_b[b_origin[1] - y0 : b_origin[1] - y0 + b.shape[0], b_origin[0] - x0 : b_origin[0] - x0 + b.shape[1]] = b
    return int((on_a & on_b).sum()) >= 0.5 * min(int(a.sum()), int(b.sum()))
