"""What the dashboard shows, as plain data (Qt-free, GUI thread only).

`DashboardModel.apply` folds a `FeedUpdate` from the subscriber into the
current picture: the latest preview, the particles of the latest result with
their masks decoded, trajectory tails, rolling statistics and status. Tails
are reset when the run changes (service restarted).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from sam4em_live.analysis.plots.numbers import format_pm
from sam4em_live.sinks.results_schema import rle_decode

if TYPE_CHECKING:
    from sam4em_live.monitor.subscriber import FeedUpdate, Preview, TrackPoint

log = logging.getLogger(__name__)

PREVIEW_MAX_EDGE_PX = 512  # grid used for overlays before the first preview arrives (publisher default)


@dataclass(frozen=True, slots=True)
class ParticleView:
    """One particle of the latest result, in full-frame pixels (x = column, y = row)."""

    particle: int
    present: bool
    x: float | None
    y: float | None
    score: float
    area_px: int
    bbox: tuple[int, int, int, int] | None  # x0, y0, x1, y1 (half-open)
    mask: np.ndarray | None  # boolean crop of the frame at bbox

    def contains(self, x: float, y: float) -> bool:
        """True if full-frame point (x, y) falls on this particle's mask."""
        if not self.present or self.bbox is None or self.mask is None:
            return False
        col, row = round(x) - self.bbox[0], round(y) - self.bbox[1]
        return 0 <= row < self.mask.shape[0] and 0 <= col < self.mask.shape[1] and bool(self.mask[row, col])


def particle_view(entry: dict[str, Any]) -> ParticleView:
    """Decode one result particle entry; a bad mask is dropped (logged), never fatal."""
    bbox = entry.get("bbox")
    mask = None
    if bbox is not None:
        bbox = tuple(int(v) for v in bbox)
        counts = entry.get("mask_rle")
        if counts is not None:
            try:
                mask = rle_decode(counts, (bbox[3] - bbox[1], bbox[2] - bbox[0]))
            except (ValueError, TypeError) as exc:
                log.debug("particle %s: undecodable mask: %s", entry.get("id"), exc)
    x, y = entry.get("x"), entry.get("y")
    return ParticleView(
        particle=int(entry["id"]), present=bool(entry.get("present")),
        x=None if x is None else float(x), y=None if y is None else float(y),
        score=float(entry.get("score") or 0.0), area_px=int(entry.get("area_px") or 0),
        bbox=bbox, mask=mask,
    )


class Tail:
    """Recent positions of one particle: frame indices and x, y (full-frame pixels)."""

    def __init__(self, max_points: int) -> None:
        self.frames: deque[int] = deque(maxlen=max_points)
        self.xy: deque[tuple[float, float]] = deque(maxlen=max_points)

    def add(self, frame: int, x: float, y: float) -> None:
        self.frames.append(frame)
        self.xy.append((x, y))

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        return np.fromiter(self.frames, dtype=np.int64, count=len(self.frames)), np.asarray(self.xy, float).reshape(-1, 2)


