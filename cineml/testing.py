"""Helpers for testing plugins: build a real stage context around an implementation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .api import REQUIRED, Implementation, StageContext
from .manifest import Project
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
