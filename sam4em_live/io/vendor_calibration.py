"""Calibration of an instrument file as rosettasciio describes it (axes + metadata dictionaries).

rosettasciio hands every signal back as ``{"data", "axes", "metadata", "original_metadata"}``; this
module turns that into our `Calibration` and says, per field, where it came from:

- pixel size: the column (``x``) signal axis, ``scale`` in ``units`` (nm, µm, Å, pm, m...). An axis
  without a length unit, or with a non-positive scale (MRC writes -1 for "unknown"), is no calibration.
  Reciprocal units (``1/nm``: diffraction) are refused as a pixel size.
- frame rate: the frame (navigation) axis when its unit is a time (Velox ``Time`` axis in s).
- exposure: ``Acquisition_instrument.TEM[.Detector].Camera.exposure`` (s), as rosettasciio maps it; for
  TIA camera images the acquisition's dwell time.
- per-frame times: TIA time tags (whole seconds), used only when they tell every frame apart.
- dose rate: a tag whose name says "dose rate" and whose name or unit says e/Å²/s, in the original
  metadata (no fixture format records one; DigitalMicrograph in-situ tags may).

Fields nobody recorded stay ``None`` and are listed in ``missing`` so the user can be told which
command-line flag supplies them.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from sam4em_live.frames import Calibration
from sam4em_live.io.tiff_io import length_unit_nm, positive_number, time_unit_s

log = logging.getLogger(__name__)

#: The command-line flag that supplies each calibration field a file may lack.
FLAG_FOR_FIELD: dict[str, str] = {"pixel_size_nm": "--pixel-size-nm", "fps": "--fps"}

_DOSE_RATE_KEY = re.compile(r"dose[\s_]*rate", re.IGNORECASE)
_PER_A2_S = re.compile(r"e-?\s*/\s*(?:Å|A|Å)\s*(?:2|²|\^2)\s*/\s*s", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class FileCalibration:
    """A file's calibration, where each field came from, and which fields it lacks."""

    calibration: Calibration
    found: dict[str, str] = field(default_factory=dict)
    missing: tuple[str, ...] = ()


#: Recordings already told about (a run opens its input more than once: probe, build, replay).
_TOLD: set[tuple[str, tuple[str, ...]]] = set()


def tell_missing(path: object, missing: Sequence[str]) -> None:
    """Warn, once per recording, that it records no pixel size / frame rate and name the flags that supply them."""
    wanted = tuple(f for f in missing if f in FLAG_FOR_FIELD)
    key = (str(path), wanted)
    if not wanted or key in _TOLD:
        return
    _TOLD.add(key)
    what = " and ".join("pixel size" if f == "pixel_size_nm" else "frame rate" for f in wanted)
    log.warning("%s: the file records no %s; supply %s (else lengths stay in pixels and time in frames)",
                path, what, " / ".join(FLAG_FOR_FIELD[f] for f in wanted))


def _unit_text(axis: Mapping[str, Any]) -> str | None:
    units = axis.get("units")
    if units is None:
        return None
    text = units.decode("latin-1") if isinstance(units, bytes) else str(units)
    text = text.strip()
    return text if text and text not in ("<undefined>", "t.u.") else None


def axis_length_nm(axis: Mapping[str, Any]) -> float | None:
    """The length of one step of a spatial ``axis`` in nm, or None if it carries no length unit."""
    units, scale = _unit_text(axis), positive_number(axis.get("scale"))
    if units is None or scale is None or "/" in units:  # "1/nm": reciprocal space, not a pixel size
        return None
    per_unit = length_unit_nm(units)
    return None if per_unit is None else scale * per_unit


def axis_interval_s(axis: Mapping[str, Any]) -> float | None:
    """The time step of a frame ``axis`` in seconds, or None if its unit is not a time."""
    units, scale = _unit_text(axis), positive_number(axis.get("scale"))
    if units is None or scale is None:
        return None
    per_unit = time_unit_s(units)
    return None if per_unit is None else scale * per_unit


