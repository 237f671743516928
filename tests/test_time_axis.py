"""Issue 17, time: ``t_s`` is the acquisition time (frame rate, detector timestamps) or empty -- never the
processing clock; `analyze` never invents a frame rate; offline runs record no live-only signals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from sam4em_live.analysis.analyze import analyze
from sam4em_live.cli import app
from sam4em_live.config import ServiceConfig
from sam4em_live.control_api import LIVE_ONLY_STATUS_KEYS, ServiceState, StatusSnapshot
from sam4em_live.frames import AcquisitionClock, Calibration, Frame, SeriesInfo, TimeBase
from sam4em_live.hooks.events import EventDetector
from sam4em_live.io.prompts_file import edit_to_json
from sam4em_live.io.reader_registry import READERS, ReaderFactory
from sam4em_live.particles import Prompt
from sam4em_live.sim.outputs import JpegWriter
from sam4em_live.sim.presets import get_preset
from sam4em_live.sim.video import make_prompts, simulate_video
from sam4em_live.sources.array_source import ArraySource
from sam4em_live.sources.base import EndOfStream, SourceCounters
from sam4em_live.sources.replay import ReplaySource
from tests.conftest import disk_video

runner = CliRunner()

TRUE_FPS = 80.0  # the simulator's crossing preset is acquired at 80 fps; JPEG files do not say so


# ---------------------------------------------------------------- vocabulary


@pytest.mark.parametrize("fps, acquisition, base", [
    (80.0, True, TimeBase.FPS),  # the frame rate wins: exact, and gap-proof
    (80.0, False, TimeBase.FPS),
    (None, True, TimeBase.DETECTOR_TIMESTAMPS),
    (None, False, TimeBase.FRAMES),  # emission times of a replay: no acquisition time at all
])
def test_series_time_base(fps, acquisition, base) -> None:
    series = SeriesInfo("s", (4, 4), "|u1", Calibration(fps=fps), acquisition_timestamps=acquisition)
    assert series.time_base is base
    assert base.unit == ("frame" if base is TimeBase.FRAMES else "s")


def test_acquisition_clock_on_each_base() -> None:
    stamps = [(3, 1000.25), (4, 1000.30), (6, 1000.45)]
    assert [AcquisitionClock(TimeBase.FPS, 20.0).t_s(i, t) for i, t in stamps] == [0.15, 0.2, 0.3]
    detector = AcquisitionClock(TimeBase.DETECTOR_TIMESTAMPS)
    assert [detector.t_s(i, t) for i, t in stamps] == pytest.approx([0.0, 0.05, 0.2])
    assert [AcquisitionClock(TimeBase.FRAMES).t_s(i, t) for i, t in stamps] == [None, None, None]
    with pytest.raises(ValueError, match="frame rate"):
        AcquisitionClock(TimeBase.FPS)


# ---------------------------------------------------------------- sources declare their timestamps


def _jpeg_folder(folder: Path, frames: np.ndarray) -> Path:
    writer = JpegWriter(folder, frames)
    for frame in frames:
        writer.write(frame)
    return folder


@pytest.mark.parametrize("fast, override, base, live", [
    (True, None, TimeBase.FRAMES, False),
    (False, None, TimeBase.FRAMES, True),  # paced at a chosen rate: live-like, still no acquisition times
    (True, 80.0, TimeBase.FPS, False),
])
def test_replay_of_a_jpeg_folder_declares_emission_timestamps(tmp_path, fast, override, base, live) -> None:
    folder = _jpeg_folder(tmp_path / "jpeg", disk_video(n_frames=3, dtype=np.uint8)[0])
    source = ReplaySource(folder, fps=None if fast else 200.0, as_fast_as_possible=fast,
                          calibration_override=Calibration(fps=override))
    source.open()
    try:
        assert source.series is not None
        assert source.series.acquisition_timestamps is False
        assert (source.series.time_base, source.series.live) == (base, live)
    finally:
        source.close()


class _TimedStackReader:
    """A reader of ``.timed.npz`` files (frames + per-frame acquisition times): a `TimedFrameReader`."""

    def __init__(self, path: Path) -> None:
        with np.load(path) as data:
            self.frames, self.frame_times_s = data["frames"], tuple(data["times"].tolist())
        self.path, self.n_frames = path, len(self.frames)
        self.shape, self.dtype = self.frames.shape[1:], self.frames.dtype.str
        self.calibration, self.metadata = Calibration(), {"memory_mapped": True}

    def read(self, i: int) -> np.ndarray:
        return self.frames[i]

    def close(self) -> None:
        pass


def _emitted_stamps(source: ReplaySource) -> list[float]:
    stamps: list[float] = []
    while True:
        try:
            frame = source.next_frame(1.0)
        except EndOfStream:
            return stamps
        stamps += [frame.timestamp_s] if frame is not None else []


@pytest.fixture
def timed_reader():
    READERS.register("timed-test", ReaderFactory(_TimedStackReader, (".npz",)))
    yield
    READERS.unregister("timed-test")


def test_replay_stamps_recorded_acquisition_times(tmp_path, timed_reader) -> None:
    times = np.array([50.0, 50.0125, 50.025, 50.05])  # 80 fps with one frame missing upstream
    path = tmp_path / "clip.timed.npz"
    np.savez(path, frames=np.zeros((4, 8, 8), np.uint8), times=times)
    source = ReplaySource(path, as_fast_as_possible=True)
    source.open()
    try:
        assert source.series is not None and source.series.time_base is TimeBase.DETECTOR_TIMESTAMPS
        stamps = _emitted_stamps(source)
    finally:
        source.close()
    assert source.series is not None
    clock = AcquisitionClock.of(source.series)
    assert [clock.t_s(i, t) for i, t in enumerate(stamps)] == pytest.approx(times - times[0], abs=1e-6)  # wall-clock float64


def test_array_source_timestamps_are_not_acquisition_times() -> None:
    series = ArraySource(np.zeros((2, 4, 4), np.uint8)).series
    assert (series.time_base, series.live) == (TimeBase.FRAMES, False)
    assert ArraySource(np.zeros((2, 4, 4), np.uint8), Calibration(fps=5.0), delay_s=0.01).series.live


# ---------------------------------------------------------------- the issue, end to end with the CLI


@pytest.fixture(scope="module")
def sim_jpeg(tmp_path_factory) -> tuple[Path, Path]:
    """A JPEG folder of the simulator's crossing clip (acquired at 80 fps, 30 frames) and its prompts."""
    root = tmp_path_factory.mktemp("sim")
    video = simulate_video(get_preset("crossing"), 30, seed=0)
    assert video.calibration.fps == TRUE_FPS
    folder = _jpeg_folder(root / "jpeg", video.frames)
    prompts = root / "prompts.json"
    prompts.write_text(json.dumps({"prompts": [edit_to_json(p) for p in make_prompts(video, frames=(0,))]}))
    return folder, prompts


