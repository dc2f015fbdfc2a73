"""Helpers for testing plugins and projects, usable from any pytest suite.

    from cineml.testing import make_context, make_project, run_project

or as a pytest plugin (``pytest_plugins = ["cineml.testing"]``) for the ``cineml_project`` fixture.
Everything here runs the real engine: real manifests, real plugin registration, real stages.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any, Sequence

import pytest

from .api import REQUIRED, Implementation, StageContext
from .manifest import Project, load_project
from .pipeline import Pipeline
from .plugins import Registry
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
                        progress=Progress(enabled=False), hook=hook)


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


def registry_with(*plugins: Any, builtins: bool = True) -> Registry:
    """A fresh registry: the installed plugins (unless ``builtins=False``) plus ``plugins`` registered in code."""
    registry = Registry()
    if builtins:
        registry.load_entry_points()
    for i, plugin in enumerate(plugins):
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


@pytest.fixture
def cineml_project(tmp_path: Path):
    """``cineml_project(manifest_text, files={...})`` writes a project in tmp_path; returns its manifest."""

    def make(manifest: str, files: dict[str, str | bytes] | None = None) -> Path:
        return make_project(tmp_path / "project", manifest, files)

    return make
