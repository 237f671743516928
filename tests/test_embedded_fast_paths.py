"""The embedded backend's fast paths give the results of the straightforward library calls they replace."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.lib.stride_tricks import as_strided
from scipy import fft as sfft
from scipy import ndimage

from sam4em_live.segment.embedded import search
from sam4em_live.segment.embedded import window as window_module
from sam4em_live.segment.embedded.morphology import dilate_cross, dilate_disc, fill_holes
from sam4em_live.segment.embedded.options import EmbeddedOptions
from sam4em_live.segment.embedded.raster import rasterize_mask
from sam4em_live.segment.embedded.shape import ShapeMemory
from sam4em_live.segment.embedded.tracker import clip_to_unit_interval
from sam4em_live.segment.embedded.window import (
    bilinear,
    bilinear_inside,
    block_darkness,
    block_mean,
    clip_unit,
    frame_window,
    zero_padded,
)


def _blobs(rng: np.random.Generator, shape: tuple[int, int]) -> np.ndarray:
    return ndimage.gaussian_filter(rng.random(shape), 2.0) > rng.uniform(0.45, 0.55)


def test_morphology_equals_scipy_and_numpy() -> None:
    rng = np.random.default_rng(7)
    for _ in range(60):
        mask = _blobs(rng, (int(rng.integers(4, 90)), int(rng.integers(4, 90))))
        for iterations in (1, 2, 3):
            assert np.array_equal(dilate_cross(mask, iterations), ndimage.binary_dilation(mask, iterations=iterations))
        assert np.array_equal(fill_holes(mask), ndimage.binary_fill_holes(mask))
    ring = np.zeros((9, 9), bool)
    ring[2:7, 2:7] = True
    ring[4, 4] = False  # a hole
    assert fill_holes(ring)[4, 4] and not fill_holes(np.zeros((5, 5), bool)).any()


@pytest.mark.parametrize("radius", [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 3.7, 5.0, 40.0])
def test_dilate_disc_equals_scipy_with_a_disc(radius: float) -> None:
    rng = np.random.default_rng(int(radius * 10))
    reach = math.ceil(radius)
    yy, xx = np.mgrid[-reach : reach + 1, -reach : reach + 1]
    disc = xx * xx + yy * yy <= radius * radius
    for shape, density in (((30, 41), 0.03), ((9, 7), 0.2), ((1, 12), 0.3), ((25, 25), 0.0)):
        mask = rng.random(shape) < density
        if mask.size > 20:
            mask[0, -1] = mask[-1, 0] = True  # touching the border
        assert np.array_equal(dilate_disc(mask, radius), ndimage.binary_dilation(mask, disc))


def test_zero_padded_equals_np_pad() -> None:
    rng = np.random.default_rng(3)
    for dtype in (np.float32, np.float64, bool):
        image = (rng.random((int(rng.integers(1, 40)), int(rng.integers(1, 40)))) * 5).astype(dtype)
        for width in (0, 1, 3):
            out = zero_padded(image, width)
            assert out.dtype == image.dtype and np.array_equal(out, np.pad(image, width))


def test_symmetry_period_samples_all_rotations_as_one_at_a_time() -> None:
    """The batched symmetry test gives, exactly, the IoUs of turning the mask by one rotation at a time."""
    from sam4em_live.segment.embedded import body_frame

    rng = np.random.default_rng(11)
    for _ in range(12):
        memory = _rod_memory()
        memory.mask = ndimage.gaussian_filter(rng.random(memory.mask.shape), 3.0) > 0.5
        area = max(memory.mask.sum(), 1)
        padded = np.pad(memory.mask.astype(np.float32), 1)
        expected = {}
        for period in (*body_frame.ISOTROPY_TEST_DEG, *body_frame.SYMMETRY_CANDIDATES_DEG):
            c, s = np.float32(math.cos(math.radians(period))), np.float32(math.sin(math.radians(period)))
            u, v = memory._u * c + memory._v * s, memory._v * c - memory._u * s
            turned = bilinear(padded, v + memory.half, u + memory.half) > 0.5
            expected[period] = (turned & memory.mask).sum() / max((turned | memory.mask).sum(), area)
        assert body_frame.rotation_ious(memory.mask, memory._u, memory._v) == expected


def test_symmetry_ious_of_a_small_mask_turned_on_its_own_square_equal_those_of_the_whole_grid() -> None:
    """Compact masks far smaller than the grid (the square around their disc is turned): the same IoUs, exactly."""
    from sam4em_live.segment.embedded import body_frame

    rng = np.random.default_rng(12)
    memory = _rod_memory()
    half = memory.half
    for _ in range(20):
        radius = float(rng.uniform(1.0, half / 2))
        du, dv = rng.uniform(-half / 3, half / 3, 2)
        blob = (memory._u - du) ** 2 / radius**2 + (memory._v - dv) ** 2 / (0.5 * radius) ** 2 <= 1.0
        mask = blob & (ndimage.gaussian_filter(rng.random(blob.shape), 1.0) > 0.45)
        padded = np.pad(mask.astype(np.float32), 1)
        area = max(mask.sum(), 1)
        expected = {}
        for period in (*body_frame.ISOTROPY_TEST_DEG, *body_frame.SYMMETRY_CANDIDATES_DEG):
            c, s = np.float32(math.cos(math.radians(period))), np.float32(math.sin(math.radians(period)))
            u, v = memory._u * c + memory._v * s, memory._v * c - memory._u * s
            turned = bilinear(padded, v + half, u + half) > 0.5
            expected[period] = (turned & mask).sum() / max((turned | mask).sum(), area)
        assert body_frame.rotation_ious(mask, memory._u, memory._v) == expected
    empty = np.zeros_like(memory.mask)
    assert set(body_frame.rotation_ious(empty, memory._u, memory._v).values()) == {0.0}


_SPECIAL = [np.nan, np.inf, -np.inf, -0.0, 0.0, 1.0, -1.0, 1e-30, -1e-30, 1 + 1e-7, -(1 + 1e-7), 0.5]


def test_clip_unit_equals_np_clip_bit_for_bit() -> None:
    rng = np.random.default_rng(8)
    values = np.concatenate([rng.normal(0, 1.5, 500), _SPECIAL]).astype(np.float32)
    fast = values.copy()
    clip_unit(fast)
    assert np.array_equal(fast.view(np.uint32), np.clip(values, -1.0, 1.0).view(np.uint32))


def test_clip_to_unit_interval_equals_np_clip_of_a_scalar() -> None:
    rng = np.random.default_rng(9)
    for value in [*_SPECIAL, *rng.normal(0.5, 1.0, 200).tolist()]:
        expected = float(np.clip(value, 0.0, 1.0))
        got = clip_to_unit_interval(value)
        assert type(got) is float
        assert np.array_equal(np.float64(got).view(np.uint64), np.float64(expected).view(np.uint64)), value


@pytest.mark.parametrize("dtype", ["<u1", "<u2", ">u2", "<i2", "<u4", "<i8"])
def test_saturation_test_equals_max_against_iinfo(dtype: str) -> None:
    rng = np.random.default_rng(10)
    top = np.iinfo(np.dtype(dtype)).max
    for high in (top - 1, top):
        raw = rng.integers(0, 100, (20, 30)).astype(dtype)
        raw[7, 11] = high
        assert window_module._saturated(raw) == (raw.max() >= top)


def test_cell_axes_are_kept_per_memory() -> None:
    first, second = _rod_memory(), _rod_memory()
    axis = first.cell_axis(12, 3, 19.5)
    assert np.array_equal(axis, np.arange(12, dtype=np.float32) * 3 + np.float32(19.5)) and axis.dtype == np.float32
    assert first.cell_axis(12, 3, 19.5) is axis and not axis.flags.writeable  # shared, so read-only
    assert second.cell_axis(12, 3, 19.5) is not axis  # nothing kept at module level


def test_bilinear_inside_matches_padded_bilinear() -> None:
    rng = np.random.default_rng(1)
    image = rng.random((40, 50)).astype(np.float32)
    rows = rng.uniform(0, 38.99, (30, 30)).astype(np.float32)
    cols = rng.uniform(0, 48.99, (30, 30)).astype(np.float32)
    fast = bilinear_inside(image, rows, cols)
    assert fast.dtype == np.float32
    np.testing.assert_allclose(fast, bilinear(np.pad(image, 1), rows, cols), rtol=0, atol=2e-6)


def test_observe_on_a_large_window_matches_the_padded_path() -> None:
    rng = np.random.default_rng(2)
    half = 20
    v, u = np.mgrid[-half : half + 1, -half : half + 1]
    mask = (u / 12.0) ** 2 + (v / 5.0) ** 2 <= 1
    memory = ShapeMemory(np.where(mask, 0.3, 0.0).astype(np.float32), mask, EmbeddedOptions())
    for angle in (0.0, 33.0, 45.0, 128.0):
        reach = memory.observe_reach_px(angle)
        window = rng.random((2 * reach + 1, 2 * reach + 1)).astype(np.float32)
        x, y = reach + 0.37, reach - 0.21
        fast = memory.observe(window, x, y, angle)
        t = math.radians(angle)
        c, s = np.float32(math.cos(t)), np.float32(math.sin(t))
        uu, vv = memory._u, memory._v
        reference = bilinear(np.pad(window, 1), y + uu * s + vv * c, x + uu * c - vv * s)
        coeffs = memory._ring_pinv @ reference.ravel()[memory._ring_index]
        reference = reference - (coeffs[0] + coeffs[1] * uu + coeffs[2] * vv)
        np.testing.assert_allclose(fast, reference, rtol=0, atol=1e-5)
        # A window too small for the turned grid takes the bounds-checked path (zeros outside), no error.
        small = memory.observe(window[: 2 * half, : 2 * half], half + 0.2, half - 0.3, angle)
        assert small.shape == fast.shape and np.isfinite(small).all()


def test_search_transforms_equal_rfft2_and_irfft2() -> None:
    """`search._rfft2` calls ``rfftn`` (a dispatch level cheaper): the floats of ``rfft2``, batched or not."""
    rng = np.random.default_rng(5)
    for cells in (24, 25, 27, 30, 32, 40, 54):
        image = rng.random((cells, cells)).astype(np.float32)
        spectra = rng.random((3, cells, cells // 2 + 1)).astype(np.float32) + 1j
        spectra = spectra.astype(np.complex64)
        assert np.array_equal(search._rfft2(image), sfft.rfft2(image, workers=1))
        assert np.array_equal(search._irfft2(spectra, cells), sfft.irfft2(spectra, s=(cells, cells), workers=1))
        one_by_one = [sfft.irfft2(one, s=(cells, cells), workers=1) for one in spectra]
        assert np.array_equal(search._irfft2(spectra, cells), np.stack(one_by_one))


def test_patches_view_equals_as_strided() -> None:
    rng = np.random.default_rng(4)
    image = rng.random((60, 61)).astype(np.float32)
    block = image[3 : 3 + 5 + 36, 4 : 4 + 6 + 36]
    reference = as_strided(block, (5, 6, 37, 37), block.strides * 2).reshape(30, -1)
    assert np.array_equal(search._patches(image, 3, 4, 5, 6, 37), reference)
    not_contiguous = image[:, 1:]
    block = not_contiguous[2 : 2 + 4 + 9, 1 : 1 + 4 + 9]
    reference = as_strided(block, (4, 4, 10, 10), block.strides * 2).reshape(16, -1)
    assert np.array_equal(search._patches(not_contiguous, 2, 1, 4, 4, 10), reference)


def test_prior_penalty_radius_and_turn() -> None:
    prior = search.MotionPrior(10.0, 20.0, 30.0, 5.0, 6.0, 30.0, 0.65, 1.0)
    grid_x = np.arange(0, 21, dtype=np.float32)
    grid_y = np.arange(10, 31, dtype=np.float32)
    angles = np.arange(18, dtype=np.float32) * 10
    penalty = search._prior_penalty(grid_x, grid_y, angles, prior, 180.0).reshape(18, 21, 21)
    dist2 = (grid_y[:, None] - 20.0) ** 2 + (grid_x[None, :] - 10.0) ** 2
    assert np.isinf(penalty[:, dist2 > 25]).all() and np.isfinite(penalty[:, dist2 <= 25]).all()
    turn = [1.0 / (2 * 30.0**2) * search._angle_gap(float(a), 30.0, 180.0) ** 2 for a in angles]
    centre = penalty[:, 10, 10]  # on the predicted position: the turn term alone
    np.testing.assert_allclose(centre, turn, rtol=1e-5, atol=1e-6)
    inside = search._prior_penalty(grid_x[8:12], grid_y[8:12], angles[:3], prior.within(100.0), 180.0)
    assert np.isfinite(inside).all()  # a grid wholly inside the radius skips the mask


def _prior_penalty_with_scalars(grid_x: np.ndarray, grid_y: np.ndarray, angles: np.ndarray,
                                prior: search.MotionPrior, period: float) -> np.ndarray:
    """`search._prior_penalty` as written with np.float32 scalar factors and new arrays (the reference)."""
    dy2 = np.square(grid_y - np.float32(prior.y))
    dx2 = np.square(grid_x - np.float32(prior.x))
    dist2 = np.add.outer(dy2, dx2)
    pos = np.log1p(dist2 * np.float32(1.0 / prior.step_scale_px**2))
    pos *= np.float32(prior.step_weight)
    if math.isfinite(prior.radius_px):
        pos[dist2 > np.float32(prior.radius_px**2)] = np.inf
    if period <= 0:
        return pos.reshape(1, -1)
    scale = prior.turn_weight / (2 * prior.turn_sigma_deg**2)
    if angles.size > 4:
        gap = np.abs((angles - np.float32(prior.angle_deg - period / 2)) % np.float32(period) - np.float32(period / 2))
        turn = np.float32(scale) * np.square(gap)
    else:
        turn = np.asarray([scale * search._angle_gap(a, prior.angle_deg, period) ** 2 for a in angles.tolist()],
                          np.float32)
    return np.add.outer(turn, pos.ravel())


def test_prior_penalty_equals_the_scalar_form_bit_for_bit() -> None:
    """0-d float32 factors and in-place steps: the floats of np.float32 scalar factors and new arrays."""
    rng = np.random.default_rng(13)
    for trial in range(200):
        n_rows, n_cols, n_angles = rng.integers(3, 20, size=3)
        grid_x = (rng.uniform(0, 1000) + np.arange(n_cols) * rng.choice([1.0, 2.0, 4.0])).astype(np.float32)
        grid_y = (rng.uniform(0, 1000) + np.arange(n_rows) * rng.choice([1.0, 2.0, 4.0])).astype(np.float32)
        angles = np.sort(rng.uniform(-200, 200, n_angles)).astype(np.float32)
        radius = math.inf if trial % 4 == 0 else float(rng.uniform(2, 40))
        prior = search.MotionPrior(float(grid_x.mean() + rng.normal(0, 5)), float(grid_y.mean() + rng.normal(0, 5)),
                                   float(rng.uniform(-180, 180)), radius, float(rng.uniform(1, 20)),
                                   float(rng.uniform(5, 40)), float(rng.uniform(0, 2)), float(rng.uniform(0, 2)))
        period = float(rng.choice([0.0, 60.0, 90.0, 180.0, 360.0]))
        fast = search._prior_penalty(grid_x, grid_y, angles, prior, period)
        reference = _prior_penalty_with_scalars(grid_x, grid_y, angles, prior, period)
        assert fast.dtype == reference.dtype and fast.shape == reference.shape
        assert np.array_equal(fast.view(np.uint32), reference.view(np.uint32)), trial


@pytest.mark.parametrize("operation", [np.add, np.subtract, np.multiply, np.true_divide, np.minimum, np.maximum,
                                       np.remainder])
@pytest.mark.parametrize("dtype", ["float32", "float64", "uint16"])
def test_zero_d_float32_factor_equals_a_float32_scalar(operation: np.ufunc, dtype: str) -> None:
    """The hot path's ``np.array(value, np.float32)`` factors: the floats (and dtype) of ``np.float32(value)``."""
    rng = np.random.default_rng(15)
    values = np.concatenate([rng.normal(0, 300, 400), [0.0, 1.0, -1.0, 1e-30]]).astype(np.float32)
    array = np.abs(values).astype(dtype) if dtype == "uint16" else values.astype(dtype)
    with np.errstate(all="ignore"):
        for factor in [*rng.normal(0, 50, 20).tolist(), 0.5, 1 / 3, 2.0 / 7.0, 1e-7, 4096.5]:
            for left, right in ((array, factor), (factor, array)):
                zero_d = [np.array(x, np.float32) if isinstance(x, float) else x for x in (left, right)]
                scalar = [np.float32(x) if isinstance(x, float) else x for x in (left, right)]
                fast, reference = operation(*zero_d), operation(*scalar)
                assert fast.dtype == reference.dtype
                assert np.array_equal(fast, reference, equal_nan=True), (operation, factor)


