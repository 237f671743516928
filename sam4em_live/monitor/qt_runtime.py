"""Guard against Qt bindings that corrupt reference counts (checked when a dashboard opens).

PySide6-Essentials 6.12.0 (an abi3 wheel) returns ``None`` from void methods
without taking a reference. On CPython 3.12+ ``None`` is immortal and nothing
happens; on CPython 3.11 every void call drops ``None``'s count by one and,
after some 10^4 calls -- under a minute of live display -- the interpreter
aborts with ``none_dealloc``. A monitor that dies mid-experiment is worse than
one that refuses to start, so we check once, cheaply, and say what to install.
"""

from __future__ import annotations

import sys


class BrokenQtBindings(RuntimeError):
    """The installed Qt bindings would crash the monitor; the message says what to install."""


def check_qt_bindings(calls: int = 200) -> None:
    """Raise `BrokenQtBindings` if void Qt calls lose references to ``None``."""
    if sys.version_info >= (3, 12):
        return  # None is immortal: such a leak is harmless there
    import PySide6
    from PySide6 import QtCore

    probe = QtCore.QObject()
    before = sys.getrefcount(None)
    for _ in range(calls):
        probe.setObjectName("sam4em-probe")
    lost = before - sys.getrefcount(None)
    if lost >= calls // 2:
        raise BrokenQtBindings(
            f"PySide6 {PySide6.__version__} on Python {sys.version.split()[0]} loses a reference to None on "
            f"every call ({lost} in {calls}); the monitor would abort within minutes. "
            "Install a working version: pip install 'PySide6-Essentials>=6.6,<6.12'"
        )
