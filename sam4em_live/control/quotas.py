"""Quotas on what clients may ask of a running service: rates, box sizes, particles, pending edits.

The control channel and hooks reach the service through `ServiceControl`; the
service checks every edit and annotation here *before* any work is queued, so
one client cannot make the worker seed a frame-sized box, track hundreds of
particles or write notes without bound (issue 18). `ServiceQuotas` holds the
limits of ``[quotas]`` (`sam4em_live.config.QuotaConfig`) and counts what it
refuses, by quota name.

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


class ServiceQuotas:
    """The ``[quotas]`` limits of one service and the count of what they refused (thread-safe).

    `admit_edit` runs on the caller's thread (control channel, hook) when an
    edit is submitted; `bound_due` runs on the worker thread when edits reach
    their frame, against that frame's shape and the particles really tracked
    (the authoritative check: at submission the frame shape may not be known yet).
    """

    def __init__(self, config: QuotaConfig) -> None:
        self.config = config
        self._edits = RateLimit(config.max_edits_per_s)
        self._annotations = RateLimit(config.max_annotations_per_s)
        self._lock = threading.Lock()
        self._refused: dict[str, int] = {}
        # The worker's measured load (busy fraction of the last status interval, particles tracked then) and
        # the new particles admitted since: None until the service reports one (offline runs never do).
        self._load: tuple[float, int] | None = None
        self._admitted_since_load = 0

    @property
    def refused(self) -> dict[str, int]:
        """Refusals so far by quota name (a copy)."""
        with self._lock:
            return dict(self._refused)

    def note_worker_load(self, busy_fraction: float | None, particles: int) -> None:
        """The worker's busy fraction over the last status interval with ``particles`` tracked (None: unknown).

        The service calls this once per status interval while it streams live; `admit_edit` then refuses a new
        particle whose share of that load would take the worker past ``max_worker_load``.
        """
        with self._lock:
            self._load = None if busy_fraction is None else (max(float(busy_fraction), 0.0), particles)
            self._admitted_since_load = 0

    def _over_worker_load(self, edit: ParticleEdit, tracked: Collection[int]) -> str | None:
        """Why a new particle would overload the worker (None: it would not, or the load is unknown).

        Refused while the measured load is over the limit, or while the particles admitted since that
        measurement, each charged an equal share of it (the frame's fixed costs included, so the charge errs
        high), already take it there. The candidate itself is not charged: with one or two particles the
        fixed costs are most of the load, and a share would refuse a second particle on an idle worker.
        """
        limit = self.config.max_worker_load
        if limit >= 1.0 or not isinstance(edit, Prompt) or edit.particle in tracked:
            return None
        with self._lock:
            load, admitted = self._load, self._admitted_since_load
        if load is None or load[1] == 0:
            return None
        busy, particles = load
        projected = busy * (particles + admitted) / particles
        if projected < limit and admitted == 0:
            return None
        if projected < limit:  # one new particle per measurement: its real cost is seen before the next
            return (f"a new particle was admitted since the worker's load was last measured ({busy:.0%} busy "
                    f"with {particles} particles); the next is admitted once its cost is measured (within "
                    "one status interval): try again shortly")
        since = f" and {admitted} added since (~{projected:.0%})" if admitted else ""
        return (f"the worker is busy {busy:.0%} of the time with {particles} particles{since}, at or over "
                f"quotas.max_worker_load = {limit:g}: more would cost frames; remove a particle first, "
                "or lower the camera rate")

    def count(self, quota: str) -> None:
        with self._lock:
            self._refused[quota] = self._refused.get(quota, 0) + 1

    def _exceeded(self, quota: str, message: str) -> QuotaExceeded:
        self.count(quota)
        return QuotaExceeded(quota, message)

    def admit_edit(self, edit: ParticleEdit, shape: tuple[int, int] | None, tracked: Collection[int],
                   pending: int) -> ParticleEdit:
        """Check one submitted edit; return it (its box clipped) or raise `QuotaExceeded` / `PromptError`.

        ``shape`` is the current series' frame shape (None before the first
        frame: the worker checks the edit when it reaches its frame);
        ``tracked`` the particles tracked now; ``pending`` the edits waiting.
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
        overload = self._over_worker_load(edit, tracked)
        if overload is not None:
            raise self._exceeded("max_worker_load", overload)
        if shape is not None:
            try:
                edit = bound_prompt(edit, shape, limits.max_box_edge_px)
            except PromptError:
                self.count("prompt_bounds")
                raise
        if isinstance(edit, Prompt) and edit.particle not in tracked:
            with self._lock:
                self._admitted_since_load += 1
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
