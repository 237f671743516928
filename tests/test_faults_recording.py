"""Crash consistency of the run folder: disk full (staying full, or freed again), SIGKILL, a dying mask
writer, an unwritable folder. Real files, real processes, a real small tmpfs where the machine allows it.

After every fault each file parses (pandas, tifffile, json) and run.json says what the files hold:
``complete`` / ``incomplete`` / ``aborted`` with counts equal to the files and the reason, or (after a
kill) ``running`` with counts the files meet or exceed, which `RunFolder` reports as ``interrupted``.
"""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile

from sam4em_live.frames import Calibration
from sam4em_live.io.label_stack_layout import page_frame
from sam4em_live.io.run_folder import INTERRUPTED, RunFolder
from sam4em_live.io.run_manifest import expand_ranges
from sam4em_live.sinks.recorder import Recorder
from tests.test_recorder import make_result, run_info

CAL = Calibration(pixel_size_nm=2.0, fps=100.0)
CLOSED = ("complete", "incomplete", "aborted")


# ------------------------------------------------------------------ what every fault must leave


def assert_truthful(run_dir: Path) -> dict:
    """Every file parses with the users' libraries and run.json agrees with it; returns run.json."""
    manifest = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
    closed = manifest["status"] in CLOSED
    counts = manifest["counts"]

    def agree(name: str, recorded: int, actual: int) -> None:
        assert recorded == actual if closed else recorded <= actual, (name, recorded, actual, manifest["status"])

    # Whole lines only. A kill can in principle land inside a multi-page write() (the kernel stops
    # between pages for a fatal signal): an unclosed run may end in a cut line, which the reader leaves out.
    raw = (run_dir / "trajectories.csv").read_bytes()
    assert raw.endswith(b"\n") or not closed, "whole lines only"
    table = pd.read_csv(io.BytesIO(whole_lines(raw)))
    assert table[["frame", "particle", "x", "y"]].notna().all().all(), "no row cut or merged"
    assert not table.duplicated(["frame", "particle"]).any(), "no row written twice"
    agree("particle_rows", counts["particle_rows"], len(table))
    for name, key in (("events.jsonl", "events"), ("status.jsonl", "status_snapshots"),
                      ("annotations.jsonl", "annotations")):
        raw = (run_dir / name).read_bytes()
        assert raw == b"" or raw.endswith(b"\n") or not closed, name
        lines = [json.loads(line) for line in whole_lines(raw).decode("utf-8").splitlines()]
        agree(key, counts[key], len(lines))
    if manifest["files"]["masks"] is not None:
        with tifffile.TiffFile(run_dir / "masks.tif") as tif:
            page_frames = [page_frame(page.description) for page in tif.pages]
            for page in tif.pages:
                page.asarray()
        listed = expand_ranges(manifest["mask_frames"])
        agree("mask_pages", counts["mask_pages"], len(page_frames))
        assert (listed == page_frames) if closed else (listed == page_frames[: len(listed)])
    leftovers = [p.name for p in run_dir.iterdir() if not p.name.startswith(".")]
    assert set(leftovers) <= {"run.json", "trajectories.csv", "masks.tif", "events.jsonl", "status.jsonl",
                              "annotations.jsonl", "edits.jsonl", "tracks_napari.csv"}, leftovers
    check = RunFolder.open(run_dir).check()
    assert check.agrees, check.disagreements
    return manifest


def whole_lines(data: bytes) -> bytes:
    return data[: data.rfind(b"\n") + 1]


# ------------------------------------------------------------------ a real small disk


def _mount_tmpfs(path: Path, options: str) -> None:
    path.mkdir(parents=True, exist_ok=True)
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)],
                              capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot mount a tmpfs here ({exc}); RLIMIT_FSIZE tests cover refused writes")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root / CAP_SYS_ADMIN: {done.stderr.strip()}); "
                    "the RLIMIT_FSIZE tests cover refused writes")


@pytest.fixture
def tmpfs(tmp_path):
    """Mount small tmpfs file systems under tmp_path (skips where mounting is not allowed); unmounted after."""
    mounted: list[Path] = []

    def mount(name: str, options: str) -> Path:
        path = tmp_path / name
        _mount_tmpfs(path, options)
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=20)


def free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def fill(path: Path, leave: int = 0) -> Path:
    """Take the space of ``path``'s file system but ``leave`` bytes with a filler file (a new one each call)."""
    filler = path / f"filler-{time.monotonic_ns()}"
    with open(filler, "wb") as fh:
        want = max(free_bytes(path) - leave, 0)
        try:
            while want > 0:
                want -= fh.write(bytes(min(want, 1 << 16)))
                fh.flush()
        except OSError:
            pass  # already full
    return filler


