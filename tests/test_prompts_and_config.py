"""Prompts files and configs: valid input accepted, each kind of bad input named clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sam4em_live.config import ConfigError, ServiceConfig
from sam4em_live.io.prompts_file import load_prompts, save_prompts
from sam4em_live.particles import Prompt, PromptError, RemoveParticle, validate_edit

ROOT = Path(__file__).resolve().parents[1]


def _write(tmp_path, prompts):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"prompts": prompts}))
    return path


def test_prompts_round_trip(tmp_path):
    edits = [Prompt(1, 0, ((10.0, 12.0),), (1,)), Prompt(2, 5, (), (), (1.0, 2.0, 30.0, 40.0)),
             Prompt(1, 7, ((3.0, 4.0), (5.0, 6.0)), (1, 0), (0.0, 0.0, 9.0, 9.0)), RemoveParticle(2, 9)]
    save_prompts(tmp_path / "p.json", edits)
    assert load_prompts(tmp_path / "p.json", (64, 64)) == edits


BAD = [
    ({"frame": 0, "particle": 1, "points": [[500, 5]], "labels": [1]}, "outside"),
    ({"frame": 0, "particle": 1, "box": [10, 10, 10, 20]}, "empty"),
    ({"frame": 0, "particle": 1}, "neither points nor a box"),
    ({"frame": 0, "particle": 1, "points": [[5, 5]], "colour": "red"}, "unknown key"),
    ({"frame": 0, "particle": 0, "points": [[5, 5]]}, "particle id"),
    ({"frame": 0, "particle": 1, "points": [[5, 5]], "labels": [1, 1]}, "labels"),
    ({"frame": 0, "particle": 1, "points": [[5, 5]], "labels": [0]}, "only negative"),
    ({"particle": 1, "points": [[5, 5]]}, "'frame' is required"),
    ({"frame": 0, "particle": 1, "box": [1, 2, 3]}, r"\[x0, y0, x1, y1\]"),
]


@pytest.mark.parametrize("entry,message", BAD)
def test_bad_prompts_name_the_entry(tmp_path, entry, message):
    path = _write(tmp_path, [{"frame": 0, "particle": 3, "points": [[1, 1]]}, entry])
    with pytest.raises(PromptError, match=message) as info:
        load_prompts(path, (64, 64))
    assert "prompts[1]" in str(info.value)


def test_missing_prompts_file(tmp_path):
    with pytest.raises(PromptError, match="not found"):
        load_prompts(tmp_path / "nope.json")


def test_validate_box_partly_outside_is_allowed_fully_outside_is_not():
    validate_edit(Prompt(1, 0, box=(-5.0, -5.0, 10.0, 10.0)), (64, 64))
    with pytest.raises(PromptError, match="outside"):
        validate_edit(Prompt(1, 0, box=(70.0, 70.0, 80.0, 80.0)), (64, 64))


@pytest.mark.parametrize("name", sorted(p.name for p in (ROOT / "configs").glob("*.toml")))
def test_shipped_configs_validate(name):
    ServiceConfig.from_file(ROOT / "configs" / name)


def test_unknown_key_and_wrong_unit_are_named(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[recorder]\nout_dirr = "x"\n')
    with pytest.raises(ConfigError, match=r"recorder\.out_dirr"):
        ServiceConfig.from_file(bad)
    bad.write_text('[calibration]\npixel_size_um = 0.001\n')
    with pytest.raises(ConfigError, match=r"calibration\.pixel_size_um"):
        ServiceConfig.from_file(bad)
    bad.write_text('[calibration]\npixel_size_nm = "1 nm"\n')
    with pytest.raises(ConfigError, match=r"calibration\.pixel_size_nm"):
        ServiceConfig.from_file(bad)
    bad.write_text('[calibration]\nfps = -80\n')
    with pytest.raises(ConfigError, match=r"calibration\.fps"):
        ServiceConfig.from_file(bad)


def test_overrides_apply_and_validate():
    cfg = ServiceConfig().with_overrides({"calibration.fps": 40.0, "segmenter.backend": None})
    assert cfg.calibration.fps == 40.0 and cfg.segmenter.backend == "embedded"
    with pytest.raises(ConfigError, match=r"pipeline\.backpressure"):
        cfg.with_overrides({"pipeline.backpressure": "sometimes"})
