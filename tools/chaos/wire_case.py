"""Case ``wire``: malformed frame and series messages over a real PUSH socket into a live ``serve``.

Each message is a mutation of a valid frame, series-start or series-end message: a header field given a
hostile value (dtype strings numpy cannot parse, indices at 2⁶³, NaN timestamps, deep or huge containers), a
field removed or added, the msgpack bytes flipped or cut, the part count wrong, the payload a byte short or
4× too long, or NaN/inf pixels in a well-formed float frame. Valid frames of the same series are interleaved,
and a clean tail of valid frames follows, so a message that poisons the series shows as lost valid frames.

The same sequence is decoded in this process with a fresh `FrameDecoder` (the oracle): an exception other
than `RejectedMessage` there is a decoder escape, whatever the service did with it.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Any

import msgpack
import numpy as np

from sam4em_live.io.run_manifest import expand_ranges
from sam4em_live.wire import FrameDecoder, RejectedMessage, SeriesEnd, SeriesStart
from tools.chaos.harness import (
    Control,
    FrameFeed,
    ServeProcess,
    SyntheticVideo,
    packb,
    service_config,
    settle,
)
from tools.chaos.runcheck import check_run_folder

SERIES = "chaos-wire"
_DTYPE_ALPHABET = "(),<>|=ifucbOUVSMm0123456789[] '"
_HOSTILE: tuple[Any, ...] = (
    None, True, False, -1, 0, 1, 2**31, 2**63 - 1, 2**64 - 1, -(2**63), 1.5, 1e308, -1e308, float("nan"),
    float("inf"), "", "x" * 300, "<u2", ">u2", "O", "V8", "U10", "(,,", "(2,3", "f16", "c16", "M8[s]", "i8,i8",
    b"\x00\xff", [], {}, [512, 512], [0, 0], [-1, 4], [2**31, 2], [1e9, 1e9], ["a", "b"], [True, 3],
    [128, 128, 1], {"a": 1}, [[[[[]]]]],
)


def _random_dtype(rng: random.Random) -> str:
    return "".join(rng.choice(_DTYPE_ALPHABET) for _ in range(rng.randint(1, 8)))


def _valid_header(kind: str, index: int, shape: tuple[int, int]) -> dict[str, Any]:
    header: dict[str, Any] = {"protocol": "sam4em-frame", "version": 1, "type": kind, "series_id": SERIES}
    if kind == "frame":
        header.update(index=index, timestamp_s=time.time(), shape=list(shape), dtype="<u2")
    elif kind == "series_start":
        header.update(shape=list(shape), dtype="<u2", pixel_size_nm=1.0, fps=200.0, metadata={})
    else:
        header.update(n_frames=index)
    return header


def mutate(rng: random.Random, video: SyntheticVideo, index: int) -> tuple[str, list[Any]]:
    """One malformed message: (mutation name, parts)."""
    kind = rng.choices(["frame", "series_start", "series_end"], weights=[6, 2, 1])[0]
    header = _valid_header(kind, index, video.shape)
    payload: Any = video.pixels(index).tobytes()
    choice = rng.randrange(12)
    if choice <= 2:
        key = rng.choice([*header, "dtype", "shape", "index"])
        header[key] = rng.choice(_HOSTILE)
        name = f"{kind}.{key}=hostile"
    elif choice == 3:
        header["dtype"] = _random_dtype(rng)
        name = f"{kind}.dtype=random"
    elif choice == 4:
        header["index"] = rng.choice([2**63 - 1, 2**62, index + 10**6, index + 10**9, 2**53])
        kind, name = "frame", "frame.index=far"
        header.update(type="frame", timestamp_s=time.time(), shape=list(video.shape), dtype="<u2")
    elif choice == 5:
        header.pop(rng.choice(list(header)))
        name = f"{kind}.field_removed"
    elif choice == 6:
        header[rng.choice(["extra", "metadata", "n_frames"])] = rng.choice(_HOSTILE)
        name = f"{kind}.field_added"
    elif choice == 7:
        raw = bytearray(packb(header))
        for _ in range(rng.randint(1, 4)):
            raw[rng.randrange(len(raw))] = rng.randrange(256)
        return f"{kind}.bytes_flipped", ([bytes(raw), payload] if kind == "frame" else [bytes(raw)])
    elif choice == 8:
        packed = packb(header)
        cut = packed[: rng.randrange(len(packed))]
        junk = rng.choice([cut, b"", bytes(rng.randrange(256) for _ in range(rng.randint(1, 64))),
                           packb([1, 2, 3]), packb("frame"), msgpack.packb(msgpack.ExtType(1, b"x"))])
        return "header.garbage", ([junk, payload] if kind == "frame" else [junk])
    elif choice == 9:
        parts = [packb(header)]
        extra = rng.choice([[], [payload], [payload, b"x"], [b"", b"", b""]])
        return f"{kind}.part_count", [*parts, *extra] if kind != "frame" or extra != [payload] else [*parts, b""]
    elif choice == 10:
        nbytes = len(payload)
        payload = rng.choice([b"", payload[:-1], payload + b"\0", payload * 4, payload[: nbytes // 2]])
        kind, name = "frame", "frame.payload_size"
        header = _valid_header("frame", index, video.shape)
    else:
        pixels = video.pixels(index).astype("<f4")
        flat = pixels.reshape(-1)
        which = rng.choice(["nan_some", "inf_some", "all_nan"])
        if which == "all_nan":
            flat[:] = np.nan
        else:
            flat[rng.sample(range(flat.size), 20)] = np.nan if which == "nan_some" else np.inf
        header = _valid_header("frame", index, video.shape)
        header["dtype"] = "<f4"
        return f"frame.pixels_{which}", [packb(header), pixels.tobytes()]
    return name, ([packb(header), payload] if kind == "frame" else [packb(header)])


def _oracle(decoder: FrameDecoder, parts: list[Any]) -> str:
    try:
        out = decoder.decode(parts)
    except RejectedMessage as exc:
        return f"rejected:{exc.reason}"
    except Exception as exc:  # exactly what we are looking for
        return f"ESCAPED:{type(exc).__name__}"
    if isinstance(out, SeriesStart):
        return "series_start"
    if isinstance(out, SeriesEnd):
        return "series_end"
    return "frame"


def run(work: Path, messages: int = 10000, tail_frames: int = 200, seed: int = 1) -> dict[str, Any]:
    """Send ``messages`` malformed messages (plus valid ones) and account for every one."""
    rng = random.Random(seed)
    video = SyntheticVideo.make(128)
    feed = FrameFeed()
    config = service_config(work, feed.endpoint, work / "runs", publisher={"enabled": False})
    serve = ServeProcess.start(config, video.prompts_file(work / "prompts.json"), work / "serve.log")
    control = Control(serve.control_endpoint)
    oracle = FrameDecoder()
    by_mutation: dict[str, int] = {}
    oracle_outcomes: dict[str, int] = {}
    valid_refused: dict[str, int] = {}
    last_mutation = ""
    series_messages = 0  # accepted series start/end messages: neither a frame received nor a rejection
    valid_indices: list[int] = []
    stalled: str | None = None
    index = 0
    t0 = time.monotonic()

    def send(parts: list[Any], mutation: str | None) -> bool:
        nonlocal series_messages, last_mutation
        outcome = _oracle(oracle, parts)
        series_messages += outcome in ("series_start", "series_end")
        if mutation is not None:
            by_mutation[mutation] = by_mutation.get(mutation, 0) + 1
            oracle_outcomes[outcome] = oracle_outcomes.get(outcome, 0) + 1
            last_mutation = f"{mutation} -> {outcome}"
        elif outcome != "frame" and outcome != "series_start":
            # A valid frame the decoder refuses: which mutant just before poisoned the series?
            key = f"{outcome} after {last_mutation}"
            valid_refused[key] = valid_refused.get(key, 0) + 1
        return feed.send(parts)

    def valid_frame() -> list[Any]:
        return [packb(_valid_header("frame", index, video.shape)), video.pixels(index).tobytes()]

    send([packb(_valid_header("series_start", 0, video.shape))], None)
    for k in range(messages):
        name, parts = mutate(rng, video, index)
        ok = send(parts, name)
        index += 1  # a mutant may carry this index: the next valid frame must not repeat it
        if ok and rng.random() < 0.3:
            ok = send(valid_frame(), None)
            valid_indices.append(index)
            index += 1
        if not ok:
            stalled = f"a send timed out after message {k} (service {'alive' if serve.alive() else 'dead'})"
            break
        if k % 1000 == 999 and control.request("ping") is None:
            stalled = f"control ping unanswered after message {k}"
            break
    before_tail = settle(control, feed.sent - series_messages)
    tail_ok = 0
    for _ in range(tail_frames):
        if not serve.alive() or not send(valid_frame(), None):
            break
        tail_ok += 1
        index += 1
    fuzz_s = time.monotonic() - t0
    expected = feed.sent - series_messages
    status = settle(control, expected)
    settled = _counted(status) >= expected
    alive_at_end = serve.alive()
    stopped = serve.stop()
    control.close()
    feed.close()
    folders = [check_run_folder(p) for p in sorted((work / "runs").glob("*")) if p.is_dir()]
    processed_frames = _processed_frames(work / "runs")
    tracked = [i for i in valid_indices if processed_frames is None or i in processed_frames]
    tracking = _tracking_errors(work / "runs", video, tracked)
    valid_lost = None if processed_frames is None else sum(1 for i in valid_indices if i not in processed_frames)
    escaped = {k: v for k, v in oracle_outcomes.items() if k.startswith("ESCAPED")}
    processed_tail = status.get("frames_processed", 0) - before_tail.get("frames_processed", 0)
    return {
        "case": "wire",
        "headline": {
            "malformed messages": sum(by_mutation.values()), "valid frames interleaved": len(valid_indices),
            "exit code": stopped["exit_code"], "rejected by reason": status.get("rejected_by_reason"),
            "frames received / processed": f"{status.get('frames_received')} / {status.get('frames_processed')}",
            "valid tail frames processed": f"{processed_tail} of {tail_ok}",
            "valid interleaved frames not processed (run.json mask_frames)": valid_lost,
            "of which refused by the decoder with a counted reason": sum(valid_refused.values()),
            "decoder escapes (in process)": escaped or 0,
            "tracking on valid frames processed (missing / > 3 px off / extra rows)": (
                f"{tracking.get('missing')} / {tracking.get('off_by_more_than_3px')} / {tracking.get('extra_rows')} "
                f"of {tracking.get('expected_rows')}"),
        },
        "malformed_messages": sum(by_mutation.values()),
        "valid_frames_interleaved": len(valid_indices),
        "messages_sent_total": feed.sent,
        "seconds": round(fuzz_s, 1),
        "crashed": not alive_at_end or (stopped["exit_code"] != 0 and not stopped["hung_on_stop"]),
        "hang": stalled if alive_at_end else None,
        "hung_on_stop": stopped["hung_on_stop"],
        "stop": stopped,
        "service_counted": {
            "frames_received": status.get("frames_received"), "frames_processed": status.get("frames_processed"),
            "messages_rejected": status.get("messages_rejected"),
            "rejected_by_reason": status.get("rejected_by_reason"), "frames_gap": status.get("frames_gap"),
            "expected_frames_plus_rejections": expected,
            # Lost: sent but neither received nor rejected. Over-counted: both (a frame received, then refused
            # after decoding, e.g. for non-finite pixels, is counted in frames_received and messages_rejected).
            "unaccounted": max(0, expected - _counted(status)) if status else None,
            "counted_twice": max(0, _counted(status) - expected) if status else None,
            "all_messages_accounted": settled,
        },
        "tail": {"valid_frames_sent": tail_ok, "processed": processed_tail,
                 "lost": tail_ok - processed_tail if status else None},
        "valid_interleaved_lost": valid_lost,
        "tracking_on_valid_frames": tracking,
        "valid_refused_in_process": valid_refused,
        "decoder_escapes_in_process": escaped,
        "oracle_outcomes": dict(sorted(oracle_outcomes.items())),
        "mutations": dict(sorted(by_mutation.items())),
        "run_folders": folders,
        "serve_log_tail": serve.log_tail() if (escaped or not alive_at_end or stalled) else "",
    }


def _counted(status: dict[str, Any] | None) -> int:
    """Messages the service accounted for: frames received + messages rejected + series messages."""
    if not status:
        return -1
    return int(status.get("frames_received", 0)) + int(status.get("messages_rejected", 0))


def _processed_frames(runs: Path) -> set[int] | None:
    """Frame indices with a result in the run: run.json series_list result_frames (older runs: mask_frames)."""
    for manifest in runs.glob("*/run.json"):
        try:
            data = json.loads(manifest.read_text(encoding="utf-8"))
            series = data.get("series_list")
            if series:  # masks.tif now has a page per frame index, results or not
                return {f for entry in series for f in expand_ranges(entry["result_frames"])}
            return set(expand_ranges(data.get("mask_frames")))
        except (OSError, ValueError, TypeError, KeyError):
            return None
    return None


def _tracking_errors(runs: Path, video: SyntheticVideo, valid_indices: list[int]) -> dict[str, Any]:
    """How the particles were tracked on the valid frames processed (a hostile frame must not lose or invent one)."""
    import pandas as pd

    tables = list(runs.glob("*/trajectories.csv"))
    if not tables:
        return {}
    try:
        table = pd.read_csv(tables[0])
    except Exception as exc:  # the run-folder check reports the file itself
        return {"error": f"{type(exc).__name__}: {exc}"}
    rows = {(int(f), int(p)): (x, y) for f, p, x, y in table[["frame", "particle", "x", "y"]].itertuples(index=False)}
    expected = missing = off = 0
    for index in valid_indices:
        for pid, (tx, ty) in enumerate(video.truth(index), 1):
            expected += 1
            got = rows.get((index, pid))
            if got is None:
                missing += 1
            elif math.hypot(got[0] - tx, got[1] - ty) > 3.0:
                off += 1
    n_particles = len(video.centres)
    valid = set(valid_indices)
    extra = int(((table["frame"].isin(valid)) & ~table["particle"].between(1, n_particles)).sum())
    return {"expected_rows": expected, "missing": missing, "off_by_more_than_3px": off, "extra_rows": extra}
