"""`Run`: one tracked run as Python objects, read lazily from its run folder.

Everything a run produced is in its folder (docs/recording.md): ``trajectories.csv``, ``masks.tif``,
``events.jsonl``, ``edits.jsonl``, ``run.json``. `Run` is a thin view over that folder, so a run made by
`sam4em_live.track`, by ``sam4em-live track`` or recorded live by ``sam4em-live serve`` reads the same:
``Run.open(folder)``. Tables are read on first use and kept; label masks are read page by page
(`MaskStack`), so a long 1024² run never sits in memory whole.

A run tracked with ``out=None`` lives in a temporary folder that is removed when the `Run` is closed
(``run.close()``, a ``with`` block, or garbage collection); ``run.save(path)`` keeps a copy first.
"""

from __future__ import annotations

import json
import shutil
import weakref
from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, overload

import numpy as np
import pandas as pd

from sam4em_live.io.run_folder import RunFolder

if TYPE_CHECKING:
    from types import TracebackType

    import tifffile

    from sam4em_live.frames import Calibration

#: Label pages `MaskStack` keeps decoded (1024² uint16 pages: 2 MiB each, 32 MiB at most).
MASK_CACHE_PAGES = 16


class MaskStack(Sequence[np.ndarray]):
    """The run's label masks, one (rows, columns) uint16 page per frame, read from ``masks.tif`` on demand.

    ``masks[k]`` is page ``k`` (value = particle id, 0 = background); ``masks.frames[k]`` is its frame
    index, and ``masks.at_frame(f)`` the page of frame ``f``. The recorder writes one page per frame
    index from the run's first frame, so for a run from frame 0 page ``k`` is frame ``k``. At most
    `MASK_CACHE_PAGES` decoded pages are kept. ``np.asarray(masks)`` reads them all (mind the memory).
    """

    def __init__(self, path: Path, frames: Sequence[int], page_shape: tuple[int, int]) -> None:
        self.path = path
        self.frames: tuple[int, ...] = tuple(frames)
        self.page_shape = page_shape
        self._page_of = {frame: page for page, frame in enumerate(self.frames)}
        self._tiff: tifffile.TiffFile | None = None
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._closer: weakref.finalize[Any, Any] | None = None

    def __len__(self) -> int:
        return len(self.frames)

    @overload
    def __getitem__(self, index: int) -> np.ndarray: ...

    @overload
    def __getitem__(self, index: slice) -> list[np.ndarray]: ...

    def __getitem__(self, index: int | slice) -> np.ndarray | list[np.ndarray]:
        if isinstance(index, slice):
            return [self._page(k) for k in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"page {index} of {len(self)}")
        return self._page(index)

    def at_frame(self, frame: int) -> np.ndarray:
        """The label page of frame index ``frame`` (KeyError if the run has no page for it)."""
        if frame not in self._page_of:
            raise KeyError(f"no mask page for frame {frame} (pages hold frames "
                           f"{self.frames[0] if self.frames else '-'}..{self.frames[-1] if self.frames else '-'})")
        return self._page(self._page_of[frame])

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        stack = np.stack([self._page(k) for k in range(len(self))]) if len(self) else \
            np.zeros((0, *self.page_shape), np.uint16)
        return stack.astype(dtype) if dtype is not None else stack

    def _page(self, k: int) -> np.ndarray:
        page = self._cache.get(k)
        if page is not None:
            self._cache.move_to_end(k)
            return page
        if self._tiff is None:
            import tifffile

            self._tiff = tifffile.TiffFile(self.path)
            # Closed with the stack when nobody calls close() (a notebook rarely does): no leaked handle.
            self._closer = weakref.finalize(self, self._tiff.close)
        page = self._tiff.pages[k].asarray()
        page.flags.writeable = False  # shared with the cache: a caller's edit must not change the next read
        self._cache[k] = page
        if len(self._cache) > MASK_CACHE_PAGES:
            self._cache.popitem(last=False)
        return page

    def close(self) -> None:
        """Close the file (reopened on the next read)."""
        if self._closer is not None:
            self._closer()
            self._tiff = None
        self._cache.clear()

    def __repr__(self) -> str:
        return f"MaskStack({len(self)} pages of {self.page_shape[0]}x{self.page_shape[1]} from {self.path})"


