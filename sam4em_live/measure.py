"""Per-particle measurement from a mask: centroid, orientation, area, axes.

Conventions (used by every module; stated here in full, summarised in `sam4em_live.particles`):

- Centroid ``x`` = column, ``y`` = row, in pixels, origin at the centre of the
  top-left pixel.
- ``angle_deg`` is the orientation of the major axis, measured from the +x
  (column) axis towards the +y (row) axis -- clockwise as displayed with the
  origin at the top-left -- folded into (-90, 90]. It is an axis, not a
  direction: 90 and -90 are the same orientation. Unwrap over time with
  `sam4em_live.stats` for rotational analysis.
- Axis lengths are the full lengths (2 a, 2 b) of the ellipse with the same
  second moments as the union of the mask's pixel squares: 4 * sqrt(eigenvalue)
  of the covariance of pixel centres plus 1/12 px^2 per axis (the variance of a
  unit square), so a single pixel has a size. scikit-image's ``regionprops``
  treats pixels as points (no 1/12): ours = 4 * sqrt(its_eigenvalue + 1/12).
- ``eccentricity`` = sqrt(1 - minor^2 / major^2): 0 for a disc, -> 1 for a line.
  The angle of a near-round mask (small eccentricity) is dominated by pixel
  noise; analyses of rotation should filter on it.
- A mask with several 8-connected components keeps only the largest
  (``split=True`` flags it); an empty or absent mask gives ``present=False``
  with NaN geometry, and the particle has no trajectory row on that frame.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from sam4em_live.particles import ParticleMask, ParticleMeasurement

if TYPE_CHECKING:
    from collections.abc import Sequence

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
#: More breaks than this between consecutive runs are not bridged one by one (`_breaks_bridged`).
_MAX_BRIDGED_BREAKS = 8


def largest_component(crop: np.ndarray) -> tuple[np.ndarray, bool]:
    """Keep the largest 8-connected component; return (mask, was_split)."""
    labels, count = ndimage.label(crop, structure=_EIGHT_CONNECTED)
    if count <= 1:
        return crop, False
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes)), True


def _is_one_component(crop: np.ndarray, flat_index: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> bool:
    """Cheap sufficient test that a non-empty crop is one 8-connected piece.

    ``flat_index``, ``rows``, ``cols`` are its pixels in row-major order (see
    `_pixel_indices`). Works on the runs of pixels along rows: accepted are
    one run per row with consecutive runs touching (mostly convex masks) and,
    for ragged outlines, a few breaks in that chain bridged by neighbouring
    runs (`_breaks_bridged`). About fifteen small array operations, a
    fraction of a labelling (`ndimage.label`): this runs for every particle on
    every frame. False means "not shown", and the caller labels the crop.
    """
    if crop.dtype != np.bool_:
        return False
    # Flat indices in a crop one column wider (an empty column on the right), so that runs never
    # wrap from one row's end to the next row's start: a run ends where the padded index jumps.
    padded = flat_index + rows
    jump = padded[1:] - padded[:-1]
    ends = (jump != 1).nonzero()[0]
    if ends.size == 0:
        return True  # one run
    # Consecutive runs i, i+1 with the jump J between them, n_i + n_{i+1} pixels together, and the
    # padded width W: they lie on adjacent rows and touch (8-connected) iff 0 <= W + 1 - J <= n_i + n_{i+1}.
    # (Two runs of one row never pass: their pixels and the gap fit in one row, n_i + n_{i+1} <= W - J.
    # Runs further apart than adjacent rows have J >= W + 2.) All pass: one run per row, a chain.
    slack = (crop.shape[1] + 2) - jump[ends]
    bounds = np.empty(ends.size + 2, dtype=ends.dtype)
    bounds[0] = -1
    bounds[1:-1] = ends
    bounds[-1] = flat_index.size - 1
    pair_pixels = bounds[2:] - bounds[:-2]
    if int(slack.min()) >= 0 and bool((slack <= pair_pixels).all()):
        return True
    return _breaks_bridged(((slack < 0) | (slack > pair_pixels)).nonzero()[0], bounds, rows, cols)


def _breaks_bridged(broken: np.ndarray, bounds: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> bool:
    """Whether every broken pair of consecutive runs is bridged by a run next to it (ragged outlines).

    Run j spans pixel positions ``bounds[j] + 1 .. bounds[j + 1]``; pair i (runs i, i+1) is broken
    (``broken`` lists them), every other pair is 8-connected. The runs between breaks therefore form
    connected pieces, and a break is bridged when run i - 1 (same piece as run i) touches run i + 1,
    or run i touches run i + 2 (same piece as run i + 1). All bridged: one 8-connected component.
    A few breaks are checked one by one (scalar work); more are left to the caller's labelling.
    """
    if broken.size > _MAX_BRIDGED_BREAKS:
        return False
    broken_pairs = set(broken.tolist())
    last_pair = bounds.size - 3

    def touch(a: int, b: int) -> bool:  # runs a and b on adjacent rows, overlapping or diagonal
        start_a, start_b = int(bounds[a]) + 1, int(bounds[b]) + 1
        if abs(int(rows[start_a]) - int(rows[start_b])) != 1:
            return False
        first_a, first_b = int(cols[start_a]), int(cols[start_b])
        last_a, last_b = int(cols[bounds[a + 1]]), int(cols[bounds[b + 1]])
        return max(first_a, first_b) <= min(last_a, last_b) + 1

    for i in broken_pairs:
        if i >= 1 and i - 1 not in broken_pairs and touch(i - 1, i + 1):
            continue
        if i + 1 <= last_pair and i + 1 not in broken_pairs and touch(i, i + 2):
            continue
        return False
    return True


def _pixel_indices(crop: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flat indices, rows, columns) of the crop's pixels in row-major order: `np.nonzero`'s, a few times faster."""
    flat_index = crop.ravel().nonzero()[0]
    rows = flat_index // crop.shape[1]
    return flat_index, rows, flat_index - rows * crop.shape[1]


