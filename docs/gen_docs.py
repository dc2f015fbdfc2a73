"""Regenerate the generated parts of docs/ from the code: `python docs/gen_docs.py`.

tests/test_docs.py fails when the committed docs differ from what this writes.
"""

from __future__ import annotations

import inspect
import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent


def hook_signature(fn) -> str:
    params = ", ".join(f"{p.name}: {p.annotation}" for p in inspect.signature(fn).parameters.values())
    return f"def {fn.__name__}({params}) -> {inspect.signature(fn).return_annotation}"


def hook_doc(fn) -> tuple[str, str]:
    """A hookspec's docstring and its example plugin (docs/hook_examples/<hook>.py)."""
    example = DOCS / "hook_examples" / f"{fn.__name__}.py"
    return inspect.getdoc(fn), example.read_text().strip() if example.exists() else ""


def hooks_page() -> str:
    from cineml import hookspecs

    specs = [fn for fn in vars(hookspecs).values() if inspect.isfunction(fn) and hasattr(fn, "cineml_spec")]
    out = ["# Hooks", "",
           "Every hook CineML calls, with its exact signature. Implement any subset in a plugin module,",
           "decorated with `@cineml.hookimpl`; a function may accept a subset of the arguments (pluggy passes",
           "only what it asks for). Registry hooks run once at start-up; lifecycle hooks run during",
           "`cineml run` and their return values are ignored.", "",
           "_Generated from `cineml/hookspecs.py` and `docs/hook_examples/` by `python docs/gen_docs.py`; a test fails "
           "when they drift._", ""]
    for fn in specs:
        text, example = hook_doc(fn)
        out += [f"## `{fn.__name__}`", "", "```python", hook_signature(fn), "```", "", text, ""]
        if example:
            out += ["Example:", "", "```python", example, "```", ""]
    return "\n".join(out)


def _option_table(options) -> list[str]:
    rows = ["| option | type | default | what it does |", "| --- | --- | --- | --- |"]
    for o in options:
        default = "**required**" if o.required else f"`{o.default!r}`"
        note = " Changing it continues earlier work." if o.continues else ""
        rows.append(f"| `{o.name}` | {o.describe_type()} | {default} | {o.help}{note} |")
    return rows


def builtin(registry, plugin: str) -> bool:
    """Reference pages document what ships with CineML, whatever else is installed on this machine."""
    info = registry.plugins.get(plugin)
    return info is not None and info.origin == "builtin"


SHOTS = """## Shots, near copies and balance

A film is made of shots, and a few long, still takes can fill most of its frames. The `fps` extractor finds
the shots in the same decode pass that writes the frames (`shots = true`, the default): ffmpeg also writes a
32x32 grey thumbnail of every frame. A frame starts a new shot when the layout of the picture changed from
the frame before (compared with both normalised to the same brightness and contrast, so fades and flicker
are no cut) by three times as much as the median change of its two neighbours on each side (so camera
motion is no cut), when its grey levels changed by at least 8 on average, and when no picture of the
quarter second before comes back in the quarter second after (so a flash is no cut). A dip to black
between two different pictures is a cut where the picture starts to come back. Shots last at least half a
second. Tested on films with hard cuts, a flash, a pan, fades to and from black and a frozen still, at 6,
12, 23.976 and 24 fps: every cut within one frame, nothing else.

* `frames/shots.json` lists every shot: `shot` (from 0), `first` and `last` frame (1-based, as the files are
  numbered), `start` and `end` in seconds of the film, `timecode` (`hh:mm:ss:ff` at the film's own frame
  rate, non-drop-frame), `frames` and `kept`. `frames/index.json` gives every frame its `shot`.
  `cineml probe FILM --shots` prints the list without extracting anything.
* `dedupe = 3` drops a frame whose thumbnail differs from the last kept frame *of the same shot* by less
  than 3 grey levels on average (0-255): a frozen still becomes one frame, a still take with film grain a
  handful, a pan keeps a frame each time the view has moved enough. The first frame of a shot is always kept.
  Dropped frames stay listed in index.json with `"kept": false` (their numbers are not reused, so frame
  numbers still tell the time); the run says "9408 frames, 212 shots, kept 3120 (dropped 6288 near
  copies)", for example. `dedupe = 0` (the default) keeps every frame.
* `[train] balance = "shot"` draws every shot equally often: each frame with weight 1 / the length of its
  shot, so the network spends as long on a 2-second shot as on a 2-minute one. `"frame"` (the default) draws
  every frame equally often.
* `[[compose]] one_per_shot = true` takes the middle frame of each shot: with `use = "grid"`,
  `input = "frames"` and `labels = "shot"` it is a shot contact sheet, each tile labelled with its shot's
  number and first timecode. Labels also take `"timecode"` (the frame's own `hh:mm:ss:ff`).

A project extracted before shots existed keeps its frames (nothing re-runs on an upgrade); run
`cineml run project.toml --force extract` to find its shots.

""".splitlines()


