"""The prompted particle's territory among neighbours it touches: markers from its size, borders from fine detail.

A faint particle stands out of the noise only at a smoothing of several pixels, where
neighbours 2 px away merge into one blob with it: the watershed of that smoothed
contrast (`seed_region.particle_territory`) then finds no valley, and the "particle"
is half the dense field. Two scales do what one cannot. The particle's size comes
from the scale-normalised Laplacian of Gaussian at the prompt (its response peaks at
sigma = radius / sqrt 2); at that sigma every particle of about that size is one
strong peak and the ring of negative response around each keeps neighbours apart --
these peaks are the watershed's markers. The borders between the basins are drawn on
the contrast smoothed at a fine scale, where a 2 px gap is still a valley: a valley
only 1-2 noise sigmas deep per pixel, but the watershed follows it along its whole
length.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

import numpy as np
from scipy import ndimage
from skimage.morphology import convex_hull_image
from skimage.segmentation import watershed

from sam4em_live.segment.embedded.seed_region import Territory, robust_background, smoothed, white_noise_after

if TYPE_CHECKING:
    from sam4em_live.segment.embedded.window import Window

#: Gaussian sigmas (px) at which the Laplacian of Gaussian is read at the prompt for the particle's size.
LOG_SIGMAS = (1.5, 2.0, 3.0, 4.0, 5.5, 7.5, 10.0, 13.5, 18.0, 24.0, 32.0)
#: A neighbour's peak counts if its response is at least this fraction of the prompted particle's.
NEIGHBOUR_FRACTION = 0.25
#: Borders are drawn at this fraction of the size's sigma (between 1.5 px and the segmentation scale).
BORDER_SCALE_FRACTION = 0.2
#: The old territory is taken to have merged neighbours when it is this many times the particle's area.
MERGED_AREA_FACTOR = 2.0
#: ... unless it fills this fraction of its convex hull (particles are convex; several with gaps between are not).
CONVEX_SOLIDITY = 0.9


class BlobSize(NamedTuple):
    """The prompted particle's scale: the LoG sigma at which it responds most, and the peak (row, col)."""

    sigma: float
    peak_rc: tuple[int, int]

    @property
    def radius_px(self) -> float:
        return math.sqrt(2.0) * self.sigma

    @property
    def area_px(self) -> float:
        return math.pi * self.radius_px**2


def largest_sigma(shape: tuple[int, ...]) -> float:
    """The largest of `LOG_SIGMAS` `blob_size` tries on a window of ``shape`` (its kernel must fit)."""
    limit = min(shape) / 6.0
    return max((sigma for sigma in LOG_SIGMAS if sigma <= limit), default=0.0)


