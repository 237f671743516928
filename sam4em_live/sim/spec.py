"""Frozen description of a simulation: imaging, liquid cell, particles, motion.

Units are in the field names. Positions given in pixels use the project
convention (x = column, y = row, origin at the centre of the top-left pixel);
motion parameters are physical (nm, s) and converted with ``pixel_size_nm`` and
``fps``. Angles are degrees, major axis measured from +x towards +y.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, model_validator


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ImagingSpec(_Frozen):
    """Detector and beam: what one frame is made of."""

    shape_px: tuple[PositiveInt, PositiveInt] = (512, 512)  # (rows, columns)
    pixel_size_nm: PositiveFloat = 1.0
    fps: PositiveFloat = 80.0
    exposure_s: PositiveFloat = 1 / 80
    dose_rate_e_per_A2s: PositiveFloat = 35.0
    # Generalised Lorentzian MTF 1/(1+(f/f0)^p), f in cycles/pixel, zero beyond Nyquist (0.5).
    mtf: bool = True
    mtf_f0_cycles_per_px: PositiveFloat = 0.2658
    mtf_power: PositiveFloat = 1.535
    # "poisson" is exact; "gaussian" (N(λ, λ)) is a faster approximation for real-time demos.
    shot_noise: Literal["poisson", "gaussian", "none"] = "poisson"
    read_noise_e: float = Field(0.0, ge=0)
    dose_jitter_fraction: float = Field(0.0, ge=0, lt=0.5)  # per-frame relative std of the dose
    # Smooth multiplicative background ramp: relative peak-to-peak amplitude and direction.
    gradient_fraction: float = Field(0.0, ge=0, lt=1)
    gradient_angle_deg: float = 0.0
    defocus_disk_radius_nm: float = Field(0.0, ge=0)  # thickness convolved with a disk of this radius
    motion_blur_substeps: PositiveInt = 1  # >1 averages the image over the exposure
    output_dtype: Literal["uint16", "uint8", "float32"] = "uint16"
    # Detector gain (ADU per electron). For uint8 None means "background at ~128".
    adu_per_electron: PositiveFloat | None = None

    @property
    def electrons_per_pixel(self) -> float:
        """N_e = Φ · 100 · s² · τ (Φ in e⁻/Å²s, s in nm: 1 nm² = 100 Å²)."""
        return self.dose_rate_e_per_A2s * 100.0 * self.pixel_size_nm**2 * self.exposure_s

    @model_validator(mode="after")
    def _exposure_fits_frame(self) -> ImagingSpec:
        if self.exposure_s > 1.0 / self.fps * (1 + 1e-9):
            raise ValueError(f"exposure_s {self.exposure_s} is longer than the frame time 1/fps")
        return self


class LiquidCellSpec(_Frozen):
    """Liquid layer and SiNx windows (attenuation by mean free paths)."""

    water_thickness_nm: float = Field(50.0, ge=0)
    water_mean_free_path_nm: PositiveFloat = 185.0
    window_thickness_nm: float = Field(50.0, ge=0)  # each window
    window_count: int = Field(2, ge=0)
    window_mean_free_path_nm: PositiveFloat = 144.0
    # False: particles displace liquid linearly (T_w - Σt may go negative, as in the published model).
    clip_displaced_liquid: bool = False


class MotionSpec(_Frozen):
    """How one particle moves. ``kind`` picks the model; unused fields are ignored.

    - ``static``: stays at its start pose (rotation still applies).
    - ``brownian``: Gaussian steps, MSD = 4 D t (``diffusion_nm2_per_s``).
    - ``fbm``: fractional Brownian motion, MSD = 4 K t^α (K = ``diffusion_nm2_per_s`` in nm²/s^α).
    - ``hops``: heavy-tailed steps: log-normal step length (``step_median_nm``, ``step_log_sigma``,
      capped at ``step_max_nm``), uniform direction.
    - ``waypoints``: piecewise-linear path through (frame, x_px, y_px) points (held outside).
    - ``csv``: positions (and ``angle`` if present) from a trackpy-style CSV (frame, particle, x, y);
      frames without a row make the particle absent.
    """

    kind: Literal["static", "brownian", "fbm", "hops", "waypoints", "csv"] = "static"
    diffusion_nm2_per_s: float = Field(0.0, ge=0)
    alpha: float = Field(1.0, gt=0, lt=2)
    drift_nm_per_s: tuple[float, float] = (0.0, 0.0)
    step_median_nm: float = Field(4.0, gt=0)
    step_log_sigma: float = Field(0.75, ge=0)
    step_max_nm: float = Field(40.0, gt=0)
    waypoints: tuple[tuple[float, float, float], ...] = ()
    csv_path: str | None = None
    csv_particle: int | None = None
    rotational_diffusion_rad2_per_s: float = Field(0.0, ge=0)
    angular_velocity_deg_per_s: float = 0.0
    # "reflect" keeps the particle centre inside the cell area [margin, size - 1 - margin].
    boundary: Literal["free", "reflect"] = "free"
    boundary_margin_px: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _check_kind_inputs(self) -> MotionSpec:
        if self.kind == "waypoints" and len(self.waypoints) < 1:
            raise ValueError("motion kind 'waypoints' needs at least one (frame, x_px, y_px)")
        if self.kind == "csv" and self.csv_path is None:
            raise ValueError("motion kind 'csv' needs csv_path")
        return self


class ParticleSpec(_Frozen):
    """One particle.

    Shapes (all lying flat in the image plane):

    - ``sphere``: diameter ``width_nm``.
    - ``rod``: spherocylinder of tip-to-tip ``length_nm`` and diameter ``width_nm``; a
      frustum (cone-sphere) when ``end_width_nm`` differs.
    - ``prism``: equilateral triangular plate, edge ``width_nm``, thickness ``thickness_nm``.
    - ``cube``: edge ``width_nm``.
    """

    shape: Literal["sphere", "rod", "prism", "cube"] = "rod"
    length_nm: PositiveFloat = 61.0
    width_nm: PositiveFloat = 32.0
    end_width_nm: PositiveFloat | None = None
    thickness_nm: PositiveFloat = 10.0
    mean_free_path_nm: PositiveFloat = 125.0  # gold, calibrated (docs/simulator.md)
    start_xy_px: tuple[float, float] | None = None  # None = random inside the field
    start_angle_deg: float | None = None  # None = random
    motion: MotionSpec = MotionSpec()

    @model_validator(mode="after")
    def _rod_not_shorter_than_wide(self) -> ParticleSpec:
        if self.shape == "rod" and self.length_nm < max(self.width_nm, self.end_width_nm or 0):
            raise ValueError("rod length_nm must be >= its width (tip-to-tip length)")
        return self

    @property
    def bounding_radius_nm(self) -> float:
        """Radius of a circle around the centre that contains the footprint."""
        if self.shape == "sphere":
            return self.width_nm / 2
        if self.shape == "rod":
            return self.length_nm / 2
        if self.shape == "cube":
            return self.width_nm / math.sqrt(2)
        return self.width_nm / math.sqrt(3)  # prism circumradius


class SimulationSpec(_Frozen):
    """Everything needed to render a video, given a seed."""

    name: str = "custom"
    description: str = ""
    imaging: ImagingSpec = ImagingSpec()
    cell: LiquidCellSpec = LiquidCellSpec()
    particles: tuple[ParticleSpec, ...] = (ParticleSpec(),)

    @classmethod
    def from_file(cls, path: str) -> SimulationSpec:
        """Read a spec from a JSON file: a bare spec, or a simulation's ``meta.json`` (its ``spec`` key)."""
        import json
        from pathlib import Path

        data = json.loads(Path(path).read_text())
        if isinstance(data, dict) and isinstance(data.get("spec"), dict):
            data = data["spec"]
        return cls.model_validate(data)
