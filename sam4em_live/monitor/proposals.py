"""Discovery proposals for the monitor and the notebook's live view (Qt-free).

With ``[discovery] mode = "propose"`` the service publishes candidate particles as *proposals*
(docs/discovery.md); a client accepts (the service starts tracking it under a new id) or rejects each,
or all. Two things keep a `ProposalBoard` current:

- the results stream's discovery events (``proposed`` opens a proposal; ``accepted``, ``rejected``,
  ``auto_added`` and ``proposal_expired`` close one), so a view-only monitor sees proposals too;
- the control channel's ``proposals`` op, polled on a `ProposalChannel` thread, which is the service's
  own list (current positions; nothing lost when the publisher dropped an event).

A closed proposal id is never shown again: ids are not reused within a run, so a poll answered just
before an event closed one cannot bring it back. Decisions go out on the same channel thread, so a slow
control channel never blocks the GUI thread.
"""

from __future__ import annotations

import contextlib
import logging
import math
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from sam4em_live.control.client import ControlError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.5  # the service's list is fetched this often (and at once after each decision)
OPEN_KINDS = ("proposed",)
CLOSING_KINDS = ("accepted", "rejected", "auto_added", "proposal_expired")
UNKNOWN_PROPOSAL_RETRIES = 3  # "reject all" re-lists when a proposal closed between the list and the reject


