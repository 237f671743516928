"""Discovery proposals in the monitor (issue 21): the board, the channel, and the real widget offscreen
against a real service in propose mode on loopback (results PUB + control REP on port 0)."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from PySide6 import QtCore
from PySide6.QtTest import QTest

from sam4em_live.config import ServiceConfig
from sam4em_live.control.client import ControlClient
from sam4em_live.monitor.proposals import (
    ProposalBoard,
    ProposalChannel,
    ProposalDecision,
    apply_reply,
    proposal_view,
)
from sam4em_live.monitor.subscriber import ResultsSubscriber
from sam4em_live.monitor.window import MonitorWindow
from sam4em_live.service.builder import build_service
from sam4em_live.sources.array_source import ArraySource

pytestmark = pytest.mark.qt

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

SHAPE = (160, 192)
LEFT, RIGHT = (50.0, 60.0), (140.0, 100.0)  # two still dark discs (x, y px), r = 9 px


def _entry(proposal: int, x: float, y: float, score: float = 8.0) -> dict:
    return {"proposal": proposal, "x": x, "y": y, "score": score, "diameter_px": 18.0,
            "box": [x - 9, y - 9, x + 9, y + 9], "outline": [[x + 9 * math.cos(a), y + 9 * math.sin(a)]
                                                             for a in np.linspace(0, 2 * math.pi, 16, endpoint=False)]}


# ------------------------------------------------------------------ the board (Qt-free)


def test_board_follows_events_and_never_reopens_a_closed_proposal() -> None:
    board = ProposalBoard()
    board.apply_events([{"kind": "proposed", "frame": 4, "particle": None, "detail": _entry(1, 50, 60)},
                        {"kind": "proposed", "frame": 4, "particle": None, "detail": _entry(2, 140, 100, 12.0)},
                        {"kind": "prompt_applied", "frame": 4, "particle": 7, "detail": {"proposal": 3}}])
    assert [v.proposal for v in board.ordered()] == [2, 1]  # highest score first; other events ignored
    assert board.at(52, 58) == 1 and board.at(140, 91) == 2 and board.at(100, 20) is None
    version = board.version
    board.apply_events([{"kind": "accepted", "frame": 6, "particle": 1, "detail": {**_entry(1, 50, 60), "particle": 1}}])
    assert set(board.open) == {2} and board.version > version
    board.replace([proposal_view(_entry(1, 51, 60)), proposal_view(_entry(2, 141, 100))])  # a poll from before
    assert set(board.open) == {2} and board.open[2].x == 141  # 1 stays closed; 2 moves to the service's place
    board.close([2])
    board.replace([proposal_view(_entry(2, 141, 100))])
    assert board.open == {}
    board.reset()  # a new run: ids start again
    board.replace([proposal_view(_entry(1, 10, 10))])
    assert set(board.open) == {1}


class _FakeDiscoveryChannel:
    """A `ProposalSink` with the service's rules, in memory (for the channel's own logic)."""

    def __init__(self, open_ids: list[int]) -> None:
        self.open = {p: _entry(p, 20.0 * p, 30.0) for p in open_ids}
        self.calls: list[str] = []

    def proposals(self) -> list[dict]:
        self.calls.append("proposals")
        return list(self.open.values())

    def accept(self, proposals, particle=None):
        self.calls.append("accept")
        return [{"proposal": p, "particle": 100 + p} for p in proposals if self.open.pop(p, None)]

    def reject(self, proposals):
        self.calls.append("reject")
        for p in proposals:
            self.open.pop(p)
        return {"rejected": list(proposals)}

    def accept_all(self):
        return self.accept(list(self.open))


def test_channel_sends_decisions_and_lists_after_each() -> None:
    sink = _FakeDiscoveryChannel([1, 2, 3])
    channel = ProposalChannel(sink, poll_interval_s=0.05)
    board = ProposalBoard()
    try:
        assert channel.submit(ProposalDecision("accept", (2,)))
        assert channel.submit(ProposalDecision("reject_all"))
        messages: list[str] = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and not any(m.startswith("rejected") for m in messages):
            messages += [m for m in (apply_reply(board, r) for r in channel.replies()) if m]
            time.sleep(0.02)
    finally:
        channel.stop()
    assert messages[0] == "accepted P2 → #102 (tracked from the next frame)"
    assert messages[1] == "rejected P1, P3"
    assert sink.open == {} and board.open == {}


# ------------------------------------------------------------------ the real widget against a real service


def _scene(n_frames: int) -> np.ndarray:
    """Two still dark discs (r = 9 px, 40 % darker) on 200 counts with noise σ = 20."""
    rng = np.random.default_rng(1)
    rows, cols = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]]
    base = np.full(SHAPE, 200.0)
    for x, y in (LEFT, RIGHT):
        base[(cols - x) ** 2 + (rows - y) ** 2 <= 81] = 120.0
    return np.stack([np.clip(base + rng.normal(0, 20, SHAPE), 0, 65535).astype(np.uint16) for _ in range(n_frames)])


@pytest.fixture
def proposing_service(tmp_path):
    config = ServiceConfig.from_mapping({
        "segmenter": {"backend": "threshold"},
        "recorder": {"out_dir": str(tmp_path / "runs")},
        "publisher": {"endpoint": "tcp://127.0.0.1:0", "preview_fps": 20.0, "preview_max_edge_px": 96},
        "control": {"endpoint": "tcp://127.0.0.1:0"},
        "calibration": {"pixel_size_nm": 1.0, "fps": 40.0},
        "pipeline": {"status_interval_s": 0.2},
        "discovery": {"mode": "propose", "every_n_frames": 2, "persistence_frames": 2},
    })
    built = build_service(config, source=ArraySource(_scene(1200), delay_s=0.025))
    yield built
    built.service.stop()
    built.close()


def _tracked_near(window: MonitorWindow, xy: tuple[float, float]) -> int | None:
    for view in window.model.particles.values():
        if view.present and view.x is not None and view.y is not None and math.hypot(view.x - xy[0], view.y - xy[1]) < 4:
            return view.particle
    return None


def test_monitor_accepts_a_clicked_proposal_and_rejects_the_rest(proposing_service, qtbot) -> None:
    built = proposing_service
    assert built.publisher is not None and built.control is not None
    subscribers = [ResultsSubscriber(built.publisher.endpoint), ResultsSubscriber(built.publisher.endpoint)]
    for subscriber in subscribers:
        subscriber.start()
    prompts = ControlClient(built.control.endpoint, timeout_s=3.0, origin="monitor")
    decisions = ControlClient(built.control.endpoint, timeout_s=3.0, origin="monitor")
    window = MonitorWindow(subscribers[0], prompts, proposal_sink=decisions, source_name="proposals")
    watcher = MonitorWindow(subscribers[1], None)  # view only: proposals from the results' events alone
    for w in (window, watcher):
        qtbot.addWidget(w)
        w.resize(1200, 800)
        w.show()
    time.sleep(0.3)  # let the SUB sockets join before the first proposal is published
    built.service.start()
    try:
        qtbot.waitUntil(lambda: len(window.proposals.open) == 2 and window.model.preview is not None, timeout=15000)
        left = min(window.proposals.open.values(), key=lambda v: v.x)
        right = max(window.proposals.open.values(), key=lambda v: v.x)
        assert math.hypot(left.x - LEFT[0], left.y - LEFT[1]) < 4 and math.hypot(right.x - RIGHT[0], right.y - RIGHT[1]) < 4
        assert window.proposal_panel.list.count() == 2 and not window.model.particles  # proposed, not tracked
        window.refresh()
        layer = window.frame_view.proposal_layer
        assert len(layer.outlines.xData) == 2 * 18  # two closed 16-gons, NaN-separated
        assert sorted(label.textItem.toPlainText() for label in layer._labels.values()) == sorted(
            f"P{v.proposal} {v.score:.1f}σ" for v in (left, right))
        qtbot.waitUntil(lambda: set(watcher.proposals.open) == {left.proposal, right.proposal}, timeout=5000)

        # a click on the left proposal selects it (no prompt is sent), the Accept button tracks it
        QTest.mouseClick(window.frame_view.viewport(), QtCore.Qt.MouseButton.LeftButton,
                         QtCore.Qt.KeyboardModifier.NoModifier, window.frame_view.widget_point(left.x, left.y))
        assert window.proposal_panel.selected() == {left.proposal} and not window.edits_sent
        window.refresh()
        ARTIFACTS.mkdir(exist_ok=True)
        window.snapshot(str(ARTIFACTS / "monitor_proposals.png"))  # both outlined, the clicked one selected
        QTest.mouseClick(window.proposal_panel.accept_button, QtCore.Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: _tracked_near(window, LEFT) is not None, timeout=10000)
        assert _tracked_near(window, LEFT) == 1  # the service's first id
        qtbot.waitUntil(lambda: "accepted" in window.message_label.text(), timeout=3000)
        assert f"P{left.proposal} → #1" in window.message_label.text()
        assert set(window.proposals.open) == {right.proposal}
        qtbot.waitUntil(lambda: set(watcher.proposals.open) == {right.proposal}, timeout=5000)

        QTest.mouseClick(window.proposal_panel.reject_all_button, QtCore.Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: "rejected" in window.message_label.text(), timeout=5000)
        qtbot.waitUntil(lambda: not watcher.proposals.open, timeout=5000)
        time.sleep(0.6)  # a poll later: still none open, and the right disc was never tracked
        window.refresh()
        assert window.proposals.open == {} and window.proposal_panel.list.count() == 0
        assert decisions.proposals() == [] and _tracked_near(window, RIGHT) is None
        assert [d.kind for d in window.proposal_decisions] == ["accept", "reject_all"]
    finally:
        for w in (window, watcher):
            w.shutdown()
        prompts.close()
        decisions.close()
    built.service.stop()
    events = [json.loads(line) for line in (built.run_dir / "events.jsonl").read_text().splitlines() if line.strip()]
    decided = [(e["kind"], e["detail"]["proposal"]) for e in events if e["kind"] in ("accepted", "rejected")]
    assert decided == [("accepted", left.proposal), ("rejected", right.proposal)]
