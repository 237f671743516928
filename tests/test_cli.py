"""The command line: track a TIFF and a JPEG folder end to end, clear errors, camera → serve over loopback."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest
import tifffile
from PIL import Image
from typer.testing import CliRunner

from sam4em_live.cli import app
from tests.conftest import disk_video

runner = CliRunner()


def _prompts(tmp_path, entries):
    path = tmp_path / "prompts.json"
    path.write_text(json.dumps({"prompts": entries}))
    return path


GOOD = [{"frame": 0, "particle": 1, "points": [[30, 40]], "labels": [1]},
        {"frame": 0, "particle": 2, "box": [60, 50, 80, 70]}]


def _check_run(run_dir, truth, n_frames, pixel_size_nm=None):
    table = pd.read_csv(run_dir / "trajectories.csv")
    assert len(table) == 2 * n_frames
    for pid in (1, 2):
        t = table[table.particle == pid].sort_values("frame")
        np.testing.assert_allclose(t.x, truth[:n_frames, pid - 1, 0], atol=0.6)
        np.testing.assert_allclose(t.y, truth[:n_frames, pid - 1, 1], atol=0.6)
    if pixel_size_nm:
        np.testing.assert_allclose(table.x_nm, table.x * pixel_size_nm)
    run = json.loads((run_dir / "run.json").read_text())
    assert run["backend"]["backend"] == "threshold"
    assert tifffile.imread(run_dir / "masks.tif").shape[0] == n_frames


def test_track_tiff(tmp_path):
    frames, truth = disk_video(n_frames=20)
    tifffile.imwrite(tmp_path / "clip.tif", frames, photometric="minisblack")
    out = tmp_path / "run"
    result = runner.invoke(app, ["track", str(tmp_path / "clip.tif"), "--prompts", str(_prompts(tmp_path, GOOD)),
                                 "--out", str(out), "--backend", "threshold", "--fps", "80",
                                 "--pixel-size-nm", "1.5", "--no-progress"])
    assert result.exit_code == 0, result.output
    _check_run(out, truth, 20, pixel_size_nm=1.5)
    # a second run into the same folder is refused, nothing overwritten
    again = runner.invoke(app, ["track", str(tmp_path / "clip.tif"), "--prompts", str(tmp_path / "prompts.json"),
                                "--out", str(out), "--backend", "threshold", "--no-progress"])
    assert again.exit_code == 2 and "already exists" in again.output


def test_track_jpeg_folder_rgb(tmp_path):
    frames, truth = disk_video(n_frames=12, dtype=np.uint8)
    folder = tmp_path / "jpeg"
    folder.mkdir()
    for i, px in enumerate(frames):
        Image.fromarray(np.stack([px] * 3, axis=-1)).save(folder / f"{i:06d}.jpeg", quality=95)
    out = tmp_path / "run"
    result = runner.invoke(app, ["track", str(folder), "--prompts", str(_prompts(tmp_path, GOOD)), "--out", str(out),
                                 "--backend", "threshold", "--fps", "80", "--no-progress"])
    assert result.exit_code == 0, result.output
    _check_run(out, truth, 12)


@pytest.mark.parametrize("entries,message", [
    ([{"frame": 0, "particle": 1, "points": [[500, 40]], "labels": [1]}], "prompts[0]"),
    ([{"frame": 0, "particle": 1, "box": [5, 5, 5, 9]}], "empty"),
])
def test_track_bad_prompts_clear_error(tmp_path, entries, message):
    frames, _ = disk_video(n_frames=3)
    tifffile.imwrite(tmp_path / "clip.tif", frames, photometric="minisblack")
    result = runner.invoke(app, ["track", str(tmp_path / "clip.tif"), "--prompts", str(_prompts(tmp_path, entries)),
                                 "--out", str(tmp_path / "run"), "--backend", "threshold", "--no-progress"])
    assert result.exit_code == 2 and message in result.output
    assert not (tmp_path / "run").exists()


def test_track_missing_input(tmp_path):
    result = runner.invoke(app, ["track", str(tmp_path / "nope.tif"), "--prompts", str(_prompts(tmp_path, GOOD)),
                                 "--out", str(tmp_path / "run"), "--no-progress"])
    assert result.exit_code == 2 and "not found" in result.output


def test_track_option_reaches_the_backend_and_is_checked_by_its_model(tmp_path):
    frames, _ = disk_video(n_frames=6)
    tifffile.imwrite(tmp_path / "clip.tif", frames, photometric="minisblack")
    prompts = str(_prompts(tmp_path, GOOD))
    args = ["track", str(tmp_path / "clip.tif"), "--prompts", prompts, "--backend", "threshold", "--no-progress"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "run"), "--option", "smoothing_sigma_px=2.5",
                                 "--option", "search_radius_px=40"])
    assert result.exit_code == 0, result.output
    options = json.loads((tmp_path / "run" / "run.json").read_text())["backend"]["options"]
    assert options["smoothing_sigma_px"] == 2.5 and options["search_radius_px"] == 40
    for flag, message in [("smoothing_sigmaa=1", "segmenter.options.smoothing_sigmaa"),
                          ("search_radius_px=wide", "segmenter.options.search_radius_px"),
                          ("smoothing_sigma_px", "KEY=VALUE")]:
        bad = runner.invoke(app, [*args, "--out", str(tmp_path / "bad"), "--option", flag])
        assert bad.exit_code == 2 and message in bad.output, (flag, bad.output)
        assert not (tmp_path / "bad").exists()


def test_serve_bad_source_option_names_key(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text('[source]\nkind = "zmq"\nendpont = "tcp://127.0.0.1:5555"\n')
    result = runner.invoke(app, ["serve", "--config", str(cfg)])
    assert result.exit_code == 2 and "source.endpont" in result.output
    cfg.write_text('[source]\nkind = "webcam"\n')
    result = runner.invoke(app, ["serve", "--config", str(cfg)])
    assert result.exit_code == 2 and "unknown source 'webcam'" in result.output and "replay" in result.output


def test_serve_bad_config_names_key(tmp_path):
    cfg = tmp_path / "bad.toml"
    cfg.write_text("[pipeline]\nbackpresure = 'latest'\n")
    result = runner.invoke(app, ["serve", "--config", str(cfg)])
    assert result.exit_code == 2 and "pipeline.backpresure" in result.output


def test_camera_and_serve_processes_over_loopback(tmp_path):
    """Two real processes: `camera` publishes a TIFF, `serve` tracks it and records."""
    frames, truth = disk_video(n_frames=30)
    tifffile.imwrite(tmp_path / "clip.tif", frames, photometric="minisblack")
    port = _free_port()
    cfg = tmp_path / "serve.toml"
    (tmp_path / "prompts.json").write_text(json.dumps({"prompts": GOOD}))
    cfg.write_text(f"""
