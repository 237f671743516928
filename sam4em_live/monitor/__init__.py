"""Live monitor: the experiment dashboard (pyqtgraph).

Qt is imported only by `window`, `frame_view`, `msd_panel` and `commands`;
`subscriber`, `model`, `imaging` and `prompts` are Qt-free so the receiver
thread never touches Qt and the logic is testable without a display.
"""
