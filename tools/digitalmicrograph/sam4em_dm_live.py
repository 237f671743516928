# $BACKGROUND$
"""Publish DigitalMicrograph's live view to sam4em-live: open this file in DigitalMicrograph's Python
window (File > Open, then Execute), with the camera's live view running. docs/live_sources.md has the
set-up (pyzmq and msgpack in DigitalMicrograph's Python) and the limits.

The first line makes DigitalMicrograph run the script on a background thread, so its user interface
stays live; stop it with the STOP_FILE (create it) or by closing DigitalMicrograph.

Outside DigitalMicrograph it is a dry run over a recording, e.g.
``python tools/digitalmicrograph/sam4em_dm_live.py --file stack.tif --fps 25``.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

# ---- settings for the microscope PC -------------------------------------------------------------------
ENDPOINT = "tcp://127.0.0.1:5555"  # bind here; sam4em-live serve connects ([source] endpoint = ...)
IMAGE_NAME = None  # the live view's image name, e.g. "OneView View"; None = the front-most image
POLL_INTERVAL_S = 0.002  # how often the live image is looked at
STOP_FILE = os.path.join(os.path.expanduser("~"), "sam4em_dm_live.stop")  # create this file to stop
TOOLS_FOLDER = None  # the folder holding this "digitalmicrograph" folder, if DigitalMicrograph cannot find it
# --------------------------------------------------------------------------------------------------------


def _import_tools():
    here = TOOLS_FOLDER or (os.path.dirname(os.path.dirname(os.path.abspath(__file__))) if "__file__" in globals()
                            else None)
    if here and here not in sys.path:
        sys.path.insert(0, here)
    from digitalmicrograph.adapter import FileLiveView
    from digitalmicrograph.live_view import LiveViewPublisher

    return FileLiveView, LiveViewPublisher


class _StopWatcher(threading.Event):
    """A stop event that is also set when STOP_FILE appears (DigitalMicrograph has no Ctrl-C for scripts)."""

    def __init__(self, stop_file):
        super().__init__()
        self.stop_file = stop_file

    def is_set(self):
        if not super().is_set() and self.stop_file and os.path.exists(self.stop_file):
            os.remove(self.stop_file)
            self.set()
        return super().is_set()


def main(argv=None):
    FileLiveView, LiveViewPublisher = _import_tools()
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--file", help="dry run: a TIFF stack or .npy shown as a live view")
    parser.add_argument("--fps", type=float, default=25.0)
    parser.add_argument("--pixel-size-nm", type=float, default=None)
    parser.add_argument("--endpoint", default=ENDPOINT)
    parser.add_argument("--frames", type=int, default=None, help="stop after this many frames")
    parser.add_argument("--stop-file", default=STOP_FILE)
    args = parser.parse_args(argv if argv is not None else (sys.argv[1:] if "--file" in sys.argv else []))
    if args.file:
        view = FileLiveView(args.file, args.fps, args.pixel_size_nm)
    else:
        from digitalmicrograph.dm_adapter import DigitalMicrographLiveView

        view = DigitalMicrographLiveView(IMAGE_NAME)
    publisher = LiveViewPublisher(view, args.endpoint)
    print(f"sam4em-live: publishing {view.name} on {publisher.endpoint}", flush=True)
    stop = _StopWatcher(args.stop_file)
    t0 = time.time()
    try:
        sent = publisher.run(stop, POLL_INTERVAL_S, args.frames)
    finally:
        publisher.close()
    elapsed = max(time.time() - t0, 1e-9)
    print(f"sam4em-live: sent {sent} frames in {elapsed:.1f} s ({sent / elapsed:.1f} fps; {publisher.unchanged_looks} looks found no new frame)", flush=True)
    return 0


if __name__ == "__main__":
    main()
