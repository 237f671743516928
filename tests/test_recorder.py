"""The recorder sink: run directory contents, atomic manifest, crash safety (real files, real subprocess)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from sam4em_live.frames import Calibration, Frame, SeriesInfo
from sam4em_live.io.mask_tiff import read_label_stack
from sam4em_live.io.run_manifest import RANDOM_WEIGHTS_WARNING, expand_ranges
from sam4em_live.measure import measure_mask
from sam4em_live.particles import ParticleMask
from sam4em_live.results import FrameResult, RunInfo, ServiceEvent
from sam4em_live.sinks.base import Sink
from sam4em_live.sinks.recorder import Recorder, RecorderError

SHAPE = (48, 64)


def disk(centre_xy: tuple[float, float], radius: float, shape=SHAPE) -> np.ndarray:
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    return (cols - centre_xy[0]) ** 2 + (rows - centre_xy[1]) ** 2 <= radius**2


def make_result(index: int, calibration: Calibration, timestamp_s: float | None = None,
                events: tuple[ServiceEvent, ...] = ()) -> FrameResult:
    """Particle 1 moves right one pixel per frame (40-frame cycle); particle 2 is present on even frames only."""
    masks = [ParticleMask.from_full(1, disk((10 + index % 40, 12), 4), score=0.9)]
    masks.append(ParticleMask.from_full(2, disk((40, 30), 6), score=0.7) if index % 2 == 0
                 else ParticleMask.absent(2, score=0.1))
    measurements = tuple(measure_mask(m, index) for m in masks)
    frame = Frame("series-1", index, time.time() if timestamp_s is None else timestamp_s,
                  np.zeros(SHAPE, np.uint16), calibration)
    return FrameResult(frame, tuple(masks), measurements, events=events, processed_s=time.time())


def run_info(run_id: str = "run-1", calibration: Calibration | None = None, random_weights: bool = False) -> RunInfo:
    series = SeriesInfo("series-1", SHAPE, "<u2", calibration or Calibration(), {"source": "test"})
    return RunInfo(run_id, series, {"backend": "threshold", "random_weights": random_weights},
                   {"pipeline": {"backpressure": "every-frame"}}, {"sam4em-live": "test"})


def record(tmp_path: Path, indices, calibration: Calibration, **kw) -> Recorder:
    recorder = Recorder(tmp_path / "runs", **kw)
    recorder.open(run_info(calibration=calibration))
    for i in indices:
        recorder.consume(make_result(i, calibration))
    recorder.close()
    return recorder


def test_trajectories_csv_calibrated(tmp_path):
    calibration = Calibration(pixel_size_nm=2.0, fps=50.0)
    recorder = record(tmp_path, range(6), calibration)
    assert isinstance(recorder, Sink)
    table = pd.read_csv(recorder.run_dir / "trajectories.csv")
    assert list(table.columns) == ["frame", "particle", "x", "y", "angle", "area", "major_axis", "minor_axis",
                                   "eccentricity", "score", "split", "t_s", "x_nm", "y_nm", "series"]
    # One row per present particle: particle 1 on 6 frames, particle 2 on frames 0, 2, 4 only.
    assert len(table) == 9 and recorder.counters["particle_rows"] == 9
    assert table.loc[table.particle == 2, "frame"].tolist() == [0, 2, 4]
    for i in range(6):
        expected = measure_mask(make_result(i, calibration).masks[0], i)
        row = table[(table.frame == i) & (table.particle == 1)].iloc[0]
        assert row.x == pytest.approx(expected.x) and row.y == pytest.approx(expected.y)
        assert row.area == expected.area_px and row.score == pytest.approx(0.9)
        assert row.t_s == pytest.approx(i / 50.0)
        assert row.x_nm == pytest.approx(expected.x * 2.0) and row.y_nm == pytest.approx(expected.y * 2.0)


def test_trajectories_csv_uncalibrated_times_from_timestamps(tmp_path):
    recorder = Recorder(tmp_path)
    recorder.open(run_info())
    for i, ts in enumerate([1000.0, 1000.5, 1001.25]):
        recorder.consume(make_result(i, Calibration(), timestamp_s=ts))
    recorder.close()
    table = pd.read_csv(recorder.run_dir / "trajectories.csv")
    assert "x_nm" not in table.columns
    assert table.loc[table.particle == 1, "t_s"].tolist() == pytest.approx([0.0, 0.5, 1.25])


def test_masks_tif_pages_labels_and_frame_indices(tmp_path):
    indices = [0, 1, 2, 3, 4, 7, 8, 9]  # a gap (frames 5, 6 dropped upstream)
    recorder = record(tmp_path, indices, Calibration())
    labels, frames = read_label_stack(recorder.run_dir / "masks.tif")
    assert labels.shape == (10, *SHAPE) and labels.dtype == np.uint16  # one page per frame index: page k = frame k
    assert frames == list(range(10))
    for i, page in enumerate(labels):
        expected = np.zeros(SHAPE, np.uint16)
        if i in indices:  # the dropped frames' pages are empty
            for mask in make_result(i, Calibration()).masks:
                expected[mask.to_full(SHAPE)] = mask.particle
        np.testing.assert_array_equal(page, expected)
    manifest = json.loads((recorder.run_dir / "run.json").read_text())
    assert manifest["mask_frames"] == [[0, 9]]
    assert expand_ranges(manifest["mask_frames"]) == list(range(10))


@pytest.mark.parametrize("keep", ["all_but_1_byte", "half_of_last_data", "part_of_last_ifd"])
def test_truncated_masks_tif_reads_complete_pages(tmp_path, keep):
    """What a crash while writing the last page leaves: the pages before it read back intact."""
    recorder = record(tmp_path, range(6), Calibration())
    path = recorder.run_dir / "masks.tif"
    with tifffile.TiffFile(path) as tif:
        last = tif.pages[-1]
        cut_at = {"all_but_1_byte": path.stat().st_size - 1,
                  "half_of_last_data": last.dataoffsets[0] + last.databytecounts[0] // 2,
                  "part_of_last_ifd": last.offset + 10}[keep]
    with open(path, "r+b") as fh:
        fh.truncate(cut_at)
    labels, frames = read_label_stack(path)
    assert frames == [0, 1, 2, 3, 4]
    for page, i in zip(labels, frames, strict=True):
        expected = np.zeros(SHAPE, np.uint16)
        for mask in make_result(i, Calibration()).masks:
            expected[mask.to_full(SHAPE)] = mask.particle
        np.testing.assert_array_equal(page, expected)


def test_no_masks_when_disabled(tmp_path):
    recorder = record(tmp_path, range(3), Calibration(), write_masks=False)
    assert not (recorder.run_dir / "masks.tif").exists()
    assert json.loads((recorder.run_dir / "run.json").read_text())["files"]["masks"] is None


def test_run_json_lifecycle_and_contents(tmp_path):
    calibration = Calibration(pixel_size_nm=1.5, fps=80.0)
    recorder = Recorder(tmp_path)
    recorder.open(run_info(calibration=calibration, random_weights=True))
    manifest = json.loads((recorder.run_dir / "run.json").read_text())
    assert manifest["status"] == "running" and manifest["closed_utc"] is None
    assert manifest["WARNING"] == RANDOM_WEIGHTS_WARNING
    for i in range(4):
        recorder.consume(make_result(i, calibration, events=(ServiceEvent("particle_lost", i, 2, {"x": math.nan}),)))
    recorder.on_status({"state": "streaming", "frames_dropped": 3, "frames_gap": 2, "messages_rejected": 1,
                        "latency_ms_p50": float("inf")})
    recorder.annotate("beam blanked", 3)
    recorder.close()
    manifest = json.loads((recorder.run_dir / "run.json").read_text())
    assert manifest["status"] == "complete" and manifest["closed_utc"]
    assert manifest["run_id"] == "run-1" and manifest["config"] == {"pipeline": {"backpressure": "every-frame"}}
    assert manifest["series"]["calibration"]["pixel_size_nm"] == 1.5 and manifest["series"]["shape"] == list(SHAPE)
    assert manifest["backend"]["backend"] == "threshold"
    assert {"python", "numpy", "sam4em-live"} <= set(manifest["versions"])
    counts = manifest["counts"]
    assert counts["frames_recorded"] == 4 and counts["particle_rows"] == 6 and counts["events"] == 4
    assert (counts["frames_dropped"], counts["frames_gap"], counts["messages_rejected"]) == (3, 2, 1)
    assert manifest["last_status"]["latency_ms_p50"] is None  # strict JSON: inf -> null
    events = [json.loads(line) for line in (recorder.run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["frame"] for e in events] == [0, 1, 2, 3] and events[0]["detail"] == {"x": None}
    notes = [json.loads(line) for line in (recorder.run_dir / "annotations.jsonl").read_text().splitlines()]
    assert notes[0]["text"] == "beam blanked" and notes[0]["frame"] == 3
    assert len((recorder.run_dir / "status.jsonl").read_text().splitlines()) == 1
    assert not list(recorder.run_dir.glob("*.tmp"))


def test_no_warning_for_trained_weights_and_aborted_status(tmp_path):
    recorder = Recorder(tmp_path)
    recorder.open(run_info(random_weights=False))
    recorder.on_status({"state": "errored", "error": "RuntimeError: boom"})
    recorder.close()
    manifest = json.loads((recorder.run_dir / "run.json").read_text())
    assert "WARNING" not in manifest and manifest["status"] == "aborted"


def test_run_json_always_parseable_while_rewritten(tmp_path):
    recorder = Recorder(tmp_path)
    recorder.open(run_info())
    path = recorder.run_dir / "run.json"
    stop = threading.Event()
    reads, failures = [0], []

    def reader() -> None:
        while not stop.is_set():
            try:
                json.loads(path.read_text())
                reads[0] += 1
            except (json.JSONDecodeError, FileNotFoundError) as exc:
                failures.append(repr(exc))

    thread = threading.Thread(target=reader)
    thread.start()
    for i in range(30):
        recorder.consume(make_result(i, Calibration()))
        recorder.on_status({"state": "streaming", "frames_processed": i})
    recorder.close()
    stop.set()
    thread.join()
    assert failures == [] and reads[0] > 0
    assert json.loads(path.read_text())["counts"]["status_snapshots"] == 30


def test_existing_run_dir_is_never_overwritten(tmp_path):
    (tmp_path / "run-1").mkdir()
    (tmp_path / "run-1" / "trajectories.csv").write_text("precious\n")
    recorder = Recorder(tmp_path)
    with pytest.raises(RecorderError, match="already exists"):
        recorder.open(run_info("run-1"))
    recorder.close()
    recorder.close()
    assert (tmp_path / "run-1" / "trajectories.csv").read_text() == "precious\n"
    assert recorder.run_dir is None


def test_close_idempotent_consume_fast_and_annotate_from_threads(tmp_path):
    recorder = Recorder(tmp_path)
    recorder.open(run_info())
    durations = []
    for i in range(50):
        result = make_result(i, Calibration())
        t0 = time.perf_counter()
        recorder.consume(result)
        durations.append(time.perf_counter() - t0)
    threads = [threading.Thread(target=lambda k=k: [recorder.annotate(f"note {k}-{j}") for j in range(20)])
               for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    recorder.close()
    recorder.close()
    assert np.median(durations) < 1e-3  # queued, not written, on the pipeline thread
    notes = (recorder.run_dir / "annotations.jsonl").read_text().splitlines()
    assert sorted(json.loads(n)["text"] for n in notes) == sorted(f"note {k}-{j}" for k in range(4) for j in range(20))
    assert recorder.counters["frames_recorded"] == 50


def test_full_queue_waits_instead_of_losing_results(tmp_path, monkeypatch):
    recorder = Recorder(tmp_path, queue_frames=2)
    recorder.open(run_info())
    run_writer = recorder._run_writer
    slow_write = run_writer.write_result

    def slower(message):  # a disk slower than the pipeline
        time.sleep(0.01)
        slow_write(message)

    monkeypatch.setattr(run_writer, "write_result", slower)
    for i in range(20):
        recorder.consume(make_result(i, Calibration()))
    recorder.close()
    assert recorder.counters["recorder_backpressure"] > 0 and recorder.counters["results_lost"] == 0
    assert recorder.counters["frames_recorded"] == 20


CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    sys.path.insert(0, {tests!r})
    from test_recorder import make_result, run_info
    from sam4em_live.frames import Calibration
    from sam4em_live.sinks.recorder import Recorder

    cal = Calibration(pixel_size_nm=2.0, fps=100.0)
    recorder = Recorder(Path({root!r}))
    recorder.open(run_info(calibration=cal))
    for i in range(40):
        recorder.consume(make_result(i, cal))
    time.sleep(1.6)  # longer than the flush interval: frames 0..39 must be on disk now
    print("flushed 40", flush=True)
    i = 40
    while True:  # keep writing until killed
        recorder.consume(make_result(i, cal))
        i += 1
        time.sleep(0.002)
""")


