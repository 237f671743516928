"""Render one frame from particle poses: thickness → Beer–Lambert → noise → MTF → detector units."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from sam4em_live.sim.motion import Pose, fold_angle_deg
from sam4em_live.sim.noise import shot_noise
from sam4em_live.sim.optics import (
    apply_mtf,
    background_electrons,
    frame_contrast,
    gradient_map,
    mtf_response,
    transmission,
)
from sam4em_live.sim.shapes import ThicknessPatch, render_thickness

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sam4em_live.sim.spec import SimulationSpec

#: ADU per electron for uint16 output: high enough that rounding adds < 1 % to the noise.
UINT16_DEFAULT_ADU_PER_E = 8.0
#: For uint8 output without an explicit gain, the particle-free background lands here.
UINT8_BACKGROUND_LEVEL = 128.0


@dataclass(frozen=True, slots=True)
class RenderedFrame:
    """One simulated frame with its exact ground truth.

    ``cnr``/``snr`` are NaN when the renderer was asked to skip them.
    ``truth`` has one dict per particle at least partly in the field: ``particle``,
    ``x``, ``y`` (footprint centroid in frame pixels, may lie outside the frame
    when the particle is cut by the edge), ``angle`` (degrees, folded to (-90, 90];
    NaN for spheres), ``area`` (footprint pixels inside the frame).
    """

    index: int
    pixels: np.ndarray
    labels: np.ndarray
    truth: tuple[dict[str, float], ...]
    cnr: float
    snr: float


class FrameRenderer:
    """Turns poses into detector frames for one `SimulationSpec` (stateless between frames)."""

    def __init__(self, spec: SimulationSpec) -> None:
        self.spec = spec
        self.imaging = spec.imaging
        self.shape = (int(spec.imaging.shape_px[0]), int(spec.imaging.shape_px[1]))
        self.background_e = background_electrons(spec.imaging, spec.cell)
        self.gradient = gradient_map(spec.imaging)
        self.mtf = (
            mtf_response(self.shape, spec.imaging.mtf_f0_cycles_per_px, spec.imaging.mtf_power)
            if spec.imaging.mtf
            else None
        )
        self.adu_per_electron = self._gain()

    def _gain(self) -> float:
        if self.imaging.adu_per_electron is not None:
            return self.imaging.adu_per_electron
        if self.imaging.output_dtype == "uint8":
            return UINT8_BACKGROUND_LEVEL / self.background_e
        if self.imaging.output_dtype == "uint16":
            return UINT16_DEFAULT_ADU_PER_E
        return 1.0

    def patches(self, poses: list[Pose | None]) -> list[ThicknessPatch | None]:
        """Thickness patches in frame coordinates (``None`` for absent / out-of-field particles)."""
        out: list[ThicknessPatch | None] = []
        for particle, pose in zip(self.spec.particles, poses, strict=True):
            if pose is None:
                out.append(None)
                continue
            out.append(render_thickness(
                particle, pose.x_px, pose.y_px, pose.angle_deg, self.imaging.pixel_size_nm, self.shape,
                self.imaging.defocus_disk_radius_nm,
            ))
        return out

    def mean_electrons(self, exposure_patches: list[list[ThicknessPatch | None]], dose_factor: float = 1.0) -> np.ndarray:
        """Expected electrons per pixel, averaging the transmission over sub-exposure patches (motion blur)."""
        mean = np.full(self.shape, self.background_e * dose_factor, dtype=np.float32)
        if self.gradient is not None:
            mean *= self.gradient
        parts = [self._transmission(patches) for patches in exposure_patches]
        boxes = [box for box, _ in parts if box is not None]
        if not boxes:
            return mean
        if len(parts) == 1:
            box, local = parts[0]
            mean[box] *= local
            return mean
        union = boxes[0]
        for box in boxes[1:]:
            union = _union(union, box)
        average = np.zeros((union[0].stop - union[0].start, union[1].stop - union[1].start), dtype=np.float32)
        for box, local in parts:
            step = np.ones_like(average)
            if box is not None:
                step[box[0].start - union[0].start : box[0].stop - union[0].start,
                     box[1].start - union[1].start : box[1].stop - union[1].start] = local
            average += step
        mean[union] *= average / np.float32(len(parts))
        return mean

    def _transmission(self, patches: list[ThicknessPatch | None]) -> tuple[tuple[slice, slice] | None, np.ndarray]:
        """Transmission on the bounding box of all patches (relative to the particle-free background)."""
        box = None
        for patch in patches:
            if patch is not None:
                box = _union(box, patch.slices)
        if box is None:
            return None, np.ones((0, 0), dtype=np.float32)
        shape = (box[0].stop - box[0].start, box[1].stop - box[1].start)
        depth = np.zeros(shape, dtype=np.float32)
        thick = np.zeros(shape, dtype=np.float32)
        for particle, patch in zip(self.spec.particles, patches, strict=True):
            if patch is None:
                continue
            rows, cols = patch.thickness_nm.shape
            sl = (slice(patch.y0 - box[0].start, patch.y0 - box[0].start + rows),
                  slice(patch.x0 - box[1].start, patch.x0 - box[1].start + cols))
            thick[sl] += patch.thickness_nm
            depth[sl] += patch.thickness_nm / np.float32(particle.mean_free_path_nm)
        return box, transmission(depth, thick, self.spec.cell).astype(np.float32)

    def render(
        self, index: int, exposure_poses: list[list[Pose | None]], rng: np.random.Generator, contrast: bool = True,
        dose_factor: float = 1.0, visibility: Sequence[float] | None = None,
    ) -> RenderedFrame:
        """Render frame ``index``; ``exposure_poses[0]`` are the poses at the start of the exposure.

        ``contrast=False`` skips the CNR/SNR statistics (NaN), saving time when streaming.
        ``dose_factor`` scales this frame's dose (a dose change, beam blanking). ``visibility`` (one factor
        per particle, 0–1) scales each particle's projected thickness in the image only — a particle moving
        along the beam out of the liquid layer fades — while the ground truth keeps its full footprint.
        """
        dose = 1.0
        if self.imaging.dose_jitter_fraction > 0:
            dose = max(1.0 + self.imaging.dose_jitter_fraction * rng.standard_normal(), 0.05)
        dose *= dose_factor
        exposure_patches = [self.patches(poses) for poses in exposure_poses]
        imaged = exposure_patches if visibility is None else [_faded(p, visibility) for p in exposure_patches]
        mean = self.mean_electrons(imaged, dose)
        # Without a gradient, pixels outside the particles' windows all expect the same dose.
        uniform = None if self.gradient is not None else float(np.float32(self.background_e * dose))
        boxes = [p.slices for patches in imaged for p in patches if p is not None]
        electrons = shot_noise(mean, self.imaging.shot_noise, rng, uniform, boxes)
        if self.mtf is not None:
            electrons = apply_mtf(electrons, self.mtf)
        if self.imaging.read_noise_e > 0:
            electrons += self.imaging.read_noise_e * rng.standard_normal(self.shape, dtype=np.float32)
        pixels = self._to_detector_units(electrons)
        labels, truth = self.ground_truth(exposure_poses[0], exposure_patches[0])
        cnr, snr = frame_contrast(pixels, labels) if contrast else (math.nan, math.nan)
        return RenderedFrame(index, pixels, labels, truth, cnr, snr)

    def _to_detector_units(self, electrons: np.ndarray) -> np.ndarray:
        electrons *= np.float32(self.adu_per_electron)
        kind = self.imaging.output_dtype
        if kind == "float32":
            return electrons.astype(np.float32, copy=False)
        top = 255.0 if kind == "uint8" else 65535.0
        np.rint(electrons, out=electrons)
        np.clip(electrons, 0.0, top, out=electrons)
        return electrons.astype(np.uint8 if kind == "uint8" else np.uint16)

    def ground_truth(
        self, poses: list[Pose | None], patches: list[ThicknessPatch | None] | None = None
    ) -> tuple[np.ndarray, tuple[dict[str, float], ...]]:
        """Label image (uint16, id = 1-based particle index; later particles drawn on top) and truth rows."""
        labels = np.zeros(self.shape, dtype=np.uint16)
        rows: list[dict[str, float]] = []
        patches = self.patches(poses) if patches is None else patches
        for pid, (particle, pose, patch) in enumerate(zip(self.spec.particles, poses, patches, strict=True), 1):
            if patch is None or pose is None:
                continue
            footprint = patch.footprint if self.imaging.defocus_disk_radius_nm == 0 else self._sharp(pid - 1, pose)
            area = int(footprint.sum())
            if area == 0:
                continue
            labels[patch.slices][footprint] = pid
            angle = math.nan if particle.shape == "sphere" else fold_angle_deg(pose.angle_deg)
            rows.append({"particle": pid, "x": pose.x_px, "y": pose.y_px, "angle": angle, "area": area})
        return labels, tuple(rows)

    def _sharp(self, i: int, pose: Pose) -> np.ndarray:
        """Footprint without defocus, on the (larger) defocused window."""
        particle = self.spec.particles[i]
        patch = render_thickness(particle, pose.x_px, pose.y_px, pose.angle_deg, self.imaging.pixel_size_nm,
                                 self.shape, self.imaging.defocus_disk_radius_nm)
        sharp = render_thickness(particle, pose.x_px, pose.y_px, pose.angle_deg, self.imaging.pixel_size_nm,
                                 self.shape)
        out = np.zeros(patch.thickness_nm.shape, dtype=bool) if patch is not None else np.zeros((0, 0), bool)
        if sharp is not None and patch is not None:
            out[sharp.y0 - patch.y0 : sharp.y0 - patch.y0 + sharp.thickness_nm.shape[0],
                sharp.x0 - patch.x0 : sharp.x0 - patch.x0 + sharp.thickness_nm.shape[1]] = sharp.footprint
        return out


def _faded(patches: list[ThicknessPatch | None], visibility: Sequence[float]) -> list[ThicknessPatch | None]:
    """Patches with thickness scaled by each particle's visibility (``None`` where it is 0)."""
    out: list[ThicknessPatch | None] = []
    for patch, factor in zip(patches, visibility, strict=True):
        if patch is None or factor <= 0:
            out.append(None)
        elif factor >= 1:
            out.append(patch)
        else:
            out.append(ThicknessPatch(patch.y0, patch.x0, patch.thickness_nm * np.float32(factor)))
    return out


def _union(box: tuple[slice, slice] | None, sl: tuple[slice, slice]) -> tuple[slice, slice]:
    if box is None:
        return sl
    return (slice(min(box[0].start, sl[0].start), max(box[0].stop, sl[0].stop)),
            slice(min(box[1].start, sl[1].start), max(box[1].stop, sl[1].stop)))

