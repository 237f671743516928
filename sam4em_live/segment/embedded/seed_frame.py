"""What the prompts of one frame share when they are seeded together: the frame's contrast, smoothed once per scale.

Seeding a prompt analyses windows around it (97² px, grown to 193² and 385² where the particle's
region reaches the edge or it is not found) at up to seven smoothing scales and twice those (its
territory). In a dense field fifty prompts' windows cover the frame many times over, and smoothing
them one by one was most of the time of a batch. Gaussian smoothing is linear, so a window's
smoothed contrast is a crop of the frame's smoothed contrast, made the window's own by two cheap
steps: the window's contrast ``1 - I / b_w`` is affine in the frame's ``1 - I / b`` (scale
``b / b_w``), and the window's background surface (a quadratic, `seed_region.background_surface`) is
subtracted unsmoothed -- a Gaussian adds only a constant to a quadratic, and every reader subtracts
the smoothed window's background level (`seed_region.robust_background`) anyway. What differs from
smoothing the window itself is its border: the crop has read the real pixels beyond it, where the
window saw its edge pixels repeated.

`SeedFrame` smooths lazily (a scale is computed the first time a window asks for it) over one region
per batch: the bounding box of every window its prompts may need. A batch whose windows overlap too
little to share (one prompt, or a few far apart on a large frame) gets no region, and each window is
smoothed on its own as before (`SeedFrame.smoothed` returns None).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
import scipy.fft
from scipy import ndimage

from sam4em_live.segment.embedded.seed_region import background_surface, smoothed, without_surface
from sam4em_live.segment.embedded.window import Window, frame_window, robust_noise

if TYPE_CHECKING:
    from collections.abc import Sequence

#: Below this scale (pixels) the frame is smoothed by direct convolution (`ndimage.gaussian_filter`, as the
#: windows are: the sampled kernel), above it through the FFT (a sampled Gaussian's spectrum differs from the
#: continuous one by < 1e-4 of the contrast from 2 px up, 2e-3 at 1 px).
FFT_MIN_SCALE_PX = 6.0
#: Like `ndimage.gaussian_filter`: the kernel reaches this many sigmas (the FFT's zero padding too).
TRUNCATE_SIGMAS = 4.0
#: Where less than this weight of the smoothing kernel lies on the frame, the smoothed contrast reads 0
#: (`seed_region.smoothed`).
MIN_WEIGHT = 0.05


class SeedFrame:
    """The frame a batch of prompts is seeded on, and its contrast smoothed at each scale a window asked for.

    ``extent`` (x0, y0, x1, y1: frame pixels, x1 and y1 exclusive, may reach outside the frame) is the
    region smoothed: every window a prompt of the batch may need; None: no region (each window smoothed
    on its own). ``max_scale_px``: the largest scale asked of the FFT (its zero padding).
    """

    def __init__(self, pixels: np.ndarray, extent: tuple[int, int, int, int] | None = None,
                 max_scale_px: float = 0.0) -> None:
        self.pixels = pixels
        self.extent = extent
        self.max_scale_px = max_scale_px
        #: The frame's particle polarity (`seed_prompt.frame_polarity`), read once when a prompt needs it.
        self.sign: float | None = None
        self._contrast: Window | None = None
        self._spectra: tuple[np.ndarray, np.ndarray | None, tuple[int, int]] | None = None
        self._smoothed: dict[float, tuple[np.ndarray, np.ndarray | None]] = {}
        #: A click's window prepared by `seed_prompt.click_peaks`, kept for the click's own seed (`point_window`).
        self.point_windows: dict[tuple[int, int, int], PointWindow] = {}

    def smoothed(self, window: Window, surface: np.ndarray | None, scale: float) -> np.ndarray | None:
        """``seed_region.smoothed`` of ``window`` less its background ``surface`` (None: none removed), cropped.

        ``window`` is as `window.frame_window` cut it (its own background ``b_w``); None where this
        frame has no region or the window's part that the frame's smoothing reaches is not in it (the
        caller smooths the window). Pixels beyond that reach read 0, as `seed_region.smoothed` leaves them.
        """
        if self.extent is None or scale > self.max_scale_px:
            return None
        ex0, ey0, ex1, ey1 = self.extent
        rows, cols = window.darkness.shape
        # The window's part within the smoothing's reach of the frame must be in the region.
        reach = frame_reach(self.max_scale_px)
        height, width = self.pixels.shape
        wx0, wy0 = max(window.x0, -reach), max(window.y0, -reach)
        wx1, wy1 = min(window.x0 + cols, width + reach), min(window.y0 + rows, height + reach)
        if wx0 < ex0 or wy0 < ey0 or wx1 > ex1 or wy1 > ey1:
            return None
        frame = self._frame_contrast()
        region, reached = self._smoothed_region(scale)
        ratio = frame.background / window.background  # the window's contrast: 1 - ratio * (1 - the frame's)
        inner = (slice(wy0 - window.y0, wy1 - window.y0), slice(wx0 - window.x0, wx1 - window.x0))
        crop = (slice(wy0 - ey0, wy1 - ey0), slice(wx0 - ex0, wx1 - ex0))
        out = np.zeros((rows, cols), dtype=np.float32)
        part = out[inner]
        np.multiply(region[crop], np.float32(ratio), out=part)
        part += np.float32(1.0 - ratio)
        if surface is not None:
            part -= surface[inner]
        if reached is not None:  # no frame pixel within the kernel's reach (outside the frame): 0, as smoothed
            part[~reached[crop]] = 0.0
        return out

    def _frame_contrast(self) -> Window:
        """The region's contrast ``1 - I / b`` (b: the mean of its in-frame pixels); 0 outside the frame."""
        if self._contrast is None:
            assert self.extent is not None
            x0, y0, x1, y1 = self.extent
            self._contrast = frame_window(self.pixels, x0, y0, y1 - y0, x1 - x0, polarity=1.0)
        return self._contrast

    def _smoothed_region(self, scale: float) -> tuple[np.ndarray, np.ndarray | None]:
        """The region's contrast smoothed at ``scale`` px over its in-frame pixels (normalised by their weight).

        With the pixels the kernel reaches with enough weight (None: all of them); the others read 0.
        """
        if scale not in self._smoothed:
            frame = self._frame_contrast()
            if scale < FFT_MIN_SCALE_PX or scale > self.max_scale_px:
                values = ndimage.gaussian_filter(frame.darkness, scale, mode="constant", truncate=TRUNCATE_SIGMAS)
                weight = ndimage.gaussian_filter(frame.valid.astype(np.float32), scale, mode="constant",
                                                 truncate=TRUNCATE_SIGMAS)
            else:
                values, weight = self._fft_smoothed(scale)
            reached = weight > MIN_WEIGHT
            smooth = (values / np.maximum(weight, MIN_WEIGHT)).astype(np.float32)
            if reached.all():
                self._smoothed[scale] = (smooth, None)
            else:
                smooth[~reached] = 0.0
                self._smoothed[scale] = (smooth, reached)
        return self._smoothed[scale]

    def _fft_smoothed(self, scale: float) -> tuple[np.ndarray, np.ndarray]:
        """(contrast, in-frame weight) smoothed at ``scale`` through the FFT of the zero-padded region."""
        frame = self._frame_contrast()
        rows, cols = frame.darkness.shape
        if self._spectra is None:
            pad = int(math.ceil(TRUNCATE_SIGMAS * self.max_scale_px)) + 1
            shape = (scipy.fft.next_fast_len(rows + pad, real=True), scipy.fft.next_fast_len(cols + pad, real=True))
            values = scipy.fft.rfft2(frame.darkness, s=shape)
            weight = None if _separable(frame.valid) else scipy.fft.rfft2(frame.valid.astype(np.float32), s=shape)
            self._spectra = (values, weight, shape)
        values, weight, shape = self._spectra
        # The Gaussian's spectrum, separable: exp(-2 pi^2 sigma^2 f^2) along each axis.
        along_rows = np.exp(-2.0 * (math.pi * scale * scipy.fft.fftfreq(shape[0])) ** 2).astype(np.float32)
        along_cols = np.exp(-2.0 * (math.pi * scale * scipy.fft.rfftfreq(shape[1])) ** 2).astype(np.float32)
        gain = along_rows[:, None] * along_cols[None, :]
        smooth = scipy.fft.irfft2(values * gain, s=shape)[:rows, :cols]
        if weight is not None:
            return smooth, scipy.fft.irfft2(weight * gain, s=shape)[:rows, :cols]
        # The in-frame pixels are a rectangle: the weight is the product of the rows' and the columns'.
        in_rows = ndimage.gaussian_filter1d(frame.valid.any(axis=1).astype(np.float32), scale, mode="constant",
                                            truncate=TRUNCATE_SIGMAS)
        in_cols = ndimage.gaussian_filter1d(frame.valid.any(axis=0).astype(np.float32), scale, mode="constant",
                                            truncate=TRUNCATE_SIGMAS)
        return smooth, in_rows[:, None] * in_cols[None, :]


