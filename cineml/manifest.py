"""project.toml -> a validated :class:`Project`.

Every error names the file, the key path (``train.kimg``), the bad value and what is expected, with a
close-match suggestion for typos. Implementations declare their options (:class:`cineml.Option`),
so validation here is generic: the engine knows no plugin's settings.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import difflib
import math
import re
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .api import CinemlError, Option, Project, Step
from .stages import BY_TABLE, NAMED_INPUTS, STAGES, Stage, StageId, stage_of, upstream

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

if TYPE_CHECKING:
    from .plugins import Registry

PROJECT_OPTIONS = (
    Option("name", str, None, "Project name (default: the folder's name)."),
    Option("source", str, None, "The film, relative to the project folder (made by [source] when given)."),
    Option("seed", int, 0, "Seed for everything random in the pipeline.", min=0),
)


def _fail(file: Path, where: str, message: str) -> CinemlError:
    return CinemlError(f"{file}: {where}: {message}")


def _suggest(word: str, candidates: Sequence[str], noun: str = "Valid keys") -> str:
    """`` Did you mean 'x'? <noun>: a, b, c.`` (empty noun: the hint alone)."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    return hint + (f" {noun}: {', '.join(sorted(candidates))}." if candidates and noun else "")


def _convert(opt: Option, value: Any) -> Any:
    """Return ``value`` as the option's type (integers widen to floats), or raise TypeError."""
    types = opt.type if isinstance(opt.type, tuple) else (opt.type,)
    if isinstance(value, bool):
        if bool in types:
            return value
        raise TypeError
    if isinstance(value, int) and int in types:
        return value
    if isinstance(value, (int, float)) and float in types:
        return float(value)
    if any(t not in (int, float, bool) and isinstance(value, t) for t in types):
        return value
    if str in types and isinstance(value, (int, _dt.date, _dt.time)):
        return value.isoformat() if not isinstance(value, int) else str(value)  # -S title=1967: text as typed
    raise TypeError


def validate_options(options: Sequence[Option], values: dict[str, Any], where: str, root: Path,
                     file: Path | None = None, registry: Registry | None = None) -> dict[str, Any]:
    """Check ``values`` against declared ``options``; return them complete with defaults.

    ``where`` is the key path for messages (``"train"``, ``"compose[2]"``); relative paths resolve
    against ``root``; with a ``registry``, options declared ``names=...`` must name one of its entries.
    Raises :class:`CinemlError` naming the file, key, value and expectation: one line per bad key.
    """
    file = file or root / "project.toml"
    declared = {o.name: o for o in options}
    problems = [str(_fail(file, f"{where}.{key}", f"unknown option.{_suggest(key, list(declared))}"))
                for key in values if key not in declared]
    result: dict[str, Any] = {}
    for opt in options:
        with _gathered(problems):
            result[opt.name] = _check_option(opt, values, f"{where}.{opt.name}", root, file, registry)
    if problems:
        raise CinemlError("\n".join(problems))
    return result


def _check_option(opt: Option, values: dict[str, Any], key: str, root: Path, file: Path,
                  registry: Registry | None) -> Any:
    if opt.name not in values:
        if opt.required:
            raise _fail(file, key, f"missing; expected {opt.describe_type()} ({opt.help})")
        return opt.default
    value = raw = values[opt.name]
    try:
        value = _convert(opt, value)
    except TypeError:
        raise _fail(file, key, f"{value!r} is not valid; expected {opt.describe_type()}. {opt.help}") from None
    if opt.choices is not None and value not in opt.choices:
        hint = _suggest(value, [str(c) for c in opt.choices], "") if isinstance(value, str) else ""
        raise _fail(file, key, f"{raw!r} is not valid; expected {opt.describe_type()}.{hint}")
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(file, key, f"{raw!r} is not valid; expected {opt.describe_type()} (a finite number).")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if (opt.min is not None and value < opt.min) or (opt.max is not None and value > opt.max):
            raise _fail(file, key, f"{raw!r} is out of range; expected {opt.describe_type()}.")
    if opt.check is not None:
        problem = opt.check(value)
        if problem:
            raise _fail(file, key, f"{raw!r} is not valid: {problem}")
    if opt.names and registry is not None and value:
        if opt.names not in registry.impls:
            raise _fail(file, key, f"the plugin declares this option with names={opt.names!r}, which is not a "
                                   f"registry ({', '.join(sorted(registry.impls))}); report it to its author.")
        _lookup(registry, opt.names, value, file, key)
    if opt.path and isinstance(value, str):
        path = (root / value).resolve()
        if opt.must_exist and not path.exists():
            raise _fail(file, key, f"{value!r}: no such file ({path}). Check the path; relative "
                                   "paths are relative to the project folder.")
        value = path
    return value


