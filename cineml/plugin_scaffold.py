"""``cineml plugin new NAME``: a plugin package ready to test and publish.

The package passes its own tests as soon as it is written (``pip install -e DIR`` then
``pytest DIR``): a pyproject with the ``cineml`` entry point, a module with one example layout,
tests that run it through the real engine with :mod:`cineml.testing`, and a README. Templates are
plain text with ``__TOKENS__`` (the code inside them is full of braces).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import click

from .api import CinemlError, atomic_path

PREFIX = "cineml-"
_NAME = re.compile(r"^[a-z][a-z0-9]*(?:-[a-z0-9]+)*$")


@dataclass(frozen=True)
class PluginNames:
    """Every name a plugin package needs, derived from one: ``cineml-foo-bar``."""

    distribution: str  # cineml-foo-bar: the PyPI name, and the package folder's name
    module: str  # cineml_foo_bar: the importable module
    plugin: str  # foo-bar: the entry-point name, shown by `cineml plugins`; also the example layout's name


def plugin_names(name: str) -> PluginNames:
    """Validate ``name`` (``cineml-foo`` or just ``foo``) and derive the package's names."""
    short = name[len(PREFIX):] if name.startswith(PREFIX) else name
    if not _NAME.match(short) or short == "cineml":
        raise CinemlError(
            f"{name!r} is not a valid plugin name. Use lowercase letters, digits and hyphens, starting "
            f"with a letter, e.g. \"cineml-film-burn\" (or just \"film-burn\"; the {PREFIX} prefix is "
            "added, as is the convention for CineML plugins on PyPI).")
    distribution = PREFIX + short
    return PluginNames(distribution, distribution.replace("-", "_"), short)


def _check_free(names: PluginNames) -> None:
    """Refuse a name an installed plugin or layout already has: the two could not load together."""
    from .plugins import load_registry

    registry = load_registry()
    if names.plugin in registry.plugins:
        other = registry.plugins[names.plugin]
        raise CinemlError(f"A plugin called {names.plugin!r} is already installed "
                          f"({other.distribution or other.origin}); choose another name.")
    if names.plugin in registry.impls["layouts"]:
        owner = registry.impls["layouts"][names.plugin].plugin
        raise CinemlError(f"Plugin {owner!r} already provides a layout called {names.plugin!r}; choose "
                          "another name, or rename the layout in the generated module.")


def write_plugin_package(folder: Path, name: str) -> Path:
    """Write a plugin package for ``name`` into ``folder`` (which must not exist or be empty).

    Returns ``folder``. The files appear all at once (written beside it, then renamed), so an
    interrupted run leaves nothing half-written.
    """
    names = plugin_names(name)
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())):
        raise CinemlError(f"{folder} already exists and is not empty; choose another name or --dir, or "
                          "delete it first.")
    _check_free(names)
    tokens = {"__DIST__": names.distribution, "__MODULE__": names.module, "__PLUGIN__": names.plugin}
    files = {
        "pyproject.toml": PYPROJECT,
        f"{names.module}.py": MODULE,
        "tests/conftest.py": CONFTEST,
        f"tests/test_{names.module}.py": TESTS,
        "README.md": README,
        ".gitignore": GITIGNORE,
    }
    with atomic_path(folder) as tmp:
        for relative, template in files.items():
            text = template
            for token, value in tokens.items():
                text = text.replace(token, value)
            path = tmp / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    return folder


def add_plugin_commands(cli: click.Group) -> None:
    """Add the ``plugin`` group (``cineml plugin new NAME``) to ``cli``; calling it twice is harmless."""
    if "plugin" in cli.commands:
        return

    @cli.group("plugin")
    def plugin() -> None:
        """Create CineML plugin packages."""

    @plugin.command("new")
    @click.argument("name")
    @click.option("--dir", "folder", default=".", show_default=True, type=click.Path(file_okay=False),
                  help="Folder to create the package in (it goes in DIR/cineml-NAME).")
    def new(name: str, folder: str) -> None:
        """Create a plugin package: pyproject, a module with an example layout, tests, README."""
        names = plugin_names(name)
        path = write_plugin_package(Path(folder) / names.distribution, name)
        click.echo(f"Created {path}: plugin {names.plugin!r} (module {names.module}) with an example layout "
                   f"{names.plugin!r}.\nNext:\n  cd {path}\n  pip install -e \".[dev]\"\n  pytest\n"
                   f"Then use it in a project.toml: [[compose]] use = \"{names.plugin}\". "
                   "Publish with: python -m build && twine upload dist/*")


# --- templates -------------------------------------------------------------------------------------

PYPROJECT = '''\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "__DIST__"
version = "0.1.0"
description = "A CineML plugin: the __PLUGIN__ layout."
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["cineml"]

[project.optional-dependencies]
dev = ["pytest>=8"]

# CineML finds plugins through this entry-point group: <plugin name> = "<module>".
[project.entry-points.cineml]
__PLUGIN__ = "__MODULE__"

[tool.setuptools]
py-modules = ["__MODULE__"]

[tool.pytest.ini_options]
testpaths = ["tests"]
'''