def _dig(tree: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(tree, Mapping) or key not in tree:
            return None
        tree = tree[key]
    return tree


def _exposure_s(metadata: Mapping[str, Any], original: Mapping[str, Any]) -> tuple[float | None, str | None]:
    for keys in (("Acquisition_instrument", "TEM", "Camera", "exposure"),
                 ("Acquisition_instrument", "TEM", "Detector", "Camera", "exposure")):
        value = positive_number(_dig(metadata, *keys))
        if value is not None:
            return value, ".".join(keys)
    # TIA (.emi): a camera image's "dwell time" is its exposure (a STEM one's is per pixel: not used)
    acquire = _dig(original, "ObjectInfo", "AcquireInfo")
    if isinstance(acquire, Mapping) and "CameraNamePath" in acquire:
        value = positive_number(acquire.get("DwellTimePath"))
        if value is not None:
            return value, "ObjectInfo.AcquireInfo.DwellTimePath (camera)"
    return None, None


def tia_frame_times_s(signal: Mapping[str, Any], n_frames: int) -> tuple[float, ...]:
    """Per-frame acquisition times of a TIA series (its time tags), or () when they cannot tell frames apart.

    TIA stamps each frame with whole seconds; those times are used only when they increase strictly
    (frames at least a second apart), else a series of equal times would stop the clock.
    """
    header = _dig(signal.get("original_metadata") or {}, "ser_header_parameters") or {}
    times = header.get("Time") if isinstance(header, Mapping) else None
    if times is None:
        return ()
    values = [float(t) for t in list(times)[:n_frames]]
    if len(values) != n_frames or any(b <= a for a, b in pairwise(values)):
        return ()
    return tuple(values)


def _dose_rate(tree: Any, path: str = "", depth: int = 0) -> tuple[float | None, str | None]:
    """The first numeric tag named like "Dose Rate ... e/Å²/s" (depth-limited walk of the tag tree)."""
    if depth > 12 or not isinstance(tree, Mapping):
        return None, None
    for key, value in tree.items():
        name = f"{path}.{key}" if path else str(key)
        if isinstance(value, Mapping):
            found, where = _dose_rate(value, name, depth + 1)
            if found is not None:
                return found, where
        elif _DOSE_RATE_KEY.search(str(key)) and _PER_A2_S.search(str(key).replace("_", "/")):
            number = positive_number(value)
            if number is not None:
                return number, name
    return None, None


def calibration_from_signal(signal: Mapping[str, Any], frame_axes: Sequence[Mapping[str, Any]],
                            signal_axes: Sequence[Mapping[str, Any]]) -> FileCalibration:
    """The calibration of one rosettasciio signal whose axes are split into frame and (y, x) axes."""
    found: dict[str, str] = {}
    y_axis, x_axis = signal_axes
    pixel_size_nm = axis_length_nm(x_axis)
    if pixel_size_nm is not None:
        found["pixel_size_nm"] = f"x axis scale {x_axis.get('scale')} {_unit_text(x_axis)}"
        y_nm = axis_length_nm(y_axis)
        if y_nm is not None and not math.isclose(y_nm, pixel_size_nm, rel_tol=1e-3):
            found["pixel_size_nm"] += f" (y axis differs: {y_nm:.6g} nm; x is used)"
    interval_s = None
    for axis in frame_axes:
        interval_s = axis_interval_s(axis)
        if interval_s is not None:
            found["fps"] = f"{axis.get('name') or 'frame'} axis step {axis.get('scale')} {_unit_text(axis)}"
            break
    metadata = signal.get("metadata") or {}
    exposure_s, exposure_from = _exposure_s(metadata, signal.get("original_metadata") or {})
    if exposure_from:
        found["exposure_s"] = exposure_from
    dose, dose_from = _dose_rate(signal.get("original_metadata") or {})
    if dose_from:
        found["dose_rate_e_per_A2s"] = dose_from
    calibration = Calibration(pixel_size_nm=pixel_size_nm, fps=1.0 / interval_s if interval_s else None,
                              exposure_s=exposure_s, dose_rate_e_per_A2s=dose)
    missing = tuple(k for k, v in calibration.as_dict().items() if v is None)
    return FileCalibration(calibration, found, missing)