def _axes_and_angle(mxx: float, myy: float, mxy: float) -> tuple[float, float, float, float]:
    """(major, minor axis length, angle in degrees, eccentricity) from second moments (px^2, 1/12 included)."""
    common = math.sqrt(((mxx - myy) / 2) ** 2 + mxy**2)
    lam1 = (mxx + myy) / 2 + common
    lam2 = max((mxx + myy) / 2 - common, 0.0)
    angle = 0.5 * math.degrees(math.atan2(2 * mxy, mxx - myy))
    if angle <= -90.0:
        angle += 180.0
    ecc = math.sqrt(1 - lam2 / lam1) if lam1 > 0 else 0.0
    return 4 * math.sqrt(lam1), 4 * math.sqrt(lam2), angle, ecc


def measure_mask(
    mask: ParticleMask,
    frame_index: int,
    pixels: np.ndarray | None = None,
    intensity_weighted: bool = False,
) -> ParticleMeasurement:
    """Measure one `ParticleMask`.

    With ``intensity_weighted`` and the frame ``pixels`` given, the centroid is
    weighted by contrast (particles are dark in bright field, so the weight is
    ``max - value`` inside the mask); shape moments stay binary.
    """
    if not mask.present or mask.crop is None or mask.bbox is None:
        return ParticleMeasurement(mask.particle, frame_index, False, score=mask.score)
    crop = mask.crop
    if crop.ndim != 2:
        raise ValueError(f"mask crop must be 2-D, got shape {crop.shape}")
    flat_index, rows, cols = _pixel_indices(crop)
    area = int(flat_index.size)
    if area == 0:
        return ParticleMeasurement(mask.particle, frame_index, False, score=mask.score)
    if intensity_weighted and pixels is None:
        raise ValueError("intensity_weighted centroid needs the frame pixels")
    split = False
    if not _is_one_component(crop, flat_index, rows, cols):
        crop, split = largest_component(crop)
        if split:
            flat_index, rows, cols = _pixel_indices(crop)
            area = int(flat_index.size)
    measurement = _moments_measurement(mask, frame_index, rows, cols, area, split)
    if intensity_weighted and pixels is not None:
        x0, y0, _, _ = mask.bbox
        patch = np.asarray(pixels[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]], dtype=np.float64)
        values = patch[rows, cols]
        weights = values.max() - values
        if weights.sum() > 0:  # the centroid weighted by contrast; the shape moments stay binary
            measurement = replace(measurement, x=float(np.average(cols, weights=weights)) + x0,
                                  y=float(np.average(rows, weights=weights)) + y0)
    return measurement