def manifest_page() -> str:
    """Every stage and every option of every built-in implementation, from their declarations."""
    from cineml.manifest import PROJECT_OPTIONS
    from cineml.plugins import Registry
    from cineml.stages import STAGES

    registry = Registry()
    registry.load_entry_points()
    out = ["# Manifest reference", "",
           "A project is a folder with a `project.toml`. Tables name an implementation with `use = \"...\"`;",
           "the other keys are that implementation's options. Relative paths are relative to the project",
           "folder. Override any value for one run with `cineml run project.toml -S train.kimg=2`.", "",
           "_Generated from the built-in plugins' option declarations by `python docs/gen_docs.py`;",
           "a test fails when they drift._", "",
           "## Top level", "",
           "`plugins = [\"my_layouts.py\"]`: Python files beside the manifest with your own plugins,",
           "loaded in the order given.", "",
           "## `[project]`", "", *_option_table(PROJECT_OPTIONS), ""]
    sections = []  # (title, registry kind, the stage's own options, the entry that runs layouts)
    for row in STAGES:
        sections.append((row.title, row.kind, row.options, row.runner))
        if row.chain:
            sections.append((f"[[{row.chain[0]}]]", row.chain[1], (), None))
    for title, kind, common, runner in sections:
        if title == "[train]":
            out += SHOTS
        out += [f"## `{title}`", ""]
        if common:
            out += [f"Every {title.strip('[]')} step takes these, whatever it uses:", "", *_option_table(common), "",
                    "`use` names one of the implementations below or a layout (see Layouts).", ""]
        impls = {n: i for n, i in registry.impls[kind].items() if builtin(registry, i.plugin)}
        for name, impl in sorted(impls.items()):
            if name == runner:
                continue
            out += [f"### `use = \"{name}\"`", "", impl.help, "", *_option_table(impl.options), ""]
    out += ["## Layouts", "", "Use a layout by name in a `[[compose]]` step (`use = \"grid\"`).", ""]
    for name, lay in sorted(registry.impls["layouts"].items()):
        if not builtin(registry, lay.plugin):
            continue
        out += [f"### `use = \"{name}\"`", "", lay.help, "", *_option_table(lay.options), ""]
    return "\n".join(out)


def cli_page() -> str:
    """The CLI reference: every command's --help text."""
    import click

    from cineml.cli import cli, registry
    from cineml.plugins import each_plugin

    for name, call in each_plugin(registry().pm, "register_commands"):
        if builtin(registry(), name):
            call(cli=cli)
    out = ["# Command-line reference", "", "_Generated from `cineml --help` by `python docs/gen_docs.py`._", ""]
    ctx = click.Context(cli, info_name="cineml", terminal_width=100, max_content_width=100, **cli.context_settings)
    out += ["## `cineml`", "", "```", cli.get_help(ctx), "```", ""]
    def walk(group: click.Group, parent: click.Context, prefix: str) -> None:
        for name in sorted(group.commands):
            command = group.commands[name]
            sub = click.Context(command, info_name=name, parent=parent, terminal_width=100,  # parents add theirs
                                max_content_width=100)
            out.extend([f"## `{prefix} {name}`", "", "```", command.get_help(sub), "```", ""])
            if isinstance(command, click.Group):
                walk(command, sub, f"{prefix} {name}")

    walk(cli, ctx, "cineml")
    return "\n".join(out)


PAGES = {"hooks.md": hooks_page, "manifest.md": manifest_page, "cli.md": cli_page}

if __name__ == "__main__":
    for name, make in PAGES.items():
        (DOCS / name).write_text(make())
        print(f"wrote docs/{name}", file=sys.stderr)
