"""The near searches of all present particles of a frame, as batched array operations (issue 23).

One particle's search (`search.coarse_search`, `near.block_level`, `search.fine_search`) makes ~100 numpy
calls on arrays of a few hundred to a few thousand floats: with tens of particles the frame's cost is call
overhead, not arithmetic. Here the near searches that `near.near_windows` prepared unmasked (window in the
frame, nothing claimed, coarse correlations already computed in one stack) run together: particles whose
arrays have the same shapes are stacked, and each step -- z scores, motion prior, optimum, fine window,
fine dot products, fine prior, optimum -- is one call for the whole stack.

**The same floats.** Each step does the per-particle functions' float operations in the same order and
dtypes (elementwise operations on a stack are the operations on each member; the dot products are one
matrix product per member, as before), so the poses are identical: the per-particle functions stay the
reference (`search.coarse_search`, `search.fine_search`), and tests/test_embedded_batched_search.py
compares the two paths pose by pose on real frames, and whole runs mask by mask. The per-particle noise
bookkeeping (`ShapeMemory.noise_level`, one call per level and search) is kept call for call. Whatever does
not fit -- a fine window that leaves the frame, holds saturated or claimed pixels, or whose search square is
clamped at its level's edge -- goes through the per-particle functions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, NamedTuple

import numpy as np

from sam4em_live.segment.embedded.batched_surface import (
    inner_cells,
    parabola_offsets,
    prior_penalties,
    surface_neighbours,
)
from sam4em_live.segment.embedded.claims import claimed
from sam4em_live.segment.embedded.near import NEAR_MAX_TURN_DEG, block_level
from sam4em_live.segment.embedded.search import (
    CoarsePose,
    FineLevel,
    MotionPrior,
    PoseEstimate,
    _fine_reach,
    _first_fine_reach,
    coarse_search,
    fine_search,
    fine_window_extent,
)
from sam4em_live.segment.embedded.stacking import stack, stack_columns
from sam4em_live.segment.embedded.window import WindowExtent, block_darkness_stack, robust_noise

if TYPE_CHECKING:
    from sam4em_live.segment.embedded.near import NearWindow
    from sam4em_live.segment.embedded.options import EmbeddedOptions
    from sam4em_live.segment.embedded.raster import Placement
    from sam4em_live.segment.embedded.templates import FineBank
    from sam4em_live.segment.embedded.tracker import TrackedParticle

#: Fewer searches than this a frame go one at a time: the stacks' set-up then costs more than it saves
#: (thread CPU of `track` per frame, batched / per-particle, interleaved in one process on the loaded 2-core
#: VM at load 16-19: 1.15 with 8 particles, 1.11 with 12, 1.00 with 14, 1.01-1.03 with 16, 0.97 with 18, 0.96
#: with 20, 0.91 with 24).
MIN_BATCH = 17
#: Searches that share fewer array shapes than this go one at a time (a stack of one or two members
#: costs ~0.15 ms of set-up, more than the reference functions; particles' learned sizes differ a little,
#: so 50 particles make ~3 coarse and ~3 fine stacks a frame, some of one member).
MIN_GROUP = 3
#: Fine patches are copied for this many bytes of members at a time (about half a core's L2 cache).
PATCH_BUFFER_BYTES = 512 * 1024
#: A near answer stands if its z is at least this fraction of the particle's typical z (`pose_search`).
NEAR_ACCEPT_Z_FRACTION = 0.7

__all__ = ["NEAR_ACCEPT_Z_FRACTION", "NearAnswers", "batched_near_searches"]


class NearAnswers(NamedTuple):
    """What the batched near searches of a frame leave to the segmenter.

    ``settled``: particle -> (estimate, window background), near answers that stand (clear and interior).
    ``wider``: particle -> its motion prior, near searched without a clear, interior answer: search the full
    radius with that prior (the near search is not repeated: its noise bookkeeping is done). A particle in
    neither was not searched here (a masked window, or none): the per-particle `_search`.
    """

    settled: dict[int, tuple[PoseEstimate, float]]
    wider: dict[int, MotionPrior]


@dataclass(slots=True)
class _Search:
    """One particle's near search on its way through the stages."""

    track: TrackedParticle
    window: NearWindow
    coarse_prior: MotionPrior  # the prior within the near radius
    start: CoarsePose | None = None
    extent: WindowExtent | None = None  # the fine window at ``start`` (`search.fine_window_extent`)
    fine: FineLevel | None = None
    estimate: PoseEstimate | None = None


