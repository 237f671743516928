"""`LiveView`: a small live view of a running service in a notebook (results subscriber + control client).

It subscribes to the service's results publisher (`sam4em_live.monitor.subscriber.ResultsSubscriber`, the
monitor's receiver thread) and shows the decimated preview frames with the particles' positions and short
trails; a click prompts a particle over the control channel (`sam4em_live.control.client.ControlClient`),
on the next frame the service processes. A drain thread takes the subscriber's coalesced update a few times
a second and sets the traits, so the kernel is never flooded by the stream.

With discovery in propose mode (docs/discovery.md) the service's proposals are drawn and listed, to accept or
reject one by one or all: the monitor's `ProposalBoard` (kept current from the results' discovery events and
from the control channel's list, polled by a `ProposalChannel` on its own client and thread) and the same
decisions (`sam4em_live.monitor.proposals`).
"""

from __future__ import annotations

import threading
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anywidget
import numpy as np
import traitlets

from sam4em_live.control.client import ControlClient
from sam4em_live.monitor.proposals import (
    DecisionKind,
    ProposalBoard,
    ProposalChannel,
    ProposalDecision,
    ProposalReply,
    apply_reply,
    decide,
)
from sam4em_live.monitor.subscriber import ResultsSubscriber
from sam4em_live.notebook.display import Contrast, png_bytes, stretch

if TYPE_CHECKING:
    from sam4em_live.monitor.subscriber import FeedUpdate

TRAIL_FRAMES = 100  # positions kept per particle for the trails
DRAIN_INTERVAL_S = 0.2  # at most 5 updates a second reach the browser