def wait_for(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


# ------------------------------------------------------------------ disk full


@pytest.mark.timeout(120)
@pytest.mark.parametrize("space, masks, mask_writer", [
    ("freed_again", True, "process"), ("staying_full", True, "process"), ("freed_again", False, "process"),
    ("freed_again", True, "thread"), ("staying_full", True, "thread"),  # masks.tif from the writer thread (batch)
])
def test_disk_full_stops_the_recording_cleanly_and_run_json_says_so(tmpfs, space, masks, mask_writer):
    disk = tmpfs("disk", "size=1m")
    recorder = Recorder(disk / "runs", write_masks=masks, mask_writer=mask_writer)
    recorder.open(run_info(calibration=CAL))
    filler = fill(disk, leave=48 << 10)  # a few hundred frames' room, then full
    index = 0

    def stopped() -> bool:
        # The stop is over once run.json says so (written with the room the stop's reserve gives back). Filling
        # the disk as soon as the error is counted raced the stop itself: with the mask-writer child its close
        # takes a while, and the refill took the reserve before run.json was written ('running' stayed).
        if recorder.counters["write_errors"] == 0:
            return False
        try:
            return json.loads((recorder.run_dir / "run.json").read_text())["status"] == "incomplete"
        except (OSError, ValueError, KeyError):
            return False

    while not stopped():
        assert index < 20_000, "the disk never filled"
        for _ in range(20):
            recorder.consume(make_result(index, CAL))
            index += 1
        recorder.on_status({"state": "streaming", "frames_processed": index})
        time.sleep(0.03)
    stopped_at = index
    if space == "freed_again":
        filler.unlink()  # space comes back: nothing may be retried, merged or repeated
    else:
        fill(disk)  # and what the stop gave back is taken again: even the final run.json has no room
    durations = []
    for _ in range(200):  # the service streams on: consume stays cheap, results are counted, not written
        t0 = time.perf_counter()
        recorder.consume(make_result(index, CAL))
        durations.append(time.perf_counter() - t0)
        index += 1
    recorder.on_status({"state": "streaming", "frames_processed": index})
    recorder.close()
    assert np.median(durations) < 1e-3
    run_dir = recorder.run_dir
    manifest = assert_truthful(run_dir)
    assert manifest["status"] == "incomplete" and "No space left on device" in manifest["reason"]
    assert manifest["recording_stopped"]["errno"] == 28
    if not masks:  # then a text file (or run.json) met the full disk: cut back to whole lines
        assert manifest["recording_stopped"]["file"] in ("trajectories.csv", "events.jsonl", "status.jsonl",
                                                         "run.json")
    assert manifest["counts"]["frames_recorded"] <= stopped_at
    if space == "freed_again":  # the final run.json made it: closed, with every result after the stop counted
        assert manifest["closed_utc"] and manifest["counts"]["results_after_stop"] >= index - stopped_at
    else:  # the stop-time run.json stays: what the files hold, and why
        assert manifest["closed_utc"] is None
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    assert events[-1]["kind"] == "recording_stopped" and "No space left" in events[-1]["detail"]["reason"]
    table = pd.read_csv(run_dir / "trajectories.csv")
    frames = sorted(set(table.frame))
    assert frames == list(range(len(frames)))  # a prefix of the run, no holes
    assert not (run_dir / ".run.json.tmp").exists()


@pytest.mark.timeout(120)
def test_track_onto_a_disk_that_fills_streams_on_and_records_truthfully(tmpfs, tmp_path):
    """The real service (`sam4em-live track`) onto a 256 KiB tmpfs: every frame is processed, exit 0."""
    disk = tmpfs("small", "size=256k")
    clip, prompts = write_clip(tmp_path, 600)
    done = subprocess.run(track_command(clip, prompts, disk / "run"), capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr[-2000:]
    manifest = assert_truthful(disk / "run")
    assert manifest["status"] == "incomplete" and "No space left on device" in manifest["reason"]
    # Closed with the room the stop gave back: every frame processed, each one recorded or counted as not.
    assert manifest["closed_utc"] and manifest["last_status"]["frames_processed"] == 600
    assert manifest["counts"]["frames_recorded"] + manifest["counts"]["results_after_stop"] == 600
    # Where the disk filled depends on timing (a mask page, a CSV line, or the closing flush): only what was
    # recorded before the stop counts as recorded, and the stop names its file.
    stopped = manifest["recording_stopped"]
    assert stopped["file"] and stopped["errno"] and manifest["counts"]["frames_recorded"] <= 600
    assert "recording stopped" in done.stderr


# ------------------------------------------------------------------ a file size limit (no root needed)


FSIZE_CHILD = textwrap.dedent("""
    import json, resource, sys, time
    from pathlib import Path
    sys.path.insert(0, {repo!r})
    from tests.test_recorder import make_result, run_info
    from sam4em_live.frames import Calibration
    from sam4em_live.sinks.recorder import Recorder

    resource.setrlimit(resource.RLIMIT_FSIZE, ({limit}, {limit}))  # the mask-writer child inherits it
    cal = Calibration(pixel_size_nm=2.0, fps=100.0)
    recorder = Recorder(Path({root!r}), mask_writer={mask_writer!r})
    recorder.open(run_info(calibration=cal))
    i = 0
    while recorder.counters["write_errors"] == 0 and i < 20000:
        for _ in range(20):
            recorder.consume(make_result(i, cal))
            i += 1
        recorder.on_status({{"state": "streaming", "frames_processed": i}})
        time.sleep(0.03)
    for _ in range(50):
        recorder.consume(make_result(i, cal))
        i += 1
    recorder.close()
    print(json.dumps({{"consumed": i, **recorder.counters}}))
""")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("mask_writer", ["process", "thread"])
def test_a_file_size_limit_stops_the_recording_with_whole_records(tmp_path, mask_writer):
    limit = 96 << 10
    script = FSIZE_CHILD.format(repo=str(Path(__file__).parents[1]), root=str(tmp_path), limit=limit,
                                mask_writer=mask_writer)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stderr[-3000:]
    counters = json.loads(done.stdout.splitlines()[-1])
    manifest = assert_truthful(tmp_path / "run-1")
    assert manifest["status"] == "incomplete" and manifest["recording_stopped"]["file"] in (
        "trajectories.csv", "masks.tif")
    assert "File too large" in manifest["reason"]
    assert manifest["counts"]["frames_recorded"] + manifest["counts"]["results_after_stop"] == counters["consumed"]
    assert max(p.stat().st_size for p in (tmp_path / "run-1").iterdir()) <= limit


# ------------------------------------------------------------------ SIGKILL at random points


def write_clip(tmp_path: Path, n_frames: int) -> tuple[Path, Path]:
    """A TIFF of two dark disks circling (threshold-trackable for ever) and a prompts file for them."""
    shape = (96, 128)
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]]
    rng = np.random.default_rng(0)
    frames = np.empty((n_frames, *shape), np.uint16)
    for t in range(n_frames):
        img = np.full(shape, 100.0)
        for k, (x, y) in enumerate(((30.0, 40.0), (80.0, 50.0))):
            cx, cy = x + 5 * np.cos(2 * np.pi * t / 64 + k), y + 5 * np.sin(2 * np.pi * t / 64 + k)
            img[(cols - cx) ** 2 + (rows - cy) ** 2 <= 49] = 60
        frames[t] = np.clip(img + rng.normal(0, 4, shape), 0, 65535)
    clip = tmp_path / "clip.tif"
    tifffile.imwrite(clip, frames, photometric="minisblack")
    prompts = tmp_path / "prompts.json"
    prompts.write_text(json.dumps({"prompts": [{"frame": 0, "particle": 1, "box": [25, 35, 45, 55]},
                                               {"frame": 0, "particle": 2, "box": [75, 45, 95, 65]}]}))
    return clip, prompts


