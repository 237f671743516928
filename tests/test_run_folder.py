"""The one run-folder reader: a folder the recorder wrote reads back whole; damaged ones fail clearly."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
import pytest
import tifffile

from sam4em_live.frames import Calibration
from sam4em_live.io.run_folder import RunFolder, RunFolderError
from sam4em_live.io.run_manifest import RANDOM_WEIGHTS_WARNING
from sam4em_live.sinks.recorder import Recorder
from tests.test_recorder import SHAPE, make_result, run_info

if TYPE_CHECKING:
    from pathlib import Path


def test_a_recorded_run_reads_back(tmp_path: Path) -> None:
    calibration = Calibration(pixel_size_nm=2.0, fps=50.0)
    recorder = Recorder(tmp_path)
    recorder.open(run_info(calibration=calibration, random_weights=True))
    indices = [0, 1, 2, 5, 6]
    for i in indices:
        recorder.consume(make_result(i, calibration))
    recorder.close()
    assert recorder.run_dir is not None

    folder = RunFolder.open(recorder.run_dir)
    assert folder.manifest["status"] == "complete" and folder.manifest_error is None
    assert folder.calibration == calibration
    assert folder.warnings == (RANDOM_WEIGHTS_WARNING,)
    run = folder.trajectories()
    assert run.calibration == calibration and run.warnings == (RANDOM_WEIGHTS_WARNING,)
    assert sorted(set(run.table.frame)) == indices and list(run.table.columns[:4]) == ["frame", "particle", "x", "y"]
    masks = folder.mask_pages()
    assert (masks.pages, masks.page_shape, masks.frames) == (7, SHAPE, tuple(range(7)))  # page k = frame k
    with tifffile.TiffFile(masks.path) as tif:
        assert tif.pages[5].asarray()[12, 10 + 5] == 1  # page 5 is frame 5: particle 1 at x = 10 + 5
        assert not tif.pages[3].asarray().any()  # frame 3 had no result: an empty page


@pytest.mark.parametrize("mask_frames, expected", [
    (None, (0, 1, 2)),  # absent: contiguous from 0
    ([[4, 5], [9, 9]], (4, 5, 9)),  # the recorder's inclusive ranges
    ([3, 7, 8], (3, 7, 8)),  # a plain list
])
def test_mask_frames_encodings(tmp_path: Path, mask_frames, expected) -> None:
    tifffile.imwrite(tmp_path / "masks.tif", np.zeros((3, 8, 9), np.uint16), photometric="minisblack")
    manifest = {} if mask_frames is None else {"mask_frames": mask_frames}
    (tmp_path / "run.json").write_text(json.dumps(manifest))
    masks = RunFolder.open(tmp_path).mask_pages()
    assert masks.frames == expected and masks.page_shape == (8, 9)


@pytest.mark.parametrize("manifest, message", [
    ('{"mask_frames": [0, 1]}', "lists 2 frames but masks.tif has 3 pages"),
    ('{"mask_frames": "0-2"}', "must be a list"),
    ('{"mask_frames": [[0, "x"]]}', "cannot read run.json mask_frames"),
    ('{"status": "runn', "run.json cannot be read"),  # cut short: which page is which frame is unknown
    ("[1, 2, 3]", "run.json cannot be read"),
])
def test_mask_pages_refuse_what_they_cannot_map(tmp_path: Path, manifest: str, message: str) -> None:
    tifffile.imwrite(tmp_path / "masks.tif", np.zeros((3, 8, 9), np.uint16), photometric="minisblack")
    (tmp_path / "run.json").write_text(manifest)
    with pytest.raises(RunFolderError, match=message):
        RunFolder.open(tmp_path).mask_pages()


def test_an_unreadable_manifest_still_gives_the_trajectories(tmp_path: Path) -> None:
    (tmp_path / "trajectories.csv").write_text("frame,particle,x,y\n1,1,2.0,3.0\n0,1,1.0,3.0\n")
    (tmp_path / "run.json").write_text('{"series": {"calibration": {"fps": 5')
    folder = RunFolder.open(tmp_path)
    assert folder.manifest == {} and "JSONDecodeError" in (folder.manifest_error or "")
    run = folder.trajectories()
    assert run.calibration == Calibration() and run.table.frame.tolist() == [0, 1]  # sorted by particle, frame


def test_missing_parts_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such run folder"):
        RunFolder.open(tmp_path / "nowhere")
    folder = RunFolder.open(tmp_path)
    assert not RunFolder.holds_trajectories(tmp_path) and folder.manifest == {} and folder.manifest_error is None
    with pytest.raises(FileNotFoundError, match=r"trajectories\.csv"):
        folder.trajectories()
    with pytest.raises(FileNotFoundError, match=r"masks\.tif"):
        folder.mask_pages()


def _left_running(run_dir: Path, pid: int) -> None:
    """Make a closed run look as a kill leaves it: run.json "running" (an older snapshot), a cut last row."""
    manifest = json.loads((run_dir / "run.json").read_text())
    manifest.update(status="running", closed_utc=None, writer={"pid": pid, "host": manifest["writer"]["host"]})
    manifest["counts"]["particle_rows"] -= 2  # the snapshot before the last flush
    manifest["counts"]["mask_pages"] -= 1
    *head, (first, last) = manifest["mask_frames"]
    manifest["mask_frames"] = [*head, [first, last - 1]]
    (run_dir / "run.json").write_text(json.dumps(manifest))
    with open(run_dir / "trajectories.csv", "a") as fh:
        fh.write("99,1,12.5")  # a row the kill cut mid-line


def test_an_interrupted_run_is_recognised_and_read_from_its_files(tmp_path: Path) -> None:
    import subprocess
    import sys

    calibration = Calibration(pixel_size_nm=2.0, fps=50.0)
    recorder = Recorder(tmp_path)
    recorder.open(run_info(calibration=calibration))
    for i in range(6):
        recorder.consume(make_result(i, calibration))
    recorder.close()
    run_dir = recorder.run_dir
    assert run_dir is not None and RunFolder.open(run_dir).check().agrees
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _left_running(run_dir, int(dead.stdout))

    folder = RunFolder.open(run_dir)
    assert folder.manifest["status"] == "running" and folder.status == "interrupted" and not folder.closed
    check = folder.check()
    assert check.cut_line and check.particle_rows == 9 and check.mask_frames == tuple(range(6))
    assert check.agrees and "killed or crashed" in (check.reason or "")  # an older snapshot: files hold more
    table = folder.trajectories().table
    assert len(table) == 9 and 99 not in set(table.frame)  # the cut row is left out, not read as NaN
    pages = folder.mask_pages()
    assert pages.pages == 6 and pages.frames == tuple(range(6))  # each page's own frame, not run.json's list


def test_a_run_whose_writer_lives_is_running_and_a_closed_one_must_match_exactly(tmp_path: Path) -> None:
    import os

    recorder = Recorder(tmp_path)
    recorder.open(run_info())
    recorder.consume(make_result(0, Calibration()))
    recorder.close()
    run_dir = recorder.run_dir
    assert run_dir is not None
    _left_running(run_dir, os.getpid())
    folder = RunFolder.open(run_dir)
    assert folder.status == "running" and folder.writer_alive
    manifest = json.loads((run_dir / "run.json").read_text())
    manifest["status"] = "complete"  # a closed run.json whose counts trail the files: a disagreement
    (run_dir / "run.json").write_text(json.dumps(manifest))
    check = RunFolder.open(run_dir).check()
    assert not check.agrees and any("particle_rows" in d for d in check.disagreements)
