"""sam4em-live: real-time single-particle tracking for liquid-phase TEM."""

__version__ = "0.1.0"
