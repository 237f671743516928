"""Discovery proposals drawn on the live frame: dashed outlines, a cross at the centre, ``P<id> <score>σ``.

Drawn so that they cannot be mistaken for tracked particles (filled masks in the particle's colour with a
``#<id>`` label): one dashed cyan outline per proposal (a selected one solid and thicker), a cross at its
centre and a label with its proposal id and detector score. All items are in full-frame pixels and let
clicks through to the view box, which decides what a click means.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore

if TYPE_CHECKING:
    from pyqtgraph.GraphicsScene.mouseEvents import MouseClickEvent

    from sam4em_live.monitor.proposals import ProposalBoard, ProposalView

PROPOSAL_COLOUR = (0, 230, 230)
SELECTED_COLOUR = (255, 255, 0)
Z_VALUE = 35  # above masks and tails, below the particles' labels


class _PassiveCurve(pg.PlotCurveItem):
    def mouseClickEvent(self, ev: MouseClickEvent) -> None:
        ev.ignore()


class _PassiveScatter(pg.ScatterPlotItem):
    def mouseClickEvent(self, ev: MouseClickEvent) -> None:
        ev.ignore()


def outline_path(views: list[ProposalView]) -> tuple[np.ndarray, np.ndarray]:
    """All outlines as one polyline, each closed and separated by NaN (one curve item draws them all).

    A proposal without an outline is drawn as its box.
    """
    pieces = []
    for view in views:
        ring = list(view.outline)
        if len(ring) < 3 and view.box is not None:
            x0, y0, x1, y1 = view.box
            ring = [(x0, y0), (x1, y0), (x1, y1), (x0, y1)]
        if len(ring) < 3:
            continue
        pieces.append(np.asarray([*ring, ring[0], (np.nan, np.nan)], dtype=float))
    if not pieces:
        return np.zeros(0), np.zeros(0)
    xy = np.concatenate(pieces)
    return xy[:, 0], xy[:, 1]


class ProposalLayer:
    """Owns the proposal items of one view box; `draw` redraws only when the board or selection changed."""

    def __init__(self, view_box: pg.ViewBox) -> None:
        self.view_box = view_box
        dashed = pg.mkPen(PROPOSAL_COLOUR, width=2, style=QtCore.Qt.PenStyle.DashLine, cosmetic=True)
        self.outlines = _PassiveCurve(pen=dashed, connect="finite")
        self.selected_outlines = _PassiveCurve(pen=pg.mkPen(SELECTED_COLOUR, width=3, cosmetic=True), connect="finite")
        self.centres = _PassiveScatter(size=12, symbol="+", pen=pg.mkPen(PROPOSAL_COLOUR, width=2), brush=None,
                                       pxMode=True)
        for item in (self.outlines, self.selected_outlines, self.centres):
            item.setZValue(Z_VALUE)
            view_box.addItem(item, ignoreBounds=True)
        self._labels: dict[int, pg.TextItem] = {}
        self._shown: tuple[int, frozenset[int]] | None = None

    def draw(self, board: ProposalBoard, selected: frozenset[int]) -> None:
        key = (board.version, selected)
        if key == self._shown:
            return
        self._shown = key
        views = board.ordered()
        plain = [v for v in views if v.proposal not in selected]
        chosen = [v for v in views if v.proposal in selected]
        self.outlines.setData(*outline_path(plain))
        self.selected_outlines.setData(*outline_path(chosen))
        if views:
            self.centres.setData(x=[v.x for v in views], y=[v.y for v in views])
        else:
            self.centres.setData(x=[], y=[])
        self._draw_labels(views, selected)

    def _draw_labels(self, views: list[ProposalView], selected: frozenset[int]) -> None:
        for view in views:
            label = self._labels.get(view.proposal)
            if label is None:
                label = self._labels[view.proposal] = pg.TextItem(anchor=(0, 0), color=(0, 0, 0))
                label.setZValue(Z_VALUE + 1)
                self.view_box.addItem(label, ignoreBounds=True)
            colour = SELECTED_COLOUR if view.proposal in selected else PROPOSAL_COLOUR
            label.fill = pg.mkBrush(*colour, 200)
            label.setText(f"P{view.proposal} {view.score:.1f}σ")
            label.setPos(view.x + view.diameter_px / 2 + 2, view.y + 2)
        shown = {v.proposal for v in views}
        for proposal in [p for p in self._labels if p not in shown]:
            self.view_box.removeItem(self._labels.pop(proposal))
