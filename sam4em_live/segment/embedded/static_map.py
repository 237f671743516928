"""What never moves: a slow per-block temporal background of the stream, learned while tracking.

Contamination, membrane defects, edge artifacts and immobile particles nobody prompted look like
particles to a matched filter, and a lost particle must never be "re-acquired" on one (a static
dark blob at the image edge took a faded rod's identity 296 px away on a real video, issue 16).
Such features are the part of the image that stays put: a running mean of the frame at low
resolution holds them at full contrast, while anything that moves is averaged away.

Cheap by construction: every ``interval`` frames (every `FIRST_INTERVAL_FRAMES` for the first
`FIRST_UPDATES` updates, so the map knows the scene within a few frames) the frame is block-averaged
``factor`` x (strided sums, ~0.3 ms for 1024², i.e. ~0.02 ms a frame), divided by its mean level (a dose
step must not turn the blocks withheld under a tracked particle into a feature) and folded into the mean with
weight ``1 / min(n, horizon)`` per block (a running mean at first: a feature present from frame 0 is
at full contrast in the map from the first update on). Blocks under a
tracked particle, or around a lost particle's last position, are not updated: the map must never
learn a tracked particle as "static" (it would then refuse its re-acquisition where it sat).

`StaticMap.explains` answers the one question the identity gate asks: of the contrast seen now at a
candidate position, how much was already there on average (1 = all of it: a static feature)?

The features found in the map and the block geometry of masks on it are in `static_features`; a blanked
beam (`exposure.Exposure`) was here too.
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from sam4em_live.segment.embedded.static_features import (
    MIN_UPDATES,
    block_coverage,
    covered_blocks,
    find_features,
    touches_feature,
    withhold_mask,
)
from sam4em_live.segment.embedded.window import _integer_max, _saturated, block_mean

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from sam4em_live.segment.embedded.raster import Placement

#: Target map size (cells along the longer side); the block factor follows from the frame size.
MAP_CELLS = 128
#: Update every this many frames, and forget with this horizon (updates): 16 x 24 frames ~ 5 s at 80 fps.
UPDATE_INTERVAL_FRAMES = 16
HORIZON_UPDATES = 24
#: The first updates come sooner (a particle may fade a few frames after its prompt).
FIRST_INTERVAL_FRAMES, FIRST_UPDATES = 4, 4
#: `StaticMap.divided_out` divides a feature where its blocks that no particle covers still show at least
#: `STILL_THERE` of their contrast in the map, or where less than `HIDDEN_SHARE` of its contrast is uncovered.
STILL_THERE, HIDDEN_SHARE = 0.5, 0.2
#: Prompted places kept out of the map (`StaticMap.forget`), most recent first out.
VOUCHED_KEPT = 256


def _reached(coords: np.ndarray, divided: np.ndarray) -> slice:
    """The run of ``coords`` (pixels in block units, ascending) interpolating between blocks marked ``divided``.

    Linear interpolation reads the blocks floor(c) and floor(c) + 1: a pixel strictly within one block of a
    divided block's index reads it; the others read only blocks of relief 1.
    """
    marked = np.flatnonzero(divided)
    inside = np.flatnonzero((coords > marked[0] - 1) & (coords < marked[-1] + 1))
    return slice(int(inside[0]), int(inside[-1]) + 1) if inside.size else slice(0, 0)


def map_factor(shape: tuple[int, int]) -> int:
    """Block factor for a frame: about `MAP_CELLS` cells along the longer side, at least 2."""
    return max(2, math.ceil(max(shape) / MAP_CELLS))


class StaticMap:
    """Low-resolution running mean of the frame and, per block, how many updates it holds."""

    def __init__(self, interval: int = UPDATE_INTERVAL_FRAMES, horizon: int = HORIZON_UPDATES) -> None:
        self.interval, self.horizon = interval, horizon
        self.factor = 0
        self.n_updates = 0
        self.mean: np.ndarray | None = None
        self.updates: np.ndarray | None = None
        self.features: np.ndarray | None = None  # blocks on or next to a static feature (`near_feature`)
        self.relief: np.ndarray | None = None  # the features' map / local background (1 elsewhere; `divided_out`)
        self.surround: np.ndarray | None = None  # the map's local background (`divided_out`)
        self.feature_blocks: np.ndarray | None = None  # per block, the size (blocks) of its feature (0: none)
        self.vouched: list[tuple[float, float, float]] = []  # discs (x, y, r) where a user prompted a particle
        self._counted: np.ndarray | None = None  # the features `_counts` was made from (`near_feature`)
        self._batching_forgets = False  # inside `batched_forgets`: the features are found once, at its end
        self._forgot = False  # a forget in the batch changed the map
        self._counts: list[list[int]] | None = None

    def observe(self, frame_index: int, pixels: np.ndarray, claims: Iterable[Placement],
                keep_out: Iterable[tuple[float, float, float]] = ()) -> None:
        """Fold this frame in when due; blocks under ``claims`` and ``keep_out`` discs (x, y, r) are left as they are."""
        if frame_index % (FIRST_INTERVAL_FRAMES if self.n_updates < FIRST_UPDATES else self.interval):
            return
        factor = map_factor((int(pixels.shape[0]), int(pixels.shape[1])))
        rows, cols = (pixels.shape[0] // factor) * factor, (pixels.shape[1] // factor) * factor
        if rows == 0 or cols == 0:
            return
        blocks = block_mean(pixels[:rows, :cols], factor)
        # Exposure-normalised: a dose step changes every block at once, but blocks withheld under a particle
        # keep the old level, so a raw map would show each tracked particle's last place as a bright or dark
        # "static feature" after the step (dose-steps: the particle refused on it for ~30 frames a clip).
        level = float(blocks.mean())
        if not level > 0:
            return
        blocks /= np.float32(level)
        if self.mean is None or self.updates is None or self.mean.shape != blocks.shape or factor != self.factor:
            self.factor = factor
            self.mean = np.zeros_like(blocks)
            self.updates = np.zeros(blocks.shape, np.int32)
            self.n_updates = 0
        learn = np.ones(blocks.shape, bool)
        for claim in claims:
            withhold_mask(learn, claim, factor)
        for x, y, r in (*keep_out, *self.vouched):
            reach = r + factor
            learn[max(int((y - reach) // factor), 0) : max(int((y + reach) // factor) + 1, 0),
                  max(int((x - reach) // factor), 0) : max(int((x + reach) // factor) + 1, 0)] = False
        self.updates += learn  # dense arithmetic: boolean indexing of the map costs more than the block sums
        self.n_updates += 1
        weight = learn / np.clip(self.updates, 1, self.horizon).astype(np.float32)  # 0 where kept
        blocks -= self.mean
        blocks *= weight
        self.mean += blocks
        self._find_features()

    def _find_features(self) -> None:
        assert self.mean is not None and self.updates is not None
        self.features, self.relief, self.surround, self.feature_blocks = find_features(self.mean, self.updates)

    def forget(self, x: float, y: float, radius_px: float) -> None:
        """Unlearn the blocks of a disc (x, y, r) plus one block: a user has prompted a particle there.

        A particle that sat still before anyone prompted it is in the map as a static feature; left
        there, the identity gate would refuse every match of the particle the user just pointed at
        (reported absent from its second frame on). The disc is not learned again (`VOUCHED_KEPT` most
        recent prompts): an immobile particle would otherwise be relearned the first frame it is lost.
        """
        self.vouched = [*self.vouched[-(VOUCHED_KEPT - 1):], (x, y, radius_px)]
        if self.mean is None or self.updates is None:
            return
        f, reach = self.factor, radius_px + self.factor
        rows = slice(max(int((y - reach) // f), 0), max(int((y + reach) // f) + 1, 0))
        cols = slice(max(int((x - reach) // f), 0), max(int((x + reach) // f) + 1, 0))
        self.updates[rows, cols] = 0
        self.mean[rows, cols] = 0.0
        if self._batching_forgets:
            self._forgot = True
        else:
            self._find_features()

    @contextmanager
    def batched_forgets(self) -> Iterator[None]:
        """`forget` calls inside find the features once, on leaving (nothing may read them before).

        The features are a function of the map alone, so they come out the same as found after each forget;
        4 prompts landing on one frame found them 4 times (~10 ms each at 1024² under load: 70 % of the
        landing frame, issue 23), 50 prompts 50 times.
        """
        self._batching_forgets = True
        try:
            yield
        finally:
            self._batching_forgets = False
            if self._forgot:
                self._forgot = False
                self._find_features()

    def near_feature(self, placed: Placement) -> bool:
        """Whether a placed mask's box touches a block of a static feature (cheap: a slice of a boolean map).

        The identity gate asks `explains_mask` only there, so a particle in the open costs nothing more.
        """
        if self.features is None:
            return False
        f = self.factor
        x0, y0, x1, y1 = placed.box
        r0, r1, c0, c1 = y0 // f, (y1 - 1) // f + 1, x0 // f, (x1 - 1) // f + 1
        if min(r0, r1, c0, c1) < 0:  # a slice from the end
            return touches_feature(self.features, f, placed)
        # Asked twice a particle a frame (the segmenter's and the gate's check): a summed-area table of the
        # feature blocks answers in four lookups instead of a slice and its reduction (issue 23).
        counts = self._feature_counts()
        if counts is None:
            return False
        r1, c1 = min(r1, len(counts) - 1), min(c1, len(counts[0]) - 1)
        if r0 >= r1 or c0 >= c1:
            return False
        return counts[r1][c1] - counts[r0][c1] - counts[r1][c0] + counts[r0][c0] > 0

    def _feature_counts(self) -> list[list[int]] | None:
        """Feature blocks above and left of each block corner (a summed-area table); None: no feature at all."""
        if self._counted is not self.features:  # rebuilt when the map finds its features anew
            features = self.features
            assert features is not None
            self._counted, self._counts = features, None
            if features.any():
                table = np.zeros((features.shape[0] + 1, features.shape[1] + 1), np.int64)
                np.cumsum(np.cumsum(features, axis=0), axis=1, out=table[1:, 1:])
                self._counts = table.tolist()
        return self._counts

    def divided_out(self, pixels: np.ndarray, x0: int, y0: int, x1: int, y1: int, polarity: float = 1.0,
                    min_area_px: float = 0.0, covers: Sequence[Placement] = ()) -> np.ndarray | None:
        """A copy of ``pixels`` with the static features in columns x0..x1-1, rows y0..y1-1 divided out.

        Each pixel there is divided by the features' relief (the map over its local background, bilinear
        between block centres; 1 off the features), so what never moved reads as background and a particle
        lying over it keeps its own contrast (multiplicative: thicknesses add, transmissions multiply).
        A feature is divided only if it has the particle's ``polarity`` (1: darker than its surroundings;
        a bright one does not pull a dark particle's match, and dividing a saturated streak's rim at the map's
        block resolution paints dark lines that do), is at least ``min_area_px`` (the blurred rim of a slow particle,
        learned beside its withheld mask, is a thin arc of blocks, not a body that pulls a match onto
        itself) and is still there: its blocks outside ``covers`` (the particles' masks) show at least
        `STILL_THERE` of their contrast in the map (or it is almost all covered). Where it has gone -- an unprompted
        particle that rested and moved on, a field that drifted -- dividing would paint its negative, and
        a particle now on its place would be divided out with it. None when nothing is divided (nor where
        the rectangle holds saturated pixels): the caller keeps ``pixels``. Integer frames stay in their
        dtype, below its maximum (that reads as saturated).
        """
        if self.relief is None or self.surround is None or self.feature_blocks is None:
            return None
        f = self.factor
        n_rows, n_cols = self.relief.shape
        x0, y0, x1, y1 = max(x0, 0), max(y0, 0), min(x1, n_cols * f), min(y1, n_rows * f)
        if x0 >= x1 or y0 >= y1:
            return None
        r0, r1, c0, c1 = y0 // f, (y1 - 1) // f + 1, x0 // f, (x1 - 1) // f + 1
        relief = self.relief[r0:r1, c0:c1]
        large = self.feature_blocks[r0:r1, c0:c1] * (f * f) >= max(min_area_px, 1.0)
        depth = np.where(large & ((1.0 - relief) * polarity > 0), 1.0 - relief, np.float32(0.0))  # > 0: dark
        if not depth.any():
            return None
        level = float(pixels[::f, ::f].mean())
        raw = pixels[y0:y1, x0:x1]
        if not level > 0 or (pixels.dtype.kind in "ui" and _saturated(raw)):
            return None  # the map's blocks hold saturated pixels as values: its relief there is not the scene's
        now = block_mean(pixels[r0 * f : r1 * f, c0 * f : c1 * f], f) / (np.float32(level) * self.surround[r0:r1, c0:c1])
        shown, expected = (1.0 - now) * np.sign(depth), np.abs(depth)  # its contrast now, and in the map
        open_blocks = ~covered_blocks(covers, r0, c0, relief.shape, f)
        labels, count = ndimage.label(depth != 0)
        keep = np.zeros(count + 1, bool)
        for k, part in enumerate(ndimage.find_objects(labels), start=1):
            if part is None:
                continue
            own = labels[part] == k
            seen = own & open_blocks[part]
            whole, visible = float(expected[part][own].sum()), float(expected[part][seen].sum())
            # Mostly covered (a particle lying over it): nothing tells it has gone, and it had been there.
            keep[k] = (visible < HIDDEN_SHARE * whole
                       or float(shown[part][seen].sum()) >= STILL_THERE * visible)
        if not keep.any():
            return None
        used = np.where(keep[labels], relief, np.float32(1.0))
        yy = (np.arange(y0, y1, dtype=np.float32) - (f - 1) / 2) / f - r0
        xx = (np.arange(x0, x1, dtype=np.float32) - (f - 1) / 2) / f - c0
        # Interpolated only where a divided block is among a pixel's four neighbours: elsewhere the relief
        # reads 1 (in float32) and dividing by it changes nothing. The search window is most of a frame's
        # rectangle and a feature a few blocks: the full interpolation was most of this call's cost.
        ys, xs = _reached(yy, (used != 1.0).any(axis=1)), _reached(xx, (used != 1.0).any(axis=0))
        smooth = ndimage.map_coordinates(used, np.meshgrid(yy[ys], xx[xs], indexing="ij"), order=1, mode="nearest")
        out = pixels.copy()
        region = raw.astype(np.float32)
        region[ys, xs] /= np.maximum(smooth, np.float32(1e-3))
        if pixels.dtype.kind in "ui":
            region = np.clip(np.rint(region), 0, _integer_max(pixels.dtype) - 1)  # the maximum reads as missing
        out[y0:y1, x0:x1] = region.astype(pixels.dtype)
        return out

    def explains(self, pixels: np.ndarray, x: float, y: float, radius_px: float, polarity: float) -> float:
        """Fraction (0..) of the contrast at (x, y) now that the long-run mean already shows there.

        Contrast = polarity x (1 - footprint mean / ring mean), on the map's blocks, of the current
        frame and of the running mean alike (the same dilution, so small particles compare fairly; a
        global brightness change scales footprint and ring alike). 0 when the map does not know the
        place yet or nothing stands out now; about 1 on a feature that has always been there.
        """
        if self.mean is None or self.updates is None:
            return 0.0
        f = self.factor
        rc = max(radius_px / f, 0.75)
        outer = rc + 1.0 + max(2.0, rc)
        cx, cy = (x - (f - 1) / 2) / f, (y - (f - 1) / 2) / f
        n_rows, n_cols = self.mean.shape
        c0, c1 = max(int(math.floor(cx - outer)), 0), min(int(math.ceil(cx + outer)) + 1, n_cols)
        r0, r1 = max(int(math.floor(cy - outer)), 0), min(int(math.ceil(cy + outer)) + 1, n_rows)
        if c0 >= c1 or r0 >= r1:
            return 0.0
        yy, xx = np.mgrid[r0:r1, c0:c1]
        dist = np.hypot(xx - cx, yy - cy)
        footprint, ring = dist <= rc, (dist > rc + 1.0) & (dist <= outer)
        if not footprint.any():
            footprint = dist <= dist.min()
        return self._explained(pixels, r0, r1, c0, c1, footprint, ring, polarity)

    def explains_mask(self, pixels: np.ndarray, placed: Placement, polarity: float) -> float:
        """`explains` for a placed mask: its own blocks (half covered or more) against a 2-block ring around it.

        The identity gate's test: the template's footprint, not a disc, so a match that straddles two
        immobile neighbours is compared with what was there, not with the gap between them.
        """
        if self.mean is None or self.updates is None:
            return 0.0
        f = self.factor
        x0, y0, _, _ = placed.box
        coverage = block_coverage(placed.crop, x0, y0, f, 2)
        bx0, by0 = x0 // f - 2, y0 // f - 2
        n_rows, n_cols = self.mean.shape
        r0, c0 = max(by0, 0), max(bx0, 0)
        r1, c1 = min(by0 + coverage.shape[0], n_rows), min(bx0 + coverage.shape[1], n_cols)
        if r0 >= r1 or c0 >= c1:
            return 0.0
        coverage = coverage[r0 - by0 : r1 - by0, c0 - bx0 : c1 - bx0]
        footprint = coverage >= 0.5 if (coverage >= 0.5).any() else coverage >= coverage.max()
        ring = ndimage.binary_dilation(coverage > 0, iterations=2) & (coverage == 0)
        return self._explained(pixels, r0, r1, c0, c1, footprint, ring, polarity)

    def _explained(self, pixels: np.ndarray, r0: int, r1: int, c0: int, c1: int, footprint: np.ndarray,
                   ring: np.ndarray, polarity: float) -> float:
        assert self.mean is not None and self.updates is not None
        f = self.factor
        known = self.updates[r0:r1, c0:c1] >= MIN_UPDATES
        if not footprint.any() or (footprint & known).sum() < 0.5 * footprint.sum() or not (ring & known).any():
            return 0.0
        now = block_mean(pixels[r0 * f : r1 * f, c0 * f : c1 * f], f)
        if now.shape != footprint.shape:
            return 0.0
        past = self.mean[r0:r1, c0:c1]
        contrast_now = _contrast(now, footprint & known, ring & known, polarity)
        if contrast_now <= 0:
            return 0.0
        return max(_contrast(past, footprint & known, ring & known, polarity), 0.0) / contrast_now


def _contrast(blocks: np.ndarray, footprint: np.ndarray, ring: np.ndarray, polarity: float) -> float:
    background = float(blocks[ring].mean())
    return polarity * (1.0 - float(blocks[footprint].mean()) / background) if background > 0 else 0.0
