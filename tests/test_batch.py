"""Batch re-analysis on Dask (issue 22): a real LocalCluster of process workers, real files, real kills."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from sam4em_live.batch.inputs import BatchInputError, expand_inputs
from sam4em_live.batch.task import read_attempts
from sam4em_live.io.run_folder import RunFolder
from sam4em_live.io.tiff_io import write_tiff_stack
from tests.conftest import disk_video

distributed = pytest.importorskip("distributed")

PROMPTS = {"prompts": [{"frame": 0, "particle": 1, "points": [[30.0, 40.0]]},
                       {"frame": 0, "particle": 2, "points": [[70.0, 60.0]]}]}


def _recording(folder: Path, name: str, seed: int, n_frames: int = 24) -> Path:
    frames, _ = disk_video(n_frames=n_frames, seed=seed)
    path = folder / f"{name}.tif"
    write_tiff_stack(path, frames, pixel_size_nm=2.0, fps=50.0)
    (folder / f"{name}.prompts.json").write_text(json.dumps(PROMPTS))
    return path


@pytest.fixture(scope="module")
def client():
    """Two process workers, as `run_batch` makes them (children allowed; a lost worker forgiven twice; pinned)."""
    from sam4em_live.batch.runner import start_local_cluster

    cluster, c = start_local_cluster(2, retries=2)
    yield c
    c.close()
    cluster.close()


def test_inputs_from_globs_folders_manifests_and_run_folders(tmp_path: Path) -> None:
    archive = tmp_path / "archive"
    archive.mkdir()
    a = _recording(archive, "a", 0, n_frames=3)
    _recording(archive, "b", 1, n_frames=3)
    (archive / "notes").mkdir()  # a sub-folder of other things is no input
    (archive / "notes" / "readme.txt").write_text("x")
    (archive / "old-run").mkdir()  # an earlier run folder inside the archive is output, not input
    (archive / "old-run" / "run.json").write_text(json.dumps({"config": {"source": {"path": str(a)}}}))
    assert [r.name for r in expand_inputs([archive])] == ["a", "b"]
    assert next(r.name for r in expand_inputs([str(archive / "*.tif")])) == "a"
    found = expand_inputs([a])[0]
    assert found.prompts == (archive / "a.prompts.json").absolute() and found.prompts_origin.startswith("prompts:")
    manifest = tmp_path / "m.csv"
    manifest.write_text("path,prompts,fps,name\narchive/a.tif,archive/b.prompts.json,12.5,first\n")
    row = expand_inputs([manifest])[0]
    assert (row.name, row.fps, row.prompts) == ("first", 12.5, archive / "b.prompts.json")
    toml = tmp_path / "m.toml"
    toml.write_text('[[recordings]]\npath = "archive/a.tif"\n[[recordings]]\npath = "archive/a.tif"\n')
    assert [r.name for r in expand_inputs([toml])] == ["a", "archive_a"]  # duplicates named apart
    bare = tmp_path / "bare"
    bare.mkdir()
    write_tiff_stack(bare / "c.tif", disk_video(n_frames=3)[0])
    assert expand_inputs([bare])[0].prompts is None and expand_inputs([bare], discover=True)[0].discover
    runs = tmp_path / "runs" / "c"
    runs.mkdir(parents=True)
    (runs / "run.json").write_text(json.dumps({"config": {"source": {"path": str(bare / "c.tif")}}}))
    assert expand_inputs([bare], replay_from=tmp_path / "runs")[0].replay == runs.absolute()
    assert expand_inputs([runs])[0].path == bare / "c.tif"  # a run folder as input: its recording, replayed
    sim = tmp_path / "sims" / "clip7"  # `simulate`'s layout: one recording, its truth beside it
    sim.mkdir(parents=True)
    for name in ("video.tif", "gt_masks.tif"):
        write_tiff_stack(sim / name, disk_video(n_frames=3)[0])
    (sim / "meta.json").write_text("{}")
    (sim / "prompts.json").write_text(json.dumps(PROMPTS))
    [clip] = expand_inputs([tmp_path / "sims"])
    assert (clip.name, clip.path.name, clip.prompts) == ("clip7", "video.tif", (sim / "prompts.json").absolute())
    with pytest.raises(BatchInputError, match="matches nothing"):
        expand_inputs([str(tmp_path / "*.nope")])
    (tmp_path / "bad.json").write_text('[{"path": "a.tif", "colour": 1}]')
    with pytest.raises(BatchInputError, match="colour"):
        expand_inputs([tmp_path / "bad.json"])


def _masks_bytes(run: Path) -> bytes:
    """masks.tif's bytes, its run's random series id (in the ImageJ description) made a placeholder."""
    series_id = json.loads((run / "run.json").read_text())["series"]["series_id"].encode()
    return (run / "masks.tif").read_bytes().replace(series_id, b"#" * len(series_id))


def test_batch_matches_track_isolates_a_bad_file_and_resumes(tmp_path: Path, client) -> None:
    import sam4em_live as s4

    archive = tmp_path / "archive"
    archive.mkdir()
    good = [_recording(archive, f"clip{i}", seed=i) for i in range(3)]
    (archive / "corrupt.tif").write_bytes(b"this is no TIFF")
    (archive / "corrupt.prompts.json").write_text(json.dumps(PROMPTS))
    out = tmp_path / "batch"
    report = s4.batch([archive], out=out, client=client, progress=False, retries=1)
    assert sorted(o.name for o in report.analysed) == ["clip0", "clip1", "clip2"]
    assert [(f.name, f.attempts) for f in report.failed] == [("corrupt", 2)]  # retried once, then reported
    assert "not a readable TIFF" in report.failed[0].reason
    assert any("FAILED corrupt" in line for line in report.lines())

    # identical to `track` on the same input: the trajectories, and masks.tif byte for byte but the run's own
    # series id (the batch's is written by the recorder's thread, track's by its child process)
    for path in good:
        with s4.track(path, path.with_name(path.stem + ".prompts.json"), progress=False) as run:
            batch_folder = RunFolder.open(out / "runs" / path.stem)
            pd.testing.assert_frame_equal(batch_folder.trajectories().table.reset_index(drop=True),
                                          run.trajectories.reset_index(drop=True), check_like=True)
            assert _masks_bytes(batch_folder.path) == _masks_bytes(run.folder)
            assert batch_folder.manifest["config"]["recorder"]["mask_writer"] == "thread"

    # the Parquet dataset: partitioned by recording, with calibration and provenance
    data = pd.read_parquet(out / "trajectories")
    assert sorted(data["recording"].astype(str).unique()) == ["clip0", "clip1", "clip2"]
    assert (data["pixel_size_nm"] == 2.0).all() and (data["fps"] == 50.0).all()
    assert {"code_version", "config_digest", "backend", "source_path", "prompts_origin"} <= set(data.columns)
    ensemble = pd.read_csv(out / "ensemble.csv")
    assert list(ensemble["recording"]) == ["clip0", "clip1", "clip2"] and ensemble["particles"].eq(2).all()
    assert json.loads((out / "batch.json").read_text())["failed"][0]["name"] == "corrupt"

    # resume: nothing finished is recomputed; the bad file is tried again (it may have been fixed)
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").rglob("run.json")}
    again = s4.batch([archive], out=out, client=client, progress=False, retries=0)
    assert sorted(o.name for o in again.skipped) == ["clip0", "clip1", "clip2"] and not again.analysed
    assert [f.name for f in again.failed] == ["corrupt"]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    # a changed input (new prompts) is recomputed, alone
    (archive / "clip1.prompts.json").write_text(json.dumps({"prompts": PROMPTS["prompts"][:1]}))
    changed = s4.batch([archive], out=out, client=client, progress=False, retries=0)
    assert [o.name for o in changed.analysed] == ["clip1"] and len(changed.skipped) == 2
    assert pd.read_parquet(out / "trajectories" / "recording=clip1")["particle"].nunique() == 1


def _kill_first_attempt(out: Path, name: str, killed: list[int], stop: threading.Event) -> None:
    """SIGKILL the worker that starts ``name``, mid-task (the attempts log names its process)."""
    log = out / "state" / f"{name}.attempts.jsonl"
    while not stop.is_set():
        if log.is_file():
            for line in log.read_text().splitlines():
                entry = json.loads(line)
                if entry["event"] == "start" and entry["pid"] != os.getpid():
                    os.kill(entry["pid"], signal.SIGKILL)
                    killed.append(entry["pid"])
                    return
        time.sleep(0.005)


def test_a_killed_workers_recording_is_rerun(tmp_path: Path, client) -> None:
    from sam4em_live.batch import run_batch

    archive = tmp_path / "archive"
    archive.mkdir()
    _recording(archive, "early", seed=2, n_frames=8)  # done first: its worker then takes the victim
    _recording(archive, "other", seed=3)
    _recording(archive, "victim", seed=4, n_frames=60)
    out = tmp_path / "batch"
    killed: list[int] = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_first_attempt, args=(out, "victim", killed, stop), daemon=True)
    killer.start()
    try:
        report = run_batch([archive], out, client=client, progress=False, retries=2)
    finally:
        stop.set()
        killer.join(5)
    assert killed, "the victim's worker was never seen starting"
    assert sorted(o.name for o in report.analysed) == ["early", "other", "victim"] and not report.failed
    assert len(report.retried["victim"]) == 1  # one attempt lost, the second finished
    assert "worker lost" in report.retried["victim"][0] and str(killed[0]) in report.retried["victim"][0]
    victim = next(o for o in report.analysed if o.name == "victim")
    assert victim.attempts == 2 and RunFolder.open(out / "runs" / "victim").status == "complete"
    assert victim.frames == 60
    # the recordings finished before the kill stay finished: not run again (Dask would recompute a result held
    # on the dead worker), and a resume finds every one complete
    assert [read_attempts(out, name)[0] for name in ("early", "other")] == [1, 1]
    again = run_batch([archive], out, client=client, progress=False, retries=0)
    assert not again.analysed and len(again.skipped) == 3


def test_cli_batch_on_a_running_scheduler(tmp_path: Path, client) -> None:
    from typer.testing import CliRunner

    from sam4em_live.cli import app

    archive = tmp_path / "archive"
    archive.mkdir()
    _recording(archive, "one", seed=5)
    (archive / "lonely.tif").write_bytes(disk_video(n_frames=3)[0].tobytes())  # no prompts beside it
    result = CliRunner().invoke(app, ["batch", str(archive), "--out", str(tmp_path / "b"), "--scheduler",
                                      client.scheduler.address, "--no-progress"])
    assert result.exit_code == 1, result.output
    assert "1 analysed" in result.output and "FAILED lonely" in result.output and "no prompts" in result.output


def test_two_workers_are_two_single_threaded_processes_with_pinned_thread_pools(tmp_path: Path, client) -> None:
    """Parallel for real: separate processes (no shared interpreter lock), one Dask thread each, BLAS/OpenMP/
    numexpr pools of one thread, and two recordings submitted together run at the same time, one per process."""
    from sam4em_live.batch import run_batch
    from sam4em_live.batch.runner import WORKER_THREAD_PINS

    pids = client.run(os.getpid)
    assert len(set(pids.values())) == 2 and os.getpid() not in pids.values()
    assert set(client.nthreads().values()) == {1}
    pins = client.run(lambda names: {k: os.environ.get(k) for k in names}, list(WORKER_THREAD_PINS))
    assert all(env == dict.fromkeys(WORKER_THREAD_PINS, "1") for env in pins.values()), pins

    archive = tmp_path / "archive"
    archive.mkdir()
    for i in range(2):
        _recording(archive, f"rec{i}", seed=i, n_frames=60)
    out = tmp_path / "batch"
    report = run_batch([archive], out, client=client, progress=False)
    assert len(report.analysed) == 2 and not report.failed
    spans = []
    for name in ("rec0", "rec1"):
        entries = [json.loads(line) for line in (out / "state" / f"{name}.attempts.jsonl").read_text().splitlines()]
        spans.append((entries[0]["pid"], entries[0]["time"], entries[-1]["time"]))
    (pid0, start0, end0), (pid1, start1, end1) = spans
    assert pid0 != pid1 and {pid0, pid1} == set(pids.values())
    assert min(end0, end1) > max(start0, start1), f"the two recordings did not overlap in time: {spans}"


def test_its_own_local_cluster_writes_masks_and_reports_progress(tmp_path: Path) -> None:
    """No client given: `run_batch` starts (and stops) a LocalCluster; its worker writes masks.tif itself."""
    from sam4em_live.batch import run_batch

    archive = tmp_path / "archive"
    archive.mkdir()
    _recording(archive, "solo", seed=6, n_frames=8)
    seen: list[tuple[int, int]] = []
    report = run_batch([archive], tmp_path / "b", workers=1, progress=lambda done, total: seen.append((done, total)))
    assert [o.name for o in report.analysed] == ["solo"] and report.workers == 1 and seen == [(1, 1)]
    assert report.analysed[0].cpu_seconds > 0
    folder = RunFolder.open(tmp_path / "b" / "runs" / "solo")
    assert folder.mask_pages().pages == 8  # by the recorder's own thread: no mask-writer child a recording
    assert folder.manifest["config"]["recorder"]["mask_writer"] == "thread"


def test_a_recording_without_prompts_is_discovered_when_asked(tmp_path: Path) -> None:
    """--discover: the task (run here in-process) tracks what `[discovery] mode = "auto"` finds, from no prompt."""
    from sam4em_live.batch.task import BatchSettings, analyse_recording

    archive = tmp_path / "archive"
    archive.mkdir()
    write_tiff_stack(archive / "bare.tif", disk_video(n_frames=24)[0], pixel_size_nm=2.0, fps=50.0)
    [recording] = expand_inputs([archive], discover=True)
    outcome = analyse_recording(recording, BatchSettings(), tmp_path / "out", "fingerprint", {})
    assert outcome.particles >= 1 and outcome.rows > 0
    table = pd.read_parquet(tmp_path / "out" / "trajectories" / "recording=bare")
    assert set(table["prompts_origin"]) == {"discovery"}
