"""Offline analysis of trajectories: statistics tables and figures (``sam4em-live analyze``)."""
