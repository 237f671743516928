"""The DigitalMicrograph live-view publisher, with the file-backed live view: every message it sends is
decoded by the service's own ZeroMQ source (so the in-DigitalMicrograph encoder stays in step with wire.py)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from sam4em_live.frames import Frame
from sam4em_live.sources.zmq_source import ZmqFrameSource
from tools.digitalmicrograph.adapter import FileLiveView, LiveFrame, pixel_size_nm
from tools.digitalmicrograph.live_view import LiveViewPublisher, wire_pixels

ROOT = Path(__file__).resolve().parents[1]


def _stack(tmp_path: Path, n: int = 20, shape=(64, 80), dtype=np.uint16) -> tuple[Path, np.ndarray]:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 4000, (n, *shape)).astype(dtype)
    path = tmp_path / "live.tif"
    tifffile.imwrite(path, frames)
    return path, frames


def _receive(source: ZmqFrameSource, n: int, timeout_s: float = 10.0) -> list[Frame]:
    got: list[Frame] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        frame = source.next_frame(0.05)
        if frame is not None:
            got.append(frame)
    return got


class _Scripted:
    """A live view showing given frames one look at a time (the same frame may be shown twice)."""

    name = "scripted camera"

    def __init__(self, frames: list[LiveFrame]) -> None:
        self.frames = frames

    def grab(self) -> LiveFrame | None:
        return self.frames.pop(0) if self.frames else None

    def close(self) -> None:
        pass


def _connected(publisher: LiveViewPublisher) -> ZmqFrameSource:
    source = ZmqFrameSource(publisher.endpoint)
    source.open()
    time.sleep(0.3)  # PUB drops what it sends before the subscription arrives
    return source


def test_file_live_view_frames_reach_the_service_decoder_exactly(tmp_path):
    path, frames = _stack(tmp_path)
    view = FileLiveView(str(path), fps=40.0, pixel_size_nm=0.25, exposure_s=0.02, loop=False)
    publisher = LiveViewPublisher(view, "tcp://127.0.0.1:0")
    source = _connected(publisher)
    stop = threading.Event()
    thread = threading.Thread(target=publisher.run, args=(stop,), daemon=True)
    thread.start()
    try:
        got = _receive(source, len(frames), timeout_s=3.0)
    finally:
        stop.set()
        thread.join(5)
    assert len(got) >= len(frames) - 2  # the view started before the subscription; the rest arrive in order
    for frame in got:
        np.testing.assert_array_equal(frame.pixels, frames[frame.index])  # index = the camera's frame number
    assert [f.index for f in got] == sorted(f.index for f in got)
    assert got[-1].index == len(frames) - 1
    series = source.series
    assert series is not None and series.series_id.startswith("dm-file-")
    assert series.calibration.pixel_size_nm == 0.25 and series.calibration.fps == 40.0
    assert series.calibration.exposure_s == 0.02 and series.metadata["source"] == "digitalmicrograph"
    assert got[1].timestamp_s - got[0].timestamp_s == pytest.approx((got[1].index - got[0].index) / 40.0, abs=1e-5)
    _receive(source, 1, timeout_s=0.3)  # the series end
    assert source.counters.rejected == 0 and source.counters.series_ended == 1
    source.close()
    publisher.close()


def test_unchanged_live_image_is_not_a_new_frame_and_a_new_calibration_is_a_new_series():
    rng = np.random.default_rng(1)
    a, b, c = (rng.integers(0, 255, (32, 32)).astype(np.uint8) for _ in range(3))
    view = _Scripted([LiveFrame(a, 1.0, None, 0.5), LiveFrame(a.copy(), 1.1, None, 0.5),
                      LiveFrame(b, 1.2, None, 0.5), LiveFrame(c, 1.3, None, 0.25)])  # magnification changed
    publisher = LiveViewPublisher(view, "tcp://127.0.0.1:0")
    source = _connected(publisher)
    sent = [publisher.publish_new() for _ in range(4)]
    publisher.end_series()
    assert sent == [True, False, True, True] and publisher.unchanged_looks == 1
    got = _receive(source, 3)
    assert [(f.index, f.calibration.pixel_size_nm) for f in got] == [(0, 0.5), (1, 0.5), (0, 0.25)]
    assert got[0].series_id != got[2].series_id
    _receive(source, 1, timeout_s=0.3)
    assert source.counters.series_started == 2 and source.counters.series_ended == 2
    assert source.counters.rejected == 0
    source.close()
    publisher.close()


def test_a_slow_look_at_a_fast_camera_shows_as_gaps(tmp_path):
    """The live-view limit: frames the publisher does not look at in time are lost, and counted as gaps."""
    path, frames = _stack(tmp_path, n=40)
    view = FileLiveView(str(path), fps=200.0, loop=False)
    publisher = LiveViewPublisher(view, "tcp://127.0.0.1:0")
    source = _connected(publisher)
    stop = threading.Event()
    thread = threading.Thread(target=publisher.run, args=(stop, 0.012), daemon=True)  # ~80 looks/s
    thread.start()
    try:
        got = _receive(source, 40, timeout_s=0.6)
    finally:
        stop.set()
        thread.join(5)
    assert 3 <= len(got) < 40
    for frame in got:
        np.testing.assert_array_equal(frame.pixels, frames[frame.index])
    assert source.counters.gaps > 0
    source.close()
    publisher.close()


@pytest.mark.parametrize("scale, unit, nm", [(0.5, "nm", 0.5), (0.002, "µm", 2.0), (3.0, "Å", 0.3),
                                                   (1.0, "", None), (0.1, "1/nm", None), (0.0, "nm", None)])
def test_dm_axis_units_to_nm(scale, unit, nm):
    assert pixel_size_nm(scale, unit) == (pytest.approx(nm) if nm is not None else None)


@pytest.mark.parametrize("dtype, wire", [(np.int8, "<i2"), (np.float16, "<f4"), (np.dtype(">u2"), "<u2"),
                                              (np.float32, "<f4"), (np.int64, "<f8")])
def test_dm_pixel_types_become_wire_types(dtype, wire):
    assert wire_pixels(np.zeros((2, 3), dtype)).dtype.str == wire


def test_the_digitalmicrograph_adapter_says_where_it_works():
    from tools.digitalmicrograph.dm_adapter import DigitalMicrographLiveView

    with pytest.raises(ImportError, match="inside Gatan DigitalMicrograph"):
        DigitalMicrographLiveView()


def test_the_script_runs_as_a_process_on_a_recording(tmp_path):
    path, frames = _stack(tmp_path, n=10)
    script = ROOT / "tools" / "digitalmicrograph" / "sam4em_dm_live.py"
    # The script binds a port the kernel chooses and says which (a port probed and freed beforehand could be
    # taken again in between: this test lost every frame once in five runs that way).
    process = subprocess.Popen([sys.executable, str(script), "--file", str(path), "--fps", "20", "--endpoint",
                                "tcp://127.0.0.1:0", "--frames", "200", "--stop-file", str(tmp_path / "stop")],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    source = None
    try:
        assert process.stdout is not None
        first = process.stdout.readline()
        assert " on tcp://" in first, first
        source = ZmqFrameSource(first.rsplit(" on ", 1)[1].strip())
        source.open()
        got = _receive(source, 5, timeout_s=15.0)
        (tmp_path / "stop").touch()  # how the script is stopped inside DigitalMicrograph
        out, _ = process.communicate(timeout=10)
        out = first + out
    finally:
        if process.poll() is None:
            process.kill()
        if source is not None:
            source.close()
    assert process.returncode == 0, out
    assert len(got) == 5 and "sam4em-live: sent" in out
    for frame in got:
        np.testing.assert_array_equal(frame.pixels, frames[frame.index % len(frames)])


def test_the_service_follows_the_script_when_digitalmicrograph_restarts(tmp_path):
    path, frames = _stack(tmp_path, n=5)
    first = LiveViewPublisher(FileLiveView(str(path), fps=50.0), "tcp://127.0.0.1:0")
    endpoint = first.endpoint
    source = _connected(first)
    try:
        assert first.publish_new()
        (a,) = _receive(source, 1)
        first.close()  # DigitalMicrograph (or the script) restarts
        time.sleep(0.3)
        second = LiveViewPublisher(FileLiveView(str(path), fps=50.0), endpoint)
        got: list[Frame] = []
        deadline = time.monotonic() + 10.0
        try:  # the live view goes on; the source's socket reconnects by itself (every 100-250 ms)
            while not got and time.monotonic() < deadline:
                second.publish_new()
                got = _receive(source, 1, timeout_s=0.05)
        finally:
            second.close()
        (b,) = got
    finally:
        source.close()
    assert b.series_id != a.series_id
    np.testing.assert_array_equal(b.pixels, frames[b.index % len(frames)])
    assert source.counters.rejected == 0


def test_the_digitalmicrograph_side_stays_python_37_and_free_of_sam4em_live():
    """GMS 3.4's Python is 3.7, and the microscope PC has numpy, pyzmq and msgpack, not this package."""
    import ast

    for path in sorted((ROOT / "tools" / "digitalmicrograph").glob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), feature_version=(3, 7))
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not any(name.startswith(("sam4em_live", "tools")) for name in imported), path.name
