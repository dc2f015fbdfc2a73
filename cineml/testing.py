"""Helpers for testing plugins and projects, usable from any pytest suite.

    from cineml.testing import invoke_cli, make_context, make_project, run_project

or as a pytest plugin (``pytest_plugins = ["cineml.testing"]``) for the fixtures ``cineml_project``,
``cineml_plugin`` and ``cineml_cli``. Everything here runs the real engine: real manifests, real plugin
registration, real stages, the real CLI. (The helpers also work without pytest, e.g. in benchmarks.)
"""

from __future__ import annotations

import functools
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import Any

try:
    import pytest
except ImportError:  # the helpers work without pytest; the fixtures need it
    pytest = None  # type: ignore[assignment]

from .api import REQUIRED, Implementation, Project, StageContext
from .manifest import load_project
from .pipeline import Pipeline
from .plugins import Registry, notify
from .progress import Progress


def make_context(tmp_path: Path, impl: Implementation, options: dict[str, Any] | None = None,
                 inputs: dict[str, Path] | None = None, output: Path | None = None,
                 stage: str | None = None, hook: Any = None) -> StageContext:
    """A :class:`StageContext` for calling ``impl`` directly in a test.

    Options not given take their declared defaults; ``output`` defaults to ``tmp_path/"out"``.
    """
    opts = {o.name: o.default for o in impl.options if o.default is not REQUIRED}
    opts.update(options or {})
    project = Project(name="test", root=tmp_path, manifest_path=tmp_path / "project.toml")
    return StageContext(project=project, stage=stage or impl.name, options=opts,
                        output=output or tmp_path / "out", inputs=dict(inputs or {}),
                        progress=Progress(enabled=False),
                        notify=None if hook is None else functools.partial(notify, hook, warn=print))


def make_project(folder: Path, manifest: str, files: dict[str, str | bytes] | None = None) -> Path:
    """Write a project folder: ``project.toml`` (dedented) plus any extra files; returns the manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in (files or {}).items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)
    path = folder / "project.toml"
    path.write_text(textwrap.dedent(manifest))
    return path


_TEST_PLUGINS: list[Any] = []  # registered for the current test by the cineml_plugin fixture


def registry_with(*plugins: Any, builtins: bool = True) -> Registry:
    """A fresh registry: the installed plugins (unless ``builtins=False``), the current test's
    ``cineml_plugin`` plugins, and ``plugins``, registered in code."""
    registry = Registry()
    if builtins:
        registry.load_entry_points()
    for i, plugin in enumerate([*_TEST_PLUGINS, *plugins]):
        registry.add_plugin(plugin, name=getattr(plugin, "__name__", f"test-plugin-{i}"))
    return registry


def run_project(manifest: Path, overrides: Sequence[str] = (), plugins: Sequence[Any] = (),
                **plan: Any) -> dict[str, Any]:
    """Run a project's pipeline like ``cineml run`` (plan keywords: force, only, start, stop).

    ``plugins`` are registered for this run only. Returns the run record (as in run.json).
    """
    registry = registry_with(*plugins)
    project = load_project(manifest, registry, overrides)
    pipeline = Pipeline(project, registry)
    return pipeline.run(pipeline.plan(**plan))


def invoke_cli(*args: Any, plugins: Sequence[Any] = ()) -> tuple[int, str]:
    """Run the real ``cineml`` CLI in-process (``invoke_cli("run", manifest, "-S", "train.kimg=1")``) with
    the installed plugins plus ``plugins``; returns (exit code, everything it printed)."""
    from click.testing import CliRunner

    from . import cli

    saved, cli._registry = cli._registry, registry_with(*plugins)
    cli._registry.warn = cli._warn
    try:
        result = CliRunner().invoke(cli.cli, [str(a) for a in args], catch_exceptions=False)
    finally:
        cli._registry = saved
    return result.exit_code, result.output


if pytest is not None:

    @pytest.fixture
    def cineml_project(tmp_path: Path):
        """``cineml_project(manifest_text, files={...})`` writes a project in tmp_path; returns its manifest."""

        def make(manifest: str, files: dict[str, str | bytes] | None = None) -> Path:
            return make_project(tmp_path / "project", manifest, files)

        return make

    @pytest.fixture
    def cineml_plugin():
        """``cineml_plugin(module)``: register a plugin (a module or object with hook functions) for this
        test only; ``run_project``, ``registry_with`` and ``invoke_cli`` / ``cineml_cli`` all see it."""
        added: list[Any] = []

        def register(plugin: Any) -> Any:
            _TEST_PLUGINS.append(plugin)
            added.append(plugin)
            return plugin

        yield register
        for plugin in added:
            _TEST_PLUGINS.remove(plugin)

    @pytest.fixture
    def cineml_cli():
        """``cineml_cli("run", manifest, ...)`` -> (exit code, output): :func:`invoke_cli` as a fixture."""
        return invoke_cli
