"""The ``cineml`` command-line tool.

Start-up loads every plugin module (cheap: plugins import torch and moviepy only inside the code
that needs them) so that plugins can add commands through ``register_commands``.
"""

from __future__ import annotations

import json
import shlex
import sys
import traceback
from pathlib import Path
from typing import Any

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import __version__
from .api import CinemlError, Option, Project
from .manifest import load_project
from .plugin_scaffold import add_plugin_commands
from .plugins import Registry, each_plugin, load_registry
from .progress import Progress
from .stages import COMPOSE_OPTIONS

console = Console(stderr=True, highlight=False)
_registry: Registry | None = None


def registry() -> Registry:
    """The process-wide registry of installed plugins, loaded on first use."""
    global _registry
    if _registry is None:
        _registry = load_registry()
        _registry.warn = _warn
    return _registry


GLOBAL_FLAGS = ("-v", "--verbose", "-q", "--quiet")


class CinemlGroup(click.Group):
    """Turns user errors into one clear paragraph and exit code 1 (tracebacks with --verbose).

    The global flags work where people type them: ``cineml run p.toml -q`` as well as ``cineml -q run p.toml``.
    """

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        end = args.index("--") if "--" in args else len(args)
        name = next((a for a in args[:end] if not a.startswith("-")), None)
        command = self.commands.get(name) if name else None
        own = {o for p in (command.params if command else []) for o in (*p.opts, *p.secondary_opts)}
        if own & set(GLOBAL_FLAGS):  # a plugin command with its own -v or -q keeps them
            return super().parse_args(ctx, args)
        flags = [a for a in args[:end] if a in GLOBAL_FLAGS]
        rest = [a for a in args[:end] if a not in GLOBAL_FLAGS]
        return super().parse_args(ctx, flags + rest + args[end:])

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (CinemlError, OSError) as exc:
            if ctx.obj and ctx.obj.get("verbose"):
                traceback.print_exc()
            console.print(f"[bold red]Error:[/bold red] {_describe(exc)}", markup=True, soft_wrap=True)
            ctx.exit(1)
        except KeyboardInterrupt:
            console.print("\nInterrupted. Run the same command again to resume where it stopped.")
            ctx.exit(130)


def _warn(message: str) -> None:
    """Plugin and pipeline warnings: plain text (a "[train]" in a message is not markup)."""
    console.print("[yellow]warning:[/yellow] " + escape(message), markup=True, soft_wrap=True)


def _describe(exc: BaseException) -> str:
    """One paragraph for the artist. File-system errors (permission denied, disk full, a read-only
    folder) name the path and the cause; the traceback is only for --verbose."""
    if not isinstance(exc, OSError):
        return escape(str(exc))
    where = " -> ".join(str(f) for f in (exc.filename, exc.filename2) if f)
    cause = exc.strerror or str(exc) or type(exc).__name__
    if not where:  # a network or pipe error, not a file: no folder advice
        return escape(f"{cause}.") + " Run again with --verbose for details."
    return escape(f"{where}: {cause}.") + (
        " Check that the folder exists, is writable and has free space; run again with --verbose for details.")


