"""Bounded appearance memory of one rigid particle, in its own body frame.

The memory is one exponential average of the particle's relative contrast,
sampled on a square grid that moves and turns with the particle (the body
frame, `body_frame`: u along the pose angle, v across). Every accepted frame is warped into this frame and averaged in,
so the noise of the memory falls as 1/sqrt(frames) up to ``memory_frames``,
after which it follows slow real change (etching, growth) with that horizon.
The mask (the memory's measured edge: `boundary.fit_profile` of one half of
the memory across the other half's contour, see `ShapeMemory._edge_level`) and
the rotated matching templates are derived from it.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from sam4em_live.segment.embedded.body_frame import body_offsets, cell_axis, symmetry_period
from sam4em_live.segment.embedded.boundary import (
    PROFILE_INSIDE_PX,
    ROUNDED_MAX_LOSS,
    EdgeFit,
    corner_loss,
    fit_profile,
    inscribed_radius,
    merged_profile,
)
from sam4em_live.segment.embedded.early_memory import EarlyObservations
from sam4em_live.segment.embedded.edge_references import crossed_references, reference_sigma
from sam4em_live.segment.embedded.morphology import CROSS, dilate_cross, fill_holes
from sam4em_live.segment.embedded.raster import MaskLookup, Placement, mask_lookup, rasterize_mask
from sam4em_live.segment.embedded.templates import TemplateBanks
from sam4em_live.segment.embedded.window import bilinear, bilinear_inside, float32_percentile, zero_padded

if TYPE_CHECKING:
    from collections.abc import Callable

    from sam4em_live.segment.embedded.options import EmbeddedOptions

#: Noise std per pyramid level is re-measured every this many searches.
NOISE_REMEASURE_CALLS = 8
#: Coarse cells across a particle's radius (sets the coarse block size) ...
COARSE_CELLS_PER_RADIUS = 6.0
#: ... and the fine level never averages more than this many pixels per side (sub-pixel precision).
MAX_FINE_FACTOR = 2
#: Frames of memory before the learned appearance replaces the prompt's mask as the template.
MIN_FRAMES_FOR_LEARNED_SHAPE = 3
#: Frames of memory before its edge is measured (`_edge_level`): a younger memory is noisy and blurred by
#: poses found with a template that is still converging; fitted, a faint sphere's edge read as a step
#: blurred by 3 px and the mask shrank by a third (multi-1024's 30 nm sphere) before recovering.
MIN_FRAMES_FOR_EDGE_FIT = 16
#: A refreshed mask whose area changes by more than this factor is rejected (bad frames) ...
MAX_AREA_CHANGE = 1.25
#: ... and a refreshed mask may move its boundary by at most this many pixels (no runaway growth).
MAX_BOUNDARY_STEP_PX = 2
#: The first mask at a measured dome (chord) edge may shrink by this factor (growth stays at `MAX_AREA_CHANGE` and
#: `MAX_BOUNDARY_STEP_PX`): it replaces the provisional ``edge_fraction`` contours, the seed's outline grown by
#: the blur and the 2.5 px smoothing (a 20 px rod under the soft MTF: +128 %), which at 1.25x a refresh was still
#: +14 % when its memory filled. Growing 1.9x and 4 px at once too, a particle of the robustness `distractors`
#: (sim, seed 0) hopped to a look-alike for 137 frames.
FIRST_EDGE_AREA_CHANGE = 1.9
#: A polygonal plate's mask is the half-height contour (`boundary.EdgeFit.half_level`) of the memory smoothed
#: by this much (px): read back across the references instead, the level was too high by the corners (where
#: the smoothed reference contour cuts inside the true corner) and cubes shrank by 3-5 %; less smoothing
#: (``mask_smoothing_px`` is 2.5) rounds the corners less (a 40 px cube: -5 % at 2.5 px, -3 % at 1 px).
#: A rounded outline fitted as a plate keeps the readback: it is mostly a dome whose faint or jittered
#: profile the chord model missed, and its half height lies far inside (sam4em-150nm's rod: -20 %).
PLATE_SMOOTHING_PX = 1.0
#: The outline's roundness is averaged over this many refreshes (`ShapeMemory._rounded`).
OUTLINE_JUDGEMENTS = 8
#: Grid axes kept per memory (`ShapeMemory.cell_axis`); a handful are in use at a time.
MAX_CELL_AXES = 64
#: The prompt's point picks the part of a splitting memory (`ShapeMemory.anchor`) up to this many frames.
ANCHOR_FRAMES = 16


class ShapeMemory:
    """Appearance, mask and matching templates of one particle (body frame, full resolution)."""

    def __init__(self, appearance: np.ndarray, mask: np.ndarray, options: EmbeddedOptions) -> None:
        self.options = options
        self.half = appearance.shape[0] // 2
        self.appearance = appearance.astype(np.float32)
        self.mask = mask.astype(bool)
        # Two halves of the memory, each of every other observation: one draws the contour, the other's
        # profile is read across it (`_edge_level`), so the contour's noise is not in the profile.
        self._halves = np.stack([self.appearance, self.appearance])
        self._weight_total, self._half_weights = 1.0, [1.0, 1.0]  # observations counted (`update`'s weights)
        self._level: np.ndarray | None = None
        self.edge: EdgeFit | None = None  # the last fitted edge (None: none yet, or no clear one)
        self.measured = False  # whether the mask has been drawn at a measured edge (`_derive_mask`)
        # Where the user pointed (body u, v px; None: a box, or no longer needed), while the memory is young:
        # a seed that took in a neighbour splits at a refresh, and the part under the point is the particle
        # the user meant (the part overlapping the old mask most was the neighbour, 25-35 px away, in `dense`).
        self.anchor: tuple[float, float] | None = None
        self.corner_loss = 0.0  # `boundary.corner_loss` of the outline, averaged over refreshes (`_rounded`)
        self._outline_judgements = 0
        self.n_obs = 1
        self.early = EarlyObservations()  # the first observations, re-divided as the background is learned
        self._noise: dict[int, float] = {}
        self._noise_calls: dict[int, int] = {}
        # Which of the `NOISE_REMEASURE_CALLS` calls re-measures: set per particle by its track so tens of
        # particles do not all re-measure on the same frame (a latency spike every 8th frame, issue 23).
        self.noise_phase = 0
        self._u, self._v = body_offsets(self.half)
        self._axis = np.arange(-self.half, self.half + 1, dtype=np.float32)
        # The searches ask for the same few grid axes frame after frame: kept per memory (C-level lookup).
        self.cell_axis = lru_cache(maxsize=MAX_CELL_AXES)(cell_axis)
        radius = self._mask_radius()
        # Pyramid levels fixed for the memory's life so window shapes (and FFT plans) stay fixed.
        self.coarse_factor = int(np.clip(math.ceil(radius / COARSE_CELLS_PER_RADIUS), 1, 8))
        self.fine_factor = int(np.clip(self.coarse_factor // 2, 1, MAX_FINE_FACTOR))
        self.refresh()

    # ------------------------------------------------------------------ derived shape

    @property
    def area_px(self) -> int:
        return int(self.mask.sum())

    def _mask_radius(self) -> float:
        if not self.mask.any():
            return 1.0
        return float(np.sqrt((self._u[self.mask] ** 2 + self._v[self.mask] ** 2).max())) + 1.0

    def refresh(self) -> tuple[float, float]:
        """Re-derive mask, template and symmetry from the memory.

        Returns the (u, v) offset (pixels, body frame) by which the particle's
        centre moved in the grid; the memory is re-centred, so the caller adds
        this offset to its pose.
        """
        self._smooth: np.ndarray | None = None  # the smoothed memory, shared by the steps below
        if self.n_obs >= MIN_FRAMES_FOR_LEARNED_SHAPE:
            self._derive_mask()
        shift = self._recentre()
        self.radius_px = self._mask_radius()
        self.support_px = min(self.half - 1.0, self.radius_px + max(3.0, 0.25 * self.radius_px))
        self._build_template()
        if self.n_obs <= self.options.memory_frames or not hasattr(self, "period_deg"):
            self.period_deg = symmetry_period(self.mask, self._u, self._v)  # settled once the memory is full
        self.banks = TemplateBanks(self._template_body, self.half, self.support_px, self.period_deg,
                                   self.coarse_factor, self.fine_factor, self.options)
        self._mask_lookup = self._rasterize_lookup()
        self._prepare_plane_fit()
        self._smooth = None
        return shift

    def _smoothed(self) -> np.ndarray:
        if self._smooth is None:
            self._smooth = ndimage.gaussian_filter(self.appearance, self.options.mask_smoothing_px)
        return self._smooth

    def _derive_mask(self) -> None:
        """New mask: the memory's measured edge (`boundary.fit_edge`), moving at most a little per refresh.

        The ``edge_fraction`` contour of the smoothed memory is only provisional: the
        unsmoothed memory's mean profile across such a contour locates the true edge (an
        offset in pixels, `_edge_level`), and the mask is a smoothed memory's contour at
        the level found at that offset (a plate's: its half height). Without a clear edge (faint, young memory) the provisional contour
        stands. The boundary may move by `MAX_BOUNDARY_STEP_PX` and the area by a
        factor `MAX_AREA_CHANGE` per refresh (the threshold is shifted to respect it),
        so a bad seed converges over a few refreshes and a few bad frames cannot swing
        the shape; the first measured (dome) edge, which replaces the provisional contours,
        may shrink it by `FIRST_EDGE_AREA_CHANGE`.
        """
        smooth = self._smoothed()
        peak = float32_percentile(smooth[self.mask], 90) if self.mask.any() else 0.0
        if peak <= 0:
            return
        field, threshold, measured = self._edge_level(smooth, peak)
        # Only a dome (chord) edge: a plate fitted on the first, single judgement of the outline is as often a
        # faint sphere read as a polygon (a 40 px sphere at CNR 0.3: -27 % at once, -9 % when scored).
        first = measured and not self.measured and self.edge is not None and self.edge.model == "chord"
        reach = dilate_cross(self.mask, MAX_BOUNDARY_STEP_PX)
        old_area = int(self.mask.sum())
        area = int((reach & (field > threshold)).sum())
        target = int(np.clip(area, old_area / (FIRST_EDGE_AREA_CHANGE if first else MAX_AREA_CHANGE),
                             old_area * MAX_AREA_CHANGE))
        if target != area:  # clamp the change: the threshold giving the target area inside the reach
            values = np.sort(field[reach])[::-1]
            threshold = float(values[min(max(target, 1), values.size) - 1])
        part = self._overlapping(reach & (field >= threshold))
        if part is None:
            return
        candidate = fill_holes(part)
        if candidate.sum() < 6:
            return
        self.mask = candidate
        self.measured = self.measured or measured
        # Signed level (> 0 inside) for sub-pixel boundaries when rasterising.
        level = field - np.float32(threshold)
        self._level = np.where(candidate, np.maximum(level, 1e-6), np.minimum(level, -1e-6)).astype(np.float32)

    def _edge_level(self, smooth: np.ndarray, peak: float) -> tuple[np.ndarray, float, bool]:
        """A smoothed memory, the level of its contour at the fitted edge, and whether that edge was measured.

        False: the provisional level (`boundary.fit_profile` found no edge, or the memory is young).

        The provisional contour is the part of ``smooth > edge_fraction * peak`` that
        overlaps the current mask; it stands (``smooth`` at that level) when the
        profile shows no clear edge or the memory is younger than `MIN_FRAMES_FOR_EDGE_FIT`.
        Otherwise the edge profile is cross-fitted (`edge_references.crossed_references`): each half of the
        memory is read across the other half's contour, and the level is read back at the fitted
        offset on the memory smoothed as the references were, across both contours.
        """
        provisional_level = self.options.edge_fraction * peak
        provisional = self._overlapping(smooth > provisional_level)
        if provisional is None or self.n_obs < MIN_FRAMES_FOR_EDGE_FIT:
            return smooth, provisional_level, False
        sigma = reference_sigma(provisional, self.options.mask_smoothing_px)
        references = crossed_references(self._halves, self.mask, sigma, self.options.edge_fraction, self._overlapping)
        if references is None:
            return smooth, provisional_level, False
        field = smooth if sigma == self.options.mask_smoothing_px else ndimage.gaussian_filter(self.appearance, sigma)
        radius = min(inscribed_radius(distance) for _, _, distance in references)
        inside = min(PROFILE_INSIDE_PX, radius + 2.0)
        profile = merged_profile([(self._halves[read][crop], distance) for read, crop, distance in references], inside)
        rounded = self._rounded(smooth, peak)
        self.edge = fit_profile(profile, radius, rounded)
        if self.edge is None:
            return smooth, provisional_level, False
        if self.edge.model == "plate" and not rounded:  # a polygon: a step crosses its edge at half height
            return ndimage.gaussian_filter(self.appearance, PLATE_SMOOTHING_PX), self.edge.half_level, True
        readback = merged_profile([(field[crop], distance) for _, crop, distance in references], inside)
        return field, readback.at(self.edge.offset_px), True

    def _rounded(self, smooth: np.ndarray, peak: float) -> bool:
        """Whether the particle's outline is rounded (`boundary.rounded_outline`), judged over refreshes.

        Judged on the half-peak contour, where the blurred profile is steepest and noise moves the
        outline least (the low provisional contour of a faint memory is ragged), and averaged over the
        last `OUTLINE_JUDGEMENTS` refreshes, so one noisy memory does not flip a particle's edge model.
        """
        half_peak = self._overlapping(smooth > 0.5 * peak)
        if half_peak is not None:
            self._outline_judgements = min(self._outline_judgements + 1, OUTLINE_JUDGEMENTS)
            loss = corner_loss(half_peak)
            self.corner_loss += (loss - self.corner_loss) / self._outline_judgements
        return self.corner_loss <= ROUNDED_MAX_LOSS

    def _overlapping(self, region: np.ndarray) -> np.ndarray | None:
        """The connected part of ``region`` that overlaps the mask most; None if ``region`` is empty."""
        labels, count = ndimage.label(region, CROSS)
        if count == 0:
            return None
        anchored = self._anchored_label(labels)
        if anchored:
            return labels == anchored
        overlap = np.bincount(labels[self.mask], minlength=count + 1)
        overlap[0] = 0
        return labels == int(np.argmax(overlap))

    def _anchored_label(self, labels: np.ndarray) -> int:
        """The label under the anchor while the memory is young (`ANCHOR_FRAMES`); 0 if none."""
        if self.anchor is None or self.n_obs >= ANCHOR_FRAMES:
            return 0
        row, col = round(self.anchor[1] + self.half), round(self.anchor[0] + self.half)
        if not (0 <= row < labels.shape[0] and 0 <= col < labels.shape[1]):
            return 0
        return int(labels[row, col])

    def _recentre(self) -> tuple[float, float]:
        if not self.mask.any():
            return 0.0, 0.0
        du, dv = float(self._u[self.mask].mean()), float(self._v[self.mask].mean())
        if math.hypot(du, dv) < 0.5:
            return 0.0, 0.0
        self.appearance = ndimage.shift(self.appearance, (-dv, -du), order=1, mode="constant", cval=0.0)
        self._halves = ndimage.shift(self._halves, (0.0, -dv, -du), order=1, mode="constant", cval=0.0)
        self._smooth = None  # of the memory before the shift
        self.mask = ndimage.shift(self.mask.astype(np.float32), (-dv, -du), order=1) > 0.5
        if self._level is not None:
            self._level = ndimage.shift(self._level, (-dv, -du), order=1, mode="nearest")
        if self.anchor is not None:
            self.anchor = (self.anchor[0] - du, self.anchor[1] - dv)
        self.early.moved(du, dv)
        return du, dv

    def _build_template(self) -> None:
        """Matching template in the body frame: learned contrast profile once known, else the mask."""
        if self.n_obs >= MIN_FRAMES_FOR_LEARNED_SHAPE:
            smooth = self._smoothed()
            peak = float32_percentile(smooth[self.mask], 90)
            near = dilate_cross(self.mask, 2)
            body = np.where(near, np.clip(smooth / max(peak, 1e-6), 0.0, 1.5), 0.0)
        else:
            body = ndimage.gaussian_filter(self.mask.astype(np.float32), 1.0)
        self._template_body = body.astype(np.float32)

    def _rasterize_lookup(self) -> MaskLookup:
        level = self._level
        if level is None or level.shape != self.mask.shape:  # no learned level yet: a smoothed mask
            level = ndimage.gaussian_filter(self.mask.astype(np.float32), 0.7) - np.float32(0.5)
            level = np.where(self.mask, np.maximum(level, 1e-6), np.minimum(level, -1e-6))
        return mask_lookup(level, self.half, self.radius_px)

    def _prepare_plane_fit(self) -> None:
        """Background ring (outside the dilated mask, inside the grid's disc) for plane removal."""
        ring = ~dilate_cross(self.mask, 3)
        ring &= (self._u**2 + self._v**2) <= (self.half - 1) ** 2
        self._ring_index = np.flatnonzero(ring)
        design = np.stack([np.ones(self._ring_index.size, np.float32), self._u.ravel()[self._ring_index],
                           self._v.ravel()[self._ring_index]], axis=1)
        normal = design.T @ design
        self._ring_pinv = (np.linalg.inv(normal) @ design.T).astype(np.float32)

    def noise_level(self, factor: int, measure: Callable[[], float | None]) -> float:
        """Noise std at a pyramid level, re-measured every `NOISE_REMEASURE_CALLS` calls (it is stationary).

        A window too clipped to measure keeps the last value.
        """
        calls = self._noise_calls.get(factor, 0)
        self._noise_calls[factor] = calls + 1
        if (calls + self.noise_phase) % NOISE_REMEASURE_CALLS == 0 or factor not in self._noise:
            measured = measure()
            if measured is not None:
                self._noise[factor] = measured
            elif factor not in self._noise:
                self._noise_calls[factor] = 0  # try again next call
        return self._noise.get(factor, 1.0)

    # ------------------------------------------------------------------ frames <-> body

    def observe_reach_px(self, angle_deg: float) -> int:
        """Pixels from the particle centre that `observe` reads at ``angle_deg`` (the turned grid's corners)."""
        t = math.radians(angle_deg)
        return int(math.ceil(self.half * (abs(math.cos(t)) + abs(math.sin(t))))) + 2

    def observe(self, darkness: np.ndarray, x_win: float, y_win: float, angle_deg: float) -> np.ndarray:
        """Warp a window's contrast into the body frame at a pose (window pixel coordinates).

        A window reaching `observe_reach_px` around the pose is interpolated without
        bounds checks (the learning path, 2x cheaper); a smaller one reads 0 outside.
        """
        t = math.radians(angle_deg)
        c, s = np.array(math.cos(t), np.float32), np.array(math.sin(t), np.float32)  # 0-d: see window._ONE
        # Body u runs along columns, v along rows, so the sample coordinates are outer sums of 1-D terms.
        axis = self._axis
        cols = np.add.outer(-(axis * s), x_win + axis * c)  # x_win + u c - v s
        rows = np.add.outer(axis * c, y_win + axis * s)  # y_win + u s + v c
        reach = self.half * (abs(float(c)) + abs(float(s))) + 0.01
        height, width = darkness.shape
        if min(x_win, y_win) - reach >= 0 and x_win + reach < width - 1 and y_win + reach < height - 1:
            body = bilinear_inside(darkness, rows, cols)
        else:
            body = bilinear(zero_padded(darkness), rows, cols)
        return self.remove_plane(body)

    def remove_plane(self, body: np.ndarray) -> np.ndarray:
        """Remove (in place) the local background plane (gradients) measured on the ring around the particle."""
        coeffs = self._ring_pinv @ body.ravel()[self._ring_index]
        body -= np.add.outer(coeffs[0] + coeffs[2] * self._axis, coeffs[1] * self._axis)
        return body

    def correct(self, memory: np.ndarray, halves: np.ndarray) -> None:
        """Add a correction of past observations (`early_memory`) to the memory and to each half."""
        self.appearance += memory
        self._halves += halves

    def update(self, observation: np.ndarray, weight: float = 1.0) -> None:
        """Fold one aligned observation into the exponential memory, counting ``weight`` (0-1) observations.

        ``weight`` < 1: the background under this observation is partly guessed (`FlatField.known_fraction`); the
        memory's running mean counts it so much less, and later observations on a known background outweigh it.
        The seed counts as much as the first observation after it (seen on the same guessed background). With
        ``weight`` 1 throughout, the plain running mean over the last `memory_frames`.
        """
        self.n_obs += 1
        if self.n_obs == 2:
            self._weight_total, self._half_weights = weight, [weight, weight]
        self._weight_total += weight
        share = weight / min(self._weight_total, self.options.memory_frames)
        self.appearance += np.array(share, np.float32) * (observation - self.appearance)  # 0-d: see window._ONE
        half = self.n_obs % 2
        self._half_weights[half] += weight
        half_share = weight / min(self._half_weights[half], max(self.options.memory_frames // 2, 1))  # same horizon
        self._halves[half] += np.array(half_share, np.float32) * (observation - self._halves[half])
        self.early.fold(share, half, half_share)

    def rasterize(self, x: float, y: float, angle_deg: float, shape: tuple[int, int]) -> Placement | None:
        """The mask placed at a pose, clipped to a frame of ``shape`` (see `rasterize_mask`); None if outside."""
        return rasterize_mask(self._mask_lookup, self.radius_px, x, y, angle_deg, shape)
