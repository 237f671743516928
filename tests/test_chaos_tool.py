"""The fault-injection tool (tools/chaos) end to end on a tiny case: a real serve, real sockets, real files."""

from __future__ import annotations

import json
import shutil

import pytest

from tools.chaos.__main__ import main
from tools.chaos.runcheck import check_run_folder


@pytest.fixture(scope="module")
def wire_run(tmp_path_factory):
    """One tiny wire case (200 malformed messages into a live serve) and its report folder."""
    out = tmp_path_factory.mktemp("chaos")
    exit_code = main(["wire", "--messages", "200", "--out", str(out)])
    return exit_code, out, json.loads((out / "wire.json").read_text(encoding="utf-8"))


def test_wire_case_accounts_for_every_message_and_passes(wire_run):
    exit_code, out, report = wire_run
    assert report["malformed_messages"] == 200
    assert report["decoder_escapes_in_process"] == {}
    assert not report["crashed"] and report["hang"] is None
    assert report["service_counted"]["unaccounted"] == 0
    assert report["tail"]["processed"] == report["tail"]["valid_frames_sent"] == 200
    assert sum(report["service_counted"]["rejected_by_reason"].values()) > 100
    assert report["verdict"] == "pass" and exit_code == 0, (out / "summary.md").read_text(encoding="utf-8")
    assert "## wire: PASS" in (out / "summary.md").read_text(encoding="utf-8")


def test_checker_accepts_the_closed_run_and_catches_a_cut_line_and_a_wrong_manifest(wire_run, tmp_path):
    _, _, report = wire_run
    (folder_report,) = report["run_folders"]
    assert folder_report["closed"] and folder_report["problems"] == []
    # The tool's run folder is gone with its temporary directory: check a damaged copy of a fresh one.
    run = tmp_path / "run"
    shutil.copytree(_fresh_run(tmp_path), run)
    assert check_run_folder(run)["problems"] == []
    with open(run / "trajectories.csv", "a", encoding="utf-8") as fh:
        fh.write("12,1,3.5")  # a row cut mid-line, as a full disk leaves it
    manifest = json.loads((run / "run.json").read_text(encoding="utf-8"))
    manifest["mask_frames"] = [[0, 0]]
    (run / "run.json").write_text(json.dumps(manifest), encoding="utf-8")
    problems = check_run_folder(run)["problems"]
    assert any("last line cut" in p for p in problems), problems
    assert any("mask_frames lists 1 frames" in p for p in problems), problems


def _fresh_run(tmp_path):
    """A small closed run folder written by the real recorder through the real service."""
    from sam4em_live.config import ServiceConfig
    from sam4em_live.service.builder import build_service
    from sam4em_live.sources.array_source import ArraySource
    from tools.chaos.harness import SyntheticVideo

    video = SyntheticVideo.make(128)
    config = ServiceConfig.from_mapping({
        "segmenter": {"backend": "threshold"}, "recorder": {"out_dir": str(tmp_path / "runs")},
        "publisher": {"enabled": False}, "control": {"enabled": False},
        "calibration": {"pixel_size_nm": 1.0, "fps": 50.0}, "pipeline": {"backpressure": "every-frame"},
        "prompts": str(video.prompts_file(tmp_path / "prompts.json")),
    })
    built = build_service(config, source=ArraySource(video.frames[:20]))
    built.service.run()
    assert built.run_dir is not None
    return built.run_dir