@pytest.mark.timeout(60)
def test_sigkill_mid_run_leaves_readable_files(tmp_path):
    script = CHILD.format(tests=str(Path(__file__).parent), root=str(tmp_path))
    with subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True) as child:
        try:
            assert child.stdout.readline().strip() == "flushed 40"
            time.sleep(1.5)  # at least one periodic flush while frames keep coming
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(10)
    assert child.returncode == -signal.SIGKILL
    run_dir = tmp_path / "run-1"
    table = pd.read_csv(run_dir / "trajectories.csv")
    frames_in_csv = sorted(set(table.frame))
    assert len(frames_in_csv) > 40 and frames_in_csv[:40] == list(range(40))
    assert frames_in_csv == list(range(len(frames_in_csv)))  # no holes, no half rows
    assert table.notna().all().all()
    calibration = Calibration(pixel_size_nm=2.0, fps=100.0)
    for i in range(0, len(frames_in_csv), 7):
        expected = measure_mask(make_result(i, calibration).masks[0], i)
        assert table[(table.frame == i) & (table.particle == 1)].x.iloc[0] == pytest.approx(expected.x)
    labels, frames = read_label_stack(run_dir / "masks.tif")
    print(f"after SIGKILL: {len(frames_in_csv)} frames in the CSV, {len(frames)} mask pages")
    assert len(frames) >= 40 and frames == list(range(len(frames)))
    for page, i in zip(labels, frames, strict=True):
        assert page[12, 10 + i % 40] == 1 and (page[30, 40] == 2) == (i % 2 == 0)
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["status"] == "running"  # killed: never finalised, and says so


