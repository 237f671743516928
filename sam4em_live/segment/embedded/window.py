"""Local windows of a frame as relative contrast ("darkness"), and block-mean pyramids.

Only the pixels around a particle are ever converted to float: a 1024² uint16
frame is never filtered or converted as a whole on the tracking path.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from sam4em_live.segment.embedded.stacking import stack


class WindowExtent(NamedTuple):
    """A square frame window: top-left pixel (x0, y0), frame coordinates (may lie outside), and edge (pixels)."""

    x0: int
    y0: int
    edge: int


class BlockLevel(NamedTuple):
    """One pyramid level of a window: block-mean relative contrast, valid fraction and the background used.

    ``valid`` is the block mean of the in-frame, unclaimed indicator, or None where every pixel is.
    """

    contrast: np.ndarray
    valid: np.ndarray | None
    background: float


@dataclass(frozen=True, slots=True)
class Window:
    """Relative contrast ``1 - I / background`` on a frame window (particle positive).

    ``x0, y0`` is the window's top-left pixel in frame coordinates (may be
    negative: pixels outside the frame, saturated pixels and pixels claimed by
    other particles read as background, 0). ``valid`` marks in-frame,
    unclaimed pixels.
    """

    x0: int
    y0: int
    darkness: np.ndarray
    valid: np.ndarray
    background: float


def frame_window(
    pixels: np.ndarray,
    x0: int,
    y0: int,
    height: int,
    width: int,
    polarity: float,
    claimed: np.ndarray | None = None,
    background: float | None = None,
) -> Window:
    """Extract a ``height`` x ``width`` window at (x0, y0) as relative contrast.

    ``polarity`` is +1 for particles darker than the background (bright field)
    and -1 for brighter ones. ``claimed`` is an optional boolean frame-window
    mask of the same shape (pixels already given to another particle).
    """
    rows, cols = pixels.shape
    ya, yb = max(y0, 0), min(y0 + height, rows)
    xa, xb = max(x0, 0), min(x0 + width, cols)
    out = np.empty((height, width), dtype=np.float32)
    valid = np.zeros((height, width), dtype=bool)
    if ya >= yb or xa >= xb:
        out.fill(0.0)
        return Window(x0, y0, out, valid, 1.0)
    raw = pixels[ya:yb, xa:xb]
    if raw.shape != out.shape:
        out.fill(0.0)  # outside the frame; set to background below
    inner = out[ya - y0 : yb - y0, xa - x0 : xb - x0]
    inner[...] = raw
    valid[ya - y0 : yb - y0, xa - x0 : xb - x0] = True
    if raw.dtype.kind in "ui" and _saturated(raw):  # saturated detector pixels carry no information
        valid[ya - y0 : yb - y0, xa - x0 : xb - x0] &= raw < _integer_max(raw.dtype)
    if claimed is not None:
        valid &= ~claimed
    if background is None and valid.all():
        background = float32_mean(inner)
    elif background is None:
        background = float32_mean(out[valid]) if valid.any() else 1.0
    if not math.isfinite(background) or abs(background) < 1e-6:
        background = 1.0
    # d = polarity * (1 - I / b), clipped: no real particle is darker than black.
    out *= np.array(-polarity / background, np.float32)
    out += np.array(polarity, np.float32)
    clip_unit(out)
    if not valid.all():
        out[~valid] = 0.0
    return Window(x0, y0, out, valid, background)


#: Largest value of each integer pixel type: a saturated detector pixel (`np.iinfo` costs a few us a call).
_INTEGER_MAX = {np.dtype(t): int(np.iinfo(t).max) for t in (np.uint8, np.uint16, np.uint32, np.uint64,
                                                             np.int8, np.int16, np.int32, np.int64)}


def _integer_max(dtype: np.dtype) -> int:
    """Largest value of an integer dtype: the table's, or `np.iinfo`'s for another byte order."""
    top = _INTEGER_MAX.get(dtype)
    return int(np.iinfo(dtype).max) if top is None else top


def _saturated(raw: np.ndarray) -> bool:
    """Whether integer pixels reach their type's largest value (``raw.max()`` without its Python layer)."""
    return bool(np.maximum.reduce(raw, axis=None) >= _integer_max(raw.dtype))


