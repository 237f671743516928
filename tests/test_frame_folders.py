"""Recordings saved one file per frame: TIFF/JPEG/PNG/DigitalMicrograph folders and Gatan in-situ trees.

Real files in tmp_path; the DigitalMicrograph frames are copies of the real fixture
``../shared/fixtures/formats/test-1_2D.dm4`` (skipped with the reason where that folder is absent).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image

from sam4em_live.io.frame_folder import FileSeriesReader
from sam4em_live.io.frame_readers import ReplayError
from sam4em_live.io.insitu_folder import InSituTreeReader
from sam4em_live.io.reader_registry import open_reader
from sam4em_live.io.tiff_io import write_tiff_stack
from sam4em_live.io.vendor_readers import read_single_frame
from sam4em_live.service.runs import run_track
from sam4em_live.sources.base import EndOfStream
from sam4em_live.sources.replay import ReplaySource
from tests.conftest import disk_video
from tests.instrument_files import write_dm4

FORMATS_DIR = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "formats"


@pytest.fixture
def dm4_frame() -> Path:
    path = FORMATS_DIR / "test-1_2D.dm4"
    if not path.is_file():
        pytest.skip(f"instrument file fixtures not found at {FORMATS_DIR} (shared/fixtures/formats, see its README)")
    return path


def _prompts(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps({"prompts": [{"frame": 0, "particle": 1, "points": [[30, 40]], "labels": [1]}]}))
    return path


# ------------------------------------------------------------------ TIFF frame folders


def test_a_folder_of_tiff_frames_replays_with_the_pixel_size_of_its_tags(tmp_path):
    frames, truth = disk_video(n_frames=8)
    folder = tmp_path / "export"
    folder.mkdir()
    for i, frame in enumerate(frames):  # DigitalMicrograph's "export as TIFF series" layout
        write_tiff_stack(folder / f"clip_{i:04d}.tif", frame, pixel_size_nm=1.5)
    reader = open_reader(folder)
    try:
        assert isinstance(reader, FileSeriesReader)
        assert (reader.n_frames, reader.shape, reader.dtype) == (8, frames.shape[1:], "<u2")
        np.testing.assert_array_equal(np.stack([reader.read(i) for i in range(8)]), frames)
        assert reader.calibration.pixel_size_nm == pytest.approx(1.5)
        assert reader.metadata["format"] == "tiff-folder"
        assert reader.metadata["calibration_missing"] == ["fps"]
    finally:
        reader.close()
    out = tmp_path / "run"
    run_track(folder, _prompts(tmp_path), out, backend="threshold", fps=80.0, progress=False)
    run = json.loads((out / "run.json").read_text())
    assert run["series"]["calibration"]["pixel_size_nm"] == pytest.approx(1.5)
    assert run["series"]["calibration"]["fps"] == 80.0
    table = pd.read_csv(out / "trajectories.csv")
    np.testing.assert_allclose(table.x, truth[:, 0, 0], atol=0.6)
    np.testing.assert_allclose(table.x_nm, table.x * 1.5, rtol=1e-6)
    np.testing.assert_allclose(table.t_s, table.frame / 80.0)


def test_a_multi_page_tiff_in_a_frame_folder_is_a_bad_frame(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    frames, _ = disk_video(n_frames=3)
    for i, frame in enumerate(frames):
        tifffile.imwrite(folder / f"{i:03d}.tif", frame)
    tifffile.imwrite(folder / "001.tif", frames[:2])  # two pages where one frame belongs
    reader = open_reader(folder)
    with pytest.raises(ReplayError, match="2 pages; a frame file must hold one image"):
        reader.read(1)


# ------------------------------------------------------------------ what a folder may hold (issue 17)


def _png(path: Path, value: int, shape=(20, 30)) -> None:
    grey = np.full(shape, value, dtype=np.uint8)
    grey[0, 0] = 255 - value
    Image.fromarray(grey).save(path)


def test_a_folder_mixing_frame_formats_is_refused_naming_each(tmp_path):
    folder = tmp_path / "mixed"
    folder.mkdir()
    for i in range(20):
        Image.fromarray(np.full((20, 30, 3), i, np.uint8)).save(folder / f"{i:06d}.jpeg")
    for i in range(20, 25):
        _png(folder / f"{i:06d}.png", i)
    for i in range(25, 28):
        tifffile.imwrite(folder / f"{i:06d}.tif", np.full((20, 30), i, np.uint8))
    (folder / "notes.txt").write_text("session notes")
    with pytest.raises(ReplayError, match=r"mixed frame formats \(20 JPEG, 5 PNG, 3 TIFF\).*one format") as info:
        ReplaySource(folder, as_fast_as_possible=True).open()
    assert str(folder) in str(info.value)
    # .jpg and .jpeg are one format, as are .tif and .tiff
    spellings = tmp_path / "spellings"
    spellings.mkdir()
    tifffile.imwrite(spellings / "0.tif", np.zeros((4, 4), np.uint8))
    tifffile.imwrite(spellings / "1.TIFF", np.ones((4, 4), np.uint8))
    assert open_reader(spellings).n_frames == 2


def test_files_that_are_not_frames_are_ignored_and_reported_in_the_log_and_run_json(tmp_path, caplog):
    frames, _ = disk_video(n_frames=6, dtype=np.uint8)
    folder = tmp_path / "session"
    folder.mkdir()
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(folder / f"{i:06d}.png")
    (folder / "notes.txt").write_text("beam current 3 nA")
    (folder / "acquisition.json").write_text("{}")
    (folder / ".DS_Store").write_bytes(b"\x00")
    (folder / "thumbnails").mkdir()
    with caplog.at_level(logging.WARNING):
        reader = open_reader(folder)
    assert reader.n_frames == 6
    expected = [".DS_Store", "acquisition.json", "notes.txt", "thumbnails/"]
    assert reader.metadata["ignored_files"] == expected and reader.metadata["ignored_count"] == 4
    (warning,) = [r.getMessage() for r in caplog.records if "ignoring" in r.getMessage()]
    assert "ignoring 4 entries that are not frames" in warning and "notes.txt" in warning
    out = tmp_path / "run"
    run_track(folder, _prompts(tmp_path), out, backend="threshold", fps=80.0, progress=False)
    run = json.loads((out / "run.json").read_text())
    assert run["series"]["metadata"]["ignored_files"] == expected
    assert run["series"]["metadata"]["n_frames"] == 6


# ------------------------------------------------------------------ DigitalMicrograph frames


def test_a_folder_of_dm4_frames_reads_each_like_rosettasciio(tmp_path, dm4_frame):
    folder = tmp_path / "dm"
    folder.mkdir()
    for i in range(5):
        shutil.copy(dm4_frame, folder / f"frame_{i:04d}.dm4")
    reader = open_reader(folder)
    try:
        assert isinstance(reader, FileSeriesReader) and reader.metadata["format"] == "gatan-dm-folder"
        assert (reader.n_frames, reader.shape, reader.dtype) == (5, (2, 2), "<i2")
        reference = read_single_frame(dm4_frame)[0]
        for i in range(5):
            np.testing.assert_array_equal(reader.read(i), reference)
        assert reader.fast_reads == 5  # siblings of one layout are read at the first file's image offset
    finally:
        reader.close()


# ------------------------------------------------------------------ Gatan in-situ trees


def build_insitu_tree(root: Path, frame: Path, per_second: list[int], name: str = "Capture 1",
                      minutes: int = 1) -> list[Path]:
    """A GMS in-situ dataset: ``Hour_00/Minute_MM/Second_SS/<name>_Hour_.._Frame_NNNN.dm4`` (+ a director image)."""
    files: list[Path] = []
    for second, count in enumerate(per_second):
        minute, sec = divmod(second, 60) if minutes > 1 else (0, second)
        folder = root / "Hour_00" / f"Minute_{minute:02d}" / f"Second_{sec:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(count):
            path = folder / f"{name}_Hour_00_Minute_{minute:02d}_Second_{sec:02d}_Frame_{k:04d}.dm4"
            shutil.copy(frame, path)
            files.append(path)
    shutil.copy(frame, root / f"{name}.dm4")  # the dataset's "director" image: not a frame
    return files


def test_an_insitu_tree_replays_in_time_order_with_the_rate_of_its_full_seconds(tmp_path, dm4_frame, caplog):
    root = tmp_path / "Capture 1"
    expected = build_insitu_tree(root, dm4_frame, [3] + [10] * 11 + [4])  # first and last second cut
    (root / "Hour_00" / "Minute_00" / "Second_05" / "Thumbs.db").write_bytes(b"\x00")
    with caplog.at_level(logging.WARNING):
        reader = open_reader(root)
    try:
        assert isinstance(reader, InSituTreeReader)
        # Second_10 after Second_09 and Frame_0010 after Frame_0009: numbers, not listing or text order
        assert reader.files == expected and reader.n_frames == 3 + 110 + 4
        assert reader.calibration.fps == 10.0 and reader.calibration.pixel_size_nm is None
        assert reader.metadata["ignored_files"] == ["Capture 1.dm4", "Hour_00/Minute_00/Second_05/Thumbs.db"]
        assert reader.metadata["calibration_missing"] == ["pixel_size_nm"]
    finally:
        reader.close()
    messages = " | ".join(r.getMessage() for r in caplog.records)
    assert "no pixel size" in messages and "--pixel-size-nm" in messages and "ignoring 2 entries" in messages
    out = tmp_path / "run"
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"prompts": [{"frame": 0, "particle": 1, "box": [0, 0, 1, 1]}]}))
    run_track(root, prompts, out, backend="threshold", pixel_size_nm=0.2, progress=False)
    run = json.loads((out / "run.json").read_text())
    series = run["series"]
    assert series["metadata"]["format"] == "gatan-insitu" and series["metadata"]["n_frames"] == 117
    assert (tuple(series["shape"]), series["dtype"]) == ((2, 2), "<i2")
    assert series["calibration"]["fps"] == 10.0 and series["calibration"]["pixel_size_nm"] == 0.2
    assert run["time_base"] == "fps"


def test_a_short_insitu_tree_has_no_rate_and_says_so(tmp_path, dm4_frame):
    root = tmp_path / "short"
    build_insitu_tree(root, dm4_frame, [4, 6])
    reader = open_reader(root)
    assert reader.calibration.fps is None and "fps" in reader.metadata["calibration_missing"]
    reader.close()


def test_an_insitu_frame_of_another_layout_is_read_by_rosettasciio(tmp_path, dm4_frame):
    root = tmp_path / "odd"
    files = build_insitu_tree(root, dm4_frame, [5])
    shutil.copy(FORMATS_DIR / "test-1_2D.dm3", files[2])  # same image, other file layout (DM3)
    reader = open_reader(root)
    try:
        got = [reader.read(i) for i in range(5)]
        assert reader.fast_reads == 4
        for pixels in got:
            np.testing.assert_array_equal(pixels, got[0])
    finally:
        reader.close()


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def test_insitu_frames_written_with_a_calibration_keep_their_order_values_and_pixel_size(tmp_path):
    """Distinct 64x48 frames (tests/instrument_files.py), each read through the sibling path, equal rosettasciio's."""
    frames = np.random.default_rng(7).integers(0, 4000, (14, 48, 64)).astype(np.uint16)
    root = tmp_path / "Capture 2"
    k = 0
    for second, count in enumerate([2, 5, 5, 2]):
        folder = root / "Hour_00" / "Minute_00" / f"Second_{second:02d}"
        folder.mkdir(parents=True)
        for n in range(count):
            write_dm4(folder / f"Capture 2_Hour_00_Minute_00_Second_{second:02d}_Frame_{n:04d}.dm4", frames[k],
                      pixel_size=0.12, units="nm")
            k += 1
    reader = open_reader(root)
    try:
        assert (reader.n_frames, reader.shape, reader.dtype) == (14, (48, 64), "<u2")
        assert reader.calibration.pixel_size_nm == pytest.approx(0.12) and reader.calibration.fps == 5.0
        got = np.stack([reader.read(i) for i in range(14)])
        assert reader.fast_reads == 14
    finally:
        reader.close()
    np.testing.assert_array_equal(got, frames)
    for i in (0, 6, 13):
        np.testing.assert_array_equal(read_single_frame(reader.files[i])[0], frames[i])


