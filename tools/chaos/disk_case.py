"""Case ``disk``: the run folder (and the every-frame spill) on a real, small tmpfs that fills up.

Three trials, each with its own tmpfs (``mount -t tmpfs -o size=…``, which needs root):

- ``stays_full``: the service records for a while, a ballast file then takes every free byte, streaming goes on,
  and the service is stopped (SIGTERM) while the disk is still full;
- ``full_then_freed``: the same, but the ballast is deleted before streaming goes on and the stop;
- ``spill_full``: ``every-frame`` backpressure with its spill folder on a full tmpfs and a sender faster than
  the worker: frames that cannot spill must become counted drops, never a crash;
- ``read_only_fs`` and ``out_dir_is_a_file``: a run folder that cannot be created must make ``serve`` refuse
  to start (non-zero exit, a clear message) instead of streaming without a recording.

Then every file of the run folder must parse and agree with ``run.json`` (`tools.chaos.runcheck`). Where tmpfs
cannot be mounted (not root, no CAP_SYS_ADMIN) a trial is reported as skipped with the mount's error: a
file-size limit or a pre-filled folder is not the same failure, so it is not pretended.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from tools.chaos.harness import (
    Control,
    FrameFeed,
    ServeProcess,
    Streamer,
    SyntheticVideo,
    service_config,
)
from tools.chaos.trial import end_trial


def _mount_tmpfs(path: Path, size_mib: int) -> str | None:
    """Mount a tmpfs of ``size_mib`` at ``path``; None when done, else why not."""
    path.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(path)],
                            capture_output=True, text=True, check=False)
    return None if result.returncode == 0 else (result.stderr.strip() or f"mount exit {result.returncode}")


def _umount(path: Path) -> None:
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def _fill(ballast: Path) -> int:
    """Write ``ballast`` until the file system refuses (ENOSPC); returns the bytes written."""
    written = 0
    chunk = b"\0" * (1 << 16)
    with open(ballast, "wb", buffering=0) as fh:
        while True:
            try:
                written += fh.write(chunk)
            except OSError:
                break
    # The tail that still fits: smaller writes until none does.
    with contextlib.suppress(OSError), open(ballast, "ab", buffering=0) as fh:
        for size in (4096, 512, 1):
            while True:
                try:
                    written += fh.write(b"\0" * size)
                except OSError:
                    break
    return written


def _trial(work: Path, name: str, size_mib: int, free_again: bool, spill: bool) -> dict[str, Any]:
    disk = work / f"tmpfs-{name}"
    why_not = _mount_tmpfs(disk, size_mib)
    if why_not is not None:
        return {"name": name, "skipped": f"tmpfs mount refused: {why_not}"}
    try:
        return _run_trial(work, disk, name, free_again, spill)
    finally:
        _umount(disk)


def _run_trial(work: Path, disk: Path, name: str, free_again: bool, spill: bool) -> dict[str, Any]:
    video = SyntheticVideo.make(256)
    feed = FrameFeed(hwm=8)
    out_dir = (work / f"runs-{name}") if spill else (disk / "runs")
    pipeline: dict[str, Any] = {"backpressure": "every-frame"}
    if spill:
        pipeline.update(spill_dir=str(disk / "spill"), queue_frames=2)
    config = service_config(work, feed.endpoint, out_dir, pipeline=pipeline, publisher={"enabled": False})
    serve = ServeProcess.start(config, video.prompts_file(work / "prompts.json"), work / f"serve-{name}.log")
    control = Control(serve.control_endpoint)
    # The spill trial sends faster than the threshold worker segments 256² frames, so the queue spills.
    streamer = Streamer(feed, video, 2000.0 if spill else 200.0, series_id=f"chaos-{name}")
    time.sleep(2.0)
    ballast_bytes = _fill(disk / "ballast")
    time.sleep(3.0)
    if free_again:
        os.unlink(disk / "ballast")
        time.sleep(3.0)
    end = end_trial(serve, control, feed, streamer, out_dir)
    sent, alive_before_stop, status, stopped, folders = end.sent, end.alive, end.status, end.stopped, end.folders
    failures = []
    if not alive_before_stop:
        failures.append(f"service died while the disk was full (exit {serve.process.returncode}): "
                        f"{serve.log_tail(400)}")
    if stopped["hung_on_stop"]:
        failures.append("service did not stop on SIGTERM")
    if not folders and not spill:
        failures.append("no run folder")
    received = status.get("frames_received", 0)
    lost = received - status.get("frames_processed", 0) - status.get("frames_dropped", 0)
    if alive_before_stop and lost > 0:
        failures.append(f"{lost} received frames neither processed nor counted as dropped")
    manifest_counts = _manifest_counts(folders)
    notes = []
    if manifest_counts.get("frames_recorded") is not None and status:
        unrecorded = status.get("frames_processed", 0) - manifest_counts["frames_recorded"]
        counted = (manifest_counts.get("results_lost") or 0) + (manifest_counts.get("results_after_stop") or 0)
        if unrecorded != counted:
            notes.append(f"{unrecorded} processed frames not recorded; run.json counts {counted} results or notes "
                         "lost (results_lost + results_after_stop): the two do not match one to one")
    return {
        "name": name, "ballast_bytes": ballast_bytes, "freed_again": free_again,
        "frames_sent": sent, "sender_stalled": streamer.stalled,
        "frames_received": received, "frames_processed": status.get("frames_processed"),
        "frames_dropped": status.get("frames_dropped"), "frames_spilled": status.get("frames_spilled"),
        "sinks": status.get("sinks"), "recorded": manifest_counts, "stop": stopped,
        "failures": failures, "notes": notes, "run_folders": folders,
        "serve_log_tail": serve.log_tail(1500),
    }


def _unwritable_trial(work: Path, name: str, out_dir: Path) -> dict[str, Any]:
    """Serve with a run folder it cannot create: it must refuse to start (non-zero exit, a clear message)."""
    feed = FrameFeed()
    config = service_config(work, feed.endpoint, out_dir, publisher={"enabled": False})
    failures = []
    try:
        serve = ServeProcess.start(config, None, work / f"serve-{name}.log", timeout_s=30.0)
    except RuntimeError as exc:
        message = str(exc)
        exit_code = int(message.split("exit ", 1)[1].split(")", 1)[0]) if "exit " in message else None
        if exit_code in (0, None):
            failures.append(f"serve ended with exit {exit_code} instead of refusing")
        return {"name": name, "refused": True, "exit_code": exit_code, "message": message[-600:],
                "failures": failures}
    feed.close()
    stopped = serve.stop()
    failures.append("serve started streaming with a run folder it cannot write")
    return {"name": name, "refused": False, "exit_code": stopped["exit_code"], "failures": failures,
            "serve_log_tail": serve.log_tail(600)}


def _readonly_trial(work: Path) -> dict[str, Any]:
    disk = work / "tmpfs-readonly"
    disk.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,ro", "tmpfs", str(disk)],
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return {"name": "read_only_fs", "skipped": f"tmpfs mount refused: {result.stderr.strip()}"}
    try:
        return _unwritable_trial(work, "read_only_fs", disk / "runs")
    finally:
        _umount(disk)


def _manifest_counts(folders: list[dict[str, Any]]) -> dict[str, Any]:
    import json

    for folder in folders:
        with contextlib.suppress(OSError, ValueError):
            manifest = json.loads((Path(folder["path"]) / "run.json").read_text(encoding="utf-8"))
            counts = manifest.get("counts") or {}
            return {"status": manifest.get("status"), "reason": manifest.get("reason"),
                    **{k: counts.get(k) for k in ("frames_recorded", "particle_rows", "mask_pages", "write_errors",
                                                  "results_lost", "results_after_stop")}}
    return {}


def _headline(trial: dict[str, Any]) -> str:
    if "skipped" in trial:
        return str(trial["skipped"])
    if "refused" in trial:
        return (f"refused to start, exit {trial['exit_code']}" if trial["refused"]
                else f"NOT refused (exit {trial['exit_code']})")
    return (f"exit {trial['stop']['exit_code']}; sent {trial['frames_sent']}, received {trial['frames_received']}, "
            f"processed {trial['frames_processed']}, dropped {trial['frames_dropped']}; run.json {trial['recorded']}")


def run(work: Path, seed: int = 1) -> dict[str, Any]:
    del seed  # the trials are deterministic apart from timing
    trials = [
        _trial(work, "stays_full", 24, free_again=False, spill=False),
        _trial(work, "full_then_freed", 24, free_again=True, spill=False),
        _trial(work, "spill_full", 4, free_again=False, spill=True),
        _readonly_trial(work),
    ]
    (work / "a-file").write_text("not a folder\n", encoding="utf-8")
    trials.append(_unwritable_trial(work, "out_dir_is_a_file", work / "a-file"))
    folders = [f for t in trials for f in t.get("run_folders", [])]
    skipped = [t["skipped"] for t in trials if "skipped" in t]
    return {
        "case": "disk",
        "headline": {t["name"]: _headline(t) for t in trials},
        "tmpfs": "not available: " + "; ".join(skipped) if skipped else "mounted (root)",
        "trials": [{k: v for k, v in t.items() if k != "run_folders"} for t in trials],
        "run_folders": folders,
        "crashed": any(not t.get("skipped") and t["failures"] and "died" in t["failures"][0] for t in trials),
    }