def parse_override(text: str) -> tuple[list[str | int], Any]:
    """Parse ``-S key.path=value``; the value is read as TOML when it parses, else as a string."""
    if "=" not in text:
        raise CinemlError(f"-S {text!r}: expected key=value, e.g. -S train.kimg=2 or -S preprocess.0.size=256.")
    key, raw = text.split("=", 1)
    if not key.strip() or any(not part.strip() for part in key.split(".")):
        raise CinemlError(f"-S {text!r}: the key before '=' is empty or has an empty part; expected e.g. "
                          "-S train.kimg=2 or -S compose.0.fps=12.")
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    path: list[str | int] = [int(p) if p.isdigit() else p for p in key.strip().split(".")]
    return path, value


def apply_override(data: dict[str, Any], path: list[str | int], value: Any, text: str) -> None:
    node: Any = data
    for part in path[:-1]:
        try:
            node = node[part] if isinstance(part, int) else node.setdefault(part, {})
        except (IndexError, KeyError, TypeError, AttributeError):
            raise CinemlError(f"-S {text}: there is no {part!r} at that point of the manifest.") from None
    last = path[-1]
    if isinstance(node, list) and isinstance(last, int) and last < len(node):
        node[last] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise CinemlError(f"-S {text}: cannot set {last!r} there.")


def read_toml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CinemlError(f"{path}: no such project file. Create one with `cineml new NAME`, or pass the "
                          "path to an existing project.toml.")
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise CinemlError(f"{path}: not valid TOML ({exc}). Fix the syntax at that line.") from None


def _lookup(registry: Registry, kind: str, name: Any, file: Path, key: str, also: str | None = None) -> Any:
    """The entry of registry ``kind`` that ``key`` (``train.use``, ``compose[1].layout``) names; ``also``:
    a registry whose names the key may name too (a compose step's layouts), for the message."""
    table = registry.impls[kind]
    names = sorted({*table, *(registry.impls[also] if also else ())})
    noun = kind[:-1] + (f" or {also[:-1]}" if also else "")
    if name is None:
        raise _fail(file, key, f"missing; name the {noun} to use, one of: {', '.join(names) or 'none installed'}.")
    if not isinstance(name, str):
        raise _fail(file, key, f"{name!r} is not valid; expected the name of a {noun} as a string, one of: "
                               f"{', '.join(names) or 'none installed'}.")
    if name not in table:
        raise _fail(file, key, f"no {noun} named {name!r} is installed."
                    f"{_suggest(name, names, 'Installed')} Run `cineml plugins` to see what is installed.")
    return table[name]


def load_project(path: str | Path, registry: Registry, overrides: Sequence[str] = ()) -> Project:
    """Read, override and validate a project manifest against the installed implementations.

    Project-local plugin files listed in ``plugins = [...]`` are loaded into ``registry`` first.
    """
    file = Path(path).resolve()
    if file.is_dir():
        file = file / "project.toml"
    data = read_toml(file)
    root = file.parent
    arrays = [s.table for s in STAGES if s.steps and not s.single] + [s.chain[0] for s in STAGES if s.chain]
    for key in arrays:  # one [preprocess] table is a list of one: -S preprocess.0.size
        if isinstance(data.get(key), dict):
            data[key] = [data[key]]
    for text in overrides:
        keys, value = parse_override(text)
        apply_override(data, keys, value, text)
    try:
        return _build(file, root, data, registry)
    except CinemlError as exc:
        raise _blame_override(exc, file, overrides) from None


def _blame_override(exc: CinemlError, file: Path, overrides: Sequence[str]) -> CinemlError:
    """An error about a key that ``-S`` set names the ``-S`` argument, not the manifest file."""
    keys = {text: "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in parse_override(text)[0]).lstrip(".")
            for text in overrides}
    lines = str(exc).split("\n")
    for i, line in enumerate(lines):
        for text in reversed(overrides):  # the last -S of a key is the one that counts
            where = keys[text]
            if line.startswith((f"{file}: {where}:", f"{file}: {where}.")):
                lines[i] = f"-S {text} (overriding {file.name}): {line[len(str(file)) + 2:]}"
                break
    return CinemlError("\n".join(lines))


def _build(file: Path, root: Path, data: dict[str, Any], registry: Registry) -> Project:
    """Validate every table, gathering the errors of all of them: a manifest with a typo, a wrong type
    and a bad value gets three lines at once, not three runs. (An error that stops the reading, such as
    an unreadable [project], still comes with the lines gathered before it.)"""
    problems: list[str] = []
    try:
        project = _bind_tables(file, root, data, registry, problems)
    except CinemlError as exc:
        problems.append(str(exc))
    if problems:
        raise CinemlError("\n".join(problems))
    _check_dependencies(project, file)
    return project


