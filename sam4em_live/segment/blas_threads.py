"""One BLAS thread for the segmentation backends while the service runs (issue 23).

numpy's OpenBLAS starts one thread per core and splits every matrix product, least-squares fit and
eigen-decomposition between them. The embedded backend's are small (template banks, window fits,
a 13-term illumination surface), so the split buys nothing even on an idle machine; on the 2-core
machine, where the service's other threads (ZeroMQ I/O, recorder, the seeding helper) and the frame
sender hold the second core, every such call waits for a helper thread that is not running. That made
the backend cost 2-4x more inside the service than alone (`tools.bench` runs it with
``OPENBLAS_NUM_THREADS=1``): the prompt frame's 146-161 ms against ~70 ms standalone, and ~4x per
frame under load (docs/benchmarks.md, "End to end").

The variable only works before numpy loads, so the limit is set on the loaded libraries themselves,
through threadpoolctl (numpy's and scipy's OpenBLAS, or MKL, whichever is loaded). The setting is
process-wide.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from threadpoolctl import ThreadpoolController

log = logging.getLogger(__name__)

_lock = threading.Lock()
_holders = 0  # open `limit_blas_threads` calls not restored yet
_limiter: Any = None  # the first holder's threadpoolctl limiter (it restores the original counts)


def limit_blas_threads(n: int = 1) -> dict[str, int]:
    """Limit every loaded BLAS to ``n`` threads; returns what each had (by library path).

    Holders nest: each call must be matched by one `restore_blas_threads`, and the counts the first
    holder found come back only when the last holder restores (two services in one process).
    """
    import numpy  # noqa: F401  (numpy's BLAS must be loaded to be found)

    global _holders, _limiter
    with _lock:
        before = blas_threads()
        if _holders == 0:
            _limiter = ThreadpoolController().limit(limits=n, user_api="blas")
        _holders += 1
    if before:
        log.debug("BLAS threads limited to %d (were %s)", n, before)
    return before


def restore_blas_threads(before: dict[str, int]) -> None:
    """Release a `limit_blas_threads`; the last holder gives each BLAS its thread count back."""
    global _holders, _limiter
    with _lock:
        _holders = max(_holders - 1, 0)
        if _holders or _limiter is None:
            return
        _limiter.restore_original_limits()
        _limiter = None


def blas_threads() -> dict[str, int]:
    """Each loaded BLAS's thread count (by library path)."""
    return {pool["filepath"]: pool["num_threads"] for pool in ThreadpoolController().select(user_api="blas").info()}