def test_float32_median_equals_np_median_bit_for_bit() -> None:
    rng = np.random.default_rng(16)
    for shape in [(1,), (2,), (3,), (8,), (9,), (16, 15), (16, 16), (12, 31), (33,)]:
        for trial in range(20):
            values = np.abs(rng.normal(0, rng.uniform(0.01, 3), shape)).astype(np.float32)
            if trial % 5 == 0:
                values.flat[rng.integers(values.size)] = np.nan
            if trial % 7 == 0:
                values[...] = np.round(values, 1)  # ties in the middle
            for view in (values, values.T, values[::2]):
                if view.size == 0:
                    continue
                expected = float(np.median(view))
                got = window_module.float32_median(view)
                assert np.array_equal(np.float64(got), np.float64(expected), equal_nan=True), (shape, trial)


def test_float32_mean_equals_np_mean_bit_for_bit() -> None:
    rng = np.random.default_rng(14)
    for shape in [(1,), (7,), (24, 24), (25, 25), (31, 17), (64, 64), (257,)]:
        values = rng.normal(rng.uniform(0, 4000), rng.uniform(0.1, 300), shape).astype(np.float32)
        for view in (values, values[::2], values.T):
            expected = float(view.mean())
            assert np.array_equal(np.float64(window_module.float32_mean(view)), np.float64(expected))


