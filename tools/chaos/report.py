"""Verdicts against the issue's targets, and the readable summary of a case's JSON report."""

from __future__ import annotations

from typing import Any

#: RSS growth allowed after warm-up (MiB per 10,000 frames) and the flood's throughput floor.
RSS_SLOPE_TARGET_MIB = 1.0
FLOOD_RATIO_TARGET = 0.9


def failures(report: dict[str, Any]) -> list[str]:
    """What in ``report`` misses a target (empty: the case passed)."""
    out: list[str] = []
    if report.get("tool_error"):
        out.append(f"the case itself failed: {report['tool_error']}")
    if report.get("crashed"):
        out.append("service crashed")
    if report.get("hang"):
        out.append(f"hang: {report['hang']}")
    if report.get("hung_on_stop"):
        out.append("service did not stop on SIGTERM")
    for escape, count in (report.get("decoder_escapes_in_process") or {}).items():
        out.append(f"{count} messages escaped the decoder ({escape})")
    tail = report.get("tail") or {}
    if tail.get("lost"):
        out.append(f"{tail['lost']} of {tail['valid_frames_sent']} valid frames after the fuzz were not processed")
    # Valid frames the decoder itself refuses after a hostile message (e.g. non_monotonic until it believes an
    # index jump) are counted with their reason; only losses beyond those are unexplained.
    unexplained = (report.get("valid_interleaved_lost") or 0) - sum((report.get("valid_refused_in_process") or {})
                                                                    .values())
    if unexplained > 0:
        out.append(f"{unexplained} valid frames interleaved with the fuzz were lost without a counted reason")
    tracking = report.get("tracking_on_valid_frames") or {}
    bad = (tracking.get("missing") or 0) + (tracking.get("off_by_more_than_3px") or 0) + (tracking.get("extra_rows")
                                                                                           or 0)
    if tracking.get("expected_rows") and bad > 0.01 * tracking["expected_rows"]:
        out.append(f"tracking on valid frames: {bad} of {tracking['expected_rows']} particle rows missing, "
                   "off by > 3 px or extra (> 1 %)")
    counted = report.get("service_counted") or {}
    if counted.get("unaccounted"):
        out.append(f"{counted['unaccounted']} messages neither received nor rejected")
    ratio = (report.get("flood") or {}).get("ratio")
    if ratio is not None and ratio < FLOOD_RATIO_TARGET:
        out.append(f"processed fps under flood {ratio:.2f} of normal (< {FLOOD_RATIO_TARGET})")
    for trial in report.get("trials", []):
        out.extend(f"{trial.get('name', 'trial')}: {problem}" for problem in trial.get("failures", []))
    for folder in report.get("run_folders", []):
        name = folder["path"].rsplit("/", 1)[-1]
        out.extend(f"{name}: {p}" for p in folder["problems"])
        package = folder.get("package_check") or {}
        out.extend(f"{name}: RunFolder.check(): {d}" for d in package.get("disagreements", []))
        if package.get("error"):
            out.append(f"{name}: RunFolder.check() failed: {package['error']}")
    slope = report.get("rss_slope_mib_per_10k_frames")
    if slope is not None and slope > RSS_SLOPE_TARGET_MIB:
        out.append(f"RSS grows {slope:.2f} MiB per 10,000 frames (> {RSS_SLOPE_TARGET_MIB})")
    out.extend(report.get("unattributed", []))
    return out


def verdict(report: dict[str, Any]) -> str:
    return "pass" if not failures(report) else "fail"


def summary_lines(report: dict[str, Any]) -> list[str]:
    """A few readable lines: the verdict, the headline figures, every failure."""
    lines = [f"## {report['case']}: {report.get('verdict', verdict(report)).upper()} "
             f"(commit {report.get('commit', '?')}, {report.get('wall_s', '?')} s)"]
    lines.extend(f"- {key}: {value}" for key, value in (report.get("headline") or {}).items())
    problems = failures(report)
    if problems:
        lines.append(f"- failures ({len(problems)}):")
        lines.extend(f"  - {p}" for p in problems[:30])
        if len(problems) > 30:
            lines.append(f"  - … {len(problems) - 30} more in the JSON report")
    return lines
