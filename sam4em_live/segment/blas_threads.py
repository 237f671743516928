"""One BLAS thread for the segmentation backends while the service runs (issue 23).

numpy's OpenBLAS starts one thread per core and splits every matrix product, least-squares fit and
eigen-decomposition between them. The embedded backend's are small (template banks, window fits,
a 13-term illumination surface), so the split buys nothing even on an idle machine; on the 2-core
machine, where the service's other threads (ZeroMQ I/O, recorder, the seeding helper) and the frame
sender hold the second core, every such call waits for a helper thread that is not running. That made
the backend cost 2-4x more inside the service than alone (`tools.bench` runs it with
``OPENBLAS_NUM_THREADS=1``): the prompt frame's 146-161 ms against ~70 ms standalone, and ~4x per
frame under load (docs/benchmarks.md, "End to end").

The variable only works before numpy loads, so the limit is set on the loaded library itself (as
threadpoolctl does): the OpenBLAS that numpy (and scipy) bundle, found among the process's mapped
libraries. The setting is process-wide. Where no OpenBLAS is loaded (MKL, Accelerate, another
platform) nothing changes.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable

log = logging.getLogger(__name__)

#: (setter, getter) symbol pairs of the OpenBLAS builds numpy and scipy ship (64-bit and 32-bit ints).
_SYMBOLS = (("scipy_openblas_set_num_threads64_", "scipy_openblas_get_num_threads64_"),
            ("scipy_openblas_set_num_threads", "scipy_openblas_get_num_threads"),
            ("openblas_set_num_threads64_", "openblas_get_num_threads64_"),
            ("openblas_set_num_threads", "openblas_get_num_threads"))

_lock = threading.Lock()
_holders = 0  # open `limit_blas_threads` calls not restored yet
_original: dict[str, int] = {}  # the thread counts the first holder found


class _Library:
    def __init__(self, path: str, setter: Callable[[int], Any], getter: Callable[[], Any]) -> None:
        self.path, self._set, self._get = path, setter, getter

    def threads(self) -> int:
        return int(self._get())

    def set_threads(self, n: int) -> None:
        self._set(n)


def _loaded_openblas() -> list[_Library]:
    """Every OpenBLAS mapped into this process, with its thread setter (empty where none is found)."""
    try:
        with open("/proc/self/maps") as maps:
            paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower() and ".so" in line})
    except OSError:  # not Linux
        return []
    found = []
    for path in paths:
        try:
            library = ctypes.CDLL(path)
        except OSError:
            continue
        for set_name, get_name in _SYMBOLS:
            setter, getter = getattr(library, set_name, None), getattr(library, get_name, None)
            if setter is not None and getter is not None:
                setter.argtypes, setter.restype = [ctypes.c_int], None
                getter.argtypes, getter.restype = [], ctypes.c_int
                found.append(_Library(path, setter, getter))
                break
    return found


def limit_blas_threads(n: int = 1) -> dict[str, int]:
    """Limit every loaded OpenBLAS to ``n`` threads; returns what each had (for `restore_blas_threads`).

    Holders nest: each call must be matched by one `restore_blas_threads`, and the counts the first
    holder found come back only when the last holder restores (two services in one process).
    """
    import numpy  # noqa: F401  (numpy's OpenBLAS must be loaded to be found)

    global _holders, _original
    with _lock:
        libraries = _loaded_openblas()
        before = {library.path: library.threads() for library in libraries}
        if _holders == 0:
            _original = dict(before)
        _holders += 1
        for library in libraries:
            library.set_threads(n)
    if before:
        log.debug("BLAS threads limited to %d (were %s)", n, before)
    return before


def restore_blas_threads(before: dict[str, int]) -> None:
    """Release a `limit_blas_threads`; the last holder gives each OpenBLAS its thread count back."""
    global _holders
    with _lock:
        _holders = max(_holders - 1, 0)
        if _holders:
            return
        original = _original or before
        for library in _loaded_openblas():
            if library.path in original:
                with contextlib.suppress(Exception):
                    library.set_threads(original[library.path])


def blas_threads() -> dict[str, int]:
    """Each loaded OpenBLAS's thread count (by library path)."""
    return {library.path: library.threads() for library in _loaded_openblas()}
