"""The parts every chaos case uses: a real ``sam4em-live serve`` process, a frame feed, status and RSS probes.

Everything binds or connects on 127.0.0.1 only, on ports the kernel picks (port 0) or that are free at the
time. The service under test is the real command line (``python -m sam4em_live serve -c CONFIG``) so a
crash is an exit status and a hang is a control channel that stops answering, as an operator would see.
"""

from __future__ import annotations

import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import numpy as np
import zmq

from sam4em_live.control.schema import decode_reply, encode_request
from sam4em_live.frames import Calibration, SeriesInfo
from sam4em_live.wire import encode_frame, encode_series_end, encode_series_start

REPO = Path(__file__).resolve().parents[2]
#: Particles of the synthetic video: (x, y) centre in pixels of a 512² frame; scaled to other sizes.
_CENTRES_512 = ((140.0, 160.0), (360.0, 300.0), (250.0, 420.0))
_RADIUS_512 = 14.0
#: Period of the synthetic motion in frames: the video is a loop, so tracking goes on for ever.
CYCLE_FRAMES = 64


# ------------------------------------------------------------------ synthetic frames


@dataclass(frozen=True)
class SyntheticVideo:
    """A loop of ``CYCLE_FRAMES`` frames with dark disks moving on a circle (known truth, cheap to send)."""

    frames: np.ndarray  # (CYCLE_FRAMES, H, W) uint16
    centres: tuple[tuple[float, float], ...]  # (x, y) at frame 0
    radius: float

    @classmethod
    def make(cls, size: int = 256, seed: int = 0) -> SyntheticVideo:
        scale = size / 512.0
        centres = tuple((x * scale, y * scale) for x, y in _CENTRES_512)
        radius = max(4.0, _RADIUS_512 * scale)
        rng = np.random.default_rng(seed)
        rows, cols = np.mgrid[0:size, 0:size]
        frames = np.empty((CYCLE_FRAMES, size, size), np.uint16)
        for t in range(CYCLE_FRAMES):
            img = np.full((size, size), 1000.0)
            for cx, cy in _positions(centres, scale, t):
                img[(cols - cx) ** 2 + (rows - cy) ** 2 <= radius**2] = 600.0
            img += rng.normal(0, 20, img.shape)
            frames[t] = np.clip(img, 0, 65535).astype(np.uint16)
        return cls(frames, centres, radius)

    def truth(self, index: int) -> list[tuple[float, float]]:
        """(x, y) of each particle (id = position + 1) in frame ``index``, pixels."""
        return _positions(self.centres, self.shape[0] / 512.0, index % CYCLE_FRAMES)

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.frames.shape[1]), int(self.frames.shape[2]))

    def pixels(self, index: int) -> np.ndarray:
        """Frame ``index`` of the endless loop (a fresh array: ZeroMQ may still read the one sent before)."""
        return self.frames[index % CYCLE_FRAMES].copy()

    def prompts_file(self, path: Path) -> Path:
        """Write a prompts file seeding every disk with a box at frame 0."""
        r = self.radius + 3
        prompts = [{"frame": 0, "particle": i + 1, "box": [x - r, y - r, x + r, y + r]}
                   for i, (x, y) in enumerate(self.centres)]
        path.write_text(json.dumps({"prompts": prompts}), encoding="utf-8")
        return path


def _positions(centres: tuple[tuple[float, float], ...], scale: float, t: int) -> list[tuple[float, float]]:
    amplitude = 3.0 * scale
    phase = 2 * math.pi * t / CYCLE_FRAMES
    return [(x + amplitude * math.cos(phase) - amplitude, y + amplitude * math.sin(phase)) for x, y in centres]


# ------------------------------------------------------------------ frame feed


class FrameFeed:
    """A PUSH socket the service's PULL source connects to; sends never block longer than ``timeout_ms``.

    PUSH keeps messages until the peer takes them (no silent loss as with PUB), so every message sent is a
    message the service must account for. A send that times out means the service stopped reading.
    """

    def __init__(self, endpoint: str = "tcp://127.0.0.1:0", timeout_ms: int = 2000, hwm: int = 64) -> None:
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self.socket = self.context.socket(zmq.PUSH)
        self.socket.setsockopt(zmq.SNDHWM, hwm)
        self.socket.setsockopt(zmq.SNDTIMEO, timeout_ms)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.bind(endpoint)
        self.endpoint = self.socket.getsockopt_string(zmq.LAST_ENDPOINT)
        self.sent = 0
        self.send_timeouts = 0

    def send(self, parts: list[Any]) -> bool:
        try:
            self.socket.send_multipart(parts, copy=True)
        except zmq.Again:
            self.send_timeouts += 1
            return False
        self.sent += 1
        return True

    def series_start(self, series_id: str, shape: tuple[int, int], fps: float = 200.0) -> bool:
        info = SeriesInfo(series_id, shape, "<u2", Calibration(pixel_size_nm=1.0, fps=fps))
        return self.send(encode_series_start(info))

    def frame(self, video: SyntheticVideo, series_id: str, index: int) -> bool:
        return self.send(encode_frame(video.pixels(index), series_id, index, time.time()))

    def series_end(self, series_id: str, n_frames: int | None = None) -> bool:
        return self.send(encode_series_end(series_id, n_frames))

    def close(self) -> None:
        self.socket.close(linger=0)