MODULE = '''\
"""__DIST__: a CineML plugin providing the "__PLUGIN__" layout.

CineML imports every installed plugin when it starts, so keep imports at the top of this module
light: PIL and numpy are fine; import torch or moviepy inside the functions that need them.
Every hook a plugin can implement is listed in CineML's docs/hooks.md.
"""

from __future__ import annotations

from typing import Any

from PIL import Image

import cineml
from cineml import CinemlError, Option, hookimpl


@cineml.layout("__PLUGIN__", options=[
    Option("height", int, 0, "Height of every image in pixels; 0 uses the first image's height.", min=0),
    Option("border", int, 8, "Mat around and between the images, in pixels.", min=0),
    Option("color", (str, list), "white", "Colour of the mat (name, hex or [r, g, b]).",
           check=cineml.color_problem),
])
def mounted_row(images: list[Image.Image], height: int = 0, border: int = 8,
                color: Any = "white") -> Image.Image:
    """The images side by side at one height, mounted on a coloured mat."""
    if not images:
        raise CinemlError("The __PLUGIN__ layout got no images. Check the compose step's input: "
                          "it matched no files.")
    height = height or images[0].height
    tiles = [cineml.fit(image.convert("RGB"), (max(1, round(image.width * height / image.height)), height))
             for image in images]
    width = border + sum(tile.width + border for tile in tiles)
    canvas = Image.new("RGB", (width, height + 2 * border), cineml.parse_color(color))
    x = border
    for tile in tiles:
        canvas.paste(tile, (x, border))
        x += tile.width + border
    return canvas


@hookimpl
def register_layouts(register: Any) -> None:
    register(mounted_row)
'''

CONFTEST = '''\
"""Run every test against the real CineML engine with this plugin loaded from its installation."""

import pytest

pytest_plugins = ["cineml.testing"]  # make_project / run_project helpers and the cineml_project fixture


@pytest.fixture(autouse=True)
def only_this_plugin(monkeypatch):
    """Built-ins plus this package, never other installed plugins; a broken install fails loudly."""
    monkeypatch.setenv("CINEML_LOAD_PLUGINS", "__PLUGIN__")
    monkeypatch.setenv("CINEML_STRICT_PLUGINS", "1")
'''

TESTS = '''\
"""__DIST__, tested through the real CineML engine (install the package first: pip install -e .)."""

import io
from importlib.metadata import version

import numpy as np
import pytest
from PIL import Image

from cineml import CinemlError
from cineml.testing import registry_with, run_project

RED, BLUE, GREEN = (220, 30, 30), (30, 60, 220), (0, 255, 0)

MANIFEST = """
[[compose]]
use = "__PLUGIN__"
input = "stills/*.png"
border = 5
color = "#00ff00"
output = "row.png"
"""


def png(color, size) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def test_plugin_is_installed():
    registry = registry_with()
    assert registry.plugins["__PLUGIN__"].version == version("__DIST__")
    assert registry.impls["layouts"]["__PLUGIN__"].plugin == "__PLUGIN__"


def test_layout_runs_in_a_project(cineml_project):
    manifest = cineml_project(MANIFEST, files={"stills/1.png": png(RED, (40, 30)),
                                               "stills/2.png": png(BLUE, (20, 30))})
    assert run_project(manifest)["status"] == "finished"
    pixels = np.asarray(Image.open(manifest.parent / "art/row.png").convert("RGB"))
    assert pixels.shape == (5 + 30 + 5, 5 + 40 + 5 + 20 + 5, 3)
    assert np.all(pixels[5:35, 5:45] == RED) and np.all(pixels[5:35, 50:70] == BLUE)
    assert np.all(pixels[:5] == GREEN) and np.all(pixels[:, 45:50] == GREEN)  # the mat


def test_a_bad_option_names_the_key(cineml_project):
    manifest = cineml_project(MANIFEST.replace("border = 5", "border = -1"),
                              files={"stills/1.png": png(RED, (8, 8))})
    with pytest.raises(CinemlError, match=r"compose\\[0\\]\\.border: -1 is out of range"):
        run_project(manifest)
'''

README = '''\
# __DIST__

A plugin for CineML (train GANs on films, turn what they make into art). It provides the `__PLUGIN__`
layout: the images side by side at one height, mounted on a coloured mat.

## Use

```bash
pip install __DIST__    # once published; until then: pip install -e .
cineml plugins          # lists "__PLUGIN__" and what it provides
cineml layouts          # documents the layout's options
```

In a project's `project.toml`:

```toml
[[compose]]
use = "__PLUGIN__"
input = "fakes"         # or frames, generated, a glob such as "stills/*.png"
count = 6
border = 12
color = "#f4f1ea"
output = "row.png"
```

## Develop

```bash
pip install -e ".[dev]"
pytest
```

The tests run the real engine (`cineml.testing`): they write a project, run it, and check the pixels
of what the layout drew. `CINEML_LOAD_PLUGINS` (set in `tests/conftest.py`) keeps other installed
plugins out of the way. To add more implementations (preprocessors, composers, commands), see
CineML's `docs/plugins.md` and `docs/hooks.md`.

## Publish

Set the version in `pyproject.toml`, then:

```bash
python -m build && twine upload dist/*
```
'''

GITIGNORE = '''\
build/
dist/
*.egg-info/
__pycache__/
.pytest_cache/
'''