def _rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


@pytest.mark.slow
def test_an_insitu_tree_of_1200_full_size_frames_streams_with_bounded_memory(tmp_path):
    """1,200 frames of 1024² uint16 (2.4 GB of pixels, hard links of one file on disk): RSS grows <= 50 MB."""
    frame = np.random.default_rng(1).integers(0, 4000, (1024, 1024)).astype(np.uint16)
    one = write_dm4(tmp_path / "frame.dm4", frame, pixel_size=0.2, units="nm")
    root = tmp_path / "long"
    for second in range(60):
        folder = root / "Hour_00" / f"Minute_{second // 30:02d}" / f"Second_{second % 30:02d}"
        folder.mkdir(parents=True)
        for n in range(20):
            os.link(one, folder / f"long_Hour_00_Minute_{second // 30:02d}_Second_{second % 30:02d}_Frame_{n:04d}.dm4")
    warm = ReplaySource(root, as_fast_as_possible=True)  # imports rosettasciio/dask before the baseline
    warm.open()
    warm.close()
    before = _rss_bytes()
    source = ReplaySource(root, as_fast_as_possible=True)
    source.open()
    count, peak, checksum = 0, before, 0
    while True:
        try:
            got = source.next_frame(1.0)
        except EndOfStream:
            break
        if got is not None:
            count += 1
            checksum += int(got.pixels[::97, ::89].sum())
            if count % 50 == 0:
                peak = max(peak, _rss_bytes())
    source.close()
    assert count == 1200 and source.counters.rejected == 0
    assert checksum == 1200 * int(frame[::97, ::89].sum())
    assert peak - before <= 50 * 2**20, f"RSS grew by {(peak - before) / 2**20:.1f} MiB"
