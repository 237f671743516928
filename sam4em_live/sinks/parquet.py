"""A sink writing the trajectory rows of a run to one Parquet file (pyarrow).

The same columns as the recorder's ``trajectories.csv`` (`sam4em_live.io.trajectories`), one row per
present particle per frame, in frame order. Rows are buffered and written one row group at a time, so
a file stays readable up to its last complete group if the process dies, and memory stays bounded.
Writing a group costs a few milliseconds on the pipeline thread every ``row_group_rows`` rows; for
runs where that matters, the recorder (which writes on its own thread) is the sink to use.

This module and its line in ``pyproject.toml``
(``[project.entry-points."sam4em_live.sinks"] parquet = ...``) are all it takes to add a sink.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa  # type: ignore[import-untyped]  # pyarrow ships no types
import pyarrow.parquet as pq  # type: ignore[import-untyped]
from pydantic import PositiveInt

from sam4em_live.config import FrozenModel
from sam4em_live.frames import AcquisitionClock
from sam4em_live.io.trajectories import measurement_row, trajectory_columns
from sam4em_live.sinks.series_segments import SeriesSegments

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sam4em_live.results import FrameResult, RunInfo

log = logging.getLogger(__name__)


class ParquetOptions(FrozenModel):
    """Options of the ``parquet`` sink (a ``[[sinks]]`` table with ``kind = "parquet"``)."""

    # File to write; ``{run_id}`` is replaced by the run's id. Parent folders are created.
    path: Path
    # Rows buffered before a row group is written.
    row_group_rows: PositiveInt = 4096
    overwrite: bool = False


class ParquetSink:
    """Trajectory rows to a Parquet file (see module docstring)."""

    Options = ParquetOptions

    def __init__(self, options: ParquetOptions) -> None:
        self.options = options
        self.path: Path | None = None
        self.rows_written = 0
        self._columns: list[str] = []
        self._rows: list[dict[str, object]] = []
        self._writer: pq.ParquetWriter | None = None
        self._schema: pa.Schema | None = None
        self._run: RunInfo | None = None
        self._clock: AcquisitionClock | None = None
        self._series: SeriesSegments | None = None

    @property
    def counters(self) -> dict[str, int]:
        """`CountingSink` counters: rows written to the file so far."""
        return {"rows_written": self.rows_written}

    def open(self, run: RunInfo) -> None:
        path = Path(str(self.options.path).replace("{run_id}", run.run_id))
        if path.exists() and not self.options.overwrite:
            raise FileExistsError(f"{path}: already exists (set overwrite = true to replace it)")
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self._run, self._clock = path, run, AcquisitionClock.of(run.series)
        self._series = SeriesSegments(run.series)
        self._columns = trajectory_columns(run.series.calibration, have_time=True, with_series=True)
        self._schema = pa.schema([(c, _TYPES.get(c, pa.float64())) for c in self._columns])
        self._writer = pq.ParquetWriter(path, self._schema)

    def consume(self, result: FrameResult) -> None:
        run, clock, series = self._run, self._clock, self._series
        if run is None or clock is None or series is None or self._writer is None:
            return
        # Every row carries its series, as in the recorder's table (a restart or a new series starts one).
        frame = result.frame
        segment, new = series.place(frame.series_id, frame.index, frame.shape, frame.pixels.dtype.str,
                                    frame.calibration)
        if new and segment.number > 0 and segment.clock is not None:
            self._clock = clock = segment.clock
        calibration = segment.calibration
        t_s = clock.t_s(result.index, result.frame.timestamp_s)  # as the recorder writes it (the series' time base)
        self._rows.extend(measurement_row(m, calibration, t_s, segment.number)
                          for m in result.measurements if m.present)
        if len(self._rows) >= self.options.row_group_rows:
            self._flush()

    def on_status(self, status: Mapping[str, Any]) -> None:
        pass

    def close(self) -> None:
        if self._writer is None:
            return
        try:
            self._flush()
        finally:
            self._writer.close()
            self._writer = None
        log.info("parquet sink: %d rows in %s", self.rows_written, self.path)

    def _flush(self) -> None:
        if not self._rows or self._writer is None:
            return
        table = pa.Table.from_pylist(self._rows, schema=self._schema)
        self._writer.write_table(table)
        self.rows_written += len(self._rows)
        self._rows = []


#: Column types; every other column is float64.
_TYPES: dict[str, pa.DataType] = {"frame": pa.int64(), "particle": pa.int64(), "split": pa.int8(),
                                   "series": pa.int64()}