# Constants as 0-d float32 arrays, not np.float32 scalars: the same floats in a ufunc, and the call
# skips numpy's scalar conversion (~0.2-0.4 us of a ~0.5 us call on a small window). Hence also the
# ``np.array(value, np.float32)`` factors on the tracking path.
_ONE, _MINUS_ONE = np.array(1.0, np.float32), np.array(-1.0, np.float32)


def float32_mean(values: np.ndarray) -> float:
    """``float(values.mean())`` of a float32 array, without `np.mean`'s Python layers (~5 us a call).

    The same float: `np.mean` sums with ``np.add.reduce`` over all axes in float32 and divides
    the float32 sum by the count (tests/test_embedded_fast_paths.py).
    """
    return float(np.add.reduce(values, axis=None) / values.size)


def clip_unit(values: np.ndarray) -> None:
    """``np.clip(values, -1.0, 1.0, out=values)`` of a float32 array, in place, as two ufunc calls.

    The same floats (NaN stays NaN); `np.clip`'s Python layers cost more than clipping a window
    of a few hundred pixels, and every search clips two.
    """
    np.minimum(values, _ONE, out=values)
    np.maximum(values, _MINUS_ONE, out=values)


def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean over non-overlapping ``factor`` x ``factor`` blocks: a new float32 array (shape must divide).

    Strided slice additions: an order of magnitude faster than reshape-and-reduce
    over a short last axis, and they convert integer pixels on the fly.
    """
    if factor == 1:  # a new array: callers scale it in place, and the frame's pixels must stay as sent
        return image.astype(np.float32)
    rows = image[0::factor].astype(np.float32)
    for i in range(1, factor):
        rows += image[i::factor]
    out = rows[:, 0::factor].copy()
    for j in range(1, factor):
        out += rows[:, j::factor]
    out *= np.array(1.0 / (factor * factor), np.float32)
    return out


def block_darkness(pixels: np.ndarray, x0: int, y0: int, edge: int, factor: int, polarity: float,
                   background: float | None = None, clip_pixels: bool = False) -> BlockLevel | None:
    """Fast path: block-mean relative contrast of an in-frame, unsaturated window, and its background.

    The contrast is affine in the intensity, so the raw pixels are block-averaged first and
    only the ``factor``² times smaller result is converted (every pixel is valid: ``valid`` is
    None). ``background`` defaults to the window's mean. With ``clip_pixels`` the result
    equals the block mean of `frame_window`'s contrast (to float rounding; the reference
    path, compared in the tests): its per-pixel clip of the contrast to [-1, 1] is, for
    pixels >= 0, a clip of the intensity to 2 x background, applied before averaging. Without
    it the clip applies to the block means (the coarse level: cheaper, and a block mean
    rarely reaches the bounds). Returns None when the window leaves the frame or holds
    saturated pixels (the caller then uses `frame_window`, which handles both).
    """
    rows, cols = pixels.shape
    if x0 < 0 or y0 < 0 or x0 + edge > cols or y0 + edge > rows:
        return None
    raw = pixels[y0 : y0 + edge, x0 : x0 + edge]
    if raw.dtype.kind in "ui" and _saturated(raw):
        return None
    if clip_pixels:
        if background is None or raw.dtype.kind not in "ui":  # float data may hold negative values
            return None
        raw = np.minimum(raw, np.array(2.0 * background, np.float32), dtype=np.float32)
    level = block_mean(raw, factor)
    if background is None:
        background = float32_mean(level)
    if not math.isfinite(background) or abs(background) < 1e-6:
        return None
    level *= np.array(-polarity / background, np.float32)
    level += np.array(polarity, np.float32)
    clip_unit(level)
    return BlockLevel(level, None, background)


def block_darkness_stack(pixels: np.ndarray, origins: list[tuple[int, int]], edge: int, factor: int,
                         polarities: list[float], backgrounds: list[float] | None = None,
                         clip_pixels: bool = False) -> list[BlockLevel | None]:
    """`block_darkness` of several windows of one ``edge`` at ``origins`` (x0, y0), as stacked operations.

    The same floats as one call per window (the same additions in the same order, the per-window
    scalars as float32 columns; tests/test_embedded_fast_paths.py), in a few calls for all: with tens
    of particles a frame, numpy's per-call overhead is the cost. None where `block_darkness` returns None.
    """
    count = len(origins)
    out: list[BlockLevel | None] = [None] * count
    rows, cols = pixels.shape
    integer = pixels.dtype.kind in "ui"
    inside = [i for i, (x0, y0) in enumerate(origins) if x0 >= 0 and y0 >= 0 and x0 + edge <= cols
              and y0 + edge <= rows and (integer or not clip_pixels)]
    if clip_pixels:
        if backgrounds is None:
            return out
        inside = [i for i in inside if math.isfinite(backgrounds[i]) and abs(backgrounds[i]) >= 1e-6]
    if not inside:
        return out
    raw = stack([pixels[origins[i][1] : origins[i][1] + edge, origins[i][0] : origins[i][0] + edge]
                    for i in inside])
    if integer:
        unsaturated = (np.maximum.reduce(raw.reshape(len(inside), -1), axis=1) < _integer_max(raw.dtype)).tolist()
        if not all(unsaturated):
            raw = raw[np.asarray(unsaturated)]
            inside = [i for i, ok in zip(inside, unsaturated, strict=True) if ok]
            if not inside:
                return out
    n = len(inside)
    if clip_pixels:
        assert backgrounds is not None
        raw = np.minimum(raw, np.array([2.0 * backgrounds[i] for i in inside], np.float32).reshape(n, 1, 1),
                         dtype=np.float32)
    level = _stack_block_mean(raw, factor)
    if backgrounds is None:
        means = (np.add.reduce(level.reshape(n, -1), axis=1) / (level.shape[1] * level.shape[2])).tolist()
    else:
        means = [backgrounds[i] for i in inside]
    good = [math.isfinite(b) and abs(b) >= 1e-6 for b in means]
    level *= np.array([-polarities[i] / b if ok else 0.0 for i, b, ok in zip(inside, means, good, strict=True)],
                      np.float32).reshape(n, 1, 1)
    level += np.array([polarities[i] for i in inside], np.float32).reshape(n, 1, 1)
    clip_unit(level)
    for k, (i, b, ok) in enumerate(zip(inside, means, good, strict=True)):
        if ok:
            out[i] = BlockLevel(level[k], None, b)
    return out


def _stack_block_mean(stack: np.ndarray, factor: int) -> np.ndarray:
    """`block_mean` of each image of a stack (N, n, n): a new float32 stack, the same additions in the same order."""
    if factor == 1:
        return stack.astype(np.float32)
    rows = stack[:, 0::factor].astype(np.float32)
    for i in range(1, factor):
        rows += stack[:, i::factor]
    out = rows[:, :, 0::factor].copy()
    for j in range(1, factor):
        out += rows[:, :, j::factor]
    out *= np.array(1.0 / (factor * factor), np.float32)
    return out


def zero_padded(image: np.ndarray, width: int = 1) -> np.ndarray:
    """``np.pad(image, width)`` (zeros all round): the same array at a tenth of `np.pad`'s ~40 us a call."""
    out = np.zeros((image.shape[0] + 2 * width, image.shape[1] + 2 * width), dtype=image.dtype)
    out[width : width + image.shape[0], width : width + image.shape[1]] = image
    return out


