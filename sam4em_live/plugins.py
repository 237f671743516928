"""One registry per seam, open to plugins: name -> a factory with its own options model.

Every seam (sources, segmenters, sinks, readers) keeps one `Registry`. A name resolves, in this order, to

1. a plugin registered at run time with `Registry.register` (tests, embedding applications),
2. a built-in of the package (given to the registry as an object, a `Lazy` loader or a ``"module:attr"``
   string; the last two import the plugin's module on first use),
3. an entry point of the seam's group (``sam4em_live.sources``, ``sam4em_live.segmenters``,
   ``sam4em_live.sinks``, ``sam4em_live.readers``) declared by any installed distribution, exactly as
   hooks are found in ``sam4em_live.hooks``.

A plugin is anything that has an ``Options`` attribute -- a frozen pydantic model with ``extra="forbid"``
that validates the plugin's own options -- and can be called with the validated options (plus what the
seam hands every plugin, e.g. a source's `SourceContext`) to build the thing. A class whose constructor
takes its options model is a plugin as it stands; `FactoryPlugin` pairs a model with a function for things
whose constructors take other arguments. Loading is lazy: a plugin's module is imported only when its
name is used, so choosing the ``embedded`` backend never imports torch.

The plugin's shape is checked when it is loaded or registered, and the built object is checked against the
seam's `typing.Protocol` with ``isinstance``; both errors name the plugin. Option errors name the key
(``source.endpont: Extra inputs are not permitted``); an unknown name lists the known ones.
"""

from __future__ import annotations

import importlib
import inspect
import json
import tomllib
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar, cast

from pydantic import BaseModel, ValidationError

from sam4em_live.config import ConfigError, FrozenModel, format_validation_error

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)


class PluginError(ConfigError):
    """A plugin that cannot be found, loaded or used; the message names the plugin (and the key)."""


class Plugin(Protocol[T_co]):
    """What a registry entry resolves to: an options model and a way to build from validated options."""

    Options: type[BaseModel]

    def __call__(self, *args: Any, **kwargs: Any) -> T_co: ...


@dataclass(frozen=True, slots=True)
class FactoryPlugin(Generic[T]):
    """A plugin made of an options model and a build function ``build(options, *context) -> thing``."""

    Options: type[BaseModel]
    build: Callable[..., T]

    def __call__(self, *args: Any, **kwargs: Any) -> T:
        return self.build(*args, **kwargs)


@dataclass(frozen=True, slots=True)
class Lazy:
    """A built-in plugin loaded on first use by ``load()`` (which imports the plugin's module).

    For built-ins whose modules are heavy or should not load unless chosen; unlike a ``"module:attr"``
    string, the import inside ``load`` is visible to tests/test_architecture.py.
    """

    load: Callable[[], object]


class NoOptions(FrozenModel):
    """The options model of a plugin that takes none (any key is an error)."""


def load_object(target: str) -> object:
    """The object at ``"package.module:attr.path"``, raising `PluginError` naming ``target`` if absent."""
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        raise PluginError(f"{target!r} is not 'package.module:attribute'")
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginError(f"cannot import {module_name!r} for {target!r} ({exc})") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise PluginError(f"{module_name!r} has no attribute {attr!r}") from None
    return obj


def protocol_members(protocol: type) -> list[str]:
    """The public attributes and methods a `typing.Protocol` class declares (its own and its bases')."""
    names: set[str] = set()
    for klass in protocol.__mro__:
        if klass in (object, Protocol, Generic):
            continue
        names.update(getattr(klass, "__annotations__", {}))
        names.update(name for name, value in vars(klass).items()
                     if callable(value) or isinstance(value, property))
    return sorted(name for name in names if not name.startswith("_"))