@dataclass(frozen=True, slots=True)
class ProposalView:
    """One open proposal (full-frame pixels, x = column, y = row).

    ``score`` is the detector's peak in noise sigmas, ``diameter_px`` its rough equivalent diameter, ``box``
    (x0, y0, x1, y1) its bounding box and ``outline`` a rough polygon around it.
    """

    proposal: int
    x: float
    y: float
    score: float
    diameter_px: float
    box: tuple[float, float, float, float] | None
    outline: tuple[tuple[float, float], ...]

    def contains(self, x: float, y: float, margin_px: float = 2.0) -> bool:
        """True if full-frame point (x, y) is on the proposal: inside its box (plus a margin) or near its centre."""
        if self.box is not None:
            x0, y0, x1, y1 = self.box
            if x0 - margin_px <= x <= x1 + margin_px and y0 - margin_px <= y <= y1 + margin_px:
                return True
        return math.hypot(x - self.x, y - self.y) <= max(self.diameter_px / 2, 4.0)

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form for a browser (rounded: positions to 0.1 px)."""
        return {"proposal": self.proposal, "x": round(self.x, 1), "y": round(self.y, 1),
                "score": round(self.score, 1), "diameter_px": round(self.diameter_px, 1),
                "box": None if self.box is None else [round(v, 1) for v in self.box],
                "outline": [[round(x, 1), round(y, 1)] for x, y in self.outline]}


def proposal_view(entry: dict[str, Any]) -> ProposalView:
    """Read one proposal as the control channel and the ``proposed`` event give it; raises on a malformed one."""
    box = entry.get("box")
    outline = tuple((float(x), float(y)) for x, y in entry.get("outline") or ())
    return ProposalView(
        proposal=int(entry["proposal"]), x=float(entry["x"]), y=float(entry["y"]),
        score=float(entry.get("score") or 0.0), diameter_px=float(entry.get("diameter_px") or 0.0),
        box=None if box is None else (float(box[0]), float(box[1]), float(box[2]), float(box[3])),
        outline=outline,
    )


def proposal_views(entries: Iterable[dict[str, Any]]) -> list[ProposalView]:
    """The well-formed proposals of a list (a malformed entry is skipped, logged)."""
    views = []
    for entry in entries:
        try:
            views.append(proposal_view(entry))
        except (KeyError, TypeError, ValueError) as exc:
            log.debug("skipping a malformed proposal %r: %s", entry, exc)
    return views


class ProposalBoard:
    """The open proposals as one client sees them. Not thread-safe: one thread (the GUI's) updates it.

    ``version`` is bumped on every change, so a view redraws only then.
    """

    def __init__(self) -> None:
        self.open: dict[int, ProposalView] = {}
        self.closed: set[int] = set()  # closed by an event or decided here: never shown again in this run
        self.supported: bool | None = None  # False once the service said it has no discovery
        self.version = 0

    def reset(self) -> None:
        """A new run: its proposal ids start again."""
        self.open.clear()
        self.closed.clear()
        self.supported = None
        self.version += 1

    def replace(self, views: Iterable[ProposalView]) -> None:
        """The service's list (from the ``proposals`` op): it is the truth, less what closed since."""
        fresh = {v.proposal: v for v in views if v.proposal not in self.closed}
        self.supported = True
        if fresh != self.open:
            self.open = fresh
            self.version += 1

    def apply_events(self, events: Iterable[dict[str, Any]]) -> None:
        """Fold the results stream's discovery events in (other events are ignored)."""
        changed = False
        for event in events:
            kind, detail = event.get("kind"), event.get("detail")
            if kind not in OPEN_KINDS + CLOSING_KINDS or not isinstance(detail, dict):
                continue
            proposal = detail.get("proposal")
            if not isinstance(proposal, int) or isinstance(proposal, bool):
                continue
            if kind in CLOSING_KINDS:
                self.closed.add(proposal)
                changed = self.open.pop(proposal, None) is not None or changed
            elif proposal not in self.closed:
                views = proposal_views([detail])
                if views:
                    self.open[proposal] = views[0]
                    changed = True
        if changed:
            self.version += 1

    def close(self, proposals: Iterable[int]) -> None:
        """Hide proposals this client decided on (before the service's answer or event arrives)."""
        ids = set(proposals)
        self.closed |= ids
        if any(self.open.pop(p, None) is not None for p in ids):
            self.version += 1

    def mark_unsupported(self) -> None:
        self.supported = False
        if self.open:
            self.open.clear()
        self.version += 1

    def at(self, x: float, y: float) -> int | None:
        """The proposal under full-frame point (x, y) (the nearest centre when several), or None."""
        hits = [v for v in self.open.values() if v.contains(x, y)]
        if not hits:
            return None
        return min(hits, key=lambda v: math.hypot(v.x - x, v.y - y)).proposal

    def ordered(self) -> list[ProposalView]:
        """Open proposals, highest score first."""
        return sorted(self.open.values(), key=lambda v: (-v.score, v.proposal))


@runtime_checkable
class ProposalSink(Protocol):
    """The discovery ops of the control channel (`ControlClient`).

    Called from the `ProposalChannel` thread only, one call at a time; each may block up to the client's
    timeout and raises `ControlError` (code ``unknown_proposal``, ``unsupported``...) or a timeout.
    """

    def proposals(self) -> list[dict[str, Any]]: ...

    def accept(self, proposals: Sequence[int], particle: int | None = None) -> list[dict[str, int]]: ...

    def reject(self, proposals: Sequence[int]) -> Any: ...

    def accept_all(self) -> list[dict[str, int]]: ...


DecisionKind = Literal["accept", "reject", "accept_all", "reject_all"]


@dataclass(frozen=True, slots=True)
class ProposalDecision:
    """What the user decided: ``accept``/``reject`` the listed proposals, or all open ones."""

    kind: DecisionKind
    proposals: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class ProposalReply:
    """What the channel thread got: a decision's outcome (``decision`` None: a plain refresh) and the list.

    ``accepted`` maps each accepted proposal to the particle id the service gave it; ``rejected`` lists the
    proposals the service rejected; ``listing`` is the service's open list after the call (None: no list).
    """

    decision: ProposalDecision | None
    ok: bool
    detail: str = ""
    accepted: dict[int, int] = field(default_factory=dict)
    rejected: tuple[int, ...] = ()
    listing: tuple[ProposalView, ...] | None = None
    unsupported: bool = False


def decide(sink: ProposalSink, decision: ProposalDecision) -> ProposalReply:
    """Carry out ``decision`` on ``sink`` (blocking); errors become a failed reply."""
    try:
        if decision.kind == "accept":
            accepted = {int(a["proposal"]): int(a["particle"]) for a in sink.accept(decision.proposals)}
            return ProposalReply(decision, True, accepted=accepted)
        if decision.kind == "accept_all":
            accepted = {int(a["proposal"]): int(a["particle"]) for a in sink.accept_all()}
            return ProposalReply(decision, True, accepted=accepted)
        if decision.kind == "reject":
            sink.reject(decision.proposals)
            return ProposalReply(decision, True, rejected=decision.proposals)
        return _reject_all(sink, decision)
    except ControlError as exc:
        return ProposalReply(decision, False, str(exc), unsupported=exc.code == "unsupported")
    except Exception as exc:  # a timeout or a dead channel is shown, never raised into the GUI
        log.warning("proposal decision %s failed: %s", decision, exc)
        return ProposalReply(decision, False, f"{type(exc).__name__}: {exc}")


def _reject_all(sink: ProposalSink, decision: ProposalDecision) -> ProposalReply:
    """There is no ``reject_all`` op: list, then reject those; a proposal closing in between means list again."""
    rejected: list[int] = []
    for _ in range(UNKNOWN_PROPOSAL_RETRIES):
        ids = [v.proposal for v in proposal_views(sink.proposals())]
        if not ids:
            break
        try:
            sink.reject(ids)
        except ControlError as exc:
            if exc.code != "unknown_proposal":
                raise
            continue  # the service rejected those before the closed one; the next list has the rest
        rejected += ids
        break
    return ProposalReply(decision, True, rejected=tuple(rejected))


class ProposalChannel:
    """Polls the service's proposals and sends decisions on its own thread; replies are taken by the GUI.

    Stops polling once the service answers ``unsupported`` (no discovery in this service).
    """

    def __init__(self, sink: ProposalSink, poll_interval_s: float = POLL_INTERVAL_S) -> None:
        self.sink = sink
        self.poll_interval_s = poll_interval_s
        self._todo: queue.Queue[ProposalDecision] = queue.Queue(maxsize=64)
        self._done: queue.Queue[ProposalReply] = queue.Queue(maxsize=256)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sam4em-proposals", daemon=True)
        self._thread.start()

    def submit(self, decision: ProposalDecision) -> bool:
        """Queue a decision; False if too many are waiting (the channel is stuck)."""
        try:
            self._todo.put_nowait(decision)
        except queue.Full:
            return False
        return True

    def replies(self) -> list[ProposalReply]:
        out = []
        while True:
            try:
                out.append(self._done.get_nowait())
            except queue.Empty:
                return out

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)

    def _run(self) -> None:
        polling, listed_at = True, -math.inf
        while not self._stop.is_set():
            try:  # a short wait so that stop() is honoured within ~100 ms
                decision: ProposalDecision | None = self._todo.get(timeout=0.1)
            except queue.Empty:
                decision = None
            reply = decide(self.sink, decision) if decision is not None else None
            now = time.monotonic()
            if polling and (reply is not None or now - listed_at >= self.poll_interval_s):
                reply, listed_at = self._with_listing(reply, decision), now
            if reply is not None:
                polling = polling and not reply.unsupported
                self._put(reply)

    def _with_listing(self, reply: ProposalReply | None, decision: ProposalDecision | None) -> ProposalReply:
        """``reply`` (or a plain refresh) with the service's open list attached."""
        try:
            listing = tuple(proposal_views(self.sink.proposals()))
        except ControlError as exc:
            failed = ProposalReply(decision, False, str(exc), unsupported=exc.code == "unsupported")
            return failed if reply is None else _replace_listing(reply, None, exc.code == "unsupported")
        except Exception as exc:
            log.debug("listing proposals failed: %s", exc)
            return reply if reply is not None else ProposalReply(None, False, f"{type(exc).__name__}: {exc}")
        if reply is None:
            return ProposalReply(None, True, listing=listing)
        return _replace_listing(reply, listing, reply.unsupported)

    def _put(self, reply: ProposalReply) -> None:
        try:
            self._done.put_nowait(reply)
        except queue.Full:  # nobody is taking (the GUI is gone): keep the newest
            with contextlib.suppress(queue.Empty):
                self._done.get_nowait()
            self._done.put_nowait(reply)


