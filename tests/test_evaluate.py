"""J, F, J&F, centroid error, misses and identity switches on masks with known answers."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy.ndimage import binary_dilation
from skimage.morphology import disk

from sam4em_live.evaluate.masks import boundary_f, boundary_map, boundary_tolerance_px, jaccard
from sam4em_live.evaluate.metrics import evaluate_run
from sam4em_live.evaluate.rundir import EvaluationInputError, evaluate_directories


def _square(shape: tuple[int, int], x0: int, y0: int, size: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[y0 : y0 + size, x0 : x0 + size] = True
    return mask


def _davis_f_by_dilation(pred: np.ndarray, gt: np.ndarray, tol: int) -> float:
    """Reference: DAVIS' recipe with disk dilations on the full frame."""
    pb, gb = boundary_map(pred), boundary_map(gt)
    precision = np.sum(pb & binary_dilation(gb, structure=disk(tol))) / pb.sum()
    recall = np.sum(gb & binary_dilation(pb, structure=disk(tol))) / gb.sum()
    return 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)


def test_tolerance_follows_the_image_diagonal() -> None:
    assert boundary_tolerance_px((512, 512)) == 6
    assert boundary_tolerance_px((1024, 1024)) == 12
    assert boundary_tolerance_px((480, 854)) == math.ceil(0.008 * math.hypot(480, 854))


@pytest.mark.parametrize("shift, expected_j", [(0, 1.0), (5, 15 / 25), (10, 10 / 30), (20, 0.0), (40, 0.0)])
def test_jaccard_and_boundary_of_shifted_squares(shift: int, expected_j: float) -> None:
    gt = _square((128, 128), 30, 40, 20)
    pred = _square((128, 128), 30 + shift, 40, 20)
    assert jaccard(pred, gt) == pytest.approx(expected_j)
    f = boundary_f(pred, gt, tolerance_px=6)
    assert f == pytest.approx(_davis_f_by_dilation(pred, gt, 6), abs=1e-9)
    if shift <= 6:
        assert f == 1.0
    if shift >= 40:
        assert f == 0.0


def test_empty_masks_follow_davis_conventions() -> None:
    empty = np.zeros((32, 32), dtype=bool)
    full = _square((32, 32), 4, 4, 8)
    assert jaccard(empty, empty) == 1.0 and boundary_f(empty, empty) == 1.0
    assert jaccard(empty, full) == 0.0 and boundary_f(empty, full) == 0.0


def _two_particle_video(n: int = 10) -> np.ndarray:
    gt = np.zeros((n, 128, 128), dtype=np.uint16)
    for t in range(n):
        gt[t][_square((128, 128), 10 + 2 * t, 20, 16)] = 1
        gt[t][_square((128, 128), 70, 60 + t, 24)] = 2
    return gt


def test_identical_prediction_scores_100_and_disjoint_scores_0() -> None:
    gt = _two_particle_video()
    report = evaluate_run(gt.copy(), gt)
    s = report.summary()
    assert s["J"] == 100.0 and s["F"] == 100.0 and s["J&F"] == 100.0
    assert s["centroid_error_px_median"] == 0.0 and s["missed_frames"] == 0 and s["identity_switches"] == 0
    disjoint = np.zeros_like(gt)
    disjoint[:, 100:, 100:] = gt[:, :28, :28]  # nothing there in gt: put labels far away
    disjoint[:, 100:120, 0:20] = 1
    disjoint[:, 105:125, 30:50] = 2
    far = evaluate_run(disjoint, gt).summary()
    assert far["J"] == 0.0 and far["F"] == 0.0


def test_shift_gives_known_j_and_centroid_error() -> None:
    gt = _two_particle_video()
    pred = np.roll(gt, 4, axis=2)  # 4 px to the right; particles stay inside the frame
    report = evaluate_run(pred, gt)
    p1 = report.per_particle.set_index("particle").loc[1]
    assert p1["J"] == pytest.approx(100 * (12 * 16) / (20 * 16))
    tol = boundary_tolerance_px((128, 128))  # 2 px: a 4 px shift is not within tolerance
    reference = np.mean([_davis_f_by_dilation(pred[t] == 1, gt[t] == 1, tol) for t in range(len(gt))])
    assert 0 < p1["F"] < 100 and p1["F"] == pytest.approx(100 * reference)
    assert p1["centroid_error_px_median"] == pytest.approx(4.0)


