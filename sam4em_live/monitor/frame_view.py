"""The live frame: grey preview, mask overlays, ids, tails and prompt gestures.

All items live in full-frame pixel coordinates (x = column, y = row, origin at
the centre of the top-left pixel, y down). The decimated preview and the
overlay share one rectangle scaled by the preview ``step``.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtWidgets

from sam4em_live.analysis.plots.numbers import nice_length
from sam4em_live.monitor.imaging import ContrastLut, age_colours, paint_mask, particle_colour
from sam4em_live.monitor.proposal_layer import ProposalLayer

if TYPE_CHECKING:
    from pyqtgraph.GraphicsScene.mouseEvents import MouseClickEvent, MouseDragEvent

    from sam4em_live.monitor.model import DashboardModel
    from sam4em_live.monitor.proposals import ProposalBoard

MASK_ALPHA = 100  # the particle stays visible under its mask
SELECTED_ALPHA = 190
AGE_BINS = 8  # tail colour steps from old (violet) to new (yellow)
SCALE_BAR_FRACTION = 0.2  # of the frame width: the bar is the round length (1, 2, 5 × 10^k nm) below it


class PromptViewBox(pg.ViewBox):
    """Left click → ``sigClicked(x, y, negative)``; left drag → ``sigBoxDrawn(x0, y0, x1, y1)``.

    Zoom with the wheel, pan with the middle button (right drag zooms), as in pyqtgraph.
    """

    sigClicked = QtCore.Signal(float, float, bool)
    sigBoxDrawn = QtCore.Signal(float, float, float, float)

    def __init__(self) -> None:
        super().__init__(lockAspect=True, invertY=True, enableMenu=False)
        self._band = QtWidgets.QGraphicsRectItem()
        self._band.setPen(pg.mkPen((255, 255, 255), width=1, style=QtCore.Qt.PenStyle.DashLine, cosmetic=True))
        self._band.setZValue(1e6)
        self._band.hide()
        self.addItem(self._band, ignoreBounds=True)

    def mouseClickEvent(self, ev: MouseClickEvent) -> None:
        if ev.button() != QtCore.Qt.MouseButton.LeftButton:
            super().mouseClickEvent(ev)
            return
        ev.accept()
        point = self.mapSceneToView(ev.scenePos())
        modifiers = ev.modifiers()
        negative = bool(modifiers & (QtCore.Qt.KeyboardModifier.ShiftModifier
                                     | QtCore.Qt.KeyboardModifier.ControlModifier))
        self.sigClicked.emit(point.x(), point.y(), negative)

    def mouseDragEvent(self, ev: MouseDragEvent, axis: int | None = None) -> None:
        if ev.button() != QtCore.Qt.MouseButton.LeftButton:
            super().mouseDragEvent(ev, axis)
            return
        ev.accept()
        start = self.mapSceneToView(ev.buttonDownScenePos())
        end = self.mapSceneToView(ev.scenePos())
        if ev.isFinish():
            self._band.hide()
            self.sigBoxDrawn.emit(start.x(), start.y(), end.x(), end.y())
            return
        self._band.setRect(QtCore.QRectF(start, end).normalized())
        self._band.show()


class PassiveScatter(pg.ScatterPlotItem):
    """Scatter that lets clicks through to the view box (a click on the ring is a click on the image)."""

    def mouseClickEvent(self, ev: MouseClickEvent) -> None:
        ev.ignore()


class FrameView(pg.GraphicsView):
    """Draws a `DashboardModel`; `render` is cheap enough to call at ~25 Hz."""

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.view_box = PromptViewBox()
        self.setCentralItem(self.view_box)
        self.image_item = pg.ImageItem(axisOrder="row-major")
        self.overlay_item = pg.ImageItem(axisOrder="row-major")
        self.overlay_item.setZValue(10)
        self.selection_ring = PassiveScatter(size=26, pen=pg.mkPen((255, 255, 255), width=2),
                                                 brush=None, symbol="o", pxMode=True)
        self.selection_ring.setZValue(30)
        self._age_curves = [pg.PlotCurveItem(pen=pg.mkPen(tuple(colour), width=2), connect="finite")
                            for colour in age_colours(AGE_BINS)]
        for curve in self._age_curves:
            curve.setZValue(20)
            self.view_box.addItem(curve)
        for item in (self.image_item, self.overlay_item, self.selection_ring):
            self.view_box.addItem(item)
        self.proposal_layer = ProposalLayer(self.view_box)
        self._labels: dict[int, pg.TextItem] = {}
        self._shown_preview: object = None
        self._shown_overlay: tuple = ()
        self._shown_grid: tuple[tuple[int, int], int] | None = None
        self._lut_version = -1
        self._rect = QtCore.QRectF()
        self._rect_applied: set[int] = set()
        self.scale_bar: pg.ScaleBar | None = None
        self._scale_key: tuple[float | None, int] | None = None

    # ---------------------------------------------------------------- rendering

    def render(self, model: DashboardModel, lut: ContrastLut, lut_version: int, selected: int | None,
               proposals: ProposalBoard | None = None, selected_proposals: frozenset[int] = frozenset()) -> None:
        shape = model.full_shape
        if shape is None:
            return
        step = model.display_step
        if self._shown_grid != (shape, step):
            self._set_grid(shape, step)
        preview = model.preview
        if preview is not None and (preview is not self._shown_preview or lut_version != self._lut_version):
            self._show(self.image_item, lut.apply(preview.pixels))
            self._shown_preview, self._lut_version = preview, lut_version
        frame = int(model.result.get("frame", -1)) if model.result else -1
        overlay_key = (frame, selected, step, id(model.result))
        if overlay_key != self._shown_overlay:
            self._draw_overlay(model, shape, step, selected)
            self._shown_overlay = overlay_key
        self._draw_tails(model)
        self._draw_labels(model, selected)
        if proposals is not None:
            self.proposal_layer.draw(proposals, selected_proposals)
        calibration = model.result.get("calibration") if model.result else None
        pixel_size = calibration.get("pixel_size_nm") if isinstance(calibration, dict) else None
        self._draw_scale_bar(float(pixel_size) if isinstance(pixel_size, (int, float)) and pixel_size > 0 else None,
                             shape[1])

    def _draw_scale_bar(self, pixel_size_nm: float | None, width_px: int) -> None:
        """A scale bar in the lower right when the pixel size is known; rebuilt only when that or the width changes."""
        if self._scale_key == (pixel_size_nm, width_px):
            return
        self._scale_key = (pixel_size_nm, width_px)
        if self.scale_bar is not None:
            # not setParentItem(None): a ScaleBar re-anchors to its parent there and raises without one
            with contextlib.suppress(RuntimeError, TypeError):  # connected when it was parented
                self.view_box.sigRangeChanged.disconnect(self.scale_bar.updateBar)
            if self.scale_bar.scene() is not None:
                self.scale_bar.scene().removeItem(self.scale_bar)
            self.scale_bar = None
        if pixel_size_nm is None:
            return
        length_nm = nice_length(SCALE_BAR_FRACTION * width_px * pixel_size_nm)
        bar = pg.ScaleBar(length_nm / pixel_size_nm, width=6, brush=(255, 255, 255), pen=pg.mkPen((0, 0, 0)),
                          offset=(-20, -20))
        bar.text.setText(f"{length_nm:g} nm")
        bar.text.setColor((255, 255, 255))
        bar.text.fill = pg.mkBrush(0, 0, 0, 170)  # readable on bright and dark frames alike
        bar.text.setAnchor((0.5, 1.3))  # clear of the bar
        bar.setZValue(50)
        bar.setParentItem(self.view_box)
        self.scale_bar = bar

    def _set_grid(self, shape: tuple[int, int], step: int) -> None:
        rows, cols = shape
        grid_rows, grid_cols = -(-rows // step), -(-cols // step)
        # Preview pixel (r, c) samples full pixel (r*step, c*step): its square is centred there.
        self._rect = QtCore.QRectF(-0.5 * step, -0.5 * step, grid_cols * step, grid_rows * step)
        self._rect_applied = set()
        if self._shown_grid is None or self._shown_grid[0] != shape:
            self.view_box.setRange(xRange=(-0.5, cols - 0.5), yRange=(-0.5, rows - 0.5), padding=0.0)
        self._shown_grid = (shape, step)

    def _draw_overlay(self, model: DashboardModel, shape: tuple[int, int], step: int, selected: int | None) -> None:
        rows, cols = -(-shape[0] // step), -(-shape[1] // step)
        overlay = np.zeros((rows, cols, 4), dtype=np.uint8)
        for view in model.particles.values():
            if view.present and view.mask is not None and view.bbox is not None:
                alpha = SELECTED_ALPHA if view.particle == selected else MASK_ALPHA
                paint_mask(overlay, view.mask, view.bbox, step, (*particle_colour(view.particle), alpha))
        self._show(self.overlay_item, overlay)

    def _show(self, item: pg.ImageItem, image: np.ndarray) -> None:
        item.setImage(image, autoLevels=False, levels=(0, 255))
        if id(item) not in self._rect_applied:
            # setRect scales by the current image size, so it must follow the first image on a new grid.
            item.setRect(self._rect)
            self._rect_applied.add(id(item))

    def _draw_tails(self, model: DashboardModel) -> None:
        """Tails as line segments coloured by age: one curve per age bin for all particles (cheap to update)."""
        span = max(model.tail_frames, 1)
        pieces: list[list[np.ndarray]] = [[] for _ in range(AGE_BINS)]
        for tail in model.tails.values():
            frames, xy = tail.arrays()
            if len(xy) < 2:
                continue
            fresh = 1.0 - np.clip((model.last_frame - frames[1:]) / span, 0.0, 1.0)
            age_bin = np.minimum((fresh * AGE_BINS).astype(int), AGE_BINS - 1)
            # Each segment i -> i+1 as [start, end, NaN] so one curve draws disjoint segments.
            segments = np.stack([xy[:-1], xy[1:], np.full_like(xy[1:], np.nan)], axis=1)
            for k in np.unique(age_bin):
                pieces[k].append(segments[age_bin == k].reshape(-1, 2))
        for curve, parts in zip(self._age_curves, pieces, strict=True):
            if parts:
                xy = np.concatenate(parts)
                curve.setData(xy[:, 0], xy[:, 1])
            else:
                curve.setData([], [])

    def _draw_labels(self, model: DashboardModel, selected: int | None) -> None:
        ring = []
        for pid, view in model.particles.items():
            label = self._labels.get(pid)
            if label is None:
                label = self._labels[pid] = pg.TextItem(f"#{pid}", color=(0, 0, 0), anchor=(0, 1),
                                                         fill=(*particle_colour(pid), 220))
                label.setZValue(40)
                self.view_box.addItem(label)
            if not view.present or view.x is None or view.y is None:
                label.setVisible(False)
                continue
            label.setVisible(True)
            label.setPos(view.x + 3, view.y - 3)
            if pid == selected:
                ring.append((view.x, view.y))
        for pid in [p for p in self._labels if p not in model.particles]:
            self.view_box.removeItem(self._labels.pop(pid))
        self.selection_ring.setData(pos=ring) if ring else self.selection_ring.setData(x=[], y=[])

    # ---------------------------------------------------------------- geometry for tests and reports

    def widget_point(self, x: float, y: float) -> QtCore.QPoint:
        """Viewport pixel showing full-frame point (x, y)."""
        scene = self.view_box.mapViewToScene(QtCore.QPointF(x, y))
        return self.mapFromScene(scene)