def paced(fps: float, count: int, stop: threading.Event | None = None) -> Any:
    """Yield 0..count-1 at ``fps`` on monotonic deadlines (no drift; a late sender does not burst)."""
    t0 = time.monotonic()
    for k in range(count):
        if stop is not None and stop.is_set():
            return
        delay = t0 + k / fps - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        elif delay < -2 / fps:
            t0 = time.monotonic() - k / fps
        yield k


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ------------------------------------------------------------------ the service under test


def service_config(work: Path, frame_endpoint: str, out_dir: Path, **sections: dict[str, Any]) -> Path:
    """Write a serve config (TOML) for a loopback service reading frames from ``frame_endpoint``."""
    data: dict[str, dict[str, Any]] = {
        "source": {"kind": "zmq", "endpoint": frame_endpoint, "socket": "pull", "mode": "connect"},
        "segmenter": {"backend": "threshold"},
        "recorder": {"out_dir": str(out_dir)},
        "publisher": {"endpoint": "tcp://127.0.0.1:0"},
        "control": {"endpoint": "tcp://127.0.0.1:0"},
        "calibration": {"pixel_size_nm": 1.0, "fps": 200.0},
        "pipeline": {"status_interval_s": 0.5, "backpressure": "every-frame"},
    }
    for name, values in sections.items():
        data.setdefault(name, {}).update(values)
    path = work / "chaos-service.toml"
    path.write_text(_toml(data), encoding="utf-8")
    return path


def _toml(data: dict[str, dict[str, Any]]) -> str:
    lines: list[str] = []
    for section, values in data.items():
        lines.append(f"[{section}]")
        lines.extend(f"{key} = {json.dumps(value)}" for key, value in values.items())
        lines.append("")
    return "\n".join(lines)


_SERVING = re.compile(r"serving: run (\S+); results on (\S+); control on (\S+)")


@dataclass
class ServeProcess:
    """``sam4em-live serve`` in a child process, with the endpoints it printed."""

    process: subprocess.Popen[str]
    run_id: str
    results_endpoint: str
    control_endpoint: str
    log_path: Path
    started_s: float = field(default_factory=time.monotonic)
    _drainer: threading.Thread | None = None

    @classmethod
    def start(cls, config: Path, prompts: Path | None, log_path: Path, timeout_s: float = 60.0) -> ServeProcess:
        cmd = [sys.executable, "-m", "sam4em_live", "serve", "-c", str(config)]
        if prompts is not None:
            cmd += ["--prompts", str(prompts)]
        log = open(log_path, "w", encoding="utf-8")  # noqa: SIM115 -- the child owns it until it exits
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, cwd=REPO, env=env,
                                start_new_session=True)
        log.close()
        deadline = time.monotonic() + timeout_s
        assert proc.stdout is not None
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            match = _SERVING.search(line)
            if match:
                served = cls(proc, match[1], match[2], match[3], log_path)
                served._drainer = threading.Thread(target=served._drain, daemon=True)
                served._drainer.start()
                return served
        proc.kill()
        proc.wait()
        proc.stdout.close()
        raise RuntimeError(f"serve did not start (exit {proc.returncode}); see {log_path}:\n"
                           f"{log_path.read_text(encoding='utf-8')[-2000:]}")

    def _drain(self) -> None:
        assert self.process.stdout is not None
        with open(self.log_path, "a", encoding="utf-8") as log:
            for line in self.process.stdout:
                log.write(line)

    def _reap(self) -> None:
        """After exit: let the drain thread finish and close our end of the child's stdout."""
        if self._drainer is not None:
            self._drainer.join(5)
        if self.process.stdout is not None:
            self.process.stdout.close()

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, timeout_s: float = 30.0) -> dict[str, Any]:
        """SIGTERM (a clean stop, as Ctrl-C) and wait; a process still alive after ``timeout_s`` is a hang."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        t0 = time.monotonic()
        try:
            rc = self.process.wait(timeout_s)
            hung = False
        except subprocess.TimeoutExpired:
            hung = True
            self.process.kill()
            rc = self.process.wait()
        self._reap()
        return {"exit_code": rc, "stop_s": round(time.monotonic() - t0, 3), "hung_on_stop": hung}

    def kill(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGKILL)
        self.process.wait()
        self._reap()

    def children(self) -> list[tuple[int, str]]:
        """(pid, command line) of the direct children (the mask writer, multiprocessing's tracker)."""
        out = []
        for task in Path(f"/proc/{self.pid}/task").glob("*/children"):
            try:
                pids = task.read_text().split()
            except OSError:
                continue
            for pid in pids:
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                out.append((int(pid), cmd))
        return out

    def log_tail(self, chars: int = 1500) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-chars:]
        except OSError:
            return ""


