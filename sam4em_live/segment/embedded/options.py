"""Options of the embedded backend: the ``[segmenter.options]`` table when ``backend = "embedded"``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, PositiveInt

from sam4em_live.config import FrozenModel


class EmbeddedOptions(FrozenModel):
    """Validated options of the embedded (template-matching) backend.

    Distances are pixels, angles degrees. Defaults suit 1 nm/px LPTEM videos of
    10-100 px particles at 80 fps; see docs/embedded_backend.md for why.
    """

    # Largest per-frame displacement searched around the motion prediction.
    search_radius_px: float = Field(48.0, ge=4, le=256)
    # First look only this far from the prediction (most steps are small; a smaller window is cheaper) and
    # search the full radius only when that finds no clear, interior match. 0 = always the full radius.
    near_search_radius_px: float = Field(16.0, ge=0, le=256)
    # Half-size of the window analysed around a point prompt (a box sets its own window).
    seed_window_radius_px: int = Field(96, ge=16, le=512)
    # Gaussian scale used to denoise the prompt frame before thresholding it.
    seed_smoothing_px: float = Field(4.0, gt=0, le=16)
    # The particle must stand this many noise standard deviations out of the smoothed background.
    seed_min_snr: float = Field(4.0, gt=0)
    polarity: Literal["auto", "dark", "bright"] = "auto"
    # Provisional boundary = this fraction of the learned appearance's peak; the mask's edge is measured across
    # it (segment/embedded/boundary.py), so the mask's area does not depend on it.
    edge_fraction: float = Field(0.25, gt=0, lt=1)
    # Smoothing of the learned appearance for the provisional contour and the mask's shape (memory noise).
    mask_smoothing_px: float = Field(2.5, ge=0.5, le=8)
    coarse_angle_step_deg: float = Field(10.0, ge=1, le=45)
    fine_angle_step_deg: float = Field(5.0, gt=0, le=10)
    # Horizon of the exponential appearance memory (frames): slow shape change is followed.
    memory_frames: PositiveInt = 40
    # Once the memory is full, fold in every n-th frame only (cost; the memory still follows slow change).
    appearance_update_interval_frames: PositiveInt = 4
    # Live mode: while at least this many frames wait behind the current one, skip a due appearance update
    # (at most 3 in a row per particle) so the pipeline catches up sooner. 0 = never defer.
    defer_learning_backlog_frames: int = Field(2, ge=0)
    # Present only if the match stands this many noise sigmas out ...
    min_detection_z: float = Field(6.0, gt=0)
    # ... and its contrast is at least this fraction of the particle's learned contrast.
    presence_fraction: float = Field(0.45, gt=0, lt=1)
    # While particles are lost, look for one of them (in turn) over the whole frame, at low resolution, this often.
    reacquire_interval_frames: PositiveInt = 4
    # Motion prior, in match z units: weight * log(1 + step² / scale²) (heavy-tailed) ...
    step_prior_scale_px: float = Field(6.0, gt=0)
    step_prior_weight_z: float = Field(0.65, ge=0)
    # ... plus weight * turn² / (2 sigma²).
    turn_prior_sigma_deg: float = Field(30.0, gt=0)
    turn_prior_weight_z: float = Field(1.0, ge=0)
    # The stream's fixed background (illumination, detector gains, static texture), learned at low resolution
    # and divided out before seeding and matching (segment/embedded/background.py). "auto": only once the
    # frames show such structure (a flat stream passes untouched); "on": always; "off": never.
    background_model: Literal["auto", "on", "off"] = "auto"
    # Fold a frame into the background map every n-th frame (every 2nd for the first 8 updates).
    background_update_interval_frames: PositiveInt = 4
