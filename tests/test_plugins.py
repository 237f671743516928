"""The plugin registries: sources, segmenters, sinks and readers open to plugins defined outside the package.

The plugins below live in this test module, as they would in another distribution; they are registered at
run time (`Registry.register`) and used through the ordinary config tables. The package's own Parquet sink
is found through its entry point in ``pyproject.toml``, read from the installed metadata.
"""

from __future__ import annotations

import json
import logging
from importlib.metadata import entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from pydantic import BaseModel, ConfigDict, PositiveFloat, PositiveInt

from sam4em_live.config import FrozenModel, ServiceConfig
from sam4em_live.frames import Calibration, Frame
from sam4em_live.io.frame_readers import ReplayError
from sam4em_live.io.reader_registry import READERS, open_reader
from sam4em_live.particles import ParticleEdit, ParticleMask, Prompt
from sam4em_live.plugins import FactoryPlugin, NoOptions, PluginError, Registry, parse_assignments
from sam4em_live.results import FrameResult, RunInfo
from sam4em_live.segment.registry import SEGMENTERS, create_segmenter
from sam4em_live.service.builder import build_service
from sam4em_live.sinks.base import Sink
from sam4em_live.sinks.parquet import ParquetSink
from sam4em_live.sinks.registry import SINKS
from sam4em_live.sources.array_source import ArraySource
from sam4em_live.sources.registry import SOURCES, SourceContext
from sam4em_live.sources.replay import ReplaySource
from tests.conftest import disk_video

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [Prompt(1, 0, ((30.0, 40.0),), (1,)), Prompt(2, 0, box=(60.0, 50.0, 80.0, 70.0))]


# ------------------------------------------------------------------ plugins, as another package would write them


class DiskMovieOptions(FrozenModel):
    frames: PositiveInt = 10
    fps: PositiveFloat = 50.0


class DiskMovieSource(ArraySource):
    """A source plugin: the synthetic disks of `disk_video`, calibrated at the chosen rate."""

    Options = DiskMovieOptions

    def __init__(self, options: DiskMovieOptions, context: SourceContext) -> None:
        frames, _ = disk_video(n_frames=options.frames)
        super().__init__(frames, Calibration(fps=options.fps).merged(context.calibration_override))


class FixedDiskOptions(FrozenModel):
    radius_px: int = 5


class FixedDiskSegmenter:
    """A segmenter plugin: every prompted particle is a disk of ``radius_px`` at its prompt, on every frame."""

    Options = FixedDiskOptions

    def __init__(self, options: FixedDiskOptions) -> None:
        self.options = options
        self._centres: dict[int, tuple[float, float]] = {}

    def describe(self) -> dict[str, Any]:
        return {"backend": "fixed-disk", "random_weights": False, "options": self.options.model_dump()}

    def track(self, frame: Frame, edits: Sequence[ParticleEdit] = ()) -> list[ParticleMask]:
        for edit in edits:
            if isinstance(edit, Prompt):
                self._centres[edit.particle] = edit.points[0] if edit.points else (
                    (edit.box[0] + edit.box[2]) / 2, (edit.box[1] + edit.box[3]) / 2)
        rows, cols = np.mgrid[0:frame.shape[0], 0:frame.shape[1]]
        return [ParticleMask.from_full(pid, (cols - x) ** 2 + (rows - y) ** 2 <= self.options.radius_px ** 2, 1.0)
                for pid, (x, y) in sorted(self._centres.items())]

    def particles(self) -> list[int]:
        return sorted(self._centres)

    def close(self) -> None:
        self._centres.clear()


class FrameLogOptions(FrozenModel):
    every: PositiveInt = 1


class FrameLogSink:
    """A sink plugin: keeps the index of every ``every``-th frame it is given."""

    Options = FrameLogOptions

    def __init__(self, options: FrameLogOptions) -> None:
        self.options = options
        self.frames: list[int] = []
        self.closed = False

    def open(self, run: RunInfo) -> None:
        self.frames.clear()

    def consume(self, result: FrameResult) -> None:
        if result.index % self.options.every == 0:
            self.frames.append(result.index)

    def on_status(self, status: Mapping[str, Any]) -> None:
        pass

    def close(self) -> None:
        self.closed = True


class NpyStackReader:
    """A reader plugin: a (T, rows, columns) ``.npy`` stack, memory-mapped."""

    Options = NoOptions
    suffixes = (".npy",)
    folder = False

    def __init__(self, options: NoOptions, path: Path) -> None:
        self.path = path
        self._stack = np.load(path, mmap_mode="r")
        self.n_frames, *shape = self._stack.shape
        self.shape = (shape[0], shape[1])
        self.dtype = self._stack.dtype.str
        self.calibration = Calibration()
        self.metadata: dict[str, Any] = {"format": "npy", "memory_mapped": True}

    def read(self, i: int) -> np.ndarray:
        return np.asarray(self._stack[i])

    def close(self) -> None:
        pass


