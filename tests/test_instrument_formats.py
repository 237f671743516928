"""Instrument files and videos: real vendor files read as rosettasciio reads them, tracked with their calibration.

The vendor fixtures are real files from rosettasciio's test data (``../shared/fixtures/formats``, see its
README); tests that need them skip with the reason where the folder is absent. MP4/AVI files are made
here with imageio + PyAV, MRC movies with mrcfile.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from sam4em_live.io.frame_readers import ReplayError
from sam4em_live.io.mapped_image import MappedFrames
from sam4em_live.io.reader_registry import open_reader
from sam4em_live.io.vendor_calibration import axis_length_nm, calibration_from_signal, tia_frame_times_s
from sam4em_live.io.vendor_readers import Hdf5FrameChunks, VendorStackReader, read_signals
from sam4em_live.io.video_reader import VideoReader
from sam4em_live.service.runs import run_track
from sam4em_live.sources.base import EndOfStream
from sam4em_live.sources.camera import FramePublisher, pump
from sam4em_live.sources.replay import ReplaySource
from sam4em_live.sources.zmq_source import ZmqFrameSource
from tests.conftest import disk_video
from tests.instrument_files import velox_stack, write_dm4

FORMATS_DIR = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "formats"


@pytest.fixture
def formats_dir() -> Path:
    if not (FORMATS_DIR / "README.md").is_file():
        pytest.skip(f"instrument file fixtures not found at {FORMATS_DIR} (shared/fixtures/formats, see its README)")
    return FORMATS_DIR


#: file -> (frames, (rows, columns), wire dtype, pixel size nm, fps, exposure s), as the files record them.
FIXTURES: dict[str, tuple[int, tuple[int, int], str, float | None, float | None, float | None]] = {
    "test-1_2D.dm3": (1, (2, 2), "<i2", None, None, None),
    "test-1_2D.dm4": (1, (2, 2), "<i2", None, None, None),
    "test-1_3D.dm3": (2, (2, 2), "<i2", None, None, None),
    "test-1_3D.dm4": (2, (2, 2), "<i2", None, None, None),
    "fei_example_tem_stack.emd": (2, (3, 3), "<i2", 8.172883192297851e-3, 1 / 0.8, None),  # 8.17 pm, 0.8 s/frame
    "64x64x5_TEM_preview.emi": (5, (64, 64), "<f4", 6.281833616298531, None, 0.0625),
    "64x64x5_TEM_preview_1.ser": (5, (64, 64), "<f4", 6.281833616298531, None, None),  # the .emi has the rest
    "Custom_movie.mrc": (30, (16, 16), "<u2", None, None, None),  # MRC writes -1 for "no pixel size"
}


def _rosettasciio_frames(path: Path) -> np.ndarray:
    """The file's image data read eagerly (no dask, no layout shortcut) by rosettasciio: the reference."""
    data = np.asarray(read_signals(path, lazy=False)[0]["data"])
    return data.reshape((-1, *data.shape[-2:]))


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_each_instrument_file_reads_as_rosettasciio_reads_it(formats_dir, name):
    n_frames, shape, dtype, pixel_size_nm, fps, exposure_s = FIXTURES[name]
    reader = open_reader(formats_dir / name)
    try:
        assert isinstance(reader, VendorStackReader)
        assert (reader.n_frames, reader.shape, reader.dtype) == (n_frames, shape, dtype)
        got = np.stack([reader.read(i) for i in range(reader.n_frames)])
        cal = reader.calibration
        assert cal.pixel_size_nm == pytest.approx(pixel_size_nm) if pixel_size_nm else cal.pixel_size_nm is None
        assert cal.fps == pytest.approx(fps) if fps else cal.fps is None
        assert cal.exposure_s == pytest.approx(exposure_s) if exposure_s else cal.exposure_s is None
        missing = set(reader.metadata["calibration_missing"])
        assert ("pixel_size_nm" in missing) == (pixel_size_nm is None) and ("fps" in missing) == (fps is None)
    finally:
        reader.close()
    np.testing.assert_array_equal(got, _rosettasciio_frames(formats_dir / name))
    assert got.dtype == np.dtype(dtype)


