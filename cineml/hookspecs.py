"""Every hook CineML calls, with its exact signature.

Two kinds of hooks:

* **Registry hooks** (``register_*``): called once when the plugin manager starts. A plugin calls
  ``register(obj)`` for each implementation it provides; the manifest then picks implementations by
  name (``use = "letterbox"``). Names must be unique across all plugins.
* **Command hooks**: ``register_commands`` adds CLI commands; ``suggest_settings`` fills in
  ``cineml new --film``.
* **Lifecycle hooks**: called while ``cineml run`` works, for observers (logging, notifications,
  posting every fakes grid somewhere). Their return values are ignored, and one that raises is
  reported without stopping the run or the other plugins.
* **Report hooks**: ``report_sections`` adds sections to the gallery page the built-in ``gallery``
  plugin writes; plugins call hooks of other plugins through ``project.hook``.

Plugins implement any subset of these, decorated with :data:`cineml.hookimpl`, and may accept a
subset of the arguments (pluggy passes only what a function asks for).

Each hook has an example plugin in docs/hook_examples/<hook>.py, rendered into docs/hooks.md by
docs/gen_docs.py and loaded and run as a real plugin by tests/test_docs.py.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    import click

    from .api import Composer, Extractor, Generator, Layout, Preprocessor, Project, Source, Trainer

hookspec = pluggy.HookspecMarker("cineml")
hookimpl = pluggy.HookimplMarker("cineml")


# --- Registry hooks -------------------------------------------------------------------------------


@hookspec
def register_sources(register: Callable[[Source], None]) -> None:
    """Register film sources: objects subclassing :class:`cineml.Source`.

    Called once at start-up. A source makes the project's film when the artist does not supply
    one (``[source] use = "synthetic"`` renders the demo film).
    """


@hookspec
def register_extractors(register: Callable[[Extractor], None]) -> None:
    """Register frame extractors: objects subclassing :class:`cineml.Extractor`.

    Called once at start-up. An extractor turns the project's film into numbered frames, streaming
    them through the preprocess chain (``[extract] use = "fps"``).
    """


@hookspec
def register_preprocessors(register: Callable[[Preprocessor], None]) -> None:
    """Register per-frame transforms: objects subclassing :class:`cineml.Preprocessor`.

    Called once at start-up. Chained in manifest order by ``[[preprocess]]`` tables
    (``use = "letterbox"``).
    """


@hookspec
def register_trainers(register: Callable[[Trainer], None]) -> None:
    """Register trainers: objects subclassing :class:`cineml.Trainer`.

    Called once at start-up. A trainer turns the frames folder into snapshots and fakes grids
    (``[train] use = "stylegan2"``).
    """


@hookspec
def register_generators(register: Callable[[Generator], None]) -> None:
    """Register generators: objects subclassing :class:`cineml.Generator`.

    Called once at start-up. A generator samples a trained network into images
    (``[generate] use = "stylegan2"``).
    """


@hookspec
def register_composers(register: Callable[[Composer], None]) -> None:
    """Register composers: objects subclassing :class:`cineml.Composer`.

    Called once at start-up. A composer turns a sequence of images into one artwork file
    (``[[compose]] use = "animation"``). A compose step may also name a layout directly.
    """


@hookspec
def register_layouts(register: Callable[[Layout], None]) -> None:
    """Register layouts: :class:`cineml.Layout` objects, usually made with :func:`cineml.layout`.

    Called once at start-up. A layout is a function from a list of images (+ options) to one
    image; a ``[[compose]]`` step uses it by name (``use = "windows"``).
    """


@hookspec
def register_commands(cli: click.Group) -> None:
    """Add commands to the ``cineml`` command-line tool.

    Called once when the CLI starts, with the top-level :class:`click.Group`; attach commands with
    ``@cli.command()``. Keep heavy imports (torch, moviepy) inside the command bodies. A command loads a
    project with every installed plugin through ``click.get_current_context().obj["load_project"](path)``.
    """


@hookspec
def suggest_settings(film: Path) -> dict[str, tuple[Any, str]] | None:
    """Suggest settings for a new project on ``film`` (``cineml new NAME --film FILM``).

    Return ``{dotted manifest key: (value, reason)}``, e.g. ``{"preprocess.0.grayscale": (True, "the
    film is black and white")}``; the scaffold writes the values it knows (``cineml.scaffold.DEFAULTS``
    lists them) and prints the reasons. Return None to suggest nothing.
    """


# --- Lifecycle hooks ------------------------------------------------------------------------------


@hookspec
def run_started(project: Project, plan: list[dict[str, Any]]) -> None:
    """Called when ``cineml run`` starts, after planning and before the first stage.

    ``plan`` lists each stage as ``{"stage", "run": bool, "reason"}``.
    """


@hookspec
def run_finished(project: Project, record: dict[str, Any]) -> None:
    """Called when ``cineml run`` ends successfully, with the run record written to ``run.json``."""


@hookspec
def run_failed(project: Project, record: dict[str, Any], error: BaseException) -> None:
    """Called when ``cineml run`` stops on an error or Ctrl-C, after ``run.json`` records it
    (``record["status"]`` is ``"failed"`` or ``"interrupted"``); the error propagates afterwards.
    """


@hookspec
def stage_started(project: Project, stage: str, options: dict[str, Any]) -> None:
    """Called before a stage runs (``stage`` is ``"extract"``, ``"train"``, ``"compose:fakes.mp4"``…)."""


@hookspec
def stage_finished(project: Project, stage: str, output: Path, seconds: float) -> None:
    """Called after a stage's output has been moved into place at ``output``."""


@hookspec
def stage_failed(project: Project, stage: str, error: BaseException) -> None:
    """Called when a stage raises (including Ctrl-C) before the error propagates."""


@hookspec
def snapshot_written(project: Project, kimg: float, checkpoint: Path, fakes: Path | None) -> None:
    """Called by trainers each time a training snapshot is complete on disk.

    ``checkpoint`` is the checkpoint just written, ``fakes`` the fakes grid image (or ``None``).
    """


# --- Report hooks ---------------------------------------------------------------------------------


@hookspec
def report_sections(project: Project) -> list[tuple[str, str]] | None:
    """Add sections to the project's gallery page (``report/index.html``).

    Return ``[(title, html), ...]``: each becomes a section after the built-in ones, its title escaped and its
    HTML inserted as it is (make links relative to ``project.root / "report"``, and keep the page
    self-contained: no scripts or styles from the internet). Called each time the page is rebuilt (at every
    training snapshot, every stage's end and ``cineml report``), so keep it quick. Return None to add nothing.
    """
