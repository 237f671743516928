"""Outputs open without glue (issue 17, requirement 4), checked on a real run with dropped frames.

The run: the service with the embedded backend on an `ArraySource` clip whose all-NaN frames are rejected
at ingest (frames without a result, as frames dropped upstream are), recorded by the recorder into
tmp_path. The snippets of docs/open_your_run.md are executed as written (up to napari's own calls: napari is
not installed here, so the arrays handed to it are checked against its layer formats), and masks.tif is
checked against the rules of the ImageJ hyperstack format and the TIFF resolution tags.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import tifffile

from sam4em_live.config import ServiceConfig
from sam4em_live.io.mask_tiff import complete_page_frames, end_at_last_complete_page, read_label_stack
from sam4em_live.io.run_folder import RunFolder
from sam4em_live.particles import Prompt
from sam4em_live.service.builder import build_service
from sam4em_live.sources.array_source import ArraySource
from tests.conftest import disk_video

DOC = Path(__file__).resolve().parents[1] / "docs" / "open_your_run.md"
PIXEL_SIZE_NM, FPS = 2.0, 50.0
N_FRAMES = 40
REJECTED = [0, 7, 8, 20]  # the first frame too: page k must still be frame k
PROMPTS = [Prompt(1, 1, ((30.5, 40.25),), (1,)), Prompt(2, 1, ((70.5, 60.25),), (1,))]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    frames, _ = disk_video(n_frames=N_FRAMES, velocity=(0.5, 0.25))
    frames = frames.astype(np.float32)
    frames[REJECTED] = np.nan  # rejected at ingest: no result for these frames
    config = ServiceConfig.from_mapping({
        "recorder": {"enabled": True, "out_dir": str(tmp_path_factory.mktemp("runs"))},
        "publisher": {"enabled": False}, "control": {"enabled": False},
        "calibration": {"pixel_size_nm": PIXEL_SIZE_NM, "fps": FPS},
        "pipeline": {"backpressure": "every-frame"},
    })
    built = build_service(config, source=ArraySource(frames), edits=PROMPTS)
    status = built.service.run()
    assert status.frames_processed == N_FRAMES - len(REJECTED)
    assert built.run_dir is not None
    return built.run_dir


def doc_snippet(heading: str) -> str:
    """The first ```python block under ``## heading`` in docs/open_your_run.md."""
    text = DOC.read_text(encoding="utf-8")
    section = text.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match, f"no python snippet under {heading}"
    return match.group(1)


def run_snippet(heading: str, run_dir: Path) -> dict[str, Any]:
    """Execute a snippet on ``run_dir`` up to its napari calls; returns its variables."""
    code = doc_snippet(heading).split("import napari")[0].replace("RUN", str(run_dir))
    namespace: dict[str, Any] = {}
    exec(compile(code, f"docs/open_your_run.md ({heading})", "exec"), namespace)
    return namespace


def test_masks_tif_has_one_page_per_frame_index_with_empty_pages_for_the_dropped(run_dir: Path) -> None:
    labels, frames = read_label_stack(run_dir / "masks.tif")
    assert len(labels) == N_FRAMES and frames == list(range(N_FRAMES))  # 40 pages for frames 0-39, not 35
    for index in range(N_FRAMES):
        assert labels[index].any() == (index not in REJECTED), index
    manifest = json.loads((run_dir / "run.json").read_text())
    assert manifest["mask_frames"] == [[0, N_FRAMES - 1]] and manifest["counts"]["mask_pages"] == N_FRAMES
    assert manifest["series_list"][0]["frames"] == [1, N_FRAMES - 1]  # the results' frames; the pages start at 0
    assert manifest["series_list"][0]["result_frames"] == [[1, 6], [9, 19], [21, N_FRAMES - 1]]
    assert RunFolder.open(run_dir).check().agrees
    pages = RunFolder.open(run_dir).mask_pages()
    assert [f for _, f in pages.result_pages()] == [f for f in range(N_FRAMES) if f not in REJECTED]


def test_masks_tif_follows_the_imagej_hyperstack_and_resolution_rules(run_dir: Path) -> None:
    """What Bio-Formats/ImageJ and tifffile (napari's readers) read: ImageJ description, resolution tags."""
    with tifffile.TiffFile(run_dir / "masks.tif") as tif:
        first = tif.pages.first
        description = first.description
        assert description.startswith("ImageJ=") and tif.is_imagej
        meta = tif.imagej_metadata
        assert meta is not None
        assert meta["images"] == meta["frames"] == len(tif.pages) == N_FRAMES
        assert meta["hyperstack"] is True and meta.get("channels", 1) == 1 and meta.get("slices", 1) == 1
        assert meta["unit"] == "nm" and meta["tunit"] == "s" and meta["finterval"] == pytest.approx(1 / FPS)
        assert meta["content"] == "labels" and meta["first_frame"] == 0
        # TIFF resolution: pixels per unit; ImageJ's convention for units other than inch and cm is
        # ResolutionUnit none with the unit named in the description
        assert first.tags["ResolutionUnit"].value == 1
        x_res, y_res = first.tags["XResolution"].value, first.tags["YResolution"].value
        assert x_res == y_res and x_res[1] / x_res[0] == pytest.approx(PIXEL_SIZE_NM)
        assert 1 / first.get_resolution()[0] == pytest.approx(PIXEL_SIZE_NM)
        series = tif.series[0]
        assert series.axes == "TYX" and series.shape == (N_FRAMES, 96, 128) and series.dtype == np.uint16
        assert all(page.shape == (96, 128) and page.dtype == np.uint16 for page in tif.pages)
        assert first.samplesperpixel == 1 and first.photometric == tifffile.PHOTOMETRIC.MINISBLACK


def test_napari_snippet_gives_labels_and_tracks_in_napari_formats(run_dir: Path) -> None:
    ns = run_snippet("napari", run_dir)
    labels, px, tracks = ns["labels"], ns["px"], ns["tracks"]
    assert px == pytest.approx(PIXEL_SIZE_NM)
    # napari Labels: an integer array (T, Y, X); Tracks: (N, 4) rows [track_id, t, y, x] sorted by id then t
    assert labels.dtype == np.uint16 and labels.shape == (N_FRAMES, 96, 128)
    assert tracks.ndim == 2 and tracks.shape[1] == 4 and len(tracks) > 0
    assert np.all(tracks[:, 0] == np.round(tracks[:, 0])) and np.all(tracks[:, 1] == np.round(tracks[:, 1]))
    order = np.lexsort((tracks[:, 1], tracks[:, 0]))
    assert np.array_equal(order, np.arange(len(tracks)))
    # the same coordinates in both layers: each track point lies on its own label, on the page of its frame
    t, y, x = tracks[:, 1].astype(int), np.round(tracks[:, 2]).astype(int), np.round(tracks[:, 3]).astype(int)
    assert np.mean(labels[t, y, x] == tracks[:, 0]) > 0.95
    assert set(np.unique(t)) == {f for f in range(N_FRAMES) if f not in REJECTED}


@pytest.mark.filterwarnings("ignore:Starting with pandas version 4.0")  # inside trackpy 0.7, not our code
def test_trackpy_snippet_gives_each_series_msd(run_dir: Path) -> None:
    pytest.importorskip("trackpy")
    ns = run_snippet("trackpy", run_dir)
    msd = ns["msd"]
    assert list(msd) == [0]
    lags = msd[0].index.to_numpy()
    assert lags[0] == pytest.approx(1 / FPS)  # seconds, from the series' calibration
    assert np.all(np.isfinite(msd[0].to_numpy())) and np.all(msd[0].to_numpy() > 0)


def test_pandas_snippet_joins_rows_to_their_series(run_dir: Path) -> None:
    ns = run_snippet("pandas", run_dir)
    rows = ns["rows"]
    assert isinstance(rows, pd.DataFrame) and len(rows) == len(ns["table"]) > 0
    assert rows["series_id"].notna().all() and all(list(shape) == [96, 128] for shape in rows["shape"])
    assert not rows.duplicated(["series", "frame", "particle"]).any()


def test_fiji_macro_names_the_file_and_bio_formats() -> None:
    text = DOC.read_text(encoding="utf-8").split("## Fiji", 1)[1].split("\n## ", 1)[0]
    assert 'run("Bio-Formats Importer", "open=RUN/masks.tif' in text


def test_a_masks_tif_cut_short_is_made_to_agree_with_its_imagej_count(run_dir: Path, tmp_path: Path) -> None:
    """After a crash the ImageJ page count is made to say what the file holds (end_at_last_complete_page)."""
    data = (run_dir / "masks.tif").read_bytes()
    with tifffile.TiffFile(run_dir / "masks.tif") as tif:
        cut_at = tif.pages[20].offset - 1  # in the middle of page 20's bytes
    path = tmp_path / "masks.tif"
    path.write_bytes(data[:cut_at])
    frames = end_at_last_complete_page(path)
    assert frames == complete_page_frames(path) and 0 < len(frames) <= 20
    with tifffile.TiffFile(path) as tif:
        assert tif.imagej_metadata["images"] == tif.imagej_metadata["frames"] == len(tif.pages) == len(frames)
        assert tif.series[0].shape == (len(frames), 96, 128)