def _whole_frame_prompt(tmp_path: Path, shape: tuple[int, int]) -> Path:
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps({"prompts": [{"frame": 0, "particle": 1, "box": [0, 0, shape[1] - 1, shape[0] - 1]}]}))
    return path


@pytest.mark.parametrize("name", sorted(FIXTURES))
def test_each_instrument_file_tracks_with_its_calibration_in_run_json(formats_dir, tmp_path, name):
    n_frames, shape, dtype, pixel_size_nm, fps, exposure_s = FIXTURES[name]
    out = tmp_path / "run"
    run_track(formats_dir / name, _whole_frame_prompt(tmp_path, shape), out, backend="threshold", progress=False)
    run = json.loads((out / "run.json").read_text())
    series = run["series"]
    assert tuple(series["shape"]) == shape and series["dtype"] == dtype
    assert series["metadata"]["n_frames"] == n_frames and series["metadata"]["reader"] == "rosettasciio"
    calibration = series["calibration"]
    assert calibration["pixel_size_nm"] == pytest.approx(pixel_size_nm) if pixel_size_nm else \
        calibration["pixel_size_nm"] is None
    assert calibration["fps"] == pytest.approx(fps) if fps else calibration["fps"] is None
    assert calibration["exposure_s"] == pytest.approx(exposure_s) if exposure_s else calibration["exposure_s"] is None
    assert (run["time_base"], run["time_unit"]) == (("fps", "s") if fps else ("frames", "frame"))
    table = pd.read_csv(out / "trajectories.csv")  # rows where the threshold backend found the particle
    if fps and len(table):
        np.testing.assert_allclose(table.t_s, table.frame / fps)
    if pixel_size_nm and len(table):
        np.testing.assert_allclose(table.x_nm, table.x * pixel_size_nm)
    if name.endswith(".emi"):  # a dark region the threshold backend follows: the physical columns are there
        assert len(table) == n_frames and table.t_s.isna().all()


def test_calibration_given_by_the_user_fills_what_the_file_lacks(formats_dir, tmp_path):
    """An MRC movie records no pixel size or rate: --pixel-size-nm / --fps go into run.json, t_s and x_nm."""
    out = tmp_path / "run"
    run_track(formats_dir / "Custom_movie.mrc", _whole_frame_prompt(tmp_path, (16, 16)), out, backend="threshold",
              fps=40.0, pixel_size_nm=0.5, progress=False)
    run = json.loads((out / "run.json").read_text())
    assert run["series"]["calibration"]["fps"] == 40.0 and run["series"]["calibration"]["pixel_size_nm"] == 0.5
    assert run["time_base"] == "fps"
    out = tmp_path / "run-emi"
    run_track(formats_dir / "64x64x5_TEM_preview.emi", _whole_frame_prompt(tmp_path, (64, 64)), out,
              backend="threshold", fps=4.0, progress=False)
    table = pd.read_csv(out / "trajectories.csv")
    assert len(table) == 5
    np.testing.assert_allclose(table.t_s, table.frame / 4.0)
    np.testing.assert_allclose(table.x_nm, table.x * 6.281833616298531)  # the file's own pixel size stays


def test_a_file_missing_calibration_tells_the_user_which_flag_supplies_it(formats_dir, tmp_path, caplog):
    import logging
    import shutil

    path = Path(shutil.copy(formats_dir / "test-1_3D.dm3", tmp_path / "stack.dm3"))  # a path not told about yet
    with caplog.at_level(logging.WARNING):
        open_reader(path).close()
        open_reader(path).close()
    told = [r for r in caplog.records if "no pixel size and frame rate" in r.getMessage()]
    assert len(told) == 1  # once per recording, not at each of a run's opens
    assert "--pixel-size-nm" in told[0].getMessage() and "--fps" in told[0].getMessage()


def test_damaged_instrument_files_are_refused_naming_the_file(tmp_path):
    for name in ("cut.dm4", "cut.emd", "cut.ser", "cut.mrc"):
        (tmp_path / name).write_bytes(b"\x00\x01" * 40)
        with pytest.raises(ReplayError, match="rosettasciio cannot read it") as info:
            open_reader(tmp_path / name)
        assert str(tmp_path / name) in str(info.value)


