"""The Python API (`sam4em_live.track`, `analyze`, `simulate`, `Point`/`Box`/`Remove`, `Run`), issue 20.

Real runs on small synthetic videos, real files in tmp_path, and the README's quick start run as a plain
script in a child interpreter (no ``if __name__ == "__main__"`` guard: the mask writer's spawn child must
not re-run it).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import textwrap
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import sam4em_live as s4
from sam4em_live.io.mask_tiff import read_label_stack
from sam4em_live.io.prompts_file import save_prompts
from sam4em_live.io.tiff_io import write_tiff_stack
from sam4em_live.particles import Prompt, PromptError, RemoveParticle
from sam4em_live.service.runs import run_track
from tests.conftest import disk_video

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [s4.Point(30, 40, particle=1), s4.Box(62, 52, 78, 68, particle=2)]


@pytest.fixture(scope="module")
def video() -> np.ndarray:
    return disk_video(n_frames=24)[0]


def test_version_is_the_installed_distributions():
    assert s4.__version__ == metadata.version("sam4em-live")
    assert (ROOT / "sam4em_live" / "py.typed").is_file()


def test_import_is_light():
    """``import sam4em_live`` loads no pipeline: child processes and the CLI import the package too."""
    code = "import sys, sam4em_live; print(any(m.startswith(('pandas', 'sam4em_live.service')) for m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_prompt_constructors_build_the_shared_records():
    point = s4.Point(10, 20, particle=3, frame=5, negative=[(1, 2)], more=[(11, 21)])
    assert point == Prompt(3, 5, ((10.0, 20.0), (11.0, 21.0), (1.0, 2.0)), (1, 1, 0))
    box = s4.Box(1, 2, 30, 40, particle=2, negative=[(5, 5)])
    assert box == Prompt(2, 0, ((5.0, 5.0),), (0,), (1.0, 2.0, 30.0, 40.0))
    assert s4.Remove(2, frame=9) == RemoveParticle(2, 9)
    assert s4.Point(1, 1, frame=None).frame is None  # live: the next frame
    with pytest.raises(PromptError, match="x1 > x0"):
        s4.Box(10, 10, 5, 20)


def test_track_array_equals_the_track_command_on_the_same_frames(tmp_path, video):
    """One pipeline: the API on an array and ``run_track`` on the TIFF give the same trajectories."""
    write_tiff_stack(tmp_path / "v.tif", video)
    save_prompts(tmp_path / "p.json", PROMPTS)
    cli_dir = run_track(tmp_path / "v.tif", tmp_path / "p.json", tmp_path / "cli", progress=False)
    run = s4.track(video, PROMPTS, out=tmp_path / "api", progress=False)
    assert run.folder == tmp_path / "api" and run.status == "complete"
    expected = pd.read_csv(cli_dir / "trajectories.csv").sort_values(["particle", "frame"]).reset_index(drop=True)
    got = run.trajectories
    assert list(got.columns[:4]) == ["frame", "particle", "x", "y"]  # trackpy's conventions
    assert sorted(got["particle"].unique()) == [1, 2] and len(got) == 2 * len(video)
    pd.testing.assert_frame_equal(got[["frame", "particle", "x", "y", "area"]].reset_index(drop=True),
                                  expected[["frame", "particle", "x", "y", "area"]], check_dtype=False)
    edits = run.edits
    assert set(edits["outcome"]) == {"applied"} and set(edits["origin"]) == {"api"}


def test_track_file_with_prompts_file_generator_and_masks(tmp_path, video):
    write_tiff_stack(tmp_path / "v.tif", video, pixel_size_nm=2.0, fps=10.0)
    save_prompts(tmp_path / "p.json", PROMPTS)
    from_file = s4.track(tmp_path / "v.tif", tmp_path / "p.json", out=tmp_path / "f", progress=False)
    assert from_file.calibration.pixel_size_nm == pytest.approx(2.0) and from_file.calibration.fps == 10.0
    assert from_file.manifest["config"]["prompts"] == str((tmp_path / "p.json").absolute())
    assert {"t_s", "x_nm", "y_nm"} <= set(from_file.trajectories.columns)
    # Any iterable of frames, read one at a time; the calibration is given.
    from_gen = s4.track((frame for frame in video), PROMPTS, fps=10.0, pixel_size_nm=2.0, out=tmp_path / "g",
                        progress=False)
    pd.testing.assert_frame_equal(from_gen.trajectories[["frame", "particle", "x", "y"]],
                                  from_file.trajectories[["frame", "particle", "x", "y"]])
    masks = from_file.masks
    assert masks is not None and len(masks) == len(video) and masks.frames == tuple(range(len(video)))
    stack, _ = read_label_stack(tmp_path / "f" / "masks.tif")
    np.testing.assert_array_equal(masks[5], stack[5])
    np.testing.assert_array_equal(masks.at_frame(23), stack[23])
    assert set(np.unique(masks[-1])) == {0, 1, 2}
    assert np.asarray(masks).shape == (len(video), *video.shape[1:])
    with pytest.raises(KeyError, match="no mask page for frame 99"):
        masks.at_frame(99)
    assert s4.Run.open(tmp_path / "f").trajectories.equals(from_file.trajectories)


def test_temporary_run_goes_with_the_object_and_progress_can_be_a_function(video):
    calls: list[tuple[int, int | None]] = []
    run = s4.track(video[:6], s4.Point(30, 40), progress=lambda done, total: calls.append((done, total)))
    assert calls == [(k, 6) for k in range(1, 7)]
    folder = run.folder
    assert (folder / "masks.tif").is_file() and run.temporary
    run.close()
    assert not folder.exists() and not folder.parent.exists()


@pytest.mark.parametrize("prompts, message", [
    ([s4.Point(30, 40, frame=99)], "after the last frame"),
    ([s4.Point(500, 40)], "outside"),
    (["not a prompt"], "expected Point"),
])
def test_track_refuses_prompts_that_cannot_apply(tmp_path, video, prompts, message):
    with pytest.raises(PromptError, match=message):
        s4.track(video, prompts, out=tmp_path / "r", progress=False)
    assert not (tmp_path / "r").exists()


def test_track_refuses_an_existing_out_and_an_unknown_backend(tmp_path, video):
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError):
        s4.track(video, PROMPTS, out=tmp_path / "taken", progress=False)
    with pytest.raises(ValueError, match="embedded"):  # the message lists the known backends
        s4.track(video, PROMPTS, out=tmp_path / "b", backend="nope", progress=False)
    assert "embedded" in s4.segmenters() and "sam4em-50nm" in s4.presets()


def test_analyze_a_run_and_a_dataframe_alike(tmp_path, video):
    run = s4.track(video, PROMPTS, out=tmp_path / "run", progress=False, fps=10.0)
    from_run = s4.analyze(run, out=tmp_path / "analysis")
    from_table = s4.analyze(run.trajectories, fps=10.0)
    pd.testing.assert_frame_equal(from_run.summary, from_table.summary)
    assert set(from_run.summary["particle"]) == {1, 2}
    assert {"particle", "lag_frames", "msd_px2", "n"} <= set(from_run.msd.columns)
    assert from_run.ensemble_fit.n_points > 0
    fig = from_run.figure("tmsd")
    assert fig is from_run.figure("tmsd") and fig.axes
    assert set(from_run.figures) == {"trajectories", "tmsd", "displacements", "velocity_autocorrelation"}
    assert (tmp_path / "analysis" / "stats.csv").is_file() and (tmp_path / "analysis" / "tmsd.png").is_file()
    with pytest.raises(ValueError, match="unknown figure"):
        from_run.figure("nope")


def test_simulate_writes_a_clip_with_truth(tmp_path):
    clip = s4.simulate("crossing", frames=5, out=tmp_path / "clip", progress=False)
    assert clip.video.is_file() and clip.frames.shape == (5, 256, 256)
    assert {p.particle for p in clip.prompts} == set(clip.truth.query("frame == 0")["particle"])
    assert all(p.frame == 0 for p in clip.prompts) and all(p.box for p in clip.prompts_of("box"))
    temporary = s4.simulate("crossing", frames=2, progress=False)
    folder = temporary.folder
    temporary.close()
    assert not folder.exists()


def _readme_quick_start() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"<!-- quick-start:[^>]*-->\s*```python\n(.*?)```", text, re.S)
    assert match, "README.md lost its quick-start block"
    return match.group(1)


def test_readme_quick_start_runs_as_a_plain_script_and_keeps_its_masks(tmp_path):
    """The README's ≤ 5 lines, verbatim, as a script WITHOUT a main guard (spawn children must not re-run it)."""
    lines = [line for line in _readme_quick_start().splitlines() if line.strip()]
    assert len(lines) <= 5
    check = textwrap.dedent("""
        import json
        print(json.dumps({"rows": len(run.trajectories), "masks": run.manifest["files"]["masks"],
                          "pages": len(run.masks), "status": run.status}))
    """)
    script = tmp_path / "quick_start.py"
    script.write_text("\n".join(lines) + "\n" + check)
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result == {"rows": result["rows"], "masks": "masks.tif", "pages": 200, "status": "complete"}
    assert result["rows"] >= 190
    assert (tmp_path / "tmsd.png").stat().st_size > 10_000
    assert "Traceback" not in done.stderr


