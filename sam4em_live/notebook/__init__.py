"""Notebook widgets (JupyterLab, Notebook 7, VS Code; anywidget): prompt, track and analyse by clicking.

``pip install "sam4em-live[notebook]"``, then (docs/notebook.md)::

    import sam4em_live as s4
    from sam4em_live.notebook import TrackerWidget
    clip = s4.simulate("sam4em-50nm", frames=100)
    widget = TrackerWidget(clip)          # click a particle, press Track
    widget

`LiveView` attaches to a running service (``sam4em-live serve``) as a small live view.
"""

from __future__ import annotations

from sam4em_live.notebook.live import LiveView
from sam4em_live.notebook.tracker import TrackerWidget

__all__ = ["LiveView", "TrackerWidget"]