# ------------------------------------------------------------------ MRC movies made here


def test_a_large_mrc_movie_is_read_frame_by_frame_with_its_pixel_size(tmp_path):
    mrcfile = pytest.importorskip("mrcfile", reason="mrcfile (test extra) writes the MRC movie")
    frames = np.random.default_rng(3).integers(0, 4000, (12, 256, 320)).astype(np.uint16)
    with mrcfile.new(tmp_path / "movie.mrc") as mrc:
        mrc.set_data(frames)
        mrc.voxel_size = 2.5  # Å
    reader = open_reader(tmp_path / "movie.mrc")
    try:
        assert (reader.n_frames, reader.shape, reader.dtype) == (12, (256, 320), "<u2")
        assert reader.calibration.pixel_size_nm == pytest.approx(0.25)
        assert reader.metadata["memory_mapped"] is True  # mapped once, frames are views of the file
        for i in (0, 7, 11, 3):
            np.testing.assert_array_equal(reader.read(i), frames[i])
    finally:
        reader.close()


def test_a_dm4_stack_is_memory_mapped_as_rosettasciio_describes_it(tmp_path):
    frames = np.random.default_rng(4).integers(-2000, 2000, (9, 96, 80)).astype(np.int16)
    path = write_dm4(tmp_path / "stack.dm4", frames, pixel_size=3.0, units="Å")
    reader = open_reader(path)
    try:
        assert (reader.n_frames, reader.shape, reader.dtype) == (9, (96, 80), "<i2")
        assert reader.metadata["memory_mapped"] is True
        assert reader.calibration.pixel_size_nm == pytest.approx(0.3)
        np.testing.assert_array_equal(np.stack([reader.read(i) for i in range(9)]), frames)
    finally:
        reader.close()
    np.testing.assert_array_equal(_rosettasciio_frames(path), frames)


def test_a_velox_stack_of_full_size_frames_maps_each_frame_at_its_own_chunk(formats_dir, tmp_path):
    """Velox layout (one chunk per frame, per-frame metadata chunks between them): each frame is a view of
    the file at its chunk's offset, equal to the direct chunk read and to rosettasciio's read."""
    frames = np.random.default_rng(5).integers(0, 4000, (6, 128, 160)).astype(np.uint16)
    path = velox_stack(formats_dir / "fei_example_tem_stack.emd", tmp_path / "stack.emd", frames)
    reader = open_reader(path)
    try:
        assert isinstance(reader._frames, MappedFrames) and reader.metadata["memory_mapped"] is True
        assert (reader.n_frames, reader.shape, reader.dtype) == (6, (128, 160), "<u2")
        assert reader.calibration.fps == pytest.approx(1.25)  # the instrument's metadata is kept
        for i in (0, 5, 2):
            pixels = reader.read(i)
            assert not pixels.flags.writeable
            np.testing.assert_array_equal(pixels, frames[i])
    finally:
        reader.close()
    signal = read_signals(path)[0]
    chunks = Hdf5FrameChunks.of(signal["data"].reshape((6, 128, 160)), (128, 160))
    assert chunks is not None  # the reference the map is checked against at open
    np.testing.assert_array_equal(np.stack([chunks[i] for i in range(6)]), frames)
    np.testing.assert_array_equal(_rosettasciio_frames(path), frames)


def test_mapped_frames_are_views_at_their_own_offsets(tmp_path):
    """Frames between other bytes at uneven offsets (as Velox interleaves per-frame metadata chunks)."""
    frames = np.random.default_rng(10).integers(0, 4000, (3, 8, 12)).astype("<u2")
    offsets, blob = [], b""
    for frame, gap in zip(frames, (100, 7, 3001), strict=True):
        blob += b"\xff" * gap
        offsets.append(len(blob))
        blob += frame.tobytes()
    (tmp_path / "blob").write_bytes(blob)
    mapped = MappedFrames(tmp_path / "blob", np.array(offsets), (8, 12), np.dtype("<u2"))
    got = [mapped[i] for i in (2, 0, 1)]
    mapped.close()  # the views keep their map
    np.testing.assert_array_equal(np.stack(got), frames[[2, 0, 1]])
    assert not got[0].flags.writeable
    with pytest.raises(ValueError, match="beyond the end"):
        MappedFrames(tmp_path / "blob", np.array([len(blob) - 10]), (8, 12), np.dtype("<u2"))


