"""The watched-folder source: files written by a real writer thread into tmp_path, slowly and by renaming."""

from __future__ import annotations

import os
import shutil
import statistics
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from sam4em_live.config import SourceConfig
from sam4em_live.frames import Frame
from sam4em_live.sources.base import EndOfStream, FrameSource
from sam4em_live.sources.registry import SourceContext, build_source
from sam4em_live.sources.watched_folder import WatchedFolderOptions, WatchedFolderSource
from tests.instrument_files import dm4_bytes


def _frames(n: int, shape=(128, 160), seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 4000, shape, dtype=np.uint16) for _ in range(n)]


def _tiff_bytes(pixels: np.ndarray) -> bytes:
    import io

    out = io.BytesIO()
    tifffile.imwrite(out, pixels)
    return out.getvalue()


def _png_bytes(pixels: np.ndarray) -> bytes:
    import io

    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


class Writer(threading.Thread):
    """An acquisition program: writes each frame file (in ``chunks`` with ``pause_s`` between, or under a
    temporary name then renamed) and notes when each became complete."""

    def __init__(self, folder: Path, blobs: list[tuple[str, bytes]], chunks: int = 1, pause_s: float = 0.0,
                 rename: bool = False, between_s: float = 0.05, long_pause_every: int = 0) -> None:
        super().__init__(daemon=True)
        self.folder, self.blobs, self.chunks, self.pause_s = folder, blobs, chunks, pause_s
        self.rename, self.between_s, self.long_pause_every = rename, between_s, long_pause_every
        self.completed_at: dict[str, float] = {}

    def run(self) -> None:
        for k, (name, blob) in enumerate(self.blobs):
            target = self.folder / name
            path = target.with_name(name + ".tmp") if self.rename else target
            step = -(-len(blob) // self.chunks)
            with open(path, "wb") as f:
                for c in range(self.chunks):
                    f.write(blob[c * step:(c + 1) * step])
                    f.flush()
                    os.fsync(f.fileno())
                    if c < self.chunks - 1:
                        long = self.long_pause_every and k % self.long_pause_every == 0 and c == self.chunks // 2
                        time.sleep(0.08 if long else self.pause_s)  # 0.08 s: longer than the settle time
            if self.rename:
                os.replace(path, target)
            self.completed_at[name] = time.monotonic()
            time.sleep(self.between_s)


def _collect(source: FrameSource, n: int, timeout_s: float = 15.0) -> list[tuple[Frame, float]]:
    got: list[tuple[Frame, float]] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        frame = source.next_frame(0.05)
        if frame is not None:
            got.append((frame, time.monotonic()))
    return got


def _source(folder: Path, **options) -> WatchedFolderSource:
    source = WatchedFolderSource(WatchedFolderOptions(path=folder, **options))
    source.open()
    return source


@pytest.mark.parametrize("fmt", ["tif", "png", "dm4"])
def test_slowly_written_files_are_delivered_whole_and_never_partial(tmp_path, fmt):
    frames = _frames(8)
    encode = {"tif": _tiff_bytes, "png": _png_bytes, "dm4": lambda p: dm4_bytes(p, pixel_size=0.5, units="nm")}[fmt]
    blobs = [(f"frame_{i:04d}.{fmt}", encode(f)) for i, f in enumerate(frames)]
    source = _source(tmp_path)
    # 6 chunks 5 ms apart, and every other file stalls 80 ms halfway (longer than settle_s = 20 ms)
    writer = Writer(tmp_path, blobs, chunks=6, pause_s=0.005, long_pause_every=2)
    writer.start()
    got = _collect(source, len(frames))
    writer.join()
    assert [f.index for f, _ in got] == list(range(len(frames)))
    for (frame, _), sent in zip(got, frames, strict=True):
        np.testing.assert_array_equal(frame.pixels, sent)  # whole, never a partly written file
    assert source.counters.rejected == 0 and source.counters.gaps == 0
    assert source.series is not None and source.series.metadata["frame_format"] == {"tif": "tiff", "png": "png",
                                                                                        "dm4": "gatan-dm"}[fmt]
    if fmt == "dm4":
        assert source.series.calibration.pixel_size_nm == pytest.approx(0.5)


@pytest.mark.parametrize("complete_when", ["renamed", "stable"])
def test_frames_are_delivered_within_50_ms_of_their_file_being_complete(tmp_path, complete_when):
    frames = _frames(30, shape=(512, 512))
    blobs = [(f"{i:06d}.tif", _tiff_bytes(f)) for i, f in enumerate(frames)]
    source = _source(tmp_path, complete_when=complete_when)
    writer = Writer(tmp_path, blobs, rename=complete_when == "renamed", between_s=0.04)
    writer.start()
    got = _collect(source, len(frames))
    writer.join()
    assert [f.index for f, _ in got] == list(range(len(frames)))
    latencies_ms = [(at - writer.completed_at[f"{f.index:06d}.tif"]) * 1000 for f, at in got]
    median, worst = statistics.median(latencies_ms), max(latencies_ms)
    print(f"watched folder ({complete_when}) 512^2 TIFF: latency median {median:.1f} ms, "
          f"p90 {sorted(latencies_ms)[int(0.9 * len(latencies_ms))]:.1f} ms, max {worst:.1f} ms")
    assert median < 50.0
    assert worst < 250.0  # a shared 2-core machine; the median is the target


def test_renamed_into_place_ignores_temporary_names(tmp_path):
    frames = _frames(3)
    source = _source(tmp_path, complete_when="renamed")
    (tmp_path / "000000.tif.part").write_bytes(_tiff_bytes(frames[0])[:100])  # a download in progress
    (tmp_path / ".000001.tif").write_bytes(b"hidden")
    writer = Writer(tmp_path, [(f"{i:06d}.tif", _tiff_bytes(f)) for i, f in enumerate(frames)], rename=True)
    writer.start()
    got = _collect(source, 3)
    writer.join()
    for (frame, _), sent in zip(got, frames, strict=True):
        np.testing.assert_array_equal(frame.pixels, sent)
    time.sleep(0.05)
    assert source.next_frame(0.1) is None
    assert source.counters.rejected == 0


def test_existing_files_gaps_late_and_odd_frames_are_counted(tmp_path):
    frames = _frames(8)
    tifffile.imwrite(tmp_path / "000000.tif", frames[0])  # there before we attach: skipped
    (tmp_path / "notes.txt").write_text("not a frame")
    source = _source(tmp_path, settle_s=0.01)
    for i in (1, 2, 5):
        tifffile.imwrite(tmp_path / f"{i:06d}.tif", frames[i])
    got = _collect(source, 3)
    assert [f.index for f, _ in got] == [1, 2, 5]
    assert source.counters.gaps == 2
    tifffile.imwrite(tmp_path / "000003.tif", frames[3])  # too late: frame 5 is out
    tifffile.imwrite(tmp_path / "000006.tif", frames[6][:64])  # another size
    tifffile.imwrite(tmp_path / "000007.tif", frames[7])
    got = _collect(source, 1)
    time.sleep(0.05)
    assert source.next_frame(0.1) is None
    assert [f.index for f, _ in got] == [7]
    assert source.counters.rejected_by_reason == {"late_file": 1, "size_mismatch": 1}
    assert source.counters.frames == 4


def test_include_existing_streams_what_is_already_there(tmp_path):
    frames = _frames(3)
    for i, f in enumerate(frames):
        tifffile.imwrite(tmp_path / f"{i:06d}.tif", f)
    source = _source(tmp_path, include_existing=True, settle_s=0.01)
    assert [f.index for f, _ in _collect(source, 3)] == [0, 1, 2]


def test_a_file_that_never_completes_is_rejected_after_give_up(tmp_path):
    source = _source(tmp_path, settle_s=0.01, give_up_s=0.2)
    (tmp_path / "000000.tif").write_bytes(_tiff_bytes(_frames(1)[0])[:5000])  # the writer died mid-file
    assert _collect(source, 1, timeout_s=0.6) == []
    assert source.counters.rejected_by_reason == {"unreadable": 1}


def test_a_gatan_insitu_tree_is_followed_recursively(tmp_path):
    frames = _frames(6, shape=(64, 64))
    source = _source(tmp_path, recursive=True, settle_s=0.01)
    k = 0
    for second in range(3):
        folder = tmp_path / "Hour_00" / "Minute_00" / f"Second_{second:02d}"
        folder.mkdir(parents=True)
        for frame_no in range(2):
            name = f"Capture 1_Hour_00_Minute_00_Second_{second:02d}_Frame_{frame_no:04d}.dm4"
            (folder / name).write_bytes(dm4_bytes(frames[k], pixel_size=1.2, units="nm"))
            k += 1
    got = _collect(source, 6)
    assert [f.index for f, _ in got] == list(range(6))
    for (frame, _), sent in zip(got, frames, strict=True):
        np.testing.assert_array_equal(frame.pixels, sent)


def test_folder_cleared_and_recreated_starts_a_new_series(tmp_path):
    folder = tmp_path / "acq"
    folder.mkdir()
    source = _source(folder, settle_s=0.01)
    tifffile.imwrite(folder / "000000.tif", _frames(1)[0])
    (first, _), = _collect(source, 1)
    shutil.rmtree(folder)  # the acquisition program restarts and clears its folder
    assert source.next_frame(0.05) is None
    folder.mkdir()
    tifffile.imwrite(folder / "000000.tif", _frames(1, seed=1)[0])
    (second, _), = _collect(source, 1)
    assert second.series_id != first.series_id
    assert source.counters.series_started == 2 and source.counters.series_ended == 1


def test_idle_ends_the_series_when_asked(tmp_path):
    source = WatchedFolderSource(WatchedFolderOptions(path=tmp_path, settle_s=0.01, end_after_idle_s=0.2),
                                 stop_at_series_end=True)
    source.open()
    tifffile.imwrite(tmp_path / "000000.tif", _frames(1)[0])
    assert len(_collect(source, 1)) == 1
    with pytest.raises(EndOfStream):
        _collect(source, 1, timeout_s=1.0)


def test_chosen_from_the_config_with_calibration(tmp_path):
    source = build_source(SourceConfig(kind="watched-folder", path=str(tmp_path), fps=40.0, pixel_size_nm=0.7,
                                       settle_s=0.01), SourceContext())
    assert isinstance(source, WatchedFolderSource) and isinstance(source, FrameSource)
    source.open()
    tifffile.imwrite(tmp_path / "000000.tif", _frames(1)[0])
    (frame, _), = _collect(source, 1)
    assert frame.calibration.fps == 40.0 and frame.calibration.pixel_size_nm == 0.7
    assert source.series is not None and source.series.time_base.value == "fps"


def test_the_service_tracks_a_watched_folder_chosen_from_the_config(tmp_path):
    """``[source] kind = "watched-folder"`` end to end: a writer thread -> service -> run folder."""
    import json

    import pandas as pd

    from sam4em_live.config import ServiceConfig
    from sam4em_live.particles import Prompt
    from sam4em_live.service.builder import build_service
    from tests.conftest import disk_video

    frames, _ = disk_video(n_frames=10)
    folder = tmp_path / "acquisition"
    folder.mkdir()
    cfg = ServiceConfig.from_mapping({
        "source": {"kind": "watched-folder", "path": str(folder), "fps": 20.0, "pixel_size_nm": 0.5,
                   "end_after_idle_s": 1.0},
        "segmenter": {"backend": "threshold"}, "recorder": {"out_dir": str(tmp_path / "runs")},
        "publisher": {"enabled": False}, "control": {"enabled": False},
        "pipeline": {"backpressure": "every-frame"},
    })
    built = build_service(cfg, edits=[Prompt(1, 0, ((30.0, 40.0),), (1,))], run_id="watched",
                          stop_at_series_end=True)
    writer = Writer(folder, [(f"img_{i:04d}.tif", _tiff_bytes(f)) for i, f in enumerate(frames)], chunks=3,
                    pause_s=0.005, rename=False, between_s=0.05)
    threading.Timer(0.5, writer.start).start()  # the acquisition starts after the service is up
    built.service.run()
    writer.join()
    assert built.service.error is None
    table = pd.read_csv(tmp_path / "runs" / "watched" / "trajectories.csv")
    assert sorted(table.frame) == list(range(10))
    np.testing.assert_allclose(table.t_s, table.frame / 20.0)
    np.testing.assert_allclose(table.x.to_numpy(), 30.0 + table.frame.to_numpy(), atol=0.6)
    run = json.loads((tmp_path / "runs" / "watched" / "run.json").read_text())
    assert "watched-folder" in json.dumps(run)


def test_single_frame_instrument_files_are_frames_too(tmp_path):
    """SerialEM and others can save one MRC per frame: any one-frame file of the reader registry is a frame."""
    mrcfile = pytest.importorskip("mrcfile", reason="mrcfile writes the MRC test files (the 'test' extra)")
    frames = _frames(3, shape=(48, 64))
    source = _source(tmp_path, settle_s=0.01)
    for i, f in enumerate(frames):
        with mrcfile.new(tmp_path / f"tmp_{i}.mrc.tmp") as mrc:  # written under a temporary name, then renamed
            mrc.set_data(f)
            mrc.voxel_size = 4.0  # angstrom
        os.replace(tmp_path / f"tmp_{i}.mrc.tmp", tmp_path / f"frame_{i:03d}.mrc")
    got = _collect(source, 3)
    assert [f.index for f, _ in got] == [0, 1, 2]
    for (frame, _), sent in zip(got, frames, strict=True):
        np.testing.assert_array_equal(frame.pixels, sent)
    assert source.series is not None and source.series.metadata["frame_format"] == "mrc"
    assert source.series.calibration.pixel_size_nm == pytest.approx(0.4)