class Registry(Generic[T]):
    """Name -> plugin for one seam; see the module docstring for where names come from.

    Parameters
    ----------
    seam
        What the plugins build, in words (``"source"``), for error messages.
    group
        The entry-point group plugins of other distributions are declared in.
    protocol
        The seam's runtime-checkable `typing.Protocol`; every built object must satisfy it.
    builtins
        The package's own plugins: objects, `Lazy` loaders, or ``"module:attr"`` strings imported on first use.
    """

    def __init__(self, seam: str, group: str, protocol: type,
                 builtins: Mapping[str, object | str | Lazy] | None = None) -> None:
        self.seam = seam
        self.group = group
        self.protocol = protocol
        self._builtins: dict[str, object | str | Lazy] = dict(builtins or {})
        self._registered: dict[str, object | str] = {}
        self._loaded: dict[str, Plugin[T]] = {}

    def _entry_points(self) -> dict[str, str]:
        # Read each time (cheap), so a distribution installed while the process runs is found.
        return {ep.name: ep.value for ep in entry_points(group=self.group)}

    def names(self) -> list[str]:
        """Every known name, without loading anything."""
        return sorted({*self._registered, *self._builtins, *self._entry_points()})

    def register(self, name: str, plugin: object | str, *, replace: bool = False) -> None:
        """Add a plugin at run time (an object is checked now, a ``"module:attr"`` string on first use)."""
        if not replace and (name in self._registered or name in self._builtins):
            raise PluginError(f"{self.seam} plugin {name!r} is already registered")
        if not isinstance(plugin, str):
            self._check_plugin(name, plugin, "registered")
        self._registered[name] = plugin
        self._loaded.pop(name, None)

    def unregister(self, name: str) -> None:
        """Remove a plugin added with `register` (built-ins and entry points stay)."""
        self._registered.pop(name, None)
        self._loaded.pop(name, None)

    def get(self, name: str, where: str | None = None) -> Plugin[T]:
        """The plugin called ``name``, loaded and checked; `PluginError` listing the known names if none."""
        if name in self._loaded:
            return self._loaded[name]
        origin: str
        if name in self._registered:
            target, origin = self._registered[name], "registered"
        elif name in self._builtins:
            target, origin = self._builtins[name], "built in"
        else:
            points = self._entry_points()
            if name not in points:
                raise PluginError(f"{where or self.seam}: unknown {self.seam} {name!r}; "
                                  f"known: {', '.join(self.names()) or 'none'}")
            target, origin = points[name], f"entry point in group {self.group!r}"
        if isinstance(target, Lazy):
            target = target.load()
        elif isinstance(target, str):
            try:
                target = load_object(target)
            except PluginError as exc:
                raise PluginError(f"{self.seam} plugin {name!r} ({origin}): {exc}") from None
        plugin = self._check_plugin(name, target, origin)
        self._loaded[name] = plugin
        return plugin

    def plugins(self) -> dict[str, Plugin[T]]:
        """Every plugin, loaded (readers use this to match file suffixes)."""
        return {name: self.get(name) for name in self.names()}

    def options(self, name: str, raw: Mapping[str, object], where: str, name_at: str | None = None) -> BaseModel:
        """``raw`` validated by the plugin's own model; `PluginError` naming ``where.key`` otherwise.

        ``where`` is the options' place in the config (``"source"``), ``name_at`` the name's
        (default ``where.kind``), for the error messages.
        """
        model = self.get(name, name_at or f"{where}.kind").Options
        try:
            return model.model_validate(dict(raw))
        except ValidationError as exc:
            raise PluginError(format_validation_error(exc, prefix=where)) from None

    def build(self, name: str, raw: Mapping[str, object], *context: object, where: str,
              name_at: str | None = None) -> T:
        """Validate ``raw``, build the plugin with the options and ``context``, check the seam's protocol."""
        options = self.options(name, raw, where, name_at)
        product = self.get(name)(options, *context)
        return self.check(name, product)

    def check(self, name: str, product: object) -> T:
        """``product`` if it satisfies the seam's protocol, else a `PluginError` naming what it lacks."""
        if not isinstance(product, self.protocol):
            missing = [m for m in protocol_members(self.protocol) if not hasattr(product, m)]
            raise PluginError(f"{self.seam} plugin {name!r} built a {type(product).__name__}, which is not a "
                              f"{self.protocol.__name__} (missing: {', '.join(missing) or '?'})")
        return cast("T", product)

    def _check_plugin(self, name: str, plugin: object, origin: str) -> Plugin[T]:
        where = f"{self.seam} plugin {name!r} ({origin})"
        model = getattr(plugin, "Options", None)
        if not (inspect.isclass(model) and issubclass(model, BaseModel)):
            raise PluginError(f"{where}: has no Options model (a pydantic BaseModel class)")
        if model.model_config.get("extra") != "forbid" or not model.model_config.get("frozen"):
            raise PluginError(f"{where}: its Options model {model.__name__} must be frozen with extra='forbid'")
        if not callable(plugin):
            raise PluginError(f"{where}: is not callable with its options")
        return cast("Plugin[T]", plugin)


def parse_assignments(assignments: Sequence[str], where: str = "--option") -> dict[str, object]:
    """``["key=value", ...]`` -> ``{key: value}``: the generic way to give a plugin options on a command line.

    A value is read as a TOML value (``64``, ``2.5``, ``true``, ``"text"``, ``[0.5, 99.5]``) or, failing
    that, as JSON (``null``); anything else is the text itself (``device=cpu``, ``checkpoint=/w/x.pt``).
    The plugin's own options model then checks the types. Later assignments of a key win.
    """
    options: dict[str, object] = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        key = key.strip()
        if not sep or not key:
            raise PluginError(f"{where} {assignment!r}: expected KEY=VALUE")
        options[key] = _scalar(text.strip())
    return options


def _scalar(text: str) -> object:
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        pass
    try:
        return json.loads(text)
    except ValueError:
        return text
