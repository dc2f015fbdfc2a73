"""Shared fixtures: an isolated plugin environment and a toy project that runs in milliseconds."""

import shutil
from pathlib import Path

import pytest

import cineml.cli

pytest_plugins = ["cineml.testing"]  # the fixtures plugin authors get

FIXTURES = Path(__file__).parent / "fixtures"

TOY_MANIFEST = """\
plugins = ["toy_plugins.py"]

[project]
name = "toy"
source = "footage/film.txt"

[source]
use = "textfilm"
frames = 5

[extract]
use = "lines"

[[preprocess]]
use = "upper"

[train]
use = "counter"

[[compose]]
use = "concat"
input = "fakes"
output = "fakes.txt"
"""


@pytest.fixture(autouse=True)
def isolated_plugins(monkeypatch):
    """Only built-in plugins (never the developer's installed ones), and a fresh registry per test."""
    monkeypatch.setenv("CINEML_LOAD_PLUGINS", "")
    monkeypatch.delenv("CINEML_STRICT_PLUGINS", raising=False)
    cineml.cli._registry = None
    yield
    cineml.cli._registry = None


@pytest.fixture
def toy_project(tmp_path) -> Path:
    """A project folder using the toy plugins; returns the manifest path."""
    root = tmp_path / "toy"
    root.mkdir()
    shutil.copy(FIXTURES / "toy_plugins.py", root / "toy_plugins.py")
    manifest = root / "project.toml"
    manifest.write_text(TOY_MANIFEST)
    return manifest


@pytest.fixture
def one_torch_thread():
    """One seeded torch thread: on a shared 2-core machine, OpenMP threads spinning against each other
    cost 5-10x. (torch is imported here, not at the top, so non-torch tests never load it.)"""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield
    torch.set_num_threads(threads)
