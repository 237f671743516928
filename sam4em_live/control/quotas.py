"""Quotas on what clients may ask of a running service: rates, box sizes, particles, pending edits.

The control channel and hooks reach the service through `ServiceControl`; the
service checks every edit and annotation here *before* any work is queued, so
one client cannot make the worker seed a frame-sized box, track hundreds of
particles or write notes without bound (issue 18). `ServiceQuotas` holds the
limits of ``[quotas]`` (`sam4em_live.config.QuotaConfig`) and counts what it
refuses, by quota name.

Live, a client's new particle is admitted only while the worker has room for
what it will cost (``max_worker_load``, `ServiceQuotas._over_worker_load`): the
worker's measured load, plus what that load cannot show yet -- a new particle's
first frames while its memory fills, and the search for a particle that a
prompt on it displaces -- with one new particle at a time until its cost shows.

Coordinates are pixels, x = column, y = row, origin at the centre of the
top-left pixel, so a frame of ``cols`` columns spans x in [-0.5, cols - 0.5).
"""

from __future__ import annotations

import dataclasses
import math
import threading
import time
from typing import TYPE_CHECKING

from sam4em_live.control_api import QuotaExceeded
from sam4em_live.particles import Prompt, PromptError, validate_edit

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Sequence

    from sam4em_live.config import QuotaConfig
    from sam4em_live.particles import ParticleEdit


class RateLimit:
    """A token bucket: ``rate_per_s`` tokens a second, at most ``burst`` saved (default one second's worth).

    Thread-safe. ``try_take`` takes a token if there is one; ``wait_s`` says how
    long until there is one (0: now).
    """

    def __init__(self, rate_per_s: float, burst: float | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate_per_s = rate_per_s
        self.burst = max(burst if burst is not None else rate_per_s, 1.0)
        self._clock = clock
        self._tokens = self.burst
        self._last = clock()
        self._lock = threading.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate_per_s)
        self._last = now

    def try_take(self) -> bool:
        with self._lock:
            self._refill()
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False

    def wait_s(self) -> float:
        with self._lock:
            self._refill()
            return max(0.0, (1.0 - self._tokens) / self.rate_per_s)


def bound_prompt(edit: ParticleEdit, shape: tuple[int, int], max_box_edge_px: float) -> ParticleEdit:
    """``edit`` with its box clipped to a frame of ``shape`` (rows, cols); `PromptError` if it cannot apply.

    Points are never moved: a point outside the frame names no pixel, so the
    prompt is refused. A box is clipped to the frame (a box drawn over the edge
    for a particle at the edge is normal), then refused if nothing is left or if
    a side is longer than ``max_box_edge_px``: seeding costs time in proportion
    to the box's area and runs on the worker thread. Removals pass unchanged.
    """
    if not isinstance(edit, Prompt) or edit.box is None:
        validate_edit(edit, shape)  # points, labels and ids: the one shared check
        return edit
    rows, cols = shape
    if not all(math.isfinite(v) for v in edit.box):
        raise PromptError(f"particle {edit.particle}: box {edit.box} is not finite", edit.particle)
    x0, y0, x1, y1 = edit.box
    clipped = (max(x0, -0.5), max(y0, -0.5), min(x1, cols - 0.5), min(y1, rows - 0.5))
    width, height = clipped[2] - clipped[0], clipped[3] - clipped[1]
    if width < 1 or height < 1:
        raise PromptError(f"particle {edit.particle}: box {_box_text(edit.box)} has nothing inside the "
                          f"{cols}x{rows} frame (need x1 > x0, y1 > y0)", edit.particle)
    if max(width, height) > max_box_edge_px:
        raise PromptError(f"particle {edit.particle}: box {_box_text(edit.box)} is {width:.0f}x{height:.0f} px "
                          f"inside the frame; the limit is {max_box_edge_px:g} px a side (quotas.max_box_edge_px)",
                          edit.particle)
    bounded = edit if clipped == edit.box else dataclasses.replace(edit, box=clipped)
    validate_edit(bounded, shape)
    return bounded


def _box_text(box: tuple[float, float, float, float]) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in box) + "]"


