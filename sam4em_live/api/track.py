"""`track`: the offline pipeline of ``sam4em-live track`` as one function call.

It runs the very pipeline the command runs (`sam4em_live.service.runs.offline_config` and
`run_offline`: the service with every-frame backpressure, the chosen backend, the recorder) and answers
with a `Run`. Nothing is computed differently: a ``track`` from Python and a ``track`` from the shell on
the same recording and prompts give the same trajectories.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import warnings
from collections.abc import Callable, Iterable, Mapping, Sized
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sam4em_live.api.prompts import as_edits
from sam4em_live.api.run import Run
from sam4em_live.particles import PromptError
from sam4em_live.service.runs import offline_config, probe_frames, run_offline

if TYPE_CHECKING:
    from sam4em_live.particles import ParticleEdit
    from sam4em_live.results import FrameResult, RunInfo
    from sam4em_live.sources.base import FrameSource

#: What ``source`` may be: a recording (any format the readers know), a (T, rows, columns) array, or frames.
SourceLike = str | Path | np.ndarray | Iterable[np.ndarray]
#: What ``prompts`` may be: a prompts file, one edit, or edits (`Point`, `Box`, `Remove`).
PromptsLike = str | Path | Any


class ProgressCallback:
    """A sink that calls ``report(frames_done, total)`` after each result (``track(progress=function)``)."""

    def __init__(self, report: Callable[[int, int | None], None], total: int | None) -> None:
        self._report = report
        self._total = total
        self._done = 0

    def open(self, run: RunInfo) -> None:
        pass

    def consume(self, result: FrameResult) -> None:
        self._done += 1
        self._report(self._done, self._total)

    def on_status(self, status: Mapping[str, Any]) -> None:
        pass

    def close(self) -> None:
        pass


class RunWarning(RuntimeWarning):
    """A run that did not end ``complete`` (e.g. ``masks.tif`` could not be written); see ``Run.reason``."""


def track(
    source: SourceLike,
    prompts: PromptsLike,
    *,
    backend: str | None = None,
    fps: float | None = None,
    pixel_size_nm: float | None = None,
    out: str | Path | None = None,
    progress: bool | Callable[[int, int | None], None] = True,
    options: Mapping[str, Any] | None = None,
    config: str | Path | None = None,
    masks: bool = True,
) -> Run:
    """Track particles through a recording, every frame; returns the `Run`.

    Parameters
    ----------
    source
        A recording path (TIFF/OME-TIFF stack, folder of JPEG/PNG frames, or any format a reader is
        registered for), a NumPy array (T, rows, columns) (or one (rows, columns) frame), or any iterable
        of 2-D frames (read one at a time).
    prompts
        ``Point(...)``, ``Box(...)``, ``Remove(...)`` objects (one or a list), or a prompts JSON file.
    backend
        Segmenter backend (``sam4em_live.segmenters()`` lists them; default ``embedded``).
    fps, pixel_size_nm
        Calibration when the recording's metadata lacks it (they override it).
    out
        The run folder to create (must not exist). ``None``: a temporary folder, removed with the `Run`
        (``run.close()`` or garbage collection); ``run.save(path)`` keeps it.
    progress
        Show a progress bar (tqdm, on stderr); or a function ``progress(frames_done, total)`` called after
        each frame's result (``total`` None when the source's length is unknown), e.g. a widget's bar.
    options
        Backend options (``[segmenter.options]``; e.g. ``{"device": "cuda"}`` for sam2).
    config
        A service config TOML for every other setting (statistics window, quotas...).
    masks
        Write ``masks.tif`` (the label masks, ``run.masks``).

    Raises `PromptError` for prompts that cannot apply (outside the frame, after the last frame),
    `ConfigError` for a bad backend or option, FileNotFoundError for a missing recording, and whatever
    the pipeline failed with. A run that ends other than ``complete`` (e.g. its masks could not be
    written) warns with `RunWarning` and says why in ``run.reason``.
    """
    folder, temporary = _run_folder(out)
    run_source, source_table, shape, n_frames = _frames(source, fps, pixel_size_nm)
    try:
        edits = as_edits(prompts, shape)
        _check_frames(edits, n_frames)
        overrides: dict[str, Any] = {"recorder.write_masks": masks}
        if isinstance(prompts, (str, Path)):
            overrides["prompts"] = str(Path(prompts).absolute())  # run.json names the file, as `track` does
            edits = []  # the builder loads the file named in the config
        cfg = offline_config(source_table, folder.parent, backend=backend, fps=fps, pixel_size_nm=pixel_size_nm,
                             config_path=Path(config) if config is not None else None, overrides=overrides,
                             segmenter_options=dict(options or {}))
        reporter = [ProgressCallback(progress, n_frames)] if callable(progress) else []
        run_dir = run_offline(cfg, folder, n_frames, progress is True, source=run_source, edits=edits,
                              extra_sinks=reporter)
    except BaseException:
        if temporary:
            shutil.rmtree(folder.parent, ignore_errors=True)
        raise
    # A temporary run folder's parent was made for it alone: both go with the Run.
    run = Run(run_dir, remove_on_close=folder.parent if temporary else None)
    if run.status != "complete":
        warnings.warn(f"run {run.run_id} is {run.status}: {run.reason}", RunWarning, stacklevel=2)
    return run


def _run_folder(out: str | Path | None) -> tuple[Path, bool]:
    """The run folder to create, and whether it is temporary."""
    if out is None:
        return Path(tempfile.mkdtemp(prefix="sam4em-track-")) / time.strftime("run-%Y%m%d-%H%M%S"), True
    folder = Path(out)
    if folder.exists():
        raise FileExistsError(f"output directory already exists: {folder} (choose a new out=)")
    return folder, False


def _frames(source: SourceLike, fps: float | None, pixel_size_nm: float | None,
            ) -> tuple[FrameSource | None, dict[str, Any], tuple[int, int] | None, int | None]:
    """(source to run or None, the config's ``[source]`` table, frame shape, number of frames)."""
    if isinstance(source, (str, Path)):
        path = Path(source).absolute()  # run.json names the recording from anywhere
        shape, n_frames = probe_frames(path)
        return None, {"kind": "replay", "path": str(path), "as_fast_as_possible": True, "fps": fps}, shape, n_frames
    # Frames in memory: the config only says so (run.json); the calibration overrides apply to them as to a file.
    table = {"kind": "python", "frames": "given to sam4em_live.track"}
    if isinstance(source, np.ndarray):
        from sam4em_live.sources.array_source import ArraySource

        frames = source[None] if source.ndim == 2 else source
        array_source = ArraySource(frames, series_id="array")
        return array_source, table, array_source.series.shape, int(frames.shape[0])
    if isinstance(source, Iterable):
        from sam4em_live.sources.iterable_source import IterableSource

        known = len(source) if isinstance(source, Sized) else None
        iterable_source = IterableSource(source, n_frames=known)
        return iterable_source, table, iterable_source.series.shape, known
    raise TypeError(f"source must be a path, an array or an iterable of frames, got {type(source).__name__}")


def _check_frames(edits: list[ParticleEdit], n_frames: int | None) -> None:
    """A prompt after the last frame would never apply: a run of 0 rows that looks like a success."""
    if n_frames is None:
        return
    beyond = sorted({e.frame for e in edits if e.frame is not None and e.frame >= n_frames})
    if beyond:
        raise PromptError(f"prompt(s) for frame(s) {', '.join(map(str, beyond[:5]))}"
                          f"{' ...' if len(beyond) > 5 else ''} after the last frame ({n_frames} frames, "
                          f"0-{n_frames - 1})")
