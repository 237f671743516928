"""Measurement from masks: centroid, orientation convention, axes, eccentricity, split and empty masks."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.measure import regionprops

from sam4em_live.measure import measure_label_image, measure_mask
from sam4em_live.particles import ParticleMask


def ellipse_mask(shape, cx, cy, semi_major, semi_minor, angle_deg):
    """Pixels whose centres lie in an ellipse whose major axis points along (cos a, sin a) in (x, y)."""
    y, x = np.mgrid[: shape[0], : shape[1]].astype(float)
    a = math.radians(angle_deg)
    u = (x - cx) * math.cos(a) + (y - cy) * math.sin(a)
    v = -(x - cx) * math.sin(a) + (y - cy) * math.cos(a)
    return (u / semi_major) ** 2 + (v / semi_minor) ** 2 <= 1.0


def fold_axis(angle_deg: float) -> float:
    folded = math.fmod(angle_deg, 180.0)
    if folded <= -90:
        folded += 180
    elif folded > 90:
        folded -= 180
    return folded


def axis_difference(a: float, b: float) -> float:
    """Smallest difference between two axial angles (degrees, period 180)."""
    d = (a - b) % 180.0
    return min(d, 180.0 - d)


@pytest.mark.parametrize("angle", [0.0, 30.0, 60.0, 90.0, -45.0, 120.0, 179.0])
def test_orientation_convention_and_axes(angle):
    mask = ellipse_mask((80, 90), 44.3, 39.6, 20.0, 7.0, angle)
    m = measure_mask(ParticleMask.from_full(3, mask, 0.9), frame_index=5)
    assert m.present and m.particle == 3 and m.frame == 5 and not m.split
    assert -90.0 < m.angle_deg <= 90.0
    assert axis_difference(m.angle_deg, fold_axis(angle)) < 1.0
    assert m.x == pytest.approx(44.3, abs=0.15) and m.y == pytest.approx(39.6, abs=0.15)
    assert m.major_axis_px == pytest.approx(40.0, abs=1.0)
    assert m.minor_axis_px == pytest.approx(14.0, abs=1.0)
    assert m.eccentricity == pytest.approx(math.sqrt(1 - (7 / 20) ** 2), abs=0.02)
    assert m.area_px == int(mask.sum())


def test_angle_sign_is_from_x_towards_y_rows_down():
    # A diagonal going right and DOWN the image (row increases with column) is +45 degrees.
    mask = np.zeros((20, 20), dtype=bool)
    for i in range(3, 17):
        mask[i, i] = mask[i, i - 1] = True
    m = measure_mask(ParticleMask.from_full(1, mask, 1.0), 0)
    assert m.angle_deg == pytest.approx(45.0, abs=0.5)
    assert measure_mask(ParticleMask.from_full(1, mask[:, ::-1], 1.0), 0).angle_deg == pytest.approx(-45.0, abs=0.5)


def test_agrees_with_skimage_regionprops():
    rng = np.random.default_rng(0)
    for _ in range(5):
        mask = ellipse_mask((60, 60), *rng.uniform(25, 35, 2), *sorted(rng.uniform(4, 15, 2))[::-1],
                            rng.uniform(-90, 90))
        m = measure_mask(ParticleMask.from_full(1, mask, 1.0), 0)
        props = regionprops(mask.astype(np.uint8))[0]
        lam1, lam2 = props.inertia_tensor_eigvals
        assert m.y == pytest.approx(props.centroid[0], abs=1e-9) and m.x == pytest.approx(props.centroid[1], abs=1e-9)
        assert m.major_axis_px == pytest.approx(4 * math.sqrt(lam1 + 1 / 12), rel=1e-9)
        assert m.minor_axis_px == pytest.approx(4 * math.sqrt(lam2 + 1 / 12), rel=1e-9)
        # skimage: orientation is the angle from the row axis; our axis direction (cos, sin) in (x, y)
        # must be parallel to its major-axis direction (sin o, cos o) in (x, y).
        o = props.orientation
        ours = math.radians(m.angle_deg)
        cross = math.cos(ours) * math.cos(o) - math.sin(ours) * math.sin(o)
        assert abs(cross) < 1e-6


def test_split_mask_keeps_largest_and_flags():
    mask = np.zeros((40, 40), dtype=bool)
    mask[5:15, 5:15] = True  # 100 px
    mask[30:33, 30:33] = True  # 9 px
    m = measure_mask(ParticleMask.from_full(2, mask, 0.5), 1)
    assert m.split and m.area_px == 100
    assert (m.x, m.y) == pytest.approx((9.5, 9.5))
    diagonal = np.eye(6, dtype=bool)  # 8-connected: one component
    assert not measure_mask(ParticleMask.from_full(2, diagonal, 0.5), 1).split


def test_empty_and_absent_masks_are_absent():
    empty = ParticleMask(4, True, 0.7, (0, 0, 5, 5), np.zeros((5, 5), dtype=bool))
    for mask in (empty, ParticleMask.absent(4, 0.1), ParticleMask.from_full(4, np.zeros((9, 9), bool), 0.2)):
        m = measure_mask(mask, 3)
        assert not m.present and m.particle == 4 and m.frame == 3
        assert math.isnan(m.x) and math.isnan(m.angle_deg) and m.area_px == 0


def test_single_pixel_has_size_and_no_orientation_bias():
    mask = np.zeros((5, 5), dtype=bool)
    mask[2, 3] = True
    m = measure_mask(ParticleMask.from_full(1, mask, 1.0), 0)
    assert (m.x, m.y) == (3.0, 2.0)
    assert m.major_axis_px == pytest.approx(4 * math.sqrt(1 / 12)) and m.eccentricity == pytest.approx(0.0)


def test_intensity_weighted_centroid_is_subpixel():
    yy, xx = np.mgrid[:32, :32].astype(float)
    true_x, true_y = 15.3, 16.7
    frame = 200.0 - 150.0 * np.exp(-((xx - true_x) ** 2 + (yy - true_y) ** 2) / (2 * 2.0**2))  # dark particle
    mask = (xx - 15) ** 2 + (yy - 17) ** 2 <= 36  # disc centred on the nearest pixel
    pm = ParticleMask.from_full(1, mask, 1.0)
    binary = measure_mask(pm, 0)
    weighted = measure_mask(pm, 0, frame, intensity_weighted=True)
    assert (binary.x, binary.y) == pytest.approx((15.0, 17.0))
    assert math.hypot(weighted.x - true_x, weighted.y - true_y) < 0.1
    assert weighted.area_px == binary.area_px and weighted.angle_deg == binary.angle_deg
    with pytest.raises(ValueError, match="pixels"):
        measure_mask(pm, 0, None, intensity_weighted=True)


def test_label_image_measures_each_particle_and_reports_missing():
    labels = np.zeros((30, 30), dtype=np.uint16)
    labels[2:6, 2:10] = 1
    labels[20:28, 20:24] = 3
    ms = measure_label_image(labels, 9, particles=[1, 2, 3])
    assert [m.particle for m in ms] == [1, 2, 3]
    assert [m.present for m in ms] == [True, False, True]
    assert ms[0].angle_deg == pytest.approx(0.0) and ms[2].angle_deg == pytest.approx(90.0)
    assert [m.particle for m in measure_label_image(labels, 9)] == [1, 3]
    with pytest.raises(ValueError, match="label image must be 2-D"):
        measure_label_image(np.zeros((2, 2, 2)), 0)
