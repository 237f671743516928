"""Load hooks named in the config: ``package.module:Class`` or an entry point.

A hook class may define a nested (or class attribute) ``Options`` model -- a
frozen pydantic model -- that validates ``HookSpec.options``; the constructor
then receives the validated model. A hook without ``Options`` is constructed
with no arguments and must be given no options.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from pydantic import BaseModel

from sam4em_live.config import ConfigError, HookSpec, parse_options

ENTRY_POINT_GROUP = "sam4em_live.hooks"
HOOK_METHODS = ("on_start", "on_result", "on_event", "on_stop")


@dataclass(frozen=True, slots=True)
class LoadedHook:
    """A hook object built from its spec, with the name it is reported under."""

    name: str
    hook: Any


def resolve_target(target: str) -> type:
    """Return the hook class for ``package.module:Class`` or an entry-point name."""
    if ":" in target:
        module_name, _, attr = target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ConfigError(f"hook {target!r}: cannot import {module_name!r} ({exc})") from None
        obj: Any = module
        for part in attr.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                raise ConfigError(f"hook {target!r}: {module_name!r} has no attribute {attr!r}")
        return obj
    matches = [ep for ep in entry_points(group=ENTRY_POINT_GROUP) if ep.name == target]
    if not matches:
        known = sorted(ep.name for ep in entry_points(group=ENTRY_POINT_GROUP))
        raise ConfigError(
            f"hook {target!r}: not 'package.module:Class' and no entry point of that name "
            f"in group {ENTRY_POINT_GROUP!r} (known: {', '.join(known) or 'none'})"
        )
    return matches[0].load()


def load_hook(spec: HookSpec, index: int = 0) -> LoadedHook:
    """Instantiate the hook of ``spec``; raise `ConfigError` naming the bad key or target."""
    cls = resolve_target(spec.target)
    if not isinstance(cls, type) or not any(callable(getattr(cls, m, None)) for m in HOOK_METHODS):
        raise ConfigError(f"hook {spec.target!r} is not a class with any of {', '.join(HOOK_METHODS)}")
    options_model = getattr(cls, "Options", None)
    if isinstance(options_model, type) and issubclass(options_model, BaseModel):
        hook = cls(parse_options(options_model, spec.options, f"hooks.hooks[{index}].options"))
    elif spec.options:
        raise ConfigError(f"hooks.hooks[{index}]: {spec.target!r} takes no options, got {sorted(spec.options)}")
    else:
        hook = cls()
    return LoadedHook(f"{spec.target.rsplit(':', 1)[-1]}#{index}", hook)