prompts = "{tmp_path / 'prompts.json'}"
[source]
endpoint = "tcp://127.0.0.1:{port}"
[segmenter]
backend = "threshold"
[publisher]
endpoint = "tcp://127.0.0.1:0"
[recorder]
out_dir = "{tmp_path / 'runs'}"
[control]
endpoint = "tcp://127.0.0.1:0"
""")
    exe = [sys.executable, "-m", "sam4em_live"]
    serve = subprocess.Popen([*exe, "serve", "--config", str(cfg)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    try:
        time.sleep(3.0)  # interpreter start + connect
        cam = subprocess.run([*exe, "camera", str(tmp_path / "clip.tif"), "--endpoint", f"tcp://127.0.0.1:{port}",
                              "--fps", "30"], capture_output=True, text=True, timeout=60)
        assert cam.returncode == 0, cam.stderr
        assert "sent 30 frames" in cam.stdout
        time.sleep(1.0)
    finally:
        serve.send_signal(2)  # Ctrl-C: clean stop
        out, _ = serve.communicate(timeout=20)
    assert serve.returncode == 0, out
    (run_dir,) = (tmp_path / "runs").iterdir()
    table = pd.read_csv(run_dir / "trajectories.csv")
    assert table.frame.nunique() == 30, out
    t1 = table[table.particle == 1].sort_values("frame")
    np.testing.assert_allclose(t1.x, truth[:, 0, 0], atol=0.6)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_track_sam2_missing_checkpoint_says_where_to_get_weights(tmp_path):
    frames, _ = disk_video(n_frames=2)
    tifffile.imwrite(tmp_path / "clip.tif", frames, photometric="minisblack")
    result = runner.invoke(app, ["track", str(tmp_path / "clip.tif"), "--prompts", str(_prompts(tmp_path, GOOD)),
                                 "--out", str(tmp_path / "run"), "--backend", "sam2", "--option", "device=cpu",
                                 "--option", f"checkpoint={tmp_path / 'sam2.1_hiera_tiny.pt'}", "--no-progress"])
    assert result.exit_code == 2
    assert "github.com/facebookresearch/sam2" in result.output


@pytest.mark.sam2
def test_track_sam2_random_weights_is_labelled_loudly(tmp_path):
    """The real sam2 backend through the real pipeline; its untrained output is flagged everywhere."""
    frames, _ = disk_video(n_frames=3)
    tifffile.imwrite(tmp_path / "clip.tif", frames, photometric="minisblack")
    cfg = tmp_path / "sam2.toml"
    cfg.write_text("[segmenter.options]\nimage_size_px = 64\n")
    result = runner.invoke(app, ["track", str(tmp_path / "clip.tif"), "--prompts", str(_prompts(tmp_path, GOOD)),
                                 "--out", str(tmp_path / "run"), "--backend", "sam2", "--option", "random_weights=true",
                                 "--option", "device=cpu", "--config", str(cfg), "--no-progress"])
    assert result.exit_code == 0, result.output
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["backend"]["backend"] == "sam2" and run["backend"]["random_weights"] is True
    assert "random weights" in run["WARNING"].lower()
    assert tifffile.imread(tmp_path / "run" / "masks.tif").shape[0] == 3