def track_command(clip: Path, prompts: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "sam4em_live", "track", str(clip), "--prompts", str(prompts), "--out", str(out),
            "--backend", "threshold", "--fps", "100", "--no-progress"]


@pytest.mark.timeout(180)
@pytest.mark.parametrize("victims", ["process_group", "service_only"])
def test_sigkill_of_a_recording_service_at_a_random_point(tmp_path, victims):
    """`sam4em-live track` killed mid-run (with its mask writer, or alone): the reader trusts the files."""
    clip, prompts = write_clip(tmp_path, 1500)
    rng = random.Random(f"sigkill-{victims}")
    for attempt in range(2):
        out = tmp_path / f"run-{attempt}"
        with subprocess.Popen(track_command(clip, prompts, out), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True) as service:
            try:
                wait_for(lambda out=out: (out / "run.json").exists() or service.poll() is not None, 60)
                time.sleep(rng.uniform(0.0, 2.5))
            finally:
                if victims == "process_group":
                    os.killpg(service.pid, signal.SIGKILL)
                else:
                    os.kill(service.pid, signal.SIGKILL)
                service.wait(20)
        if victims == "service_only":  # the mask writer sees end-of-file, finishes its pages and exits
            wait_for(lambda out=out: _no_process_holds(out), 20)
        manifest = assert_truthful(out)
        folder = RunFolder.open(out)
        if manifest["status"] == "running":  # killed before it closed (the usual case)
            assert folder.status == INTERRUPTED and not folder.writer_alive
            assert "killed or crashed" in folder.check().reason
        run = folder.trajectories()
        assert run.table[["frame", "particle"]].notna().all().all()
        if (out / "masks.tif").exists():
            pages = folder.mask_pages()
            assert pages.frames == tuple(range(pages.pages))  # each page's own frame, in order


