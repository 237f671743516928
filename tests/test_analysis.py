"""``sam4em-live analyze``: stats table and figures from a run directory or a trajectories file."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from sam4em_live.analysis.analyze import analyze
from sam4em_live.cli import app
from tests.stats_helpers import brownian_tracks

FIGURES = ("trajectories", "tmsd", "displacements", "velocity_autocorrelation")


def write_run(run_dir, D_px2_per_frame, calibration, n_steps=300, particles=4, seed=0, t_s=None):
    rng = np.random.default_rng(seed)
    parts = []
    for pid, xy in enumerate(brownian_tracks(n_steps, D_px2_per_frame, rng, particles), start=1):
        frames = np.arange(n_steps + 1)
        keep = rng.random(frames.size) >= 0.05  # a few missed frames
        parts.append(pd.DataFrame({"frame": frames[keep], "particle": pid, "x": 100 + 40 * pid + xy[keep, 0],
                                   "y": 200 + xy[keep, 1], "angle": rng.uniform(-90, 90, keep.sum()),
                                   "area": 50}))
    table = pd.concat(parts, ignore_index=True)
    if t_s is not None:
        table["t_s"] = table["frame"] * t_s
    run_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(run_dir / "trajectories.csv", index=False)
    (run_dir / "run.json").write_text(json.dumps({"calibration": calibration}))
    return table


def test_analyze_run_dir_cli_writes_table_and_figures(tmp_path):
    D = 0.5  # px^2/frame
    write_run(tmp_path / "run", D, {"pixel_size_nm": 2.0, "fps": 50.0})
    out = tmp_path / "out"
    result = CliRunner().invoke(app, ["analyze", str(tmp_path / "run"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "4 particles" in result.output
    stats = pd.read_csv(out / "stats.csv")
    assert stats.particle.tolist() == [1, 2, 3, 4]
    for col in ("D_px2_per_frame", "D_err_px2_per_frame", "alpha", "alpha_err", "D_nm2_per_s", "D_err_nm2_per_s",
                "D1_px2_per_frame", "D1_nm2_per_s", "Drot_deg2_per_frame"):
        assert col in stats.columns and stats[col].notna().all(), col
    # D in physical units: 0.5 px^2/frame * (2 nm)^2 * 50 frames/s = 100 nm^2/s for the alpha = 1 fit.
    assert stats.D1_nm2_per_s.median() == pytest.approx(100.0, rel=0.25)
    assert ((stats.alpha - 1).abs() < 4 * stats.alpha_err + 0.1).all()
    doc = json.loads((out / "stats.json").read_text())
    assert doc["calibration"]["fps"] == 50.0 and len(doc["particles"]) == 4
    assert doc["ensemble"]["fit"]["alpha"] == pytest.approx(1.0, abs=0.1)
    assert abs(doc["velocity_autocorrelation"]["cv"][1]) < 0.1
    msd = pd.read_csv(out / "msd.csv")
    np.testing.assert_allclose(msd.lag_s, msd.lag_frames / 50.0)
    for stem in FIGURES:
        for fmt in ("png", "pdf"):
            path = out / f"{stem}.{fmt}"
            assert path.is_file() and path.stat().st_size > 1000, path
    assert (out / "tmsd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "tmsd.pdf").read_bytes()[:5] == b"%PDF-"


def test_cli_flags_override_and_timestamps_give_fps(tmp_path):
    table = write_run(tmp_path / "run", 0.2, {}, n_steps=120, particles=2, t_s=0.01)
    csv = tmp_path / "run" / "trajectories.csv"
    result = analyze(csv, tmp_path / "a", figures=False)
    assert result.calibration.fps == 100.0  # from t_s
    assert result.calibration.pixel_size_nm is None and "D_nm2_per_s" not in result.summary.columns
    with_nm = table.assign(x_nm=table.x * 0.25, y_nm=table.y * 0.25)
    with_nm.to_csv(tmp_path / "nm.csv", index=False)
    assert analyze(tmp_path / "nm.csv", tmp_path / "c", figures=False).calibration.pixel_size_nm == 0.25
    result = analyze(csv, tmp_path / "b", fps=25.0, pixel_size_nm=0.5, figures=False, samem_csv=True)
    assert result.calibration.fps == 25.0
    samem = pd.read_csv(tmp_path / "b" / "trajectories_samem.csv")
    assert list(samem.columns) == ["frame", "particle_id", "x", "y", "angle"] and len(samem) == len(table)
    assert not (tmp_path / "b" / "tmsd.png").exists()


def test_random_weight_runs_are_labelled_loudly(tmp_path):
    write_run(tmp_path / "run", 0.3, {}, n_steps=60, particles=1)
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    manifest["backend"] = {"backend": "sam2", "random_weights": True}
    (tmp_path / "run" / "run.json").write_text(json.dumps(manifest))
    result = CliRunner().invoke(app, ["analyze", str(tmp_path / "run"), "--no-figures"])
    assert result.exit_code == 0, result.output
    assert "WARNING: random weights" in result.output
    doc = json.loads((tmp_path / "run" / "analysis" / "stats.json").read_text())
    assert "random weights" in doc["WARNING"]


def test_cli_errors_are_clear(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(app, ["analyze", str(tmp_path / "nope.csv")])
    assert missing.exit_code == 2 and "not found" in missing.output
    bad = tmp_path / "bad.csv"
    bad.write_text("frame,x\n0,1\n")
    result = runner.invoke(app, ["analyze", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "lacks column" in result.output
    result = runner.invoke(app, ["analyze", str(bad), "--pdf-lags", "0"])
    assert result.exit_code != 0
    with pytest.raises(ValueError, match="positive"):
        analyze(bad, tmp_path / "o", fps=-1.0)
