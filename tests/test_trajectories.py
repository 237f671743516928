"""Trajectory tables: build, round-trip CSV/Parquet, run dirs, SAM-EM and SAM4EM readers."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from sam4em_live.analysis.loading import load_trajectories
from sam4em_live.frames import Calibration
from sam4em_live.io.run_folder import RunFolder
from sam4em_live.io.trajectories import (
    REQUIRED_COLUMNS,
    fps_from_times,
    from_samem_layout,
    normalize_table,
    samem_angle_from_ours,
    table_from_measurements,
    to_samem_layout,
    with_units,
    write_trajectories,
)
from sam4em_live.particles import ParticleMeasurement


def disc(shape, cx, cy, r):
    y, x = np.mgrid[: shape[0], : shape[1]]
    return (x - cx) ** 2 + (y - cy) ** 2 <= r * r


def bar(shape, cx, cy, half_len, half_wid):
    y, x = np.mgrid[: shape[0], : shape[1]]
    return (np.abs(x - cx) <= half_len) & (np.abs(y - cy) <= half_wid)


def sample_measurements():
    ms = []
    for f in range(6):
        ms.append(ParticleMeasurement(1, f, True, 10.0 + f, 20.0, 15.0, 30, 8.0, 3.0, 0.9, 0.8))
        present = f != 3
        ms.append(ParticleMeasurement(2, f, present, 40.0 if present else math.nan, 5.0 + f if present else math.nan))
    return ms


def test_table_from_measurements_units_and_gaps():
    cal = Calibration(pixel_size_nm=2.0, fps=10.0)
    table = table_from_measurements(sample_measurements(), cal)
    assert list(table.columns[:4]) == list(REQUIRED_COLUMNS)
    assert {"angle", "area", "t_s", "x_nm", "y_nm"} <= set(table.columns)
    p2 = table[table.particle == 2]
    assert p2.frame.tolist() == [0, 1, 2, 4, 5]  # absent frame 3 has no row
    np.testing.assert_allclose(table.t_s, table.frame / 10.0)
    np.testing.assert_allclose(table.x_nm, table.x * 2.0)
    times = {f: 0.1 * f + 0.003 * (f % 2) for f in range(6)}  # per-frame timestamps win over fps
    timed = table_from_measurements(sample_measurements(), Calibration(), times)
    assert timed.t_s.tolist() == [times[f] for f in timed.frame]
    assert "x_nm" not in timed.columns
    assert fps_from_times(timed) == pytest.approx(10.0, rel=0.05)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_round_trip(tmp_path, suffix):
    table = table_from_measurements(sample_measurements(), Calibration(pixel_size_nm=1.5, fps=80.0))
    path = write_trajectories(table, tmp_path / f"t{suffix}")
    back = load_trajectories(path).table
    pd.testing.assert_frame_equal(back, table, check_dtype=False)
    with pytest.raises(ValueError, match="unsupported"):
        write_trajectories(table, tmp_path / "t.txt")


def test_run_dir_reads_calibration_from_run_json(tmp_path):
    table = table_from_measurements(sample_measurements(), Calibration())
    write_trajectories(table, tmp_path / "trajectories.csv")
    (tmp_path / "run.json").write_text(json.dumps({"series": {"calibration": {"pixel_size_nm": 0.8, "fps": 40}},
                                                   "calibration": {"fps": 50}}))
    run = RunFolder.open(tmp_path).trajectories()
    assert run.calibration.pixel_size_nm == 0.8 and run.calibration.fps == 50.0
    assert len(run.table) == len(table)
    assert load_trajectories(tmp_path).calibration == run.calibration


def test_normalize_rejects_bad_tables():
    with pytest.raises(ValueError, match="lacks column"):
        normalize_table(pd.DataFrame({"frame": [0], "x": [1.0], "y": [1.0]}))
    with pytest.raises(ValueError, match="twice"):
        normalize_table(pd.DataFrame({"frame": [0, 0], "particle": [1, 1], "x": [1.0, 2.0], "y": [1.0, 2.0]}))
    with pytest.raises(ValueError, match="integers"):
        normalize_table(pd.DataFrame({"frame": [0.5], "particle": [1], "x": [1.0], "y": [1.0]}))
    with pytest.raises(ValueError, match="bad trajectory table"):
        normalize_table(pd.DataFrame({"frame": [0], "particle": [1], "x": ["left"], "y": [1.0]}))
    nan_row = normalize_table(pd.DataFrame({"frame": [1, 0], "particle": [1, 1], "x": [np.nan, 2.0], "y": [1.0, 2.0]}))
    assert nan_row.frame.tolist() == [0]


def test_with_units_keeps_measured_timestamps():
    table = pd.DataFrame({"frame": [0, 2], "particle": [1, 1], "x": [1.0, 2.0], "y": [0.0, 0.0], "t_s": [0.0, 0.021]})
    out = with_units(table, Calibration(pixel_size_nm=3.0, fps=100.0))
    assert out.t_s.tolist() == [0.0, 0.021] and out.x_nm.tolist() == [3.0, 6.0]
    assert with_units(table.drop(columns="t_s"), Calibration(fps=100.0)).t_s.tolist() == [0.0, 0.02]


def test_samem_layout_round_trip_and_angle_convention(tmp_path):
    from skimage.measure import regionprops

    # A bar along +x: our angle 0; skimage's orientation (from the row axis) is +-90 degrees.
    mask = bar((30, 40), 20, 15, 10, 2)
    ours = 0.0
    theirs = math.degrees(regionprops(mask.astype(np.uint8))[0].orientation)
    assert abs(abs(samem_angle_from_ours(np.array([ours]))[0]) - abs(theirs)) < 1e-6
    table = table_from_measurements(sample_measurements(), Calibration())
    samem = to_samem_layout(table)
    assert list(samem.columns) == ["frame", "particle_id", "x", "y", "angle"]
    samem.to_csv(tmp_path / "trajectories.csv", index=False)
    back = load_trajectories(tmp_path / "trajectories.csv").table
    np.testing.assert_allclose(back.angle.to_numpy(), table.angle.to_numpy(), equal_nan=True)
    np.testing.assert_allclose(back[["x", "y"]].to_numpy(), table[["x", "y"]].to_numpy())
    split = pd.concat([samem, samem.iloc[:1]])
    with pytest.raises(ValueError, match="npz"):
        from_samem_layout(split)


def write_samem_run(folder, frames):
    """A SAM-EM output folder as its MaskComponent.propagate writes it."""
    (folder / "npz").mkdir(parents=True)
    with open(folder / "index.jsonl", "a", encoding="utf-8") as index:
        for f, (ids, masks) in frames.items():
            rel = f"npz/{f:06d}.npz"
            np.savez_compressed(folder / rel, obj_ids=np.array(ids, dtype=np.int32),
                                masks=np.stack(masks).astype(np.uint8))
            index.write(json.dumps({"frame_idx": f, "obj_ids": ids, "npz": rel}) + "\n")


def test_samem_run_folder_is_remeasured(tmp_path):
    shape = (40, 50)
    frames = {}
    for f in range(4):
        second = disc(shape, 35, 30, 3) if f != 2 else np.zeros(shape, bool)  # object 7 lost on frame 2
        frames[f] = ([3, 7], [bar(shape, 10 + f, 10, 6, 2), second])
    write_samem_run(tmp_path, frames)
    run = load_trajectories(tmp_path)
    t = run.table
    assert t[t.particle == 3].x.tolist() == [10.0, 11.0, 12.0, 13.0]
    assert t[t.particle == 7].frame.tolist() == [0, 1, 3]
    assert np.allclose(t[t.particle == 3].angle, 0.0)
    (tmp_path / "index.jsonl").write_text("not json\n")
    with pytest.raises(ValueError, match="index record"):
        load_trajectories(tmp_path)


def test_sam4em_masks_npy(tmp_path):
    shape = (32, 32)
    stack = np.zeros((5, 2, *shape), dtype=bool)
    for f in range(5):
        stack[f, 0] = disc(shape, 8 + f, 8, 3)
        if f % 2 == 0:
            stack[f, 1] = bar(shape, 20, 20 + f, 2, 6)
    np.save(tmp_path / "masks.npy", stack)
    t = load_trajectories(tmp_path / "masks.npy").table
    assert t[t.particle == 1].x.tolist() == [8.0, 9.0, 10.0, 11.0, 12.0]
    assert t[t.particle == 2].frame.tolist() == [0, 2, 4]
    assert np.allclose(t[t.particle == 2].angle, 90.0)
    np.save(tmp_path / "bad.npy", np.zeros((3, 4, 4)))
    with pytest.raises(ValueError, match="frames, objects"):
        load_trajectories(tmp_path / "bad.npy")
    with pytest.raises(FileNotFoundError):
        load_trajectories(tmp_path / "missing.csv")