def bilinear(padded: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Sample ``padded`` (an image with a 1-pixel zero border) at (rows, cols) of the unpadded image.

    Points outside read as 0. Several times faster than ``ndimage.map_coordinates``
    on the few thousand points per call used here.
    """
    height, width = padded.shape
    r = np.minimum(np.maximum(rows + np.float32(1.0), np.float32(0.0)), np.float32(height - 1.001))
    c = np.minimum(np.maximum(cols + np.float32(1.0), np.float32(0.0)), np.float32(width - 1.001))
    r0 = r.astype(np.int32)
    c0 = c.astype(np.int32)
    fr = r - r0
    fc = c - c0
    index = r0 * width + c0
    flat = padded.ravel()
    top_left, top_right = flat[index], flat[index + 1]
    bottom_left, bottom_right = flat[index + width], flat[index + width + 1]
    top = top_left + fc * (top_right - top_left)
    bottom = bottom_left + fc * (bottom_right - bottom_left)
    return top + fr * (bottom - top)


def bilinear_inside(image: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Sample ``image`` at (rows, cols), all of which lie in [0, height - 1) x [0, width - 1).

    The caller guarantees the range, so there is no clipping or padding: about half
    the work of `bilinear` on the few thousand points of an appearance update.
    """
    width = image.shape[1]
    r0 = rows.astype(np.int32)  # floor: coordinates are >= 0
    c0 = cols.astype(np.int32)
    fr = np.subtract(rows, r0, dtype=np.float32)  # float32 throughout (int32 - float32 would promote)
    fc = np.subtract(cols, c0, dtype=np.float32)
    r0 *= width
    r0 += c0  # flat index of the top-left neighbour
    flat = image.ravel()
    top = flat.take(r0)
    top_right = flat[1:].take(r0)
    bottom = flat[width:].take(r0)
    bottom_right = flat[width + 1 :].take(r0)
    top_right -= top
    top_right *= fc
    top += top_right
    bottom_right -= bottom
    bottom_right *= fc
    bottom += bottom_right
    bottom -= top
    bottom *= fr
    top += bottom
    return top


#: Fewest valid neighbour differences for a noise estimate.
MIN_NOISE_SAMPLES = 64


def robust_noise(image: np.ndarray, valid: np.ndarray | None = None) -> float | None:
    """Per-pixel noise std from the MAD of horizontal neighbour differences (every other row).

    Differences cancel smooth background and particle interiors; only edges
    (a small fraction of pixels) are outliers, which the median ignores. With
    ``valid`` (fraction of valid pixels per cell) only fully valid pairs count;
    None if too few remain.
    """
    diff = image[::2, 1:] - image[::2, :-1]
    if valid is not None:
        both = (valid[::2, 1:] > 0.999) & (valid[::2, :-1] > 0.999)
        if both.sum() < MIN_NOISE_SAMPLES:
            return None
        diff = diff[both]
    mad = float32_median(np.abs(diff))
    return max(mad * 1.4826 / _SQRT2, 1e-6)  # a numpy float64, as the matches expect


_SQRT2 = np.sqrt(2.0)


def float32_percentile(values: np.ndarray, q: float) -> float:
    """``float(np.percentile(values, q))`` of a non-empty float32 array, without its Python layers (~40 us).

    The same float (numpy 2, a Python ``q``, linear method): the order statistics either side of the
    virtual index ``(n - 1) q / 100`` (from one partition), interpolated as numpy's ``_lerp`` does in float32
    with the weight a Python float; NaN if the array holds one (tests/test_embedded_percentile.py).
    """
    count = values.size
    at = (count - 1) * (q / 100)
    if count == 0 or not at >= 0 or values.dtype != np.float32:
        return float(np.percentile(values, q))
    below = math.floor(at)
    above = below + 1 if at < count - 1 else below
    if at >= count - 1:
        below = above = count - 1
    part = np.partition(values, [below, above, count - 1] if above < count - 1 else [below, count - 1], axis=None)
    if math.isnan(part[-1]):
        return math.nan
    a, b, t = part[below], part[above], at - below
    difference = b - a
    return float(b - difference * (1 - t)) if t >= 0.5 else float(a + difference * t)


def float32_median(values: np.ndarray) -> float:
    """``float(np.median(values))`` of a non-empty float32 array, without `np.median`'s Python layers (~9 us).

    The same float: `np.median` partitions the flattened values at the middle (and last, for
    NaN) positions, averages the one or two middle values as `np.mean` does (float32 sum, then
    division by the count) and returns the last value instead when it is NaN
    (tests/test_embedded_fast_paths.py).
    """
    count = values.size
    if count == 0:
        return float(np.median(values))
    half = count // 2
    if count % 2:
        part = np.partition(values, [half, -1], axis=None)
        middle = part[half]
    else:
        part = np.partition(values, [half - 1, half, -1], axis=None)
        middle = np.add.reduce(part[half - 1 : half + 1]) / 2
    last = part[-1]
    return float(last) if math.isnan(last) else float(middle)
