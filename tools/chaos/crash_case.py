"""Cases ``kill`` (SIGKILL of the service at random points) and ``writer`` (the mask-writer child killed).

``kill``: each trial starts ``serve`` recording (masks on, every-frame), streams 256² frames at 200 fps and
sends SIGKILL after a random time (0.3–4 s into the stream, so some trials die while the first files are
being created); every other trial sends SIGTERM first and SIGKILL 0–300 ms later, while the clean stop is
closing the files. Nothing in the process can close the run, so ``run.json`` may stay ``running`` (its
``writer`` field lets a reader see the process is gone); what must hold is that every file parses and holds
at least what ``run.json`` counts (`tools.chaos.runcheck` checks an unclosed run's counts as lower bounds).

``writer``: the mask-writer child (``sinks/mask_process.py``) is killed mid-run while streaming goes on; the
service must go on, stop cleanly on SIGTERM, and close the run with ``run.json`` saying exactly how many mask
pages ``masks.tif`` holds (status ``incomplete`` with a reason, not ``complete``).
"""

from __future__ import annotations

import os
import random
import signal
import time
from typing import TYPE_CHECKING, Any

from tools.chaos.harness import (
    Control,
    FrameFeed,
    ServeProcess,
    Streamer,
    SyntheticVideo,
    service_config,
)
from tools.chaos.runcheck import check_run_folder
from tools.chaos.trial import end_trial

if TYPE_CHECKING:
    from pathlib import Path


def _start(work: Path, name: str, fps: float = 200.0) -> tuple[ServeProcess, FrameFeed, Streamer, Path]:
    video = SyntheticVideo.make(256)
    feed = FrameFeed(hwm=8)
    out_dir = work / f"runs-{name}"
    config = service_config(work, feed.endpoint, out_dir, publisher={"enabled": False})
    serve = ServeProcess.start(config, video.prompts_file(work / "prompts.json"), work / f"serve-{name}.log")
    return serve, feed, Streamer(feed, video, fps, series_id=f"chaos-{name}"), out_dir


def _kill_trial(work: Path, k: int, after_s: float, during_stop_s: float | None) -> dict[str, Any]:
    name = f"kill-{k}"
    serve, feed, streamer, out_dir = _start(work, name)
    time.sleep(after_s)
    alive = serve.alive()
    if during_stop_s is not None:  # SIGKILL while the clean stop closes the files
        serve.process.send_signal(signal.SIGTERM)
        time.sleep(during_stop_s)
    serve.kill()
    sent = streamer.stop()
    feed.close()
    time.sleep(1.0)  # the mask-writer child sees end-of-file and finishes masks.tif
    folders = [check_run_folder(p) for p in sorted(out_dir.glob("*")) if p.is_dir()]
    failures = [] if alive else [f"service had died before the kill: {serve.log_tail(300)}"]
    if not folders:
        failures.append("no run folder")
    return {"name": name, "killed_after_s": round(after_s, 2),
            "killed_during_stop_after_s": None if during_stop_s is None else round(during_stop_s, 3),
            "frames_sent": sent, "failures": failures,
            "statuses": [f["status"] for f in folders], "files": [f["files"] for f in folders],
            "run_folders": folders}


def run_kill(work: Path, trials: int = 8, seed: int = 1) -> dict[str, Any]:
    rng = random.Random(seed)
    # Every other trial kills during the clean stop (SIGTERM, then SIGKILL 0-300 ms later): the closing writes.
    results = [_kill_trial(work, k, rng.uniform(0.3, 4.0), rng.uniform(0.0, 0.3) if k % 2 else None)
               for k in range(trials)]
    folders = [f for r in results for f in r["run_folders"]]
    unreadable = sum(1 for f in folders for p in f["problems"] if p.startswith("cannot"))
    disagreements = sum(1 for f in folders for p in f["problems"] if not p.startswith("cannot"))
    return {
        "case": "kill",
        "headline": {"trials": trials, "unreadable files": unreadable, "disagreements with run.json": disagreements,
                     "run.json status after SIGKILL": sorted({str(f["status"]) for f in folders}),
                     "RunFolder status": sorted({str((f.get("package_check") or {}).get("status"))
                                                 for f in folders}),
                     "kill times (s; +t: SIGKILL t s after SIGTERM)": [
                         f"{r['killed_after_s']}" + (f"+{r['killed_during_stop_after_s']}"
                                                     if r["killed_during_stop_after_s"] is not None else "")
                         for r in results]},
        "trials": [{k: v for k, v in r.items() if k != "run_folders"} for r in results],
        "run_folders": folders,
    }


def _mask_writer(serve: ServeProcess) -> int | None:
    for pid, cmd in serve.children():
        if "spawn_main" in cmd and "resource_tracker" not in cmd:
            return pid
    return None


def run_writer(work: Path, seed: int = 1) -> dict[str, Any]:
    del seed
    serve, feed, streamer, out_dir = _start(work, "writer")
    control = Control(serve.control_endpoint)
    time.sleep(2.0)
    child = _mask_writer(serve)
    if child is not None:
        os.kill(child, signal.SIGKILL)
    time.sleep(3.0)
    end = end_trial(serve, control, feed, streamer, out_dir)
    sent, alive, status, stopped, folders = end.sent, end.alive, end.status, end.stopped, end.folders
    failures = []
    if child is None:
        failures.append(f"no mask-writer child found among {serve.children()}")
    if not alive:
        failures.append(f"service died after its mask writer was killed: {serve.log_tail(400)}")
    for folder in folders:
        if folder["status"] == "complete":
            failures.append("run.json says complete although the mask writer died mid-run")
    return {
        "case": "writer",
        "headline": {"mask writer killed": child is not None, "exit code": stopped["exit_code"],
                     "frames sent / processed": f"{sent} / {status.get('frames_processed')}",
                     "run.json": [(f["status"], f["reason"]) for f in folders],
                     "files": [f["files"] for f in folders]},
        "crashed": not alive, "hung_on_stop": stopped["hung_on_stop"], "stop": stopped,
        "trials": [{"name": "writer", "failures": failures}],
        "run_folders": folders,
        "serve_log_tail": serve.log_tail(1500),
    }
