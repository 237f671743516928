"""Issue 17, clear refusals: `analyze` refuses runs too short for the statistics asked (naming the frames each
needs, non-zero exit, no files written); `track` refuses prompts after the last frame of the recording."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from typer.testing import CliRunner

from sam4em_live.analysis.analyze import analyze
from sam4em_live.analysis.run_length import RunTooShort
from sam4em_live.cli import app
from tests.conftest import disk_video

runner = CliRunner()


def _table(path: Path, n_frames: int, particles: int = 2, gap_after: int | None = None) -> Path:
    rng = np.random.default_rng(0)
    rows = []
    for pid in range(1, particles + 1):
        xy = np.cumsum(rng.normal(0, 1, (n_frames, 2)), axis=0) + 30 * pid
        rows += [{"frame": f, "particle": pid, "x": x, "y": y} for f, (x, y) in enumerate(xy)
                 if gap_after is None or f <= gap_after or f >= n_frames - 1]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def _analyze(source: Path, out: Path, *flags: str):
    return runner.invoke(app, ["analyze", str(source), "--out", str(out), "--no-figures", *flags])


@pytest.mark.parametrize("n_frames, flags, needs", [
    (1, (), ["spans 1 frame;", "tMSD fit (D, alpha) over 4 lags needs a track of 17 frames",
             "lag 1 needs a track of 3 frames", "lag 10 needs a track of 12 frames",
             "velocity autocorrelation needs a track of 3 frames"]),
    (10, (), ["spans 10 frames;", "needs a track of 17 frames", "lag 10 needs a track of 12 frames"]),
    (10, ("--max-lag", "3"), ["--max-lag 3 is below 4"]),
    (20, ("--pdf-lags", "1,25"), ["lag 25 needs a track of 27 frames"]),
])
def test_analyze_refuses_a_run_too_short_and_says_what_each_statistic_needs(tmp_path, n_frames, flags, needs):
    out = tmp_path / "out"
    result = _analyze(_table(tmp_path / "t.csv", n_frames), out, *flags)
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())  # the console wraps long lines
    assert "too short for the statistics asked" in message
    for need in needs:
        assert need in message, (need, message)
    assert not out.exists()  # nothing written: no near-empty tables and figures


def test_a_refusal_lists_only_what_is_missing(tmp_path) -> None:
    with pytest.raises(RunTooShort) as refused:
        analyze(_table(tmp_path / "t.csv", 10), tmp_path / "out", figures=False)
    assert "lag 1 " not in str(refused.value) and "velocity" not in str(refused.value)


@pytest.mark.parametrize("n_frames, flags", [(17, ()), (10, ("--max-lag", "4", "--pdf-lags", "1,5"))])
def test_just_long_enough_is_analysed(tmp_path, n_frames, flags) -> None:
    result = _analyze(_table(tmp_path / "t.csv", n_frames), tmp_path / "out", *flags)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "stats.csv").is_file()


def test_a_long_track_with_a_gap_is_judged_by_its_lags_not_its_span(tmp_path) -> None:
    # 30 frames spanned, but only frames 0-2 and 29: no track has 4 lags below its quarter-span max lag
    result = _analyze(_table(tmp_path / "t.csv", 30, gap_after=2), tmp_path / "out")
    assert result.exit_code == 2 and "tMSD fit" in " ".join(result.output.split())


GOOD = [{"frame": 0, "particle": 1, "points": [[30, 40]], "labels": [1]}]


@pytest.mark.parametrize("frame", [20, 9999])
def test_track_refuses_a_prompt_after_the_last_frame(tmp_path, frame) -> None:
    frames, _ = disk_video(n_frames=20)
    tifffile.imwrite(tmp_path / "clip.tif", frames, photometric="minisblack")
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"prompts": [*GOOD, {**GOOD[0], "frame": frame, "particle": 2}]}))
    result = runner.invoke(app, ["track", str(tmp_path / "clip.tif"), "--prompts", str(prompts), "--out",
                                 str(tmp_path / "run"), "--backend", "threshold", "--no-progress"])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert f"frame(s) {frame} after the last frame" in message and "(20 frames, 0-19)" in message
    assert not (tmp_path / "run").exists()


def test_track_accepts_a_prompt_on_the_last_frame(tmp_path) -> None:
    frames, _ = disk_video(n_frames=20)
    tifffile.imwrite(tmp_path / "clip.tif", frames, photometric="minisblack")
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"prompts": [*GOOD, {**GOOD[0], "frame": 19, "particle": 2}]}))
    result = runner.invoke(app, ["track", str(tmp_path / "clip.tif"), "--prompts", str(prompts), "--out",
                                 str(tmp_path / "run"), "--backend", "threshold", "--no-progress"])
    assert result.exit_code == 0, result.output
