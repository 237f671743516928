"""The notebook widget's kernel side: contrast, the prompt book, seeding previews, tracking, the live view.

The browser half is tested in a real JupyterLab with headless Chromium (tests/browser/). Here the widget's
messages are delivered the way the comm delivers them (`_handle_custom_msg`), on synthetic disks with known
positions, with the real embedded backend and, for the live view, a real service on port-0 sockets.
"""

from __future__ import annotations

import base64
import io
import math
import time

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("anywidget", reason="the notebook extra is not installed: pip install -e '.[notebook]'")

from sam4em_live.notebook import LiveView, TrackerWidget
from sam4em_live.notebook.display import Contrast, label_overlay, stretch
from sam4em_live.notebook.prompt_book import PromptBook
from sam4em_live.notebook.seed_preview import window_around
from sam4em_live.particles import Prompt, PromptError, RemoveParticle

SHAPE = (128, 160)
RADIUS_PX = 8.0
N_FRAMES = 24


def truth(index: int) -> dict[int, tuple[float, float]]:
    """Two dark disks drifting right (x, y px)."""
    return {1: (40.0 + 1.5 * index, 45.0), 2: (105.0 + 1.0 * index, 90.0)}


def clip() -> np.ndarray:
    rng = np.random.default_rng(0)
    rows, cols = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    frames = []
    for index in range(N_FRAMES):
        image = np.full(SHAPE, 100.0)
        for x, y in truth(index).values():
            image[(cols - x) ** 2 + (rows - y) ** 2 <= RADIUS_PX**2] = 55.0
        frames.append(np.clip(image + rng.normal(0, 4, SHAPE), 0, 65535).astype(np.uint16))
    return np.stack(frames)


def png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)))


def drawn_masks(widget) -> np.ndarray:
    """The mask layer as the browser draws it: the sent crop placed at its origin; True where opaque."""
    crop = png(widget.masks)[..., 3] > 0
    x0, y0 = widget.masks_origin
    full = np.zeros(SHAPE, bool)
    full[y0 : y0 + crop.shape[0], x0 : x0 + crop.shape[1]] = crop
    return full


@pytest.fixture
def widget():
    made = TrackerWidget(clip(), backend="embedded")
    yield made
    made.close()


# ---------------------------------------------------------------- display


def test_percentile_window_ignores_hot_pixels_and_gamma_lifts_the_dim_end():
    frame = np.full((64, 64), 100, np.uint16)
    frame[10:20, 10:20] = 120
    frame[0, :5] = 60000  # hot pixels would make a min/max stretch all black
    grey = stretch(frame, Contrast(1.0, 99.0, 1.0))
    assert grey[15, 15] == 255 and grey[40, 40] == 0
    ramp = np.tile(np.arange(256, dtype=np.uint16), (4, 1))
    linear, lifted = stretch(ramp, Contrast(0, 100, 1.0)), stretch(ramp, Contrast(0, 100, 2.0))
    assert lifted[0, 64] > linear[0, 64] + 40  # gamma 2: a quarter grey shows as half


@pytest.mark.parametrize("low, high, gamma", [(50, 50, 1.0), (-1, 90, 1.0), (1, 101, 1.0), (1, 99, 0.0)])
def test_an_impossible_contrast_is_refused(low, high, gamma):
    with pytest.raises(ValueError, match="contrast"):
        Contrast(low, high, gamma)


def test_label_overlay_is_transparent_off_the_particles():
    labels = np.zeros((8, 8), np.uint16)
    labels[2:4, 2:4], labels[6, 6] = 1, 2
    rgba = label_overlay(labels)
    assert (rgba[..., 3] > 0).sum() == 5
    assert tuple(rgba[2, 2, :3]) != tuple(rgba[6, 6, :3])


# ---------------------------------------------------------------- prompts


def test_the_prompt_book_gives_the_packages_edits_in_frame_order():
    book = PromptBook((1024, 1024))
    book.add_point(2, 5, 30, 40)
    book.add_point(1, 0, 10, 12)
    book.add_point(1, 0, 20, 12, positive=False)
    book.set_box(3, 0, (50, 60, 40, 45))  # dragged up-left: stored top-left, bottom-right
    book.add_point(4, 0, 1, 1, positive=False)  # a negative point alone cannot seed: not an edit
    book.remove(1, 8)
    assert book.edits() == [
        Prompt(1, 0, ((10.0, 12.0), (20.0, 12.0)), (1, 0)),
        Prompt(3, 0, (), (), (40.0, 45.0, 50.0, 60.0)),
        Prompt(2, 5, ((30.0, 40.0),), (1,)),
        RemoveParticle(1, 8),
    ]


