"""The masks of all particles of a frame at their found poses, rasterised together (issue 23).

`raster.rasterize_mask` makes ~15 numpy calls on a ~30 x 30 box per particle: with tens of particles
a frame, the calls cost more than the arithmetic. Here the poses whose boxes have the same size are
stacked and each step (offsets, lookup indices, gather, area) is one call for the stack; the lookup
tables of the stack are laid end to end, so one gather serves all.

**The same masks.** Each member gets `rasterize_mask`'s float32 operations in the same order (its
scalars as float32 columns), so its indices, crop and area are identical; `rasterize_mask` stays the
reference (tests/test_embedded_batched_search.py compares them pose by pose). A member's crop is a
view of its own part of the stack (as the reference's is of its own array).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from sam4em_live.segment.embedded.raster import PixelBox, Placement

if TYPE_CHECKING:
    from sam4em_live.segment.embedded.raster import MaskLookup
    from sam4em_live.segment.embedded.search import PoseEstimate
    from sam4em_live.segment.embedded.shape import ShapeMemory

#: Fewer poses than this a frame are rasterised one at a time (thread CPU per frame, interleaved against
#: `ShapeMemory.rasterize` one by one on the 2-core VM: 0.96 with 50 particles, 1.00 with 16).
MIN_POSES = 16
#: Fewer poses than this of one box size are rasterised one at a time (a stack's set-up costs ~6 calls).
MIN_STACK = 4

__all__ = ["placements"]


def placements(memories: list[ShapeMemory], estimates: list[PoseEstimate | None], shape: tuple[int, int]
               ) -> list[Placement | None]:
    """``memory.rasterize`` at each estimate's pose (None for a None estimate or a mask wholly outside)."""
    out: list[Placement | None] = [None] * len(memories)
    if len(memories) < MIN_POSES:
        return [None if e is None else m.rasterize(e.x, e.y, e.angle_deg, shape)
                for m, e in zip(memories, estimates, strict=True)]
    groups: dict[tuple[int, int], list[tuple[int, _Box]]] = {}
    for i, (memory, estimate) in enumerate(zip(memories, estimates, strict=True)):
        if estimate is None:
            continue
        box = _box(memory.radius_px, estimate.x, estimate.y)
        groups.setdefault((box.uy1 - box.uy0, box.ux1 - box.ux0), []).append((i, box))
    for members in groups.values():
        if len(members) < MIN_STACK:
            for i, _ in members:
                estimate = estimates[i]
                assert estimate is not None
                out[i] = memories[i].rasterize(estimate.x, estimate.y, estimate.angle_deg, shape)
            continue
        lookups = [memories[i]._mask_lookup for i, _ in members]  # the memory's own table (shape.py)
        poses = [estimates[i] for i, _ in members]
        for (i, _), placed in zip(members, _stacked(lookups, poses, [b for _, b in members], shape), strict=True):
            out[i] = placed
    return out


class _Box:
    """`rasterize_mask`'s unclipped box: columns ux0 .. ux1 - 1, rows uy0 .. uy1 - 1."""

    __slots__ = ("ux0", "ux1", "uy0", "uy1")

    def __init__(self, ux0: int, ux1: int, uy0: int, uy1: int) -> None:
        self.ux0, self.ux1, self.uy0, self.uy1 = ux0, ux1, uy0, uy1


def _box(radius_px: float, x: float, y: float) -> _Box:
    reach = radius_px + 1.0
    return _Box(int(math.floor(x - reach)), int(math.ceil(x + reach)) + 1, int(math.floor(y - reach)),
                int(math.ceil(y + reach)) + 1)


def _stacked(lookups: list[MaskLookup], poses: list[PoseEstimate | None], boxes: list[_Box],
             shape: tuple[int, int]) -> list[Placement | None]:
    """`rasterize_mask` of poses whose boxes have one size, as stacked operations."""
    n = len(poses)
    height, width = boxes[0].uy1 - boxes[0].uy0, boxes[0].ux1 - boxes[0].ux0
    xs = [p.x for p in poses]  # type: ignore[union-attr]
    ys = [p.y for p in poses]  # type: ignore[union-attr]
    turns = [math.radians(p.angle_deg) for p in poses]  # type: ignore[union-attr]

    def column(values: list[float]) -> np.ndarray:
        return np.array(values, np.float32).reshape(n, 1)

    c2, s2 = column([2 * math.cos(t) for t in turns]), column([2 * math.sin(t) for t in turns])
    # arange(ux0, ux1) in float32 is the integers ux0 + j exactly (frame coordinates are far below 2**24).
    dx = (column([b.ux0 for b in boxes]) + np.arange(width, dtype=np.float32)) - column(xs)
    dy = (column([b.uy0 for b in boxes]) + np.arange(height, dtype=np.float32)) - column(ys)
    centres = column([lookup.centre for lookup in lookups])
    tables = [lookup.table for lookup in lookups]
    widths = np.array([table.shape[1] for table in tables], np.int32).reshape(n, 1, 1)
    starts = np.cumsum([0] + [table.size for table in tables[:-1]]).reshape(n, 1, 1)
    half = np.array(0.5, np.float32)
    index = ((c2 * dy + half)[:, :, None] + (centres - s2 * dx)[:, None, :]).astype(np.int32)  # lookup row
    index *= widths
    index += ((s2 * dy + half)[:, :, None] + (centres + c2 * dx)[:, None, :]).astype(np.int32)  # + column
    full = np.concatenate([table.ravel() for table in tables]).take(index + starts)
    areas = np.count_nonzero(full.reshape(n, -1), axis=1).tolist()
    rows, cols = shape
    out: list[Placement | None] = []
    for k, (b, x, y, area) in enumerate(zip(boxes, xs, ys, areas, strict=True)):
        x0, x1, y0, y1 = max(b.ux0, 0), min(b.ux1, cols), max(b.uy0, 0), min(b.uy1, rows)
        if x0 >= x1 or y0 >= y1:
            out.append(None)
            continue
        if area == 0:  # as the reference: a mask thinner than the lookup's sampling covers its centre pixel
            full[k, math.floor(y + 0.5) - b.uy0, math.floor(x + 0.5) - b.ux0] = True
            area = 1
        out.append(Placement(PixelBox(x0, y0, x1, y1), full[k, y0 - b.uy0 : y1 - b.uy0, x0 - b.ux0 : x1 - b.ux0],
                             area))
    return out

