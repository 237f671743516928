"""Writing ``masks.tif`` in a child process.

Building and appending a 1024² label page costs about 0.2 ms of CPU (it
was ~1 ms through tifffile's page writer, see `bigtiff_pages`), much of it
Python holding the GIL. In the service process that would slow the segmenter,
so the label stack is written by a child process instead; the recorder's writer
thread only sends it the mask crops (a few kB per frame over a local pipe).

Protocol over the pipe (parent → child): ``("open", path, level, layout)``, then
``("pages", [(frame_index, shape, [(particle, bbox, crop_shape, crop_bytes), ...]), ...])``
(pages are sent in batches, see `MaskWriterProcess.push`), ``("flush",)``, and either
``("close_file",)`` (the next ``open`` follows: a run with several series writes one file per series)
or ``("close",)``. The child answers ``("opened", None)`` or ``("error", message)`` once after each open,
``("flushed", pages_on_disk)`` after each flush, ``("file_closed", pages_on_disk, skipped)`` after
``close_file`` and ``("closed", pages_on_disk, skipped)`` at close.
If a write is refused (disk full) the child cuts the file back to its last complete page,
closes it, answers ``("failed", pages_on_disk, errno, message)`` and exits. If the parent
dies, the child sees end-of-file, closes the file cleanly and exits, so everything sent
so far is on disk. If the child dies, the parent sees end-of-file or a broken pipe
(`MaskWriterDied`) and `end_at_last_complete_page` makes the file whole again.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing as mp
import os
import sys
import threading
import time
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sam4em_live.io.label_stack_layout import page_origin
from sam4em_live.particles import ParticleMask

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from multiprocessing.connection import Connection

    from sam4em_live.io.label_stack_layout import LabelStackLayout
    from sam4em_live.io.mask_tiff import LabelStackWriter

log = logging.getLogger(__name__)

_START_TIMEOUT_S = 30.0
#: Pages held back for one message at most (the recorder pushes after every batch of results anyway).
MAX_PAGES_PER_MESSAGE = 32
#: How long `MaskWriterProcess.flush` waits for the child to say how many pages the file holds.
FLUSH_ANSWER_WAIT_S = 0.5
#: Niceness added to the mask-writer process (lower priority than the service).
MASK_WRITER_NICE = 5

#: One particle over the pipe: (particle id, bbox (x0, y0, x1, y1) in pixels, crop shape (rows, columns), crop bytes).
CropPayload = tuple[int, tuple[int, int, int, int], tuple[int, int], bytes]
#: One page over the pipe: (frame index, frame shape (rows, columns), the particles drawn on it).
PagePayload = tuple[int, tuple[int, int], list[CropPayload]]


class MaskWriterDied(OSError):
    """The mask-writer child is gone without a word (killed, crashed); the pages it had flushed are in the file."""


def _child_main(conn: Connection) -> None:
    from sam4em_live.io.mask_tiff import LabelStackWriter

    # Writing masks can lag a little (the pipe and the recorder's queue buffer it); segmentation cannot.
    # A lower CPU priority lets the service's worker win when the cores are contended.
    if hasattr(os, "nice"):
        os.nice(MASK_WRITER_NICE)

    while True:  # one file per "open"
        try:
            message = conn.recv()  # ("open", path, level, layout), or ("close",) with no file open
        except EOFError:
            return
        if message[0] != "open":
            return
        _, path, compression_level, layout = message
        try:
            writer = LabelStackWriter(Path(path), compression_level, layout)
        except Exception as exc:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
            return
        conn.send(("opened", None))
        if not _write_file(conn, writer):
            return


def _write_file(conn: Connection, writer: LabelStackWriter) -> bool:
    """Write the pages of one file until the parent closes it; True if another file follows."""
    skipped = 0
    try:
        while True:
            try:
                message = conn.recv()
            except EOFError:  # parent died: keep what we have
                message = ("close",)
            if message[0] == "pages":
                for frame_index, shape, crops in message[1]:
                    masks = [ParticleMask(pid, True, 1.0, bbox, np.frombuffer(data, bool).reshape(crop_shape))
                             for pid, bbox, crop_shape, data in crops]
                    skipped += writer.append_masks(tuple(shape), masks, frame_index)
            elif message[0] == "flush":
                writer.flush()
                conn.send(("flushed", writer.pages_on_disk))
            elif message[0] in ("close", "close_file"):
                break
        writer.close()
    except OSError as exc:  # a refused write: the file is cut back to its last complete page
        writer.close()
        with contextlib.suppress(OSError):
            conn.send(("failed", writer.pages_on_disk, exc.errno, exc.strerror or str(exc)))
        return False
    except BaseException:
        writer.close()
        raise
    answer = "file_closed" if message[0] == "close_file" else "closed"
    with contextlib.suppress(OSError):  # the parent is gone: nobody to tell
        conn.send((answer, writer.pages_on_disk, skipped))
    return answer == "file_closed"


_SPAWN_LOCK = threading.Lock()


@contextlib.contextmanager
def _main_module_not_inherited() -> Iterator[None]:
    """Start a spawn child that does not run the parent's ``__main__`` (a user's script) again.

    Under spawn, the child imports the parent's main script (as ``__mp_main__``) before running its
    target; a plain script without an ``if __name__ == "__main__":`` guard then starts its run again in
    the child, which dies at its own ``Process.start`` and ``masks.tif`` was lost (issue 20). The child's
    target lives in this module and needs nothing from ``__main__``, so while the child is started,
    ``sys.modules["__main__"]`` is a bare module: spawn's preparation data then names no main to import
    (as from an interactive interpreter). The swap lasts only for ``start()``, under a lock.
    """
    with _SPAWN_LOCK:
        main = sys.modules.get("__main__")
        sys.modules["__main__"] = types.ModuleType("__main__")
        try:
            yield
        finally:
            if main is not None:
                sys.modules["__main__"] = main


class MaskWriterProcess:
    """Append label pages to a file from a child process (same calls as `LabelStackWriter`).

    The child is started at construction (spawning takes ~0.3 s) so that
    `open`, called when the first frame arrives, costs only a round trip. It writes one file at a
    time: `close_file` ends one and keeps the child for the next `open`; `close` ends both.

    With a `LabelStackLayout` the file holds one page per frame index (`io.label_stack_layout`): `pages`
    then counts the pages the file will hold once the child has written what it was sent, empty
    pages for frames without a result included.
    """

    def __init__(self) -> None:
        context = mp.get_context("spawn")  # never fork a process that holds ZeroMQ and threads
        self._conn, child_conn = context.Pipe()
        self._process = context.Process(target=_child_main, args=(child_conn,), name="sam4em-masks", daemon=True)
        with _main_module_not_inherited():
            self._process.start()
        child_conn.close()
        self.path: Path | None = None
        self.pages = 0
        #: Pages the child reported in the file (its last "flushed" answer); a lower bound while it runs.
        self.pages_on_disk = 0
        self.skipped = 0
        #: Why the child stopped early (a refused write, or `MaskWriterDied`); raised again by `close`.
        self.error: OSError | None = None
        self._pending: list[PagePayload] = []
        self._flushes_unanswered = 0
        self._layout: LabelStackLayout | None = None
        self._pages_sent = 0  # `pages` as of the last push
        self._first_frame: int | None = None  # of the file's page 0 (layout only)

    @property
    def exitcode(self) -> int | None:
        return self._process.exitcode

    def open(self, path: Path, compression_level: int = 1, layout: LabelStackLayout | None = None) -> None:
        """Have the child create ``path`` (raises OSError; `MaskWriterDied` if the child is gone)."""
        self.path, self._layout, self._first_frame = path, layout, None
        self.pages = self.pages_on_disk = self.skipped = self._pages_sent = 0
        self.error = None
        try:
            self._conn.send(("open", str(path), compression_level, layout))
        except OSError as exc:
            raise MaskWriterDied(f"{path}: mask writer process is gone ({exc})") from None
        if not self._conn.poll(_START_TIMEOUT_S):
            self._process.kill()
            raise OSError(f"{path}: mask writer process did not start")
        try:
            kind, detail = self._conn.recv()
        except EOFError:
            raise MaskWriterDied(f"{path}: mask writer process died before opening the file") from None
        if kind != "opened":
            self._process.join(5)
            raise OSError(f"{path}: {detail}")

    def append_masks(self, shape: tuple[int, int], masks: Sequence[ParticleMask], frame_index: int) -> None:
        crops: list[CropPayload] = [
            (m.particle, m.bbox, (m.crop.shape[0], m.crop.shape[1]), np.ascontiguousarray(m.crop, bool).tobytes())
            for m in masks if m.present and m.crop is not None and m.bbox is not None]
        self._pending.append((int(frame_index), (shape[0], shape[1]), crops))
        self.pages = self._pages_through(int(frame_index))
        if len(self._pending) >= MAX_PAGES_PER_MESSAGE:
            self.push()

    def push(self) -> None:
        """Send the pages appended since the last push in one message (one pickle, one wake-up of the child).

        Raises `MaskWriterDied` if the child is gone, OSError (with its errno) if it reported a refused write.
        """
        self.poll_answers()
        if self._pending:
            pages, self._pending = self._pending, []
            self._send(("pages", pages))
            self._pages_sent = self.pages

    def _pages_through(self, frame_index: int) -> int:
        """Pages the file holds once the page of ``frame_index`` is written (one per frame with a layout)."""
        if self._layout is None:
            return self.pages + 1
        if self._first_frame is None:
            self._first_frame = page_origin(frame_index)
        return frame_index - self._first_frame + 1

    def discard_pending(self) -> None:
        """Forget the pages appended but not yet sent (a recording that stops)."""
        self.pages = self._pages_sent  # with a layout, also the empty pages the dropped ones would have brought
        self._pending = []

    def flush(self, fsync: bool = False) -> None:
        """Push, ask the child to write its pages out, and wait a little for its answer (`pages_on_disk`).

        The wait (at most `FLUSH_ANSWER_WAIT_S`, on the recorder's writer thread, about once a second)
        makes run.json's mask count current; a child too busy to answer in time is read next time.
        """
        self.push()
        self._send(("flush",))
        self._flushes_unanswered += 1
        deadline = time.monotonic() + FLUSH_ANSWER_WAIT_S
        while self._flushes_unanswered and self._conn.poll(max(0.0, deadline - time.monotonic())):
            self.poll_answers()

    def poll_answers(self) -> None:
        """Read the child's answers that are waiting, without blocking (raises as `push`)."""
        try:
            while self._conn.poll(0):
                self._answer(self._conn.recv())
        except (EOFError, ConnectionResetError):
            raise self._died() from None

    def _answer(self, answer: tuple[Any, ...]) -> None:
        if answer[0] == "flushed":
            self.pages_on_disk = int(answer[1])
            self._flushes_unanswered = max(0, self._flushes_unanswered - 1)
        elif answer[0] == "failed":
            _, self.pages_on_disk, errno, message = answer
            self._conn.close()
            self._process.join(10)
            self.error = OSError(errno, message, str(self.path))
            raise self.error

    def _send(self, message: tuple[Any, ...]) -> None:
        try:
            self._conn.send(message)
        except OSError:  # BrokenPipeError: the child is gone; an answer it left may say why
            self.poll_answers()
            raise self._died() from None

    def _died(self) -> MaskWriterDied:
        self._conn.close()
        self._process.join(10)
        self.error = MaskWriterDied(f"{self.path}: mask writer process died (exit code {self._process.exitcode})")
        return self.error

    def close_file(self) -> None:
        """Finish the current file and keep the child for the next `open` (raises as `close`)."""
        if self._conn.closed:
            if self.error is not None:
                raise self.error
            return
        if self.path is None:
            return
        try:
            self.push()
            self._conn.send(("close_file",))
            while self._conn.poll(_START_TIMEOUT_S):
                answer = self._conn.recv()
                if answer[0] == "file_closed":
                    _, self.pages_on_disk, self.skipped = answer
                    break
                self._answer(answer)
            else:
                raise OSError(f"{self.path}: the mask writer did not close the file")
        except (BrokenPipeError, EOFError, ConnectionResetError):
            raise self._died() from None
        if self.pages_on_disk != self.pages:
            raise OSError(f"{self.path}: child wrote {self.pages_on_disk} pages of {self.pages}")
        self.path = None

    def close(self) -> None:
        """Finish the file and wait for the child; raises OSError if it failed (again at every call)."""
        if self._conn.closed:
            if self.error is not None:
                raise self.error
            return
        if self.path is None:  # never opened: just let the child go
            self._conn.close()
            self._process.join(10)
            return
        try:
            self.push()
            self._conn.send(("close",))
            while self._conn.poll(_START_TIMEOUT_S):
                answer = self._conn.recv()
                if answer[0] == "closed":
                    _, self.pages_on_disk, self.skipped = answer
                    break
                self._answer(answer)
            if self.pages_on_disk != self.pages:
                raise OSError(f"{self.path}: child wrote {self.pages_on_disk} pages of {self.pages}")
        except (BrokenPipeError, EOFError, ConnectionResetError):
            raise self._died() from None
        finally:
            self._conn.close()
            self._process.join(10)

    def __del__(self) -> None:  # pragma: no cover - safety net only
        process: Any = getattr(self, "_process", None)
        if process is not None and process.is_alive():
            process.kill()