def batched_near_searches(pixels: np.ndarray, tracks: list[TrackedParticle], claims: list[Placement],
                          windows: dict[int, NearWindow], options: EmbeddedOptions) -> NearAnswers:
    """The near searches of ``tracks`` whose window ``windows`` holds unmasked, batched (see the module doc).

    Equal, particle for particle, to `segmenter._search` with ``prepared`` = the track's near window.
    """
    near_px = options.near_search_radius_px
    searches = [_Search(t, w, w.prior.within(near_px)) for t in tracks
                if (w := windows.get(t.particle)) is not None and w.correlation is not None and w.bank is not None]
    if len(searches) < MIN_BATCH:
        return NearAnswers({}, {})  # a few particles: the per-particle path is as cheap (see MIN_BATCH)
    for group in _groups(searches, _coarse_key).values():
        if len(group) >= MIN_GROUP:
            _coarse_stage(group)
        else:
            for s in group:
                _coarse_alone(s)
    started = [s for s in searches if s.start is not None]
    for s in started:
        s.extent = fine_window_extent(s.track.memory, s.start.x, s.start.y)  # type: ignore[union-attr]
    batchable = [s for s in started if _fine_unclaimed(s, claims)]
    for group in _groups(batchable, _fine_key).values():
        if len(group) >= MIN_GROUP:  # else left to `_fine_alone`
            _fine_stage(_fine_levels(pixels, group))
    for s in started:
        if s.fine is None:  # not batchable: the reference reader and search (one noise call, as ever)
            _fine_alone(pixels, s, claims)
    answers = NearAnswers({}, {})
    for s in searches:
        estimate, track = s.estimate, s.track
        if (estimate is not None and estimate.z >= NEAR_ACCEPT_Z_FRACTION * track.z_ref
                and math.hypot(estimate.x - s.coarse_prior.x, estimate.y - s.coarse_prior.y)
                <= near_px - track.memory.coarse_factor):
            answers.settled[track.particle] = (estimate, s.window.level.background)
        else:
            answers.wider[track.particle] = s.window.prior
    return answers


def _groups(searches: list[_Search], key: object) -> dict[tuple[object, ...], list[_Search]]:
    out: dict[tuple[object, ...], list[_Search]] = {}
    for s in searches:
        out.setdefault(key(s), []).append(s)  # type: ignore[operator]
    return out


# ---------------------------------------------------------------------------------------------- coarse


def _coarse_key(s: _Search) -> tuple[object, ...]:
    bank, memory = s.window.bank, s.track.memory
    assert bank is not None
    return (s.window.level.contrast.shape[0], bank.angles_deg.size, bank.size, memory.coarse_factor,
            memory.period_deg)


def _coarse_alone(s: _Search) -> None:
    """The reference coarse search of one near window (as `segmenter._search_window` with it prepared)."""
    s.start = coarse_search(s.window.level.contrast, s.window.x0, s.window.y0, s.track.memory, s.coarse_prior,
                            None, max_turn_deg=NEAR_MAX_TURN_DEG, correlation=s.window.correlation,
                            bank=s.window.bank)


def _coarse_stage(group: list[_Search]) -> None:
    """`search.coarse_search` of every member (unmasked window, correlation given), as stacked operations."""
    first = group[0]
    memory0, bank0 = first.track.memory, first.window.bank
    assert bank0 is not None
    factor, cells, size = memory0.coarse_factor, first.window.level.contrast.shape[0], bank0.size
    n_valid = cells - size + 1
    denominators = []
    for s in group:
        contrast = s.window.level.contrast
        sigma = s.track.memory.noise_level(factor, partial(robust_noise, contrast, None))
        denominators.append(sigma * s.window.bank.norms)  # type: ignore[union-attr]
    # The sigma's type sets the z's dtype (a numpy float64 makes it float64): members differing in it go apart.
    for members, denominator in _by_dtype(group, denominators):
        _coarse_members(members, denominator, factor, n_valid, size)


