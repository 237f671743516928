"""`MonitorWindow`: the experiment dashboard.

Everything here runs on the GUI thread. A QTimer at display rate (~25 Hz)
takes what the subscriber thread collected (`FeedUpdate`), folds it into the
`DashboardModel` and redraws; results that arrived in between are coalesced
(tails keep every position, the image shows only the newest), so the display
never falls behind the stream. Pausing freezes the drawing, not the service.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Protocol

from PySide6 import QtCore, QtGui, QtWidgets

from sam4em_live.monitor.frame_view import FrameView
from sam4em_live.monitor.imaging import ContrastLut, auto_levels
from sam4em_live.monitor.model import DashboardModel
from sam4em_live.monitor.msd_panel import MsdPanel
from sam4em_live.monitor.prompts import (
    Gesture,
    PromptDispatcher,
    PromptSink,
    check_edit,
    interpret_box,
    interpret_click,
    interpret_remove,
)
from sam4em_live.monitor.proposal_panel import ProposalPanel
from sam4em_live.monitor.proposals import ProposalBoard, ProposalChannel, ProposalSink, apply_reply
from sam4em_live.monitor.qt_runtime import check_qt_bindings
from sam4em_live.sinks.results_schema import RANDOM_WEIGHTS_WARNING

if TYPE_CHECKING:
    from sam4em_live.monitor.proposals import ProposalDecision
    from sam4em_live.monitor.subscriber import FeedUpdate
    from sam4em_live.particles import ParticleEdit

log = logging.getLogger(__name__)

STALE_AFTER_S = 3.0


def _staleness(status: dict[str, Any]) -> str:
    """`` (WORKER STALLED 6 s)`` / `` (status 7 s old)`` when the status says so or is old, else ``""``.

    The service publishes its status from the worker: a stalled worker publishes none, so the last one
    keeps its rates. Its age is taken from ``wall_time_s`` (the service's clock: on another machine,
    skew adds to it).
    """
    if status.get("stalled"):
        return f" (WORKER STALLED {float(status.get('worker_stalled_s') or 0.0):.0f} s)"
    taken_s = float(status.get("wall_time_s") or 0.0)
    age_s = time.time() - taken_s if taken_s else 0.0
    return f" (status {age_s:.0f} s old)" if age_s > STALE_AFTER_S else ""


class Feed(Protocol):
    """Where updates come from (`ResultsSubscriber`); ``take`` is called on the GUI thread."""

    def take(self) -> FeedUpdate: ...


class MonitorWindow(QtWidgets.QMainWindow):
    """The dashboard.

    Parameters
    ----------
    feed
        Usually a started `ResultsSubscriber`.
    prompt_sink
        Where prompts go (a `ControlClient`); None = view only.
    proposal_sink
        Where discovery proposals are listed, accepted and rejected (a second `ControlClient`: a client
        serves one thread); None = proposals are shown from the results' events but cannot be decided.
    levels
        Fixed display levels (raw pixel values). None = set once from the
        first preview, then fixed until the user asks for auto levels again.
    """

    def __init__(self, feed: Feed, prompt_sink: PromptSink | None = None, levels: tuple[float, float] | None = None,
                 display_hz: float = 25.0, tail_frames: int = 200, source_name: str = "",
                 proposal_sink: ProposalSink | None = None) -> None:
        check_qt_bindings()
        super().__init__()
        self.feed = feed
        self.source_name = source_name
        self.model = DashboardModel(tail_frames)
        self.lut = ContrastLut(levels or (0.0, 255.0))
        self.lut_version = 0
        self._levels_pending_auto = levels is None
        self.dispatcher = PromptDispatcher(prompt_sink) if prompt_sink is not None else None
        self.proposals = ProposalBoard()
        self.proposal_channel = ProposalChannel(proposal_sink) if proposal_sink is not None else None
        self.proposal_decisions: list[ProposalDecision] = []  # what this window sent, oldest first
        self.selected: int | None = None
        self.paused = False
        self.frames_drawn = 0
        self.render_ms = 0.0
        self._reserved_ids: set[int] = set()
        self.edits_sent: list[ParticleEdit] = []  # what this window queued for the service, oldest first
        self._build_ui()
        self.setWindowTitle(f"sam4em-live monitor {source_name}".strip())
        self.timer = QtCore.QTimer(self)
        self.timer.setInterval(max(1, int(1000 / display_hz)))
        self.timer.timeout.connect(self.refresh)
        self.timer.start()

    # ---------------------------------------------------------------- layout

    def _build_ui(self) -> None:
        self.banner = QtWidgets.QLabel(RANDOM_WEIGHTS_WARNING)
        self.banner.setStyleSheet("background:#c00000; color:white; font-weight:bold; font-size:16px; padding:6px")
        self.banner.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.banner.hide()
        self.frame_view = FrameView()
        self.frame_view.view_box.sigClicked.connect(self.on_click)
        self.frame_view.view_box.sigBoxDrawn.connect(self.on_box)
        self.msd_panel = MsdPanel()
        splitter = QtWidgets.QSplitter()
        splitter.addWidget(self.frame_view)
        splitter.addWidget(self._side_panel())
        splitter.setStretchFactor(0, 3)
        splitter.setStretchFactor(1, 2)
        central = QtWidgets.QWidget()
        layout = QtWidgets.QVBoxLayout(central)
        layout.setContentsMargins(2, 2, 2, 2)
        layout.addWidget(self.banner)
        layout.addWidget(splitter, 1)
        self.setCentralWidget(central)
        self.status_label = QtWidgets.QLabel("waiting for results…")
        self.statusBar().addWidget(self.status_label, 1)
        self._shortcuts()

    def _side_panel(self) -> QtWidgets.QWidget:
        panel = QtWidgets.QWidget()
        self.low_spin, self.high_spin = QtWidgets.QDoubleSpinBox(), QtWidgets.QDoubleSpinBox()
        for spin in (self.low_spin, self.high_spin):
            spin.setRange(-1e9, 1e9)
            spin.setDecimals(1)
            spin.setKeyboardTracking(False)
            spin.valueChanged.connect(self._levels_from_spins)
        self.auto_button = QtWidgets.QPushButton("Auto levels (A)")
        self.auto_button.clicked.connect(self.auto_levels)
        self.pause_button = QtWidgets.QPushButton("Pause display (Space)")
        self.pause_button.setCheckable(True)
        self.pause_button.toggled.connect(self.set_paused)
        self.remove_button = QtWidgets.QPushButton("Remove selected (Del)")
        self.remove_button.clicked.connect(self.remove_selected)
        self.selected_label = QtWidgets.QLabel("selected: none")
        self.message_label = QtWidgets.QLabel(
            "click: point prompt (new / selected particle) · click a mask: select · "
            "shift/ctrl-click: negative point · drag: box · Esc: deselect")
        self.message_label.setWordWrap(True)
        self.events_label = QtWidgets.QLabel("")
        self.events_label.setWordWrap(True)
        self.proposal_panel = ProposalPanel()
        self.proposal_panel.set_enabled(self.proposal_channel is not None)
        self.proposal_panel.decided.connect(self.decide_proposals)
        self.proposal_panel.selectionChanged.connect(self._redraw_proposals)
        levels = QtWidgets.QHBoxLayout()
        levels.addWidget(QtWidgets.QLabel("levels"))
        levels.addWidget(self.low_spin)
        levels.addWidget(self.high_spin)
        levels.addWidget(self.auto_button)
        buttons = QtWidgets.QHBoxLayout()
        buttons.addWidget(self.pause_button)
        buttons.addWidget(self.remove_button)
        layout = QtWidgets.QVBoxLayout(panel)
        layout.addWidget(self.msd_panel, 1)
        layout.addLayout(levels)
        layout.addLayout(buttons)
        layout.addWidget(self.selected_label)
        layout.addWidget(self.message_label)
        layout.addWidget(self.events_label)
        layout.addWidget(self.proposal_panel)
        self._sync_spins()
        return panel

    def _shortcuts(self) -> None:
        bindings = {
            "A": self.auto_levels, "Space": lambda: self.pause_button.toggle(), "Delete": self.remove_selected,
            "Backspace": self.remove_selected, "Escape": lambda: self.select(None),
            "Return": self.proposal_panel.accept_selected, "Enter": self.proposal_panel.accept_selected,
            "R": self.proposal_panel.reject_selected,
        }
        for key, slot in bindings.items():
            shortcut = QtGui.QShortcut(QtGui.QKeySequence(key), self)
            shortcut.activated.connect(slot)

    # ---------------------------------------------------------------- the display loop

    def refresh(self) -> None:
        """Timer slot: take what arrived, fold it in, draw (unless paused)."""
        started = time.perf_counter()
        update = self.feed.take()
        if update.run_changed:
            self.select(None)
            self._reserved_ids.clear()
            self.proposals.reset()
        self.model.apply(update)
        self.proposals.apply_events(update.events)
        if self._levels_pending_auto and self.model.preview is not None:
            self._levels_pending_auto = False
            self.set_levels(*auto_levels(self.model.preview.pixels))
        self._collect_outcomes()
        self._collect_proposal_replies()
        self.proposal_panel.show_board(self.proposals)
        if update.events:
            self.events_label.setText("events: " + " · ".join(_describe_event(e) for e in list(self.model.events)[-3:]))
        if not self.paused:
            self.frame_view.render(self.model, self.lut, self.lut_version, self.selected, self.proposals,
                                   self.proposal_panel.selected())
            self.msd_panel.show_stats(self.model.stats, self.model.stats_version)
            self.frames_drawn += 1
        self.banner.setVisible(self.model.random_weights)
        self.render_ms = (time.perf_counter() - started) * 1e3
        self.status_label.setText(self.status_text(update))

    def status_text(self, update: FeedUpdate) -> str:
        s = self.model.status
        parts = []
        error = getattr(self.feed, "error", None)
        if error is not None:
            parts.append(f"RECEIVER FAILED: {error}")
        if update.last_message_s == 0.0:
            parts.append(f"waiting for {self.source_name or 'the service'}…")
        elif time.monotonic() - update.last_message_s > STALE_AFTER_S:
            parts.append(f"NO DATA for {time.monotonic() - update.last_message_s:.0f} s (reconnecting)")
        if s:
            parts.append(f"{s.get('state', '?')}" + _staleness(s))
            if s.get("live", True):
                parts.append(f"camera {s.get('camera_fps', 0):.1f} fps · processed {s.get('processed_fps', 0):.1f} fps")
                parts.append(f"latency p50 {s.get('latency_ms_p50', 0):.0f} / p99 {s.get('latency_ms_p99', 0):.0f} ms")
            else:  # offline (a recording read as fast as possible): no camera rate, no latency
                parts.append(f"offline · processed {s.get('processed_fps', 0):.1f} fps")
            parts.append(f"queue {s.get('queue_depth', 0)} · dropped {s.get('frames_dropped', 0)}"
                         f" · gaps {s.get('frames_gap', 0)} · rejected {s.get('messages_rejected', 0)}")
        parts.append(f"monitor rejected {self.model.rejected_total}")
        frame = self.model.result.get("frame") if self.model.result else None
        parts.append(f"frame {frame} · results {self.model.results_received} · drawn {self.frames_drawn}"
                     f" · draw {self.render_ms:.1f} ms" + (" · PAUSED" if self.paused else ""))
        return "  |  ".join(parts)

    # ---------------------------------------------------------------- contrast, pause

    def set_levels(self, low: float, high: float) -> None:
        self.lut.set_levels((low, high))
        self.lut_version += 1
        self._sync_spins()

    def auto_levels(self) -> None:
        """Levels from the current preview, once (they stay fixed afterwards)."""
        if self.model.preview is None:
            self._levels_pending_auto = True
            return
        self.set_levels(*auto_levels(self.model.preview.pixels))

    def _levels_from_spins(self) -> None:
        low, high = self.low_spin.value(), self.high_spin.value()
        if high > low and (low, high) != self.lut.levels:
            self.lut.set_levels((low, high))
            self.lut_version += 1

    def _sync_spins(self) -> None:
        for spin, value in zip((self.low_spin, self.high_spin), self.lut.levels, strict=True):
            spin.blockSignals(True)
            spin.setValue(value)
            spin.blockSignals(False)

    def set_paused(self, paused: bool) -> None:
        self.paused = bool(paused)
        if self.pause_button.isChecked() != self.paused:
            self.pause_button.setChecked(self.paused)
        self.pause_button.setText("Resume display (Space)" if self.paused else "Pause display (Space)")

    # ---------------------------------------------------------------- prompts

    def select(self, particle: int | None) -> None:
        self.selected = particle
        self.selected_label.setText("selected: none" if particle is None else f"selected: #{particle}")

    def on_click(self, x: float, y: float, negative: bool) -> None:
        hit = self.model.particle_at(x, y)
        proposal = self.proposals.at(x, y) if hit is None and not negative else None
        if proposal is not None:  # a click on a proposal selects it for accept / reject, never prompts there
            already = self.proposal_panel.selected() == {proposal}
            self.proposal_panel.select_only(None if already else proposal)
            self.message_label.setText(f"P{proposal} deselected" if already
                                       else f"P{proposal} selected: Enter accepts, R rejects")
            return
        view = self.model.particles.get(self.selected) if self.selected is not None else None
        selected_xy = ((view.x, view.y) if view is not None and view.present and view.x is not None
                       and view.y is not None else None)
        self._apply(interpret_click(x, y, negative, hit, self.selected, selected_xy, self._new_id()))

    def on_box(self, x0: float, y0: float, x1: float, y1: float) -> None:
        self._apply(interpret_box(x0, y0, x1, y1, self.selected, self._new_id()))

    def remove_selected(self) -> None:
        self._apply(interpret_remove(self.selected))

    def _new_id(self) -> int:
        return self.model.next_particle_id(self._reserved_ids)

    def _apply(self, gesture: Gesture) -> None:
        if gesture.select is not None:
            self.select(gesture.select)
        message = gesture.message
        if gesture.edit is not None:
            message = self._send(gesture.edit) or message
        if gesture.deselect:
            self.select(None)
        self.message_label.setText(message)

    def _send(self, edit: ParticleEdit) -> str | None:
        """Returns an error message, or None when the edit was queued."""
        if self.dispatcher is None:
            return "view only: start the monitor with --control to send prompts"
        problem = check_edit(edit, self.model.full_shape)
        if problem is not None:
            return f"not sent: {problem}"
        if not self.dispatcher.submit(edit):
            return "not sent: the control channel is not answering"
        self._reserved_ids.add(edit.particle)
        self.edits_sent.append(edit)
        return None

    def _collect_outcomes(self) -> None:
        if self.dispatcher is None:
            return
        for outcome in self.dispatcher.outcomes():
            what = f"#{outcome.edit.particle}"
            self.message_label.setText(f"{what}: applied by the service on the next frame" if outcome.ok
                                       else f"{what}: refused: {outcome.detail}")

    # ---------------------------------------------------------------- discovery proposals

    def decide_proposals(self, decision: ProposalDecision) -> None:
        """Send an accept / reject (of some or all proposals) on the proposal channel."""
        if self.proposal_channel is None:
            self.message_label.setText("view only: start the monitor with --control to accept proposals")
            return
        if not self.proposal_channel.submit(decision):
            self.message_label.setText("not sent: the control channel is not answering")
            return
        self.proposal_decisions.append(decision)
        self.proposals.close(decision.proposals)  # hidden at once; the service's answer confirms
        self.proposal_panel.show_board(self.proposals)
        self._redraw_proposals()

    def _collect_proposal_replies(self) -> None:
        if self.proposal_channel is None:
            return
        for reply in self.proposal_channel.replies():
            message = apply_reply(self.proposals, reply)
            if message:
                self.message_label.setText(message)

    def _redraw_proposals(self) -> None:
        self.frame_view.proposal_layer.draw(self.proposals, self.proposal_panel.selected())

    # ---------------------------------------------------------------- snapshot, teardown

    def snapshot(self, path: str | None = None) -> QtGui.QImage:
        """Render the whole dashboard to an image (works offscreen); save it if ``path`` is given."""
        image = self.grab().toImage()
        if path is not None and not image.save(str(path)):
            raise OSError(f"could not write {path}")
        return image

    def shutdown(self) -> None:
        self.timer.stop()
        if self.dispatcher is not None:
            self.dispatcher.stop()
        if self.proposal_channel is not None:
            self.proposal_channel.stop()
        stop = getattr(self.feed, "stop", None)
        if stop is not None:
            stop()

    def closeEvent(self, event: QtGui.QCloseEvent) -> None:
        self.shutdown()
        super().closeEvent(event)


def _describe_event(event: dict) -> str:
    particle = event.get("particle")
    who = f" #{particle}" if particle is not None else ""
    reason = (event.get("detail") or {}).get("reason")
    return f"frame {event.get('frame')}: {event.get('kind')}{who}" + (f" ({reason})" if reason else "")