def measure_label_image(labels: np.ndarray, frame_index: int, pixels: np.ndarray | None = None,
                        intensity_weighted: bool = False, particles: list[int] | None = None,
                        ) -> list[ParticleMeasurement]:
    """Measure every particle of a label image (value = particle id, 0 = background).

    ``particles`` lists ids to report even when absent from this frame (they
    come back with ``present=False``); by default the ids present are measured.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"label image must be 2-D, got shape {labels.shape}")
    objects = ndimage.find_objects(labels.astype(np.int64, copy=False))
    present = [i + 1 for i, sl in enumerate(objects) if sl is not None]
    wanted = present if particles is None else particles
    out = []
    for pid in wanted:
        sl = objects[pid - 1] if 0 < pid <= len(objects) else None
        if sl is None:
            out.append(ParticleMeasurement(pid, frame_index, False))
            continue
        bbox = (sl[1].start, sl[0].start, sl[1].stop, sl[0].stop)
        mask = ParticleMask(pid, True, 1.0, bbox, labels[sl] == pid)
        out.append(measure_mask(mask, frame_index, pixels, intensity_weighted))
    return out


def measure_masks(
    masks: Sequence[ParticleMask],
    frame_index: int,
    pixels: np.ndarray | None = None,
    intensity_weighted: bool = False,
) -> tuple[ParticleMeasurement, ...]:
    """Measure all of a frame's masks: exactly ``tuple(measure_mask(m, ...) for m in masks)``, cheaper.

    The per-pixel work of `measure_mask` (pixel indices, the one-component test of the runs, centring)
    is done in one pass over every boolean crop laid end to end; per particle remain the three dot
    products of the second moments, on the same values as `measure_mask`'s and of the same length, so
    every float is bit-identical (the dots' summation order is BLAS's, which is why they are not
    batched). Masks the pass does not take (absent, empty, non-boolean crops, the intensity-weighted
    centroid) go through `measure_mask`, crops the batched run test does not show to be one piece
    through its component steps. Issue 23: at 50 particles the per-mask calls cost ~2 ms a frame.
    """
    if intensity_weighted or len(masks) < _BATCH_MIN_MASKS:
        return tuple(measure_mask(m, frame_index, pixels, intensity_weighted) for m in masks)
    taken = [m for m in masks if m.present and m.bbox is not None and m.crop is not None
             and m.crop.ndim == 2 and m.crop.dtype == np.bool_ and m.crop.size > 0]
    measured = _measure_boolean_crops(taken, frame_index) if taken else {}
    return tuple(_or_measured(measured.get(id(m)), m, frame_index) for m in masks)


def _or_measured(done: ParticleMeasurement | None, mask: ParticleMask, frame_index: int) -> ParticleMeasurement:
    return done if done is not None else measure_mask(mask, frame_index)


#: Fewer masks than this are measured one by one: the batched pass's fixed cost (~45 array operations a
#: batch) is more than it saves on a few masks (disc masks of 615 px, interleaved in the worker's stages at
#: load 5-8: 16 masks 1.06-1.09x the per-mask calls, 50 masks 0.92-0.96x; `tools.bench.benchmarks.outside_probes`).
_BATCH_MIN_MASKS = 24
#: Padded crop pixels measured in one batch (crops x their common rows x columns): the batch's per-pixel
#: int64 arrays stay under ~128 KiB, where malloc hands out heap memory; larger ones are fresh pages from the
#: kernel on every frame, whose faults cost more than the batching saves (50 disc crops of 31 x 31 px in
#: balanced batches, load 2-4: 0.75x the per-mask calls at 16,000 and 0.7x at 24,000, 1.3-1.5x at 32,000).
_BATCH_CROP_PIXELS = 16_000


def _measure_boolean_crops(masks: list[ParticleMask], frame_index: int) -> dict[int, ParticleMeasurement]:
    """`measure_mask` of present masks with non-empty boolean 2-D crops, keyed by ``id(mask)``; empty crops left out.

    Batches of equal counts (50 masks in 17, 17, 16 rather than 24, 24, 2: each batch has a fixed cost), as
    many as keep each under `_BATCH_CROP_PIXELS` when padded to the largest crop's rows and columns.
    """
    shapes = [m.crop.shape for m in masks if m.crop is not None]
    padded = max(h for h, _ in shapes) * max(w for _, w in shapes)
    batches = -(-len(masks) // max(1, _BATCH_CROP_PIXELS // padded))
    size = -(-len(masks) // batches)
    out: dict[int, ParticleMeasurement] = {}
    for start in range(0, len(masks), size):
        _measure_batch(masks[start : start + size], frame_index, out)
    return out


def _measure_batch(masks: list[ParticleMask], frame_index: int, out: dict[int, ParticleMeasurement]) -> None:
    """One batch: the crops padded to a common shape in one (crop, row, column) stack."""
    crops = [m.crop for m in masks if m.crop is not None]
    height, width = max(c.shape[0] for c in crops), max(c.shape[1] for c in crops)
    stack = np.zeros((len(crops), height, width), dtype=bool)
    for k, crop in enumerate(crops):
        stack[k, : crop.shape[0], : crop.shape[1]] = crop
    # Pixel indices, crop by crop and row-major within each crop (`_pixel_indices`' order); a crop's rows
    # and columns are those of its own pixels (the padding is empty).
    index = stack.ravel().nonzero()[0]
    if index.size == 0:
        return
    stacked_rows = index // width  # crop * height + row
    rows = stacked_rows % height
    cols = index - stacked_rows * width
    row_counts = stack.sum(axis=2)  # (crop, row)
    areas = row_counts.sum(axis=1)
    starts = np.zeros(len(crops) + 1, dtype=np.intp)
    np.cumsum(areas, out=starts[1:])
    # Each crop widened by an empty column, as in `_is_one_component` (a common width changes no pair's verdict).
    pieced = _one_piece_by_runs(index + stacked_rows, starts, areas, np.full(len(crops), width))
    # Centroids and centred coordinates as `_moments_measurement` computes them: integer sums (exact in any
    # order), then each pixel minus its crop's centroid.
    area_div = np.maximum(areas, 1)
    row_means = (row_counts @ np.arange(height)) / area_div
    col_means = (stack.sum(axis=1) @ np.arange(width)) / area_div
    dy_all = rows - np.repeat(row_means, areas)
    dx_all = cols - np.repeat(col_means, areas)
    bounds, piece_shown = starts.tolist(), pieced.tolist()
    for k, (mask, yc, xc) in enumerate(zip(masks, row_means.tolist(), col_means.tolist(), strict=True)):
        lo, hi = bounds[k], bounds[k + 1]
        if lo == hi:
            continue  # absent: measure_mask says so
        if not piece_shown[k]:
            crop = crops[k]
            r, c = rows[lo:hi], cols[lo:hi]
            if not _is_one_component(crop, r * crop.shape[1] + c, r, c):
                crop, split = largest_component(crop)
                if split:
                    _, r, c = _pixel_indices(crop)
                    out[id(mask)] = _moments_measurement(mask, frame_index, r, c, int(r.size), True)
                    continue
        out[id(mask)] = _measurement(mask, frame_index, hi - lo, False, yc, xc, dy_all[lo:hi], dx_all[lo:hi])


def _one_piece_by_runs(padded: np.ndarray, starts: np.ndarray, areas: np.ndarray, widths: np.ndarray) -> np.ndarray:
    """Per crop, whether `_is_one_component`'s chain test of the runs passes, for all crops at once.

    ``padded``: every pixel's flat index in its crop widened by an empty column (`_is_one_component`);
    crops laid end to end, crop k's pixels at ``starts[k]:starts[k + 1]``. A crop's last pixel always
    ends a run, so the runs of consecutive crops never join; a pair of runs is the same pair with the
    same slack and pixel count as in `_is_one_component`. False: not shown (breaks to bridge, or none).
    """
    total = padded.size
    is_last = np.zeros(total, dtype=bool)
    is_last[starts[1:][areas > 0] - 1] = True
    ends_run = is_last.copy()
    jump = np.empty(total, dtype=padded.dtype)
    jump[:-1] = padded[1:] - padded[:-1]
    jump[-1] = 1
    ends_run[:-1] |= jump[:-1] != 1
    ends = ends_run.nonzero()[0]
    inner = ~is_last[ends]  # run ends followed by a run of the same crop: one pair each
    previous = np.empty_like(ends)
    previous[0] = -1
    previous[1:] = ends[:-1]
    following = np.empty_like(ends)
    following[:-1] = ends[1:]
    following[-1] = total
    owner = np.searchsorted(starts, ends[inner], side="right") - 1
    slack = (widths[owner] + 2) - jump[ends[inner]]
    broken = (slack < 0) | (slack > (following - previous)[inner])
    return np.bincount(owner[broken], minlength=areas.size) == 0


def _moments_measurement(mask: ParticleMask, frame_index: int, rows: np.ndarray, cols: np.ndarray, area: int,
                         split: bool) -> ParticleMeasurement:
    """The unweighted geometry of a crop from its pixel rows and columns (`measure_mask`, the batch's split crops)."""
    yc = float(rows.sum()) / area
    xc = float(cols.sum()) / area
    return _measurement(mask, frame_index, area, split, yc, xc, rows - yc, cols - xc)


def _measurement(mask: ParticleMask, frame_index: int, area: int, split: bool, yc: float, xc: float,
                 dy: np.ndarray, dx: np.ndarray) -> ParticleMeasurement:
    """The measurement from the centroid (crop pixels) and the pixels' offsets from it."""
    assert mask.bbox is not None
    x0, y0, _, _ = mask.bbox
    # Second central moments (with the 1/12 of a unit pixel so single pixels have size); dot products
    # because this runs for every particle on every frame.
    major, minor, angle, ecc = _axes_and_angle(float(dx @ dx) / area + 1 / 12, float(dy @ dy) / area + 1 / 12,
                                               float(dx @ dy) / area)
    return ParticleMeasurement(
        particle=mask.particle, frame=frame_index, present=True, x=xc + x0, y=yc + y0,
        angle_deg=float(angle), area_px=area, major_axis_px=major, minor_axis_px=minor, eccentricity=ecc,
        score=mask.score, split=split,
    )
