"""What a run directory holds: its file names, and run.json's ``files`` and ``series_list`` entries.

The names are the layout of docs/recording.md; `run_writer.RunDirectoryWriter` writes the files,
these functions say what run.json reports of them (a file is named only once it exists).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sam4em_live.io.edits_log import EDITS_LOG
from sam4em_live.io.napari_tracks import NAPARI_TRACKS

if TYPE_CHECKING:
    from collections.abc import Mapping

    from sam4em_live.sinks.recorder.files import MaskPagesWriter
    from sam4em_live.sinks.series_segments import SeriesSegments

TRAJECTORIES = "trajectories.csv"
MASKS = "masks.tif"
EVENTS = "events.jsonl"
STATUS = "status.jsonl"
ANNOTATIONS = "annotations.jsonl"
EDITS = EDITS_LOG
MANIFEST = "run.json"
#: run.json is rewritten at every status snapshot (about once a second) and, without them, at least this often.
MANIFEST_INTERVAL_S = 2.0
#: The ``events.jsonl`` kind of the line that says the recording (or one file of it) stopped early.
RECORDING_STOPPED = "recording_stopped"


def files_entry(mask_files: Mapping[int, MaskPagesWriter], tracks_written: bool) -> dict[str, str | None]:
    """run.json ``files``: masks is null while there is no such file (disabled, not created yet, or failed).

    ``masks`` is the first series' file; ``series_list`` names every series' own.
    """
    first = mask_files.get(0)
    masks = MASKS if first is not None and first.created else None
    return {"trajectories": TRAJECTORIES, "masks": masks, "events": EVENTS, "status": STATUS,
            "annotations": ANNOTATIONS, "edits": EDITS,
            "napari_tracks": NAPARI_TRACKS if tracks_written else None}  # written at close


def series_list_entry(series: SeriesSegments, mask_files: Mapping[int, MaskPagesWriter]) -> list[dict[str, Any]]:
    """run.json ``series_list``: every series with its masks file and the pages that file holds."""
    out = []
    for segment in series.segments:
        writer = mask_files.get(segment.number)
        created = writer is not None and writer.created
        out.append(segment.as_manifest(segment.masks_name if created else None,
                                       writer.pages_on_disk if writer is not None and created else 0))
    return out
