"""The check's report: ``gpu_check.json`` (everything) and ``gpu_check.md`` (tables for the docs)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

BANNER = """
################################################################################
##  RANDOM WEIGHTS: the SAM 2 models in this check are randomly initialised.  ##
##  Its outputs are NOT segmentations. Only speed and memory are measured     ##
##  (they do not depend on the weights).                                      ##
################################################################################
"""


def _fmt(value: Any, digits: int = 1) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.{digits}f}"
    return str(value)


def markdown(report: dict[str, Any]) -> str:
    machine = report["machine"]
    lines = ["# SAM 2 GPU check (random weights: speed and memory only, outputs are not segmentations)", "",
             f"Device: {machine.get('device_name')} ({report['settings']['device']}), torch {machine.get('torch')}, "
             f"Python {machine.get('python')}. Image size {report['settings']['image_size_px']} px, "
             f"frames requested per case {report['settings']['frames']}, budget {report['settings']['budget_s']:.0f} s, "
             f"total wall {report['wall_s']:.0f} s.", ""]
    if not report.get("complete", True):
        lines += ["**Incomplete: the run stopped before its last case (this is the report so far).**", ""]
    header = ("| case | frames | fps | p50 ms | p99 ms | peak MiB | MiB/1k frames | flat | warm-up s | cut |\n"
              "|---|---|---|---|---|---|---|---|---|---|")
    for kind, title in (("service", "End to end (ZeroMQ -> service -> results)"), ("backend", "Backend alone")):
        rows = [c for c in report["cases"] if c["kind"] == kind]
        if not rows:
            continue
        lines += [f"## {title}", "", header]
        for c in rows:
            lines.append(f"| {c['case']} | {c['frames']} | {_fmt(c['fps'])} | {_fmt(c['latency_ms_p50'], 2)} | "
                         f"{_fmt(c['latency_ms_p99'], 2)} | {_fmt(c['memory_peak_mib'])} | "
                         f"{_fmt(c['memory_slope_mib_per_1000_frames'], 2)} | {c['memory_flat']} | "
                         f"{_fmt(c.get('warmup_s', float('nan')))} | {c['cut']} |")
        lines.append("")
    if report["skipped"] or report["failed"]:
        lines += ["## Not measured", ""]
        lines += [f"- {s['case']}: skipped ({s['reason']})" for s in report["skipped"]]
        lines += [f"- {f['case']}: failed ({f['error']})" for f in report["failed"]]
        lines.append("")
    lines.append(f"Memory is `{report['cases'][0]['memory_kind'] if report['cases'] else '-'}`; "
                 "service latency is send timestamp -> result handed to the last sink.")
    return "\n".join(lines) + "\n"


def write(report: dict[str, Any], out: Path) -> tuple[Path, Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "gpu_check.json", out / "gpu_check.md"
    json_path.write_text(json.dumps(report, indent=1, allow_nan=True))
    md_path.write_text(markdown(report))
    return json_path, md_path
