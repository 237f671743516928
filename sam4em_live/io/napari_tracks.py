"""``tracks_napari.csv``: the trajectories in napari's tracks layout, so a Tracks layer needs no reshaping.

napari's ``Viewer.add_tracks(data)`` takes an (N, 4) array of ``track_id, t, y, x`` rows, sorted by track
and then time (napari.layers.Tracks: "data ... of the form [track_id, t, (z), y, x]"). The file holds those
four columns first, in that order, then ``series`` and ``particle`` to say where each track came from:

- ``t`` is the frame index (napari's time axis, the masks' page index: `io.label_stack_layout`);
- ``y, x`` are the particle's centroid in pixels (row, column), as in ``trajectories.csv``;
- ``track_id`` is the particle id while the run has one series (so a track and its label in ``masks.tif``
  share their number); with several series it is ``series * SERIES_TRACK_STRIDE + particle``, so the same
  particle id in two series (a camera restart) gives two tracks that never join.

Written by the recorder when the run closes (from ``trajectories.csv``) and readable again from any run
folder with `RunFolder.napari_tracks`.
"""

from __future__ import annotations

import io
import os
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from sam4em_live.io.trajectories import SERIES_COLUMN

if TYPE_CHECKING:
    from pathlib import Path

NAPARI_TRACKS = "tracks_napari.csv"
NAPARI_COLUMNS: tuple[str, ...] = ("track_id", "t", "y", "x")
#: Track ids of series k start at k * this (particle ids are below it: masks are uint16 labels).
SERIES_TRACK_STRIDE = 100_000


def napari_tracks(table: pd.DataFrame) -> pd.DataFrame:
    """``track_id, t, y, x, series, particle`` rows (module docstring) from a trajectory table."""
    series = (table[SERIES_COLUMN].to_numpy(np.int64) if SERIES_COLUMN in table.columns
              else np.zeros(len(table), np.int64))
    particle = table["particle"].to_numpy(np.int64)
    several = len(np.unique(series)) > 1
    out = pd.DataFrame({
        "track_id": series * SERIES_TRACK_STRIDE + particle if several else particle,
        "t": table["frame"].to_numpy(np.int64),
        "y": table["y"].to_numpy(np.float64),
        "x": table["x"].to_numpy(np.float64),
        "series": series,
        "particle": particle,
    })
    return out.sort_values(["track_id", "t"], kind="stable").reset_index(drop=True)


def write_napari_tracks(trajectories_csv: Path, out: Path) -> int:
    """Write ``out`` from a ``trajectories.csv`` (whole lines only); returns the rows written.

    Written to a hidden temporary file first and renamed, so the folder never holds half a table.
    """
    data = trajectories_csv.read_bytes()
    whole = data[: data.rfind(b"\n") + 1]
    table = pd.read_csv(io.BytesIO(whole)) if whole else pd.DataFrame(columns=["frame", "particle", "x", "y"])
    tracks = napari_tracks(table)
    tmp = out.with_name(f".{out.name}.tmp")
    try:
        tracks.to_csv(tmp, index=False)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return len(tracks)
