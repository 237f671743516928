"""The monitor's proposals list: open discovery proposals with accept / reject, one, several or all.

A small list (highest score first, several can be selected; a click on a proposal in the frame selects it
here too) and four buttons. The panel only says what the user decided (`decided` signal with a
`ProposalDecision`); the window sends it on the `ProposalChannel`. GUI thread only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from PySide6 import QtCore, QtWidgets

from sam4em_live.monitor.proposals import DecisionKind, ProposalDecision

if TYPE_CHECKING:
    from sam4em_live.monitor.proposals import ProposalBoard

ID_ROLE = QtCore.Qt.ItemDataRole.UserRole


class ProposalPanel(QtWidgets.QGroupBox):
    """Open proposals with Accept / Reject (the selected ones) and Accept all / Reject all."""

    decided = QtCore.Signal(object)  # a ProposalDecision
    selectionChanged = QtCore.Signal()

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__("Discovery proposals", parent)
        self.list = QtWidgets.QListWidget()
        self.list.setSelectionMode(QtWidgets.QAbstractItemView.SelectionMode.ExtendedSelection)
        self.list.setMaximumHeight(120)
        self.list.itemSelectionChanged.connect(self.selectionChanged.emit)
        self.list.itemDoubleClicked.connect(lambda item: self._decide("accept", (int(item.data(ID_ROLE)),)))
        self.accept_button = QtWidgets.QPushButton("Accept (Enter)")
        self.reject_button = QtWidgets.QPushButton("Reject (R)")
        self.accept_all_button = QtWidgets.QPushButton("Accept all")
        self.reject_all_button = QtWidgets.QPushButton("Reject all")
        self.accept_button.clicked.connect(self.accept_selected)
        self.reject_button.clicked.connect(self.reject_selected)
        self.accept_all_button.clicked.connect(lambda: self._decide("accept_all", ()))
        self.reject_all_button.clicked.connect(lambda: self._decide("reject_all", ()))
        self.summary = QtWidgets.QLabel("no proposals")
        buttons = QtWidgets.QGridLayout()
        for k, button in enumerate((self.accept_button, self.reject_button, self.accept_all_button,
                                    self.reject_all_button)):
            buttons.addWidget(button, k // 2, k % 2)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addWidget(self.summary)
        layout.addWidget(self.list)
        layout.addLayout(buttons)
        self._shown_version = -1
        self.set_enabled(False)

    # ---------------------------------------------------------------- showing the board

    def show_board(self, board: ProposalBoard) -> None:
        """Rebuild the list when the board changed, keeping the selection of proposals still open."""
        if board.version == self._shown_version:
            return
        self._shown_version = board.version
        keep = self.selected()
        self.list.blockSignals(True)
        self.list.clear()
        for view in board.ordered():
            item = QtWidgets.QListWidgetItem(
                f"P{view.proposal}  {view.score:.1f}σ  ({view.x:.0f}, {view.y:.0f})  Ø {view.diameter_px:.0f} px")
            item.setData(ID_ROLE, view.proposal)
            self.list.addItem(item)
            item.setSelected(view.proposal in keep)
        self.list.blockSignals(False)
        if keep != self.selected():
            self.selectionChanged.emit()
        n = len(board.open)
        if board.supported is False:
            self.summary.setText("the service has no discovery (mode = \"propose\")")
        else:
            self.summary.setText(f"{n} open proposal{'s' if n != 1 else ''}" if n else "no proposals")
        for button in (self.accept_all_button, self.reject_all_button):
            button.setEnabled(self._enabled and n > 0)

    def set_enabled(self, enabled: bool) -> None:
        """With no control channel the list is shown but decisions cannot be sent."""
        self._enabled = enabled
        for button in (self.accept_button, self.reject_button, self.accept_all_button, self.reject_all_button):
            button.setEnabled(enabled)

    # ---------------------------------------------------------------- selection

    def selected(self) -> frozenset[int]:
        return frozenset(int(item.data(ID_ROLE)) for item in self.list.selectedItems())

    def select_only(self, proposal: int | None) -> None:
        """Select one proposal (None: none), as a click on the frame does."""
        self.list.blockSignals(True)
        for row in range(self.list.count()):
            item = self.list.item(row)
            item.setSelected(proposal is not None and int(item.data(ID_ROLE)) == proposal)
            if item.isSelected():
                self.list.scrollToItem(item)
        self.list.blockSignals(False)
        self.selectionChanged.emit()

    # ---------------------------------------------------------------- decisions

    def accept_selected(self) -> None:
        self._decide("accept", tuple(sorted(self.selected())))

    def reject_selected(self) -> None:
        self._decide("reject", tuple(sorted(self.selected())))

    def _decide(self, kind: DecisionKind, proposals: tuple[int, ...]) -> None:
        if not self._enabled:
            return
        if kind in ("accept", "reject") and not proposals:
            self.summary.setText("select a proposal first (click it on the frame or in the list)")
            return
        self.decided.emit(ProposalDecision(kind, proposals))