def _track(folder: Path, prompts: Path, out: Path, *flags: str) -> None:
    result = runner.invoke(app, ["track", str(folder), "--prompts", str(prompts), "--out", str(out),
                                 "--no-progress", *flags])
    assert result.exit_code == 0, result.output


def _analyze(run: Path, *flags: str) -> str:
    result = runner.invoke(app, ["analyze", str(run), "--no-figures", *flags])
    assert result.exit_code == 0, result.output
    return result.output


def test_same_jpeg_folder_tracked_twice_gives_identical_time_and_analysis(sim_jpeg, tmp_path) -> None:
    folder, prompts = sim_jpeg
    runs = [tmp_path / "run1", tmp_path / "run2"]
    for run in runs:
        _track(folder, prompts, run)
    tables = [pd.read_csv(run / "trajectories.csv") for run in runs]
    assert len(tables[0]) > 0 and tables[0]["t_s"].isna().all()  # no acquisition time known: empty
    pd.testing.assert_series_equal(tables[0]["t_s"], tables[1]["t_s"])
    for run in runs:
        manifest = json.loads((run / "run.json").read_text())
        assert (manifest["time_base"], manifest["time_unit"], manifest["live"]) == ("frames", "frame", False)
        assert not set(LIVE_ONLY_STATUS_KEYS) & set(manifest["last_status"])  # offline: no camera, no latency
        for line in (run / "status.jsonl").read_text().splitlines():
            assert not set(LIVE_ONLY_STATUS_KEYS) & set(json.loads(line))
        assert "processing_slow" not in (run / "events.jsonl").read_text()
    outputs = [_analyze(run) for run in runs]
    assert "no frame rate known" in outputs[0] and "pass --fps" in outputs[0]  # asks, invents nothing
    for name in ("stats.csv", "msd.csv"):
        assert (runs[0] / "analysis" / name).read_bytes() == (runs[1] / "analysis" / name).read_bytes()
    docs = [json.loads((run / "analysis" / "stats.json").read_text()) for run in runs]
    assert docs[0]["time"]["unit"] == "frame" and docs[0]["time"]["fps"] is None
    assert {**docs[0], "source": None} == {**docs[1], "source": None}


def test_fps_flag_gives_seconds_from_the_frame_index(sim_jpeg, tmp_path) -> None:
    folder, prompts = sim_jpeg
    _track(folder, prompts, tmp_path / "run", "--fps", str(TRUE_FPS))
    table = pd.read_csv(tmp_path / "run" / "trajectories.csv")
    np.testing.assert_allclose(table["t_s"], table["frame"] / TRUE_FPS)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["time_base"] == "fps"
    assert "fps 80 from the run's calibration" in _analyze(tmp_path / "run")


# ---------------------------------------------------------------- a live detector's timestamps