class DashboardModel:
    """Current state of the dashboard. Mutated only on the GUI thread.

    Parameters
    ----------
    tail_frames
        Tails keep positions from the last ``tail_frames`` frames.
    """

    def __init__(self, tail_frames: int = 200) -> None:
        self.tail_frames = tail_frames
        self.reset()

    def reset(self) -> None:
        self.run_id: str | None = None
        self.preview: Preview | None = None
        self.result: dict[str, Any] | None = None
        self.particles: dict[int, ParticleView] = {}
        self.tails: dict[int, Tail] = {}
        self.stats: dict[int, dict[str, Any]] = {}
        self.status: dict[str, Any] = {}
        self.events: deque[dict[str, Any]] = deque(maxlen=50)
        self.last_frame = -1
        self.results_received = 0
        self.rejected_total = 0
        self.random_weights = False
        self.ids_ever_seen: set[int] = set()
        # Bumped whenever ``stats`` changes (never reset), so the panel redraws only then.
        self.stats_version = getattr(self, "stats_version", 0) + 1

    # ---------------------------------------------------------------- updates

    def apply(self, update: FeedUpdate) -> None:
        if update.run_changed:
            rejected = self.rejected_total
            self.reset()
            self.rejected_total = rejected
        self.run_id = update.run_id or self.run_id
        self.rejected_total = update.rejected_total
        self.results_received += update.results_received
        if update.preview is not None:
            self.preview = update.preview
        if update.status is not None:
            self.status = update.status
            self.random_weights = self.random_weights or bool(update.status.get("random_weights"))
        self.events.extend(update.events)
        for point in update.points:
            self._add_point(point)
        for pid, stats in update.stats.items():
            self.stats[pid] = stats
        if update.stats:
            self.stats_version += 1
        if update.latest_result is not None:
            self._set_result(update.latest_result)

    def _add_point(self, point: TrackPoint) -> None:
        if point.frame < self.last_frame:
            # Frame indices went backwards within a run: a new series. Old tails would lie.
            self.tails.clear()
        self.last_frame = point.frame
        for pid, (x, y) in point.positions.items():
            tail = self.tails.get(pid)
            if tail is None:
                tail = self.tails[pid] = Tail(self.tail_frames)
            tail.add(point.frame, x, y)
        oldest = point.frame - self.tail_frames
        for tail in self.tails.values():
            while tail.frames and tail.frames[0] <= oldest:
                tail.frames.popleft()
                tail.xy.popleft()

    def _set_result(self, body: dict[str, Any]) -> None:
        self.result = body
        self.random_weights = self.random_weights or bool(body.get("random_weights"))
        views = {}
        for entry in body.get("particles") or ():
            try:
                view = particle_view(entry)
            except (KeyError, TypeError, ValueError) as exc:
                log.debug("skipping bad particle entry: %s", exc)
                continue
            views[view.particle] = view
        self.particles = views
        self.ids_ever_seen.update(views)
        for pid in list(self.tails):
            if pid not in views:
                del self.tails[pid]  # removed from the service
        for pid in [p for p in self.stats if p not in views]:
            del self.stats[pid]
            self.stats_version += 1

    # ---------------------------------------------------------------- queries

    @property
    def full_shape(self) -> tuple[int, int] | None:
        """(rows, columns) of the full frame, from the latest preview or result."""
        if self.preview is not None:
            return self.preview.full_shape
        if self.result is not None and self.result.get("shape"):
            rows, cols = self.result["shape"]
            return (int(rows), int(cols))
        return None

    @property
    def display_step(self) -> int:
        """Decimation of the displayed grid (full-frame pixels per displayed pixel)."""
        if self.preview is not None:
            return self.preview.step
        shape = self.full_shape
        return max(1, math.ceil(max(shape) / PREVIEW_MAX_EDGE_PX)) if shape else 1

    def particle_at(self, x: float, y: float, radius_px: float = 4.0) -> int | None:
        """The particle under full-frame point (x, y): on its mask, else nearest centroid within radius."""
        best, best_d = None, radius_px
        for view in self.particles.values():
            if view.contains(x, y):
                return view.particle
            if view.present and view.x is not None and view.y is not None:
                distance = math.hypot(view.x - x, view.y - y)
                if distance <= best_d:
                    best, best_d = view.particle, distance
        return best

    def next_particle_id(self, reserved: set[int] | frozenset[int] = frozenset()) -> int:
        """A fresh id: one more than any id seen in this run (or reserved by prompts sent)."""
        known = self.ids_ever_seen | set(self.particles) | set(reserved)
        known |= {int(p) for p in self.status.get("particles") or ()}
        return max(known, default=0) + 1


@dataclass(frozen=True, slots=True)
class MsdCurve:
    """One particle's rolling tMSD ready to plot (only lags with data and MSD > 0)."""

    lag: np.ndarray
    msd: np.ndarray
    lag_unit: str  # "s" or "frames"
    msd_unit: str  # "nm²" or "px²"
    alpha: float | None
    # the anomalous fit 4Dτ^α + offset over its fit lags, in the plotted units (empty: no fit)
    fit_lag: np.ndarray = field(default_factory=lambda: np.zeros(0))
    fit_msd: np.ndarray = field(default_factory=lambda: np.zeros(0))
    fit_text: str = ""  # "D = … ± … unit, α = … ± …" ("" without a fit)


def _first(stats: dict[str, Any], *keys: str) -> Any:
    for key in keys:
        value = stats.get(key)
        if value is not None:
            return value
    return None


