"""The command line's faces (issue 20): one meaning of --out, endpoints named alike, -v/-q anywhere, backends
listed, help not cut, progress on long commands, log lines that never break a bar, one-line config errors.

Each through typer's CliRunner on real files in tmp_path.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sam4em_live.cli import ProgressAwareHandler, app, configure_logging
from sam4em_live.segment.registry import SEGMENTERS

runner = CliRunner()
COMMANDS = ("serve", "track", "camera", "demo", "simulate", "evaluate", "analyze", "monitor", "ctl", "keys")


@pytest.fixture(autouse=True)
def _restore_root_logger():
    """The CLI configures the root logger; give the next test the one it had."""
    root = logging.getLogger()
    level, handlers = root.level, list(root.handlers)
    yield
    root.setLevel(level)
    for handler in [h for h in root.handlers if h not in handlers]:
        root.removeHandler(handler)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("faces") / "clip"
    result = runner.invoke(app, ["simulate", "--preset", "crossing", "--frames", "12", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize("flags, level", [(["-q"], logging.WARNING), (["-v"], logging.INFO),
                                          (["-vv"], logging.DEBUG), (["--quiet"], logging.WARNING)])
def test_verbosity_flags_work_after_the_subcommand(flags, level):
    result = runner.invoke(app, ["simulate", "--list", *flags])
    assert result.exit_code == 0, result.output
    assert "sam4em-50nm" in result.output
    assert logging.getLogger().level == level
    assert sum(isinstance(h, ProgressAwareHandler) for h in logging.getLogger().handlers) == 1


def test_verbosity_before_the_subcommand_still_works_and_after_a_double_dash_is_an_argument():
    assert runner.invoke(app, ["-q", "simulate", "--list"]).exit_code == 0
    assert logging.getLogger().level == logging.WARNING
    # after "--" a "-q" is a value, not a flag: ctl's TEXT argument here
    result = runner.invoke(app, ["ctl", "annotate", "--control-endpoint", "tcp://127.0.0.1:1", "--timeout-s", "0.2",
                                 "--", "-q"])
    assert result.exit_code == 1 and "error" in result.output


@pytest.mark.parametrize("command", ["track", "serve", "demo"])
def test_backend_lists_its_choices(command):
    result = runner.invoke(app, [command, "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert ", ".join(SEGMENTERS.names()) in text and "embedded" in text


def test_the_command_list_shows_each_first_sentence_whole():
    result = runner.invoke(app, ["--help"], terminal_width=80)
    commands = result.output.split("Commands:")[1]
    assert "..." not in commands and "…" not in commands
    assert "(masks, trajectories, prompts, CNR)." in " ".join(commands.split())


@pytest.mark.parametrize("command", COMMANDS)
def test_help_is_never_cut_off(command):
    result = runner.invoke(app, [command, "--help"], terminal_width=80)
    assert result.exit_code == 0, result.output
    assert "…" not in result.output  # rich's tables cut long values with an ellipsis
    text = " ".join(result.output.split())
    if command == "track":
        assert "[segmenter.options]" in text and "checkpoint=sam2.1_hiera_tiny.pt" in text


@pytest.mark.parametrize("command, names", [
    ("serve", ["--frames-endpoint", "--results-endpoint", "--control-endpoint"]),
    ("camera", ["--frames-endpoint"]),
    ("monitor", ["--results-endpoint", "--control-endpoint"]),
    ("ctl", ["--control-endpoint"]),
])
def test_endpoints_are_named_by_what_flows_through_them(command, names):
    output = runner.invoke(app, [command, "--help"]).output
    assert all(name in output for name in names)
    assert not re.search(r"--(connect|control|endpoint)\b(?!-)", output)  # the old names are hidden


def test_an_old_endpoint_name_still_works_with_a_note_and_cannot_contradict_the_new_one():
    old = runner.invoke(app, ["ctl", "ping", "--endpoint", "tcp://127.0.0.1:1", "--timeout-s", "0.2"])
    assert old.exit_code == 1 and "--endpoint is deprecated; use --control-endpoint" in old.stderr
    both = runner.invoke(app, ["ctl", "ping", "--endpoint", "tcp://127.0.0.1:1",
                               "--control-endpoint", "tcp://127.0.0.1:2"])
    assert both.exit_code == 2 and "give only --control-endpoint" in both.stderr


def test_simulate_track_analyze_evaluate_show_progress_and_out_is_the_folder_written(clip, tmp_path):
    assert "simulate crossing" in runner.invoke(
        app, ["simulate", "--preset", "crossing", "--frames", "3", "--out", str(tmp_path / "c")]).stderr
    run = tmp_path / "runs" / "r1"
    tracked = runner.invoke(app, ["track", str(clip / "video.tif"), "--prompts", str(clip / "prompts.json"),
                                  "--out", str(run)])
    assert tracked.exit_code == 0, tracked.output
    assert (run / "run.json").is_file() and "12/12" in tracked.stderr
    analyzed = runner.invoke(app, ["analyze", str(clip / "gt_trajectories.csv"), "--out", str(tmp_path / "an"),
                                   "--no-figures", "--max-lag", "4", "--pdf-lags", "1"])
    assert analyzed.exit_code == 0, analyzed.output
    assert "analyze" in analyzed.stderr and "3/3" in analyzed.stderr and (tmp_path / "an" / "stats.csv").is_file()
    evaluated = runner.invoke(app, ["evaluate", "--pred", str(run), "--gt", str(clip), "--out", str(tmp_path / "ev")])
    assert evaluated.exit_code == 0, evaluated.output
    assert "evaluate" in evaluated.stderr and "12/12" in evaluated.stderr
    assert (tmp_path / "ev" / "evaluation.json").is_file()  # --out is the folder, as everywhere


def test_demo_out_is_the_run_folder_and_an_existing_folder_keeps_the_old_meaning(tmp_path):
    run = tmp_path / "demo-run"
    result = runner.invoke(app, ["demo", "--seconds", "1", "--preset", "crossing", "--out", str(run)])
    assert result.exit_code == 0, result.output
    assert (run / "run.json").is_file() and f"run directory: {run}" in result.output
    parent = tmp_path / "runs"
    parent.mkdir()
    again = runner.invoke(app, ["demo", "--seconds", "1", "--preset", "crossing", "--out", str(parent)])
    assert again.exit_code == 0, again.output
    assert "deprecated" in again.stderr and len(list(parent.glob("*/run.json"))) == 1


def test_log_lines_never_break_a_progress_bar(clip, tmp_path):
    """Every log line starts a line of its own: tqdm.write clears the bar, prints, and redraws it."""
    result = runner.invoke(app, ["track", str(clip / "video.tif"), "--prompts", str(clip / "prompts.json"),
                                 "--out", str(tmp_path / "r"), "-v"])
    assert result.exit_code == 0, result.output
    # and a log line in the middle of a bar, the case that broke it
    from tqdm import tqdm

    configure_logging(0, False)
    with runner.isolation() as (_, err, _both):
        with tqdm(total=3, desc="bar") as bar:
            bar.update(1)
            logging.getLogger("sam4em_live.test").info("a message mid-bar")
            bar.update(2)
        text = err.getvalue().decode()
    for captured in (result.stderr, text):
        logged = [seg for seg in re.split(r"[\r\n]", captured) if " INFO " in seg]
        assert logged and all(re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", seg) for seg in logged), logged


@pytest.mark.parametrize("args", [
    ["serve", "-c", "{bad}"],
    ["track", "{video}", "--prompts", "{prompts}", "--out", "{out}", "-c", "{bad}"],
    ["simulate", "--spec", "{spec}", "--out", "{out}"],
])
def test_configuration_errors_are_one_line(args, clip, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('[pipeline]\nbackpressure = "sometimes"\nfoo = 1\n[stats]\nwindow_frames = "x"\n')
    spec = tmp_path / "spec.json"
    spec.write_text('{"name": "x", "imaging": {"fps": -1, "bogus": 2}}')
    values = {"bad": bad, "spec": spec, "video": clip / "video.tif", "prompts": clip / "prompts.json",
              "out": tmp_path / "o"}
    result = runner.invoke(app, [a.format(**values) for a in args])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "errors.pydantic.dev" not in lines[0] and "validation error" not in lines[0]
    assert "fps" in lines[0] or "backpressure" in lines[0]


def test_serve_out_is_the_run_folder_and_its_endpoints_are_overridden_by_name(tmp_path):
    config = tmp_path / "sim.toml"
    config.write_text('[source]\nkind = "simulator"\npreset = "crossing"\nframes = 5\nfps = 50\n'
                      '[publisher]\nendpoint = "tcp://127.0.0.1:1"\n[control]\nendpoint = "tcp://127.0.0.1:1"\n')
    run = tmp_path / "runs" / "exp1"
    result = runner.invoke(app, ["serve", "-c", str(config), "--out", str(run), "-q",
                                 "--results-endpoint", "tcp://127.0.0.1:0", "--control-endpoint", "tcp://127.0.0.1:0"])
    assert result.exit_code == 0, result.output
    assert "serving: run exp1" in result.output and (run / "trajectories.csv").is_file()
    assert "tcp://127.0.0.1:1" not in result.output  # both endpoints taken from the options, bound on free ports