def _separable(valid: np.ndarray) -> bool:
    """Whether ``valid`` is a rectangle (the frame's part of the region; no saturated pixel in it)."""
    rows, cols = np.any(valid, axis=1), np.any(valid, axis=0)
    return bool(np.array_equal(valid, np.outer(rows, cols)))


class PointWindow(NamedTuple):
    """A point prompt's window as cut from the frame, its background surface, the window less it, its pixel noise."""

    raw: Window
    surface: np.ndarray | None
    flat: Window
    pixel_noise: float


def point_window(pixels: np.ndarray, x0: int, y0: int, size: int, frame: SeedFrame | None,
                 keep: bool = False) -> PointWindow:
    """The ``size``² window at (x0, y0) of a point prompt (no box: its background is fitted to all of it).

    A click's smallest window is prepared twice -- to follow the click to its peaks and to seed the
    click itself -- the same pixels, surface and noise: with ``keep`` it stays in ``frame`` for the
    next call for it, which takes it (each prepared window serves one seed).
    """
    key = (x0, y0, size)
    if frame is not None and key in frame.point_windows:
        return frame.point_windows[key] if keep else frame.point_windows.pop(key)
    raw = frame_window(pixels, x0, y0, size, size, polarity=1.0)
    surface = background_surface(raw, raw.valid)
    flat = raw if surface is None else without_surface(raw, surface)
    prepared = PointWindow(raw, surface, flat, robust_noise(flat.darkness, flat.valid.astype(np.float32)) or 0.0)
    if frame is not None and keep:
        frame.point_windows[key] = prepared
    return prepared


