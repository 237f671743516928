"""Who writes masks.tif: the child process (live) and the writer thread (batch) write the same files.

Real recorders into real folders, real child processes; the files are compared byte for byte.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from sam4em_live.frames import Calibration
from sam4em_live.io.label_stack_layout import LabelStackLayout
from sam4em_live.io.mask_tiff import read_label_stack
from sam4em_live.particles import ParticleMask
from sam4em_live.sinks.mask_process import MaskWriterDied
from sam4em_live.sinks.recorder import Recorder
from sam4em_live.sinks.recorder.mask_writers import MaskWriterInline, MaskWriterKind
from tests.test_recorder import SHAPE, disk, make_result, run_info

CAL = Calibration(pixel_size_nm=2.0, fps=100.0)


def _record(root: Path, mask_writer: MaskWriterKind) -> Path:
    """Frames 0-39 with a gap, then a second series (another id: its own masks-s1.tif), one status in between."""
    recorder = Recorder(root, mask_writer=mask_writer)
    recorder.open(run_info(calibration=CAL))
    for i in [*range(12), *range(15, 40)]:  # frames 12-14 dropped upstream: empty pages
        recorder.consume(make_result(i, CAL, timestamp_s=1000.0 + i / 100))
        if i == 20:
            recorder.on_status({"state": "streaming", "frames_processed": i})
    for i in range(5, 25):
        result = make_result(i, CAL, timestamp_s=2000.0 + i / 100)
        recorder.consume(dataclasses.replace(result, frame=dataclasses.replace(result.frame, series_id="series-2")))
    recorder.close()
    assert recorder.run_dir is not None
    return recorder.run_dir


def test_the_writer_thread_writes_the_files_the_child_process_writes(tmp_path: Path) -> None:
    by_child = _record(tmp_path / "child", "process")
    by_thread = _record(tmp_path / "thread", "thread")
    for name in ("masks.tif", "masks-s1.tif"):
        assert (by_thread / name).read_bytes() == (by_child / name).read_bytes(), name
    labels, frames = read_label_stack(by_thread / "masks.tif")
    assert frames == list(range(40)) and not labels[12:15].any() and labels[0].any()
    child, thread = (json.loads((run / "run.json").read_text()) for run in (by_child, by_thread))
    assert thread["status"] == child["status"] == "complete"
    for key in ("counts", "mask_frames", "series_list", "files"):
        assert thread[key] == child[key], key
    assert thread["counts"]["mask_pages"] == 40 and [s["mask_pages"] for s in thread["series_list"]] == [40, 25]  # series 2 from page_origin(5) = 0


def test_an_inline_writer_that_fails_ends_masks_tif_at_its_last_whole_page(tmp_path: Path) -> None:
    """A page the writer refuses (frames must increase) stops masks.tif as a child's death would: the pages
    written before it stay, readable; every later call says why."""
    writer = MaskWriterInline()
    path = tmp_path / "masks.tif"
    writer.open(path, 1, LabelStackLayout(2.0, 100.0, 0, "series-1"))
    mask = [ParticleMask.from_full(1, disk((20, 20), 5), score=1.0)]
    for frame in range(6):
        writer.append_masks(SHAPE, mask, frame)
    writer.flush()
    assert writer.pages_on_disk == 6
    writer.append_masks(SHAPE, mask, 3)  # back in time: the page writer refuses it
    with pytest.raises(MaskWriterDied, match="frame 3 after frame 5"):
        writer.push()
    with pytest.raises(MaskWriterDied):
        writer.close()
    labels, frames = read_label_stack(path)
    assert frames == list(range(6)) and np.all(labels.reshape(6, -1).max(axis=1) == 1)