def _by_dtype(group: list[_Search], values: list[np.ndarray]) -> list[tuple[list[_Search], np.ndarray]]:
    kinds: dict[np.dtype, list[int]] = {}
    for i, value in enumerate(values):
        kinds.setdefault(value.dtype, []).append(i)
    return [([group[i] for i in index], stack([values[i] for i in index])) for index in kinds.values()]


def _coarse_members(group: list[_Search], denominator: np.ndarray, factor: int, n_valid: int, size: int) -> None:
    memory0 = group[0].track.memory
    corr = stack([s.window.correlation[:, :n_valid, :n_valid] for s in group])  # type: ignore[index]
    z = corr / denominator[:, :, None, None]
    axis = memory0.cell_axis(n_valid, factor, (size - 1) / 2 * factor + (factor - 1) / 2)
    grid_x = axis[None, :] + np.array([s.window.x0 for s in group], np.float32)[:, None]
    grid_y = axis[None, :] + np.array([s.window.y0 for s in group], np.float32)[:, None]
    angles = stack([s.window.bank.angles_deg for s in group])  # type: ignore[union-attr]
    count = angles.shape[1]
    penalty = prior_penalties(grid_x, grid_y, angles, [s.coarse_prior for s in group], memory0.period_deg)
    objective = z.reshape(len(group), count, -1) - penalty
    best = objective.reshape(len(group), -1).argmax(axis=1)
    k, p = np.divmod(best, n_valid * n_valid)
    r, c = np.divmod(p, n_valid)
    members = np.arange(len(group))
    surface = objective.reshape(len(group), count, n_valid, n_valid)
    values = surface_neighbours(surface, members, k, r, c, n_valid, n_valid).astype(np.float64)
    left, mid, right, up, down = values.T
    xs = grid_x[members, c] + parabola_offsets(left, mid, right, inner_cells(c, n_valid)) * factor
    ys = grid_y[members, r] + parabola_offsets(up, mid, down, inner_cells(r, n_valid)) * factor
    for s, kk, found, x, y in zip(group, k.tolist(), np.isfinite(mid).tolist(), xs.tolist(), ys.tolist(),
                                  strict=True):
        if found:  # else nothing within the prior's radius
            s.start = CoarsePose(x, y, float(s.window.bank.angles_deg[kk]))  # type: ignore[union-attr]


# ---------------------------------------------------------------------------------------------- fine


def _fine_unclaimed(s: _Search, claims: list[Placement]) -> bool:
    """Whether nothing of the fine window of ``s`` is claimed (the rest is checked by `block_darkness_stack`)."""
    assert s.extent is not None
    return not claims or claimed(claims, *s.extent) is None


def _fine_alone(pixels: np.ndarray, s: _Search, claims: list[Placement]) -> None:
    """The reference fine level and search for one member that does not fit a batch."""
    assert s.start is not None and s.extent is not None
    memory = s.track.memory
    fx0, fy0, fedge = s.extent
    fine = block_level(pixels, s.track, claims, fx0, fy0, fedge, memory.fine_factor, s.window.level.background,
                       clip_pixels=True)
    s.fine = FineLevel(fx0, fy0, fine.contrast, fine.valid)
    s.estimate = fine_search(s.fine, memory, s.start, s.window.prior)


def _fine_key(s: _Search) -> tuple[object, ...]:
    """What a fine stack shares (the fine reaches follow from the two factors)."""
    memory = s.track.memory
    return (memory.fine_factor, s.extent.edge, memory.banks.fine_step_deg(), memory.period_deg,  # type: ignore[union-attr]
            memory.coarse_factor)