def test_rasterize_mask_matches_rint_lookup() -> None:
    half = 25
    v, u = np.mgrid[-half : half + 1, -half : half + 1]
    mask = (u / 15.0) ** 2 + (v / 6.0) ** 2 <= 1
    memory = ShapeMemory(np.where(mask, 0.3, 0.0).astype(np.float32), mask, EmbeddedOptions())
    table, centre = memory._mask_lookup
    for x, y, angle in ((100.3, 50.8, 17.0), (3.2, 4.9, 95.0), (140.0, 60.0, 0.0)):
        placed = rasterize_mask(memory._mask_lookup, memory.radius_px, x, y, angle, (120, 150))
        assert placed is not None
        (x0, y0, x1, y1), crop, area = placed
        t = math.radians(angle)
        yy, xx = np.mgrid[y0:y1, x0:x1].astype(np.float32)
        dx, dy = xx - np.float32(x), yy - np.float32(y)
        row = np.rint(2 * np.cos(t) * dy - 2 * np.sin(t) * dx + centre).astype(int)
        col = np.rint(2 * np.sin(t) * dy + 2 * np.cos(t) * dx + centre).astype(int)
        expected = table[row, col]
        assert (crop != expected).sum() <= 2  # rounding ties only
        assert abs(area - mask.sum()) <= 0.1 * mask.sum()  # the unclipped area is the particle's
        inside = x0 > 0 and y0 > 0 and x1 < 150 and y1 < 120
        assert (crop.sum() == area) if inside else (0 < crop.sum() < area)


