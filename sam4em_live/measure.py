"""Per-particle measurement from a mask: centroid, orientation, area, axes.

Conventions (used by every module, documented in docs/conventions.md):

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
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from sam4em_live.segment.base import ParticleMask


@dataclass(frozen=True, slots=True)
class ParticleMeasurement:
    """Geometry of one particle on one frame (pixels, degrees)."""

    particle: int
    frame: int
    present: bool
    x: float = math.nan
    y: float = math.nan
    angle_deg: float = math.nan
    area_px: int = 0
    major_axis_px: float = math.nan
    minor_axis_px: float = math.nan
    eccentricity: float = math.nan
    score: float = 0.0
    split: bool = False  # the mask had several components; the largest was kept


_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def largest_component(crop: np.ndarray) -> tuple[np.ndarray, bool]:
    """Keep the largest 8-connected component; return (mask, was_split)."""
    labels, count = ndimage.label(crop, structure=_EIGHT_CONNECTED)
    if count <= 1:
        return crop, False
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == int(np.argmax(sizes)), True


def _solid_runs_touch(lines: np.ndarray, area: int) -> bool:
    """True if each line (row) of ``lines`` holds one solid run of pixels and consecutive runs 8-touch.

    ``lines`` is a boolean array whose first and last lines are not empty and
    which holds ``area`` pixels. Such a mask is one 8-connected component.
    """
    width = lines.shape[1]
    first = lines.argmax(axis=1)
    last = (width - 1) - lines[:, ::-1].argmax(axis=1)
    # A run spans at least its pixel count (an empty line spans the whole width), so the spans add
    # up to the area only if every line is one solid run.
    if int((last - first).sum()) + lines.shape[0] != area:
        return False
    return not (np.maximum(first[1:], first[:-1]) > np.minimum(last[1:], last[:-1]) + 1).any()


def _is_one_component(crop: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> bool:
    """Cheap sufficient test that a non-empty boolean crop is one 8-connected component.

    Particle masks are mostly convex along rows or columns; for those this
    costs a few array passes, about half a labelling (`ndimage.label`). False
    means "not shown", and the caller labels the crop.
    """
    if crop.dtype != np.bool_:
        return False
    area = int(rows.size)
    if _solid_runs_touch(crop[rows[0] : rows[-1] + 1], area):
        return True
    return _solid_runs_touch(crop[:, cols.min() : cols.max() + 1].T, area)


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
    rows, cols = np.nonzero(crop)
    area = int(rows.size)
    if area == 0:
        return ParticleMeasurement(mask.particle, frame_index, False, score=mask.score)
    if intensity_weighted and pixels is None:
        raise ValueError("intensity_weighted centroid needs the frame pixels")
    split = False
    if not _is_one_component(crop, rows, cols):
        crop, split = largest_component(crop)
        if split:
            rows, cols = np.nonzero(crop)
            area = int(rows.size)
    x0, y0, _, _ = mask.bbox
    yc = float(rows.sum()) / area
    xc = float(cols.sum()) / area
    dy = rows - yc
    dx = cols - xc
    # Second central moments (with the 1/12 of a unit pixel so single pixels have size); dot products
    # because this runs for every particle on every frame.
    mxx = float(dx @ dx) / area + 1 / 12
    myy = float(dy @ dy) / area + 1 / 12
    mxy = float(dx @ dy) / area
    common = math.sqrt(((mxx - myy) / 2) ** 2 + mxy**2)
    lam1 = (mxx + myy) / 2 + common
    lam2 = max((mxx + myy) / 2 - common, 0.0)
    angle = 0.5 * math.degrees(math.atan2(2 * mxy, mxx - myy))
    if angle <= -90.0:
        angle += 180.0
    ecc = math.sqrt(1 - lam2 / lam1) if lam1 > 0 else 0.0
    if intensity_weighted and pixels is not None:
        patch = np.asarray(pixels[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]], dtype=np.float64)
        values = patch[rows, cols]
        weights = values.max() - values
        if weights.sum() > 0:
            xc = float(np.average(cols, weights=weights))
            yc = float(np.average(rows, weights=weights))
    return ParticleMeasurement(
        particle=mask.particle,
        frame=frame_index,
        present=True,
        x=float(xc) + x0,
        y=float(yc) + y0,
        angle_deg=float(angle),
        area_px=area,
        major_axis_px=4 * math.sqrt(lam1),
        minor_axis_px=4 * math.sqrt(lam2),
        eccentricity=ecc,
        score=mask.score,
        split=split,
    )


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
