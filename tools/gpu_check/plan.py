"""What the check runs: the cases, their options, and the time budget shared between them."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

# SAM 2.1 model names of `Sam2Options.model`, by the short name used on the command line.
MODELS = {"t": "sam2.1_hiera_t", "s": "sam2.1_hiera_s", "b+": "sam2.1_hiera_b+"}
# fp32: float32 without TF32 (the exactness setting); bf16: SAM 2's own inference setting (autocast + TF32);
# compile: bf16 with torch.compile on the image encoder, memory attention/encoder and decoder.
MODES: dict[str, dict[str, Any]] = {
    "fp32": {"dtype": "float32", "tf32": False, "compile": False},
    "bf16": {"dtype": "bfloat16", "tf32": True, "compile": False},
    "compile": {"dtype": "bfloat16", "tf32": True, "compile": True},
}


@dataclass(frozen=True)
class Case:
    kind: str  # "backend" (Segmenter.track in a loop) or "service" (ZeroMQ -> service -> results)
    model: str  # a key of MODELS
    particles: int
    mode: str  # a key of MODES

    @property
    def name(self) -> str:
        return f"{self.kind}/{self.model}/p{self.particles}/{self.mode}"

    def options(self, device: str, image_size_px: int) -> dict[str, Any]:
        """The `[segmenter.options]` table of this case: random weights, seeded."""
        return {"model": MODELS[self.model], "random_weights": True, "seed": 0, "device": device,
                "image_size_px": image_size_px, **MODES[self.mode]}


def cases(models: list[str], particles: list[int], modes: list[str],
          service_models: list[str], service_particles: list[int], service_modes: list[str]) -> list[Case]:
    """Service cases first (the headline target), then backend cases by model, mode, particle count."""
    out = [Case("service", m, p, mode) for m in service_models for mode in service_modes for p in service_particles]
    out += [Case("backend", m, p, mode) for m in models for mode in modes for p in particles]
    return out


class Budget:
    """A wall-clock budget shared by the cases: each gets an equal share of what is left.

    A case that finishes early leaves its time to the ones after it. Warm-up (the prompt frame, the memory
    fill and, with compile, compilation) counts against the case's share, so a slow compile shortens that
    case's measurement, not the whole run's end.
    """

    # Service cases weigh twice (the headline target); compile cases three times (compiling takes tens of
    # seconds on its own, and it is part of their share).
    SERVICE_WEIGHT = 2.0
    COMPILE_WEIGHT = 3.0

    def __init__(self, total_s: float) -> None:
        self.deadline = time.monotonic() + total_s
        self.total_s = total_s

    def left_s(self) -> float:
        return self.deadline - time.monotonic()

    def weight(self, case: Case) -> float:
        base = self.SERVICE_WEIGHT if case.kind == "service" else 1.0
        return base * (self.COMPILE_WEIGHT if MODES[case.mode]["compile"] else 1.0)

    def share(self, case: Case, remaining_cases: list[Case]) -> float:
        """Seconds for ``case``: its weight's share of the time left."""
        weights = sum(self.weight(c) for c in remaining_cases)
        return max(self.left_s(), 0.0) * self.weight(case) / max(weights, 1.0)