def _fine_levels(pixels: np.ndarray, group: list[_Search]) -> list[_Search]:
    """The fine level of every member, read as one stack (`window.block_darkness_stack`); the members served.

    A member whose window leaves the frame or holds saturated pixels is left to `_fine_alone` (``fine`` None).
    """
    extents: list[WindowExtent] = [s.extent for s in group]  # type: ignore[misc]
    levels = block_darkness_stack(pixels, [(e.x0, e.y0) for e in extents], extents[0].edge,
                                  group[0].track.memory.fine_factor, [s.track.polarity for s in group],
                                  [s.window.level.background for s in group], clip_pixels=True)
    for s, e, level in zip(group, extents, levels, strict=True):
        if level is not None:
            s.fine = FineLevel(e.x0, e.y0, level.contrast, None)
    return [s for s in group if s.fine is not None]


class _FinePlan(NamedTuple):
    """One member's fine search set-up: its bank, start cell and noise level (as `search.fine_search`)."""

    bank: FineBank
    cx: int
    cy: int
    denominator: np.ndarray  # sigma * norms


def _fine_stage(group: list[_Search]) -> None:
    """`search.fine_search` of every member (whole-valid fine level), as stacked operations."""
    if not group:
        return
    memory0 = group[0].track.memory
    factor = memory0.fine_factor
    offset = (factor - 1) / 2
    step = memory0.banks.fine_step_deg()
    span = int(math.ceil(memory0.options.coarse_angle_step_deg / 2 / step)) if memory0.period_deg > 0 else 0
    plans = []
    for s in group:
        assert s.fine is not None and s.start is not None
        contrast = s.fine.contrast
        sigma = s.track.memory.noise_level(factor, partial(robust_noise, contrast, None))
        bank = s.track.memory.banks.fine_bank(int(round(s.start.angle_deg / step)) if step > 0 else 0, span)
        cx = int(round((s.start.x - s.fine.x0 - offset) / factor))
        cy = int(round((s.start.y - s.fine.y0 - offset) / factor))
        plans.append(_FinePlan(bank, cx, cy, sigma * bank.norms))
    full = _fine_reach(memory0)
    first = _first_fine_reach(memory0, full)
    todo = list(range(len(group)))
    for reach in (first, full) if first < full else (full,):
        rim = []
        for index in _by_window(group, plans, todo, reach):
            results = _fine_pass([group[i] for i in index], [plans[i] for i in index], reach, step, factor)
            rim += [i for i, interior in zip(index, results, strict=True) if not interior]
        todo = rim
        if not todo:
            break


def _by_window(group: list[_Search], plans: list[_FinePlan], todo: list[int], reach: int) -> list[list[int]]:
    """``todo`` split by what a pass stacks: the searched square's shape, the bank's, the noise's dtype."""
    out: dict[tuple[object, ...], list[int]] = {}
    for i in todo:
        limit = group[i].fine.contrast.shape[0] - plans[i].bank.size  # type: ignore[union-attr]
        key = (_square(plans[i], reach, limit), plans[i].bank.templates.shape, plans[i].denominator.dtype)
        out.setdefault(key, []).append(i)
    return list(out.values())


def _square(plan: _FinePlan, reach: int, limit: int) -> tuple[int, int, int, int]:
    """Top-left cell range of the searched square (r0, c0) and its rows and columns, clamped to the level."""
    half = (plan.bank.size - 1) // 2
    c0, c1 = min(max(plan.cx - reach - half, 0), limit), min(max(plan.cx + reach - half, 0), limit)
    r0, r1 = min(max(plan.cy - reach - half, 0), limit), min(max(plan.cy + reach - half, 0), limit)
    return r1 - r0 + 1, c1 - c0 + 1, r0, c0