def test_removing_drops_later_prompts_and_a_particle_with_none_before_is_gone():
    book = PromptBook((1024, 1024))
    book.add_point(1, 0, 10, 10)
    book.add_point(1, 6, 12, 10)  # a correction
    book.remove(1, 4)
    assert book.edits() == [Prompt(1, 0, ((10.0, 10.0),), (1,)), RemoveParticle(1, 4)]
    book.add_point(1, 5, 11, 10)  # prompted again after the removal: tracked again from there
    assert [type(e).__name__ for e in book.edits()] == ["Prompt", "Prompt"]
    book.remove(1, 0)
    assert book.edits() == [] and book.particles() == []


def test_the_seeding_window_holds_the_prompt_and_stays_inside_the_frame():
    book = PromptBook((1024, 1024))
    near_corner = book.add_point(1, 0, 5, 5)
    assert window_around(near_corner, (1024, 1024), 256) == (0, 0, 256, 256)
    big_box = book.set_box(2, 0, (100, 100, 500, 300))
    x0, y0, x1, y1 = window_around(big_box, (1024, 1024), 256)
    assert x0 <= 100 and x1 >= 500 and y0 <= 100 and y1 >= 300 and x1 <= 1024
    assert window_around(near_corner, (64, 80), None) == (0, 0, 80, 64)


def test_seeding_on_a_window_gives_nearly_the_whole_frames_mask():
    from sam4em_live.notebook.seed_preview import SeedPreview

    frame = clip()[0]
    entry = PromptBook(SHAPE).add_point(1, 0, *truth(0)[1])
    whole, windowed = SeedPreview("embedded"), SeedPreview("embedded", window_px=64)
    full, local = whole.seed(frame, entry), windowed.seed(frame, entry)
    assert full.pixels > 0.7 * math.pi * RADIUS_PX**2
    # not identical: the backend's background estimate sees less of the frame (7% of the pixels here)
    assert np.count_nonzero(full.mask != local.mask) <= 0.1 * full.pixels


@pytest.mark.parametrize("add", [
    lambda book: book.add_point(1, 0, 1024, 5),
    lambda book: book.add_point(1, 0, 5, float("nan"), positive=False),
    lambda book: book.set_box(1, 0, (10, 10, 10.5, 40)),
])
def test_a_prompt_the_pipeline_would_refuse_leaves_the_book_as_it_was(add):
    book = PromptBook((1024, 1024))
    book.add_point(1, 0, 100, 100)
    with pytest.raises(PromptError):
        add(book)
    assert book.edits() == [Prompt(1, 0, ((100.0, 100.0),), (1,))]


# ---------------------------------------------------------------- the widget


def test_a_click_on_a_particle_shows_its_mask_at_once(widget):
    x, y = truth(0)[1]
    widget._handle_custom_msg({"kind": "point", "x": x, "y": y, "id": 7}, [])
    assert widget.answered == 7
    area = math.pi * RADIUS_PX**2
    assert 0.7 * area < widget.mask_pixels < 1.3 * area
    assert png(widget.masks).shape[-1] == 4 and png(widget.masks).shape[0] < SHAPE[0] / 2  # only the particle's part
    rows, cols = np.nonzero(drawn_masks(widget))
    assert rows.size == widget.mask_pixels
    assert abs(cols.mean() - x) < 1.5 and abs(rows.mean() - y) < 1.5
    assert widget.prompts == [{"particle": 1, "frame": 0, "points": [[x, y]], "labels": [1], "box": None}]


def test_a_box_seeds_a_second_particle_and_a_negative_point_alone_seeds_nothing(widget):
    x, y = truth(0)[2]
    widget.particle = 2
    widget._handle_custom_msg({"kind": "box", "x0": x - 12, "y0": y - 12, "x1": x + 12, "y1": y + 12, "id": 1}, [])
    assert widget.mask_pixels > 0.7 * math.pi * RADIUS_PX**2
    widget.particle = 3
    widget._handle_custom_msg({"kind": "point", "x": 10, "y": 10, "negative": True, "id": 2}, [])
    assert widget.edits == [Prompt(2, 0, (), (), (x - 12, y - 12, x + 12, y + 12))]