@pytest.fixture
def registered():
    """Register the plugins above for one test, and take them away again."""
    SOURCES.register("disk-movie", DiskMovieSource)
    SEGMENTERS.register("fixed-disk", FixedDiskSegmenter)
    SINKS.register("frame-log", FrameLogSink)
    READERS.register("npy", NpyStackReader)
    yield
    SOURCES.unregister("disk-movie")
    SEGMENTERS.unregister("fixed-disk")
    SINKS.unregister("frame-log")
    READERS.unregister("npy")


# ------------------------------------------------------------------ plugins through the service


def _config(tmp_path: Path, **tables: Any) -> ServiceConfig:
    return ServiceConfig.from_mapping({
        "segmenter": {"backend": "threshold"},
        "recorder": {"out_dir": str(tmp_path / "runs")},
        "publisher": {"enabled": False},
        "control": {"enabled": False},
        "pipeline": {"backpressure": "every-frame"},
        **tables,
    })


def test_source_segmenter_and_sink_plugins_run_in_the_service(tmp_path, registered):
    cfg = _config(tmp_path, source={"kind": "disk-movie", "frames": 8, "fps": 40.0},
                  segmenter={"backend": "fixed-disk", "options": {"radius_px": 4}},
                  sinks=[{"kind": "frame-log", "every": 2}])
    built = build_service(cfg, edits=PROMPTS, run_id="plugins")
    (log,) = built.sinks
    assert isinstance(log, FrameLogSink)
    built.service.run()
    assert built.service.error is None
    assert log.frames == [0, 2, 4, 6] and log.closed
    table = pd.read_csv(tmp_path / "runs" / "plugins" / "trajectories.csv")
    assert len(table) == 16
    first = table[table.particle == 1]
    np.testing.assert_allclose(first.x, 30.0)
    np.testing.assert_allclose(first.y, 40.0)
    assert (table.area == 49).all()  # a radius-4 disk: the option reached the plugin
    np.testing.assert_allclose(table.t_s.max(), 7 / 40.0)  # the source plugin's calibration
    run = json.loads((tmp_path / "runs" / "plugins" / "run.json").read_text())
    assert run["backend"] == {"backend": "fixed-disk", "random_weights": False, "options": {"radius_px": 4}}


def test_parquet_sink_is_found_by_its_entry_point_and_matches_the_recorder(tmp_path, caplog):
    (point,) = [ep for ep in entry_points(group="sam4em_live.sinks") if ep.name == "parquet"]
    assert point.value == "sam4em_live.sinks.parquet:ParquetSink"
    assert "parquet" in SINKS.names() and SINKS.get("parquet") is ParquetSink
    frames, _ = disk_video(n_frames=12)
    cfg = _config(tmp_path, calibration={"pixel_size_nm": 2.0, "fps": 50.0},
                  sinks=[{"kind": "parquet", "path": str(tmp_path / "tables" / "{run_id}.parquet"),
                          "row_group_rows": 5}])
    built = build_service(cfg, source=ArraySource(frames), edits=PROMPTS, run_id="pq")
    built.service.run()
    assert built.service.error is None
    path = tmp_path / "tables" / "pq.parquet"
    assert pq.ParquetFile(path).metadata.num_row_groups >= 4  # 24 rows written 5 at a time, plus the rest
    ours = pd.read_parquet(path)
    recorded = pd.read_csv(tmp_path / "runs" / "pq" / "trajectories.csv")
    pd.testing.assert_frame_equal(ours, recorded, check_dtype=False)
    assert list(ours.columns)[:4] == ["frame", "particle", "x", "y"] and "x_nm" in ours.columns
    again = build_service(cfg.with_overrides({"recorder.enabled": False}), source=ArraySource(frames),
                          edits=PROMPTS, run_id="pq")
    with caplog.at_level(logging.ERROR):
        again.service.run()  # an existing file is not overwritten: the sink does not open (tracking goes on)
    assert any("ParquetSink failed to open" in r.getMessage() and "already exists" in r.exc_text
               for r in caplog.records if r.exc_text)
    assert pd.read_parquet(path).equals(ours)


# ------------------------------------------------------------------ the checks every registry makes


def test_options_are_checked_by_the_plugins_own_model_and_errors_name_the_key(tmp_path, registered):
    cases = [
        ({"source": {"kind": "zmq", "endpont": "tcp://x:1"}}, "source.endpont"),
        ({"source": {"kind": "simulator", "presett": "demo"}}, "source.presett"),
        ({"source": {"kind": "replay"}}, "source.path"),
        ({"source": {"kind": "disk-movie", "frames": 0}}, "source.frames"),
        ({"source": {"kind": "webcam"}}, "source.kind: unknown source 'webcam'; known: dectris, disk-movie, replay"),
        ({"sinks": [{"kind": "frame-log", "every": "often"}]}, r"sinks\[0\].every"),
        ({"sinks": [{"kind": "parquet"}]}, r"sinks\[0\].path"),
        ({"sinks": [{"kind": "csv"}]}, r"sinks\[0\].kind: unknown sink 'csv'; known: frame-log, parquet"),
        ({"segmenter": {"backend": "fixed-disk", "options": {"radius": 3}}}, "segmenter.options.radius"),
        ({"segmenter": {"backend": "unet"}}, "segmenter.backend: unknown backend 'unet'; known: embedded"),
    ]
    for tables, message in cases:
        cfg = _config(tmp_path, **tables)  # the config itself is valid: the plugins' tables are open
        with pytest.raises(PluginError, match=message):
            build_service(cfg, source=ArraySource(np.zeros((1, 8, 8), np.uint16)) if "source" not in tables else None)


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.toml")))
def test_shipped_config_sources_validate_through_the_registry(name):
    source = ServiceConfig.from_file(ROOT / "configs" / name).source
    SOURCES.options(source.kind, source.options, "source")


