"""`LiveView`: a small live view of a running service in a notebook (results subscriber + control client).

It subscribes to the service's results publisher (`sam4em_live.monitor.subscriber.ResultsSubscriber`, the
monitor's receiver thread) and shows the decimated preview frames with the particles' positions and short
trails; a click prompts a particle over the control channel (`sam4em_live.control.client.ControlClient`),
on the next frame the service processes. A drain thread takes the subscriber's coalesced update a few times
a second and sets the traits, so the kernel is never flooded by the stream.
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

    def __init__(self, results: str, control: str | None = None, *, contrast: Contrast | None = None,
                 display_px: int = 480, **kwargs: Any) -> None:
        super().__init__(display_px=display_px, **kwargs)
        self.contrast = contrast or Contrast()
        self._trails: dict[int, deque[tuple[float, float]]] = {}
        self._subscriber = ResultsSubscriber(results)
        self._control = ControlClient(control, timeout_s=2.0, origin="control") if control else None
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

    def close(self) -> None:
        self._stop.set()
        self._drain.join(2.0)
        self._subscriber.stop()
        if self._control is not None:
            self._control.close()
        super().close()

    def _drain_loop(self) -> None:
        while not self._stop.wait(DRAIN_INTERVAL_S):
            update = self._subscriber.take()
            if not update.empty:
                self._show(update)

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

    def _on_browser_message(self, widget: object, content: dict[str, Any], buffers: list[bytes]) -> None:
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
