"""CPU time of every thread of this process and of its child processes, by name (Linux ``/proc``).

End-to-end benchmarks need to say where a frame's CPU goes outside the backend: the worker thread
(segmentation, measurement, statistics, sinks), ZeroMQ's I/O threads, the recorder's writer thread, the
mask-writer child, the seeding helper. `sample` reads ``/proc/self/task/*/stat`` (user + system
ticks) and names each thread by its Python name where it has one (`threading.Thread.native_id`), else by
its kernel name (``comm``: ``ZMQbg/IO/0``...); child processes are summed as ``child:<comm>``. On a system
without ``/proc`` every sample is empty.
"""

from __future__ import annotations

import os
import re
import threading
from pathlib import Path

_TICKS_PER_S = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
#: Python thread names made unique by a counter (``Thread-3 (run)``): the counter is dropped so that two
#: runs of the same service give the same names.
_COUNTER = re.compile(r"^Thread-\d+ ")


def _ticks(stat_path: Path) -> int | None:
    """utime + stime of one ``stat`` file, or None when the thread or process is gone."""
    try:
        text = stat_path.read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2:].split()  # the name may hold spaces: fields start after its ")"
    return int(fields[11]) + int(fields[12])


def _comm(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return "?"


def _children(task_dir: Path) -> set[int]:
    pids: set[int] = set()
    for task in task_dir.iterdir():
        try:
            pids.update(int(p) for p in (task / "children").read_text().split())
        except OSError:
            continue
    return pids


def sample() -> dict[str, float]:
    """{name: CPU seconds so far} of this process's threads and child processes (threads of one name summed)."""
    task_dir = Path("/proc/self/task")
    if not task_dir.is_dir():
        return {}
    python_names = {t.native_id: _COUNTER.sub("Thread ", t.name) for t in threading.enumerate()}
    cpu: dict[str, float] = {}
    for task in task_dir.iterdir():
        ticks = _ticks(task / "stat")
        if ticks is None:
            continue
        tid = int(task.name)
        name = python_names.get(tid) or _comm(task / "comm")
        cpu[name] = cpu.get(name, 0.0) + ticks / _TICKS_PER_S
    for pid in _children(task_dir):
        ticks = _ticks(Path(f"/proc/{pid}/stat"))
        if ticks is None:
            continue
        name = f"child:{_comm(Path(f'/proc/{pid}/comm'))}"
        cpu[name] = cpu.get(name, 0.0) + ticks / _TICKS_PER_S
    return cpu


def difference(later: dict[str, float], earlier: dict[str, float]) -> dict[str, float]:
    """CPU seconds spent between two samples, by name (threads started in between count from zero)."""
    return {name: seconds - earlier.get(name, 0.0) for name, seconds in later.items()}
