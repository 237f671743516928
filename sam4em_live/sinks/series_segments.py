"""Series of a run: which acquisition series each result belongs to, so that no two rows are ambiguous.

A run can see more than one series: a new ``series_id``, a camera that restarts under the same id (its
frame index goes back), or a frame-size change mid-series. Each starts a new **series**,
numbered 0, 1, 2... in the order they appear: the number is the ``series`` column of the trajectory
tables, ``series_list[k]`` in run.json describes it (id, shape, dtype, calibration, frame range), and its
masks go to a file of its own (``masks.tif`` for series 0, ``masks-s1.tif``...), one shape per file.

Rules, applied to results in the order the pipeline delivers them (frame indices strictly increase
within a series, docs/protocol.md):

==================  =========================================================================
``started_by``      when
==================  =========================================================================
``first``           the run's first result
``new_series_id``   the frame's ``series_id`` is not the current series'
``index_restart``   same id, but the frame index is not above the last one (a camera restart)
``shape_change``    same id, another frame shape (rows, columns)
``index_jump``      same id, the index jumps more than ``LEADING_EMPTY_PAGES_MAX`` past the last
                    (masks files hold one page per frame index: a jump of 10^6 would write 10^6
                    empty pages; a new series' file starts at its first frame instead)
==================  =========================================================================

Coming back to an earlier id (A, B, A) starts a new series too: its rows could otherwise repeat frames.
A pixel-type change alone does not: it makes no row ambiguous and no mask page another shape, and
frames alternating between types (a fuzzing sender did this) would otherwise open a series -- and a
masks file -- per frame. The series keeps the type of its first frame in ``series_list``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sam4em_live.frames import AcquisitionClock, SeriesInfo
from sam4em_live.io.label_stack_layout import LEADING_EMPTY_PAGES_MAX, LabelStackLayout, page_origin
from sam4em_live.io.run_manifest import FrameRanges

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sam4em_live.frames import Calibration

MASKS_FIRST = "masks.tif"


def first_series_layout(series: SeriesInfo) -> LabelStackLayout:
    """The layout of ``masks.tif``, opened before the first result: the run's series as the service opened it."""
    calibration = series.calibration
    return LabelStackLayout(calibration.pixel_size_nm, calibration.fps, 0, series.series_id)


def masks_name(series: int) -> str:
    """The label stack file of series ``series``: ``masks.tif`` for the first, ``masks-s<k>.tif`` after."""
    return MASKS_FIRST if series == 0 else f"masks-s{series}.tif"


@dataclass(slots=True)
class SeriesSegment:
    """One series of a run (module docstring); ``first_frame``/``last_frame`` are its results' frame range.

    ``result_frames`` lists the frames that had a result (the others in the range were dropped, rejected or
    lost upstream: their masks pages are empty). ``clock`` gives its rows' ``t_s`` (its own time base: a
    restarted camera's times start again).
    """

    number: int
    series_id: str
    shape: tuple[int, int]
    dtype: str
    calibration: Calibration
    started_by: str
    first_frame: int
    last_frame: int
    results: int = 0
    metadata: Mapping[str, Any] = field(default_factory=dict)
    clock: AcquisitionClock | None = None
    result_frames: FrameRanges = field(default_factory=FrameRanges)

    @property
    def masks_name(self) -> str:
        return masks_name(self.number)

    @property
    def layout(self) -> LabelStackLayout:
        """How its masks file describes itself (pixel size, frame interval, series)."""
        return LabelStackLayout(self.calibration.pixel_size_nm, self.calibration.fps, self.number, self.series_id)

    def as_manifest(self, masks_file: str | None, mask_pages: int) -> dict[str, Any]:
        """Its run.json ``series_list`` entry; ``mask_pages`` pages of ``masks_file`` from `page_origin` on."""
        first_page = page_origin(self.first_frame)
        return {
            "series": self.number, "series_id": self.series_id, "started_by": self.started_by,
            "shape": list(self.shape), "dtype": self.dtype, "calibration": self.calibration.as_dict(),
            "frames": [self.first_frame, self.last_frame], "results": self.results,
            "result_frames": [list(r) for r in self.result_frames.ranges],
            "masks": masks_file, "mask_pages": mask_pages if masks_file else 0,
            "mask_first_frame": first_page if masks_file else None,
            "metadata": dict(self.metadata),
        }


class SeriesSegments:
    """Assigns each result to its series (module docstring); used by the recorder and the Parquet sink.

    ``first`` is the run's series as the service opened it: the first series takes its metadata and
    calibration (which include the configured overrides); later ones take the frames' calibration.
    """

    def __init__(self, first: SeriesInfo) -> None:
        self.first = first
        self.segments: list[SeriesSegment] = []

    @property
    def current(self) -> SeriesSegment | None:
        return self.segments[-1] if self.segments else None

    def place(self, series_id: str, index: int, shape: tuple[int, int], dtype: str,
              calibration: Calibration) -> tuple[SeriesSegment, bool]:
        """The series of a result, and whether it starts one."""
        current = self.current
        reason = self._boundary(current, series_id, index, shape, dtype)
        if reason is None:
            assert current is not None
            current.last_frame = index
            current.results += 1
            current.result_frames.append(index)
            return current, False
        if current is None:
            calibration = self.first.calibration.merged(calibration) if series_id == self.first.series_id \
                else calibration
            metadata: Mapping[str, Any] = self.first.metadata if series_id == self.first.series_id else {}
        else:
            metadata = current.metadata if series_id == current.series_id else {}
        shape = (int(shape[0]), int(shape[1]))
        info = SeriesInfo(series_id, shape, dtype, calibration, metadata, self.first.acquisition_timestamps,
                          self.first.live)
        segment = SeriesSegment(len(self.segments), series_id, shape, dtype, calibration, reason, index, index, 1,
                                metadata, AcquisitionClock.of(info), FrameRanges.of((index,)))
        self.segments.append(segment)
        return segment, True

    @staticmethod
    def _boundary(current: SeriesSegment | None, series_id: str, index: int, shape: tuple[int, int],
                  dtype: str) -> str | None:
        if current is None:
            return "first"
        if series_id != current.series_id:
            return "new_series_id"
        if index <= current.last_frame:
            return "index_restart"
        if (int(shape[0]), int(shape[1])) != current.shape:
            return "shape_change"
        if index - current.last_frame > LEADING_EMPTY_PAGES_MAX:
            return "index_jump"
        return None
