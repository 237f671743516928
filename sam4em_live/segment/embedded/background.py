"""Flat field: the stream's fixed background, learned over time and divided out before matching.

Real frames are not flat. Uneven illumination (a ramp, a vignette), a detector read out through
ports of slightly different gain, and a sample's own texture (liquid thickness, membrane
roughness: correlated, mostly static) all multiply the image. Within a search window they can
exceed a particle's 5 % contrast several times over, and seeding, matching and the presence
decision then see the background instead of the particle (issue 16: the `gradient-vignette` and
`foreign-noise` robustness cells lost particles for most of a clip or seeded on the texture).

`FlatField` keeps a low-resolution map of the relative background (mean 1) and hands the
segmenter each frame divided by it, in the frame's own dtype:

- **first frame** (where the prompts are seeded, before anything is learned over time): the map
  is the smooth illumination fitted to that frame alone (`illumination.fit_illumination`: a cubic
  surface and four quadrant gains, particles rejected as outliers), times the finer texture that the
  fit leaves (`illumination.fit_texture`: a robust local mean at ~2 map blocks, particles rejected).
  The places of this frame's prompts -- a disc round each point and each box (`prompt_hold_out`) --
  are held out of the texture (a faint particle in texture of its own contrast is no outlier and would
  be divided out), and whether the frame has structure is judged on the illumination fitted without
  them (a large faint particle bent the fit round its rim);
- **then** every ``interval`` frames (every frame for the first `FIRST_UPDATES` while correcting)
  the frame's blocks, divided by the frame's level (so a dose change or a blanked beam does not
  enter the map), are folded into a per-block running mean that starts from that fit. The pixels
  of a tracked particle's mask grown by 3 px, and the blocks round a lost particle's last position,
  are not learned (`withholding`): the map never learns a particle, but learns the background right
  beside one that barely moves; anything that stays put -- texture, gain steps, static blobs -- is
  learned at the map's resolution and divided out. While few frames are averaged, the map served is
  the running mean smoothed by ``SMOOTHING_BLOCKS / sqrt(observations)`` blocks (one frame's block
  means are noisy, and the early frames shape the particles' memories).

Correction is applied only when the map has structure (``mode="auto"``: the fitted illumination
varies by `STRUCTURE_ON` rms or more beyond the fit's own noise, and until it falls below
`STRUCTURE_OFF`). A flat stream (our simulator's own frames, the SAM4EM presets) is passed through
untouched: same pixels, no cost beyond the map's upkeep (a block mean every 4th frame, every 2nd for
the first 32 updates, the structure test every 8th update: ~0.3-0.5 ms a frame at 1024², process
time on the shared 2-core VM). Corrected, a 1024² uint16 frame costs one multiply and a conversion
(~1.3 ms), the first frame's fit ~20-30 ms (docs/embedded_backend.md, "Background").

Coordinates: x = column, y = row, pixels; the map's block (r, c) covers rows r*f .. r*f+f-1.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Literal, NamedTuple

import numpy as np
from scipy import ndimage

from sam4em_live.segment.embedded.illumination import fit_illumination, fit_texture
from sam4em_live.segment.embedded.prompt_hold_out import prompt_places
from sam4em_live.segment.embedded.window import _integer_max, _saturated, block_mean
from sam4em_live.segment.embedded.withholding import learn_beside, withhold_disc

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from sam4em_live.particles import ParticleEdit
    from sam4em_live.segment.embedded.raster import Placement

BackgroundMode = Literal["auto", "on", "off"]

#: The map has about this many blocks along the frame's longer side, and blocks of at least `MIN_FACTOR` px.
MAP_CELLS, MIN_FACTOR = 128, 4
#: The structure test and the first-frame fit use blocks this many map blocks wide (~32 cells across).
FIT_FACTOR = 4
#: The fitted illumination counts as this many observations of each block (a prior for the running mean).
PRIOR_OBSERVATIONS = 2
#: Update every this many frames, on every frame for the first `FIRST_UPDATES` updates (the early frames
#: shape the particles' memories: measured on foreign-noise, the true map on frames 0-9 alone was worth as
#: much as the true map throughout); forget with this horizon.
UPDATE_INTERVAL_FRAMES = 4
FIRST_INTERVAL_FRAMES, FIRST_UPDATES = 1, 32
#: The first updates' interval while the frames are passed through (the map serves the structure test only).
PASSIVE_FIRST_INTERVAL_FRAMES = 2
HORIZON_UPDATES = 32
#: Correct when the illumination's rms variation reaches this, stop when it falls below the lower value.
STRUCTURE_ON, STRUCTURE_OFF = 0.015, 0.01
#: The map's structure is tested on every this many updates (every 32 frames once updates are every 4th).
STRUCTURE_EVERY_UPDATES = 8
#: A block counts as known once it has been observed this many times (the first frame's fit counts as
#: `PRIOR_OBSERVATIONS` where it saw data, as none in its prompts' places, which it only interpolated).
KNOWN_OBSERVATIONS = 4.0
#: `known_fraction` reads the blocks within this fraction of a particle's radius (its interior), and is at least
#: `MIN_KNOWN_FRACTION` (an observation on a guessed background still counts a little: a particle that never
#: moves has no other).
INTERIOR_FRACTION, MIN_KNOWN_FRACTION = 0.7, 0.1
#: While few frames are averaged, the map served is the running mean smoothed by this many blocks over the
#: square root of the observations (prior included), down to `MIN_SMOOTHING_BLOCKS`: one frame's block means
#: are noisy (2.9 % rms at 4 px on foreign-noise), and a noisy map's errors enter the young memories.
SMOOTHING_BLOCKS, MIN_SMOOTHING_BLOCKS = 2.0, 0.3


def map_factor(shape: tuple[int, int]) -> int:
    """Block size of the map for a frame: about `MAP_CELLS` blocks along the longer side, at least `MIN_FACTOR`."""
    return max(MIN_FACTOR, math.ceil(max(shape) / MAP_CELLS))


class MapState(NamedTuple):
    """What the frame is divided by.

    Replaced whole on every update, so a reader on another thread (`EmbeddedSegmenter.seed`) always
    sees one consistent state.
    """

    shape: tuple[int, int]
    factor: int
    relative: np.ndarray  # per block, mean 1
    structure: float
    active: bool
    gain: np.ndarray | None  # full-resolution 1 / relative; only while active


class FlatField:
    """The stream's relative background at low resolution, and the frame divided by it (see module doc)."""

    def __init__(self, mode: BackgroundMode = "auto", interval: int = UPDATE_INTERVAL_FRAMES,
                 horizon: int = HORIZON_UPDATES) -> None:
        self.mode, self.interval, self.horizon = mode, interval, horizon
        self.state: MapState | None = None
        self.observations: np.ndarray | None = None  # per block, the prior included (track thread only)
        self.mean: np.ndarray | None = None  # the running mean per block, before smoothing (track thread only)
        # Per block, how often the background itself was seen: the observations less the prior where the first
        # frame only interpolated it (its prompts' places). Track thread only (`known_fraction`).
        self.direct: np.ndarray | None = None
        self.n_updates = 0

    @property
    def active(self) -> bool:
        return self.state is not None and self.state.active

    # ------------------------------------------------------------------ per frame

    def flatten(self, pixels: np.ndarray, prompts: Sequence[ParticleEdit] = ()) -> np.ndarray:
        """``pixels`` divided by the learned background, same dtype and shape; ``pixels`` itself when off.

        The first frame of a stream (or of a new frame size) starts the map from its fitted illumination and
        texture, with the places of ``prompts`` (this frame's edits) held out.
        Saturated integer pixels stay saturated (they are read as missing downstream); no other pixel
        becomes saturated.
        """
        if self.mode == "off" or pixels.ndim != 2:
            return pixels
        shape = (int(pixels.shape[0]), int(pixels.shape[1]))
        if self.state is None or self.state.shape != shape:
            self.state = self._started(pixels, shape, prompts)
            self.n_updates = 0
            self.mean = None
            self.observations = (None if self.state is None
                                 else np.full(self.state.relative.shape, PRIOR_OBSERVATIONS, np.float32))
            self.direct = (None if self.state is None else
                           np.where(prompt_places(prompts, self.state.factor, self.state.relative.shape),
                                    np.float32(0), np.float32(PRIOR_OBSERVATIONS)).astype(np.float32))
        return _divided(pixels, self.state)

    def peek(self, pixels: np.ndarray, prompts: Sequence[ParticleEdit] = ()) -> np.ndarray:
        """`flatten` without changing anything (safe beside `flatten` and `observe` on another thread).

        Before the first frame (or on a frame of another size) the frame's own fitted background is used,
        ``prompts`` held out as in `flatten`.
        """
        if self.mode == "off" or pixels.ndim != 2:
            return pixels
        shape = (int(pixels.shape[0]), int(pixels.shape[1]))
        state = self.state
        if state is None or state.shape != shape:
            state = self._started(pixels, shape, prompts)
        return _divided(pixels, state)

    def observe(self, frame_index: int, pixels: np.ndarray, claims: Iterable[Placement],
                keep_out: Iterable[tuple[float, float, float]] = ()) -> None:
        """Fold this (raw) frame into the map when due; blocks under ``claims`` and ``keep_out`` discs are kept."""
        state, observations = self.state, self.observations
        if self.mode == "off" or state is None or observations is None or state.shape != pixels.shape:
            return
        first = FIRST_INTERVAL_FRAMES if state.active or self.mode == "on" else PASSIVE_FIRST_INTERVAL_FRAMES
        if frame_index % (first if self.n_updates < FIRST_UPDATES else self.interval):
            return
        blocks = _blocks(pixels, state.factor)
        if blocks is None or blocks.shape != state.relative.shape:
            return
        learn = np.ones(blocks.shape, bool)
        learn_beside(blocks, learn, pixels, list(claims), state.factor)
        for x, y, r in keep_out:
            withhold_disc(learn, x, y, r + state.factor, state.factor)
        if not learn.any():
            return
        mean = self.mean if self.mean is not None and self.mean.shape == blocks.shape else state.relative
        # The frame's level, robust to what is in it: a dose change must not enter the (relative) map.
        level = float(np.median(blocks[learn] / mean[learn]))
        if not math.isfinite(level) or level <= 0:
            return
        observations += learn
        if self.direct is not None and self.direct.shape == learn.shape:
            self.direct += learn
        weight = learn / np.clip(observations, 1, self.horizon).astype(np.float32)
        blocks *= np.float32(1.0 / level)
        blocks -= mean
        blocks *= weight
        blocks += mean  # a new array: a reader may hold the old one
        blocks /= np.float32(blocks.mean())
        self.mean = blocks
        self.n_updates += 1
        # The structure test is a robust fit (~4 ms at 1024², as much as tracking 4 particles): not every update.
        due = self.n_updates % STRUCTURE_EVERY_UPDATES == 0
        structure = _structure(blocks, state.shape, state.factor) if due else None
        sigma = SMOOTHING_BLOCKS / math.sqrt(self.n_updates + PRIOR_OBSERVATIONS)
        if sigma >= MIN_SMOOTHING_BLOCKS and (state.active or self.mode == "on"):
            # A normalised Gaussian mean, blocks seen more often counting more (only what divides is smoothed).
            norm = ndimage.gaussian_filter(observations, sigma, mode="nearest")
            smooth = ndimage.gaussian_filter(blocks * observations, sigma, mode="nearest")
            blocks = (smooth / np.maximum(norm, np.float32(1e-6))).astype(np.float32)
        self.state = self._state(state.shape, state.factor, blocks, state.structure if structure is None
                                 else structure, state.active)

    def known_fraction(self, x: float, y: float, radius_px: float) -> float:
        """How well the background under a particle at (x, y) is known: 1 seen often, down to `MIN_KNOWN_FRACTION`.

        The mean over the blocks within `INTERIOR_FRACTION` of ``radius_px`` of min(seen / `KNOWN_OBSERVATIONS`,
        1). Under a prompted particle the first frame's map is an interpolation from around it, and the map
        learns those blocks only once the particle has moved off them; an appearance learned there meanwhile
        carries the interpolation's error (1/f texture: 2-4 % under a 5 % particle), so the segmenter weighs
        the particle's appearance observations by this (`ShapeMemory.update`). 1.0 while nothing is divided.
        """
        state, direct = self.state, self.direct
        if state is None or not state.active or direct is None or direct.shape != state.relative.shape:
            return 1.0
        factor, reach = state.factor, max(INTERIOR_FRACTION * radius_px, 0.0)
        r0, r1 = max(int((y - reach) // factor), 0), min(int((y + reach) // factor) + 1, direct.shape[0])
        c0, c1 = max(int((x - reach) // factor), 0), min(int((x + reach) // factor) + 1, direct.shape[1])
        if r0 >= r1 or c0 >= c1:
            return 1.0
        centre_y = (np.arange(r0, r1, dtype=np.float32) + 0.5) * factor - np.float32(y)
        centre_x = (np.arange(c0, c1, dtype=np.float32) + 0.5) * factor - np.float32(x)
        inside = centre_y[:, None] ** 2 + centre_x[None, :] ** 2 <= max(reach * reach, factor * factor / 2)
        seen = direct[r0:r1, c0:c1][inside] if inside.any() else direct[r0:r1, c0:c1]
        known = float(np.minimum(seen / np.float32(KNOWN_OBSERVATIONS), 1.0).mean())
        return max(known, MIN_KNOWN_FRACTION)

    # ------------------------------------------------------------------ internals

    def _started(self, pixels: np.ndarray, shape: tuple[int, int], prompts: Sequence[ParticleEdit]
                 ) -> MapState | None:
        """A new map from one frame: its fitted illumination and texture on the map's grid (None: too small)."""
        factor = map_factor(shape)
        blocks = _blocks(pixels, factor)
        if blocks is None:
            return None
        step = FIT_FACTOR * factor
        quadrants = (shape[0] / 2 / step, shape[1] / 2 / step)
        coarse = _coarse(blocks, FIT_FACTOR)
        fit = fit_illumination(coarse, *quadrants)
        if fit is None:
            return None
        held = prompt_places(prompts, factor, blocks.shape)
        structure = fit.structure
        if held.any():
            # Whether the frame has structure is judged without the prompted particles: a large faint one is
            # no outlier near its rim, the fit bent round it and read as structure (the correction switched on
            # for a flat frame and took a third of an 80-120 px particle). The map keeps the fit with particles
            # rejected: using the refit for it too refused a point prompt at a particle's edge (foreign-noise).
            held_coarse = _coarse(held.astype(np.float32), FIT_FACTOR) > 0
            refit = fit_illumination(np.where(held_coarse, np.nan, coarse), *quadrants)
            structure = structure if refit is None else refit.structure
        relative = _on_grid(fit.relative(FIT_FACTOR), blocks.shape)
        if self.mode == "on" or structure >= STRUCTURE_ON:  # a flat frame is passed through: no texture
            ratio = blocks / relative
            ratio /= np.float32(np.median(ratio))
            relative *= fit_texture(ratio, held).astype(np.float32)
        relative /= np.float32(relative.mean())
        return self._state(shape, factor, relative, structure, False)

    def _state(self, shape: tuple[int, int], factor: int, relative: np.ndarray, structure: float,
               was_active: bool) -> MapState:
        # Hysteresis: a map near the threshold does not switch the correction on and off.
        threshold = STRUCTURE_OFF if was_active else STRUCTURE_ON
        active = self.mode == "on" or structure >= threshold
        gain = _full_gain(relative, factor, shape) if active else None
        return MapState(shape, factor, relative, structure, active, gain)


def _blocks(pixels: np.ndarray, factor: int) -> np.ndarray | None:
    """Block means of the frame on the map's grid (a partial last row / column of blocks is dropped)."""
    rows, cols = (pixels.shape[0] // factor) * factor, (pixels.shape[1] // factor) * factor
    if rows < FIT_FACTOR * factor or cols < FIT_FACTOR * factor:
        return None
    crop = pixels[:rows, :cols]
    if crop.dtype.kind not in "ui" or not _saturated(crop):
        return block_mean(crop, factor)
    # Saturated pixels (hot pixels, a streak) are no measure of the background: one hot pixel in a block of
    # 64 raised its mean ~2x and bent the fitted illumination (and then the seed) around it. Each block's
    # mean is taken over its unsaturated pixels (a wholly saturated block keeps the saturated level).
    top = _integer_max(crop.dtype)
    valid = crop < top
    sums = block_mean(np.where(valid, crop, 0), factor)
    share = block_mean(valid.astype(np.float32), factor)
    return np.where(share > 0, sums / np.maximum(share, np.float32(1e-6)), np.float32(top)).astype(np.float32)


def _structure(relative: np.ndarray, shape: tuple[int, int], factor: int) -> float | None:
    """The spread of the smooth illumination fitted to a map (None: too small to fit)."""
    step = FIT_FACTOR * factor
    fit = fit_illumination(_coarse(relative, FIT_FACTOR), shape[0] / 2 / step, shape[1] / 2 / step)
    return None if fit is None else fit.structure


def _full_gain(relative: np.ndarray, factor: int, shape: tuple[int, int]) -> np.ndarray:
    """1 / relative background at full resolution (each block's value on its pixels), float32."""
    inverse = (1.0 / np.maximum(relative, np.float32(1e-3))).astype(np.float32)
    full = np.repeat(np.repeat(inverse, factor, 0), factor, 1)
    rows, cols = shape
    pad_rows, pad_cols = max(rows - full.shape[0], 0), max(cols - full.shape[1], 0)
    if pad_rows or pad_cols:  # the partial last blocks take their neighbours' gain
        full = np.pad(full, ((0, pad_rows), (0, pad_cols)), mode="edge")
    return np.ascontiguousarray(full[:rows, :cols])


def _divided(pixels: np.ndarray, state: MapState | None) -> np.ndarray:
    """``pixels`` times the state's gain in their own dtype (``pixels`` itself when the correction is off)."""
    if state is None or state.gain is None:
        return pixels
    corrected = np.multiply(pixels, state.gain, dtype=np.float32)
    if pixels.dtype.kind not in "ui":
        return corrected
    top = int(np.iinfo(pixels.dtype).max)
    np.minimum(corrected, np.float32(top - 1), out=corrected)  # no new saturated pixel
    if pixels.dtype.kind == "u":
        corrected += np.float32(0.5)  # then truncation rounds (values >= 0)
    else:
        np.rint(corrected, out=corrected)
    out = corrected.astype(pixels.dtype)
    if np.maximum.reduce(pixels, axis=None) >= top:  # saturated pixels stay saturated (read as missing)
        out[pixels >= top] = top
    return out


def _coarse(blocks: np.ndarray, k: int) -> np.ndarray:
    """Means of ``k`` x ``k`` groups of blocks (a partial last group is dropped)."""
    rows, cols = (blocks.shape[0] // k) * k, (blocks.shape[1] // k) * k
    return blocks[:rows, :cols].reshape(rows // k, k, cols // k, k).mean(axis=(1, 3), dtype=np.float64)


def _on_grid(fine: np.ndarray, grid: tuple[int, ...]) -> np.ndarray:
    """``fine`` (float32) on the map's grid: cropped, or its last row / column repeated beyond it."""
    relative = np.ones(grid, np.float32)
    rows, cols = min(fine.shape[0], grid[0]), min(fine.shape[1], grid[1])
    relative[:rows, :cols] = fine[:rows, :cols]
    _extend_edges(relative, (rows, cols))
    return relative


def _extend_edges(grid: np.ndarray, filled: tuple[int, ...]) -> None:
    """Copy the last filled row / column of ``grid`` into the rows / columns beyond ``filled``."""
    rows, cols = min(filled[0], grid.shape[0]), min(filled[1], grid.shape[1])
    if rows < grid.shape[0]:
        grid[rows:, :] = grid[rows - 1 : rows, :]
    if cols < grid.shape[1]:
        grid[:, cols:] = grid[:, cols - 1 : cols]