def test_clear_remove_and_a_bad_prompt_are_handled_on_any_frame(widget):
    widget.frame = 4
    x, y = truth(4)[1]
    assert widget.add_point(x, y) > 0
    widget._handle_custom_msg({"kind": "clear", "id": 3}, [])
    assert widget.mask_pixels == 0 and widget.edits == []
    widget._handle_custom_msg({"kind": "point", "x": 5000, "y": 5, "id": 4}, [])  # outside the frame
    assert "point" in widget.message and widget.answered == 4 and widget.edits == []
    widget.add_point(*truth(0)[1], frame=0)
    widget.frame = 6
    widget._handle_custom_msg({"kind": "remove", "id": 5}, [])
    assert widget.edits[-1] == RemoveParticle(1, 6)
    widget._handle_custom_msg({"kind": "new_particle", "id": 6}, [])
    assert widget.particle == 2


def test_contrast_and_frame_changes_redraw_the_frame(widget):
    first = widget.image
    widget.gamma = 2.0
    assert widget.image != first
    widget.frame = 3
    assert png(widget.image).shape == SHAPE
    widget.low_pct, widget.high_pct = 99.0, 99.0  # impossible: said, and the frame stays drawn
    assert "contrast" in widget.message


def test_track_runs_the_pipeline_then_shows_masks_trajectories_and_statistics(widget):
    for particle, (x, y) in truth(0).items():
        widget.add_point(x, y, particle=particle)
    widget.ticked = ["tmsd", "displacements"]
    progress: list[float] = []
    widget.observe(lambda change: progress.append(change["new"]), "progress")
    widget._handle_custom_msg({"kind": "track", "id": 9}, [])
    run = widget.wait(120)
    deadline = time.monotonic() + 30
    while widget.phase == "tracking" and time.monotonic() < deadline:
        time.sleep(0.05)
    assert widget.phase == "tracked", widget.message
    assert progress[-1] == 1.0 and len(progress) >= 3
    table = run.trajectories
    for particle in (1, 2):
        rows = table[table.particle == particle].set_index("frame")
        assert len(rows) == N_FRAMES
        for frame in (0, N_FRAMES - 1):
            tx, ty = truth(frame)[particle]
            assert math.hypot(rows.x[frame] - tx, rows.y[frame] - ty) < 1.5
    assert sorted(widget.trajectories) == ["1", "2"] and len(widget.trajectories["1"]["x"]) == N_FRAMES
    assert sorted(widget.figures) == ["displacements", "tmsd"]
    assert png(base64.b64decode(widget.figures["tmsd"])).shape[0] > 100
    widget.frame = N_FRAMES - 1  # scrubbing: the run's masks follow the slider
    rows, cols = np.nonzero(drawn_masks(widget))
    assert widget.mask_pixels > 1.4 * math.pi * RADIUS_PX**2
    assert cols.min() < truth(N_FRAMES - 1)[1][0] and cols.max() > truth(N_FRAMES - 1)[2][0]
    widget.ticked = ["velocity_autocorrelation"]
    assert list(widget.figures) == ["velocity_autocorrelation"]


def test_particles_added_and_removed_on_later_frames_reach_the_run(widget):
    widget.add_point(*truth(0)[1], particle=1)
    widget.frame = 5
    widget.particle = 2
    widget._handle_custom_msg({"kind": "point", "x": truth(5)[2][0], "y": truth(5)[2][1], "id": 1}, [])
    widget.frame, widget.particle = 18, 1
    widget._handle_custom_msg({"kind": "remove", "id": 2}, [])
    assert widget.edits == [Prompt(1, 0, (truth(0)[1],), (1,)), Prompt(2, 5, (truth(5)[2],), (1,)),
                            RemoveParticle(1, 18)]
    frames = widget.track(wait=True).run.trajectories.groupby("particle")["frame"].agg(["min", "max", "size"])
    assert frames.loc[1].tolist() == [0, 17, 18] and frames.loc[2].tolist() == [5, N_FRAMES - 1, N_FRAMES - 5]


def test_a_one_frame_simulated_clip_and_a_single_frame_array_are_shown():
    import sam4em_live as s4

    one = s4.simulate("demo", frames=1, progress=False)
    for source in (one, clip()[0]):
        shown = TrackerWidget(source)
        try:
            assert shown.n_frames == 1 and png(shown.image).ndim == 2
        finally:
            shown.close()
    with pytest.raises(TypeError, match="frames must be"):
        TrackerWidget(object())


def test_track_without_a_prompt_says_what_to_do(widget):
    with pytest.raises(ValueError, match="click on a particle"):
        widget.track()


# ---------------------------------------------------------------- the live view


