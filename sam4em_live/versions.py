"""Versions of the software that produced a run (recorded in run.json)."""

from __future__ import annotations

import platform
from importlib import metadata

_PACKAGES = ("sam4em-live", "numpy", "scipy", "pyzmq", "msgpack", "tifffile", "scikit-image",
             "pandas", "pydantic", "torch", "sam2")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out
