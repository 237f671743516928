"""Who draws and compresses the ``masks.tif`` pages: a child process (live) or the recorder's own thread (batch).

``process`` (`sinks.mask_process.MaskWriterProcess`, the default): a live service keeps the page work (~0.2 ms
of mostly GIL-holding Python a 1024² page) off the process whose threads segment the stream.

``thread`` (`MaskWriterInline`): the recorder's writer thread writes the pages itself. For a batch worker, whose
one recording should stay on one core (docs/batch.md): no child to spawn and import numpy in (~0.35 s of CPU
a recording), no crops pickled through a pipe, and no second process competing with the other workers. The
file is the same: the same `LabelStackWriter`, fed the same pages in the same order.

Both follow the `MaskWriter` protocol that `files.MaskPagesWriter` drives, with the same failure contract:
a refused write (disk full) cuts the file back to its last complete page and raises the OSError (again at
every later call); any other failure of the page writer stops ``masks.tif`` only, as a dead child does
(`MaskWriterDied`).
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Literal, Protocol

from sam4em_live.io.label_stack_layout import page_origin
from sam4em_live.sinks.mask_process import MAX_PAGES_PER_MESSAGE, MaskWriterDied, MaskWriterProcess

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from sam4em_live.io.label_stack_layout import LabelStackLayout
    from sam4em_live.io.mask_tiff import LabelStackWriter
    from sam4em_live.particles import ParticleMask

    #: A page waiting for `MaskWriterInline.push`: (frame shape (rows, columns), its masks, frame index).
    PendingPage = tuple[tuple[int, int], Sequence[ParticleMask], int]

#: ``recorder.mask_writer``: where the masks.tif pages are drawn and compressed (module docstring).
MaskWriterKind = Literal["process", "thread"]


class MaskWriter(Protocol):
    """Writes the label pages of one ``masks.tif`` at a time (one file per `open`, closed by `close_file`/`close`).

    Called from the recorder's writer thread only. ``pages``: pages the file holds once what was appended is
    written (empty pages for frames between included); ``pages_on_disk``: pages known to be in the file;
    ``skipped``: particles not drawn (ids above 65535), known after a close. `open`, `push`, `flush`,
    `close_file` and `close` raise OSError for a refused write and `MaskWriterDied` when masks.tif cannot go on.
    """

    pages: int
    pages_on_disk: int
    skipped: int

    def open(self, path: Path, compression_level: int = 1, layout: LabelStackLayout | None = None) -> None: ...

    def append_masks(self, shape: tuple[int, int], masks: Sequence[ParticleMask], frame_index: int) -> None: ...

    def push(self) -> None: ...

    def discard_pending(self) -> None: ...

    def flush(self, fsync: bool = False) -> None: ...

    def close_file(self) -> None: ...

    def close(self) -> None: ...


def make_mask_writer(kind: MaskWriterKind) -> MaskWriter:
    """The writer of ``recorder.mask_writer``; a child process is started now (it takes ~0.3 s)."""
    return MaskWriterProcess() if kind == "process" else MaskWriterInline()


class MaskWriterInline:
    """`MaskWriter` on the calling thread: the pages the child would write, written here (module docstring).

    Appended pages wait until `push` (the recorder pushes after each batch of results, as it sends the
    child one message), so `discard_pending` drops exactly what a child would not have received.
    """

    def __init__(self) -> None:
        self.path: Path | None = None
        self.pages = 0
        self.pages_on_disk = 0
        self.skipped = 0
        #: Why masks.tif stopped early; raised again by every later call.
        self.error: OSError | None = None
        self._writer: LabelStackWriter | None = None
        self._pending: list[PendingPage] = []
        self._pages_pushed = 0
        self._layout: LabelStackLayout | None = None
        self._first_frame: int | None = None
        self._closed = False

    def open(self, path: Path, compression_level: int = 1, layout: LabelStackLayout | None = None) -> None:
        """Create ``path`` (raises OSError as `LabelStackWriter` does)."""
        from sam4em_live.io.mask_tiff import LabelStackWriter

        self._check_usable()
        self.path, self._layout, self._first_frame = path, layout, None
        self.pages = self.pages_on_disk = self.skipped = self._pages_pushed = 0
        self._writer = LabelStackWriter(path, compression_level, layout)

    def append_masks(self, shape: tuple[int, int], masks: Sequence[ParticleMask], frame_index: int) -> None:
        self._pending.append(((shape[0], shape[1]), masks, int(frame_index)))
        if self._layout is None:
            self.pages += 1
        else:
            if self._first_frame is None:
                self._first_frame = page_origin(int(frame_index))
            self.pages = int(frame_index) - self._first_frame + 1
        if len(self._pending) >= MAX_PAGES_PER_MESSAGE:  # as the child's messages: a bounded backlog
            self.push()

    def push(self) -> None:
        """Draw and compress the pages appended since the last push (the child's "pages" message)."""
        self._check_usable()
        pending, self._pending = self._pending, []
        writer = self._writer
        if writer is None or not pending:
            return
        self._guarded(writer, lambda: self._write(writer, pending))
        self._pages_pushed = self.pages

    def _write(self, writer: LabelStackWriter, pending: list[PendingPage]) -> None:
        for shape, masks, frame_index in pending:
            self.skipped += writer.append_masks(shape, masks, frame_index)

    def discard_pending(self) -> None:
        """Forget the pages appended but not yet pushed (a recording that stops)."""
        self.pages = self._pages_pushed
        self._pending = []

    def flush(self, fsync: bool = False) -> None:
        """Push, then hand the pages to the OS: `pages_on_disk` is then exact."""
        self.push()
        writer = self._writer
        if writer is not None:
            self._guarded(writer, lambda: writer.flush(fsync))
            self.pages_on_disk = writer.pages_on_disk

    def close_file(self) -> None:
        """Finish the current file; the next `open` may follow."""
        self._finish_file()

    def close(self) -> None:
        """Finish the file; raises its error again if it failed (at every call)."""
        if self._closed:
            if self.error is not None:
                raise self.error
            return
        try:
            self._finish_file()
        finally:
            self._closed = True

    def _finish_file(self) -> None:
        self.push()
        writer = self._writer
        if writer is None:
            return
        self._guarded(writer, writer.close)
        self._writer, self.path = None, None
        self.pages_on_disk = writer.pages_on_disk
        if self.pages_on_disk != self.pages:
            raise OSError(f"{writer.path}: wrote {self.pages_on_disk} pages of {self.pages}")

    def _check_usable(self) -> None:
        if self.error is not None:
            raise self.error
        if self._closed:
            raise OSError("mask writer already closed")

    def _guarded(self, writer: LabelStackWriter, step: Callable[[], None]) -> None:
        """Run a step of ``writer``; a failure ends masks.tif as the child's failure would (module docstring)."""
        try:
            step()
        except OSError as exc:  # a refused write: the file ends at its last complete page
            raise self._fail(writer, OSError(exc.errno, exc.strerror or str(exc), str(writer.path))) from None
        except Exception as exc:  # the child would have died of it: masks.tif stops, the run goes on
            raise self._fail(writer, MaskWriterDied(f"{writer.path}: mask writer failed "
                                                    f"({type(exc).__name__}: {exc})")) from exc

    def _fail(self, writer: LabelStackWriter, error: OSError) -> OSError:
        # The same refusal again at close changes nothing: the file is cut back to its last complete page.
        with contextlib.suppress(OSError):
            writer.close()
        self.pages_on_disk = writer.pages_on_disk
        self.error, self._writer, self._pending = error, None, []
        return error
