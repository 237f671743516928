"""Per-frame figures of one case: fps, latency percentiles and memory over time (flat or not)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

MIB = 1024.0 * 1024.0


def device_memory_mib(device: str) -> float:
    """Memory the case holds now: CUDA memory allocated by torch, or the process RSS on CPU."""
    if device == "cuda":
        import torch

        return torch.cuda.memory_allocated() / MIB
    return rss_mib()


def peak_memory_mib(device: str, samples: list[float]) -> float:
    """``torch.cuda.max_memory_allocated`` since the case's reset, or the largest RSS sample on CPU."""
    if device == "cuda":
        import torch

        return torch.cuda.max_memory_allocated() / MIB
    return max(samples, default=rss_mib())


def reset_peak(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def rss_mib() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


@dataclass
class FrameLog:
    """Latency of every measured frame and memory every ``sample_every`` frames."""

    device: str
    sample_every: int
    latencies_ms: list[float] = field(default_factory=list)
    memory: list[tuple[int, float]] = field(default_factory=list)  # (measured frame number, MiB)

    def add(self, latency_ms: float) -> None:
        self.latencies_ms.append(latency_ms)
        if len(self.latencies_ms) % self.sample_every == 1 or self.sample_every == 1:
            self.memory.append((len(self.latencies_ms), device_memory_mib(self.device)))

    def figures(self, wall_s: float) -> dict[str, Any]:
        """fps over the measured wall time, latency percentiles, peak memory and its slope per 1,000 frames."""
        lat = np.asarray(self.latencies_ms, dtype=float)
        n = len(lat)
        mib = [m for _, m in self.memory]
        slope = memory_slope_per_1000(self.memory)
        return {
            "frames": n,
            "fps": n / wall_s if wall_s > 0 and n else float("nan"),
            "latency_ms_mean": float(lat.mean()) if n else float("nan"),
            "latency_ms_p50": float(np.percentile(lat, 50)) if n else float("nan"),
            "latency_ms_p99": float(np.percentile(lat, 99)) if n else float("nan"),
            "latency_ms_max": float(lat.max()) if n else float("nan"),
            "memory_kind": "cuda_allocated" if self.device == "cuda" else "process_rss",
            "memory_peak_mib": peak_memory_mib(self.device, mib),
            "memory_first_mib": mib[0] if mib else float("nan"),
            "memory_last_mib": mib[-1] if mib else float("nan"),
            "memory_slope_mib_per_1000_frames": slope,
            # Flat: under 1 MiB per 1,000 frames, i.e. < 0.1 GiB over a 100k-frame (20 min at 80 fps) run.
            "memory_flat": bool(abs(slope) < 1.0),
            "memory_samples": [[frame, round(m, 3)] for frame, m in self.memory],
        }


def memory_slope_per_1000(samples: list[tuple[int, float]]) -> float:
    """Least-squares slope of memory against frame number, in MiB per 1,000 frames (0 with < 2 samples).

    The first sample is left out when there are more than three: the allocator's caches settle over the
    first frames, and that step is not growth.
    """
    points = samples[1:] if len(samples) > 3 else samples
    if len(points) < 2:
        return 0.0
    frames = np.asarray([f for f, _ in points], dtype=float)
    mib = np.asarray([m for _, m in points], dtype=float)
    if np.ptp(frames) == 0:
        return 0.0
    return float(np.polyfit(frames, mib, 1)[0] * 1000.0)
