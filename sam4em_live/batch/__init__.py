"""Re-analyse whole archives on a Dask cluster: one recording a task, through ``track``'s own pipeline.

``sam4em_live.batch(inputs, out=...)`` (this module is callable: it is both the package and the Python API's
function, see `_CallableModule`) and ``sam4em-live batch INPUTS... --out DIR`` run `runner.run_batch`;
docs/batch.md says what the outputs hold.
"""

from __future__ import annotations

import sys
import types
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sam4em_live.batch.runner import BatchReport


def run_batch(*args: Any, **kwargs: Any) -> BatchReport:
    """`sam4em_live.batch.runner.run_batch` (imported on first use: dask loads only for a batch)."""
    from sam4em_live.batch.runner import run_batch as run

    return run(*args, **kwargs)


class _CallableModule(types.ModuleType):
    """The module as a function: ``s4.batch(...)``.

    ``sam4em_live.batch`` is a package, and importing it rebinds the name on ``sam4em_live`` to the module: a
    plain function of that name would be shadowed the moment any code imported the package.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> BatchReport:
        return run_batch(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
