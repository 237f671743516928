"""Versions of the software that produced a run (recorded in run.json)."""

from __future__ import annotations

import functools
import platform
from importlib import metadata

_PACKAGES = ("sam4em-live", "numpy", "scipy", "pyzmq", "msgpack", "tifffile", "scikit-image",
             "pandas", "pydantic", "torch", "sam2")


def package_versions() -> dict[str, str]:
    """Installed versions (a fresh copy each call).

    Read once per process: importlib.metadata parses every package's METADATA
    file (~10 ms holding the GIL), and run.json is rewritten with every status
    snapshot, so re-reading stalled the worker once a second (measured).
    """
    return dict(_read_versions())


@functools.cache
def _read_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