class Run:
    """A tracked run: trajectories, masks, calibration, events and edits of one run folder.

    Build it with `sam4em_live.track` or `Run.open`. Attributes:

    - ``trajectories``: pandas DataFrame in trackpy's conventions (``frame``, ``particle``, ``x``, ``y`` in
      px, x = column, y = row) plus ours (``angle`` in degrees, ``area`` px², axes, ``score``; ``t_s``,
      ``x_nm``, ``y_nm`` when the calibration knows them; ``series`` for a run of several series).
    - ``masks``: `MaskStack` (None when the run wrote no masks).
    - ``calibration``: `sam4em_live.frames.Calibration` (pixel size nm, fps; None fields unknown).
    - ``events``, ``edits``: DataFrames of ``events.jsonl`` and ``edits.jsonl`` (one row per line).
    - ``status`` (``complete``, ``incomplete``, ``aborted``...) and ``reason`` from run.json, ``manifest``.
    - ``folder``: the run folder (a temporary one for ``track(..., out=None)``, removed by `close`).
    """

    def __init__(self, folder: str | Path, *, remove_on_close: Path | None = None) -> None:
        self.folder = Path(folder)
        self._run_folder = RunFolder.open(self.folder)
        self._trajectories: pd.DataFrame | None = None
        self._masks: MaskStack | None = None
        self._masks_read = False
        #: Whether the run folder is temporary (``track(..., out=None)``): removed by `close`.
        self.temporary = remove_on_close is not None
        # A temporary folder goes with the object, also when the user never calls close().
        self._remove = weakref.finalize(self, shutil.rmtree, remove_on_close, True) if remove_on_close else None

    @classmethod
    def open(cls, folder: str | Path) -> Run:
        """The run recorded in ``folder`` (by `sam4em_live.track`, ``sam4em-live track`` or ``serve``)."""
        return cls(folder)

    # ------------------------------------------------------------- run.json

    @property
    def manifest(self) -> Mapping[str, Any]:
        """The parsed run.json ({} when absent or unreadable)."""
        return self._run_folder.manifest

    @property
    def calibration(self) -> Calibration:
        return self._run_folder.calibration

    @property
    def status(self) -> str | None:
        return self._run_folder.status

    @property
    def reason(self) -> str | None:
        """Why the run is not ``complete`` (run.json ``reason``), else None."""
        reason = self.manifest.get("reason")
        return reason if isinstance(reason, str) else None

    @property
    def run_id(self) -> str:
        return str(self.manifest.get("run_id") or self.folder.name)

    @property
    def warnings(self) -> tuple[str, ...]:
        """Warnings the run carries (e.g. a backend running on random weights)."""
        return self._run_folder.warnings

    # ------------------------------------------------------------- files

    @property
    def trajectories(self) -> pd.DataFrame:
        if self._trajectories is None:
            self._trajectories = self._run_folder.trajectories().table
        return self._trajectories

    @property
    def masks(self) -> MaskStack | None:
        if not self._masks_read:
            self._masks_read = True
            if self._run_folder.masks_path is not None:
                pages = self._run_folder.mask_pages()
                self._masks = MaskStack(pages.path, pages.frames, pages.page_shape)
        return self._masks

    @property
    def events(self) -> pd.DataFrame:
        return _jsonl_table(self.folder / "events.jsonl")

    @property
    def edits(self) -> pd.DataFrame:
        """Every edit of the run and what became of it (``edits.jsonl``, docs/recording.md)."""
        return _jsonl_table(self.folder / "edits.jsonl")

    # ------------------------------------------------------------- lifetime

    def save(self, path: str | Path) -> Run:
        """Copy the run folder to ``path`` (must not exist) and return the `Run` there (kept on disk)."""
        target = Path(path)
        if target.exists():
            raise FileExistsError(f"{target} already exists")
        shutil.copytree(self.folder, target)
        return Run(target)

    def close(self) -> None:
        """Release the masks file; a temporary run folder is removed (its `Run` is then unusable)."""
        if self._masks is not None:
            self._masks.close()
        if self._remove is not None:
            self._remove()

    def __enter__(self) -> Run:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def __repr__(self) -> str:
        particles = self.trajectories["particle"].nunique() if self.folder.exists() else "?"
        return (f"Run({self.run_id!r}, status={self.status!r}, particles={particles}, "
                f"folder={str(self.folder)!r}{', temporary' if self.temporary else ''})")


def _jsonl_table(path: Path) -> pd.DataFrame:
    """A JSON-lines file as a table (empty without the file); a last line cut mid-write is left out."""
    if not path.is_file():
        return pd.DataFrame()
    records = []
    for line in _lines(path):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            break  # the recording stopped mid-line: the whole records before it are the file's content
    return pd.DataFrame.from_records(records)


def _lines(path: Path) -> Iterator[str]:
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                yield line
