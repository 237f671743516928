"""The end of a fault trial, the same for every case: stop sending, count, stop the service, check its files."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tools.chaos.harness import settle
from tools.chaos.runcheck import check_run_folder

if TYPE_CHECKING:
    from pathlib import Path

    from tools.chaos.harness import Control, FrameFeed, ServeProcess, Streamer


@dataclass(frozen=True)
class TrialEnd:
    sent: int  # frames the streamer sent
    alive: bool  # the service was still running when the sending stopped
    status: dict[str, Any]  # its status once it had counted every frame sent ({} if it had died)
    stopped: dict[str, Any]  # `ServeProcess.stop`'s report
    folders: list[dict[str, Any]]  # `check_run_folder` of every run folder under ``out_dir``


def end_trial(serve: ServeProcess, control: Control, feed: FrameFeed, streamer: Streamer, out_dir: Path,
              settle_timeout_s: float = 20.0) -> TrialEnd:
    sent = streamer.stop()
    alive = serve.alive()
    status = settle(control, sent, timeout_s=settle_timeout_s) if alive else {}
    stopped = serve.stop()
    control.close()
    feed.close()
    folders = [check_run_folder(p) for p in sorted(out_dir.glob("*")) if p.is_dir()]
    return TrialEnd(sent, alive, status, stopped, folders)