def _replace_listing(reply: ProposalReply, listing: tuple[ProposalView, ...] | None, unsupported: bool) -> ProposalReply:
    return ProposalReply(reply.decision, reply.ok, reply.detail, reply.accepted, reply.rejected, listing,
                         unsupported)


def apply_reply(board: ProposalBoard, reply: ProposalReply) -> str:
    """Fold a channel reply into ``board``; returns a message for the user ("" for a quiet refresh)."""
    if reply.unsupported:
        board.mark_unsupported()
        return "the service has no discovery ([discovery] mode = \"propose\")"
    board.close(reply.accepted)
    board.close(reply.rejected)
    if reply.listing is not None:
        board.replace(reply.listing)
    return describe_reply(reply)


def describe_reply(reply: ProposalReply) -> str:
    """One line for the user about a decision ("" for a refresh)."""
    if reply.decision is None:
        return ""
    if not reply.ok:
        return f"proposals: {reply.decision.kind} refused: {reply.detail}"
    if reply.accepted:
        pairs = ", ".join(f"P{p} → #{pid}" for p, pid in sorted(reply.accepted.items()))
        return f"accepted {pairs} (tracked from the next frame)"
    if reply.rejected:
        return "rejected " + ", ".join(f"P{p}" for p in reply.rejected)
    return f"{reply.decision.kind}: nothing to do (no open proposals)"
