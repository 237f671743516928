"""Provenance and replay (issue 17): every edit is logged in the run folder with its origin and outcome, run.json
says what it takes to run again, and ``track --replay`` re-runs a live session to identical trajectories."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from sam4em_live.config import ServiceConfig, SourceConfig
from sam4em_live.control.client import ControlClient, ControlError
from sam4em_live.control.quotas import ServiceQuotas
from sam4em_live.control_api import QuotaExceeded
from sam4em_live.hooks.microscope import DryRunMicroscope
from sam4em_live.io.edits_log import EditsLogError, read_edits_log, replay_plan
from sam4em_live.io.run_folder import RunFolder
from sam4em_live.io.tiff_io import write_tiff_stack
from sam4em_live.particles import EditRecord, Prompt, PromptError, RemoveParticle
from sam4em_live.service.builder import build_service
from sam4em_live.service.edits import MAX_REFUSALS_KEPT, EditInbox
from sam4em_live.service.runs import run_replay, run_track
from sam4em_live.sources.array_source import ArraySource
from sam4em_live.sources.camera import FramePublisher, pump
from sam4em_live.sources.registry import build_source
from tests.conftest import disk_video

N_FRAMES = 50
VELOCITY = (0.5, 0.25)  # px/frame: disk 1 starts at (30, 40), disk 2 at (70, 60)


def _disk(particle: int, frame: int) -> tuple[float, float]:
    x0, y0 = ((30.0, 40.0), (70.0, 60.0))[particle - 1]
    return x0 + VELOCITY[0] * frame, y0 + VELOCITY[1] * frame


def _recording(tmp_path: Path) -> Path:
    frames, _ = disk_video(n_frames=N_FRAMES, velocity=VELOCITY)
    path = tmp_path / "clip.tif"
    write_tiff_stack(path, frames, pixel_size_nm=2.0, fps=50.0)
    return path


def _live_session(tmp_path: Path, recording: Path) -> Path:
    """A live every-frame session: the TIFF through the stand-in camera over ZeroMQ, edits over the control channel.

    Edits come from a prompts file, a control client and the monitor's client, some anchored to a frame and
    one for "the next frame" (it lands wherever the stream is then: the log records where).
    """
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"prompts": [{"frame": 0, "particle": 1, "points": [list(_disk(1, 0))]}]}))
    camera = FramePublisher("tcp://127.0.0.1:0")
    cfg = ServiceConfig.from_mapping({
        "source": {"kind": "zmq", "endpoint": camera.endpoint},
        "prompts": str(prompts),
        "recorder": {"out_dir": str(tmp_path / "live")},
        "publisher": {"enabled": False},
        "control": {"endpoint": "tcp://127.0.0.1:0"},
        "pipeline": {"backpressure": "every-frame", "status_interval_s": 0.2},
    })
    built = build_service(cfg, stop_at_series_end=True)
    assert built.control is not None
    client = ControlClient(built.control.endpoint, timeout_s=5.0)
    monitor = ControlClient(built.control.endpoint, timeout_s=5.0, origin="monitor")
    stop_camera = threading.Event()
    source = build_source(SourceConfig.model_validate({"kind": "replay", "path": str(recording), "fps": 10.0}))
    sender = threading.Thread(target=pump, args=(source, camera, stop_camera),
                              kwargs={"series_start_delay_s": 0.5}, daemon=True)
    built.service.start()
    sender.start()
    try:
        deadline = time.monotonic() + 20
        while client.status()["frames_processed"] < 1:  # the frame shape is known from here on
            assert time.monotonic() < deadline, "no frame processed"
            time.sleep(0.02)
        x, y = _disk(1, 4)
        client.correct(1, box=(x - 12, y - 12, x + 12, y + 12))  # the next frame, whichever it is
        client.add_prompt(2, box=(*(v - 10 for v in _disk(2, 12)), *(v + 10 for v in _disk(2, 12))), frame=12)
        client.add_prompt(3, points=[(110.0, 10.0)], frame=15)  # on background: the backend rejects it
        with pytest.raises(ControlError, match="outside"):
            client.add_prompt(4, points=[(500.0, 10.0)])  # refused at once, logged at the next frame
        monitor.correct(1, points=[_disk(1, 20)], frame=20)
        client.remove(2, frame=35)
        monitor.add_prompt(5, points=[_disk(2, 40)], frame=40)
        sender.join(30)
        assert built.service.wait(20), "the service did not stop at the series end"
    finally:
        stop_camera.set()
        client.close()
        monitor.close()
        built.service.stop()
        built.close()
        camera.close()
    assert built.service.error is None
    assert built.run_dir is not None
    return built.run_dir


def _log_lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "edits.jsonl").read_text().splitlines()]


def _without_times(lines: list[dict]) -> list[dict]:
    return [{k: v for k, v in line.items() if k != "wall_time_s"} for line in lines]


def test_a_live_session_replays_to_identical_trajectories(tmp_path: Path) -> None:
    recording = _recording(tmp_path)
    live = _live_session(tmp_path, recording)
    manifest = json.loads((live / "run.json").read_text())
    assert manifest["counts"]["frames_processed"] == N_FRAMES and manifest["counts"]["frames_dropped"] == 0

    # Every edit is in the log, with its frame, origin and outcome, and run.json lists and counts the file.
    lines = _log_lines(live)
    assert manifest["files"]["edits"] == "edits.jsonl" and manifest["counts"]["edits"] == len(lines) == 8
    assert RunFolder(live).check().disagreements == ()
    summary = [(e["frame"], e["origin"], e["edit"]["particle"], e["kind"], e["outcome"], e["checked"]) for e in lines]
    next_frame = next(e["frame"] for e in lines if e["origin"] == "control" and e["kind"] == "correction")
    assert 1 <= next_frame < 12
    refused_at = next(e["frame"] for e in lines if e["edit"]["particle"] == 4)
    assert sorted(summary) == sorted([
        (0, "file", 1, "prompt", "applied", "backend"),
        (next_frame, "control", 1, "correction", "applied", "backend"),
        (refused_at, "control", 4, "prompt", "rejected", "submit"),
        (12, "control", 2, "prompt", "applied", "backend"),
        (15, "control", 3, "prompt", "rejected", "backend"),
        (20, "monitor", 1, "correction", "applied", "backend"),
        (35, "control", 2, "removal", "applied", "backend"),
        (40, "monitor", 5, "prompt", "applied", "backend"),
    ])
    assert "outside" in next(e["reason"] for e in lines if e["edit"]["particle"] == 4)
    assert "no particle found" in next(e["reason"] for e in lines if e["edit"]["particle"] == 3)

    # run.json: absolute inputs, the effective config, versions, backend options.
    provenance = manifest["provenance"]
    assert provenance["inputs"]["prompts"] == str(tmp_path / "prompts.json")
    assert Path(provenance["inputs"]["recorder.out_dir"]).is_absolute()
    assert provenance["model"]["backend"] == "embedded" and provenance["backend_options"]
    assert manifest["config"]["quotas"]["max_particles"] == 128 and manifest["versions"]["sam4em-live"]

    # The replay: the real command line, on the recording the camera sent.
    replayed = tmp_path / "replayed"
    done = subprocess.run([sys.executable, "-m", "sam4em_live", "track", str(recording), "--replay", str(live),
                           "--out", str(replayed), "--no-progress"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    live_table = pd.read_csv(live / "trajectories.csv")
    replay_table = pd.read_csv(replayed / "trajectories.csv")
    assert set(live_table.particle) == {1, 2, 5} and len(live_table) > N_FRAMES
    pd.testing.assert_frame_equal(replay_table, live_table, check_exact=True)
    # The same edits at the same frames, with the same outcomes; the rejected prompts stay rejected.
    assert _without_times(_log_lines(replayed)) == _without_times(lines)
    assert f"replay of the live run {live}" in (replayed / "annotations.jsonl").read_text()


def test_a_replay_needs_an_edits_log(tmp_path: Path) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "run.json").write_text(json.dumps({"config": {}, "files": {}}))
    done = subprocess.run([sys.executable, "-m", "sam4em_live", "track", str(_recording(tmp_path)), "--replay",
                           str(tmp_path / "old"), "--out", str(tmp_path / "r")], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and "edits.jsonl" in done.stderr and not (tmp_path / "r").exists()


def test_the_edits_log_reads_back_whole_lines_and_names_a_bad_one(tmp_path: Path) -> None:
    good = ('{"frame": 3, "origin": "hook", "kind": "removal", "outcome": "applied", "checked": "backend", '
            '"reason": null, "quota": null, "edit": {"particle": 2, "frame": 3, "remove": true}, "wall_time_s": 1.0}')
    path = tmp_path / "edits.jsonl"
    path.write_text(good + "\n" + good[:40])  # a last line cut by a crash
    (record,) = read_edits_log(path)
    assert record == EditRecord(RemoveParticle(2, 3), 3, "removal", "applied", "backend")
    assert record.origin == "hook"
    path.write_text(good + "\n" + good.replace('"hook"', '"someone"') + "\n")
    with pytest.raises(EditsLogError, match=r"line 2.*origin"):
        read_edits_log(path)


def test_replay_plan_reruns_what_reached_a_frame_and_repeats_earlier_refusals() -> None:
    applied = EditRecord(Prompt(1, None, ((5.0, 5.0),), (1,), origin="monitor"), 7, "prompt", "applied", "backend")
    backend = EditRecord(Prompt(2, 9, ((1.0, 1.0),), (1,)), 9, "prompt", "rejected", "backend", "nothing there")
    quota = EditRecord(Prompt(3, None, ((2.0, 2.0),), (1,)), 9, "prompt", "refused_by_quota", "submit",
                       "too fast", "max_edits_per_s")
    plan = replay_plan([applied, quota, backend])
    assert [(e.particle, e.frame, e.origin) for e in plan.edits] == [(1, 7, "monitor"), (2, 9, "api")]
    assert plan.refusals == [quota]


def test_refusals_between_two_frames_are_logged_up_to_a_bound() -> None:
    quotas = ServiceQuotas(ServiceConfig.from_mapping({"quotas": {"max_edits_per_s": 2.0}}).quotas)
    inbox = EditInbox([], quotas)
    inbox.submit(Prompt(1, None, ((5.0, 5.0),), (1,)), (32, 32), set())
    with pytest.raises(PromptError):
        inbox.submit(Prompt(2, None, ((50.0, 5.0),), (1,)), (32, 32), set())
    for _ in range(MAX_REFUSALS_KEPT + 5):
        with pytest.raises(QuotaExceeded):
            inbox.submit(Prompt(3, None, ((5.0, 5.0),), (1,)), (32, 32), set())
    edits, refused = inbox.due(0, (32, 32), list)
    assert [e.particle for e in edits] == [1]
    assert len(refused) == MAX_REFUSALS_KEPT and inbox.unreported == 6  # the oldest go first
    assert {(r.checked, r.quota, r.announce) for r in refused} == {("submit", "max_edits_per_s", False)}
    assert inbox.due(1, (32, 32), list) == ([], [])


def test_a_hooks_edits_are_logged_as_the_hooks(tmp_path: Path) -> None:
    """Through the microscope adapter a hook commands (the same path as `HookRunner`), on a real service."""
    frames, _ = disk_video(n_frames=6, velocity=VELOCITY)
    cfg = ServiceConfig.from_mapping({"segmenter": {"backend": "threshold"}, "publisher": {"enabled": False},
                                      "control": {"enabled": False}, "recorder": {"out_dir": str(tmp_path)},
                                      "pipeline": {"backpressure": "every-frame"}})
    built = build_service(cfg, source=ArraySource(frames))
    microscope = DryRunMicroscope(built.service)
    microscope.add_prompt(Prompt(1, 2, (_disk(1, 2),), (1,)))
    microscope.remove_prompt(1)  # the next frame: the first
    built.service.run()
    assert built.run_dir is not None
    lines = _log_lines(built.run_dir)
    assert [(e["frame"], e["origin"], e["kind"], e["outcome"]) for e in lines] == [
        (0, "hook", "removal", "applied"), (2, "hook", "prompt", "applied")]


def test_a_replay_processes_the_frames_the_run_had_results_for(tmp_path: Path) -> None:
    """run.json's series frame ranges bound the replay (a live run may start and stop mid-recording)."""
    recording = _recording(tmp_path)
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"prompts": [{"frame": 0, "particle": 1, "points": [list(_disk(1, 0))]}]}))
    run = run_track(recording, prompts, tmp_path / "offline", backend="threshold", progress=False)
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["provenance"]["inputs"]["source.path"] == str(recording)
    manifest["series_list"] = [{"frames": [3, 10]}, {"frames": [11, 12]}]
    (run / "run.json").write_text(json.dumps(manifest))
    replayed = run_replay(recording, run, tmp_path / "replayed", progress=False)
    table = pd.read_csv(replayed / "trajectories.csv")
    assert list(table.frame) == list(range(3, 13))  # the prompt for frame 0 lands on the first frame seen
    assert [(e["frame"], e["origin"]) for e in _log_lines(replayed)] == [(3, "file")]