#: How long a new particle's first frames count as *filling* (processed frames after it is first seen tracked).
#: Its memory learns every frame until it holds ``memory_frames`` (40) observations and refreshes its shape
#: often (learning_schedule.py): those frames cost more than its steady ones. The load measured while a
#: particle fills shows neither its steady cost nor (when it landed mid-interval) all of its filling cost, so
#: no other new particle is admitted meanwhile. The margin over 40 covers the interval that straddles its landing.
FILLING_FRAMES = 48
#: What a filling memory costs on top of the measured load, in equal shares of it (busy / particles). Measured
#: as the embedded backend's CPU time a frame (thread time, which other work on the machine does not inflate)
#: on the faults-control clip (256², 2 disks tracked for 1000 frames, a 3rd prompted; 2026-12-08, 2 runs each):
#: 2 particles 1.16-1.24 ms (a share 0.6 ms), the 3rd's first 40 frames +0.7-0.85 ms (1.2-1.4 shares), then
#: +0.1-0.2 ms. The service's busy fraction holds more fixed costs (ingest, sinks, the GIL's switches): with
#: those 2 particles at 200 fps it read ~0.45 (a share 1.1 ms of the 5 ms frame), so the filling costs 0.6-0.75
#: of the service's shares. Checked against a busy fraction of 1, not `max_worker_load`: it lasts ~40 frames,
#: and a worker that keeps pace loses none.
FILLING_SHARES = 0.7
#: What a new particle prompted on a particle present now costs, in equal shares: the backend gives the place
#: to the new prompt and reports the other lost (lost beats wrong), then searches for it on every frame (its
#: whole window, every orientation) for as long as it stays lost. On the clip above (the 3rd prompted on
#: particle 1) the backend's own CPU time a frame rose by 1.6-1.8 ms for good (2.7-3 of its shares), but in the
#: service more: at 3 shares one such prompt was admitted at busy 0.35-0.4 with 3 particles and took the worker
#: to busy 0.9-1.0 (2026-12-08, tests/test_faults_control.py; beside a niced CPU hog the rate fell to 0.36 and
#: 0.48 of before in 2 of 3 such runs): +0.55, 4.5-5 of the service's shares -- a worker near its limit falls
#: behind, skips frames, and its particles move further between the frames it sees. Checked against
#: `max_worker_load`: it lasts.
DISPLACED_SEARCH_SHARES = 5.0
#: The load is the worker's busy fraction over the status intervals that ended within this many seconds of the
#: last (at least the last one; the default interval is 1 s): on the loaded 2-core VM one 0.2 s interval
#: read anywhere from 0.33 to 1.0 with the same 2 particles, and a particle admitted on a low reading between
#: saturated ones took the worker from 200 to ~100 fps (tests/test_faults_control.py, 2026-12-08).
LOAD_WINDOW_S = 0.9
#: A new particle admitted but not seen tracked after this long no longer counts as pending (its prompt was
#: refused when seeded, or the run stopped): seeding aside waits for an idle worker, 0.5 s at most a batch.
PENDING_EXPIRY_S = 3.0


def displaced(edit: ParticleEdit, placed: Sequence[tuple[int, tuple[int, int, int, int]]]) -> int | None:
    """The particle present on the last frame that prompt ``edit`` lies on (None: none, or not a prompt).

    ``placed`` holds (particle, bbox) with bbox = (x0, y0, x1, y1) half-open pixel bounds. A point prompt
    lies on a particle if a positive point is inside its bbox; a box prompt if it holds the bbox's centre.
    """
    if not isinstance(edit, Prompt):
        return None
    for particle, (x0, y0, x1, y1) in placed:
        if particle == edit.particle:
            continue
        if edit.box is not None:
            cx, cy = (x0 + x1 - 1) / 2, (y0 + y1 - 1) / 2
            bx0, by0, bx1, by1 = edit.box
            if bx0 <= cx <= bx1 and by0 <= cy <= by1:
                return particle
        for (x, y), label in zip(edit.points, edit.labels, strict=False):
            if label == 1 and x0 - 0.5 <= x < x1 - 0.5 and y0 - 0.5 <= y < y1 - 0.5:
                return particle
    return None