class LooseOptions(BaseModel):
    model_config = ConfigDict(frozen=True)  # extra keys would be ignored silently


def test_a_plugin_must_bring_a_strict_options_model_and_build_what_the_seam_needs():
    registry: Registry[Sink] = Registry("sink", "sam4em_live.test-nothing", Sink)
    with pytest.raises(PluginError, match=r"'bare'.*no Options model"):
        registry.register("bare", object())
    with pytest.raises(PluginError, match=r"'loose'.*LooseOptions must be frozen with extra='forbid'"):
        registry.register("loose", FactoryPlugin(LooseOptions, lambda options: object()))
    registry.register("half", FactoryPlugin(NoOptions, lambda options: FrameResult))
    with pytest.raises(PluginError, match=r"sink plugin 'half' built a type, which is not a Sink "
                                          r"\(missing: close, consume, on_status, open\)"):
        registry.build("half", {}, where="sinks[0]")
    registry.register("by-path", "sam4em_live.sinks.parquet:NoSuchSink")
    with pytest.raises(PluginError, match=r"'by-path'.*no attribute 'NoSuchSink'"):
        registry.get("by-path")
    with pytest.raises(PluginError, match="already registered"):
        registry.register("half", FactoryPlugin(NoOptions, FrameLogSink))
    assert registry.names() == ["by-path", "half"]  # the refused ones were not kept


def test_a_segmenter_plugin_is_reached_by_name_like_the_built_ins(registered):
    segmenter = create_segmenter("fixed-disk", {"radius_px": 2})
    frame = Frame("s", 0, 0.0, np.zeros((16, 16), np.uint16))
    (mask,) = segmenter.track(frame, [Prompt(7, 0, ((8.0, 8.0),), (1,))])
    assert mask.particle == 7 and mask.present and int(mask.crop.sum()) == 13
    assert create_segmenter(None, {}).describe()["backend"] == "embedded"


def test_a_reader_plugin_opens_its_suffix_and_the_errors_list_what_is_known(tmp_path, registered):
    frames, _ = disk_video(n_frames=4)
    np.save(tmp_path / "clip.npy", frames)
    source = ReplaySource(tmp_path / "clip.npy", as_fast_as_possible=True)
    source.open()
    got = [source.next_frame(1.0) for _ in range(4)]
    source.close()
    np.testing.assert_array_equal(np.stack([f.pixels for f in got]), frames)
    (tmp_path / "one.png").write_bytes(b"")
    with pytest.raises(ReplayError, match="a single image; replay a folder"):
        open_reader(tmp_path / "one.png")
    (tmp_path / "clip.xyz").write_bytes(b"")
    with pytest.raises(ReplayError, match=r"unsupported recording type '\.xyz'.*\.npy/\.ser/\.tif/\.tiff"):
        open_reader(tmp_path / "clip.xyz")


@pytest.mark.parametrize("flags, expected", [
    (["image_size_px=64"], {"image_size_px": 64}),
    (["random_weights=true", "device=cpu"], {"random_weights": True, "device": "cpu"}),
    (["normalize_percentiles=[1, 99.5]"], {"normalize_percentiles": [1, 99.5]}),
    (["checkpoint=/weights/sam2.1_hiera_tiny.pt"], {"checkpoint": "/weights/sam2.1_hiera_tiny.pt"}),
    (["model=\"2\"", "seed=1", "seed=2"], {"model": "2", "seed": 2}),
    (["image_size_px=null"], {"image_size_px": None}),
    (["label=a=b"], {"label": "a=b"}),
])
def test_option_flags_are_read_as_toml_values(flags, expected):
    assert parse_assignments(flags) == expected


@pytest.mark.parametrize("flag", ["image_size_px", "=64", ""])
def test_option_flags_without_a_key_are_refused(flag):
    with pytest.raises(PluginError, match="KEY=VALUE"):
        parse_assignments([flag])


def test_command_line_options_override_the_config_and_can_set_none():
    cfg = ServiceConfig.from_mapping({"segmenter": {"backend": "sam2", "options": {"image_size_px": 128,
                                                                                   "device": "cuda"}}})
    merged = cfg.with_segmenter_options(parse_assignments(["device=cpu", "image_size_px=null"]))
    assert merged.segmenter.options == {"image_size_px": None, "device": "cpu"}
