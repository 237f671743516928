"""The pieces of seeding that look at the prompt's neighbourhood: background, noise, neighbours, edge.

A prompt's window is rarely just background and one particle. A tight box is
mostly particle; in a dense field the window holds a dozen neighbours, some 2 px
away. So nothing here is estimated over "the window": the background level and
its noise come from the pixels that are background (a sigma-clipped mode, with
the prompt's box left out), the particle is cut from its neighbours along the
valleys of the smoothed contrast (a marker watershed), and its boundary is put
where the contrast changes fastest, not at a fixed fraction of its peak (spheres
and rods thin towards their rim: a fixed fraction would inherit their profile).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from scipy import ndimage
from skimage.morphology import h_maxima
from skimage.segmentation import watershed

from sam4em_live.segment.embedded.window import Window, block_mean, float32_median

if TYPE_CHECKING:
    from collections.abc import Callable

#: Pixels sampled for the background's level and noise (medians of a whole window cost more than the rest).
BACKGROUND_SAMPLES = 3000
#: Sigma-clipping: values further than this many robust sigmas from the background level are not background.
CLIP_SIGMAS = 2.5
#: Iterations of the clip (a dense field's particles are gone after two or three).
CLIP_ITERATIONS = 4
#: A neighbour's peak must stand this many noise sigmas above the valley to the prompted particle ...
SPLIT_SIGMAS = 4.0
#: ... and this fraction of the particle's level (a noisy plateau is one particle, not many).
SPLIT_FRACTION = 0.25
#: Fraction of the prompt's level that marks the particle's core (its peak contrast is read there).
REGION_FRACTION = 0.5
#: Edge thresholds tried, as fractions of the particle's peak contrast.
EDGE_FRACTIONS = tuple(np.round(np.arange(0.10, 0.71, 0.05), 2))
#: The edge threshold stays this many noise sigmas above the background (a contour in the noise is no edge).
EDGE_MIN_SIGMAS = 2.5


#: Block size (pixels) of the means the background plane is fitted to.
PLANE_BLOCK_PX = 4
#: The background surface started from the window halves' slope must fit this many times the blocks of the
#: one started flat (a large particle on one side of the window tilts the halves' medians).
TILT_MARGIN = 1.1


class Background(NamedTuple):
    """Background level and noise (robust sigma) of a smoothed contrast window."""

    level: float
    noise: float


def robust_background(smooth: np.ndarray, usable: np.ndarray, white_noise: float = 0.0) -> Background:
    """The background of ``smooth`` over the ``usable`` pixels: sigma-clipped around the histogram's mode.

    Particles (of either polarity) and their neighbours are the clipped tails; the mode
    starts the clip because in a dense field the median is already pulled towards them.
    ``white_noise`` (the noise the smoothing leaves of white pixel noise, measured from
    neighbouring pixels' differences, which particles hardly touch) sets the histogram's
    resolution and is the floor of the noise: where half the window is particles, their
    smoothed edges would otherwise fill the histogram between them and the background.
    """
    step = max(1, int(math.sqrt(smooth.size / BACKGROUND_SAMPLES)))  # the window is smooth: a sample will do
    values = smooth[::step, ::step][usable[::step, ::step]]
    if values.size < 16:  # a window that is all prompt: the whole window is the best there is
        values = smooth.ravel()
    # Sorted once: the percentiles, the histogram's counts and the clipped medians are then read off it
    # (the same floats as np.percentile, np.histogram and np.median; a window costs ~10 of these a scale).
    ordered = np.sort(values.astype(np.float32, copy=False))
    low, high = _percentile(ordered, 1.0), _percentile(ordered, 99.0)
    if not high > low:
        return Background(float(low), max(white_noise, 1e-6))
    bins = int(np.clip((high - low) / (0.5 * white_noise), 16, 256)) if white_noise > 0 else 64
    edges = np.linspace(low, high, bins + 1)
    counts = np.diff(np.searchsorted(ordered, edges, side="left"))
    counts[-1] += int(np.searchsorted(ordered, high, side="right") - np.searchsorted(ordered, high, side="left"))
    counts = ndimage.uniform_filter1d(counts.astype(float), 3 if bins <= 64 else 5)
    level = float(0.5 * (edges[np.argmax(counts)] + edges[np.argmax(counts) + 1]))
    noise = white_noise if white_noise > 0 else 1.4826 * float32_median(np.abs(ordered - level))
    for _ in range(CLIP_ITERATIONS):
        kept = ordered[np.abs(ordered - level) < CLIP_SIGMAS * max(noise, 1e-9)]  # still sorted
        if kept.size < 16:
            break
        half = kept.size // 2
        previous = (level, noise)
        level = float(kept[half] if kept.size % 2 else np.add.reduce(kept[half - 1 : half + 1]) / 2)
        # The MAD of a normal clipped at 2.5 sigma is 1.5 % below the unclipped one.
        noise = max(white_noise, 1.4826 * 1.015 * float32_median(np.abs(kept - level)))
        if (level, noise) == previous:  # converged: the next clip keeps the same values
            break
    return Background(level, max(noise, 1e-6))


def _percentile(ordered: np.ndarray, q: float) -> float:
    """``np.percentile(values, q)`` (linear interpolation) of the sorted float32 ``ordered``, as a float."""
    at = q / 100.0 * (ordered.size - 1)
    below = math.floor(at)
    above = min(below + 1, ordered.size - 1)
    a, b, t = float(ordered[below]), float(ordered[above]), at - below
    return b - (b - a) * (1 - t) if t >= 0.5 else a + (b - a) * t


class Territory(NamedTuple):
    """The pixels of the prompted particle's basin, and those of its neighbours' basins (bool, window)."""

    own: np.ndarray
    neighbours: np.ndarray


def particle_territory(signal: np.ndarray, seed_rc: tuple[int, int], level: float, noise: float,
                       allowed: np.ndarray) -> Territory:
    """The pixels that belong to the particle at ``seed_rc`` rather than to a neighbour or the background.

    ``signal`` is the smoothed contrast above background (particle positive) and
    ``level`` its value at the prompt. Every pixel above the lowest edge threshold
    is given to the peak it drains to (watershed of the smoothed contrast from its
    significant maxima: a peak counts only if it stands ``SPLIT_SIGMAS`` noise sigmas
    and ``SPLIT_FRACTION`` of the level above the valley to the next peak); the
    prompted particle's territory is the basin that holds the prompt.
    """
    low = max(EDGE_FRACTIONS[0] * level, EDGE_MIN_SIGMAS * noise)
    region = (signal > low) & allowed
    labels, _ = ndimage.label(region)
    territory, neighbours = np.zeros_like(region), np.zeros_like(region)
    if labels[seed_rc] == 0:
        return Territory(territory, neighbours)
    rows, cols = bounding_box(labels == labels[seed_rc])
    component = labels[rows, cols] == labels[seed_rc]
    patch = np.where(component, signal[rows, cols], low)
    height = max(SPLIT_SIGMAS * noise, SPLIT_FRACTION * level)
    peaks = (patch == ndimage.maximum_filter(patch, size=5)) & (patch > low + height)
    count = 1
    if np.count_nonzero(peaks) > 1:  # perhaps several particles: which peaks stand out of their valleys
        markers, count = ndimage.label(h_maxima(patch.astype(np.float64), height))
    if count <= 1:  # one particle: the whole component
        territory[rows, cols] = component
        return Territory(territory, neighbours)
    basins = watershed(-patch, markers, mask=component)
    local = (seed_rc[0] - rows.start, seed_rc[1] - cols.start)
    territory[rows, cols] = basins == basins[local]
    neighbours[rows, cols] = (basins > 0) & (basins != basins[local])
    return Territory(territory, neighbours)


def edge_threshold(signal: np.ndarray, territory: Territory, seed_rc: tuple[int, int], peak: float,
                   noise: float) -> float:
    """The iso-contrast level of the particle's edge: the contour of ``signal`` with the steepest mean slope.

    At a blurred step (a plate's rim, the sqrt-profile rim of a sphere) the slope is largest
    at the edge itself, so the chosen contour is the particle's outline whatever its
    profile and whatever the smoothing (within the smoothing's rounding of corners).
    """
    rows, cols = bounding_box(territory.own)
    rows = slice(max(rows.start - 2, 0), rows.stop + 2)  # the work is on the particle's bounding box
    cols = slice(max(cols.start - 2, 0), cols.stop + 2)
    signal, own = signal[rows, cols], territory.own[rows, cols]
    seed_rc = (seed_rc[0] - rows.start, seed_rc[1] - cols.start)
    gy, gx = np.gradient(signal)
    slope = np.hypot(gx, gy)
    best, best_slope = 0.5 * peak, -1.0
    shared = ndimage.binary_dilation(territory.neighbours[rows, cols])  # where it meets a neighbour: no edge
    for fraction in EDGE_FRACTIONS:
        threshold = float(fraction) * peak
        if threshold < EDGE_MIN_SIGMAS * noise:
            continue
        inside = own & (signal > threshold)
        if not inside[seed_rc]:
            break
        rim = inside & ~eroded(inside)
        rim &= ~shared
        if rim.sum() < 4:
            continue
        mean_slope = float(slope[rim].mean())
        if mean_slope > best_slope:
            best, best_slope = threshold, mean_slope
    return best


def eroded(mask: np.ndarray) -> np.ndarray:
    """``ndimage.binary_erosion(mask)`` (a 4-neighbour cross, nothing outside the array) by five slices.

    The same pixels; `edge_threshold` erodes a particle's box a dozen times per seed, and the
    generic filter's set-up cost more than the erosion.
    """
    out = np.zeros_like(mask)
    out[1:-1, 1:-1] = mask[1:-1, 1:-1] & mask[:-2, 1:-1] & mask[2:, 1:-1] & mask[1:-1, :-2] & mask[1:-1, 2:]
    return out


def dilated(mask: np.ndarray, iterations: int) -> np.ndarray:
    """``ndimage.binary_dilation(mask, iterations=iterations)``, worked on the mask's box grown by ``iterations``.

    The same pixels: a dilation reaches ``iterations`` pixels, and a particle's region is a small part
    of its window (each pass of the generic filter runs over all of it).
    """
    out = np.zeros_like(mask)
    if not mask.any():
        return out
    rows, cols = bounding_box(mask)
    rows = slice(max(rows.start - iterations, 0), min(rows.stop + iterations, mask.shape[0]))
    cols = slice(max(cols.start - iterations, 0), min(cols.stop + iterations, mask.shape[1]))
    out[rows, cols] = ndimage.binary_dilation(mask[rows, cols], iterations=iterations)
    return out


def smoothed(window: Window, scale: float) -> np.ndarray:
    """Gaussian smoothing of the window's contrast; pixels outside the frame are left out, not read as 0."""
    smooth = ndimage.gaussian_filter(window.darkness, scale, mode="nearest")
    if window.valid.all():
        return smooth
    weight = ndimage.gaussian_filter(window.valid.astype(np.float32), scale, mode="nearest")
    return np.where(weight > 0.05, smooth / np.maximum(weight, 0.05), 0.0).astype(np.float32)


def white_noise_after(pixel_noise: float, scale: float) -> float:
    """What Gaussian smoothing at ``scale`` px leaves of white pixel noise ``pixel_noise``."""
    return pixel_noise / (2.0 * math.sqrt(math.pi) * scale)


def noise_gain(valid: np.ndarray, scale: float, at: tuple[int, int]) -> float:
    """How much noisier `smoothed` is at pixel ``at`` than inside the frame (sqrt of sum w² / (sum w)²)."""
    r, c = at
    reach = int(math.ceil(3 * scale))
    patch = valid[max(r - reach, 0) : r + reach + 1, max(c - reach, 0) : c + reach + 1].astype(np.float32)
    rows, cols = np.ogrid[max(r - reach, 0) - r : min(r + reach + 1, valid.shape[0]) - r,
                          max(c - reach, 0) - c : min(c + reach + 1, valid.shape[1]) - c]
    weight = np.exp(-(rows**2 + cols**2) / (2 * scale**2)) * patch
    full = np.exp(-(rows**2 + cols**2) / (2 * scale**2))
    inside = float((full**2).sum()) / float(full.sum()) ** 2  # an interior pixel, same kernel
    if not float(weight.sum()) > 0:
        return math.inf  # no pixel of the frame within reach: nothing was measured there
    here = float((weight**2).sum()) / float(weight.sum()) ** 2
    return math.sqrt(here / inside)


def flattened(window: Window, usable: np.ndarray, particle_left_out: bool = False) -> Window:
    """Remove a smooth background (a quadratic: gradients and vignetting) fitted to the background pixels.

    `background_surface`, subtracted from the window's in-frame pixels (those outside read 0).
    """
    surface = background_surface(window, usable, particle_left_out)
    return window if surface is None else without_surface(window, surface)


def without_surface(window: Window, surface: np.ndarray) -> Window:
    """``window`` less its background ``surface`` (float32, on the window); pixels outside the frame read 0."""
    flat = np.where(window.valid, window.darkness - surface, 0.0).astype(np.float32)
    return Window(window.x0, window.y0, flat, window.valid, window.background)


def background_surface(window: Window, usable: np.ndarray, particle_left_out: bool = False) -> np.ndarray | None:
    """The window's smooth background (a quadratic: gradients and vignetting), fitted to the background pixels.

    Fitted to 4 x 4 block means of ``usable`` pixels (not the prompt's box). A least-squares fit
    over the window would tilt towards a large particle off the window's centre (a click near its
    rim), so the plane starts from the medians of the window's halves (a gradient) and, again, from
    a flat plane at the blocks' mode (a large particle over half the window); each is refitted
    to the blocks within 3 noise sigmas of it (the noise from neighbouring blocks' differences, which
    particles hardly touch; the refit adds the quadratic terms of a vignette), and the surface with
    the most such blocks is the background.
    """
    edge = (window.darkness.shape[0] // PLANE_BLOCK_PX) * PLANE_BLOCK_PX
    blocks = block_mean(window.darkness[:edge, :edge], PLANE_BLOCK_PX).astype(float)
    full = block_mean(usable[:edge, :edge], PLANE_BLOCK_PX) > 0.999
    pairs = full[:, 1:] & full[:, :-1]
    rows, cols = np.nonzero(full)
    if rows.size < 16 or pairs.sum() < 16:
        return None  # too few background blocks: nothing is removed
    centre_px = 0.5 * (PLANE_BLOCK_PX - 1)
    r_px, c_px = PLANE_BLOCK_PX * rows + centre_px, PLANE_BLOCK_PX * cols + centre_px
    values = blocks[rows, cols]
    half = 0.5 * window.darkness.shape[0]
    u, v = (r_px - half) / half, (c_px - half) / half  # the quadratic terms on a unit scale
    design = np.stack([np.ones(rows.size), r_px, c_px, u * u, u * v, v * v], axis=1)
    noise = 1.4826 * float(np.median(np.abs(np.diff(blocks, axis=1)[pairs]))) / math.sqrt(2)
    tilted = np.array([0.0, _half_slope(values, r_px), _half_slope(values, c_px), 0.0, 0.0, 0.0])
    tilted[0] = float(np.median(values - tilted[1] * r_px - tilted[2] * c_px))
    counts, edges = np.histogram(values, bins=64, range=tuple(np.percentile(values, (1.0, 99.0))))
    mode = float(edges[np.argmax(counts)] + 0.5 * (edges[1] - edges[0]))
    # Two starts, each refitted to its inliers; the plane most of the window agrees with is the background.
    plane = design[:, :3]
    best, best_keep = tilted[:3], np.zeros(values.size, dtype=bool)
    for coeffs in (np.array([mode, 0.0, 0.0]), tilted[:3]):
        keep = np.zeros(values.size, dtype=bool)
        fitted: np.ndarray | None = None  # the blocks ``coeffs`` was fitted to
        for _ in range(4):
            keep = np.abs(values - plane @ coeffs) < 3.0 * max(noise, 1e-9)
            if keep.sum() < 8 or (fitted is not None and np.array_equal(keep, fitted)):
                break  # too few, or the blocks of the last fit: every further round fits them again
            coeffs = np.linalg.lstsq(plane[keep], values[keep], rcond=None)[0]
            fitted = keep
        if keep.sum() > TILT_MARGIN * best_keep.sum():  # the flat start refits to a gradient too: it wins ties
            best, best_keep = coeffs, keep
    coeffs = np.array([*best, 0.0, 0.0, 0.0])
    if best_keep.sum() >= 16:  # a vignette: the quadratic terms, fitted to the plane's background only
        curved = np.linalg.lstsq(design[best_keep], values[best_keep], rcond=None)[0]
        # A faint particle's blocks are inliers of the plane too, and a quadratic takes it for a bump:
        # unless the box left it out, the curve must fit clearly more of the window.
        margin = 1.0 if particle_left_out else TILT_MARGIN
        if (np.abs(values - design @ curved) < 3.0 * max(noise, 1e-9)).sum() > margin * best_keep.sum():
            coeffs = curved
    r, c = np.ogrid[0 : window.darkness.shape[0], 0 : window.darkness.shape[1]]
    u_all, v_all = (r - half) / half, (c - half) / half
    # Summed as a row part and a column part (the window's size in passes, not six): the same surface.
    surface = (coeffs[0] + coeffs[1] * r + coeffs[3] * u_all * u_all) + (coeffs[2] * c + coeffs[5] * v_all * v_all)
    if coeffs[4] != 0.0:
        surface += (coeffs[4] * u_all) * v_all
    return surface.astype(np.float32)


def _half_slope(values: np.ndarray, position: np.ndarray) -> float:
    """Background slope along ``position``: the medians of the two halves (a particle moves a median little)."""
    split = float(np.median(position))
    low, high = position <= split, position > split
    if low.sum() < 4 or high.sum() < 4:
        return 0.0
    run = float(position[high].mean() - position[low].mean())
    return (float(np.median(values[high])) - float(np.median(values[low]))) / max(run, 1e-9)


def filled(mask: np.ndarray) -> np.ndarray:
    """``binary_fill_holes`` on the mask's bounding box only (the window is much larger than a particle)."""
    rows, cols = bounding_box(mask)
    out = np.zeros_like(mask)
    out[rows, cols] = ndimage.binary_fill_holes(mask[rows, cols])
    return out


def bounding_box(mask: np.ndarray) -> tuple[slice, slice]:
    """The slices of a non-empty bool mask's bounding box (`ndimage.find_objects`' for it, without an int copy)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1)


def component_at(region: np.ndarray, seed_rc: tuple[int, int]) -> np.ndarray | None:
    """The connected component of ``region`` at ``seed_rc`` (or the nearest one); None if ``region`` is empty."""
    labels, count = ndimage.label(region)
    if count == 0:
        return None
    label = labels[seed_rc]
    if label == 0:  # seed pixel just outside: take the nearest component
        dist = ndimage.distance_transform_edt(labels == 0, return_indices=True)[1]
        label = labels[dist[0][seed_rc], dist[1][seed_rc]]
    return labels == label


def coarse_territory(window: Window, usable: np.ndarray, scale: float, seed_rc: tuple[int, int],
                     allowed: np.ndarray, pixel_noise: float, reach_px: int,
                     smooth: Callable[[float], np.ndarray] | None = None) -> Territory:
    """The prompted particle's territory, found at ``scale`` (twice the segmentation scale, or that scale).

    At the fine scale a click's strongest pixel can be a noise bump (near a corner, say) that the
    watershed would make a particle of its own; at twice the scale noise is halved and a 2 px gap
    between neighbours is still a valley. The territory is widened back by the scale (not into a
    neighbour's) so the fine outline is not cut by the coarse one. The peak is looked for within
    ``reach_px`` (or the scale) of ``seed_rc``. ``smooth``: the window smoothed at a scale, if not by
    `smoothed` (`seed_frame.WindowSmoothing`: a crop of the frame's).
    """
    coarse = smoothed(window, scale) if smooth is None else smooth(scale)
    background = robust_background(coarse, usable, white_noise_after(pixel_noise, scale))
    signal = coarse - np.float32(background.level)
    reach = max(reach_px, int(math.ceil(scale)))
    r, c = seed_rc
    rows = slice(max(r - reach, 0), r + reach + 1)
    cols = slice(max(c - reach, 0), c + reach + 1)
    k = int(np.argmax(signal[rows, cols]))
    peak_rc = (rows.start + k // signal[rows, cols].shape[1], cols.start + k % signal[rows, cols].shape[1])
    coarse_territory = particle_territory(signal, peak_rc, float(signal[peak_rc]), background.noise, allowed)
    widened = dilated(coarse_territory.own, int(math.ceil(scale)) + 1)
    return Territory(widened & allowed & ~coarse_territory.neighbours, coarse_territory.neighbours)
