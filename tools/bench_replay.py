"""Benchmark replay reading: frames/s of `ReplaySource` as fast as possible, per input kind.

Writes a 1024² uint16 stack three ways (uncompressed TIFF: memory-mapped; zlib TIFF: page by page; JPEG
folder of 8-bit RGB grey frames) and times a full as-fast-as-possible pass over each, touching every pixel
(sum) as a consumer would. Prints one line per kind and a final JSON line. Usage::

    python tools/bench_replay.py [--frames 200] [--edge 1024]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from sam4em_live.io.tiff_io import write_tiff_stack
from sam4em_live.sources.base import EndOfStream
from sam4em_live.sources.replay import ReplaySource


def replay_fps(path: Path) -> tuple[float, bool]:
    source = ReplaySource(path, as_fast_as_possible=True)
    source.open()
    mapped = bool(source.series.metadata.get("memory_mapped"))
    n, total, t0 = 0, 0, time.perf_counter()
    while True:
        try:
            frame = source.next_frame(0.1)
        except EndOfStream:
            break
        if frame is not None:
            total += int(frame.pixels.sum(dtype=np.uint64))  # a consumer reads every pixel
            n += 1
    elapsed = time.perf_counter() - t0
    source.close()
    return n / elapsed, mapped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--edge", type=int, default=1024)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    frames = rng.normal(1000, 30, (args.frames, args.edge, args.edge)).astype(np.uint16)
    results: dict[str, object] = {"frames": args.frames, "edge_px": args.edge}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        write_tiff_stack(out / "raw.tif", frames, fps=80.0)
        write_tiff_stack(out / "zlib.tif", frames, fps=80.0, compression="zlib")
        (out / "jpegs").mkdir()
        for i, frame in enumerate(frames):
            grey = (frame >> 4).astype(np.uint8)
            Image.fromarray(np.stack([grey] * 3, axis=-1)).save(out / "jpegs" / f"{i:06d}.jpeg", quality=95)
        for name, path in (("tiff_raw", out / "raw.tif"), ("tiff_zlib", out / "zlib.tif"), ("jpeg_folder", out / "jpegs")):
            fps, mapped = replay_fps(path)
            print(f"{name:12s} {fps:8.1f} frames/s  (memory-mapped: {mapped})")
            results[f"{name}_fps"] = fps
    print(json.dumps(results))


if __name__ == "__main__":
    main()
