"""`simulate`: an LPTEM clip with exact ground truth, as ``sam4em-live simulate`` writes it.

The clip is rendered frame by frame into a folder (docs/simulator.md: ``video.tif``, ``gt_masks.tif``,
``gt_trajectories.csv``, prompts files, ``meta.json``), so memory stays bounded for long 1024² clips.
With ``out=None`` the folder is temporary and removed with the `Simulation` (``close()`` or garbage
collection).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from sam4em_live.frames import Calibration
from sam4em_live.io.prompts_file import load_prompts
from sam4em_live.sim.outputs import PROMPT_FILES, simulate_to_folder

if TYPE_CHECKING:
    from collections.abc import Sequence

    import numpy as np

    from sam4em_live.particles import ParticleEdit
    from sam4em_live.sim.spec import SimulationSpec


class Simulation:
    """A simulated clip on disk: ``video`` (the TIFF to track), ``truth``, ``prompts``, ``calibration``.

    - ``video``: path of ``video.tif`` (with pixel size and frame interval in its metadata).
    - ``prompts``: point prompts on the true particles at the prompt frames (`Point`-like `Prompt` records);
      ``prompts_of("box")`` / ``prompts_of("point+box")`` for the others.
    - ``truth``: the true trajectories (frame, particle, x, y, angle, area, t_s, x_nm, y_nm).
    - ``frames``: the frames as a (T, rows, columns) array, read on use (memory-mapped when possible).
    - ``meta``: meta.json (spec, seed, CNR/SNR per frame).
    """

    def __init__(self, folder: str | Path, *, remove_on_close: Path | None = None) -> None:
        self.folder = Path(folder)
        self.meta: dict[str, Any] = json.loads((self.folder / "meta.json").read_text())
        self._remove = weakref.finalize(self, shutil.rmtree, remove_on_close, True) if remove_on_close else None

    @property
    def video(self) -> Path:
        return self.folder / "video.tif"

    @property
    def calibration(self) -> Calibration:
        cal = self.meta["calibration"]
        return Calibration(pixel_size_nm=cal.get("pixel_size_nm"), fps=cal.get("fps"))

    @property
    def prompts(self) -> list[ParticleEdit]:
        return self.prompts_of("point")

    def prompts_of(self, kind: str = "point") -> list[ParticleEdit]:
        """Prompts of ``kind`` (``point``, ``box``, ``point+box``) from the truth at the prompt frames."""
        if kind not in PROMPT_FILES:
            raise ValueError(f"kind must be one of {', '.join(PROMPT_FILES)}, got {kind!r}")
        return load_prompts(self.folder / PROMPT_FILES[kind])

    @property
    def truth(self) -> pd.DataFrame:
        return pd.read_csv(self.folder / "gt_trajectories.csv")

    @property
    def frames(self) -> np.ndarray:
        import tifffile

        try:
            return tifffile.memmap(self.video, mode="r")
        except ValueError:  # compressed or otherwise not mappable: read it
            return tifffile.imread(self.video)

    def close(self) -> None:
        """Remove a temporary clip folder (``simulate(..., out=None)``)."""
        if self._remove is not None:
            self._remove()

    def __repr__(self) -> str:
        return f"Simulation({self.meta.get('preset')!r}, frames={self.meta.get('frames')}, folder={str(self.folder)!r})"


def simulate(
    preset: str = "sam4em-50nm",
    frames: int = 250,
    *,
    seed: int = 0,
    spec: SimulationSpec | str | Path | None = None,
    out: str | Path | None = None,
    prompt_frames: Sequence[int] = (0,),
    jpeg: bool = False,
    progress: bool = True,
) -> Simulation:
    """Simulate an LPTEM clip of ``frames`` frames with exact ground truth; returns the `Simulation`.

    ``preset`` names a built-in spec (``sam4em_live.presets()`` lists them); ``spec`` (a `SimulationSpec` or
    a JSON file) replaces it. Same ``seed``, same clip. ``out`` is the folder written (created; files of the
    same names replaced); ``None``: a temporary one, removed with the `Simulation`. ``prompt_frames``: the
    frames the truth prompts (``Simulation.prompts``) are taken on (the command's default is 0 and 125).
    """
    from sam4em_live.sim.presets import get_preset
    from sam4em_live.sim.spec import SimulationSpec

    chosen = spec if isinstance(spec, SimulationSpec) else (
        SimulationSpec.from_file(str(spec)) if spec is not None else get_preset(preset))
    temporary = Path(tempfile.mkdtemp(prefix="sam4em-sim-")) if out is None else None
    folder = Path(out) if out is not None else temporary
    assert folder is not None
    bar = _progress_bar(frames, f"simulate {chosen.name}") if progress else None
    try:
        simulate_to_folder(chosen, frames, seed, folder, jpeg=jpeg, prompt_frames=prompt_frames,
                           on_frame=(lambda _index: bar.update(1)) if bar is not None else None)
    except BaseException:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
        raise
    finally:
        if bar is not None:
            bar.close()
    return Simulation(folder, remove_on_close=temporary)


def _progress_bar(total: int, desc: str) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, unit="frame", desc=desc)
