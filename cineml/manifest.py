"""project.toml -> validated, typed settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Project:
    """A film project: its folder, its film, and the validated stage settings."""

    name: str
    root: Path
    manifest_path: Path
    source: Path | None = None
    seed: int = 0
    plugins: list[Path] = field(default_factory=list)
    stages: dict[str, Any] = field(default_factory=dict)