def _fine_pass(group: list[_Search], plans: list[_FinePlan], reach: int, step: float, factor: int) -> list[bool]:
    """One square of `search.fine_search` for members of one shape; sets each estimate, says which are interior."""
    n = len(group)
    size = plans[0].bank.size
    half = (size - 1) // 2
    offset = (factor - 1) / 2
    limit = group[0].fine.contrast.shape[0] - size  # type: ignore[union-attr]
    squares = [_square(p, reach, limit) for p in plans]
    n_rows, n_cols = squares[0][0], squares[0][1]
    count = plans[0].bank.templates.shape[0]
    templates = stack([p.bank.templates for p in plans]).transpose(0, 2, 1)  # (N, t², A)
    scores = np.empty((n, n_rows * n_cols, count), np.float32)  # (N, positions, angles)
    # Patches are copied a few members at a time into a buffer that stays in the core's cache (the whole
    # stack, ~170 KB a member, would not: the copy then cost more than the per-member calls it saves).
    per = max(1, PATCH_BUFFER_BYTES // (n_rows * n_cols * size * size * 4))
    buffer = np.empty((min(per, n), n_rows * n_cols, size * size), np.float32)
    for start in range(0, n, per):
        stop = min(start + per, n)
        for k in range(start, stop):
            image, (_, _, r0, c0) = group[k].fine.contrast, squares[k]  # type: ignore[union-attr]
            s0, s1 = image.strides
            view = np.ndarray((n_rows, n_cols, size, size), image.dtype, image, r0 * s0 + c0 * s1, (s0, s1, s0, s1))
            buffer[k - start].reshape(n_rows, n_cols, size, size)[...] = view
        np.matmul(buffer[: stop - start], templates[start:stop], out=scores[start:stop])  # a product per member
    z = (scores / stack([p.denominator for p in plans])[:, None, :]).transpose(0, 2, 1)  # (N, A, P)
    base = np.arange(n_cols, dtype=np.float32) * factor
    base_rows = np.arange(n_rows, dtype=np.float32) * factor
    x0s = np.array([s.fine.x0 for s in group], np.float32)[:, None]  # type: ignore[union-attr]
    y0s = np.array([s.fine.y0 for s in group], np.float32)[:, None]  # type: ignore[union-attr]
    grid_x = (base[None, :] + np.array([(c0 + half) * factor + offset for *_, c0 in squares], np.float32)[:, None]
              ) + x0s
    grid_y = (base_rows[None, :] + np.array([(r0 + half) * factor + offset for _, _, r0, _ in squares],
                                            np.float32)[:, None]) + y0s
    angles = stack([p.bank.angles_deg for p in plans])
    priors = [s.window.prior for s in group]
    objective = z - prior_penalties(grid_x, grid_y, angles, priors, group[0].track.memory.period_deg)
    best = objective.reshape(n, -1).argmax(axis=1)
    positions = n_rows * n_cols
    a, p = np.divmod(best, positions)
    r, c = np.divmod(p, n_cols)
    members = np.arange(n)
    surface = objective.reshape(n, count, n_rows, n_cols)
    around = surface_neighbours(surface, members, a, r, c, n_rows, n_cols)
    turns = objective[members[:, None], stack_columns([np.maximum(a - 1, 0), np.minimum(a + 1, count - 1)]),
                      p[:, None]]
    left, mid, right, up, down = around.astype(np.float64).T
    before, after = turns.astype(np.float64).T
    inner_rows, inner_cols = inner_cells(r, n_rows), inner_cells(c, n_cols)
    xs = grid_x[members, c] + parabola_offsets(left, mid, right, inner_cols) * factor
    ys = grid_y[members, r] + parabola_offsets(up, mid, down, inner_rows) * factor
    turned = angles[members, a] + parabola_offsets(before, mid, after, inner_cells(a, count)) * step
    gains = stack([p.bank.gains for p in plans])[members, a].astype(np.float64)
    amplitudes = scores[members, p, a] / np.maximum(gains, 1e-9)
    for s, x, y, angle, zz, amplitude in zip(group, xs.tolist(), ys.tolist(), turned.tolist(),
                                             z[members, a, p].tolist(), amplitudes.tolist(), strict=True):
        s.estimate = PoseEstimate(x=x, y=y, angle_deg=angle, z=zz, amplitude=amplitude)
    return (inner_rows & inner_cols).tolist()

