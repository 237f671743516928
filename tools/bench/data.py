"""Shared benchmark data: simulated clips with exact ground truth, cached on disk.

A clip is the simulator's own output folder (`sam4em_live.sim.outputs.write_simulation`: ``video.tif``,
``gt_masks.tif``, truth table, prompt files), so a benchmark that needs files (replay, accuracy) and one
that needs arrays read the same thing. The cache key names the preset, frame count, seed and a digest of
the simulator's source in this working tree: a changed simulator makes new clips, and a child process
measuring an older revision reads the clips the working tree made (both sides of a compare see the same
frames). Clips are written to a temporary folder and renamed, so an interrupted run leaves no half clip.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tools.bench.provenance import REPO_ROOT

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

#: Prompt frames written into every cached clip (the SAM4EM paper's protocol: frames 0 and 125).
CLIP_PROMPT_FRAMES = (0, 125)


def simulator_digest() -> str:
    """Digest of the working tree's simulator source (``sam4em_live/sim/*.py``), 10 hex digits."""
    digest = hashlib.sha256()
    for path in sorted((REPO_ROOT / "sam4em_live" / "sim").glob("*.py")):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:10]


@dataclass(frozen=True)
class SimulatedClip:
    """A cached simulated clip: ``folder`` holds the simulator's output files."""

    folder: Path
    preset: str
    n_frames: int
    seed: int

    @cached_property
    def pixels(self) -> np.ndarray:
        """(T, rows, columns) detector frames, C-contiguous."""
        import numpy as np
        import tifffile

        return np.ascontiguousarray(tifffile.imread(self.folder / "video.tif"))

    @cached_property
    def truth(self) -> tuple[np.ndarray, pd.DataFrame, dict[str, Any]]:
        """(label stack, truth table, meta) as `sam4em_live.sim.outputs.read_ground_truth` gives them."""
        from sam4em_live.sim.outputs import read_ground_truth

        return read_ground_truth(self.folder)

    def prompts(self, frames: tuple[int, ...] = (0,), kind: str = "point") -> list[Any]:
        """Prompts from the truth on ``frames`` (one per particle in view), as the simulator makes them."""
        from sam4em_live.sim.video import prompts_from_truth

        labels, table, _ = self.truth
        return prompts_from_truth(labels, table, frames, kind)  # type: ignore[arg-type]

    def calibration(self) -> Any:
        from sam4em_live.sim.presets import get_preset
        from sam4em_live.sim.video import calibration_of

        return calibration_of(get_preset(self.preset))


def simulated_clip(cache: Path, preset: str, n_frames: int, seed: int = 0) -> SimulatedClip:
    """The clip of ``preset`` with ``n_frames`` frames and ``seed``, simulated once and then read from ``cache``."""
    folder = cache / "clips" / f"{preset}-n{n_frames}-s{seed}-{simulator_digest()}"
    if not (folder / "meta.json").is_file():
        from sam4em_live.sim.outputs import write_simulation
        from sam4em_live.sim.presets import get_preset
        from sam4em_live.sim.video import simulate_video

        folder.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        try:
            write_simulation(simulate_video(get_preset(preset), n_frames, seed), staging,
                             prompt_frames=CLIP_PROMPT_FRAMES)
            try:
                staging.rename(folder)
            except OSError:  # another run finished the same clip first
                if not (folder / "meta.json").is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return SimulatedClip(folder, preset, n_frames, seed)