def rss_kib(pid: int) -> int | None:
    """Resident set size of ``pid`` (KiB) from /proc, or None when it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


class Control:
    """A raw REQ client for the service's control channel that never blocks longer than ``timeout_s``."""

    def __init__(self, endpoint: str, timeout_s: float = 2.0) -> None:
        self.endpoint = endpoint
        self.timeout_ms = int(timeout_s * 1000)
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context.instance()
        self.socket = self._connect()
        self.timeouts = 0

    def _connect(self) -> zmq.Socket[bytes]:
        sock: zmq.Socket[bytes] = self.context.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.RCVTIMEO, self.timeout_ms)
        sock.setsockopt(zmq.SNDTIMEO, self.timeout_ms)
        sock.connect(self.endpoint)
        return sock

    def raw(self, parts: list[bytes], timeout_ms: int | None = None) -> bytes | None:
        """Send ``parts`` and return the reply, or None (and a fresh socket) when none came in time."""
        try:
            self.socket.send_multipart(parts)
            if not self.socket.poll(timeout_ms or self.timeout_ms):
                raise zmq.Again
            return self.socket.recv()
        except zmq.Again:
            self.timeouts += 1
            self.socket.close(linger=0)
            self.socket = self._connect()
            return None

    def request(self, op: str, args: dict[str, Any] | None = None) -> dict[str, Any] | None:
        reply = self.raw([encode_request(op, args)])
        return None if reply is None else decode_reply(reply)

    def status(self) -> dict[str, Any] | None:
        reply = self.request("status")
        if reply is None or not reply.get("ok"):
            return None
        result = reply["result"]
        return result if isinstance(result, dict) else None

    def close(self) -> None:
        self.socket.close(linger=0)


def settle(control: Control, expected_counted: int, timeout_s: float = 30.0) -> dict[str, Any]:
    """The status once the service has counted ``expected_counted`` messages and stopped processing.

    Counted = frames received + messages rejected; "stopped" = two snapshots 0.6 s apart with the same
    ``frames_processed`` (status is a snapshot refreshed every ``status_interval_s``).
    """
    deadline = time.monotonic() + timeout_s
    last: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = control.status() or {}
        counted = int(status.get("frames_received", 0)) + int(status.get("messages_rejected", 0))
        if (status and last and counted >= expected_counted
                and status.get("frames_processed") == last.get("frames_processed")):
            return status
        last = status
        time.sleep(0.6)
    return control.status() or last


def wait_for(predicate: Any, timeout_s: float, interval_s: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())


def packb(value: Any) -> bytes:
    return msgpack.packb(value, use_bin_type=True)


class Streamer:
    """Send frames of ``video`` at ``fps`` from a thread until `stop` (or the service stops reading)."""

    def __init__(self, feed: FrameFeed, video: SyntheticVideo, fps: float, series_id: str = "chaos",
                 first_index: int = 0, max_frames: int = 10**9, announce: bool = True) -> None:
        self.feed, self.video, self.fps, self.series_id = feed, video, fps, series_id
        self.first_index, self.max_frames, self.announce = first_index, max_frames, announce
        self.sent = 0
        self.stalled = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="chaos-sender")
        self._thread.start()

    def _run(self) -> None:
        if self.announce:
            self.feed.series_start(self.series_id, self.video.shape, self.fps)
        for k in paced(self.fps, self.max_frames, self._stop):
            if not self.feed.frame(self.video, self.series_id, self.first_index + k):
                self.stalled = True
                return
            self.sent += 1

    @property
    def next_index(self) -> int:
        return self.first_index + self.sent

    def done(self) -> bool:
        return not self._thread.is_alive()

    def stop(self) -> int:
        self._stop.set()
        self._thread.join(10)
        return self.sent