def test_a_velox_stack_with_a_missing_frame_chunk_is_not_mapped(formats_dir, tmp_path):
    import h5py

    frames = np.random.default_rng(6).integers(0, 4000, (4, 32, 48)).astype(np.uint16)
    path = velox_stack(formats_dir / "fei_example_tem_stack.emd", tmp_path / "stack.emd", frames)
    with h5py.File(path, "r+") as f:  # a stack whose last frame was never written: no chunk for it
        (key,) = f["Data/Image"].keys()
        group = f["Data/Image"][key]
        del group["Data"]
        data = group.create_dataset("Data", (32, 48, 4), dtype=np.uint16, chunks=(32, 48, 1))
        for i in range(3):
            data[:, :, i] = frames[i]
    reader = open_reader(path)
    try:
        assert isinstance(reader._frames, Hdf5FrameChunks) and reader.metadata["memory_mapped"] is False
        np.testing.assert_array_equal(reader.read(2), frames[2])
    finally:
        reader.close()


# ------------------------------------------------------------------ frame files mapped at the first file's layout


def _tiff_frames(folder: Path, frames: np.ndarray, **kw: object) -> list[Path]:
    import tifffile

    folder.mkdir()
    paths = [folder / f"frame_{i:04d}.tif" for i in range(len(frames))]
    for path, frame in zip(paths, frames, strict=True):
        tifffile.imwrite(path, frame, **kw)
    return paths


@pytest.mark.parametrize("dtype, kw, mapped", [
    ("<u2", {}, True),
    ("<f4", {"description": "exported by DigitalMicrograph"}, True),
    ("<u2", {"compression": "zlib"}, False),  # compressed: decoded by tifffile
    (">u2", {"byteorder": ">"}, False),  # big-endian: decoded by tifffile (and swapped to the wire order)
])
def test_a_tiff_frame_folder_maps_frames_of_the_first_files_layout_as_tifffile_reads_them(tmp_path, dtype, kw,
                                                                                         mapped):
    import tifffile

    frames = np.random.default_rng(7).integers(0, 4000, (5, 48, 64)).astype(dtype)
    paths = _tiff_frames(tmp_path / "tiffs", frames, **kw)
    reader = open_reader(tmp_path / "tiffs")
    try:
        got = [reader.read(i) for i in range(5)]
        assert reader.metadata["memory_mapped"] is mapped and reader.fast_reads == (5 if mapped else 0)
    finally:
        reader.close()
    reference = np.stack([tifffile.imread(p) for p in paths])
    np.testing.assert_array_equal(np.stack(got), reference)
    assert all(not g.flags.writeable for g in got) or not mapped


def test_a_tiff_frame_of_another_header_is_read_by_tifffile(tmp_path):
    import tifffile

    frames = np.random.default_rng(8).integers(0, 4000, (4, 40, 40)).astype(np.uint16)
    paths = _tiff_frames(tmp_path / "tiffs", frames, description="frame A")
    tifffile.imwrite(paths[2], frames[2], description="frame B")  # same size, another header byte
    tifffile.imwrite(paths[3], frames[3], description="a longer description")  # image further on
    reader = open_reader(tmp_path / "tiffs")
    try:
        got = np.stack([reader.read(i) for i in range(4)])
        assert reader.fast_reads == 2
    finally:
        reader.close()
    np.testing.assert_array_equal(got, frames)


def test_insitu_frames_are_mapped_views_equal_to_rosettasciios_read(tmp_path):
    from sam4em_live.io.vendor_readers import read_single_frame

    frames = np.random.default_rng(9).integers(0, 4000, (12, 64, 96)).astype(np.uint16)
    root = tmp_path / "Capture 1"
    paths = []
    for i, frame in enumerate(frames):
        folder = root / "Hour_00" / "Minute_00" / f"Second_{i // 5:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        paths.append(write_dm4(folder / f"Capture 1_Hour_00_Minute_00_Second_{i // 5:02d}_Frame_{i % 5:04d}.dm4",
                               frame, pixel_size=0.2, units="nm"))
    reader = open_reader(root)
    try:
        assert reader.metadata["memory_mapped"] is True
        got = [reader.read(i) for i in range(12)]
        assert reader.fast_reads == 12 and not any(g.flags.writeable for g in got)
    finally:
        reader.close()
    np.testing.assert_array_equal(np.stack(got), np.stack([read_single_frame(p)[0] for p in paths]))
    np.testing.assert_array_equal(np.stack(got), frames)