def _no_process_holds(run_dir: Path) -> bool:
    target = str((run_dir / "masks.tif").resolve())
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            if any(os.readlink(fd) == target for fd in fd_dir.iterdir()):
                return False
        except OSError:
            continue
    return True


# ------------------------------------------------------------------ the mask writer dies


@pytest.mark.timeout(60)
def test_a_mask_writer_killed_mid_run_costs_only_the_masks_after_it(tmp_path):
    recorder = Recorder(tmp_path)
    recorder.open(run_info(calibration=CAL))
    for i in range(60):
        recorder.consume(make_result(i, CAL))
    wait_for(lambda: recorder.counters["mask_pages"] >= 60)  # the child reported them written
    child = recorder._mask_process._process  # the real child, killed as the OOM killer would
    os.kill(child.pid, signal.SIGKILL)
    child.join(10)
    for i in range(60, 120):
        recorder.consume(make_result(i, CAL))
        time.sleep(0.002)
    recorder.close()
    manifest = assert_truthful(recorder.run_dir)
    assert manifest["status"] == "incomplete" and "masks.tif stops after" in manifest["reason"]
    assert manifest["counts"]["frames_recorded"] == 120  # the CSV has every frame
    assert 60 <= manifest["counts"]["mask_pages"] < 120 and expand_ranges(manifest["mask_frames"])[:60] == list(
        range(60))
    events = [json.loads(line) for line in (recorder.run_dir / "events.jsonl").read_text().splitlines()]
    assert [e["detail"]["file"] for e in events if e["kind"] == "recording_stopped"] == ["masks.tif"]


# ------------------------------------------------------------------ an unwritable run folder


def _track(tmp_path: Path, out: Path) -> subprocess.CompletedProcess[str]:
    clip, prompts = write_clip(tmp_path, 5)
    return subprocess.run(track_command(clip, prompts, out), capture_output=True, text=True, timeout=60)


@pytest.mark.timeout(60)
def test_track_refuses_an_out_folder_under_a_file(tmp_path):
    (tmp_path / "afile").write_text("not a folder\n")
    done = _track(tmp_path, tmp_path / "afile" / "run")
    assert done.returncode == 2 and "afile is a file, not a folder" in done.stderr, done.stderr[-2000:]
    assert (tmp_path / "afile").read_text() == "not a folder\n"


@pytest.mark.timeout(60)
def test_track_refuses_a_read_only_file_system(tmpfs, tmp_path):
    readonly = tmpfs("ro", "ro,size=64k")
    done = _track(tmp_path, readonly / "run")
    assert done.returncode == 2 and "Read-only file system" in done.stderr, done.stderr[-2000:]


@pytest.mark.parametrize("out_dir_kind", ["a_file", "under_a_file"])
def test_the_builder_refuses_an_unwritable_out_dir_unless_recording_is_off(tmp_path, out_dir_kind):
    from sam4em_live.config import ConfigError, ServiceConfig
    from sam4em_live.service.builder import build_service
    from sam4em_live.sources.array_source import ArraySource

    (tmp_path / "afile").write_text("x")
    out_dir = tmp_path / "afile" if out_dir_kind == "a_file" else tmp_path / "afile" / "runs"
    frames = np.zeros((2, 16, 16), np.uint16)

    def config(enabled: bool) -> ServiceConfig:
        return ServiceConfig.from_mapping({
            "segmenter": {"backend": "threshold"}, "recorder": {"out_dir": str(out_dir), "enabled": enabled},
            "publisher": {"enabled": False}, "control": {"enabled": False}})

    with pytest.raises(ConfigError, match="is a file, not a folder"):
        build_service(config(True), source=ArraySource(frames))
    built = build_service(config(False), source=ArraySource(frames))  # recording explicitly off: runs
    built.service.run()
    assert built.run_dir is None and built.service.error is None


def test_a_recorder_on_a_read_only_file_system_is_refused_at_construction(tmpfs):
    from sam4em_live.sinks.recorder import RecorderError

    readonly = tmpfs("ro", "ro,size=64k")
    with pytest.raises(RecorderError, match="Read-only file system"):
        Recorder(readonly / "runs")


def test_a_full_disk_is_refused_at_construction(tmpfs):
    from sam4em_live.sinks.recorder import RecorderError

    disk = tmpfs("full", "size=256k")
    (disk / "runs").mkdir()
    filler = fill(disk, leave=64 << 10)  # room for the probe, not for a run
    with pytest.raises(RecorderError, match=r"the disk is full \(\d+ KiB free\)"):
        Recorder(disk / "runs")
    fill(disk)  # not even the probe fits
    with pytest.raises(RecorderError, match="No space left on device"):
        Recorder(disk / "runs")
    filler.unlink()
