"""Local windows of a frame as relative contrast ("darkness"), and block-mean pyramids.

Only the pixels around a particle are ever converted to float: a 1024² uint16
frame is never filtered or converted as a whole on the tracking path.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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
    inner = out[ya - y0 : yb - y0, xa - x0 : xb - x0]
    inner[...] = raw
    valid[ya - y0 : yb - y0, xa - x0 : xb - x0] = True
    if raw.dtype.kind in "ui":
        top = np.iinfo(raw.dtype).max
        if raw.max() >= top:  # saturated detector pixels carry no information
            valid[ya - y0 : yb - y0, xa - x0 : xb - x0] &= raw < top
    if claimed is not None:
        valid &= ~claimed
    if valid.all():
        background = float(inner.mean())
    else:
        background = float(out[valid].mean()) if valid.any() else 1.0
    if not np.isfinite(background) or abs(background) < 1e-6:
        background = 1.0
    # d = polarity * (1 - I / b), clipped: no real particle is darker than black.
    out *= np.float32(-polarity / background)
    out += np.float32(polarity)
    np.clip(out, -1.0, 1.0, out=out)
    if not valid.all():
        out[~valid] = 0.0
    return Window(x0, y0, out, valid, background)


def block_mean(image: np.ndarray, factor: int) -> np.ndarray:
    """Mean over non-overlapping ``factor`` x ``factor`` blocks (shape must divide)."""
    if factor == 1:
        return image
    rows, cols = image.shape
    summed = image.reshape(rows, cols // factor, factor).sum(axis=2)
    summed = summed.reshape(rows // factor, factor, cols // factor).sum(axis=1)
    summed *= np.float32(1.0 / (factor * factor))
    return summed


def robust_noise(image: np.ndarray) -> float:
    """Per-pixel noise std from the MAD of horizontal neighbour differences.

    Differences cancel smooth background and particle interiors; only edges
    (a small fraction of pixels) are outliers, which the median ignores.
    """
    diff = np.diff(image, axis=1).ravel()
    mad = float(np.median(np.abs(diff)))
    return max(mad * 1.4826 / np.sqrt(2.0), 1e-6)
