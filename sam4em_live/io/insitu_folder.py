"""Gatan in-situ recordings: a folder tree of one .dm4 file per frame, as GMS in-situ capture writes it.

Layout (GMS 3 "In-Situ" datasets, the "H-m-s" kind; Gatan's own processing scripts walk it the same way)::

    Capture 1/                                  <- the recording (pass this folder)
        Capture 1.dm4                           <- optional "director" image of the dataset: not a frame
        Hour_00/
            Minute_00/
                Second_00/
                    Capture 1_Hour_00_Minute_00_Second_00_Frame_0000.dm4
                    Capture 1_Hour_00_Minute_00_Second_00_Frame_0001.dm4
                    ...
                Second_01/
                    Capture 1_Hour_00_Minute_00_Second_01_Frame_0000.dm4   <- Frame_ restarts each second

Frames are ordered by (hour, minute, second, frame number), all read from the names, never by listing
order. Each frame file is opened only when it is replayed (rosettasciio reads it), so a 20 GB recording
streams with the memory of one frame plus the list of file names.

Calibration: the pixel size (and exposure) from the first frame's DigitalMicrograph tags; the frame rate
from the folder tree itself, as the median number of frames in the *full* seconds (every ``Second_NN``
folder but the first and the last, which a capture cuts). With fewer than three seconds recorded the
rate is unknown and the user is told to give ``--fps``. Everything else in the tree (the director image,
notes, stray files) is ignored and reported, as in a frame folder.
"""

from __future__ import annotations

import os
import re
import statistics
from pathlib import Path
from typing import Any

from sam4em_live.frames import Calibration
from sam4em_live.io.frame_folder import FileSeriesReader, file_calibration, report_ignored
from sam4em_live.io.frame_readers import ReplayError
from sam4em_live.io.vendor_calibration import tell_missing

_HOUR = re.compile(r"^Hour_(\d+)$", re.IGNORECASE)
_MINUTE = re.compile(r"^Minute_(\d+)$", re.IGNORECASE)
_SECOND = re.compile(r"^Second_(\d+)$", re.IGNORECASE)
_FRAME = re.compile(r"Frame_(\d+)$|(\d+)$", re.IGNORECASE)
_FRAME_SUFFIXES = (".dm4", ".dm3")


def is_insitu_tree(folder: Path) -> bool:
    """True if ``folder`` holds ``Hour_NN`` sub-folders (a Gatan in-situ recording)."""
    try:
        with os.scandir(folder) as entries:
            return any(entry.is_dir() and _HOUR.match(entry.name) for entry in entries)
    except OSError:
        return False


def _numbered_dirs(folder: Path, pattern: re.Pattern[str], ignored: list[str], root: Path) -> list[tuple[int, Path]]:
    found: list[tuple[int, Path]] = []
    with os.scandir(folder) as entries:
        listed = list(entries)
    for entry in listed:
        match = pattern.match(entry.name) if entry.is_dir() else None
        if match:
            found.append((int(match.group(1)), Path(entry.path)))
        else:
            ignored.append(os.path.relpath(entry.path, root) + ("/" if entry.is_dir() else ""))
    return sorted(found)


def list_insitu_frames(root: Path) -> tuple[list[Path], list[int], list[str]]:
    """(frame files in time order, frames in each Second_ folder, ignored entries relative to ``root``)."""
    ignored: list[str] = []
    frames: list[Path] = []
    per_second: list[int] = []
    for _, hour in _numbered_dirs(root, _HOUR, ignored, root):
        for _, minute in _numbered_dirs(hour, _MINUTE, ignored, root):
            for _, second in _numbered_dirs(minute, _SECOND, ignored, root):
                numbered: dict[int, Path] = {}
                with os.scandir(second) as entries:
                    listed = list(entries)
                for entry in listed:
                    path = Path(entry.path)
                    match = _FRAME.search(path.stem) if entry.is_file() else None
                    if match is None or path.suffix.lower() not in _FRAME_SUFFIXES:
                        ignored.append(os.path.relpath(entry.path, root))
                        continue
                    number = int(match.group(1) or match.group(2))
                    if number in numbered:
                        raise ReplayError(f"{second}: {numbered[number].name!r} and {path.name!r} have the same "
                                          "frame number")
                    numbered[number] = path
                frames.extend(numbered[k] for k in sorted(numbered))
                per_second.append(len(numbered))
    # top-level files (the director image, notes) were collected as ignored by the Hour_ walk
    if not frames:
        raise ReplayError(f"{root}: an in-situ tree (Hour_NN folders) without .dm4 frames")
    return frames, per_second, ignored


def rate_from_tree(per_second: list[int]) -> float | None:
    """Frames per second from the full seconds of the tree (the first and last are cut), None if < 3 seconds."""
    full = [n for n in per_second[1:-1] if n > 0]
    return float(statistics.median(full)) if full else None


class InSituTreeReader(FileSeriesReader):
    """Frames of a Gatan in-situ tree (module docstring), one .dm4 file read per frame."""

    def __init__(self, root: Path) -> None:
        files, per_second, ignored = list_insitu_frames(root)
        calibration, found, missing = file_calibration(files[0], "gatan-dm")
        fps = rate_from_tree(per_second)
        if fps is not None and calibration.fps is None:
            calibration = calibration.merged(Calibration(fps=fps))
            found["fps"] = f"median frames per full Second_ folder ({len(per_second) - 2} full seconds)"
            missing = [m for m in missing if m != "fps"]
        metadata: dict[str, Any] = {
            "format": "gatan-insitu", "frame_format": "gatan-dm", "seconds_recorded": len(per_second),
            "calibration_from": found, "calibration_missing": missing,
        }
        report_ignored(root, ignored, metadata)
        super().__init__(root, files, "gatan-dm", metadata, calibration)
        self.metadata["first_file"] = os.path.relpath(files[0], root)
        self.metadata["last_file"] = os.path.relpath(files[-1], root)
        tell_missing(root, missing)
