"""Run every test against the real CineML engine with this plugin loaded from its installation."""

import pytest

pytest_plugins = ["cineml.testing"]  # make_project / run_project helpers and the cineml_project fixture


@pytest.fixture(autouse=True)
def only_this_plugin(monkeypatch):
    """Built-ins plus this package, never other installed plugins; a broken install fails loudly."""
    monkeypatch.setenv("CINEML_LOAD_PLUGINS", "contact-sheet")
    monkeypatch.setenv("CINEML_STRICT_PLUGINS", "1")
