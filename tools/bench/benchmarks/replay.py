"""Replay reading: frames/s of `ReplaySource` as fast as possible, per kind of input file.

Writes a ``frames`` x ``edge``² uint16 noise stack three ways (uncompressed TIFF: memory-mapped; zlib
TIFF: page by page; a folder of 8-bit RGB-grey JPEGs, quality 95) and times a full pass over each, the
consumer summing every pixel.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import numpy as np

from tools.bench.figures import integer
from tools.bench.registry import Measurement, RunContext, benchmark
from tools.bench.schema import Metric, ParamValue

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path


def _replay_fps(path: Path) -> float:
    from sam4em_live.sources.base import EndOfStream
    from sam4em_live.sources.replay import ReplaySource

    source = ReplaySource(path, as_fast_as_possible=True)
    source.open()
    n, t0 = 0, time.perf_counter()
    while True:
        try:
            frame = source.next_frame(0.1)
        except EndOfStream:
            break
        if frame is not None:
            frame.pixels.sum(dtype=np.uint64)  # a consumer reads every pixel
            n += 1
    elapsed = time.perf_counter() - t0
    source.close()
    return n / elapsed


@benchmark("replay", "ReplaySource frames/s: uncompressed TIFF, zlib TIFF, JPEG folder", {"frames": 200, "edge": 1024})
def replay(params: Mapping[str, ParamValue], context: RunContext) -> Measurement:
    from PIL import Image

    from sam4em_live.io.tiff_io import write_tiff_stack

    rng = np.random.default_rng(0)
    edge = integer(params, "edge")
    frames = rng.normal(1000, 30, (integer(params, "frames"), edge, edge)).astype(np.uint16)
    out = context.scratch
    write_tiff_stack(out / "raw.tif", frames, fps=80.0)
    write_tiff_stack(out / "zlib.tif", frames, fps=80.0, compression="zlib")
    (out / "jpegs").mkdir()
    for i, frame in enumerate(frames):
        grey = (frame >> 4).astype(np.uint8)
        Image.fromarray(np.stack([grey] * 3, axis=-1)).save(out / "jpegs" / f"{i:06d}.jpeg", quality=95)
    return Measurement({f"{name}_fps": Metric(_replay_fps(out / path), "frames/s", "higher")
                        for name, path in (("tiff_raw", "raw.tif"), ("tiff_zlib", "zlib.tif"),
                                           ("jpeg_folder", "jpegs"))})
