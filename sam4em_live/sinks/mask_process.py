"""Writing ``masks.tif`` in a child process.

Building and appending a 1024² label page costs about 0.2 ms of CPU (it
was ~1 ms through tifffile's page writer, see `bigtiff_pages`), much of it
Python holding the GIL. In the service process that would slow the segmenter,
so the label stack is written by a child process instead; the recorder's writer
thread only sends it the mask crops (a few kB per frame over a local pipe).

Protocol over the pipe (parent → child): ``("pages", [(frame_index, shape,
[(particle, bbox, crop_shape, crop_bytes), ...]), ...])`` (pages are sent in
batches, see `MaskWriterProcess.push`), ``("flush",)``, ``("close",)``. The child answers ``("opened", None)`` or ``("error", message)``
once after start, and ``("closed", pages, skipped)`` at close. If the parent
dies, the child sees end-of-file, closes the file cleanly and exits, so
everything sent so far is on disk.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sam4em_live.particles import ParticleMask

if TYPE_CHECKING:
    from collections.abc import Sequence
    from multiprocessing.connection import Connection

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 30.0
#: Pages held back for one message at most (the recorder pushes after every batch of results anyway).
MAX_PAGES_PER_MESSAGE = 32
#: Niceness added to the mask-writer process (lower priority than the service).
MASK_WRITER_NICE = 5

#: One particle over the pipe: (particle id, bbox (x0, y0, x1, y1) in pixels, crop shape (rows, columns), crop bytes).
CropPayload = tuple[int, tuple[int, int, int, int], tuple[int, int], bytes]
#: One page over the pipe: (frame index, frame shape (rows, columns), the particles drawn on it).
PagePayload = tuple[int, tuple[int, int], list[CropPayload]]


def _child_main(conn: Connection) -> None:
    from sam4em_live.io.mask_tiff import LabelStackWriter

    # Writing masks can lag a little (the pipe and the recorder's queue buffer it); segmentation cannot.
    # A lower CPU priority lets the service's worker win when the cores are contended.
    if hasattr(os, "nice"):
        os.nice(MASK_WRITER_NICE)

    try:
        _, path, compression_level = conn.recv()  # ("open", path, level)
    except EOFError:
        return
    try:
        writer = LabelStackWriter(Path(path), compression_level)
    except Exception as exc:
        conn.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("opened", None))
    skipped = 0
    try:
        while True:
            try:
                message = conn.recv()
            except EOFError:  # parent died: keep what we have
                break
            if message[0] == "pages":
                for frame_index, shape, crops in message[1]:
                    masks = [ParticleMask(pid, True, 1.0, bbox, np.frombuffer(data, bool).reshape(crop_shape))
                             for pid, bbox, crop_shape, data in crops]
                    skipped += writer.append_masks(tuple(shape), masks, frame_index)
            elif message[0] == "flush":
                writer.flush()
            elif message[0] == "close":
                break
    finally:
        writer.close()
    with contextlib.suppress(OSError):  # the parent is gone: nobody to tell
        conn.send(("closed", writer.pages, skipped))


class MaskWriterProcess:
    """Append label pages to a file from a child process (same calls as `LabelStackWriter`).

    The child is started at construction (spawning takes ~0.3 s) so that
    `open`, called when the first frame arrives, costs only a round trip.
    """

    def __init__(self) -> None:
        context = mp.get_context("spawn")  # never fork a process that holds ZeroMQ and threads
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(target=_child_main, args=(child_conn,), name="sam4em-masks", daemon=True)
        self._process.start()
        child_conn.close()
        self.path: Path | None = None
        self.pages = 0
        self.skipped = 0
        self._pending: list[PagePayload] = []

    def open(self, path: Path, compression_level: int = 1) -> None:
        self.path = path
        self._conn.send(("open", str(path), compression_level))
        if not self._conn.poll(_START_TIMEOUT_S):
            self._process.kill()
            raise OSError(f"{path}: mask writer process did not start")
        kind, detail = self._conn.recv()
        if kind != "opened":
            self._process.join(5)
            raise OSError(f"{path}: {detail}")

    def append_masks(self, shape: tuple[int, int], masks: Sequence[ParticleMask], frame_index: int) -> None:
        crops: list[CropPayload] = [
            (m.particle, m.bbox, (m.crop.shape[0], m.crop.shape[1]), np.ascontiguousarray(m.crop, bool).tobytes())
            for m in masks if m.present and m.crop is not None and m.bbox is not None]
        self._pending.append((int(frame_index), (shape[0], shape[1]), crops))
        self.pages += 1
        if len(self._pending) >= MAX_PAGES_PER_MESSAGE:
            self.push()

    def push(self) -> None:
        """Send the pages appended since the last push in one message (one pickle, one wake-up of the child)."""
        if self._pending:
            pages, self._pending = self._pending, []
            self._conn.send(("pages", pages))

    def flush(self, fsync: bool = False) -> None:
        self.push()
        self._conn.send(("flush",))

    def close(self) -> None:
        """Finish the file and wait for the child; raises OSError if it failed. Idempotent."""
        if self._conn.closed:
            return
        if self.path is None:  # never opened: just let the child go
            self._conn.close()
            self._process.join(10)
            return
        try:
            self.push()
            self._conn.send(("close",))
            if self._conn.poll(_START_TIMEOUT_S):
                _, pages, self.skipped = self._conn.recv()
                if pages != self.pages:
                    raise OSError(f"{self.path}: child wrote {pages} pages of {self.pages}")
        except (BrokenPipeError, EOFError) as exc:
            raise OSError(f"{self.path}: mask writer process died ({exc})") from None
        finally:
            self._conn.close()
            self._process.join(10)

    def __del__(self) -> None:  # pragma: no cover - safety net only
        process: Any = getattr(self, "_process", None)
        if process is not None and process.is_alive():
            process.kill()
