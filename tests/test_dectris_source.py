"""The DECTRIS SIMPLON stream source (v1 and v2) against the stand-in detector over real ZeroMQ on loopback."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

pytest.importorskip("cbor2", reason="the DECTRIS source needs the 'dectris' extra (cbor2): pip install '.[dectris]'")
pytest.importorskip("bitshuffle", reason="the DECTRIS source needs the 'dectris' extra (bitshuffle)")
pytest.importorskip("lz4", reason="the DECTRIS source needs the 'dectris' extra (lz4)")

from sam4em_live.config import SourceConfig
from sam4em_live.frames import Frame
from sam4em_live.sources.base import EndOfStream, FrameSource
from sam4em_live.sources.dectris.compression import Encoding, PayloadError, decode_pixels, encode_pixels
from sam4em_live.sources.dectris.source import DectrisFrameSource, DectrisOptions
from sam4em_live.sources.registry import SourceContext, build_source
from tools.dectris_standin.publisher import DectrisStandIn, DetectorSettings, publish_series

STREAMS = ("v1", "v2")
COMPRESSIONS = ("none", "bslz4", "lz4")


def _frames(n: int, shape=(48, 80), dtype=np.uint16, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.poisson(30, shape).astype(dtype) for _ in range(n)]


def _receive(source: FrameSource, n: int, timeout_s: float = 10.0) -> list[Frame]:
    got: list[Frame] = []
    deadline = time.monotonic() + timeout_s
    while len(got) < n and time.monotonic() < deadline:
        frame = source.next_frame(0.1)
        if frame is not None:
            got.append(frame)
    return got


def _drain(source: FrameSource, seconds: float = 0.3) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        source.next_frame(0.05)


class Detector:
    """A stand-in publishing on its own thread (stopped and joined on close)."""

    def __init__(self, stream: str, compression: str = "bslz4", endpoint: str = "tcp://127.0.0.1:0",
                 settings: DetectorSettings | None = None) -> None:
        self.standin = DectrisStandIn(stream, compression, endpoint, settings)  # type: ignore[arg-type]
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []

    def publish(self, frames, **kwargs) -> None:
        thread = threading.Thread(target=publish_series, args=(self.standin, frames),
                                  kwargs={"stop": self.stop, **kwargs}, daemon=True)
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(10)

    def close(self) -> None:
        self.stop.set()
        self.join()
        self.standin.close()


@pytest.fixture
def opened():
    made: list[tuple[Detector, DectrisFrameSource]] = []

    def make(stream: str, compression: str = "bslz4", settings: DetectorSettings | None = None, **options):
        detector = Detector(stream, compression, settings=settings)
        source = DectrisFrameSource(DectrisOptions(endpoint=detector.standin.endpoint, **options))
        source.open()
        made.append((detector, source))
        return detector, source

    yield make
    for detector, source in made:
        detector.close()
        source.close()


@pytest.mark.parametrize("stream", STREAMS)
@pytest.mark.parametrize("compression", COMPRESSIONS)
@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])
def test_frames_arrive_exactly_with_series_and_calibration(opened, stream, compression, dtype):
    frames = _frames(6, dtype=dtype)
    settings = DetectorSettings(shape=frames[0].shape, dtype=np.dtype(dtype).str, frame_time_s=0.02,
                                count_time_s=0.019, pixel_size_m=75e-6)
    detector, source = opened(stream, compression, settings, magnification=50_000.0)
    detector.publish(frames)
    got = _receive(source, len(frames))
    detector.join()
    _drain(source)
    assert [f.index for f in got] == list(range(6))
    for sent, frame in zip(frames, got, strict=True):
        assert frame.pixels.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(frame.pixels, sent)
    series = source.series
    assert series is not None
    assert series.series_id == ("dectris-1" if stream == "v1" else "standin-1")
    assert series.shape == frames[0].shape and series.dtype == np.dtype(dtype).str
    assert series.calibration.fps == pytest.approx(50.0)
    assert series.calibration.exposure_s == pytest.approx(0.019)
    assert series.calibration.pixel_size_nm == pytest.approx(75e-6 * 1e9 / 50_000)  # 1.5 nm
    assert series.metadata["detector_pixel_size_m"] == pytest.approx(75e-6)
    # the detector's start times (frame i at i * frame_time after arm) become the frames' timestamps
    assert got[5].timestamp_s - got[0].timestamp_s == pytest.approx(5 * 0.02, abs=1e-6)
    assert source.counters.snapshot() == {"frames": 6, "gaps": 0, "rejected": 0, "rejected_by_reason": {},
                                          "series_started": 1, "series_ended": 1}


@pytest.mark.parametrize("stream", STREAMS)
def test_pixel_mask_and_flatfield_are_applied(opened, stream):
    shape = (40, 64)
    mask = np.zeros(shape, np.uint32)
    mask[10, 20] = 1  # dead
    mask[:, 32] = 1 << 0  # a module gap column
    mask[5, 5] = 1 << 4  # hot
    flatfield = np.full(shape, 1.0, np.float32)
    flatfield[:, :16] = 2.0
    frame = np.full(shape, 100, np.uint16)
    frame[mask != 0] = 65535  # the detector marks flagged pixels with its saturation value
    settings = DetectorSettings(shape=shape, header_detail="all", pixel_mask=mask, flatfield=flatfield,
                                flatfield_applied=False)
    detector, source = opened(stream, "bslz4", settings)
    detector.publish([frame, frame])
    got = _receive(source, 2)
    assert len(got) == 2
    out = got[0].pixels
    assert out.dtype == np.float32  # the flatfield makes frames float
    assert np.all(out[mask != 0] < 1000)  # no flagged pixel left bright
    good = mask == 0
    np.testing.assert_allclose(out[good & (flatfield == 2.0)], 200.0)
    np.testing.assert_allclose(out[good & (flatfield == 1.0)], 100.0)
    assert source.series is not None and source.series.metadata["masked_pixels"] == int((mask != 0).sum())


@pytest.mark.parametrize("stream", STREAMS)
def test_flatfield_the_detector_applied_is_not_applied_twice(opened, stream):
    shape = (16, 16)
    settings = DetectorSettings(shape=shape, header_detail="all", flatfield=np.full(shape, 3.0, np.float32),
                                flatfield_applied=True)
    detector, source = opened(stream, "none", settings)
    frame = np.full(shape, 7, np.uint16)
    detector.publish([frame])
    (got,) = _receive(source, 1)
    assert got.pixels.dtype == np.uint16
    np.testing.assert_array_equal(got.pixels, frame)


@pytest.mark.parametrize("stream", STREAMS)
def test_gaps_and_out_of_order_images_are_counted(opened, stream):
    detector, source = opened(stream, "bslz4", DetectorSettings(shape=(32, 32)))
    frames = _frames(8, shape=(32, 32))
    standin = detector.standin
    assert standin.arm(3, 8)
    for i in (0, 1, 4, 5, 5, 2, 7):  # 2, 3 and 6 never come; 5 repeats; 2 comes late
        assert standin.image(3, i, frames[i])
    assert standin.disarm(3)
    got = _receive(source, 5)
    _drain(source)
    assert [f.index for f in got] == [0, 1, 4, 5, 7]
    counters = source.counters.snapshot()
    assert counters["gaps"] == 3
    assert counters["rejected_by_reason"] == {"non_monotonic": 2}
    assert counters["series_started"] == 1 and counters["series_ended"] == 1


@pytest.mark.parametrize("stream", STREAMS)
def test_malformed_messages_are_counted_and_skipped(opened, stream):
    detector, source = opened(stream, "bslz4", DetectorSettings(shape=(32, 32)))
    standin = detector.standin
    frames = _frames(2, shape=(32, 32))
    assert standin.arm(1, 2)
    good = standin.image_message(1, 0, frames[0])
    if stream == "v1":
        bad_encoding = [good[0], json.dumps({**json.loads(good[1]), "encoding": "bs16-lz4>"}).encode(), *good[2:]]
        truncated = [good[0], good[1], good[2][: len(good[2]) // 2], good[3]]
        bad_json = [b"{not json", b"x"]
        bad = {"unsupported_encoding": bad_encoding, "decompress_failed": truncated, "bad_json": bad_json}
    else:
        bad = {"bad_cbor": [b"\xff\x00garbage"], "part_count": [good[0], b"extra"],
               "wrong_stream_version": [json.dumps({"htype": "dseries_end-1.0", "series": 1}).encode()]}
    for parts in bad.values():
        assert standin.send(parts)
    assert standin.image(1, 1, frames[1])
    assert standin.disarm(1)
    if stream == "v2":
        source.options = DectrisOptions(endpoint=source.endpoint, stream="v2")  # so a v1 message is refused
    got = _receive(source, 1)
    _drain(source)
    assert [f.index for f in got] == [1]
    np.testing.assert_array_equal(got[0].pixels, frames[1])
    assert source.counters.rejected_by_reason == dict.fromkeys(bad, 1)


def test_corrupt_compressed_payloads_are_refused_not_raised():
    """Truncated payloads and lying size headers are refused (LZ4 carries no checksum: garbage *inside* a block
    of the right size can decode to wrong pixels, which only v1's md5 ``hash`` could tell)."""
    pixels = _frames(1, shape=(64, 64))[0]
    dtype, shape = pixels.dtype, pixels.shape
    for algorithm in ("bslz4", "lz4-hdf5", "lz4-block"):
        payload = encode_pixels(pixels, algorithm)
        encoding = Encoding(algorithm, 2 if algorithm == "bslz4" else 0)
        with pytest.raises(PayloadError) as caught:
            decode_pixels(payload[: len(payload) // 2], encoding, dtype, shape)
        assert caught.value.reason in ("decompress_failed", "size_mismatch")
        with pytest.raises(PayloadError):
            decode_pixels(payload, encoding, dtype, (shape[0] + 1, shape[1]))  # announced size differs


def test_reconnects_after_the_detector_restarts(opened):
    detector, source = opened("v2", "bslz4", DetectorSettings(shape=(32, 32)))
    endpoint = detector.standin.endpoint
    detector.publish(_frames(3, shape=(32, 32)), series=1)
    assert len(_receive(source, 3)) == 3
    detector.close()  # the detector control unit restarts
    time.sleep(0.3)
    again = Detector("v2", "bslz4", endpoint, DetectorSettings(shape=(32, 32)))
    try:
        again.publish(_frames(4, shape=(32, 32), seed=1), series=1)  # and arms the same series number again
        got = _receive(source, 4)
        assert [f.index for f in got] == [0, 1, 2, 3]
        assert source.series is not None and source.series.series_id == "standin-1.1"  # a new series of the run
        assert source.restarts == 1
        assert source.counters.series_started == 2
        assert source.counters.rejected == 0
    finally:
        again.close()


def test_images_without_a_header_start_a_series(opened):
    detector, source = opened("v1", "none", DetectorSettings(shape=(16, 24)))
    frames = _frames(2, shape=(16, 24))
    for i, f in enumerate(frames):  # joined late: the header went to nobody
        assert detector.standin.image(9, i, f)
    got = _receive(source, 2)
    assert [f.series_id for f in got] == ["dectris-9", "dectris-9"]
    assert source.counters.series_started == 1
    assert source.series is not None and source.series.calibration.fps is None


def test_stop_at_series_end_ends_the_stream(opened):
    detector, source = opened("v1", "bslz4", DetectorSettings(shape=(16, 16)))
    source.stop_at_series_end = True
    detector.publish(_frames(2, shape=(16, 16)))
    assert len(_receive(source, 2)) == 2
    with pytest.raises(EndOfStream):
        _drain(source, 5.0)


def test_next_frame_never_blocks_beyond_its_timeout():
    source = DectrisFrameSource(DectrisOptions(endpoint="tcp://127.0.0.1:9"))  # nobody there
    source.open()
    try:
        t0 = time.monotonic()
        assert source.next_frame(0.15) is None
        assert time.monotonic() - t0 < 0.5
    finally:
        source.close()


def test_chosen_from_the_config():
    source = build_source(SourceConfig(kind="dectris", endpoint="tcp://127.0.0.1:31001", stream="v2",
                                       magnification=30000.0), SourceContext(stop_at_series_end=True))
    assert isinstance(source, DectrisFrameSource) and isinstance(source, FrameSource)
    assert source.options.stream == "v2" and source.stop_at_series_end
    with pytest.raises(Exception, match="endpont"):
        build_source(SourceConfig(kind="dectris", endpont="tcp://x:1"))


def test_appendix_pixel_size_is_the_sample_calibration(opened):
    settings = DetectorSettings(shape=(16, 16), appendix={"pixel_size_nm": 0.8})
    detector, source = opened("v1", "none", settings)
    detector.publish(_frames(1, shape=(16, 16)))
    (frame,) = _receive(source, 1)
    assert frame.calibration.pixel_size_nm == pytest.approx(0.8)


@pytest.mark.parametrize("algorithm,elem", [("bslz4", 2), ("bslz4", 4), ("lz4-hdf5", 0)])
def test_payloads_match_the_dectris_reference_decompressor(algorithm, elem):
    """Our payloads, decompressed by DECTRIS's own package (an independent implementation), and theirs by us."""
    dectris = pytest.importorskip("dectris.compression", reason="dectris-compression is not installed")
    dtype = np.uint16 if elem != 4 else np.uint32
    pixels = _frames(1, shape=(100, 120), dtype=dtype)[0]
    payload = encode_pixels(pixels, algorithm)
    name = "bslz4" if algorithm == "bslz4" else "lz4"
    plain = dectris.decompress(payload, name, elem_size=pixels.itemsize)
    np.testing.assert_array_equal(np.frombuffer(plain, dtype).reshape(pixels.shape), pixels)
    encoding = Encoding.from_v2(name, pixels.itemsize if name == "bslz4" else 0)
    np.testing.assert_array_equal(decode_pixels(payload, encoding, np.dtype(dtype), pixels.shape), pixels)


def test_v1_encoding_names():
    assert Encoding.from_v1("<") == Encoding("raw")
    assert Encoding.from_v1("lz4<") == Encoding("lz4-block")
    assert Encoding.from_v1("bs32-lz4<") == Encoding("bslz4", 4)
    assert Encoding.from_v1("bs16-lz4<") == Encoding("bslz4", 2)
    for refused in (">", "bs16-lz4>", "bs16<", "zstd<", None, 3):
        with pytest.raises(PayloadError):
            Encoding.from_v1(refused)


@pytest.mark.parametrize("compression", COMPRESSIONS)
def test_standin_v2_messages_decode_with_dectris_documented_recipe(compression):
    """The stand-in's v2 images, decoded the way DECTRIS's documentation shows (cbor2 + a tag-56500 hook
    calling dectris.compression.decompress), without any code of ours on the receiving side."""
    import cbor2

    dectris = pytest.importorskip("dectris.compression", reason="dectris-compression is not installed")
    pixels = _frames(1, shape=(40, 56))[0]
    standin = DectrisStandIn("v2", compression)  # type: ignore[arg-type]
    (message,) = standin.image_message(7, 3, pixels)
    standin.close()

    def tag_hook(*args):
        tag = next(a for a in args if isinstance(a, cbor2.CBORTag))
        if tag.tag == 56500:
            algorithm, elem_size, encoded = tag.value
            return dectris.decompress(encoded, algorithm, elem_size=elem_size)
        if tag.tag == 69:
            return np.frombuffer(tag.value, "<u2")
        if tag.tag == 40:
            dims, array = tag.value
            return array.reshape(dims)
        return tag

    decoded = cbor2.loads(message, tag_hook=tag_hook)
    assert decoded["type"] == "image" and decoded["image_id"] == 3 and decoded["series_id"] == 7
    np.testing.assert_array_equal(decoded["data"]["threshold_1"], pixels)


@pytest.mark.parametrize("algorithm", ["bslz4", "lz4-hdf5", "lz4-block"])
def test_the_bitshuffle_and_lz4_fallback_decodes_what_dectris_compression_does(monkeypatch, algorithm):
    """Without dectris-compression, bitshuffle + python-lz4 do the work (and agree with it where it is here)."""
    from sam4em_live.sources.dectris import compression

    pixels = _frames(1, shape=(70, 90))[0]
    payload = encode_pixels(pixels, algorithm)
    encoding = Encoding(algorithm, 2 if algorithm == "bslz4" else 0)
    with_default = decode_pixels(payload, encoding, pixels.dtype, pixels.shape)
    monkeypatch.setattr(compression, "_DECTRIS", None)
    fallback = decode_pixels(payload, encoding, pixels.dtype, pixels.shape)
    np.testing.assert_array_equal(fallback, pixels)
    np.testing.assert_array_equal(with_default, pixels)


def test_the_service_tracks_a_dectris_series_chosen_from_the_config(tmp_path):
    """``[source] kind = "dectris"`` end to end: stand-in (v2, bitshuffle-LZ4) -> service -> run folder."""
    import pandas as pd

    from sam4em_live.config import ServiceConfig
    from sam4em_live.particles import Prompt
    from sam4em_live.service.builder import build_service
    from tests.conftest import disk_video

    frames, _ = disk_video(n_frames=12)
    settings = DetectorSettings(shape=frames[0].shape, frame_time_s=0.025, count_time_s=0.02,
                                appendix={"pixel_size_nm": 0.5})
    detector = Detector("v2", "bslz4", settings=settings)
    cfg = ServiceConfig.from_mapping({
        "source": {"kind": "dectris", "endpoint": detector.standin.endpoint},
        "segmenter": {"backend": "threshold"}, "recorder": {"out_dir": str(tmp_path / "runs")},
        "publisher": {"enabled": False}, "control": {"enabled": False},
        "pipeline": {"backpressure": "every-frame"},
    })
    built = build_service(cfg, edits=[Prompt(1, 0, ((30.0, 40.0),), (1,))], run_id="dectris",
                          stop_at_series_end=True)
    detector.publish(list(frames))
    try:
        built.service.run()
    finally:
        detector.close()
    assert built.service.error is None
    table = pd.read_csv(tmp_path / "runs" / "dectris" / "trajectories.csv")
    assert sorted(table.frame) == list(range(12))
    np.testing.assert_allclose(table.t_s, table.frame * 0.025)  # 1 / frame_time
    np.testing.assert_allclose(table.x.to_numpy(), 30.0 + table.frame.to_numpy(), atol=0.6)
    run = json.loads((tmp_path / "runs" / "dectris" / "run.json").read_text())
    assert "standin-1" in json.dumps(run)
    assert '"pixel_size_nm": 0.5' in json.dumps(run)


@pytest.mark.parametrize("detail, fps", [("none", None), ("basic", 40.0), ("all", 40.0)])
def test_v1_header_detail_levels(opened, detail, fps):
    settings = DetectorSettings(shape=(24, 32), frame_time_s=0.025, header_detail=detail,
                                appendix={"operator": "stand-in"})  # an appendix part after the header parts
    detector, source = opened("v1", "bslz4", settings)
    frames = _frames(2, shape=(24, 32))
    detector.publish(frames)
    got = _receive(source, 2)
    assert [f.index for f in got] == [0, 1]
    assert source.series is not None and source.series.metadata["header_detail"] == detail
    assert source.series.calibration.fps == (pytest.approx(fps) if fps else None)
    assert source.series.metadata["masked_pixels"] == 0  # "all" sends an empty mask: nothing to fill
    assert source.counters.rejected == 0
