"""The prepared GPU check (tools/gpu_check, issue 23), run on CPU at a tiny size: report structure and figures.

The GPU figures themselves come from running it on a CUDA machine (docs/sam2_backend.md, "GPU check").
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")
pytest.importorskip("sam2")

from tools.gpu_check.measure import memory_slope_per_1000
from tools.gpu_check.plan import Budget, Case, cases
from tools.gpu_check.wheels import _fits, normalise, requirement_closure

pytestmark = pytest.mark.sam2
REPO = Path(__file__).resolve().parents[1]
FIGURES = ("fps", "latency_ms_mean", "latency_ms_p50", "latency_ms_p99", "latency_ms_max", "memory_peak_mib",
           "memory_first_mib", "memory_last_mib")


def test_tiny_cpu_run_writes_a_complete_report(tmp_path: Path) -> None:
    """The whole check in a subprocess (as on the device): a service case over ZeroMQ and a backend case."""
    done = subprocess.run([sys.executable, "-m", "tools.gpu_check", "--tiny", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("RANDOM WEIGHTS") >= 2  # the banner, before and after
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["random_weights"] is True and "not segmentations" in report["warning"]
    assert report["failed"] == [] and report["skipped"] == [] and report["complete"] is True
    assert report["machine"]["torch"] and report["settings"]["device"] == "cpu"
    by_kind = {c["kind"]: c for c in report["cases"]}
    assert set(by_kind) == {"service", "backend"} and len(report["cases"]) == 2
    for case in report["cases"]:
        assert case["frames"] == 20 and case["frames_requested"] == 20 and case["cut"] is False
        assert case["random_weights"] is True
        for key in FIGURES:
            assert math.isfinite(case[key]) and case[key] > 0, (case["case"], key, case[key])
        assert math.isfinite(case["memory_slope_mib_per_1000_frames"])
        assert isinstance(case["memory_flat"], bool)
        assert case["latency_ms_p99"] >= case["latency_ms_p50"]
        assert [f for f, _ in case["memory_samples"]] == [1, 6, 11, 16]  # every 5th measured frame
    service = by_kind["service"]
    assert service["particles"] == 2 and service["mode"] == "bf16"
    # Every frame sent reached the service and its results went out over the publisher.
    assert service["frames_sent"] == 1 + 2 + 20 == service["frames_processed"]
    assert service["frames_dropped"] == 0 and service["service_stopped_at_series_end"] is True
    assert service["results_received"] == service["frames_processed"]
    backend = by_kind["backend"]
    assert backend["particles"] == 1 and backend["mode"] == "fp32" and backend["warmup_s"] > 0
    assert service["warmup_s"] > 0
    markdown = (tmp_path / "gpu_check.md").read_text()
    assert "not segmentations" in markdown
    assert "| service/t/p2/bf16 | 20 |" in markdown and "| backend/t/p1/fp32 | 20 |" in markdown


def test_memory_slope_is_per_thousand_frames_and_ignores_the_first_sample() -> None:
    growing = [(1, 100.0)] + [(f, 200.0 + 0.002 * f) for f in range(51, 2001, 50)]  # 2 MiB per 1,000 frames
    assert memory_slope_per_1000(growing) == pytest.approx(2.0)
    assert memory_slope_per_1000([(1, 5.0), (51, 5.0), (101, 5.0), (151, 5.0)]) == pytest.approx(0.0)
    assert memory_slope_per_1000([(1, 5.0)]) == 0.0


def test_budget_shares_what_is_left_service_weighs_twice_compile_three_times() -> None:
    plan = cases(["t", "s"], [1, 4], ["bf16"], ["t"], [4], ["bf16"])
    assert plan[0] == Case("service", "t", 4, "bf16") and len(plan) == 5
    budget = Budget(60.0)
    assert budget.share(plan[0], plan) == pytest.approx(60.0 * 2 / 6, rel=0.01)
    assert budget.share(plan[1], plan[1:]) == pytest.approx(60.0 / 4, rel=0.01)
    mixed = cases(["t"], [4], ["bf16", "compile"], [], [], [])
    assert budget.share(mixed[1], mixed) == pytest.approx(60.0 * 3 / 4, rel=0.01)


def test_wheel_tags_and_the_torch_closure() -> None:
    assert _fits("antlr4_python3_runtime-4.9.3-py3-none-any.whl", "3.12")
    assert _fits("numpy-2.1.0-cp312-cp312-manylinux_2_17_x86_64.whl", "3.12")
    assert not _fits("numpy-2.1.0-cp311-cp311-manylinux_2_17_x86_64.whl", "3.12")
    assert normalise("Hydra_Core") == "hydra-core"
    closure = requirement_closure("torch")
    assert "torch" in closure and "sympy" in closure  # what the device has with its torch
    assert "hydra-core" not in closure and "pyzmq" not in closure  # what must travel as wheels


@pytest.mark.slow
def test_a_plan_larger_than_its_budget_still_finishes_within_it(tmp_path: Path) -> None:
    """The 8-minute guarantee at a tiny size: 6 cases of 2,000 frames in a 30 s budget are cut, not overrun."""
    budget_s = 30.0
    options = ["--device", "cpu", "--image-size-px", "128", "--frame-px", "256", "--fill-frames", "2",
               "--models", "t", "--particles", "1,4", "--modes", "fp32,bf16", "--service-models", "t",
               "--service-particles", "1,2", "--service-modes", "bf16", "--frames", "2000", "--sample-every", "5",
               "--budget-s", str(budget_s), "--threads", "1", "--out", str(tmp_path)]
    done = subprocess.run([sys.executable, "-m", "tools.gpu_check", *options], cwd=REPO, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["complete"] is True and report["failed"] == []
    # Each case stops at its share (a case already running finishes its frame, a service case its stream).
    assert report["wall_s"] < budget_s + 20.0, report["wall_s"]
    measured = {c["case"]: c for c in report["cases"]}
    assert len(measured) + len(report["skipped"]) == 6
    assert measured and all(c["cut"] and c["frames"] < 2000 for c in measured.values())
