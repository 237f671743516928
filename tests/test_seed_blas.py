"""Seeding a batch runs BLAS on the calling thread (`seed.one_blas_thread`), and leaves a limit set by others alone."""

from __future__ import annotations

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from sam4em_live.segment.blas_threads import limit_blas_threads, restore_blas_threads
from sam4em_live.segment.embedded.seed import one_blas_thread


def _blas_threads() -> list[int]:
    return [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]


def test_a_batch_seeds_with_one_blas_thread_and_gives_the_count_back() -> None:
    np.ones(3) @ np.ones(3)  # BLAS loaded
    with threadpool_limits(limits=2, user_api="blas"):  # as on the 2-core machine, whatever this one has
        assert set(_blas_threads()) == {2}
        with one_blas_thread():
            assert set(_blas_threads()) == {1}
        assert set(_blas_threads()) == {2}


def test_a_limit_the_service_holds_is_left_to_the_service() -> None:
    """Under the segmentation stage's limit the batch sets nothing: the stage closing meanwhile restores the count."""
    with threadpool_limits(limits=2, user_api="blas"):
        before = limit_blas_threads(1)  # the segmentation stage's limit while it is open
        with one_blas_thread():
            assert set(_blas_threads()) == {1}
            restore_blas_threads(before)  # the stage closes while a helper thread still seeds
        assert set(_blas_threads()) == {2}  # not left at 1 by a batch that "restored" what it found