# ------------------------------------------------------------------ videos made here


def _write_video(path: Path, frames: np.ndarray, fps: float, codec: str) -> Path:
    import imageio.v3 as iio

    iio.imwrite(path, np.stack([frames] * 3, axis=-1), plugin="pyav", codec=codec, fps=fps)
    return path


@pytest.mark.parametrize("suffix, codec, fps", [(".mp4", "libx264", 80.0), (".avi", "mpeg4", 25.0)])
def test_videos_made_here_read_grey_with_their_frame_rate(tmp_path, suffix, codec, fps):
    frames, _ = disk_video(n_frames=16, dtype=np.uint8, noise=0.0, velocity=(3.0, 2.0))
    path = _write_video(tmp_path / f"clip{suffix}", frames, fps, codec)
    reader = open_reader(path)
    try:
        assert isinstance(reader, VideoReader)
        assert (reader.n_frames, reader.shape, reader.dtype) == (16, frames.shape[1:], "|u1")
        assert reader.calibration.fps == pytest.approx(fps) and reader.calibration.pixel_size_nm is None
        got = np.stack([reader.read(i) for i in range(16)]).astype(int)
        again = reader.read(3)  # out of order: the decoder restarts
    finally:
        reader.close()
    # lossy codecs: close to the frames written, never equal by chance of a wrong frame order
    errors = np.abs(got - frames.astype(int)).mean(axis=(1, 2))
    assert errors.max() < 2, errors
    shifted = np.abs(got[1:] - frames[:-1].astype(int)).mean(axis=(1, 2))
    assert shifted.min() > errors.max()
    np.testing.assert_array_equal(again, got[3])


@pytest.mark.parametrize("suffix, codec, fps", [(".mp4", "libx264", 80.0), (".avi", "mpeg4", 25.0)])
def test_videos_track_with_positions_and_time_from_the_container(tmp_path, suffix, codec, fps):
    frames, truth = disk_video(n_frames=12, dtype=np.uint8)
    path = _write_video(tmp_path / f"clip{suffix}", frames, fps, codec)
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"prompts": [{"frame": 0, "particle": 1, "points": [[30, 40]], "labels": [1]},
                                               {"frame": 0, "particle": 2, "box": [60, 50, 80, 70]}]}))
    out = tmp_path / "run"
    run_track(path, prompts, out, backend="threshold", pixel_size_nm=2.0, progress=False)
    run = json.loads((out / "run.json").read_text())
    assert run["series"]["calibration"]["fps"] == pytest.approx(fps)
    assert tuple(run["series"]["shape"]) == frames.shape[1:] and run["series"]["dtype"] == "|u1"
    assert run["series"]["metadata"]["format"] == "video"
    table = pd.read_csv(out / "trajectories.csv")
    assert len(table) == 2 * 12
    for pid in (1, 2):
        t = table[table.particle == pid].sort_values("frame")
        np.testing.assert_allclose(t.x, truth[:12, pid - 1, 0], atol=1.0)
        np.testing.assert_allclose(t.y, truth[:12, pid - 1, 1], atol=1.0)
    np.testing.assert_allclose(table.t_s, table.frame / fps)
    np.testing.assert_allclose(table.x_nm, table.x * 2.0)


