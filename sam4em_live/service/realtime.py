"""Real-time measures for the service process: a CPU for the worker, frame buffers kept resident.

**A CPU of its own (Linux).** On a small machine the worker thread competes for cores with the ingest and
recorder threads, ZeroMQ's I/O threads, the mask-writer process and, in a
bench, the frame sender. Pinning the worker to one CPU and moving everything
else of the service off it keeps the worker's caches warm and stops it being
preempted by its own helpers: a standard real-time arrangement.

**Resident frame buffers (glibc).** Every received frame is a fresh multi-megabyte
buffer. By default glibc serves such sizes with ``mmap`` and returns them with
``munmap``, so each frame costs hundreds of page faults (the kernel zeroing
pages) and a TLB shoot-down that interrupts every thread of the process, the
worker included. Raising the mmap and trim thresholds makes glibc recycle the
buffers from its heap instead (measured in docs/benchmarks.md).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import multiprocessing
import os
import threading

log = logging.getLogger(__name__)


def isolate_current_thread(cpu: int) -> set[int] | None:
    """Pin the calling thread to ``cpu`` and every other thread and child process of ours to the other CPUs.

    Threads and processes started later inherit their creator's CPUs, so they
    stay off ``cpu`` too. Returns the CPUs allowed before (for `release_all`),
    or None (changing nothing) where this is not possible: no
    ``sched_setaffinity`` (not Linux), ``cpu`` not available, or no other CPU
    left for the rest.
    """
    if not hasattr(os, "sched_setaffinity"):
        log.warning("pipeline.worker_cpu: CPU affinity is not supported on this platform; ignored")
        return None
    allowed = os.sched_getaffinity(0)
    others = allowed - {cpu}
    if cpu not in allowed or not others:
        log.warning("pipeline.worker_cpu=%d: not possible with CPUs %s; ignored", cpu, sorted(allowed))
        return None
    me = threading.get_native_id()
    for entry in os.listdir("/proc/self/task"):
        if int(entry) != me:
            _set(int(entry), others)
    for child in multiprocessing.active_children():
        if child.pid is not None:
            _set(child.pid, others)
    os.sched_setaffinity(0, {cpu})
    log.info("worker thread pinned to CPU %d; the rest of the service on CPUs %s", cpu, sorted(others))
    return allowed


def release_all(cpus: set[int]) -> None:
    """Let every thread and child process of ours run on ``cpus`` again (after a run)."""
    for entry in os.listdir("/proc/self/task"):
        _set(int(entry), cpus)
    for child in multiprocessing.active_children():
        if child.pid is not None:
            _set(child.pid, cpus)


def _set(pid: int, cpus: set[int]) -> None:
    with contextlib.suppress(OSError):  # a thread that just ended
        os.sched_setaffinity(pid, cpus)


#: glibc mallopt parameters and the values used: buffers up to 256 MiB from the heap, kept up to 1 GiB.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3
_MMAP_THRESHOLD_BYTES = 256 << 20
_TRIM_THRESHOLD_BYTES = 1 << 30


def recycle_large_buffers() -> bool:
    """Make glibc keep large freed buffers for reuse instead of unmapping them (process-wide).

    Returns False where the C library is not glibc (nothing changed).
    """
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        mallopt = None
    if mallopt is None:
        log.info("pipeline.recycle_frame_buffers: not glibc; left to the allocator")
        return False
    ok = mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_BYTES) == 1 and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD_BYTES) == 1
    if not ok:
        log.warning("pipeline.recycle_frame_buffers: mallopt refused the thresholds")
    return ok