class ServiceQuotas:
    """The ``[quotas]`` limits of one service and the count of what they refused (thread-safe).

    `admit_edit` runs on the caller's thread (control channel, hook) when an
    edit is submitted; `bound_due` runs on the worker thread when edits reach
    their frame, against that frame's shape and the particles really tracked
    (the authoritative check: at submission the frame shape may not be known yet).
    """

    def __init__(self, config: QuotaConfig, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self._clock = clock
        self._edits = RateLimit(config.max_edits_per_s, clock=clock)
        self._annotations = RateLimit(config.max_annotations_per_s, clock=clock)
        self._lock = threading.Lock()
        self._refused: dict[str, int] = {}
        # The worker's measured load (busy fraction over `LOAD_WINDOW_S`, particles tracked at the last status
        # interval): None until the service reports one (offline runs never do).
        self._load: tuple[float, int] | None = None
        self._busy: list[tuple[float, float]] = []  # (when noted, busy fraction) of the intervals in the window
        # New particles admitted whose cost the load does not show yet: id -> when admitted (not yet tracked:
        # being seeded or waiting to land) and id -> frames processed when first seen tracked (filling).
        self._pending: dict[int, float] = {}
        self._filling: dict[int, int] = {}

    @property
    def refused(self) -> dict[str, int]:
        """Refusals so far by quota name (a copy)."""
        with self._lock:
            return dict(self._refused)

    def note_worker_load(self, busy_fraction: float | None, particles: Collection[int],
                         frames_processed: int) -> None:
        """The worker's busy fraction over the last status interval with ``particles`` (ids) tracked.

        ``frames_processed`` is the service's count so far: a new particle is *filling* for its first
        `FILLING_FRAMES` processed frames after it is first seen tracked (None busy: the load is unknown).
        The load is the busy fraction over the intervals noted within `LOAD_WINDOW_S`.
        The service calls this once per status interval while it streams live; `admit_edit` then refuses a
        new particle for which that load has no room (`_over_worker_load`).
        """
        now = self._clock()
        tracked = set(particles)
        with self._lock:
            if busy_fraction is None:
                self._busy, self._load = [], None
            else:
                self._busy = [(t, b) for t, b in self._busy if t > now - LOAD_WINDOW_S]
                self._busy.append((now, max(float(busy_fraction), 0.0)))
                busy = sum(b for _, b in self._busy) / len(self._busy)  # the intervals are about equally long
                self._load = (busy, len(tracked))
            for pid, since in list(self._pending.items()):
                if pid in tracked:
                    del self._pending[pid]
                    self._filling[pid] = frames_processed
                elif now - since > PENDING_EXPIRY_S:  # refused when seeded, or removed before it landed
                    del self._pending[pid]
            for pid, first in list(self._filling.items()):
                if pid not in tracked or frames_processed - first >= FILLING_FRAMES:
                    del self._filling[pid]

    def _over_worker_load(self, edit: ParticleEdit, tracked: Collection[int], displaces: int | None
                          ) -> str | None:
        """Why a new particle would overload the worker (None: it would not, or the load is unknown).

        The rule (the docstring of `FILLING_FRAMES` says why each part is there):

        1. While a new particle admitted earlier is *pending* (admitted, not yet tracked: seeded beside the
           loop, waiting to land) or *filling* (tracked for fewer than `FILLING_FRAMES` processed frames),
           no other: the measured load does not show its cost yet.
        2. With the measured busy fraction ``busy`` (over `LOAD_WINDOW_S`) of ``n`` particles and their equal share ``busy / n``
           (the frame's fixed costs included, so the share errs high), a new particle is admitted only if
           ``busy + FILLING_SHARES x share < 1`` -- the worker keeps pace while its memory fills -- and
           ``busy + DISPLACED_SEARCH_SHARES x share < max_worker_load`` when it is prompted on a particle
           tracked now (``displaces``), which the backend then reports lost and searches for on every frame;
           else ``busy < max_worker_load``. A steady new particle is not charged its share: with one or two
           particles the fixed costs are most of the load, and a share would refuse a second particle on an
           idle worker; its steady cost (small) shows in the next measurements.
        """
        limit = self.config.max_worker_load
        if limit >= 1.0 or not isinstance(edit, Prompt) or edit.particle in tracked:
            return None
        with self._lock:
            load, waiting = self._load, sorted(self._pending) + sorted(self._filling)
        if load is None or load[1] == 0:
            return None
        busy, particles = load
        if waiting:
            return (f"particle {waiting[0]}, admitted before, is not yet tracked or its memory still fills (its "
                    f"first {FILLING_FRAMES} frames cost more than later ones); the next new particle is "
                    "admitted once its cost shows in the worker's load: try again shortly")
        share = busy / particles
        if displaces is not None:
            projected = busy + DISPLACED_SEARCH_SHARES * share
            if projected >= limit:
                return (f"the prompt is on particle {displaces}, tracked now: the backend would report that one "
                        f"lost and search for it on every frame (~{DISPLACED_SEARCH_SHARES:g} particles' work, "
                        f"~{projected:.0%} busy with the worker busy {busy:.0%} with {particles} particles), "
                        f"at or over quotas.max_worker_load = {limit:g}; correct particle {displaces} instead "
                        "(its own id), or remove it first")
        if busy >= limit:
            return (f"the worker is busy {busy:.0%} of the time with {particles} particles, at or over "
                    f"quotas.max_worker_load = {limit:g}: more would cost frames; remove a particle first, "
                    "or lower the camera rate")
        filling = busy + FILLING_SHARES * share
        if filling >= 1.0:
            return (f"the worker is busy {busy:.0%} of the time with {particles} particles: a new particle's "
                    f"first {FILLING_FRAMES} frames (its memory filling) would take it to ~{filling:.0%} and cost "
                    "frames; remove a particle first, or lower the camera rate")
        return None

    def count(self, quota: str) -> None:
        with self._lock:
            self._refused[quota] = self._refused.get(quota, 0) + 1

    def _exceeded(self, quota: str, message: str) -> QuotaExceeded:
        self.count(quota)
        return QuotaExceeded(quota, message)

    def admit_edit(self, edit: ParticleEdit, shape: tuple[int, int] | None, tracked: Collection[int],
                   pending: int, placed: Sequence[tuple[int, tuple[int, int, int, int]]] = ()) -> ParticleEdit:
        """Check one submitted edit; return it (its box clipped) or raise `QuotaExceeded` / `PromptError`.

        ``shape`` is the current series' frame shape (None before the first
        frame: the worker checks the edit when it reaches its frame);
        ``tracked`` the particles tracked now; ``pending`` the edits waiting;
        ``placed`` (particle, bbox) of the particles present on the last frame
        (`ParticleMask.bbox`): a new particle prompted on one of them displaces it.
        """
        limits = self.config
        if not self._edits.try_take():
            raise self._exceeded("max_edits_per_s", f"more than {limits.max_edits_per_s:g} edits per second "
                                 "(quotas.max_edits_per_s); try again shortly")
        if pending >= limits.max_pending_edits:
            raise self._exceeded("max_pending_edits", f"{pending} edits already wait for their frame "
                                 f"(quotas.max_pending_edits = {limits.max_pending_edits})")
        over = self._over_particle_limit(edit, tracked)
        if over is not None:
            raise self._exceeded("max_particles", over)
        overload = self._over_worker_load(edit, tracked, displaced(edit, placed))
        if overload is not None:
            raise self._exceeded("max_worker_load", overload)
        if shape is not None:
            try:
                edit = bound_prompt(edit, shape, limits.max_box_edge_px)
            except PromptError:
                self.count("prompt_bounds")
                raise
        with self._lock:
            if isinstance(edit, Prompt) and edit.particle not in tracked:
                self._pending[edit.particle] = self._clock()
            elif not isinstance(edit, Prompt):  # a removal: what it removes costs nothing more
                self._pending.pop(edit.particle, None)
                self._filling.pop(edit.particle, None)
        return edit

    def _over_particle_limit(self, edit: ParticleEdit, tracked: Collection[int]) -> str | None:
        """Why ``edit`` would track one particle too many (None: it would not)."""
        if not isinstance(edit, Prompt) or edit.particle in tracked or len(tracked) < self.config.max_particles:
            return None
        return (f"{len(tracked)} particles are tracked; the limit is {self.config.max_particles} "
                "(quotas.max_particles): remove one first")

    def bound_due(self, edits: Sequence[ParticleEdit], shape: tuple[int, int], tracked: Collection[int]
                  ) -> tuple[list[ParticleEdit], list[tuple[ParticleEdit, str]]]:
        """Edits due on a frame of ``shape``: (those to apply, boxes clipped; (refused edit, reason) pairs)."""
        ids = set(tracked)
        admitted: list[ParticleEdit] = []
        refused: list[tuple[ParticleEdit, str]] = []
        for edit in edits:
            over = self._over_particle_limit(edit, ids)
            if over is not None:
                self.count("max_particles")
                refused.append((edit, over))
                continue
            try:
                bounded = bound_prompt(edit, shape, self.config.max_box_edge_px)
            except PromptError as exc:
                self.count("prompt_bounds")
                refused.append((edit, str(exc)))
                continue
            if isinstance(bounded, Prompt):
                ids.add(bounded.particle)
            else:
                ids.discard(bounded.particle)
            admitted.append(bounded)
        return admitted, refused

    def admit_annotation(self, text: str) -> None:
        """Raise `QuotaExceeded` if ``text`` is too large or annotations come too fast."""
        size = len(text.encode("utf-8", "surrogatepass"))
        if size > self.config.max_annotation_bytes:
            raise self._exceeded("max_annotation_bytes", f"annotation of {size} bytes; the limit is "
                                 f"{self.config.max_annotation_bytes} (quotas.max_annotation_bytes)")
        if not self._annotations.try_take():
            raise self._exceeded("max_annotations_per_s", f"more than {self.config.max_annotations_per_s:g} "
                                 "annotations per second (quotas.max_annotations_per_s); try again shortly")
