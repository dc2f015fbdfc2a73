"""The plugin manager: built-ins, installed entry points, and project-local plugin files.

Built-ins are entry points of the ``cineml`` distribution itself, so they load exactly like
third-party plugins. Every hook is called through pluggy, one plugin at a time (:func:`each_plugin`),
so every registered implementation knows which plugin (and version) provided it, and one failing
observer or command does not stop the others.

Environment:
  ``CINEML_LOAD_PLUGINS``   comma list of plugin or distribution names to load besides the built-ins
                            (empty: built-ins only; unset: everything installed).
  ``CINEML_STRICT_PLUGINS`` ``1`` makes a plugin that fails to load a fatal error.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib.util
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

import pluggy

from . import hookspecs
from .api import CinemlError
from .stages import REGISTRIES, SHARED_NAMES

BUILTIN_DISTRIBUTION = "cineml"

#: Registry kind -> (registry hook, the class every registered object must be).
KINDS: dict[str, tuple[str, type]] = {kind: (f"register_{kind}", base) for kind, base in REGISTRIES.items()}


@dataclass
class PluginInfo:
    """One loaded (or failed) plugin, as ``cineml plugins`` shows it."""

    name: str
    version: str
    distribution: str
    origin: str  # "builtin", "entry point", or the plugin file's path
    provides: dict[str, list[str]] = field(default_factory=dict)
    hooks: list[str] = field(default_factory=list)
    error: str | None = None


class Registry:
    """All implementations by kind and name, plus the pluggy manager that found them."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager("cineml")
        self.pm.add_hookspecs(hookspecs)
        self.impls: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
        self.plugins: dict[str, PluginInfo] = {}
        self.warn: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr)

    @property
    def hook(self) -> Any:
        return self.pm.hook

    # --- loading -------------------------------------------------------------------------------

    def load_entry_points(self) -> None:
        """Load plugins from the ``cineml`` entry-point group, honouring ``CINEML_LOAD_PLUGINS``."""
        wanted = os.environ.get("CINEML_LOAD_PLUGINS")
        allowed = None if wanted is None else {_norm(w) for w in wanted.split(",") if w.strip()}
        eps = sorted(entry_points(group="cineml"), key=lambda ep: (ep.dist.name if ep.dist else "", ep.name))
        matched: set[str] = set()
        for ep in eps:
            dist = ep.dist.name if ep.dist else "?"
            version = ep.dist.version if ep.dist else "0"
            builtin = dist == BUILTIN_DISTRIBUTION
            if not builtin and allowed is not None:
                names = {_norm(ep.name), _norm(dist)} & allowed
                if not names:
                    continue
                matched |= names
            info = PluginInfo(ep.name, version, dist, "builtin" if builtin else "entry point")
            self._add(info, ep.load, f'plugin "{ep.name}" (distribution {dist}, '
                                     f'entry point {ep.name} = {ep.value})')
        if allowed:
            for name in sorted(allowed - matched - {_norm(BUILTIN_DISTRIBUTION)}):
                self.warn(f"CINEML_LOAD_PLUGINS names {name!r}, but no installed plugin or distribution is called "
                          "that (`cineml plugins` lists them).")

    def load_files(self, paths: list[Path]) -> None:
        """Load project-local plugin files (``plugins = [...]`` in project.toml), in the given order.

        A file the manifest names must load: failures are errors, not warnings.
        """
        for path in paths:
            name = path.name
            if name in self.plugins and self.plugins[name].origin == str(path):
                continue  # already loaded (e.g. `cineml layouts --project` then a run)
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
            info = PluginInfo(name, f"local-{digest}", "", str(path))
            self._add(info, functools.partial(_import_file, path, digest), f'plugin file "{path}"', strict=True)

    def add_plugin(self, plugin: Any, name: str, version: str = "0") -> None:
        """Register an already-imported plugin (a module or any object with hook functions).

        For tests and embedding; errors are raised, never just warned.
        """
        self._add(PluginInfo(name, version, "", "registered in code"), lambda: plugin, f'plugin "{name}"',
                  strict=True)

    def _add(self, info: PluginInfo, load: Callable[[], ModuleType], label: str, strict: bool = False) -> None:
        strict = strict or os.environ.get("CINEML_STRICT_PLUGINS", "") not in ("", "0")
        if info.name in self.plugins:
            other = self.plugins[info.name]
            raise CinemlError(f"Two plugins are called {info.name!r}: {other.distribution or other.origin} and "
                              f"{info.distribution or info.origin}. Uninstall one of them.")
        try:
            module = load()
            self.pm.register(module, name=info.name)
        except CinemlError:
            raise
        except Exception as exc:  # a broken plugin must not take the CLI down
            self._failed(info, label, exc, strict)
            return
        self.plugins[info.name] = info
        callers = self.pm.get_hookcallers(module) or []
        info.hooks = sorted(c.name for c in callers if c.has_spec())
        added: list[tuple[str, str]] = []
        try:
            self._check_hook_names([c.name for c in callers if not c.has_spec()], info, label, strict)
            for kind, (hook_name, _) in KINDS.items():
                for _, call in each_plugin(self.pm, hook_name, only=info.name):
                    call(register=self._register_for(kind, info, added))
        except CinemlError:
            self._rollback(module, info, added)
            raise
        except Exception as exc:
            self._rollback(module, info, added)
            self._failed(info, label, exc, strict)

    def _register_for(self, kind: str, info: PluginInfo, added: list[tuple[str, str]]) -> Callable[[Any], None]:
        base: type[Any] = KINDS[kind][1]  # every registry's base class has name, plugin and plugin_version

        def register(obj: Any) -> None:
            if not isinstance(obj, base):
                raise CinemlError(f"Plugin {info.name!r} registered {obj!r} as one of its {kind}, but it is not a "
                                  f"cineml.{base.__name__} instance. Fix the plugin's {KINDS[kind][0]} hook.")
            name = obj.name
            if not name or not isinstance(name, str):
                raise CinemlError(f"Plugin {info.name!r} registered a {base.__name__} without a name.")
            for other_kind in SHARED_NAMES.get(kind, (kind,)):
                if name in self.impls[other_kind]:
                    other = self.impls[other_kind][name].plugin
                    what = kind[:-1] if other_kind == kind else f"{kind[:-1]} and a {other_kind[:-1]}"
                    builtin = getattr(self.plugins.get(other), "origin", "") == "builtin"
                    fix = (f"{other!r} is built in, so rename the one in {info.name!r}" if builtin else
                           "Uninstall or disable one (CINEML_LOAD_PLUGINS)")
                    raise CinemlError(f"Two plugins register a {what} named {name!r}: {other!r} and "
                                      f"{info.name!r}. {fix}.")
            obj.plugin, obj.plugin_version = info.name, info.version
            self.impls[kind][name] = obj
            info.provides.setdefault(kind, []).append(name)
            added.append((kind, name))

        return register

    def _check_hook_names(self, unknown: list[str], info: PluginInfo, label: str, strict: bool) -> None:
        """A misspelt hook (``def register_layout``) would be silently ignored by pluggy: say so."""
        known = [n for n, caller in vars(self.pm.hook).items() if caller.has_spec()]
        for name in unknown:
            close = difflib.get_close_matches(name, known, n=1)
            message = (f"{label}: @hookimpl function {name!r} is not a CineML hook, so it is never called."
                       + (f" Did you mean {close[0]!r}?" if close else " See docs/hooks.md for the hooks."))
            if strict:
                raise CinemlError(message)
            self.warn(message)
        if not info.hooks and strict:
            self.warn(f"{label} implements no CineML hook, so it provides nothing (decorate hook functions "
                      "with @cineml.hookimpl).")

    def _rollback(self, module: ModuleType, info: PluginInfo, added: list[tuple[str, str]]) -> None:
        """Undo a plugin's partial registration, so a half-loaded plugin provides nothing."""
        for kind, name in added:
            self.impls[kind].pop(name, None)
        info.provides.clear()
        self.pm.unregister(module)

    def _failed(self, info: PluginInfo, label: str, exc: Exception, strict: bool) -> None:
        message = f"Error loading {label}: {type(exc).__name__}: {exc}"
        if strict:
            raise CinemlError(message + " (fatal because CINEML_STRICT_PLUGINS is set, or the manifest names "
                                        "this file).") from exc
        info.error = f"{type(exc).__name__}: {exc}"
        self.plugins.setdefault(info.name, info)
        self.warn(message + " — skipped; set CINEML_STRICT_PLUGINS=1 to make this fatal.")