@pytest.mark.parametrize("suffix, codec, shape, pixel_format", [
    (".mp4", "libx264", (96, 128), None),  # yuv420p, limited range: the grey conversion rescales the luma
    (".avi", "mpeg4", (72, 100), None),  # rows padded by FFmpeg: the reader copies the unpadded part
    (".avi", "mjpeg", (70, 90), "yuvj420p"),  # full range
    (".mp4", "libx264", (64, 80), "yuv444p"),
])
def test_videos_read_exactly_as_imageios_grey_iteration(tmp_path, suffix, codec, shape, pixel_format):
    """The fast path (PyAV, one scaler context per file, no copy) gives imageio's ``iter(format="gray")`` pixels."""
    import imageio.v3 as iio

    frames, _ = disk_video(n_frames=20, shape=shape, dtype=np.uint8, noise=0.0, velocity=(2.0, 1.0))
    path = tmp_path / f"clip{suffix}"
    extra = {"out_pixel_format": pixel_format} if pixel_format else {}
    iio.imwrite(path, np.stack([frames] * 3, axis=-1), plugin="pyav", codec=codec, fps=20, **extra)
    with iio.imopen(path, "r", plugin="pyav") as video:
        expected = np.stack([np.asarray(f) for f in video.iter(format="gray")])
    reader = VideoReader(path)
    try:
        got = [reader.read(i) for i in range(reader.n_frames)]
        looped = reader.read(0)  # back to the start: a fresh decoder
    finally:
        reader.close()
    assert len(got) == len(expected) == 20
    assert all(g.flags.c_contiguous and g.dtype == np.uint8 for g in got)
    np.testing.assert_array_equal(np.stack(got), expected)
    np.testing.assert_array_equal(looped, expected[0])
    assert np.abs(expected.astype(int) - frames).mean() < 2  # and they are the frames written (lossy codecs)


def test_a_damaged_video_is_refused_naming_the_file(tmp_path):
    (tmp_path / "cut.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(ReplayError, match="not a readable video") as info:
        open_reader(tmp_path / "cut.mp4")
    assert str(tmp_path / "cut.mp4") in str(info.value)


# ------------------------------------------------------------------ the stand-in camera


def _receive(path: Path, n_frames: int) -> tuple[list, object]:
    """Pump ``path`` through the stand-in camera (its own rate) and receive it over PUSH/PULL."""
    camera = FramePublisher("tcp://127.0.0.1:0", socket_kind="push")
    receiver = ZmqFrameSource(camera.endpoint, socket_kind="pull", stop_at_series_end=True)
    receiver.open()
    stop = threading.Event()
    thread = threading.Thread(target=pump, args=(ReplaySource(path), camera, stop),
                              kwargs={"series_start_delay_s": 0.2})
    thread.start()
    frames: list = []
    deadline = time.monotonic() + 20
    try:
        while len(frames) < n_frames and time.monotonic() < deadline:
            try:
                frame = receiver.next_frame(0.2)
            except EndOfStream:
                break
            if frame is not None:
                frames.append((time.monotonic(), frame))
        return frames, receiver.series
    finally:
        stop.set()
        thread.join(10)
        receiver.close()
        camera.close()


def test_the_camera_replays_a_video_over_the_wire_at_the_recording_rate(tmp_path):
    frames, _ = disk_video(n_frames=12, dtype=np.uint8)
    path = _write_video(tmp_path / "clip.mp4", frames, 20.0, "libx264")
    received, series = _receive(path, 12)
    assert [f.index for _, f in received] == list(range(12))
    assert series.calibration.fps == pytest.approx(20.0) and series.shape == frames.shape[1:]
    gaps = np.diff([t for t, _ in received])
    assert np.median(gaps) == pytest.approx(1 / 20, abs=0.015)  # paced at 20 fps, not as fast as possible
    assert np.abs(received[5][1].pixels.astype(int) - frames[5]).mean() < 4


def test_the_camera_sends_an_instrument_file_with_its_calibration(formats_dir):
    received, series = _receive(formats_dir / "fei_example_tem_stack.emd", 2)
    assert [f.index for _, f in received] == [0, 1]
    assert series.calibration.pixel_size_nm == pytest.approx(8.172883192297851e-3)
    assert series.calibration.fps == pytest.approx(1.25)
    assert received[1][0] - received[0][0] == pytest.approx(0.8, abs=0.1)  # the file's own 0.8 s per frame
    np.testing.assert_array_equal(received[1][1].pixels, _rosettasciio_frames(formats_dir / "fei_example_tem_stack.emd")[1])


def test_the_camera_command_sends_the_calibration_given_for_a_file_that_lacks_it(formats_dir):
    """`sam4em-live camera movie.mrc --fps 50 --pixel-size-nm 0.3`: the MRC records neither; both go out."""
    import subprocess
    import sys

    command = [sys.executable, "-m", "sam4em_live", "-q", "camera", str(formats_dir / "Custom_movie.mrc"),
               "--endpoint", "tcp://127.0.0.1:0", "--fps", "50", "--pixel-size-nm", "0.3", "--frames", "12"]
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True) as camera:
        assert camera.stdout is not None
        first = camera.stdout.readline()
        assert first.startswith("camera publishing on "), first
        receiver = ZmqFrameSource(first.split()[-1], stop_at_series_end=True)  # SUB: joins within the 1 s delay
        receiver.open()
        received = []
        deadline = time.monotonic() + 15
        while len(received) < 12 and time.monotonic() < deadline:
            try:
                frame = receiver.next_frame(0.2)
            except EndOfStream:
                break
            if frame is not None:
                received.append((time.monotonic(), frame))
        series = receiver.series
        receiver.close()
        assert camera.wait(15) == 0
    assert [f.index for _, f in received] == list(range(12))
    assert series.calibration.pixel_size_nm == 0.3 and series.calibration.fps == 50.0
    assert received[0][1].calibration.pixel_size_nm == 0.3
    assert np.median(np.diff([t for t, _ in received])) == pytest.approx(1 / 50, abs=0.01)
    np.testing.assert_array_equal(received[3][1].pixels, _rosettasciio_frames(formats_dir / "Custom_movie.mrc")[3])


