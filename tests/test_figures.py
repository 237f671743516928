"""Analysis figures (issue 20): readable log ticks, uncertainties in legends, fits above data, lags in frames
and seconds, an α = 1 guide, the C_v references explained, counts and error bars, a scale bar."""

from __future__ import annotations

from itertools import combinations
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure

from sam4em_live.analysis.analyze import compute
from sam4em_live.analysis.figures import FIGURE_NAMES, draw_all, draw_figure
from sam4em_live.analysis.plots.axes import add_scale_bar
from sam4em_live.analysis.plots.log_ticks import apply_log_ticks
from sam4em_live.analysis.plots.numbers import format_pm, nice_length, tick_text
from sam4em_live.frames import Calibration
from sam4em_live.io.trajectories import Trajectories
from sam4em_live.stats.displacements import excess_kurtosis_err

if TYPE_CHECKING:
    from pathlib import Path

    from matplotlib.axis import Axis
    from matplotlib.text import Text

    from sam4em_live.analysis.result import AnalysisResult


def _brownian(n_particles: int = 3, n_frames: int = 300, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for pid in range(1, n_particles + 1):
        xy = 100 + np.cumsum(rng.normal(scale=1.0, size=(n_frames, 2)), axis=0)
        rows += [{"frame": f, "particle": pid, "x": x, "y": y} for f, (x, y) in enumerate(xy)]
    return pd.DataFrame(rows)


def _result(calibration: Calibration) -> AnalysisResult:
    return compute(Trajectories(_brownian(), calibration, "test"), calibration)


def _drawn_labels(axis: Axis) -> list[Text]:
    """The major tick labels drawn inside the view (text not empty), after a draw."""
    lo, hi = sorted(axis.get_view_interval())
    locs = axis.get_majorticklocs()
    out = []
    for loc, tick in zip(locs, axis.get_major_ticks(len(locs)), strict=True):
        if lo * (1 - 1e-9) <= loc <= hi * (1 + 1e-9):
            out += [label for label in (tick.label1, tick.label2) if label.get_visible() and label.get_text()]
    return out


def _overlaps(fig: Figure, axis: Axis) -> list[tuple[str, str]]:
    renderer = FigureCanvasAgg(fig).get_renderer() if fig.canvas is None else fig.canvas.get_renderer()
    boxes = [(label.get_text(), label.get_window_extent(renderer)) for label in _drawn_labels(axis)]
    return [(a, b) for (a, box_a), (b, box_b) in combinations(boxes, 2) if box_a.overlaps(box_b)]


@pytest.mark.parametrize("decades", [0.5, 1.5, 3.0, 6.0])
@pytest.mark.parametrize("start", [1.0, 3.7e-4, 2.2e5])
@pytest.mark.parametrize("size", [(6.0, 4.5), (4.0, 2.5)])
def test_log_tick_labels_never_overlap(decades: float, start: float, size: tuple[float, float]) -> None:
    fig = Figure(figsize=size, dpi=150)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.loglog([start, start * 10**decades], [start, start * 10**decades])
    ax.set_xlim(start, start * 10**decades)
    ax.set_ylim(start, start * 10**decades)
    for axis in (ax.xaxis, ax.yaxis):
        apply_log_ticks(axis)
    canvas.draw()
    for axis in (ax.xaxis, ax.yaxis):
        assert _overlaps(fig, axis) == [], (axis.axis_name, [label.get_text() for label in _drawn_labels(axis)])
        assert len(_drawn_labels(axis)) >= 2, (axis.axis_name, decades)  # readable *and* informative


def test_the_overlap_check_catches_matplotlibs_default_on_a_short_axis() -> None:
    fig = Figure(figsize=(3.0, 2.5), dpi=150)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.loglog([2e-5, 2e-5 * 10**1.5], [1, 2])
    ax.set_xlim(2e-5, 2e-5 * 10**1.5)
    canvas.draw()
    minor = ax.xaxis.get_minorticklabels()
    major = _drawn_labels(ax.xaxis)
    renderer = canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in [*major, *minor] if t.get_text()]
    assert any(a.overlaps(b) for a, b in combinations(boxes, 2))  # the bug the issue reported


@pytest.mark.parametrize("fps", [40.0, None])
def test_tmsd_figure_content(fps: float | None) -> None:
    result = _result(Calibration(pixel_size_nm=0.5, fps=fps))
    fig = draw_figure(result, "tmsd")
    FigureCanvasAgg(fig).draw()
    ax, ax_n = fig.axes[:2]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert all("±" in text and "α =" in text and "D =" in text for text in legend if text.startswith("#"))
    assert ("nm$^2$/s" if fps else "nm$^2$/frame") in legend[0]
    assert any(text.startswith("α = 1 guide") for text in legend)
    fits = [line for line in ax.get_lines() if line.get_linestyle() in ("-", "--") and line.get_marker() == "None"]
    data = [line for line in ax.get_lines() if line.get_marker() == "o"]
    assert fits and data and min(f.get_zorder() for f in fits) > max(d.get_zorder() for d in data)
    assert ax_n.get_ylabel() == "N pairs" and len(ax_n.get_lines()) == len(result.msds) + 1
    seconds = [child for child in ax.child_axes if child.get_xlabel().startswith("lag τ (s")]
    assert len(seconds) == (1 if fps else 0)
    assert ax_n.get_xlabel() == ("lag τ (frames)" if fps else "lag τ (frames; no frame rate known)")
    for axis in (ax.yaxis, ax_n.xaxis, ax_n.yaxis, *(s.xaxis for s in seconds)):
        assert _overlaps(fig, axis) == []


