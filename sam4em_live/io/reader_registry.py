"""The reader registry: which `FrameReader` opens a recording, by file suffix (or for a folder).

Built in (docs/formats.md): ``tiff`` (``.tif``/``.tiff`` stacks, `sam4em_live.io.tiff_io`); ``gatan-dm``,
``velox-emd``, ``tia-ser`` and ``mrc`` (instrument files through rosettasciio, `sam4em_live.io.vendor_readers`);
``video`` (MP4/AVI/MOV/MKV through imageio + PyAV, `sam4em_live.io.video_reader`); and ``frame-folder`` (a
folder of numbered JPEG/PNG/TIFF/DigitalMicrograph frames, `sam4em_live.io.frame_folder`, or a Gatan in-situ
tree of ``Hour_NN/Minute_NN/Second_NN`` folders, `sam4em_live.io.insitu_folder`). The vendor and video
libraries are imported when such a file is opened, not before. Other distributions add formats through the
``sam4em_live.readers`` entry-point group::

    [project.entry-points."sam4em_live.readers"]
    mrc = "my_package.mrc:MrcReader"

where ``MrcReader`` has ``Options`` (a frozen pydantic model, usually `sam4em_live.plugins.NoOptions`),
``suffixes = (".mrc",)``, ``folder = False``, and ``MrcReader(options, path)`` opens the file. A folder
reader (``folder = True``) opens directories; its ``suffixes`` are those of the files inside, so a single
such file is refused with a hint to replay its folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from sam4em_live.io.frame_folder import FRAME_FILE_SUFFIXES, open_frame_folder
from sam4em_live.io.frame_readers import FrameReader, ReplayError
from sam4em_live.io.insitu_folder import InSituTreeReader, is_insitu_tree
from sam4em_live.io.tiff_io import TiffStackReader
from sam4em_live.io.vendor_readers import VendorStackReader
from sam4em_live.io.video_reader import VIDEO_SUFFIXES, VideoReader
from sam4em_live.plugins import NoOptions, PluginError, Registry

if TYPE_CHECKING:
    from collections.abc import Callable

    from pydantic import BaseModel

ENTRY_POINT_GROUP = "sam4em_live.readers"

TIFF_SUFFIXES: tuple[str, ...] = (".tif", ".tiff")


@runtime_checkable
class ReaderPlugin(Protocol):
    """What a reader plugin declares beside ``Options``: the suffixes it reads, and whether it opens folders."""

    Options: type[BaseModel]
    suffixes: tuple[str, ...]
    folder: bool

    def __call__(self, options: Any, path: Path, /) -> FrameReader: ...


@dataclass(frozen=True, slots=True)
class ReaderFactory:
    """A `ReaderPlugin` made of a function ``open(path)``, for readers that take no options."""

    open: Callable[[Path], FrameReader]
    suffixes: tuple[str, ...]
    folder: bool = False
    Options: type[BaseModel] = NoOptions

    def __call__(self, options: Any, path: Path, /) -> FrameReader:
        return self.open(path)


def open_folder(folder: Path) -> FrameReader:
    """A Gatan in-situ tree if ``folder`` holds ``Hour_NN`` folders, else a flat folder of frame files."""
    return InSituTreeReader(folder) if is_insitu_tree(folder) else open_frame_folder(folder)


READERS: Registry[FrameReader] = Registry(
    "reader", ENTRY_POINT_GROUP, FrameReader,
    builtins={
        "tiff": ReaderFactory(TiffStackReader, TIFF_SUFFIXES),
        "gatan-dm": ReaderFactory(VendorStackReader, (".dm3", ".dm4")),
        "velox-emd": ReaderFactory(VendorStackReader, (".emd",)),
        "tia-ser": ReaderFactory(VendorStackReader, (".ser", ".emi")),
        "mrc": ReaderFactory(VendorStackReader, (".mrc",)),
        "video": ReaderFactory(VideoReader, VIDEO_SUFFIXES),
        "frame-folder": ReaderFactory(open_folder, FRAME_FILE_SUFFIXES, folder=True),
    },
)


def reader_plugins() -> dict[str, ReaderPlugin]:
    """Every reader plugin, loaded and checked to declare its suffixes."""
    found: dict[str, ReaderPlugin] = {}
    for name, plugin in READERS.plugins().items():
        if not isinstance(plugin, ReaderPlugin):
            raise PluginError(f"reader plugin {name!r} must declare `suffixes` (a tuple of '.ext') and `folder`")
        found[name] = plugin
    return found


def open_reader(path: Path) -> FrameReader:
    """Open a recording with the reader registered for it; `ReplayError` naming ``path`` if none can.

    Folders go to the folder readers, files to the readers of their (lower-case) suffix; with several
    candidates the first that opens the recording wins (in name order).
    """
    path = Path(path)
    if not path.exists():
        raise ReplayError(f"{path}: no such file or folder")
    plugins = reader_plugins()
    suffix = path.suffix.lower()
    if path.is_dir():
        candidates = [name for name, p in plugins.items() if p.folder]
    else:
        candidates = [name for name, p in plugins.items() if not p.folder and suffix in p.suffixes]
    if not candidates:
        raise ReplayError(_no_reader(path, suffix, plugins))
    errors: list[ReplayError] = []
    for name in candidates:
        try:
            return READERS.check(name, plugins[name](READERS.options(name, {}, "reader"), path))
        except ReplayError as exc:
            errors.append(exc)
    if len(errors) == 1:
        raise errors[0]
    raise ReplayError(f"{path}: no reader could open it: " + "; ".join(
        f"{name}: {exc}" for name, exc in zip(candidates, errors, strict=True)))


def _no_reader(path: Path, suffix: str, plugins: dict[str, ReaderPlugin]) -> str:
    file_suffixes = sorted({s for p in plugins.values() if not p.folder for s in p.suffixes})
    folder_suffixes = sorted({s for p in plugins.values() if p.folder for s in p.suffixes})
    if path.is_dir():
        return f"{path}: a folder, and no reader opens folders"
    if suffix in folder_suffixes:
        return f"{path}: a single image; replay a folder of numbered frames (000000.jpeg, ...) instead"
    return (f"{path}: unsupported recording type {suffix or '(no suffix)'!r}; expected a file ending in "
            f"{'/'.join(file_suffixes)} or a folder of {'/'.join(folder_suffixes)} frames")