def _norm(name: str) -> str:
    """Distribution names compare normalised (PEP 503): cineml-foo, cineml_foo and Cineml.Foo are one."""
    return re.sub(r"[-_.]+", "-", name.strip()).lower()


def _import_file(path: Path, digest: str) -> ModuleType:
    module_name = f"cineml_local_{path.stem}_{digest}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    if str(path.parent) not in sys.path:  # its sibling modules import (appended: never shadows a package)
        sys.path.append(str(path.parent))
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def load_registry() -> Registry:
    """A registry with the built-ins and installed plugins loaded."""
    registry = Registry()
    registry.load_entry_points()
    return registry


def each_plugin(pm: pluggy.PluginManager, name: str, only: str | None = None) -> list[tuple[str, Callable[..., Any]]]:
    """(plugin name, call) for every plugin implementing hook ``name``, in pluggy's order.

    pluggy's own ``pm.hook.name(...)`` calls all plugins at once: it stops at the first error and does not
    say whose result is whose. CineML needs both (which plugin registered an implementation; an observer
    that fails must not stop the run or the others), so each call goes through pluggy's caller for one
    plugin (``subset_hook_caller``): tracing, ``tryfirst``/``trylast`` and ``wrapper=True`` hooks behave
    as pluggy defines them. ``only`` keeps one plugin.
    """
    caller = getattr(pm.hook, name)
    names = list(dict.fromkeys(impl.plugin_name for impl in reversed(caller.get_hookimpls())))
    plugins = {n: pm.get_plugin(n) for n in names}
    return [(n, pm.subset_hook_caller(name, remove_plugins=[p for m, p in plugins.items() if m != n]))
            for n in names if only is None or n == only]


def notify(hooks: Any, name: str, warn: Callable[[str], None], **kwargs: Any) -> None:
    """Call every plugin's lifecycle hook ``name``; one that raises is reported, and the others and the
    run go on (a plugin that only observes, e.g. posting fakes grids to a webhook, must not stop a run).

    ``hooks`` is the plugin manager, or in tests any object with a method ``name`` standing in for it."""
    if isinstance(hooks, pluggy.PluginManager):
        calls = [(repr(who), functools.partial(call, **kwargs)) for who, call in each_plugin(hooks, name)]
    else:
        calls = [("a plugin", functools.partial(getattr(hooks, name), **kwargs))]
    for who, call in calls:
        try:
            call()
        except Exception as exc:  # noqa: BLE001
            warn(f"Plugin {who} failed in its {name} hook ({type(exc).__name__}: {exc}); carrying on without it.")