class _Detector:
    """A live camera stand-in: frames stamped on the detector's clock at 80 fps, no fps in the header."""

    def __init__(self, frames: np.ndarray, fps: float) -> None:
        self.frames, self.fps = frames, fps
        self.counters = SourceCounters()
        self.series = SeriesInfo("cam", frames.shape[1:], frames.dtype.str)  # a detector: the defaults
        self._next = 0

    def open(self) -> None:
        pass

    def next_frame(self, timeout_s: float) -> Frame | None:
        if self._next >= len(self.frames):
            raise EndOfStream
        i, self._next = self._next, self._next + 1
        self.counters.frames += 1
        return Frame("cam", i, 1.7e9 + i / self.fps, self.frames[i])

    def close(self) -> None:
        pass


def test_detector_timestamps_are_the_time_axis(tmp_path) -> None:
    from sam4em_live.service.builder import build_service

    frames, _ = disk_video(n_frames=24)
    cfg = ServiceConfig().with_overrides({
        "pipeline.backpressure": "every-frame", "segmenter.backend": "threshold",
        "recorder.out_dir": str(tmp_path), "recorder.enabled": True,
        "publisher.enabled": False, "control.enabled": False,
    })
    edits = [Prompt(frame=0, particle=1, points=((30.0, 40.0),), labels=(1,)),
             Prompt(frame=0, particle=2, points=((70.0, 60.0),), labels=(1,))]
    built = build_service(cfg, source=_Detector(frames, TRUE_FPS), edits=edits, run_id="live")
    try:
        built.service.run()
    finally:
        built.close()
    run = tmp_path / "live"
    table = pd.read_csv(run / "trajectories.csv")
    np.testing.assert_allclose(table["t_s"], table["frame"] / TRUE_FPS, atol=1e-6)
    manifest = json.loads((run / "run.json").read_text())
    assert (manifest["time_base"], manifest["live"]) == ("detector_timestamps", True)
    assert "camera_fps" in manifest["last_status"]
    result = analyze(run, tmp_path / "analysis", figures=False)
    assert result.calibration.fps == pytest.approx(TRUE_FPS, rel=1e-4)  # float64 stamps near 1.7e9 s
    assert result.time_axis.origin == "the detector timestamps (t_s)"


# ---------------------------------------------------------------- runs recorded before run.json said


def _legacy_run(run: Path, source: dict, n: int = 40) -> None:
    rng = np.random.default_rng(1)
    xy = np.cumsum(rng.normal(0, 1, (n, 2)), axis=0) + 50
    clock = 100.0 + np.cumsum(rng.uniform(0.002, 0.03, n))  # the processing clock: irregular
    run.mkdir()
    pd.DataFrame({"frame": np.arange(n), "particle": 1, "x": xy[:, 0], "y": xy[:, 1],
                  "t_s": clock - clock[0]}).to_csv(run / "trajectories.csv", index=False)
    (run / "run.json").write_text(json.dumps({"series": {"calibration": {"fps": None}},
                                              "config": {"source": source}}))


def test_a_replays_processing_clock_is_never_a_frame_rate(tmp_path) -> None:
    _legacy_run(tmp_path / "run", {"kind": "replay", "as_fast_as_possible": True})
    result = analyze(tmp_path / "run", tmp_path / "out", figures=False)
    assert result.calibration.fps is None and result.time_axis.unit == "frame"
    assert result.table["t_s"].isna().all()
    assert analyze(tmp_path / "run", tmp_path / "out2", fps=80.0, figures=False).calibration.fps == 80.0


def test_a_legacy_live_runs_timestamps_still_give_its_rate(tmp_path) -> None:
    _legacy_run(tmp_path / "run", {"kind": "zmq"})
    result = analyze(tmp_path / "run", tmp_path / "out", figures=False)
    assert result.calibration.fps is not None and result.time_axis.unit == "s"


# ---------------------------------------------------------------- live-only signals


def test_offline_status_leaves_out_camera_rate_and_latency() -> None:
    live = StatusSnapshot(ServiceState.STREAMING, camera_fps=80.0, latency_ms_p50=3.0).as_dict()
    offline = StatusSnapshot(ServiceState.STREAMING, camera_fps=80.0, latency_ms_p50=3.0, live=False).as_dict()
    assert set(LIVE_ONLY_STATUS_KEYS) <= set(live)
    assert not set(LIVE_ONLY_STATUS_KEYS) & set(offline) and offline["live"] is False


@pytest.mark.parametrize("live, slow_events", [(True, 1), (False, 0)])
def test_processing_slow_only_in_live_runs(live, slow_events) -> None:
    detector = EventDetector()
    kinds = []
    for stamp, depth in enumerate((5, 10, 20, 40)):  # a queue growing, the processed rate under the camera's
        status = StatusSnapshot(ServiceState.STREAMING, camera_fps=80.0, processed_fps=20.0, queue_depth=depth,
                                wall_time_s=float(stamp), live=live)
        kinds += [e.kind for e in detector.update(stamp, (64, 64), (), status)]
    assert kinds.count("processing_slow") == slow_events
