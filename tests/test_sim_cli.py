"""`sam4em-live simulate` and `sam4em-live evaluate` on real files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import tifffile
from typer.testing import CliRunner

from sam4em_live.cli import app
from sam4em_live.io.prompts_file import load_prompts
from sam4em_live.io.tiff_io import read_tiff_calibration

runner = CliRunner()


def test_simulate_writes_a_complete_ground_truth_folder(tmp_path) -> None:
    out = tmp_path / "gt"
    result = runner.invoke(app, ["simulate", "--preset", "leave-reenter", "--frames", "130", "--seed", "4",
                                 "--out", str(out), "--jpeg"])
    assert result.exit_code == 0, result.output
    video = tifffile.imread(out / "video.tif")
    masks = tifffile.imread(out / "gt_masks.tif")
    assert video.shape == masks.shape == (130, 256, 256) and video.dtype == np.uint16
    with tifffile.TiffFile(out / "video.tif") as tif:
        calibration, _ = read_tiff_calibration(tif)
    assert calibration.pixel_size_nm == 1.0 and calibration.fps == 80.0
    table = pd.read_csv(out / "gt_trajectories.csv")
    assert {"frame", "particle", "x", "y", "angle", "t_s", "x_nm", "y_nm"} <= set(table.columns)
    assert set(table["frame"]) == {f for f in range(130) if (masks[f] > 0).any()}
    assert len(list((out / "jpeg").glob("*.jpeg"))) == 130
    meta = json.loads((out / "meta.json").read_text())
    assert meta["seed"] == 4 and meta["preset"] == "leave-reenter" and len(meta["cnr"]) == 130
    assert meta["calibration"]["exposure_s"] == 1 / 80 and meta["prompt_frames"] == [0, 125]
    for name in ("prompts.json", "prompts_point.json", "prompts_box.json", "prompts_point_box.json"):
        prompts = load_prompts(out / name, (256, 256))
        assert sorted(p.frame for p in prompts) == [0, 125]
    assert all(p.box is not None and not p.points for p in load_prompts(out / "prompts_box.json"))


def test_simulate_refuses_unknown_preset_and_missing_out(tmp_path) -> None:
    bad = runner.invoke(app, ["simulate", "--preset", "nope", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "unknown simulation preset" in bad.output
    assert not (tmp_path / "x").exists()
    assert runner.invoke(app, ["simulate", "--preset", "demo"]).exit_code == 2
    listing = runner.invoke(app, ["simulate", "--list"])
    assert listing.exit_code == 0 and "sam4em-150nm" in listing.output


def test_evaluate_scores_a_run_directory(tmp_path) -> None:
    gt = tmp_path / "gt"
    assert runner.invoke(app, ["simulate", "--preset", "crossing", "--frames", "20", "--out", str(gt)]).exit_code == 0
    masks = tifffile.imread(gt / "gt_masks.tif")
    perfect = tmp_path / "perfect"
    perfect.mkdir()
    shutil.copy(gt / "gt_masks.tif", perfect / "masks.tif")
    result = runner.invoke(app, ["evaluate", "--pred", str(perfect), "--gt", str(gt)])
    assert result.exit_code == 0, result.output
    report = json.loads((perfect / "evaluation.json").read_text())
    assert report["summary"]["J&F"] == 100.0 and report["summary"]["missed_frames"] == 0
    shifted = tmp_path / "shifted"
    shifted.mkdir()
    tifffile.imwrite(shifted / "masks.tif", np.roll(masks, 3, axis=2), photometric="minisblack")
    (shifted / "run.json").write_text(json.dumps({"mask_frames": [[0, 19]]}))
    out_json = tmp_path / "reports" / "shifted.json"
    result = runner.invoke(app, ["evaluate", "--pred", str(shifted), "--gt", str(gt), "--out", str(out_json)])
    assert result.exit_code == 0, result.output
    summary = json.loads(out_json.read_text())["summary"]
    assert 50.0 < summary["J"] < 100.0 and abs(summary["centroid_error_px_median"] - 3.0) < 0.3
    missing = runner.invoke(app, ["evaluate", "--pred", str(tmp_path / "nothing"), "--gt", str(gt)])
    assert missing.exit_code == 2 and "masks.tif" in missing.output


def test_simulate_from_a_written_spec_reproduces_the_clip(tmp_path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    assert runner.invoke(app, ["simulate", "--preset", "crossing", "--frames", "3", "--seed", "9",
                               "--out", str(first)]).exit_code == 0
    again = runner.invoke(app, ["simulate", "--spec", str(first / "meta.json"), "--frames", "3", "--seed", "9",
                                "--out", str(second)])
    assert again.exit_code == 0, again.output
    np.testing.assert_array_equal(tifffile.imread(first / "video.tif"), tifffile.imread(second / "video.tif"))
    broken = tmp_path / "broken.json"
    broken.write_text('{"imaging": {"pixel_size_um": 1}}')
    refused = runner.invoke(app, ["simulate", "--spec", str(broken), "--out", str(tmp_path / "c")])
    assert refused.exit_code == 2 and "pixel_size_um" in refused.output


def test_streamed_folder_equals_the_in_memory_clip(tmp_path) -> None:
    from sam4em_live.sim.outputs import simulate_to_folder, write_simulation
    from sam4em_live.sim.presets import get_preset
    from sam4em_live.sim.video import simulate_video

    spec = get_preset("crossing")
    simulate_to_folder(spec, 8, 2, tmp_path / "streamed")
    write_simulation(simulate_video(spec, 8, 2), tmp_path / "memory")
    for name in ("video.tif", "gt_masks.tif"):
        np.testing.assert_array_equal(tifffile.imread(tmp_path / "streamed" / name),
                                      tifffile.imread(tmp_path / "memory" / name))
    for name in ("gt_trajectories.csv", "prompts_point_box.json"):
        assert (tmp_path / "streamed" / name).read_text() == (tmp_path / "memory" / name).read_text()
    streamed = json.loads((tmp_path / "streamed" / "meta.json").read_text())
    memory = json.loads((tmp_path / "memory" / "meta.json").read_text())
    assert streamed["cnr"] == memory["cnr"] and streamed["spec"] == memory["spec"]
    assert not list((tmp_path / "streamed").glob(".*scratch*"))
