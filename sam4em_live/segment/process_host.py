"""Running a segmentation backend in its own process, fed through shared memory.

Why: in the service process the segmenter shares the GIL with the ingest,
publisher and recorder threads and the rest of the per-frame pipeline runs
after it on the same thread. In a child process it has an interpreter of its
own, and while it segments frame N+1 the service measures, records and
publishes frame N, so the two halves of the pipeline use both cores.

Frames travel through a ring of ``depth`` slots in a memory-mapped file under
``/dev/shm`` (unlinked as soon as the child has mapped it): one copy per
frame, no pickling of pixels. Everything else (frame metadata, edits, masks)
goes over a pipe. Protocol, parent → child: ``("ring", path, slots,
slot_bytes)``, ``("frame", slot, series_id, index, timestamp_s, shape, dtype,
calibration, edits, backlog)``, ``("close",)``; child → parent: ``("ready",
describe)`` or ``("failed", message)`` once at start, then per frame
``("result", index, masks, rejected, error, segment_ms, particles)``.

`SegmenterProcess` is the child-process `SegmentStage`. The child applies each
frame's edits with `track_with_retries`, as `InProcessSegmentStage` does: an
edit the backend rejects is reported with the result and the frame is
segmented without it.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import multiprocessing as mp
import os
import tempfile
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from sam4em_live.frames import Calibration, Frame
from sam4em_live.segment.base import BacklogAware, RejectedEdit, Segmenter, track_with_retries
from sam4em_live.segment.stage import SegmentationFailed, SegmentOutcome, SegmentStageError

if TYPE_CHECKING:
    from collections.abc import Sequence
    from multiprocessing.connection import Connection

    from sam4em_live.particles import ParticleEdit, ParticleMask
    from sam4em_live.segment.base import SeededEdits

log = logging.getLogger(__name__)

#: Seconds allowed for the child to import its backend and build the model (sam2 on CPU is slow).
START_TIMEOUT_S = 300.0
_SHM_DIR = "/dev/shm" if os.path.isdir("/dev/shm") else None


class SegmenterProcessError(SegmentStageError):
    """The segmentation process could not start, or died."""


def _child_main(conn: Connection, backend: str, options: dict[str, Any]) -> None:
    from sam4em_live.segment.blas_threads import limit_blas_threads
    from sam4em_live.segment.registry import create_segmenter

    limit_blas_threads(1)  # the child is one segmentation loop: BLAS on its own thread (`blas_threads`)
    try:
        segmenter = create_segmenter(backend, options)
    except Exception as exc:
        try:
            conn.send(("failed", exc))  # the original exception (bad options, missing checkpoint...)
        except Exception:
            conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", segmenter.describe()))
    ring: np.ndarray | None = None
    try:
        while True:
            try:
                message = conn.recv()
            except EOFError:  # parent died
                break
            if message[0] == "ring":
                _, path, slots, slot_bytes = message
                ring = np.memmap(path, dtype=np.uint8, mode="r", shape=(slots, slot_bytes))
                conn.send(("ring_ok",))
            elif message[0] == "frame" and ring is not None:
                conn.send(_segment_one(segmenter, ring, message))
            elif message[0] == "close":
                break
    finally:
        segmenter.close()


def _segment_one(segmenter: Segmenter, ring: np.ndarray, message: tuple) -> tuple:
    _, slot, series_id, index, timestamp_s, shape, dtype, calibration, edits, backlog = message
    count = int(np.prod(shape)) * np.dtype(dtype).itemsize
    pixels = ring[slot, :count].view(dtype).reshape(shape)
    frame = Frame(series_id, index, timestamp_s, pixels, Calibration(**calibration))
    if backlog is not None and isinstance(segmenter, BacklogAware):
        segmenter.note_backlog(backlog)
    start = time.perf_counter()
    masks: list[ParticleMask] = []
    rejected: list[RejectedEdit] = []
    error = None
    try:
        masks, rejected = track_with_retries(segmenter, frame, edits)
    except Exception as exc:
        error = f"{type(exc).__name__}: {exc}"
    elapsed_ms = (time.perf_counter() - start) * 1e3
    return ("result", index, masks, rejected, error, elapsed_ms, segmenter.particles())


class SegmenterProcess:
    """The `SegmentStage` whose backend (``backend``, ``options`` as in ``[segmenter]``) runs in a child process.

    ``submit`` hands a frame over and returns at once; ``collect`` returns the
    oldest submitted frame's outcome. At most ``depth`` frames are in flight.
    Used by the service's worker thread only. The constructor returns once the
    child has built the backend (or raises the backend's own error, or
    `SegmenterProcessError`).
    """

    def __init__(self, backend: str, options: dict[str, Any] | None = None, depth: int = 2,
                 start_timeout_s: float = START_TIMEOUT_S) -> None:
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self._depth = depth
        ctx = mp.get_context("spawn")  # never fork a process that runs ZeroMQ and threads
        self._conn, child_conn = ctx.Pipe()
        self._process = ctx.Process(target=_child_main, args=(child_conn, backend, dict(options or {})),
                                    name="sam4em-segmenter", daemon=True)
        self._process.start()
        child_conn.close()
        self._pending: collections.deque[tuple[Frame, int]] = collections.deque()
        self._free_slots: list[int] = []
        self._slot_bytes = 0
        self._ring: np.ndarray | None = None
        self._particles: list[int] = []
        self._backlog: int | None = None  # goes to the child with the next frame
        self._closed = False
        reply = self._receive(start_timeout_s, "start")
        if reply[0] != "ready":
            self._process.join(5.0)
            self._conn.close()
            if isinstance(reply[1], Exception):
                raise reply[1]
            raise SegmenterProcessError(f"segmenter {backend!r} failed to start: {reply[1]}")
        self._describe: dict[str, Any] = dict(reply[1], process=True)

    # ---------------------------------------------------------------- SegmentStage

    def describe(self) -> dict[str, Any]:
        return dict(self._describe)

    def particles(self) -> list[int]:
        return list(self._particles)

    @property
    def depth(self) -> int:
        return self._depth

    @property
    def in_flight(self) -> int:
        return len(self._pending)

    def note_backlog(self, frames_waiting: int) -> None:
        self._backlog = frames_waiting

    def fits(self, frame: Frame) -> bool:
        """Whether ``frame`` can be submitted now: a free slot, and room in the ring or nothing in flight.

        A larger frame needs a new ring, made only once every frame in flight is collected.
        """
        if len(self._pending) >= self._depth:
            return False
        return not self._pending or (self._ring is not None and frame.pixels.nbytes <= self._slot_bytes)

    @property
    def seeds_aside(self) -> None:
        """None: the backend lives in the child, out of a helper thread's reach (prompts seed on their frame)."""
        return None

    def submit(self, frame: Frame, edits: Sequence[ParticleEdit] = (), seeded: SeededEdits | None = None) -> None:
        """Copy the frame into a free slot and start it (raises if ``depth`` frames are in flight)."""
        if seeded is not None:
            raise ValueError("segmenter process: prompts are seeded in the child, on the frame they land on")
        if len(self._pending) >= self._depth:
            raise RuntimeError("segmenter process: too many frames in flight; collect first")
        pixels = np.ascontiguousarray(frame.pixels)
        if self._ring is None or pixels.nbytes > self._slot_bytes:
            self._new_ring(pixels.nbytes)
        slot = self._free_slots.pop()
        assert self._ring is not None
        np.copyto(self._ring[slot, : pixels.nbytes], pixels.reshape(-1).view(np.uint8))
        calibration = frame.calibration.as_dict()
        self._send(("frame", slot, frame.series_id, frame.index, frame.timestamp_s, pixels.shape,
                    pixels.dtype.str, calibration, list(edits), self._backlog))
        self._backlog = None
        self._pending.append((frame, slot))

    def collect(self, timeout_s: float | None = None) -> SegmentOutcome | None:
        """Outcome of the oldest frame in flight; None if it is not ready within ``timeout_s``.

        Raises `SegmentationFailed` if the backend failed on that frame, `SegmenterProcessError` if the child died.
        """
        if not self._pending:
            raise RuntimeError("segmenter process: nothing in flight")
        if timeout_s is not None and not self._conn.poll(timeout_s):
            if not self._process.is_alive():
                raise SegmenterProcessError(f"segmentation process died (exit code {self._process.exitcode})")
            return None
        _, index, masks, rejected, error, segment_ms, particles = self._receive(None, "frame")
        frame, slot = self._pending.popleft()
        self._free_slots.append(slot)
        if index != frame.index:
            raise SegmenterProcessError(f"segmentation process answered frame {index}, expected {frame.index}")
        self._particles = list(particles)
        if error is not None:
            raise SegmentationFailed(index, error)
        return SegmentOutcome(frame, tuple(masks), tuple(rejected), segment_ms)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with contextlib.suppress(OSError, ValueError):
            self._conn.send(("close",))
        self._process.join(10.0)
        if self._process.is_alive():
            log.warning("segmentation process did not exit; terminating it")
            self._process.terminate()
            self._process.join(5.0)
        self._conn.close()
        self._ring = None

    # ---------------------------------------------------------------- internals

    def _new_ring(self, frame_bytes: int) -> None:
        """A fresh ring sized for ``frame_bytes`` (frames in flight are collected first by the caller)."""
        if self._pending:
            raise RuntimeError("segmenter process: frame size changed with frames in flight; collect first")
        fd, path = tempfile.mkstemp(prefix="sam4em-frames-", dir=_SHM_DIR)
        try:
            os.ftruncate(fd, self._depth * frame_bytes)
            self._ring = np.memmap(path, dtype=np.uint8, mode="r+", shape=(self._depth, frame_bytes))
            self._send(("ring", path, self._depth, frame_bytes))
            self._receive(30.0, "ring")
        finally:
            os.close(fd)
            os.unlink(path)  # both sides have it mapped; nothing is left behind if either dies
        self._slot_bytes = frame_bytes
        self._free_slots = list(range(self._depth))

    def _send(self, message: tuple) -> None:
        try:
            self._conn.send(message)
        except (OSError, ValueError) as exc:
            raise SegmenterProcessError(f"segmentation process is gone ({exc})") from exc

    def _receive(self, timeout_s: float | None, waiting_for: str) -> tuple:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while not self._conn.poll(0.1):
            if not self._process.is_alive():
                raise SegmenterProcessError(
                    f"segmentation process died while waiting for {waiting_for} (exit code {self._process.exitcode})")
            if deadline is not None and time.monotonic() > deadline:
                raise SegmenterProcessError(f"segmentation process: no {waiting_for} reply in {timeout_s:.0f} s")
        try:
            return self._conn.recv()
        except EOFError as exc:
            raise SegmenterProcessError(f"segmentation process closed its pipe while waiting for {waiting_for}") from exc