@contextlib.contextmanager
def _gathered(problems: list[str]) -> Iterator[None]:
    """Add an error raised in the block to ``problems`` and carry on: every manifest error at once."""
    try:
        yield
    except CinemlError as exc:
        problems.append(str(exc))


def _bind_tables(file: Path, root: Path, data: dict[str, Any], registry: Registry, problems: list[str]) -> Project:
    allowed = {"project", "plugins", *BY_TABLE, *(s.chain[0] for s in STAGES if s.chain)}
    for key in data:
        if key not in allowed:
            problems.append(str(_fail(file, key, f"unknown table.{_suggest(key, sorted(allowed))}")))

    local = data.get("plugins", [])
    if not isinstance(local, list) or not all(isinstance(p, str) for p in local):
        raise _fail(file, "plugins", f"{local!r} is not valid; expected a list of Python file names, "
                                     "e.g. plugins = [\"my_layouts.py\"].")
    plugin_files = []
    for name in local:  # in the order given: the artist's order is the load order
        p = (root / name).resolve()
        if not p.is_file():
            raise _fail(file, "plugins", f"{name!r}: no such file ({p}). Plugin files are relative to the "
                                         "project folder.")
        plugin_files.append(p)
    registry.load_files(plugin_files)

    meta = data.get("project", {})
    if not isinstance(meta, dict):
        raise _fail(file, "project", "expected a table: [project]")
    meta = validate_options(PROJECT_OPTIONS, meta, "project", root, file)
    project = Project(name=meta["name"] or root.name, root=root, manifest_path=file, seed=meta["seed"],
                      plugins=plugin_files, raw=data, hook=registry.hook)
    makes_film = any(row.film and data.get(row.table) is not None for row in STAGES)
    if meta["source"] is not None:
        project.source = _inside(root, meta["source"], file, "project.source", must_exist=not makes_film)
        if makes_film and root.resolve() not in project.source.parents:  # a stage writes the film: an output
            raise _fail(file, "project.source", f"{meta['source']!r} leaves the project folder, but the [source] "
                                                "stage writes the film there; give a path inside the project, "
                                                "such as \"footage/film.mp4\".")
    elif makes_film:
        project.source = root / "footage" / f"{project.name}.mp4"

    seen: dict[str, str] = {}  # output files of array steps -> the step writing them
    for row in STAGES:
        tables = _tables(data, row.table, row.steps, file, row.single)
        chain_tables = _tables(data, row.chain[0], True, file) if row.chain else []
        if not tables and not chain_tables:
            continue
        if "source" in row.upstream and project.source is None:
            raise _fail(file, "project.source", "missing: name the film (source = \"footage/film.mp4\") or "
                                                "add a [source] table that makes one.")
        for where, values in tables or [(row.table, {})]:
            with _gathered(problems):
                project.steps.append(_bind_step(row, where, values, chain_tables, registry, root, file, seen))
    return project


def _tables(data: dict[str, Any], key: str, array: bool, file: Path,
            single: bool = False) -> list[tuple[str, dict[str, Any]]]:
    """The manifest's tables for ``key`` with their key paths: ``[("train", {...})]``, or for an array of
    tables ``[("compose[0]", {...}), ...]`` (a single ``[compose]`` table counts as an array of one, unless
    the stage takes a ``single`` table as itself: ``[generate]``)."""
    value = data.get(key)
    if value is None:
        return []
    if not array or single and isinstance(value, dict):
        if not isinstance(value, dict):
            raise _fail(file, key, f"expected a table: [{key}]")
        return [(key, value)]
    value = [value] if isinstance(value, dict) else value
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise _fail(file, key, f"expected one or more [[{key}]] tables.")
    return [(f"{key}[{i}]", t) for i, t in enumerate(value)]


def _bind_step(row: Stage, where: str, values: dict[str, Any], chain_tables: list[tuple[str, dict[str, Any]]],
               registry: Registry, root: Path, file: Path, seen: dict[str, str]) -> Step:
    """One table of the manifest bound to its implementation, every option validated (all problems at once)."""
    problems: list[str] = []
    values = dict(values)
    name = values.pop("use", row.default_use)
    shared = registry.impls[row.also_names] if row.also_names else {}
    layout = shared.get(name) if isinstance(name, str) and name not in registry.impls[row.kind] else None
    impl = _lookup(registry, row.kind, row.runner if layout else name, file, f"{where}.use", row.also_names)
    mine = {k: values.pop(k) for k in [o.name for o in row.options] if k in values}
    common: dict[str, Any] = {}
    options: dict[str, Any] = {}
    with _gathered(problems):
        common = validate_options(row.options, mine, where, root, file)
    with _gathered(problems):
        options = validate_options((layout or impl).options, values, where, root, file, registry)
    chain = []
    for at, table in chain_tables:
        with _gathered(problems):
            chain.append(_bind_plain(registry, row.chain[1] if row.chain else "", at, table, root, file))
    if problems:
        raise CinemlError("\n".join(problems))
    if layout is not None:
        options["layout"] = name
    if row.steps and row.is_file:
        _check_output_file(row, impl, name, common["output"], where, root, file, seen)
    elif row.steps:
        _check_step_name(row, common[row.step_key], where, file, seen)
    return Step(StageId.of(row.table, common[row.step_key] if row.steps else None), where, impl,
                {**common, **options}, chain=chain, layout=layout)


