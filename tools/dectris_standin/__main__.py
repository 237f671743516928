"""``python -m tools.dectris_standin``: publish synthetic frames (or a recording) as a DECTRIS detector would."""

from __future__ import annotations

import argparse
import threading
from pathlib import Path

import numpy as np

from tools.dectris_standin.publisher import DectrisStandIn, DetectorSettings, publish_series


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.dectris_standin", description=__doc__)
    parser.add_argument("--stream", choices=("v1", "v2"), default="v2")
    parser.add_argument("--compression", choices=("none", "bslz4", "lz4"), default="bslz4")
    parser.add_argument("--endpoint", default=None, help="default tcp://127.0.0.1:9999 (v1) / :31001 (v2)")
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--fps", type=float, default=50.0)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--recording", type=Path, default=None, help="replay this recording's frames instead")
    args = parser.parse_args(argv)
    endpoint = args.endpoint or ("tcp://127.0.0.1:9999" if args.stream == "v1" else "tcp://127.0.0.1:31001")
    if args.recording is not None:
        from sam4em_live.io.reader_registry import open_reader

        reader = open_reader(args.recording)
        frames = [reader.read(i) for i in range(min(args.frames, reader.n_frames))]
    else:
        rng = np.random.default_rng(0)
        frames = [rng.poisson(20, (args.size, args.size)).astype(np.uint16) for _ in range(args.frames)]
    settings = DetectorSettings(shape=frames[0].shape, dtype=frames[0].dtype.str, frame_time_s=1 / args.fps,
                                count_time_s=0.99 / args.fps)
    standin = DectrisStandIn(args.stream, args.compression, endpoint, settings)
    print(f"DECTRIS stand-in ({args.stream}, {args.compression}) on {standin.endpoint}: waiting for a receiver")
    try:
        sent = publish_series(standin, frames, fps=args.fps, stop=threading.Event())
    finally:
        standin.close()
    print(f"sent {sent} frames")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
