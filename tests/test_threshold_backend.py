"""The `threshold` baseline backend on synthetic disks with known truth."""

from __future__ import annotations

import numpy as np
import pytest

from sam4em_live.frames import Frame
from sam4em_live.measure import measure_mask
from sam4em_live.particles import Prompt, PromptError, RemoveParticle
from sam4em_live.segment.registry import create_segmenter
from tests.conftest import disk_video


def _frame(px, i):
    return Frame("s", i, 0.0, px)


def test_tracks_moving_disks_within_half_a_pixel():
    frames, truth = disk_video(n_frames=25)
    seg = create_segmenter("threshold")
    prompts = [Prompt(1, 0, ((30.0, 40.0),), (1,)), Prompt(2, 0, box=(60.0, 50.0, 80.0, 70.0))]
    for t, px in enumerate(frames):
        masks = seg.track(_frame(px, t), prompts if t == 0 else ())
        assert [m.particle for m in masks] == [1, 2]
        for p, m in enumerate(masks):
            meas = measure_mask(m, t)
            assert meas.present
            assert abs(meas.x - truth[t, p, 0]) < 0.5 and abs(meas.y - truth[t, p, 1]) < 0.5
            assert abs(meas.area_px - np.pi * 49) < 25


def test_remove_and_bad_prompt():
    frames, _ = disk_video(n_frames=3)
    seg = create_segmenter("threshold")
    seg.track(_frame(frames[0], 0), [Prompt(1, 0, ((30.0, 40.0),), (1,))])
    assert seg.particles() == [1]
    seg.track(_frame(frames[1], 1), [RemoveParticle(1, 1)])
    assert seg.particles() == []
    with pytest.raises(PromptError, match="no dark particle"):
        seg.track(_frame(frames[2], 2), [Prompt(3, 2, ((110.0, 10.0),), (1,))])


def test_absent_when_particle_leaves():
    frames, _ = disk_video(n_frames=2)
    seg = create_segmenter("threshold")
    seg.track(_frame(frames[0], 0), [Prompt(1, 0, ((30.0, 40.0),), (1,))])
    blank = np.full_like(frames[1], 100)
    (mask,) = seg.track(_frame(blank, 1))
    assert not mask.present and mask.crop is None