class WindowSmoothing:
    """A window's contrast less its background surface, smoothed at any scale (pixels): ``smooth(scale)``.

    A crop of the frame's smoothed contrast (`SeedFrame.smoothed`) where the frame has one for this
    window, else `seed_region.smoothed` of the flattened window itself; ``sign`` -1: negated (a bright
    particle's window read as a dark one's).
    """

    def __init__(self, frame: SeedFrame | None, raw: Window, surface: np.ndarray | None, flat: Window,
                 sign: float = 1.0) -> None:
        self.frame, self.raw, self.surface, self.flat, self.sign = frame, raw, surface, flat, sign

    def __call__(self, scale: float) -> np.ndarray:
        out = None if self.frame is None else self.frame.smoothed(self.raw, self.surface, scale)
        out = smoothed(self.flat, scale) if out is None else out
        if self.sign < 0:
            np.negative(out, out=out)
        return out

    def negated(self) -> WindowSmoothing:
        """The same window read for particles of the other polarity."""
        return WindowSmoothing(self.frame, self.raw, self.surface, self.flat, -self.sign)


def frame_reach(max_scale_px: float) -> int:
    """How far (pixels) beyond the frame smoothing at up to ``max_scale_px`` leaves a weight above `MIN_WEIGHT`."""
    return int(math.ceil(2.0 * max_scale_px))  # a Gaussian's tail beyond 1.65 sigma weighs < 0.05


def shared_extent(windows: Sequence[tuple[float, float, int]], shape: tuple[int, int],
                  max_scale_px: float, single_radius_px: int) -> tuple[int, int, int, int] | None:
    """The region a batch's windows share (x0, y0, x1, y1: x1, y1 exclusive), or None where sharing costs more.

    ``windows``: each prompt's window centre (x, y) and the half-size of the largest window it may
    need. The region is their bounding box, kept to the frame plus the smoothing's reach (`frame_reach`);
    it is shared when it is no larger than the prompts' windows of half-size ``single_radius_px``
    together (a dense field: many overlapping windows; one prompt, or a few far apart on a large
    frame, is smoothed window by window, which costs less).
    """
    if not windows:
        return None
    reach = frame_reach(max_scale_px)
    x0 = max(min(int(math.floor(x)) - r for x, _, r in windows), -reach)
    y0 = max(min(int(math.floor(y)) - r for _, y, r in windows), -reach)
    x1 = min(max(int(math.floor(x)) + r + 1 for x, _, r in windows), shape[1] + reach)
    y1 = min(max(int(math.floor(y)) + r + 1 for _, y, r in windows), shape[0] + reach)
    if x1 <= x0 or y1 <= y0 or (x1 - x0) * (y1 - y0) > len(windows) * (2 * single_radius_px + 1) ** 2:
        return None
    return x0, y0, x1, y1
