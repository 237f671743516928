"""Series in one run (issue 17, requirement 3): a camera restart, a shape change and a new series id.

End to end with real parts: a camera publishing over ZeroMQ on loopback (port 0), the service with the
embedded backend, the recorder writing a real run folder in tmp_path. Every row must carry its series,
no (series, frame, particle) row may repeat, and every file must agree with run.json.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from sam4em_live.config import ServiceConfig
from sam4em_live.frames import Calibration, SeriesInfo
from sam4em_live.io.mask_tiff import complete_page_frames
from sam4em_live.io.napari_tracks import NAPARI_TRACKS
from sam4em_live.io.run_folder import RunFolder
from sam4em_live.particles import Prompt
from sam4em_live.service.builder import build_service
from sam4em_live.sinks.series_segments import SeriesSegments
from sam4em_live.sources.camera import FramePublisher
from tests.conftest import disk_video

PROMPTS = [Prompt(1, 0, ((30.0, 40.0),), (1,)), Prompt(2, 0, ((70.0, 60.0),), (1,))]
CAMERA = Calibration(pixel_size_nm=2.0, fps=50.0)


def _send(camera: FramePublisher, frames: np.ndarray, series_id: str, first_index: int) -> None:
    for offset, pixels in enumerate(frames):
        camera.send_frame(pixels.copy(), series_id, first_index + offset, time.time(), CAMERA)
        time.sleep(0.004)


def _record_restart_shape_change_and_new_id(out: Path) -> Path:
    """30 frames of "cam"; "cam" restarts at 0 (20 frames); its frames shrink mid-series (15); "cam2" (12)."""
    big, _ = disk_video(n_frames=50, velocity=(0.5, 0.25))
    small, _ = disk_video(n_frames=15, shape=(80, 112), velocity=(0.5, 0.25), seed=1)
    other, _ = disk_video(n_frames=12, velocity=(0.25, 0.5), seed=2)
    camera = FramePublisher("tcp://127.0.0.1:0")
    config = ServiceConfig.from_mapping({
        "source": {"kind": "zmq", "endpoint": camera.endpoint, "rcvhwm_frames": 1000},
        "recorder": {"enabled": True, "out_dir": str(out)}, "publisher": {"enabled": False},
        "control": {"enabled": False}, "pipeline": {"backpressure": "every-frame"},
    })
    built = build_service(config, edits=PROMPTS, stop_at_series_end=True)
    built.service.start()
    try:
        time.sleep(0.5)  # slow joiner
        camera.send_series_start(SeriesInfo("cam", (96, 128), "<u2", CAMERA))
        _send(camera, big[:30], "cam", 0)
        camera.send_series_start(SeriesInfo("cam", (96, 128), "<u2", CAMERA))  # the camera restarts: index 0 again
        _send(camera, big[30:], "cam", 0)
        _send(camera, small, "cam", 20)  # binning changed mid-series: same id, indices go on, smaller frames
        camera.send_series_start(SeriesInfo("cam2", (96, 128), "<u2", CAMERA))
        _send(camera, other, "cam2", 0)
        camera.send_series_end("cam2", len(other))
        assert built.service.wait(60), "the service did not stop at the series end"
    finally:
        built.service.stop()
        camera.close()
    assert built.service.error is None
    assert built.run_dir is not None
    return built.run_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _record_restart_shape_change_and_new_id(tmp_path_factory.mktemp("series"))


def test_every_series_is_listed_with_its_shape_calibration_and_frames(run_dir: Path) -> None:
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["status"] == "complete", manifest["reason"]
    listed = manifest["series_list"]
    assert [(s["series"], s["series_id"], s["started_by"]) for s in listed] == [
        (0, "cam", "first"), (1, "cam", "index_restart"), (2, "cam", "shape_change"), (3, "cam2", "new_series_id")]
    assert [s["shape"] for s in listed] == [[96, 128], [96, 128], [80, 112], [96, 128]]
    assert [s["frames"] for s in listed] == [[0, 29], [0, 19], [20, 34], [0, 11]]
    assert all(s["dtype"] == "<u2" for s in listed)
    assert all(s["calibration"]["pixel_size_nm"] == 2.0 and s["calibration"]["fps"] == 50.0 for s in listed)
    assert [s["masks"] for s in listed] == ["masks.tif", "masks-s1.tif", "masks-s2.tif", "masks-s3.tif"]
    assert manifest["series"]["series_id"] == "cam"  # the run's first series, as before


def test_no_ambiguous_rows_and_every_row_within_its_series(run_dir: Path) -> None:
    table = pd.read_csv(run_dir / "trajectories.csv")
    assert "series" in table.columns and table["series"].notna().all()
    assert int(table.duplicated(["series", "frame", "particle"]).sum()) == 0
    assert int(table.duplicated(["frame", "particle"]).sum()) > 0  # the restart repeats frames: series tells them apart
    listed = {s["series"]: s["frames"] for s in json.loads((run_dir / "run.json").read_text())["series_list"]}
    for series, rows in table.groupby("series"):
        first, last = listed[int(series)]
        assert first <= rows["frame"].min() and rows["frame"].max() <= last
    assert sorted(table["series"].unique()) == [0, 1, 2, 3]
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert events and all(event["series"] in (0, 1, 2, 3) for event in events)
    run = RunFolder.open(run_dir).trajectories()  # refused before: "particle 1 appears twice on frame 0"
    assert len(run.table) == len(table)
    assert list(run.table.sort_values(["series", "particle", "frame"]).index) == list(range(len(table)))
    restart = RunFolder.open(run_dir).trajectories(series=1)
    assert set(restart.table["series"]) == {1} and restart.calibration.fps == 50.0
    assert len(restart.table) == int((table["series"] == 1).sum())
    with pytest.raises(ValueError, match="no series 7"):
        RunFolder.open(run_dir).trajectories(series=7)


def test_every_masks_file_has_one_shape_and_one_page_per_frame(run_dir: Path) -> None:
    manifest = json.loads((run_dir / "run.json").read_text())
    total = 0
    for entry in manifest["series_list"]:
        path = run_dir / entry["masks"]
        first, last = entry["frames"]
        assert entry["mask_first_frame"] == 0
        with tifffile.TiffFile(path) as tif:
            assert tif.is_imagej and tif.imagej_metadata["series"] == entry["series"]
            assert tif.series[0].shape == (last + 1, *entry["shape"])  # page k = frame k of this series
            labels = tif.series[0].asarray()
        assert complete_page_frames(path) == list(range(last + 1)) and entry["mask_pages"] == last + 1
        assert not labels[:first].any()  # frames before the series' first one: empty pages
        assert labels[first:].any()
        total += last + 1
    assert manifest["counts"]["mask_pages"] == 30  # masks.tif's; each series' own in series_list
    assert sum(entry["mask_pages"] for entry in manifest["series_list"]) == total
    assert manifest["mask_frames"] == [[0, 29]]  # masks.tif, as always


def test_every_file_agrees_with_run_json(run_dir: Path) -> None:
    folder = RunFolder.open(run_dir)
    check = folder.check()
    assert check.agrees, check.disagreements
    assert folder.mask_pages(2).page_shape == (80, 112) and folder.mask_pages(2).frames == tuple(range(35))
    tracks = pd.read_csv(run_dir / NAPARI_TRACKS)
    assert len(tracks) == check.particle_rows and not tracks.duplicated(["track_id", "t"]).any()
    assert list(tracks.columns[:4]) == ["track_id", "t", "y", "x"]
    assert json.loads((run_dir / "run.json").read_text())["files"]["napari_tracks"] == NAPARI_TRACKS


@pytest.mark.parametrize("events, expected", [
    ([("a", 0, (4, 4), "<u2"), ("a", 1, (4, 4), "<u2")], [0, 0]),
    ([("a", 5, (4, 4), "<u2"), ("a", 5, (4, 4), "<u2")], [0, 1]),  # a repeated index is a restart too
    ([("a", 0, (4, 4), "<u2"), ("a", 9, (4, 4), "<u2")], [0, 0]),  # a gap is not a new series
    ([("a", 0, (4, 4), "<u2"), ("a", 10**6, (4, 4), "<u2")], [0, 1]),  # a jump past what empty pages fill is
    ([("a", 0, (4, 4), "<u2"), ("a", 1, (4, 4), "<f4")], [0, 0]),  # another pixel type alone: no new series
    ([("a", 0, (4, 4), "<u2"), ("b", 1, (4, 4), "<u2"), ("a", 2, (4, 4), "<u2")], [0, 1, 2]),  # back to an old id
])
def test_series_boundaries(events, expected) -> None:
    segments = SeriesSegments(SeriesInfo("a", (4, 4), "<u2"))
    numbers = [segments.place(sid, index, shape, dtype, Calibration())[0].number
               for sid, index, shape, dtype in events]
    assert numbers == expected


def test_parquet_sink_rows_carry_their_series(tmp_path: Path) -> None:
    from sam4em_live.sinks.parquet import ParquetOptions, ParquetSink
    from tests.test_recorder import make_result, run_info

    sink = ParquetSink(ParquetOptions(path=tmp_path / "rows.parquet"))
    sink.open(run_info(calibration=CAMERA))
    for index in (0, 1, 2, 0, 1):  # the camera restarts after frame 2
        sink.consume(make_result(index, CAMERA))
    sink.close()
    table = pd.read_parquet(tmp_path / "rows.parquet")
    assert table.groupby("series")["frame"].apply(lambda f: sorted(set(f))).to_dict() == {0: [0, 1, 2], 1: [0, 1]}
    assert not table.duplicated(["series", "frame", "particle"]).any()
    assert table.duplicated(["frame", "particle"]).any()


def test_a_restart_without_a_series_start_message_is_a_new_series_too(tmp_path: Path) -> None:
    """A camera that restarts its counter under the same id and says nothing: the index going back tells."""
    frames, _ = disk_video(n_frames=40, velocity=(0.5, 0.25))
    camera = FramePublisher("tcp://127.0.0.1:0")
    config = ServiceConfig.from_mapping({
        "source": {"kind": "zmq", "endpoint": camera.endpoint, "rcvhwm_frames": 1000},
        "recorder": {"enabled": True, "out_dir": str(tmp_path)}, "publisher": {"enabled": False},
        "control": {"enabled": False}, "pipeline": {"backpressure": "every-frame"},
    })
    built = build_service(config, edits=PROMPTS, stop_at_series_end=True)
    built.service.start()
    try:
        time.sleep(0.5)  # slow joiner
        camera.send_series_start(SeriesInfo("cam", (96, 128), "<u2", CAMERA))
        _send(camera, frames[:25], "cam", 0)
        _send(camera, frames[25:], "cam", 0)  # back to 0: the decoder believes it after a few frames in a row
        camera.send_series_end("cam")
        assert built.service.wait(60)
    finally:
        built.service.stop()
        camera.close()
    assert built.run_dir is not None
    listed = json.loads((built.run_dir / "run.json").read_text())["series_list"]
    assert [s["started_by"] for s in listed] == ["first", "index_restart"]
    assert listed[0]["frames"] == [0, 24] and listed[1]["frames"][1] == 14
    table = pd.read_csv(built.run_dir / "trajectories.csv")
    assert not table.duplicated(["series", "frame", "particle"]).any()
    assert RunFolder.open(built.run_dir).check().agrees


def test_analyze_takes_one_series_at_a_time(run_dir: Path, tmp_path: Path) -> None:
    from sam4em_live.analysis.analyze import analyze

    with pytest.raises(ValueError, match=r"holds 4 series .*--series K"):
        analyze(run_dir, tmp_path / "all", figures=False)
    assert not (tmp_path / "all").exists()  # refused before anything is written
    first = analyze(run_dir, tmp_path / "s0", figures=False, series=0)
    rows = RunFolder.open(run_dir).trajectories(series=0).table
    assert sorted(first.summary["particle"]) == sorted(rows["particle"].unique())
    assert first.calibration.fps == CAMERA.fps  # the series' own calibration
    with pytest.raises(ValueError, match="no series 9"):
        analyze(run_dir, tmp_path / "s9", figures=False, series=9)
    table = tmp_path / "table.csv"  # a bare table with a series column: the same rule
    RunFolder.open(run_dir).trajectories().table.to_csv(table, index=False)
    with pytest.raises(ValueError, match="holds 4 series"):
        analyze(table, tmp_path / "t", figures=False)