def test_matched_ellipse_keeps_inside_the_bounds_of_a_box_prompt() -> None:
    from sam4em_live.segment.embedded.ellipse import matched_ellipse

    rng = np.random.default_rng(11)
    rows, cols = np.mgrid[0:80, 0:80]
    disc = (rows - 40.0) ** 2 + (cols - 40.0) ** 2 <= 12.0**2
    darkness = (0.08 * disc + rng.normal(0, 0.15, disc.shape)).astype(np.float32)  # CNR ~0.5
    loose = (np.abs(rows - 40) <= 19) & (np.abs(cols - 40) <= 19)  # the loosened box
    seed_region = loose & ((rows - 40.0) ** 2 + (cols - 40.0) ** 2 <= 17.0**2)  # a too-large first region
    bounds = (40 - 12.5 - 2, 40 - 12.5 - 2, 40 + 12.5 + 2, 40 + 12.5 + 2)  # the tight box + 2 px
    ellipse = matched_ellipse(darkness, seed_region, loose, bounds)
    r, c = np.nonzero(ellipse)
    assert c.min() >= bounds[0] and c.max() <= bounds[2] and r.min() >= bounds[1] and r.max() <= bounds[3]
    assert ellipse.sum() >= 0.6 * disc.sum()


def test_matched_ellipse_with_bounds_nothing_fits_returns_the_region() -> None:
    from sam4em_live.segment.embedded.ellipse import matched_ellipse

    rng = np.random.default_rng(12)
    rows, cols = np.mgrid[0:60, 0:60]
    region = (rows - 30.0) ** 2 + (cols - 30.0) ** 2 <= 10.0**2
    darkness = (0.1 * region + rng.normal(0, 0.1, region.shape)).astype(np.float32)
    tiny = (29.0, 29.0, 30.5, 30.5)  # smaller than any candidate ellipse (semi-axes >= 1 px)
    assert np.array_equal(matched_ellipse(darkness, region, None, tiny), region)