def blob_size(contrast: np.ndarray, seed_rc: tuple[int, int], min_sigma: float = 0.0) -> BlobSize | None:
    """The particle's scale at the prompt: the scale-normalised LoG's strongest response near it, over sigma.

    At each sigma the response's maximum within 0.7 radius (sqrt 2 sigma) of the prompt counts: a
    click near the rim is that far from the particle's centre, where its response peaks. Computed on
    a crop around the prompt, block-averaged for the large sigmas (cost). Sigmas below ``min_sigma``
    (the smoothing the particle needed to stand out) are not tried: there the noise responds more than
    the particle, most of all near its rim. None when nothing responds.
    """
    r, c = seed_rc
    best: BlobSize | None = None
    best_response = 0.0
    limit = min(contrast.shape) / 6.0  # the kernel must fit the window
    for sigma in LOG_SIGMAS:
        if sigma > limit:
            break
        if sigma < min_sigma:
            continue
        factor = max(1, int(sigma // 3))
        reach = int(math.ceil(0.7 * math.sqrt(2.0) * sigma + 3.5 * sigma)) // factor * factor + factor
        ra, ca = max(r - reach, 0), max(c - reach, 0)
        rb = ra + (min(r + reach + 1, contrast.shape[0]) - ra) // factor * factor
        cb = ca + (min(c + reach + 1, contrast.shape[1]) - ca) // factor * factor
        crop = contrast[ra:rb, ca:cb]
        if factor > 1:
            crop = crop.reshape(crop.shape[0] // factor, factor, crop.shape[1] // factor, factor).mean(axis=(1, 3))
        response = -((sigma / factor) ** 2) * ndimage.gaussian_laplace(crop, sigma / factor, mode="nearest")
        yy, xx = np.ogrid[: response.shape[0], : response.shape[1]]
        cy, cx = (r - ra) / factor, (c - ca) / factor
        near = (yy - cy) ** 2 + (xx - cx) ** 2 <= (0.7 * math.sqrt(2.0) * sigma / factor) ** 2
        k = int(np.argmax(np.where(near, response, -np.inf)))
        value = float(response.flat[k])
        if value > best_response:
            pr, pc = divmod(k, response.shape[1])
            peak = (min(ra + pr * factor + factor // 2, contrast.shape[0] - 1),
                    min(ca + pc * factor + factor // 2, contrast.shape[1] - 1))
            best, best_response = BlobSize(sigma, peak), value
    return best


def marker_territory(contrast: np.ndarray, fine: np.ndarray, region: np.ndarray, seed_rc: tuple[int, int],
                     size: BlobSize, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(own, neighbours): the prompted particle's basin and its neighbours' (bool, window).

    ``contrast`` is the flattened raw contrast (particle positive), ``fine`` its smoothing at
    the border scale (the surface flooded), ``region`` the pixels that may belong to any
    particle; ``allowed`` limits the prompted particle (a box, negative points).
    """
    response = -(size.sigma**2) * ndimage.gaussian_laplace(contrast, size.sigma, mode="nearest")
    at_prompt = float(response[seed_rc])
    footprint = max(3, int(round(size.radius_px)) | 1)
    peaks = (response == ndimage.maximum_filter(response, size=footprint))
    peaks &= response > NEIGHBOUR_FRACTION * max(at_prompt, 1e-9)
    markers, count = ndimage.label(peaks)
    # The prompted particle's marker: its prompt pixel, and the peak that drains to it (within its radius).
    own_label = count + 1
    rows, cols = np.nonzero(peaks)
    centre = size.peak_rc
    near = (rows - centre[0]) ** 2 + (cols - centre[1]) ** 2 <= (0.6 * size.radius_px) ** 2
    markers[rows[near], cols[near]] = own_label
    markers[seed_rc] = own_label
    markers[centre] = own_label
    basins = watershed(-fine, markers, mask=region | (markers > 0))
    own = (basins == own_label) & allowed
    neighbours = (basins > 0) & (basins != own_label)
    return own, neighbours


def border_scale(size: BlobSize, segmentation_scale: float) -> float:
    """The smoothing (px) the borders between neighbours are drawn at."""
    return float(min(max(1.5, BORDER_SCALE_FRACTION * size.sigma), segmentation_scale))


def marked_territory(window: Window, usable: np.ndarray, signal: np.ndarray, level: float, noise: float,
                     scale: float, size: BlobSize, seed_rc: tuple[int, int], allowed: np.ndarray,
                     pixel_noise: float) -> Territory:
    """`marker_territory` on a seed window: flooded at the border scale, within the particles.

    ``signal`` is the contrast smoothed at the segmentation ``scale`` above the background,
    ``level`` its value at the prompt and ``noise`` its background noise; ``usable`` the pixels
    the background is measured on; ``pixel_noise`` the raw per-pixel noise.
    """
    fine_scale = border_scale(size, scale)
    fine = smoothed(window, fine_scale)
    fine -= np.float32(robust_background(fine, usable, white_noise_after(pixel_noise, fine_scale)).level)
    low = max(0.1 * level, 2.5 * noise)
    region = ndimage.binary_dilation(signal > low, iterations=int(math.ceil(scale)))
    own, neighbours = marker_territory(window.darkness, fine, region, seed_rc, size, allowed)
    return Territory(own, neighbours)


def merged_region(darkness: np.ndarray, region: np.ndarray, scale: float) -> bool:
    """Whether ``region`` is more than one particle: larger than the particle its own centre responds as.

    The size is the scale-normalised LoG's (`blob_size`) at the region's centroid;
    a region spread over several particles has its centroid between them, where nothing that
    large responds. A rod responds as its width, so a convex region (solidity `CONVEX_SOLIDITY`:
    one particle, however elongated) is never taken for several.
    """
    rows, cols = np.nonzero(region)
    if rows.size == 0:
        return False
    crop = region[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    if rows.size >= CONVEX_SOLIDITY * float(convex_hull_image(crop).sum()):
        return False
    size = blob_size(darkness, (int(round(rows.mean())), int(round(cols.mean()))), min_sigma=scale)
    if size is not None and size.sigma >= largest_sigma(darkness.shape):
        return False  # the window is too small to measure a size that large: a large particle, not a merger
    return size is None or rows.size > MERGED_AREA_FACTOR * size.area_px