class LiveView(anywidget.AnyWidget):
    """Attach to a running service: ``LiveView("tcp://host:5556", control="tcp://host:5557")``.

    ``results`` is the service's results endpoint (``[publisher] endpoint``), ``control`` its control
    endpoint (None: a view only, clicks do nothing). Call `close` to detach.
    """

    _esm = Path(__file__).with_name("live.js")
    _css = Path(__file__).with_name("widget.css")

    image = traitlets.Bytes(b"").tag(sync=True)  # the latest preview, contrast applied, PNG
    rows = traitlets.Int(0).tag(sync=True)  # the full frame's shape (clicks are in full-frame pixels)
    cols = traitlets.Int(0).tag(sync=True)
    frame = traitlets.Int(-1).tag(sync=True)
    positions = traitlets.Dict().tag(sync=True)  # particle -> [x, y] on the latest frame
    trails = traitlets.Dict().tag(sync=True)  # particle -> [[x, y], ...]
    particle = traitlets.Int(1).tag(sync=True)
    negative = traitlets.Bool(False).tag(sync=True)
    message = traitlets.Unicode("").tag(sync=True)
    status = traitlets.Dict().tag(sync=True)  # the service's latest status snapshot
    received = traitlets.Int(0).tag(sync=True)  # results received since attaching
    display_px = traitlets.Int(480).tag(sync=True)
    # the open discovery proposals, highest score first (ProposalView.as_dict)
    proposals: traitlets.List[dict[str, object]] = traitlets.List().tag(sync=True)
    can_decide = traitlets.Bool(False).tag(sync=True)  # a control endpoint was given: proposals can be decided

    def __init__(self, results: str, control: str | None = None, *, contrast: Contrast | None = None,
                 display_px: int = 480, **kwargs: Any) -> None:
        super().__init__(display_px=display_px, can_decide=control is not None, **kwargs)
        self.contrast = contrast or Contrast()
        self._trails: dict[int, deque[tuple[float, float]]] = {}
        self._subscriber = ResultsSubscriber(results)
        self._control = ControlClient(control, timeout_s=2.0, origin="control") if control else None
        self._board = ProposalBoard()
        self._board_lock = threading.Lock()  # the drain thread and the kernel's thread both fold into the board
        # the channel's own client: a client serves one thread, and the kernel's thread uses `_control`
        self._proposal_client = ControlClient(control, timeout_s=2.0, origin="control") if control else None
        self._channel = ProposalChannel(self._proposal_client) if self._proposal_client is not None else None
        self._stop = threading.Event()
        self._subscriber.start()
        self._drain = threading.Thread(target=self._drain_loop, name="sam4em-notebook-live", daemon=True)
        self._drain.start()
        self.on_msg(self._on_browser_message)

    def prompt(self, x: float, y: float, *, particle: int | None = None, negative: bool = False) -> dict[str, Any]:
        """Prompt ``particle`` (default: the selected one) at (x, y) full-frame px on the next frame.

        A particle the service already tracks is corrected, a new id added; the control reply is returned.
        """
        if self._control is None:
            raise RuntimeError("no control endpoint given: this live view can only watch")
        particle = self.particle if particle is None else int(particle)
        label = 0 if negative else 1
        tracked = particle in {int(p) for p in self.positions}
        send = self._control.correct if tracked else self._control.add_prompt
        return send(particle, points=[(float(x), float(y))], labels=[label])

    def remove(self, particle: int | None = None) -> dict[str, Any]:
        """Stop tracking ``particle`` (default: the selected one) from the next frame."""
        if self._control is None:
            raise RuntimeError("no control endpoint given: this live view can only watch")
        return self._control.remove(self.particle if particle is None else int(particle))

    def accept(self, proposals: list[int] | None = None) -> ProposalReply:
        """Track these discovery proposals (None: all open ones), each under a new id the service allocates.

        The reply's ``accepted`` maps each proposal to its particle id; ``ok`` False with ``detail`` when refused.
        """
        return self._decide("accept_all" if proposals is None else "accept", proposals)

    def reject(self, proposals: list[int] | None = None) -> ProposalReply:
        """Reject these discovery proposals (None: all open ones); they are not proposed again."""
        return self._decide("reject_all" if proposals is None else "reject", proposals)

    def _decide(self, kind: DecisionKind, proposals: list[int] | None) -> ProposalReply:
        if self._control is None:
            raise RuntimeError("no control endpoint given: this live view can only watch")
        decision = ProposalDecision(kind, tuple(int(p) for p in proposals or ()))
        reply = decide(self._control, decision)
        with self._board_lock:
            self.message = apply_reply(self._board, reply)
            self._show_proposals()
        return reply

    def close(self) -> None:
        self._stop.set()
        self._drain.join(2.0)
        self._subscriber.stop()
        if self._channel is not None:
            self._channel.stop()
        for client in (self._control, self._proposal_client):
            if client is not None:
                client.close()
        super().close()

    def _drain_loop(self) -> None:
        while not self._stop.wait(DRAIN_INTERVAL_S):
            update = self._subscriber.take()
            if not update.empty:
                self._show(update)
            self._fold_proposals(update)

    def _show(self, update: FeedUpdate) -> None:
        if update.run_changed:
            self._trails.clear()
        for point in update.points:
            for particle, xy in point.positions.items():
                self._trails.setdefault(particle, deque(maxlen=TRAIL_FRAMES)).append(xy)
        with self.hold_sync():
            self.received += update.results_received
            if update.preview is not None:
                preview = update.preview
                self.rows, self.cols = preview.full_shape
                self.image = png_bytes(stretch(np.asarray(preview.pixels), self.contrast))
            if update.points:
                latest = update.points[-1]
                self.frame = latest.frame
                self.positions = {str(p): [round(x, 2), round(y, 2)] for p, (x, y) in latest.positions.items()}
                self.trails = {str(p): [[round(x, 2), round(y, 2)] for x, y in trail]
                               for p, trail in self._trails.items()}
            if update.status is not None:
                self.status = update.status

    def _fold_proposals(self, update: FeedUpdate) -> None:
        """The results' discovery events and the channel's replies into the board; the trait when it changed."""
        with self._board_lock:
            version = self._board.version
            if update.run_changed:
                self._board.reset()
            self._board.apply_events(update.events)
            messages = [apply_reply(self._board, reply) for reply in (self._channel.replies() if self._channel else [])]
            if any(messages):
                self.message = [m for m in messages if m][-1]
            if self._board.version != version:
                self._show_proposals()

    def _show_proposals(self) -> None:
        """Set the trait from the board (board lock held)."""
        self.proposals = [view.as_dict() for view in self._board.ordered()]

    def _on_browser_message(self, widget: object, content: dict[str, Any], buffers: list[bytes]) -> None:
        kind = content.get("kind")
        if kind in ("accept", "reject", "accept_all", "reject_all"):
            self._decide_from_browser(kind, content.get("proposals") or [])
            return
        try:
            if content.get("kind") == "point":
                reply = self.prompt(float(content["x"]), float(content["y"]),
                                    negative=bool(content.get("negative")))
                self.message = f"particle {self.particle}: {reply.get('status', reply)}"
            elif content.get("kind") == "remove":
                self.remove()
                self.message = f"particle {self.particle} removed"
        except Exception as error:  # a refused prompt or a dead service is shown, not lost in the comm
            self.message = f"{content.get('kind')}: {error}"

    def _decide_from_browser(self, kind: DecisionKind, proposals: list[Any]) -> None:
        """Queued on the channel's thread (the kernel does not wait); its reply is shown by the drain thread."""
        if self._channel is None:
            self.message = "no control endpoint given: proposals can only be watched"
            return
        try:
            decision = ProposalDecision(kind, tuple(int(p) for p in proposals))
        except (TypeError, ValueError):
            self.message = f"{kind}: bad proposal ids {proposals!r}"
            return
        if not self._channel.submit(decision):
            self.message = "not sent: the control channel is not answering"
            return
        with self._board_lock:
            self._board.close(decision.proposals)  # hidden at once; the service's answer confirms
            self._show_proposals()
