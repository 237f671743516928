"""Readable numbers, chosen without any plotting library: log ticks, value ± error, scale-bar lengths.

Shared by the matplotlib figures (`log_ticks`, `axes`) and the Qt monitor (no matplotlib import there).

Log ticks: the labelled ticks are the densest of 1-2-3-...-9, 1-2-3-5-7, 1-2-5, 1-3, 1 per decade,
1 per 2, 3, ... decades whose closest pair of labels still has 40 % of a label's size free between
them, on an axis of the drawn length in pixels (`readable_ticks`).
"""

from __future__ import annotations

import math

import numpy as np

#: Candidate labelled ticks per decade (mantissas), densest first.
_SUBS: tuple[tuple[float, ...], ...] = ((1, 2, 3, 4, 5, 6, 7, 8, 9), (1, 2, 3, 5, 7), (1, 2, 5), (1, 3), (1,))
#: Free space between neighbouring labels, as a fraction of a label's extent.
_MARGIN = 0.4
_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def tick_text(value: float, mathtext: bool = True) -> str:
    """A tick label: a plain number between 10^-3 and 10^4, else m×10^e (mathtext, or Unicode for Qt)."""
    if value == 0 or not math.isfinite(value):
        return "0" if value == 0 else ""
    if 1e-3 <= abs(value) < 1e4:
        return f"{value:.6g}"
    exponent = math.floor(math.log10(abs(value)) + 1e-9)
    mantissa = value / 10**exponent
    if not mathtext:
        power = "10" + str(exponent).translate(_SUPERSCRIPT)
        return power if abs(mantissa - 1) < 1e-6 else f"{mantissa:.3g}×{power}"
    if abs(mantissa - 1) < 1e-6:
        return rf"$\mathdefault{{10^{{{exponent}}}}}$"
    return rf"$\mathdefault{{{mantissa:.3g}\times10^{{{exponent}}}}}$"


def _label_extent_px(values: np.ndarray, along_x: bool, fontsize_px: float) -> float:
    """Conservative size of the largest label along the axis (x: width; y: height) in pixels."""
    if not along_x:  # mathtext superscripts make labels taller than the font size
        tall = any(tick_text(float(v)).startswith("$") for v in values)
        return (1.6 if tall else 1.25) * fontsize_px
    widest = 0.0
    for v in values:
        text = tick_text(float(v))
        if text.startswith("$"):
            exponent = text.split("{")[-1].rstrip("}$")
            mantissa = text.split(r"\times")[0].split("{")[-1] if r"\times" in text else ""
            width = 0.62 * len(mantissa) + (0.9 if mantissa else 0.0) + 1.25 + 0.5 * len(exponent)
        else:
            width = 0.62 * len(text)
        widest = max(widest, width)
    return widest * fontsize_px


def _candidates(lo: float, hi: float) -> list[np.ndarray]:
    """Labelled tick sets inside [lo, hi] (positive), densest first."""
    first, last = math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1
    decades = np.arange(first, last + 1)
    out = [np.array([m * 10.0**d for d in decades for m in subs]) for subs in _SUBS]
    for step in range(2, 10):  # every 2nd, 3rd ... decade on very long axes
        out.append(10.0 ** decades[decades % step == 0])
    return [np.sort(c[(c >= lo * (1 - 1e-9)) & (c <= hi * (1 + 1e-9))]) for c in out]


def readable_ticks(lo: float, hi: float, length_px: float, along_x: bool, fontsize_px: float) -> np.ndarray:
    """The densest candidate tick set in [lo, hi] whose labels do not touch on an axis ``length_px`` long."""
    lo, hi = min(lo, hi), max(lo, hi)
    if not (lo > 0 and math.isfinite(hi)) or hi <= lo:
        return np.array([lo]) if lo > 0 else np.array([])
    px_per_decade = length_px / math.log10(hi / lo)
    single = np.array([])
    for ticks in _candidates(lo, hi):
        if ticks.size == 1 and single.size == 0:
            single = ticks  # one label always fits; keep looking for two that do
        if ticks.size < 2:
            continue
        gap = float(np.min(np.diff(np.log10(ticks)))) * px_per_decade
        if gap >= (1 + _MARGIN) * _label_extent_px(ticks, along_x, fontsize_px):
            return ticks
    return single


def format_pm(value: float, err: float) -> str:
    """``value ± err`` with the error to 2 significant digits and the value to the same decimal."""
    if not math.isfinite(value):
        return "n/a"
    if not (math.isfinite(err) and err > 0):
        return f"{value:.3g} ± ?"
    decimals = max(0, 1 - math.floor(math.log10(err)))
    if decimals == 0:  # a large error: round both to its second significant digit
        step = 10 ** (math.floor(math.log10(err)) - 1)
        return f"{round(value / step) * step:.0f} ± {round(err / step) * step:.0f}"
    return f"{value:.{decimals}f} ± {err:.{decimals}f}"


def nice_length(target: float) -> float:
    """The largest 1, 2 or 5 × 10^k not above ``target`` (> 0)."""
    exponent = math.floor(math.log10(target))
    for mantissa in (5, 2, 1):
        if mantissa * 10**exponent <= target:
            return float(mantissa * 10**exponent)
    return float(10**exponent)