def _check_step_name(row: Stage, name: str | None, where: str, file: Path, seen: dict[str, str]) -> None:
    """A folder step of an array ([[generate]]) needs its own plain name: it is its folder under the stage's."""
    key = f"{where}.{row.step_key}"
    if name is None:
        if "[" in where:
            raise _fail(file, key, f"missing; every [[{row.table}]] step needs a name: its folder under "
                                   f"{row.output}/, and what compose steps call its images (input = \"projection\").")
        return
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", name) or name in NAMED_INPUTS:
        raise _fail(file, key, f"{name!r}: use a plain folder name of letters, digits, '-', '_' or '.' that is not "
                               f"one of {', '.join(NAMED_INPUTS)} (e.g. \"projection\").")
    if f"{row.table}:{name}" in seen:
        raise _fail(file, key, f"{name!r} is already the name of {seen[f'{row.table}:{name}']}; give each "
                               f"[[{row.table}]] step its own name.")
    seen[f"{row.table}:{name}"] = where


def _bind_plain(registry: Registry, kind: str, where: str, values: dict[str, Any], root: Path,
                file: Path) -> tuple[Any, dict[str, Any]]:
    values = dict(values)
    impl = _lookup(registry, kind, values.pop("use", None), file, f"{where}.use")
    return impl, validate_options(impl.options, values, where, root, file, registry)


def _check_output_file(row: Stage, impl: Any, name: str, output: str, where: str, root: Path, file: Path,
                       seen: dict[str, str]) -> None:
    """An array step's output file must stay inside its folder, have a suffix its implementation writes, and
    be written by no other step."""
    folder = (root / str(row.output)).resolve()
    target = (folder / output).resolve()
    if folder not in target.parents:
        raise _fail(file, f"{where}.output", f"{output!r} leaves the project's {row.output}/ folder; give a file "
                                             "name such as \"fakes.mp4\".")
    suffixes = getattr(impl, "suffixes", ())
    if suffixes and target.suffix.lower() not in suffixes:
        raise _fail(file, f"{where}.output", f"{output!r}: {name!r} writes {', '.join(suffixes)} files.")
    if str(target) in seen:  # "a.png" and "./a.png" are one file
        raise _fail(file, f"{where}.output", f"{output!r} is already written by {seen[str(target)]}; give each "
                                             f"{row.table} step its own output name.")
    seen[str(target)] = where


def _inside(root: Path, value: str, file: Path, key: str, must_exist: bool) -> Path:
    path = (root / value).resolve()
    if must_exist and path.is_dir():
        raise _fail(file, key, f"{value!r} is a folder ({path}), not a film file. Point it at the film inside "
                               "it, e.g. source = \"footage/film.mp4\".")
    if must_exist and not path.is_file():
        raise _fail(file, key, f"{value!r}: no such file ({path}). Put the film there or fix the path "
                               "(relative paths are relative to the project folder).")
    return path


def _check_dependencies(project: Project, file: Path) -> None:
    """Every stage a step reads from is in the manifest (the film aside: the artist may supply it)."""
    present = {s.stage for s in project.steps} | {StageId(s.stage).group for s in project.steps
                                                  if not stage_of(s.stage).single}
    for step in project.steps:
        takes_images = stage_of(step.stage).takes_images
        for needs in upstream(step, project.steps):
            if needs != "source" and needs not in present:
                if takes_images:
                    named = [s for s in project.steps if StageId(s.stage).group == needs]
                    key = BY_TABLE[needs].step_key if needs in BY_TABLE else ""
                    also = (f" (its [[{needs}]] steps are named: use input = {named[0].options[key]!r})"
                            if named and named[0].options.get(key) else "")
                    raise _fail(file, f"{step.where}.input", f"{step.options['input']!r} comes from the [{needs}] "
                                                              f"stage, which the manifest does not have{also}.")
                raise _fail(file, step.where, f"needs the [{needs}] stage, which the manifest does not have.")