@pytest.fixture
def live_service(tmp_path):
    from sam4em_live.api import ServiceConfig, build_service

    config = ServiceConfig.from_mapping({
        "source": {"kind": "simulator", "preset": "demo", "fps": 20.0},
        "segmenter": {"backend": "threshold"},
        "recorder": {"enabled": False},
        "publisher": {"endpoint": "tcp://127.0.0.1:0", "preview_fps": 10.0, "preview_max_edge_px": 96},
        "control": {"endpoint": "tcp://127.0.0.1:0"},
        "pipeline": {"status_interval_s": 0.25},
    })
    built = build_service(config)
    built.service.start()
    yield built
    built.service.stop()
    built.close()


def _until(condition, timeout_s=15.0):
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_the_live_view_shows_the_service_and_its_clicks_prompt_over_control(live_service):
    import sam4em_live as s4

    start = s4.simulate("demo", frames=1, progress=False).prompts[0]
    view = LiveView(live_service.publisher.endpoint, live_service.control.endpoint)
    try:
        assert _until(lambda: view.received > 0 and view.image != b"" and view.rows > 0)
        assert png(view.image).shape[1] <= 96  # the service's decimated preview, not full frames
        view.particle = start.particle
        x, y = start.points[0]
        view._handle_custom_msg({"kind": "point", "x": x, "y": y}, [])
        assert "error" not in view.message.lower(), view.message
        assert _until(lambda: str(start.particle) in view.positions), view.message
        assert len(view.trails[str(start.particle)]) >= 1
    finally:
        view.close()


def _two_still_discs(n_frames: int) -> np.ndarray:
    """Dark discs (r = 9 px) at (50, 60) and (140, 100) on 200 counts, noise σ = 20: two proposals to make."""
    rng = np.random.default_rng(1)
    rows, cols = np.mgrid[0:160, 0:192]
    base = np.full((160, 192), 200.0)
    for x, y in ((50.0, 60.0), (140.0, 100.0)):
        base[(cols - x) ** 2 + (rows - y) ** 2 <= 81] = 120.0
    return np.stack([np.clip(base + rng.normal(0, 20, base.shape), 0, 65535).astype(np.uint16)
                     for _ in range(n_frames)])


def test_the_live_view_lists_proposals_and_its_accept_tracks_one(tmp_path):
    from sam4em_live.api import ServiceConfig, build_service
    from sam4em_live.sources.array_source import ArraySource

    config = ServiceConfig.from_mapping({
        "segmenter": {"backend": "threshold"}, "recorder": {"enabled": False},
        "publisher": {"endpoint": "tcp://127.0.0.1:0", "preview_fps": 10.0, "preview_max_edge_px": 96},
        "control": {"endpoint": "tcp://127.0.0.1:0"}, "calibration": {"pixel_size_nm": 1.0, "fps": 40.0},
        "discovery": {"mode": "propose", "every_n_frames": 2, "persistence_frames": 2},
    })
    built = build_service(config, source=ArraySource(_two_still_discs(1200), delay_s=0.025))
    view = LiveView(built.publisher.endpoint, built.control.endpoint)
    built.service.start()
    try:
        assert view.can_decide
        assert _until(lambda: len(view.proposals) == 2), view.proposals
        left, right = sorted(view.proposals, key=lambda p: p["x"])
        assert abs(left["x"] - 50) < 4 and len(left["outline"]) == 16 and left["score"] > 0
        view._handle_custom_msg({"kind": "accept", "proposals": [left["proposal"]]}, [])  # as the browser sends it
        assert [p["proposal"] for p in view.proposals] == [right["proposal"]]  # hidden at once
        assert _until(lambda: "1" in view.positions), view.message
        x, y = view.positions["1"]
        assert math.hypot(x - 50, y - 60) < 4 and "P" in view.message and "#1" in view.message
        reply = view.reject()  # all open ones, from Python
        assert reply.ok and reply.rejected == (right["proposal"],) and view.proposals == []
        time.sleep(0.8)  # a poll later the rejected one is still gone
        assert view.proposals == [] and set(view.positions) == {"1"}
    finally:
        view.close()
        built.service.stop()
        built.close()


# ---------------------------------------------------------------- the example notebook


def test_the_example_notebook_is_valid_and_uses_the_widget():
    import ast
    from pathlib import Path

    nbformat = pytest.importorskip("nbformat")
    path = Path(__file__).resolve().parents[1] / "examples" / "track_in_a_notebook.ipynb"
    notebook = nbformat.read(path, as_version=4)
    nbformat.validate(notebook)
    code = [cell.source for cell in notebook.cells if cell.cell_type == "code"]
    for source in code:
        ast.parse(source)
    assert any("TrackerWidget(clip)" in s for s in code) and any("LiveView(" in s for s in code)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code")  # committed clean