@click.group(cls=CinemlGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cineml")
@click.option("--verbose", "-v", is_flag=True, help="Show tracebacks for errors.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or stage messages.")
@click.pass_context
def cli(ctx: click.Context, verbose: bool, quiet: bool) -> None:
    """CineML: train GANs on films and turn what they make into art.

    Run a project with `cineml run projects/NAME/project.toml`; start one with `cineml new NAME`.
    """
    # Plugin commands load a project with every installed plugin through ctx.obj["load_project"](path).
    ctx.obj = {"verbose": verbose, "quiet": quiet, "load_project": _load}


def _load(manifest: str | Path, overrides: tuple[str, ...] = ()) -> Project:
    return load_project(manifest, registry(), overrides)


@cli.command()
@click.argument("manifest", type=click.Path(dir_okay=True, path_type=str))
@click.option("-S", "--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a manifest value, e.g. -S train.kimg=2 -S preprocess.0.size=256.")
@click.option("--force", "force", multiple=True, metavar="STAGE",
              help="Re-run STAGE even if up to date (repeatable; 'all' for every stage).")
@click.option("--only", multiple=True, metavar="STAGE", help="Run only these stages (repeatable).")
@click.option("--from", "start", metavar="STAGE", help="Start at this stage.")
@click.option("--to", "stop", metavar="STAGE", help="Stop after this stage.")
@click.option("--dry-run", "-n", is_flag=True, help="Print the plan and why each stage would run; run nothing.")
@click.option("--into", type=click.Path(file_okay=False, path_type=Path), metavar="DIR",
              help="With --only STAGE: write that stage's output into DIR instead of its own folder, and record "
                   "nothing (a one-off variant that neither replaces nor is replaced by the project's output).")
@click.pass_context
def run(ctx: click.Context, manifest: str, overrides: tuple[str, ...], force: tuple[str, ...],
        only: tuple[str, ...], start: str | None, stop: str | None, dry_run: bool, into: Path | None = None) -> None:
    """Run a project's pipeline, skipping stages that are up to date."""
    from .pipeline import Pipeline, worker_rank

    quiet = ctx.obj["quiet"] or worker_rank() > 0  # under torchrun only rank 0 talks
    project = _load(manifest, overrides)
    say = (lambda msg: None) if quiet else (lambda msg: console.print(msg, markup=False, soft_wrap=True))
    pipeline = Pipeline(project, registry(), Progress(console, enabled=not quiet), log=say, warn=_warn)
    forced: bool | tuple[str, ...] = True if "all" in force else force
    planned = pipeline.plan(force=forced, only=only, start=start, stop=stop)
    if dry_run or not quiet:
        out = Console(highlight=False) if dry_run else console
        out.print(f"[bold]{project.name}[/bold]: plan", markup=True)
        for p in planned:
            action = "[green]run [/green]" if p.run else "skip"
            out.print(f"  {action}  " + escape(f"{p.step.stage} ({p.step.impl.name}): {p.reason}"), markup=True,
                      soft_wrap=True)
    if dry_run:
        return
    record = pipeline.run(planned, into=into)
    ran = [s for s in record["stages"] if s["ran"]]
    if not quiet:
        where = into.resolve() if into is not None else project.root
        console.print(f"[bold green]Done[/bold green]: {len(ran)} stage(s) ran, {len(record['stages']) - len(ran)} "
                      f"up to date. Outputs in {escape(str(where))}", markup=True, soft_wrap=True)


@cli.command()
@click.argument("name")
@click.option("--dir", "folder", default="projects", show_default=True, type=click.Path(file_okay=False),
              help="Folder to create the project in.")
@click.option("--film", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Your film: put in the project's footage/ folder, with settings that suit it and this machine.")
def new(name: str, folder: str, film: Path | None) -> None:
    """Create projects/NAME/project.toml with every stage, commented, ready to run."""
    from .scaffold import DEFAULTS, write_project

    suggested: dict[str, Any] = {}
    reasons: dict[str, list[str]] = {}
    if film is not None:
        for plugin, call in each_plugin(registry().pm, "suggest_settings"):
            suggestions = {k: v for result in call(film=film) for k, v in result.items()}  # pluggy drops Nones
            for key, (value, why) in suggestions.items():
                if key in DEFAULTS:
                    suggested[key] = value
                    reasons.setdefault(why, []).append(f"{key} = {value!r}")
                else:
                    registry().warn(f"plugin {plugin!r} suggests {key}, which the scaffold does not write; ignored.")
    for why, keys in reasons.items():
        click.echo(f"{', '.join(keys)}: {why}")
    path = write_project(Path(folder) / name, name, film, suggested)
    click.echo(f"Created {path}. Run it with: cineml run {shlex.quote(str(path))}")
    if film is None:
        click.echo(f"Until you give it your film it renders a 12 s demo film of its own: copy your film to "
                   f"{path.parent / 'footage'}/, set source in [project] to it and delete the [source] table "
                   "(docs/tutorial.md, \"Your own film\"), or start again with --film.")


def _option_rows(options: tuple[Option, ...] | list[Option]) -> list[dict[str, Any]]:
    return [{"name": o.name, "type": o.describe_type(), "default": None if o.required else o.default,
             "required": o.required, "help": o.help} for o in options]


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def plugins(as_json: bool) -> None:
    """List installed plugins, their versions and what each provides."""
    reg = registry()
    rows: list[dict[str, Any]] = [
        {"name": p.name, "version": p.version, "distribution": p.distribution, "origin": p.origin,
         "provides": p.provides, "hooks": p.hooks, "error": p.error}
        for p in sorted(reg.plugins.values(), key=lambda p: (p.origin != "builtin", p.name))]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(show_edge=False)
    for col in ("plugin", "version", "from", "provides"):
        table.add_column(col)
    for r in rows:
        provides = "; ".join(f"{k}: {', '.join(v)}" for k, v in r["provides"].items())
        table.add_row(r["name"], r["version"], r["distribution"] if r["origin"] != "builtin" else "built-in",
                      f"[red]failed: {r['error']}[/red]" if r["error"] else provides)
    Console(highlight=False).print(table)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.option("--project", "manifest", type=click.Path(), help="Also load this project's plugin files.")
def layouts(as_json: bool, manifest: str | None) -> None:
    """List registered layouts and their options (use them in [[compose]] steps)."""
    if manifest:
        _load(manifest, ())
    reg = registry()
    rows = [{"name": n, "plugin": lay.plugin, "help": lay.help, "options": _option_rows(lay.options)}
            for n, lay in sorted(reg.impls["layouts"].items())]
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    out = Console(highlight=False)
    out.print("Every [[compose]] step also takes: " + ", ".join(o.name for o in COMPOSE_OPTIONS) + ".\n",
              markup=False)
    for r in rows:
        out.print(f"[bold]{r['name']}[/bold] ({r['plugin']}): ", end="")
        out.print(r["help"], markup=False)
        for o in r["options"]:
            default = "required" if o["required"] else f"default {o['default']!r}"
            out.print(f"    {o['name']} — {o['type']}, {default}. {o['help']}", markup=False)


add_plugin_commands(cli)


def main() -> None:
    """Console-script entry point: load plugins, let them add commands, run the CLI."""
    try:
        reg = registry()
    except CinemlError as exc:  # CINEML_STRICT_PLUGINS and a broken plugin
        console.print(f"[bold red]Error:[/bold red] {_describe(exc)}", markup=True, soft_wrap=True)
        sys.exit(1)
    for name, call in each_plugin(reg.pm, "register_commands"):
        try:
            call(cli=cli)
        except Exception as exc:  # a broken plugin command must not take the CLI down
            reg.warn(f"plugin {name!r} failed to add its commands: {type(exc).__name__}: {exc}")
    cli(prog_name="cineml")


if __name__ == "__main__":  # python -m cineml.cli
    main()

