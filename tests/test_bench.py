"""The benchmark harness (tools/bench) end to end on tiny cases: real child processes, real files, real git."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import TYPE_CHECKING

import pytest

from tools.bench.__main__ import parse_overrides
from tools.bench.compare import compare_result_sets, compare_results
from tools.bench.data import simulated_clip
from tools.bench.provenance import REPO_ROOT, resolve_revision
from tools.bench.registry import all_benchmarks, get_benchmark, select
from tools.bench.schema import BenchResult, Machine, Metric, load_results, save_results

if TYPE_CHECKING:
    from pathlib import Path

MACHINE = Machine("Linux x86_64", "test cpu", 2, "3.11.0", "2.0.0", 1.0, 1.5)
TINY_STATS = ["-p", "particles=2", "-p", "frames=60", "-p", "window=32", "-p", "max_lag=8", "-p", "batch_frames=200"]
TINY_TRACK = ["-p", "preset=crossing", "-p", "frames=4", "-p", "warmup=2"]


def result(value: float, *, revision: str = "abc", fingerprint: str = "f0", name: str = "demo") -> BenchResult:
    return BenchResult(name, {"frames": 10, "options": {"a": [1, 2]}}, revision, MACHINE,
                       {"track_ms_p50": Metric(value, "ms"), "fps": Metric(100.0 / value, "frames/s", "higher"),
                        "missing": Metric(float("nan"), "ms")},
                       "2026-12-07T00:00:00+00:00", 1.25, {"masks_sha256": fingerprint})


def bench(*args: str, cache: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "BENCH_CACHE_DIR": str(cache)}
    return subprocess.run([sys.executable, "-m", "tools.bench", *args], cwd=REPO_ROOT, env=env, text=True,
                          capture_output=True, timeout=120)


def test_result_round_trips_through_a_file(tmp_path: Path) -> None:
    records = [result(2.0), result(3.0, revision="def+dirty")]
    save_results(tmp_path / "r.json", records)
    raw = json.loads((tmp_path / "r.json").read_text())
    assert raw[0]["schema"] == 1 and raw[0]["metrics"]["missing"]["value"] is None  # strict JSON, no NaN
    loaded = load_results(tmp_path / "r.json")
    assert [r.revision for r in loaded] == ["abc", "def+dirty"]
    assert loaded[1].metrics["track_ms_p50"] == Metric(3.0, "ms", "lower")
    assert loaded[0].params == records[0].params and loaded[0].machine == MACHINE
    assert loaded[0].fingerprints == {"masks_sha256": "f0"}
    raw[0]["schema"] = 99
    (tmp_path / "bad.json").write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="schema"):
        load_results(tmp_path / "bad.json")


def test_compare_gives_new_over_old_with_spread_and_verdict() -> None:
    comparison = compare_results([result(2.0), result(4.0)], [result(3.0), result(5.0, fingerprint="other")])
    by_name = {m.name: m for m in comparison.metrics}
    p50 = by_name["track_ms_p50"]
    assert (p50.ratio_min, p50.ratio_max) == (1.25, 1.5) and p50.ratio_median == pytest.approx(1.375)
    assert p50.verdict == "worse"  # lower is better, and every pair got slower
    assert by_name["fps"].verdict == "worse"  # higher is better, every pair lower
    assert comparison.fingerprints_equal == {"masks_sha256": 1}
    assert compare_results([result(2.0), result(4.0)], [result(1.0), result(5.0)]).metrics[0].verdict == \
        "within spread"


def test_compare_files_command_prints_the_ratio(tmp_path: Path) -> None:
    save_results(tmp_path / "old.json", [result(2.0), result(9.0, name="other")])
    save_results(tmp_path / "new.json", [result(3.0)])
    assert [c.benchmark for c in compare_result_sets(load_results(tmp_path / "old.json"),
                                                     load_results(tmp_path / "new.json"))] == ["demo"]
    done = bench("compare-files", str(tmp_path / "old.json"), str(tmp_path / "new.json"), cache=tmp_path)
    assert done.returncode == 0, done.stderr
    line = next(row for row in done.stdout.splitlines() if row.startswith("track_ms_p50"))
    assert line.split()[2:5] == ["2", "3", "1.500"]
    assert "masks_sha256: identical (equal in 1 of 1" in done.stdout


def test_parameters_are_checked_and_the_quick_set_is_small() -> None:
    embedded = get_benchmark("embedded-track")
    assert embedded.params({"frames": 3})["frames"] == 3
    with pytest.raises(KeyError, match="no parameter"):
        embedded.params({"frams": 3})
    # A string parameter keeps its text (a short commit id that reads as a JSON number stays a string).
    assert parse_overrides(["rev=93953e6", "frames=7"], ["embedded-ab"]) == {"embedded-ab": {"rev": "93953e6",
                                                                                           "frames": 7}}
    with pytest.raises(SystemExit, match="no chosen benchmark"):
        parse_overrides(["nonsense=1"], ["embedded-ab"])
    quick = [b.name for b, use_quick in select(["quick"]) if use_quick]
    assert "embedded-track" in quick and "sam2" not in quick and "monitor" not in quick
    assert all(b.summary for b in all_benchmarks().values())


def test_tiny_run_writes_a_valid_result(tmp_path: Path) -> None:
    out = tmp_path / "run.json"
    done = bench("run", "stats", *TINY_STATS, "--out", str(out), cache=tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    (record,) = load_results(out)
    assert record.benchmark == "stats" and record.params["window"] == 32
    assert record.revision.split("+")[0] == resolve_revision("HEAD")
    assert record.metrics["update_cpu_us_p50"].unit == "us" and record.metrics["update_cpu_us_p50"].value > 0
    assert record.machine.cpus == os.cpu_count()


def test_simulated_clips_are_cached(tmp_path: Path) -> None:
    clip = simulated_clip(tmp_path, "crossing", 3, seed=1)
    written = (clip.folder / "video.tif").stat().st_mtime_ns
    again = simulated_clip(tmp_path, "crossing", 3, seed=1)
    assert again.folder == clip.folder and (again.folder / "video.tif").stat().st_mtime_ns == written
    assert again.pixels.shape == (3, 256, 256)
    assert {p.frame for p in again.prompts((0,))} == {0} and len(again.prompts((0,), "box")) >= 1


def test_compare_with_a_revision_runs_both_sides(tmp_path: Path) -> None:
    out = tmp_path / "both.json"
    done = bench("compare", "embedded-track", *TINY_TRACK, "--rev", "HEAD", "--repeats", "1", "--out", str(out),
                 cache=tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    old, new = load_results(out)  # the revision's side first
    head = resolve_revision("HEAD")
    assert old.revision == head and new.revision.split("+")[0] == head
    assert (tmp_path / "cache" / "revisions" / head / "sam4em_live" / "__init__.py").is_file()
    assert "track_ms_p50" in done.stdout and "new/old" in done.stdout
    # HEAD's package and the working tree's give the same masks unless the working tree changed the backend.
    assert "masks_sha256:" in done.stdout
