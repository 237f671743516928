"""The pose search's FFTs (`search._rfft2`, `_rfft2_stack`, `_irfft2`) call pocketfft directly: scipy.fft's floats.

Issue 23: scipy.fft's dispatch cost ~20 us a call, more than a 24-32 cell transform; the direct call is the
one scipy.fft ends in, so every float must equal the public functions', for every input the search gives
them and for the inputs that fall back (another dtype, byte order or shape).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import fft as sfft

from sam4em_live.segment.embedded import search


def _spectra(rng: np.random.Generator, count: int, cells: int, dtype: type) -> np.ndarray:
    real = rng.standard_normal((count, cells, cells // 2 + 1))
    imaginary = rng.standard_normal((count, cells, cells // 2 + 1))
    return (real + 1j * imaginary).astype(dtype)


def test_direct_transforms_equal_scipy_fft() -> None:
    assert search._pocketfft is not None  # the pinned scipy has it: the fast path is the one tested
    rng = np.random.default_rng(23)
    for cells in (17, 24, 25, 27, 30, 32, 40, 54):
        pairs: list[tuple[Any, Any]] = [(np.float32, np.complex64), (np.float64, np.complex128)]
        for real, complex_ in pairs:
            image: Any = rng.standard_normal((cells, cells)).astype(real)
            stack: Any = rng.standard_normal((3, cells, cells)).astype(real)
            spectra = _spectra(rng, 4, cells, complex_)
            for got, want in ((search._rfft2(image), sfft.rfftn(image, workers=1)),
                              (search._rfft2(image), sfft.rfft2(image, workers=1)),
                              (search._rfft2_stack(stack), sfft.rfft2(stack, workers=1)),
                              (search._irfft2(spectra, cells), sfft.irfftn(spectra, s=(cells, cells), workers=1)),
                              (search._irfft2(spectra[0], cells), sfft.irfft2(spectra[0], s=(cells, cells), workers=1))):
                assert got.dtype == want.dtype and got.shape == want.shape
                assert np.array_equal(got, want)


def test_direct_transforms_of_views_and_fallbacks_equal_scipy_fft() -> None:
    rng = np.random.default_rng(24)
    cells = 30
    wide = rng.standard_normal((cells, 2 * cells)).astype(np.float32)
    view = wide[:, ::2]  # a strided view: pocketfft takes it as scipy.fft hands it over
    assert np.array_equal(search._rfft2(view), sfft.rfftn(view, workers=1))
    swapped = rng.standard_normal((cells, cells)).astype(">f4")  # another byte order: through scipy.fft
    assert np.array_equal(search._rfft2(swapped), sfft.rfftn(swapped, workers=1))
    integers = rng.integers(0, 100, (cells, cells))  # not float: scipy.fft converts it
    assert np.array_equal(search._rfft2(integers), sfft.rfftn(integers, workers=1))
    spectra = _spectra(rng, 2, cells, np.complex64)
    # A shape other than (n, n // 2 + 1) is cropped or padded by scipy.fft: through it.
    assert np.array_equal(search._irfft2(spectra, cells - 2), sfft.irfftn(spectra, s=(cells - 2, cells - 2),
                                                                          workers=1))
    stacked = np.stack([wide[:, :cells], wide[:, cells:]])[:, ::-1]  # negative strides
    assert np.array_equal(search._rfft2_stack(stacked), sfft.rfft2(stacked, workers=1))


def test_a_pocketfft_whose_call_changed_is_not_used(monkeypatch: Any) -> None:
    class Changed:  # a later scipy's pocketfft: another signature, or other floats
        @staticmethod
        def r2c(*args: Any) -> Any:
            raise TypeError("r2c() takes 4 positional arguments")

    class Other:
        @staticmethod
        def r2c(image: Any, axes: Any, *rest: Any) -> Any:
            return sfft.rfft2(image, workers=1) * 2

        c2r = staticmethod(lambda *args: None)

    for module in (Changed, Other):
        monkeypatch.setattr(search.importlib, "import_module", lambda name, m=module: m)
        assert search._checked_pocketfft() is None
    monkeypatch.undo()
    assert search._checked_pocketfft() is not None