def test_block_darkness_is_the_block_mean_of_the_window_contrast() -> None:
    rng = np.random.default_rng(5)
    pixels = rng.poisson(800.0, (120, 140)).astype(np.uint16)
    for polarity in (1.0, -1.0):
        for background in (None, 812.5):
            fast = block_darkness(pixels, 14, 22, 60, 3, polarity, background)
            assert fast is not None and fast.valid is None  # every pixel valid
            level, used = fast.contrast, fast.background
            window = frame_window(pixels, 14, 22, 60, 60, polarity, None, background)
            assert used == pytest.approx(window.background if background is None else background, rel=1e-6)
            np.testing.assert_allclose(level, block_mean(window.darkness, 3), rtol=0, atol=2e-6)
    assert block_darkness(pixels, -1, 0, 60, 3, 1.0) is None  # leaves the frame
    assert block_darkness(pixels, 90, 70, 60, 3, 1.0) is None
    saturated = pixels.copy()
    saturated[40, 40] = np.iinfo(np.uint16).max
    assert block_darkness(saturated, 14, 22, 60, 3, 1.0) is None  # frame_window's path masks it


def test_block_darkness_clipping_pixels_equals_frame_window_at_low_dose() -> None:
    # A few counts per pixel: many pixels exceed twice the background, where the contrast clips at -1.
    rng = np.random.default_rng(6)
    pixels = rng.poisson(6.0, (100, 100)).astype(np.uint16)
    background = 4.0  # below the mean: a sixth of the pixels exceed twice it
    for polarity in (1.0, -1.0):
        level = block_darkness(pixels, 10, 8, 80, 2, polarity, background, clip_pixels=True).contrast
        window = frame_window(pixels, 10, 8, 80, 80, polarity, None, background)
        assert (np.abs(window.darkness) == 1.0).mean() > 0.05  # the clip is exercised
        np.testing.assert_allclose(level, block_mean(window.darkness, 2), rtol=0, atol=2e-6)
        unclipped = block_darkness(pixels, 10, 8, 80, 2, polarity, background).contrast
        assert not np.allclose(unclipped, level, atol=1e-3)  # clipping per block is not the same thing
    floats = pixels.astype(np.float32)
    assert block_darkness(floats, 10, 8, 80, 2, 1.0, background, clip_pixels=True) is None  # may be negative


