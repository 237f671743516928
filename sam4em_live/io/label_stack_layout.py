"""How the recorder lays out a label stack for readers: one page per frame index, calibrated, ImageJ metadata.

``masks.tif`` (and ``masks-s1.tif``... for later series, see docs/recording.md) is meant to open without glue:

- **page p is frame** ``first_page_frame + p``, with no holes: a frame without a result (dropped, rejected,
  unreadable) gets an empty page, which costs an IFD and its tile table only (every tile points at the
  shared empty tile, `bigtiff_pages`). ``first_page_frame`` is 0 (page p is frame p) unless the series'
  first recorded frame lies beyond `LEADING_EMPTY_PAGES_MAX` (a camera joined late): then it is that
  frame, and run.json and the ImageJ description (``first_frame``) say so.
- **calibrated**: XResolution = YResolution = 1 / pixel size, in the unit the ImageJ description names
  (``unit=nm``), with ResolutionUnit none, as ImageJ itself writes a non-inch, non-centimetre unit; the
  frame interval as ImageJ ``finterval`` (``tunit=s``).
- **an ImageJ hyperstack**: the first page's description is ImageJ's (``images = frames = pages``,
  ``hyperstack=true``), so tifffile (hence napari's tiff readers), Bio-Formats (Fiji) and ImageJ see a
  T × Y × X stack with its calibration; ``content=labels`` marks it as a label image (value = particle id).
  The page counts are written with a fixed width (`COUNT_WIDTH` digits, leading zeros), so the writer can
  rewrite the description in place as pages are added (`with_page_count`) and a file cut short by a crash
  can be made to agree again (`io.mask_tiff.end_at_last_complete_page`).

Every other page keeps its own description ``{"frame": n}`` (`page_frame` reads both kinds), so a file cut
at any byte still tells the frame of each complete page.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from fractions import Fraction

#: A series first seen beyond this frame index starts its pages there instead of at frame 0.
LEADING_EMPTY_PAGES_MAX = 4096
#: Digits of the ImageJ ``images``/``frames`` counts (fixed, so the description can be rewritten in place).
COUNT_WIDTH = 10
#: The ImageJ property that marks the stack as labels (value = particle id, 0 = background).
CONTENT_KEY, CONTENT_LABELS = "content", "labels"
_IMAGEJ_PREFIX = "ImageJ="
_COUNT_LINE = re.compile(r"^(images|frames)=\d+$", re.MULTILINE)


def page_origin(first_frame: int) -> int:
    """The frame of page 0 for a series whose first recorded frame is ``first_frame`` (module docstring)."""
    return 0 if 0 <= first_frame <= LEADING_EMPTY_PAGES_MAX else int(first_frame)


def resolution_rational(pixel_size_nm: float | None) -> tuple[int, int]:
    """XResolution as a TIFF rational: pixels per nm (1/1 when the pixel size is unknown)."""
    if pixel_size_nm is None or not pixel_size_nm > 0:
        return (1, 1)
    ratio = Fraction(1.0 / pixel_size_nm).limit_denominator(1_000_000)
    while ratio.numerator >= 2**32 or ratio.denominator >= 2**32:  # absurd sizes: coarser, still positive
        ratio = Fraction(ratio.numerator >> 1 or 1, ratio.denominator >> 1 or 1)
    return (max(1, ratio.numerator), max(1, ratio.denominator))


def _ascii_value(text: str) -> str:
    """A description value that cannot break the ``key=value`` lines (printable ASCII, no ``=``)."""
    return re.sub(r"[^\x20-\x3c\x3e-\x7e]", "_", text)[:64]


@dataclass(frozen=True, slots=True)
class LabelStackLayout:
    """What a recorded label stack says about itself (module docstring); given to `LabelStackWriter`.

    ``pixel_size_nm`` and ``fps`` are the series calibration (None: unknown, not written); ``series`` is the
    run's series number (the ``series`` column of the trajectories) and ``series_id`` the source's id.
    """

    pixel_size_nm: float | None = None
    fps: float | None = None
    series: int = 0
    series_id: str = ""

    @property
    def resolution(self) -> tuple[int, int]:
        return resolution_rational(self.pixel_size_nm)

    def imagej_description(self, pages: int, first_frame: int) -> str:
        """The first page's ImageJ description for a stack of ``pages`` pages starting at ``first_frame``."""
        count = f"{max(1, pages):0{COUNT_WIDTH}d}"
        lines = [f"{_IMAGEJ_PREFIX}1.11a", f"images={count}", f"frames={count}", "hyperstack=true",
                 "mode=grayscale", "loop=false"]
        if self.pixel_size_nm is not None and self.pixel_size_nm > 0:
            lines.append("unit=nm")
        if self.fps:
            lines += [f"finterval={1.0 / self.fps!r}", "tunit=s"]
        lines += [f"{CONTENT_KEY}={CONTENT_LABELS}", f"first_frame={int(first_frame)}", f"series={self.series}",
                  f"series_id={_ascii_value(self.series_id)}"]
        return "\n".join(lines) + "\n"


def with_page_count(description: str, pages: int) -> str:
    """``description`` (an ImageJ one written by `LabelStackLayout`) with ``images = frames = pages``; same length."""
    return _COUNT_LINE.sub(lambda m: f"{m.group(1)}={max(1, pages):0{COUNT_WIDTH}d}", description)


def is_imagej(description: str) -> bool:
    """Whether ``description`` is an ImageJ one (it starts with ``ImageJ=``)."""
    return description.startswith(_IMAGEJ_PREFIX)


def imagej_properties(description: str) -> dict[str, str]:
    """The ``key=value`` lines of an ImageJ description, as strings."""
    pairs = (line.split("=", 1) for line in description.splitlines() if "=" in line)
    return {key.strip(): value.strip() for key, value in pairs}


def page_frame(description: str) -> int:
    """The frame index a page of ours names: ``{"frame": n}``, or ImageJ ``first_frame`` on the first page.

    Raises ValueError (or KeyError/TypeError for JSON without a frame) when it names none.
    """
    if is_imagej(description):
        return int(imagej_properties(description)["first_frame"])
    return int(json.loads(description)["frame"])
