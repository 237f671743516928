"""``python -m tools.gpu_check``: run the GPU check, or prepare/install its wheels. ``--help`` lists the options."""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from tools.gpu_check import report as reporting
from tools.gpu_check.plan import MODELS, MODES, Budget, cases

# A CPU smoke run at a tiny size (what tests/test_gpu_check.py and --prepare-wheels run).
TINY = ["--device", "cpu", "--image-size-px", "128", "--frame-px", "256", "--fill-frames", "2", "--models", "t",
        "--particles", "1", "--modes", "fp32", "--service-models", "t", "--service-particles", "2",
        "--service-modes", "bf16", "--frames", "20", "--sample-every", "5", "--budget-s", "240", "--threads", "1"]
MIN_CASE_S = 3.0  # a case with less time than this left is skipped, not half-run
# A compile case with less than this is skipped: compiling alone would run past the budget's end.
MIN_COMPILE_CASE_S = 20.0


def _csv(kind: type) -> Any:
    return lambda text: [kind(item) for item in text.split(",") if item]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.gpu_check", description=__doc__)
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--image-size-px", type=int, default=1024)
    p.add_argument("--frame-px", type=int, default=1024, help="side of the square uint16 frames (divides 1024)")
    p.add_argument("--fill-frames", type=int, default=16, help="frames filling the memory window before measuring")
    p.add_argument("--models", type=_csv(str), default=list(MODELS), help="of t,s,b+")
    p.add_argument("--particles", type=_csv(int), default=[1, 4, 16])
    p.add_argument("--modes", type=_csv(str), default=list(MODES), help="of fp32,bf16,compile")
    p.add_argument("--service-models", type=_csv(str), default=["t"])
    p.add_argument("--service-particles", type=_csv(int), default=[1, 4, 16])
    p.add_argument("--service-modes", type=_csv(str), default=["bf16"])
    p.add_argument("--frames", type=int, default=2000, help="measured frames per case (fewer if the budget is spent)")
    p.add_argument("--budget-s", type=float, default=420.0,
                   help="wall seconds for all cases (default 420: with start-up, under 8 minutes)")
    p.add_argument("--rate", type=float, default=0.0,
                   help="service cases: camera frames/s (0: as fast as the service takes them, nothing dropped)")
    p.add_argument("--sample-every", type=int, default=50, help="memory sample every N measured frames")
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or "out/gpu_check"))
    p.add_argument("--tiny", action="store_true", help="the CPU smoke preset (overrides the case options)")
    p.add_argument("--prepare-wheels", type=Path, metavar="DIR", help="collect the wheels the check needs, then exit")
    p.add_argument("--python-version", default=f"{sys.version_info.major}.{sys.version_info.minor}",
                   help="--prepare-wheels: the device's Python (default: this one)")
    p.add_argument("--assume-preinstalled", type=_csv(str), default=["numpy"],
                   help="--prepare-wheels: distributions the device has beside torch and its requirements")
    p.add_argument("--install-from", type=Path, metavar="DIR", help="install the collected wheels offline, then exit")
    p.add_argument("--modules-json", type=Path, help=argparse.SUPPRESS)
    return p


def machine(device: str) -> dict[str, Any]:
    import torch

    info: dict[str, Any] = {"python": platform.python_version(), "torch": torch.__version__,
                            "platform": platform.platform(), "cpu_count": os.cpu_count(), "device_name": "cpu"}
    if device == "cuda":
        info.update(device_name=torch.cuda.get_device_name(0), cuda=torch.version.cuda,
                    gpu_memory_gib=round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1))
    return info