def test_displacement_figure_has_error_bars_counts_and_kurtosis_with_error() -> None:
    fig = draw_figure(_result(Calibration(pixel_size_nm=0.5, fps=40.0)), "displacements")
    ax_xy, ax_r = fig.axes
    for ax in (ax_xy, ax_r):
        assert any(isinstance(c, ErrorbarContainer) for c in ax.containers)
    kappas = [t.get_text() for t in ax_xy.get_legend().get_texts()]
    assert len(kappas) == 4 and all("κ = " in t and " ± " in t and "frame" in t and " s)" in t for t in kappas)
    assert all("N = " in t.get_text() for t in ax_r.get_legend().get_texts())


def test_velocity_figure_explains_its_reference_lines_and_counts_pairs() -> None:
    fig = draw_figure(_result(Calibration()), "velocity_autocorrelation")
    ax, ax_n = fig.axes[:2]
    legend = " ".join(t.get_text() for t in ax.get_legend().get_texts())
    assert "−½: localisation noise alone, at τ = δ" in legend and "0: Brownian motion" in legend
    assert ax_n.get_ylabel() == "N pairs" and len(ax_n.patches) > 0
    assert "no frame rate known" in ax_n.get_xlabel()


def test_every_figure_is_written(tmp_path: Path) -> None:
    paths = draw_all(_result(Calibration(pixel_size_nm=1.0, fps=10.0)), tmp_path)
    assert sorted(p.name for p in paths) == sorted(f"{n}.{ext}" for n in FIGURE_NAMES for ext in ("png", "pdf"))
    assert all(p.stat().st_size > 1000 for p in paths)


@pytest.mark.parametrize("value, err, text", [
    (12.3456, 0.234, "12.35 ± 0.23"), (0.95812, 0.0671, "0.958 ± 0.067"), (1234.7, 56.7, "1235 ± 57"),
    (12346.0, 567.0, "12350 ± 570"),
    (3.0, float("nan"), "3 ± ?"), (float("nan"), 1.0, "n/a"),
])
def test_value_and_error_text(value: float, err: float, text: str) -> None:
    assert format_pm(value, err) == text


def test_tick_text_is_plain_in_the_middle_and_scientific_outside() -> None:
    assert tick_text(0.002) == "0.002" and tick_text(500.0) == "500"
    assert tick_text(1e-5) == r"$\mathdefault{10^{-5}}$"
    assert tick_text(3e6) == r"$\mathdefault{3\times10^{6}}$"


def test_scale_bar_is_a_round_length_in_nm() -> None:
    assert nice_length(187.0) == 100.0 and nice_length(0.3) == 0.2 and nice_length(50.0) == 50.0
    fig = Figure()
    ax = fig.add_subplot()
    ax.imshow(np.zeros((256, 512)))
    add_scale_bar(ax, pixel_size_nm=0.8, image_width_px=512)
    (bar,) = ax.get_lines()
    xs = bar.get_xdata()
    assert abs(xs[1] - xs[0]) * 0.8 == pytest.approx(50.0)  # 0.2 x 512 px x 0.8 nm = 82 nm: 50 nm
    assert [t.get_text() for t in ax.texts] == ["50 nm"]
    add_scale_bar(ax, pixel_size_nm=None, image_width_px=512)
    assert ax.texts[-1].get_text() == "100 px (no pixel size known)"


def test_kurtosis_error_matches_the_gaussian_formula() -> None:
    rng = np.random.default_rng(3)
    n = 20000
    assert excess_kurtosis_err(rng.normal(size=n)) == pytest.approx(np.sqrt(24 / n), rel=0.2)
    assert np.isnan(excess_kurtosis_err(np.arange(3.0)))


@pytest.mark.parametrize("lag", [1, 10])
def test_kurtosis_error_matches_the_spread_over_repeated_brownian_tracks(lag: int) -> None:
    from sam4em_live.stats.displacements import excess_kurtosis

    rng = np.random.default_rng(lag)
    samples = [(lambda w: w[lag:] - w[:-lag])(np.cumsum(rng.normal(size=3000 + lag))) for _ in range(200)]
    spread = np.std([excess_kurtosis(d) for d in samples])
    reported = np.median([excess_kurtosis_err(d, 2 * lag) for d in samples])
    assert 0.75 * spread < reported < 1.25 * spread  # overlapping displacements: blocks of 2 x lag
