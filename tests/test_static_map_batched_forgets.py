"""Prompts landing together unlearn their places in the static map, and its features are found once (issue 23)."""

from __future__ import annotations

import numpy as np
import pytest

from sam4em_live.segment.embedded.static_map import StaticMap

#: Discs (x, y, r) where prompts land: on two of the map's static blobs, beside one, and in the open.
PROMPTS = [(100.0, 120.0, 12.0), (300.0, 200.0, 10.0), (330.0, 210.0, 14.0), (50.0, 350.0, 9.0)]


def _learned_map() -> StaticMap:
    """A map that has learned a field with dark static blobs (a few of them where prompts will land)."""
    rng = np.random.default_rng(3)
    rows, cols = np.mgrid[0:400, 0:480]
    field = np.full((400, 480), 200.0)
    for x, y in [(100, 120), (300, 200), (420, 60), (240, 330)]:
        field[(cols - x) ** 2 + (rows - y) ** 2 <= 15**2] = 150.0
    static = StaticMap()
    for i in range(0, 80, 4):
        static.observe(i, np.clip(field + rng.normal(0, 10, field.shape), 0, None).astype(np.uint16), [])
    assert static.features is not None and static.features.any()
    return static


def _found(static: StaticMap) -> list[np.ndarray]:
    """What the map found: its features, their relief, the local background and the features' sizes."""
    found = [static.features, static.relief, static.surround, static.feature_blocks]
    assert all(a is not None for a in found)
    return [a for a in found if a is not None]


def test_forgets_in_a_batch_find_the_features_of_forgetting_one_at_a_time_once(monkeypatch: pytest.MonkeyPatch
                                                                                ) -> None:
    one_by_one, batched = _learned_map(), _learned_map()
    before = [np.copy(a) for a in _found(batched)]
    for disc in PROMPTS:
        one_by_one.forget(*disc)
    found: list[int] = []

    def find_features() -> None:
        found.append(1)
        StaticMap._find_features(batched)

    monkeypatch.setattr(batched, "_find_features", find_features)
    with batched.batched_forgets():
        for disc in PROMPTS:
            batched.forget(*disc)
        assert not found and all(np.array_equal(a, b) for a, b in zip(before, _found(batched), strict=True))
    assert len(found) == 1
    for a, b in zip(_found(one_by_one), _found(batched), strict=True):
        assert a.dtype == b.dtype and np.array_equal(a, b)
    assert batched.vouched == one_by_one.vouched
    assert not np.array_equal(before[0], _found(batched)[0])  # the blobs prompted on are no longer features


def _forget_then_fail(static: StaticMap) -> None:
    with static.batched_forgets():
        static.forget(*PROMPTS[0])
        raise RuntimeError("a prompt that could not land")


def test_a_batch_that_raises_still_finds_the_features_and_one_without_forgets_does_nothing() -> None:
    static, reference = _learned_map(), _learned_map()
    reference.forget(*PROMPTS[0])
    with pytest.raises(RuntimeError, match="could not land"):
        _forget_then_fail(static)
    assert np.array_equal(_found(static)[0], _found(reference)[0])
    features = static.features
    with static.batched_forgets():
        pass
    assert static.features is features
    # Outside a batch a forget finds them at once, as before.
    static.forget(*PROMPTS[1])
    reference.forget(*PROMPTS[1])
    assert np.array_equal(_found(static)[0], _found(reference)[0])
