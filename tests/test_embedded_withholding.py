"""The background map's batched withholding (`withholding.learn_beside`) against its one-claim-at-a-time reference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from sam4em_live.segment.embedded.morphology import dilate_disc
from sam4em_live.segment.embedded.raster import PixelBox, Placement
from sam4em_live.segment.embedded.window import block_mean
from sam4em_live.segment.embedded.withholding import learn_beside, learn_beside_reference


def _claims(rng: np.random.Generator, shape: tuple[int, int], count: int) -> list[Placement]:
    """Blobs of random sizes anywhere in the frame (edges, overlaps, a large one, an empty crop)."""
    out = []
    for i in range(count):
        size = 90 if i == 0 else int(rng.integers(3, 40))
        height, width = size, int(np.clip(size + rng.integers(-5, 6), 2, 120))
        y0, x0 = int(rng.integers(0, shape[0] - height)), int(rng.integers(0, shape[1] - width))
        rows, cols = np.mgrid[:height, :width]
        crop = ((rows - height / 2) / (height / 2)) ** 2 + ((cols - width / 2) / (width / 2)) ** 2 <= 1
        crop &= rng.random(crop.shape) > 0.1  # ragged, with holes
        if i == 1:
            crop[:] = False  # an empty crop withholds nothing
        out.append(Placement(PixelBox(x0, y0, x0 + width, y0 + height), crop, int(crop.sum())))
    return out


@pytest.mark.parametrize("dtype, factor, shape", [
    ("uint16", 8, (256, 320)), ("uint16", 4, (203, 197)), ("uint16", 16, (256, 256)), ("uint8", 8, (250, 270)),
    ("float32", 8, (256, 256)), ("int32", 8, (256, 256)), ("uint16", 32, (256, 256)),
])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_learn_beside_equals_the_reference_bit_for_bit(dtype: str, factor: int, shape: tuple[int, int],
                                                        seed: int) -> None:
    rng = np.random.default_rng(seed)
    top = np.iinfo(dtype).max if dtype != "float32" else 60000
    pixels = rng.integers(0, top, shape, endpoint=True).astype(dtype)
    pixels[rng.random(shape) < 0.002] = top  # saturated pixels (integer types: not learned)
    n_rows, n_cols = shape[0] // factor, shape[1] // factor
    blocks = block_mean(pixels[: n_rows * factor, : n_cols * factor], factor)
    claims = _claims(rng, shape, 30)
    learn = rng.random(blocks.shape) > 0.05
    expected_blocks, expected_learn = blocks.copy(), learn.copy()
    learn_beside_reference(expected_blocks, expected_learn, pixels, claims, factor)
    learn_beside(blocks, learn, pixels, claims, factor)
    assert np.array_equal(learn, expected_learn)
    assert np.array_equal(blocks.view(np.uint32), expected_blocks.view(np.uint32))  # the same bits
    assert not expected_learn.all()  # the claims withheld something


def test_learn_beside_without_claims_reaching_the_map_changes_nothing() -> None:
    pixels = np.full((100, 100), 500, np.uint16)
    blocks, learn = block_mean(pixels[:96, :96], 8), np.ones((12, 12), bool)
    outside = Placement(PixelBox(97, 97, 100, 100), np.ones((3, 3), bool), 9)  # in the partial last blocks
    learn_beside(blocks, learn, pixels, [outside], 8)
    assert learn.all()


@pytest.mark.parametrize("radius", [1.0, 2.5, 3.0])
def test_dilate_disc_of_a_stack_dilates_each_member(radius: float) -> None:
    rng = np.random.default_rng(3)
    stack = rng.random((5, 30, 27)) > 0.97
    yy, xx = np.mgrid[-4:5, -4:5]
    disc = xx * xx + yy * yy <= radius * radius
    grown = dilate_disc(stack, radius)
    for member, out in zip(stack, grown, strict=True):
        assert np.array_equal(out, ndimage.binary_dilation(member, disc))