# ------------------------------------------------------------------ metadata rules, table-driven


@pytest.mark.parametrize("times, expected", [
    ([1456073345, 1456073346, 1456073348], (1456073345.0, 1456073346.0, 1456073348.0)),
    ([1456073345] * 3, ()),  # whole seconds that cannot tell the frames apart: not a clock
    ([5, 4, 6], ()),
    ([5, 6], ()),  # one time missing
])
def test_tia_time_tags_are_frame_times_only_when_they_tell_frames_apart(times, expected):
    signal = {"original_metadata": {"ser_header_parameters": {"Time": np.array(times, dtype=np.uint32)}}}
    assert tia_frame_times_s(signal, 3) == expected


def test_the_tia_fixture_has_no_usable_frame_times_and_a_camera_exposure(formats_dir):
    reader = open_reader(formats_dir / "64x64x5_TEM_preview.emi")
    assert reader.frame_times_s == () and reader.calibration.exposure_s == 0.0625
    assert "DwellTimePath" in reader.metadata["calibration_from"]["exposure_s"]
    reader.close()


@pytest.mark.parametrize("units, scale, expected_nm", [
    ("nm", 0.5, 0.5), ("µm", 0.002, 2.0), ("Å", 3.0, 0.3), ("pm", 8.0, 0.008), ("m", 1e-9, 1.0),
    ("1/nm", 0.1, None), ("", 1.0, None), (None, 1.0, None), ("nm", -1.0, None), ("nm", 0.0, None),
])
def test_a_pixel_size_is_a_positive_length(units, scale, expected_nm):
    axis = {"scale": scale, "units": units}
    got = axis_length_nm(axis)
    assert got == pytest.approx(expected_nm) if expected_nm else got is None


def test_a_dose_rate_tag_with_its_unit_is_taken_and_named():
    y, x = {"scale": 1.0, "units": "nm", "navigate": False}, {"scale": 1.0, "units": "nm", "navigate": False}
    frames = [{"scale": 20.0, "units": "ms", "navigate": True, "name": "Time"}]
    signal = {"metadata": {"Acquisition_instrument": {"TEM": {"Camera": {"exposure": 0.019}}}},
              "original_metadata": {"ImageList": {"TagGroup0": {"ImageTags": {"In-situ": {
                  "Dose Rate (e/Å2/s)": 12.5, "Dose rate note": "estimated"}}}}}}
    result = calibration_from_signal(signal, frames, [y, x])
    assert result.calibration.fps == pytest.approx(50.0) and result.calibration.exposure_s == 0.019
    assert result.calibration.dose_rate_e_per_A2s == 12.5
    assert result.found["dose_rate_e_per_A2s"].endswith("Dose Rate (e/Å2/s)") and result.missing == ()