def test_sparse_tile_pages_are_byte_identical_to_painted_pages(tmp_path) -> None:
    from sam4em_live.io.mask_tiff import LabelStackWriter, draw_labels, read_label_stack

    rng = np.random.default_rng(3)
    shape = (300, 330)  # not a multiple of the tile size: padded edge tiles
    painted, sparse = LabelStackWriter(tmp_path / "a.tif"), LabelStackWriter(tmp_path / "b.tif")
    for index in range(6):
        masks = []
        for pid in (1, 2, 3):  # overlapping boxes: the later particle wins in both
            h, w = (int(v) for v in rng.integers(10, 140, 2))
            y0, x0 = int(rng.integers(0, shape[0] - h)), int(rng.integers(0, shape[1] - w))
            masks.append(ParticleMask(pid, True, 1.0, (x0, y0, x0 + w, y0 + h), rng.random((h, w)) > 0.4))
        masks.append(ParticleMask(4, True, 1.0, (2, 2, 9, 9), np.zeros((7, 7), bool)))  # empty crop
        masks.append(ParticleMask(5, True, 1.0, (320, 290, 340, 310), np.ones((20, 20), bool)))  # outside: skipped
        labels, skipped = draw_labels(shape, masks)
        painted.append(labels, index)
        assert sparse.append_masks(shape, masks, index) == skipped == 1
    painted.close()
    sparse.close()
    assert (tmp_path / "a.tif").read_bytes() == (tmp_path / "b.tif").read_bytes()
    stack, frames = read_label_stack(tmp_path / "b.tif")
    assert frames == list(range(6)) and stack.shape == (6, *shape) and set(np.unique(stack)) >= {0, 1, 2, 3}


def test_a_dead_mask_writer_costs_the_masks_only(tmp_path: Path) -> None:
    """masks.tif is opened on the writer thread; if its child process is gone the run is still recorded."""
    calibration = Calibration(pixel_size_nm=1.0, fps=80.0)
    recorder = Recorder(tmp_path / "runs")
    child = recorder._mask_process._process  # a real child process, killed as a crash would
    child.kill()
    child.join(10)
    recorder.open(run_info(calibration=calibration))  # returns: the pipeline is not held up by the child
    for i in range(12):
        recorder.consume(make_result(i, calibration))
    recorder.close()
    run_dir = recorder.run_dir
    assert run_dir is not None
    rows = pd.read_csv(run_dir / "trajectories.csv")
    assert len(rows) == 12 + 6  # particle 1 every frame, particle 2 on even frames
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["files"]["masks"] is None
    assert manifest["counts"]["write_errors"] >= 1 and manifest["counts"]["frames_recorded"] == 12
    # The files hold all the run's results but not the masks asked for: incomplete, and run.json says why.
    assert manifest["status"] == "incomplete" and "masks.tif not written" in manifest["reason"]