def test_block_darkness_never_changes_the_frame() -> None:
    """At block size 1 the level used to be a view of a float32 frame, then scaled in place."""
    rng = np.random.default_rng(7)
    for dtype in (np.float32, np.uint16):
        pixels = rng.uniform(500, 900, (60, 60)).astype(dtype)
        before = pixels.copy()
        for factor in (1, 2, 3):
            level = block_darkness(pixels, 6, 6, 48, factor, 1.0)
            assert level is not None
            np.testing.assert_allclose(level.contrast, block_mean(frame_window(pixels, 6, 6, 48, 48, 1.0).darkness,
                                                                  factor), rtol=0, atol=2e-6)
        assert np.array_equal(pixels, before)


def _rod_memory() -> ShapeMemory:
    half = 30
    v, u = np.mgrid[-half : half + 1, -half : half + 1]
    rod = (np.abs(u) <= 22) & (np.abs(v) <= 6)
    return ShapeMemory(np.where(rod, 0.3, 0.0).astype(np.float32), rod, EmbeddedOptions())


def test_coarse_bank_turning_keeps_the_angles_within_the_turn() -> None:
    memory = _rod_memory()
    assert memory.period_deg == 180.0
    cells = 32
    full = memory.banks.coarse_bank(cells)
    for centre, turn in ((0.0, 45.0), (175.0, 45.0), (93.0, 20.0)):
        turning = memory.banks.coarse_bank_turning(cells, centre, turn)
        angles = turning.angles_deg
        gaps = np.abs((angles - centre + 90.0) % 180.0 - 90.0)
        assert gaps.max() <= turn + 5.0 + 1e-6  # the bank's own 10-degree grid, centred on the nearest angle
        assert angles.size == 2 * int(turn // 10.0) + 1 < full.angles_deg.size
        for k, angle in enumerate(angles.tolist()):  # each kept angle brings its own spectra and norm
            j = int(np.flatnonzero(full.angles_deg == angle)[0])
            assert np.array_equal(turning.spectra[k], full.spectra[j]) and turning.norms[k] == full.norms[j]
            assert np.array_equal(turning.energy_spectra[k], full.energy_spectra[j])
        assert turning.size == full.size
    assert memory.banks.coarse_bank_turning(cells, 30.0, 180.0) is full  # nothing left out: the bank itself


def test_near_coarse_search_tries_only_turns_within_the_limit() -> None:
    memory = _rod_memory()
    rng = np.random.default_rng(9)
    # The rod at 60 degrees in a noisy coarse window; the prior says 0 degrees.
    factor, cells = memory.coarse_factor, 32
    edge = cells * factor
    yy, xx = np.mgrid[0:edge, 0:edge] - (edge - 1) / 2
    t = np.radians(60.0)
    u, v = xx * np.cos(t) + yy * np.sin(t), yy * np.cos(t) - xx * np.sin(t)
    image = np.where((np.abs(u) <= 22) & (np.abs(v) <= 6), 0.3, 0.0) + rng.normal(0, 0.05, (edge, edge))
    coarse = block_mean(image.astype(np.float32), factor)
    centre = (edge - 1) / 2
    prior = search.MotionPrior(centre, centre, 0.0, 16.0, 6.0, 30.0, 0.65, 1.0)
    unrestricted = search.coarse_search(coarse, 0, 0, memory, prior)
    restricted = search.coarse_search(coarse, 0, 0, memory, prior, max_turn_deg=45.0)
    assert unrestricted is not None and restricted is not None
    assert abs(unrestricted[2] - 60.0) <= 10.0  # the evidence wins over the turn prior
    assert abs((restricted[2] + 90.0) % 180.0 - 90.0) <= 45.0 + 5.0  # never beyond the limit (+ half a step)


def test_coarse_correlations_equal_one_window_at_a_time() -> None:
    """Windows of one size share a stack transform: the floats of a pair of scipy.fft calls per window."""
    from sam4em_live.segment.embedded.templates import CoarseBank

    rng = np.random.default_rng(12)
    sizes = (24, 32, 24, 25, 32, 32, 27)
    windows = [rng.normal(0, 0.1, (n, n)).astype(np.float32) for n in sizes]
    banks = []
    for n, k in zip(sizes, (9, 1, 5, 9, 18, 1, 3), strict=True):
        spectra = (rng.normal(size=(k, n, n // 2 + 1)) + 1j * rng.normal(size=(k, n, n // 2 + 1))).astype(np.complex64)
        banks.append(CoarseBank(np.zeros(k, np.float32), spectra, np.ones(k, np.float32), 7, spectra))
    together = search.coarse_correlations(windows, banks)
    for window, bank, correlation in zip(windows, banks, together, strict=True):
        n = window.shape[0]
        reference = sfft.irfft2(bank.spectra * sfft.rfft2(window, workers=1)[None], s=(n, n), workers=1)
        assert correlation.dtype == reference.dtype and np.array_equal(correlation, reference)


def test_near_windows_prepared_together_give_the_masks_of_one_search_at_a_time(monkeypatch) -> None:
    from sam4em_live.frames import Frame
    from sam4em_live.particles import Prompt
    from sam4em_live.segment.embedded import EmbeddedSegmenter
    from tests.conftest import disk_video

    # Three identical discs: their near windows have one size, so they are transformed as one stack.
    centres = ((60.0, 60.0), (150.0, 120.0), (200.0, 200.0))
    frames, _ = disk_video(n_frames=50, shape=(256, 256), centres=centres, radius=9.0, velocity=(0.6, 0.3))
    prompts = [Prompt(k + 1, 0, (c,), (1,)) for k, c in enumerate(centres)]
    together, one_at_a_time = EmbeddedSegmenter(), EmbeddedSegmenter()
    monkeypatch.setattr(one_at_a_time, "_near_windows", lambda pixels, tracks, claims: {})
    stacked = []  # window stacks transformed together
    transform = search._rfft2_stack
    monkeypatch.setattr(search, "_rfft2_stack", lambda images: stacked.append(len(images)) or transform(images))
    compared = 0
    for index, pixels in enumerate(frames):
        edits = [p for p in prompts if p.frame == index]
        a = together.track(Frame("clip", index, 0.0, pixels), edits)
        b = one_at_a_time.track(Frame("clip", index, 0.0, pixels), edits)
        assert [(m.particle, m.present, m.bbox, m.score) for m in a] == [(m.particle, m.present, m.bbox, m.score) for m in b]
        assert all(x.crop is None or np.array_equal(x.crop, y.crop) for x, y in zip(a, b, strict=True))
        compared += sum(m.present for m in a)
    assert compared > 100 and len(stacked) > 40