def test_a_run_that_loses_its_masks_says_so_loudly(tmp_path, video):
    """The mask writer's child killed mid-run: the run goes on, ends ``incomplete`` and warns (never silent)."""
    import multiprocessing

    def kill_the_mask_writer(done: int, _total: int | None) -> None:
        if done == 3:
            for child in multiprocessing.active_children():
                if child.name == "sam4em-masks":
                    child.kill()
                    child.join(5)

    with pytest.warns(s4.RunWarning, match="incomplete"):
        run = s4.track(video, PROMPTS, out=tmp_path / "r", progress=kill_the_mask_writer)
    assert run.status == "incomplete" and "masks.tif" in (run.reason or "")
    assert len(run.trajectories) == 2 * len(video)  # the trajectories are whole


@pytest.mark.parametrize("how", ["script", "stdin", "module-c"])
def test_the_same_from_a_script_the_interpreter_and_python_c(tmp_path, how):
    """No guard anywhere: the masks are written whether ``__main__`` is a file, stdin or ``-c`` code."""
    code = textwrap.dedent("""
        import numpy as np
        import sam4em_live as s4
        frames = np.full((8, 64, 64), 100, np.uint16)
        frames[:, 20:30, 20:30] = 40
        run = s4.track(frames, s4.Point(25, 25), progress=False, out="run")
        print(run.manifest["files"]["masks"], len(run.masks), run.status)
    """)
    if how == "script":
        (tmp_path / "plain.py").write_text(code)
        command, stdin = [sys.executable, "plain.py"], None
    elif how == "stdin":
        command, stdin = [sys.executable, "-"], code
    else:
        command, stdin = [sys.executable, "-c", code], None
    done = subprocess.run(command, cwd=tmp_path, input=stdin, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["masks.tif", "8", "complete"]


def test_analyze_takes_one_series_at_a_time():
    rng = np.random.default_rng(1)
    rows = [{"series": s, "particle": 1, "frame": f, "x": x, "y": y}
            for s in (0, 1) for f, (x, y) in enumerate(np.cumsum(rng.normal(size=(60, 2)), axis=0))]
    table = pd.DataFrame(rows)
    with pytest.raises(ValueError, match=r"series=K"):
        s4.analyze(table)
    one = s4.analyze(table, series=1)
    assert len(one.summary) == 1 and one.result.table["series"].unique().tolist() == [1]