def msd_curve(stats: dict[str, Any]) -> MsdCurve | None:
    """Pick physical units when the service knew them (seconds, nm²), else frames and px².

    Tolerant of missing fields: returns None when there is nothing to plot.
    """
    lag_s, lag_frames = stats.get("lag_s"), stats.get("lag_frames")
    msd_nm2, msd_px2 = stats.get("msd_nm2"), stats.get("msd_px2", stats.get("msd"))
    lag, lag_unit = (lag_s, "s") if lag_s is not None and _all_numbers(lag_s) else (lag_frames, "frames")
    msd, msd_unit = (msd_nm2, "nm²") if msd_nm2 is not None and _all_numbers(msd_nm2) else (msd_px2, "px²")
    if lag is None or msd is None:
        return None
    try:
        lag_arr = np.asarray(lag, dtype=float).ravel()
        msd_arr = np.asarray([np.nan if v is None else v for v in msd], dtype=float).ravel()
    except (TypeError, ValueError):
        return None
    if lag_arr.size != msd_arr.size:
        return None
    keep = np.isfinite(lag_arr) & np.isfinite(msd_arr) & (lag_arr > 0) & (msd_arr > 0)
    if not keep.any():
        return None
    fit_field = stats.get("fit")
    fit: dict[str, Any] = fit_field if isinstance(fit_field, dict) else {}
    alpha = _first(stats, "alpha") if stats.get("alpha") is not None else _first(fit, "alpha")
    try:
        alpha = None if alpha is None or not math.isfinite(float(alpha)) else float(alpha)
    except (TypeError, ValueError):
        alpha = None
    fit_lag, fit_msd = _fit_curve(stats, lag_arr, lag_unit == "s", msd_unit == "nm²")
    return MsdCurve(lag_arr[keep], msd_arr[keep], lag_unit, msd_unit, alpha, fit_lag, fit_msd, _fit_text(stats))


def _number(stats: dict[str, Any], key: str) -> float | None:
    value = stats.get(key)
    try:
        return float(value) if value is not None and math.isfinite(float(value)) else None
    except (TypeError, ValueError):
        return None


def _series(stats: dict[str, Any], key: str) -> np.ndarray:
    try:
        return np.asarray([np.nan if v is None else v for v in stats.get(key) or ()], dtype=float).ravel()
    except (TypeError, ValueError):
        return np.zeros(0)


def _fit_curve(stats: dict[str, Any], lag: np.ndarray, seconds: bool, nm: bool) -> tuple[np.ndarray, np.ndarray]:
    """The fitted 4Dτ^α + offset (px², frames) over the first ``fit_lags`` lags, in the plotted units."""
    d, alpha, offset = _number(stats, "D_px2_per_frame"), _number(stats, "alpha"), _number(stats, "offset_px2")
    points = _number(stats, "fit_lags")
    frames, px2, nm2 = _series(stats, "lag_frames"), _series(stats, "msd_px2"), _series(stats, "msd_nm2")
    if d is None or alpha is None or not points or frames.size == 0 or not frames[0] > 0:
        return np.zeros(0), np.zeros(0)
    # plotted / native units, from the values the service converted itself
    lag_scale = float(lag[0] / frames[0]) if seconds else 1.0
    area_scale = 1.0
    if nm and nm2.size == px2.size:
        both = np.isfinite(px2) & np.isfinite(nm2) & (px2 > 0)
        area_scale = float(nm2[both][0] / px2[both][0]) if both.any() else 1.0
    tau = np.geomspace(frames[0], frames[min(int(points), frames.size) - 1], 40)
    model = 4 * d * tau**alpha + (offset or 0.0)
    keep = model > 0  # a negative offset can take the first lags below zero: nothing to draw on a log axis
    return tau[keep] * lag_scale, model[keep] * area_scale


def _fit_text(stats: dict[str, Any]) -> str:
    """D ± err in nm²/s^α when the service knew the calibration, else px²/frame^α; α ± err."""
    alpha, alpha_err = _number(stats, "alpha"), _number(stats, "alpha_err")
    if alpha is None:
        return ""
    d_nm, d_nm_err = _number(stats, "D_nm2_per_s"), _number(stats, "D_nm2_per_s_err")
    if d_nm is not None:
        d_text = f"D = {format_pm(d_nm, d_nm_err or math.nan)} nm²/s^α"
    else:
        d_px, d_err = _number(stats, "D_px2_per_frame"), _number(stats, "D_err")
        d_text = "D = –" if d_px is None else f"D = {format_pm(d_px, d_err or math.nan)} px²/frame^α"
    return f"{d_text}, α = {format_pm(alpha, alpha_err or math.nan)}"


def _all_numbers(values: Any) -> bool:
    try:
        return len(values) > 0 and all(v is not None for v in values)
    except TypeError:
        return False
