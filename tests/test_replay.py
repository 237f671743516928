"""Replay of TIFF / OME-TIFF stacks and JPEG/PNG folders as a timed stream (real files in tmp_path)."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

import numpy as np
import pytest
import tifffile
from PIL import Image

from sam4em_live.frames import Calibration
from sam4em_live.io.tiff_io import write_tiff_stack
from sam4em_live.sources.base import EndOfStream, FrameSource
from sam4em_live.sources.replay import ReplayError, ReplayOptions, ReplaySource, open_replay

if TYPE_CHECKING:
    from pathlib import Path


def stack(n: int = 6, shape: tuple[int, int] = (24, 32), dtype=np.uint16, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 4000, (n, *shape)).astype(dtype)


def drain(source: ReplaySource, limit: int = 10_000) -> list:
    frames = []
    while len(frames) < limit:
        try:
            frame = source.next_frame(0.05)
        except EndOfStream:
            break
        if frame is not None:
            frames.append(frame)
    return frames


def replay_all(path: Path, **kw) -> tuple[ReplaySource, list]:
    source = ReplaySource(path, as_fast_as_possible=True, **kw)
    source.open()
    try:
        return source, drain(source)
    finally:
        source.close()


# ------------------------------------------------------------------ TIFF


def test_imagej_tiff_frames_and_calibration(tmp_path):
    data = stack()
    path = write_tiff_stack(tmp_path / "rec.tif", data, pixel_size_nm=2.5, fps=80.0)
    t0 = time.time()
    source, frames = replay_all(path)
    assert isinstance(source, FrameSource)
    assert [f.index for f in frames] == list(range(len(data)))
    for frame, expected in zip(frames, data, strict=True):
        np.testing.assert_array_equal(frame.pixels, expected)
        assert frame.pixels.dtype == np.uint16 and not frame.pixels.flags.writeable
        assert t0 - 1 <= frame.timestamp_s <= time.time() + 1
    series = source.series
    assert series.shape == (24, 32) and series.dtype == "<u2"
    assert series.calibration.pixel_size_nm == pytest.approx(2.5, rel=1e-6)
    assert series.calibration.fps == pytest.approx(80.0)
    assert frames[0].calibration == series.calibration
    assert series.metadata["source"] == "replay" and series.metadata["n_frames"] == len(data)
    assert series.metadata["path"] == str(path.resolve()) and series.metadata["memory_mapped"] is True
    assert series.series_id.startswith("rec-") and len(series.series_id) > len("rec-")


@pytest.mark.parametrize("writer_kw", [{"ome": True}, {"compression": "zlib"}])
def test_ome_and_compressed_tiff(tmp_path, writer_kw):
    data = stack(dtype=np.int32) if writer_kw.get("ome") else stack()
    path = write_tiff_stack(tmp_path / "rec.ome.tif", data, pixel_size_nm=0.75, fps=400.0, **writer_kw)
    source, frames = replay_all(path)
    np.testing.assert_array_equal(np.stack([f.pixels for f in frames]), data)
    assert source.series.calibration.pixel_size_nm == pytest.approx(0.75, rel=1e-6)
    assert source.series.calibration.fps == pytest.approx(400.0)
    assert source.series.metadata["memory_mapped"] is ("compression" not in writer_kw)
    assert source.series.metadata["format"] == ("ome-tiff" if writer_kw.get("ome") else "imagej-tiff")


def test_ome_units_are_converted(tmp_path):
    path = tmp_path / "um.ome.tif"
    tifffile.imwrite(path, stack(3), ome=True, photometric="minisblack", metadata={
        "axes": "TYX", "PhysicalSizeX": 0.0025, "PhysicalSizeXUnit": "µm", "TimeIncrement": 12.5,
        "TimeIncrementUnit": "ms"})
    source, _ = replay_all(path)
    assert source.series.calibration.pixel_size_nm == pytest.approx(2.5)
    assert source.series.calibration.fps == pytest.approx(80.0)
    assert source.series.metadata["calibration_from"] == {"pixel_size_nm": "OME PhysicalSizeX",
                                                          "fps": "OME TimeIncrement"}


@pytest.mark.parametrize("unit, expected_nm", [("CENTIMETER", 1e7 / 5e4), ("INCH", None)])
def test_plain_tiff_resolution(tmp_path, unit, expected_nm):
    path = tmp_path / "plain.tif"
    tifffile.imwrite(path, stack(2), resolution=(5e4, 5e4), resolutionunit=unit)
    source, _ = replay_all(path)
    got = source.series.calibration.pixel_size_nm
    assert got == (pytest.approx(expected_nm) if expected_nm else None)
    assert source.series.calibration.fps is None


def test_singleton_axes_and_rgb_stack(tmp_path):
    data = stack(4)
    tifffile.imwrite(tmp_path / "tzc.tif", data[:, None, None], imagej=True, metadata={"axes": "TZCYX"})
    _, frames = replay_all(tmp_path / "tzc.tif")
    np.testing.assert_array_equal(np.stack([f.pixels for f in frames]), data)
    grey = (data % 256).astype(np.uint8)
    tifffile.imwrite(tmp_path / "rgb.tif", np.stack([grey] * 3, axis=-1), photometric="rgb")
    source, frames = replay_all(tmp_path / "rgb.tif")
    assert source.series.shape == (24, 32) and source.series.dtype == "|u1"
    np.testing.assert_array_equal(np.stack([f.pixels for f in frames]), grey)


def test_single_2d_image_is_one_frame(tmp_path):
    tifffile.imwrite(tmp_path / "one.tif", stack(1)[0])
    source, frames = replay_all(tmp_path / "one.tif")
    assert len(frames) == 1 and source.series.metadata["n_frames"] == 1


def test_big_endian_tiff_is_sent_little_endian(tmp_path):
    data = stack(3)
    tifffile.imwrite(tmp_path / "be.tif", data, byteorder=">", photometric="minisblack")
    source, frames = replay_all(tmp_path / "be.tif")
    assert source.series.dtype == "<u2" and frames[0].pixels.dtype.str == "<u2"
    np.testing.assert_array_equal(frames[2].pixels, data[2])


def test_write_tiff_stack_streams_an_iterable(tmp_path):
    data = stack(5, dtype=np.float32)
    path = write_tiff_stack(tmp_path / "gen.tif", (f for f in data), fps=25.0, n_frames=5)
    source, frames = replay_all(path)
    np.testing.assert_array_equal(np.stack([f.pixels for f in frames]), data)
    assert source.series.dtype == "<f4" and source.series.calibration.fps == pytest.approx(25.0)
    with pytest.raises(ValueError, match="expected 4"):
        write_tiff_stack(tmp_path / "short.tif", iter(data[:3]), n_frames=4)
    with pytest.raises(ValueError, match="2-D"):
        write_tiff_stack(tmp_path / "bad.tif", np.zeros((2, 3, 4, 5), np.uint16))


# ------------------------------------------------------------------ pacing, looping


def test_paced_replay_roughly_at_fps(tmp_path):
    path = write_tiff_stack(tmp_path / "rec.tif", stack(20), fps=50.0)
    source = ReplaySource(path)  # the file's own 50 fps
    source.open()
    t0 = time.monotonic()
    frames = drain(source)
    elapsed = time.monotonic() - t0
    source.close()
    assert len(frames) == 20
    assert 0.25 < elapsed < 1.5  # 19 intervals of 20 ms = 0.38 s; coarse bounds (loaded CI machine)


def test_next_frame_never_blocks_past_timeout(tmp_path):
    path = write_tiff_stack(tmp_path / "rec.tif", stack(3))
    source = ReplaySource(path, fps=1.0)
    source.open()
    assert source.next_frame(0.05) is not None  # the first frame is due at once
    t0 = time.monotonic()
    assert source.next_frame(0.05) is None  # the next is due in 1 s
    assert time.monotonic() - t0 < 0.3
    source.close()


def test_as_fast_as_possible_and_chosen_fps(tmp_path):
    path = write_tiff_stack(tmp_path / "rec.tif", stack(200, shape=(16, 16)))
    t0 = time.monotonic()
    _, frames = replay_all(path)
    assert len(frames) == 200 and time.monotonic() - t0 < 2.0
    source = ReplaySource(path, fps=1000.0)
    source.open()
    assert source.interval_s == pytest.approx(1e-3) and source.series.calibration.fps is None
    source.close()


def test_no_frame_rate_anywhere_is_a_clear_error(tmp_path):
    path = write_tiff_stack(tmp_path / "norate.tif", stack(2))
    with pytest.raises(ReplayError, match=r"norate\.tif.*--fps"):
        ReplaySource(path).open()


@pytest.mark.parametrize("compression", [None, "zlib"])  # memory-mapped, and read ahead on a thread
def test_loop_continues_indices(tmp_path, compression):
    data = stack(3)
    path = write_tiff_stack(tmp_path / "rec.tif", data, compression=compression)
    source = ReplaySource(path, as_fast_as_possible=True, loop=True)
    source.open()
    frames = drain(source, limit=8)
    assert [f.index for f in frames] == list(range(8))
    for frame in frames:
        np.testing.assert_array_equal(frame.pixels, data[frame.index % 3])
    assert len({f.series_id for f in frames}) == 1
    assert source.series.metadata["loops_completed"] == 2 and source.series.metadata["loop"] is True
    source.close()
    source.close()
    with pytest.raises(EndOfStream):
        source.next_frame(0.01)


def test_end_of_stream_and_config_entry_point(tmp_path):
    path = write_tiff_stack(tmp_path / "rec.tif", stack(2), pixel_size_nm=3.0)
    source = open_replay(ReplayOptions(path=path, as_fast_as_possible=True),
                         calibration_override=Calibration(pixel_size_nm=4.0))
    assert source.series.calibration.pixel_size_nm == 4.0  # override wins over metadata
    assert len(drain(source)) == 2
    with pytest.raises(EndOfStream):
        source.next_frame(0.01)
    assert source.counters.frames == 2 and source.counters.series_ended == 1
    source.close()


# ------------------------------------------------------------------ image folders


def write_frames(folder: Path, values: dict[str, int], shape=(20, 30), rgb: bool = True) -> None:
    folder.mkdir(exist_ok=True)
    for name, value in values.items():
        grey = np.full(shape, value, dtype=np.uint8)
        grey[0, 0] = 255 - value  # not uniform, so an orientation bug would show
        Image.fromarray(np.stack([grey] * 3, axis=-1) if rgb else grey).save(folder / name)


def test_jpeg_folder_rgb_grey_frames(tmp_path):
    folder = tmp_path / "jpegs"
    write_frames(folder, {f"{i:06d}.jpeg": 20 * i + 10 for i in range(5)})
    source, frames = replay_all(folder)
    assert source.series.shape == (20, 30) and source.series.dtype == "|u1"
    assert [f.index for f in frames] == list(range(5))
    for i, frame in enumerate(frames):
        assert frame.pixels.ndim == 2
        assert abs(float(np.median(frame.pixels)) - (20 * i + 10)) <= 2  # JPEG is lossy


def test_png_folder_numeric_not_lexical_order(tmp_path):
    folder = tmp_path / "pngs"
    write_frames(folder, {f"{i}.png": 10 * i for i in range(12)}, rgb=False)
    _, frames = replay_all(folder)
    assert [int(f.pixels[5, 5]) for f in frames] == [10 * i for i in range(12)]  # 9 then 10, not 1, 10, 11, 2
    padded = tmp_path / "padded"
    write_frames(padded, {"000002.png": 2, "000001.png": 1, "000000.png": 0}, rgb=False)
    _, frames = replay_all(padded)
    assert [int(f.pixels[5, 5]) for f in frames] == [0, 1, 2]


def test_colour_frames_use_luminance_and_log_once(tmp_path, caplog):
    folder = tmp_path / "colour"
    folder.mkdir()
    rgb = np.zeros((10, 12, 3), dtype=np.uint8)
    rgb[..., 0] = 200  # pure red: luminance 0.299 * 200
    for i in range(3):
        Image.fromarray(rgb).save(folder / f"{i:06d}.png")
    with caplog.at_level(logging.WARNING):
        _, frames = replay_all(folder)
    assert int(frames[0].pixels[0, 0]) == round(0.299 * 200)
    assert sum("luminance" in r.message for r in caplog.records) == 1


def test_unreadable_frame_is_skipped_and_counted(tmp_path):
    folder = tmp_path / "frames"
    write_frames(folder, {f"{i:06d}.png": 10 * i for i in range(4)}, rgb=False)
    (folder / "000002.png").write_bytes((folder / "000002.png").read_bytes()[:60])  # truncated file
    source = ReplaySource(folder, as_fast_as_possible=True)
    source.open()
    frames = drain(source)
    source.close()
    assert [f.index for f in frames] == [0, 1, 3]  # the index of the bad frame stays empty
    assert int(frames[2].pixels[5, 5]) == 30
    assert source.counters.rejected_by_reason == {"unreadable_frame": 1}


# ------------------------------------------------------------------ errors


def test_errors_name_the_path(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("hello")
    write_frames(tmp_path / "mixed", {"000000.png": 1}, shape=(20, 30), rgb=False)
    write_frames(tmp_path / "mixed", {"000001.png": 1}, shape=(21, 30), rgb=False)
    write_frames(tmp_path / "dupes", {"1.png": 1, "001.png": 1}, rgb=False)
    write_frames(tmp_path / "unnumbered", {"000000.png": 1, "cover.png": 1}, rgb=False)
    tifffile.imwrite(tmp_path / "tz.tif", stack(6).reshape(2, 3, 24, 32), imagej=True, metadata={"axes": "TZYX"})
    with tifffile.TiffWriter(tmp_path / "sizes.tif") as tw:
        tw.write(stack(1)[0])
        tw.write(stack(1, shape=(10, 10))[0])
    cases = {
        "missing.tif": "no such file",
        "empty": "no JPEG/PNG frames",
        "notes.txt": "unsupported recording type",
        "mixed": "mixed frame sizes",
        "dupes": "same frame number",
        "unnumbered": "no frame number",
        "tz.tif": "several frame axes",
        "sizes.tif": "image series",
    }
    for name, message in cases.items():
        with pytest.raises(ReplayError, match=message) as info:
            ReplaySource(tmp_path / name, as_fast_as_possible=True).open()
        assert str(tmp_path / name) in str(info.value), name
    (tmp_path / "bad.tif").write_bytes(b"not a tiff at all")
    with pytest.raises(ReplayError, match="not a readable TIFF"):
        ReplaySource(tmp_path / "bad.tif", as_fast_as_possible=True).open()
    assert issubclass(ReplayError, ValueError)