def test_missed_frames_false_positives_and_identity_switches() -> None:
    gt = _two_particle_video()
    pred = gt.copy()
    pred[3] = np.where(gt[3] == 1, 0, pred[3])  # particle 1 missed on frame 3
    for t in (5, 6, 7):  # ids swapped on frames 5-7
        pred[t] = np.where(gt[t] == 1, 2, np.where(gt[t] == 2, 1, 0))
    pred[9][_square((128, 128), 100, 100, 5)] = 3  # an extra particle the truth does not have
    report = evaluate_run(pred, gt)
    pp = report.per_particle.set_index("particle")
    assert pp.loc[1, "missed_frames"] == 1 and pp.loc[2, "missed_frames"] == 0
    assert pp.loc[1, "identity_switches"] == 1 and pp.loc[2, "identity_switches"] == 1
    assert pp.loc[1, "swapped_frames"] == 3
    assert pp.loc[1, "J"] == pytest.approx(100 * 6 / 10)  # frames 3, 5, 6, 7 score 0
    s = report.summary()
    assert s["extra_particles"] == 1 and s["particles"] == 2
    assert s["J"] == pytest.approx((60 + 70) / 2)
    frame_means = report.frame_means().set_index("frame")
    assert frame_means.loc[0, "J"] == 100.0 and frame_means.loc[6, "J"] == 0.0
    payload = json.loads(report.to_json())
    assert payload["summary"]["identity_switches"] == 2


def test_table_centroids_take_precedence() -> None:
    gt = _two_particle_video(3)
    gt_table = pd.DataFrame({"frame": [0, 1, 2], "particle": [1, 1, 1], "x": [17.5, 19.5, 21.5],
                             "y": [27.5, 27.5, 27.5]})
    pred_table = gt_table.assign(x=gt_table["x"] + 3.0)
    report = evaluate_run(gt.copy(), gt, pred_table, gt_table)
    errors = report.per_frame.set_index(["frame", "particle"])["centroid_error_px"]
    assert errors.loc[(1, 1)] == pytest.approx(3.0)
    assert errors.loc[(1, 2)] == pytest.approx(0.0)  # particle 2 from masks


def _write_run(run_dir, labels: np.ndarray, run_json: dict | None = None) -> None:
    run_dir.mkdir(parents=True)
    tifffile.imwrite(run_dir / "masks.tif", labels, photometric="minisblack")
    if run_json is not None:
        (run_dir / "run.json").write_text(json.dumps(run_json))


def test_run_directory_alignment_with_mask_frames(tmp_path) -> None:
    from sam4em_live.sim.outputs import write_simulation
    from sam4em_live.sim.presets import get_preset
    from sam4em_live.sim.video import simulate_video

    video = simulate_video(get_preset("crossing"), 12, seed=1)
    write_simulation(video, tmp_path / "gt")
    frames = [0, 2, 5, 11]
    _write_run(tmp_path / "run", video.gt_labels[frames], {"mask_frames": frames})
    report = evaluate_directories(tmp_path / "run", tmp_path / "gt")
    s = report.summary()
    assert s["J&F"] == 100.0 and s["frames"] == 4 and s["frames_not_processed"] == 8
    assert s["centroid_error_px_median"] < 0.2  # mask centroid vs exact centroid (pixelation)
    # The recorder's encoding: inclusive [first, last] ranges.
    _write_run(tmp_path / "ranges", video.gt_labels[[1, 2, 3, 7]], {"mask_frames": [[1, 3], [7, 7]]})
    ranged = evaluate_directories(tmp_path / "ranges", tmp_path / "gt")
    assert ranged.summary()["J&F"] == 100.0 and sorted(set(ranged.per_frame["frame"])) == [1, 2, 3, 7]
    _write_run(tmp_path / "bad", video.gt_labels[:3], {"mask_frames": [0, 1]})
    with pytest.raises(EvaluationInputError, match="mask_frames"):
        evaluate_directories(tmp_path / "bad", tmp_path / "gt")
    _write_run(tmp_path / "late", video.gt_labels[:2], {"mask_frames": [0, 40]})
    with pytest.raises(EvaluationInputError, match="beyond"):
        evaluate_directories(tmp_path / "late", tmp_path / "gt")
    _write_run(tmp_path / "cut", video.gt_labels[:2])
    (tmp_path / "cut" / "run.json").write_text('{"mask_frames": [[0, 1]')  # a manifest cut short
    with pytest.raises(EvaluationInputError, match=r"run\.json cannot be read"):
        evaluate_directories(tmp_path / "cut", tmp_path / "gt")
    for no_masks in (tmp_path / "gt", tmp_path / "nowhere"):
        with pytest.raises(EvaluationInputError, match=r"no masks\.tif"):
            evaluate_directories(no_masks, tmp_path / "gt")