def run_cases(args: argparse.Namespace, save: Any) -> dict[str, Any]:
    from tools.gpu_check.backend_case import run_backend_case
    from tools.gpu_check.service_case import run_service_case

    plan = cases(args.models, args.particles, args.modes,
                 args.service_models, args.service_particles, args.service_modes)
    budget = Budget(args.budget_s)
    started = time.monotonic()
    done: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    failed: list[dict[str, str]] = []
    for i, case in enumerate(plan):
        seconds = budget.share(case, plan[i:])
        least = MIN_COMPILE_CASE_S if MODES[case.mode]["compile"] else MIN_CASE_S
        if seconds < least:
            reason = f"its share of the budget, {seconds:.0f} s, is under {least:.0f} s"
            skipped.append({"case": case.name, "reason": reason})
            print(f"SKIPPED {case.name}: {reason}", flush=True)
            continue
        print(f"[{time.monotonic() - started:6.1f} s] {case.name}: up to {args.frames} frames in {seconds:.0f} s",
              flush=True)
        try:
            if case.kind == "service":
                result = run_service_case(case, args.device, args.image_size_px, args.frames, seconds,
                                          args.sample_every, args.rate, args.frame_px, args.fill_frames)
            else:
                result = run_backend_case(case, args.device, args.image_size_px, args.frames, seconds,
                                          args.sample_every, args.frame_px, args.fill_frames)
        except Exception as exc:  # one case failing (e.g. compile of hiera-t) must not lose the others
            failed.append({"case": case.name, "error": f"{type(exc).__name__}: {exc}"[:500]})
            print(f"FAILED {case.name}: {type(exc).__name__}: {exc}", flush=True)
            continue
        finally:
            _release(args.device)
        done.append(result)
        print(f"    {result['frames']} frames, {result['fps']:.1f} fps, p99 {result['latency_ms_p99']:.2f} ms, "
              f"peak {result['memory_peak_mib']:.0f} MiB, {result['memory_slope_mib_per_1000_frames']:+.2f} "
              f"MiB/1k frames", flush=True)
        if result["cut"]:
            print(f"CUT {case.name}: measured {result['frames']} of {args.frames} frames "
                  f"(its budget share was {seconds:.0f} s)", flush=True)
        # The report so far, after every case: a run killed at the device's time limit still leaves one.
        save({"cases": done, "skipped": skipped, "failed": failed, "wall_s": time.monotonic() - started,
              "complete": False})
    return {"cases": done, "skipped": skipped, "failed": failed, "wall_s": time.monotonic() - started,
            "complete": True}


def _release(device: str) -> None:
    gc.collect()
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.prepare_wheels:
        from tools.gpu_check import wheels

        manifest = wheels.prepare(args.prepare_wheels, args.python_version, TINY, set(args.assume_preinstalled))
        print(json.dumps({k: manifest[k] for k in ("total_mib", "under_carry_limit", "failed",
                                                    "foreign_python_tags")}, indent=1))
        return 0 if not manifest["failed"] and manifest["under_carry_limit"] else 1
    if args.install_from:
        from tools.gpu_check import wheels

        wheels.install(args.install_from)
        return 0
    if args.tiny:
        out, modules_json = args.out, args.modules_json
        args = parser().parse_args([*TINY, "--out", str(out)])
        args.modules_json = modules_json
    for name in args.models + args.service_models:
        if name not in MODELS:
            raise SystemExit(f"unknown model {name!r}: choose from {', '.join(MODELS)}")
    for name in args.modes + args.service_modes:
        if name not in MODES:
            raise SystemExit(f"unknown mode {name!r}: choose from {', '.join(MODES)}")
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: pass --device cpu for a smoke run")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(reporting.BANNER, flush=True)
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                if k not in ("prepare_wheels", "install_from", "modules_json", "python_version",
                             "assume_preinstalled")}
    head = {"random_weights": True,
            "warning": "random weights: speed and memory only; outputs are not segmentations",
            "machine": machine(args.device), "settings": settings}
    outcome = run_cases(args, lambda partial: reporting.write({**head, **partial}, args.out))
    json_path, md_path = reporting.write({**head, **outcome}, args.out)
    print(reporting.BANNER, flush=True)
    print(f"report: {json_path} and {md_path}", flush=True)
    if args.modules_json:
        args.modules_json.write_text(json.dumps(sorted({m.split(".")[0] for m in sys.modules})))
    return 1 if outcome["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
