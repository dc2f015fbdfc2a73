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
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

from .api import REQUIRED, CinemlError, Implementation, Layout, Option

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

if TYPE_CHECKING:
    from .plugins import Registry

#: Stage tables in pipeline order, with the registry kind that implements each.
STAGE_KINDS = {"source": "sources", "extract": "extractors", "preprocess": "preprocessors",
               "train": "trainers", "generate": "generators", "compose": "composers"}

#: Where each stage writes, relative to the project folder (compose steps write under art/).
STAGE_OUTPUTS = {"extract": "frames", "train": "train", "generate": "generated", "compose": "art"}

#: Options every compose step has, whatever implementation it uses.
COMPOSE_OPTIONS = (
    Option("input", str, "fakes", "What to compose: fakes, reals, generated, walk, frames, or a glob "
           "relative to the project folder (\"stills/*.png\")."),
    Option("output", str, REQUIRED, "File name to write under art/ (e.g. \"fakes.mp4\", \"grid.png\")."),
    Option("count", int, None, "Take this many images, evenly spaced over the selection.", min=1),
    Option("every", int, 1, "Take every n-th image.", min=1),
    Option("start", int, None, "First image (0-based index into the input, after sorting).", min=0),
    Option("end", int, None, "Stop before this index (0-based; negative counts from the end)."),
)

PROJECT_OPTIONS = (
    Option("name", str, None, "Project name (default: the folder's name)."),
    Option("source", str, None, "The film, relative to the project folder (made by [source] when given)."),
    Option("seed", int, 0, "Seed for everything random in the pipeline.", min=0),
)


@dataclass
class Step:
    """One stage of a project, bound to its implementation and validated options."""

    stage: str  # "source", "extract", "train", "generate", "compose:<output>"
    where: str  # the key path in project.toml, for messages ("compose[1]")
    impl: Implementation
    options: dict[str, Any]
    chain: list[tuple[Implementation, dict[str, Any]]] = field(default_factory=list)  # extract only
    layout: Layout | None = None  # compose steps that name a layout


@dataclass
class Project:
    """A film project: its folder, its film, and the validated stage settings."""

    name: str
    root: Path
    manifest_path: Path
    source: Path | None = None
    seed: int = 0
    plugins: list[Path] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)

    def step(self, stage: str) -> Step | None:
        return next((s for s in self.steps if s.stage == stage), None)


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
        try:
            result[opt.name] = _check_option(opt, values, f"{where}.{opt.name}", root, file, registry)
        except CinemlError as exc:
            problems.append(str(exc))
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


def _lookup(registry: Registry, kind: str, name: Any, file: Path, key: str) -> Any:
    """The entry of registry ``kind`` that ``key`` (``train.use``, ``compose[1].layout``) names."""
    table = registry.impls[kind]
    if not isinstance(name, str):
        raise _fail(file, key, f"{name!r} is not valid; expected the name of one of: "
                               f"{', '.join(sorted(table)) or 'none installed'}.")
    if name not in table:
        singular = kind[:-1]
        raise _fail(file, key, f"no {singular} named {name!r} is installed."
                    f"{_suggest(name, list(table), 'Installed')} Run `cineml plugins` to see what is installed.")
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
    for key in ("preprocess", "compose"):  # one [preprocess] table is a list of one: -S preprocess.0.size
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


def _bind_tables(file: Path, root: Path, data: dict[str, Any], registry: Registry, problems: list[str]) -> Project:
    @contextlib.contextmanager
    def gather() -> Iterator[None]:
        try:
            yield
        except CinemlError as exc:
            problems.append(str(exc))

    allowed = {"project", "plugins", *STAGE_KINDS}
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
                      plugins=plugin_files, raw=data)

    def table(key: str) -> dict[str, Any] | None:
        value = data.get(key)
        if value is not None and not isinstance(value, dict):
            raise _fail(file, key, f"expected a table: [{key}]")
        return value

    def bind(kind: str, values: dict[str, Any], where: str, default_use: str | None = None):
        values = dict(values)
        name = values.pop("use", default_use)
        if name is None:
            raise _fail(file, f"{where}.use", f"missing; name the implementation to use, one of: "
                                              f"{', '.join(sorted(registry.impls[kind]))}.")
        impl = _lookup(registry, kind, name, file, f"{where}.use")
        return impl, validate_options(impl.options, values, where, root, file, registry)

    src = table("source")
    if meta["source"] is not None:
        project.source = _inside(root, meta["source"], file, "project.source", must_exist=src is None)
    if src is not None:
        if project.source is None:
            project.source = root / "footage" / f"{project.name}.mp4"
        elif root.resolve() not in project.source.parents:  # [source] writes the film: an output
            raise _fail(file, "project.source", f"{meta['source']!r} leaves the project folder, but the [source] "
                                                "stage writes the film there; give a path inside the project, "
                                                "such as \"footage/film.mp4\".")
        with gather():
            impl, opts = bind("sources", src, "source")
            project.steps.append(Step("source", "source", impl, opts))

    ext = table("extract")
    chain_tables = data.get("preprocess", [])
    if isinstance(chain_tables, dict):
        chain_tables = [chain_tables]
    if not isinstance(chain_tables, list) or not all(isinstance(t, dict) for t in chain_tables):
        raise _fail(file, "preprocess", "expected one or more [[preprocess]] tables.")
    if ext is not None or chain_tables:
        if project.source is None:
            raise _fail(file, "project.source", "missing: name the film (source = \"footage/film.mp4\") or "
                                                "add a [source] table that makes one.")
        chain = []
        for i, t in enumerate(chain_tables):
            with gather():
                chain.append(bind("preprocessors", t, f"preprocess[{i}]"))
        with gather():
            impl, opts = bind("extractors", ext or {}, "extract", default_use="fps")
            if len(chain) == len(chain_tables):
                project.steps.append(Step("extract", "extract", impl, opts, chain=chain))

    for key, kind in (("train", "trainers"), ("generate", "generators")):
        with gather():
            values = table(key)
            if values is not None:
                impl, opts = bind(kind, values, key)
                project.steps.append(Step(key, key, impl, opts))

    compose_tables = data.get("compose", [])
    if isinstance(compose_tables, dict):
        compose_tables = [compose_tables]
    if not isinstance(compose_tables, list) or not all(isinstance(t, dict) for t in compose_tables):
        raise _fail(file, "compose", "expected one or more [[compose]] tables.")
    seen: dict[str, str] = {}
    for i, values in enumerate(compose_tables):
        with gather():
            project.steps.append(_bind_compose(registry, values, f"compose[{i}]", root, file, seen))
    return project


def _bind_compose(registry: Registry, values: dict[str, Any], where: str, root: Path, file: Path,
                  seen: dict[str, str]) -> Step:
    values = dict(values)
    name = values.pop("use", None)
    composers, layouts = registry.impls["composers"], registry.impls["layouts"]
    if name is not None and not isinstance(name, str):
        raise _fail(file, f"{where}.use", f"{name!r} is not valid; expected the name of a composer or layout "
                                          "as a string, e.g. use = \"grid\".")
    if name is None or (name not in composers and name not in layouts):
        choices = sorted(set(composers) | set(layouts))
        raise _fail(file, f"{where}.use", ("missing" if name is None else f"no composer or layout named {name!r}")
                    + f"; expected one of: {', '.join(choices)}.{_suggest(str(name), choices, '') if name else ''}")
    common = {k: values.pop(k) for k in [o.name for o in COMPOSE_OPTIONS] if k in values}
    common = validate_options(COMPOSE_OPTIONS, common, where, root, file)
    layout = None
    if name in composers:
        impl = composers[name]
        options = validate_options(impl.options, values, where, root, file, registry)
    else:
        if "layout" not in composers:
            raise _fail(file, f"{where}.use", f"{name!r} is a layout, but no composer named 'layout' is "
                                              "installed to render layouts (it is built in; check CINEML_LOAD_PLUGINS).")
        impl, layout = composers["layout"], layouts[name]
        options = validate_options(layout.options, values, where, root, file, registry)
        options["layout"] = name
    output = common["output"]
    art = (root / STAGE_OUTPUTS["compose"]).resolve()
    target = (art / output).resolve()
    if art not in target.parents:
        raise _fail(file, f"{where}.output", f"{output!r} leaves the project's art/ folder; give a file name "
                                             "such as \"fakes.mp4\".")
    suffixes = getattr(impl, "suffixes", ())
    if suffixes and target.suffix.lower() not in suffixes:
        raise _fail(file, f"{where}.output", f"{output!r}: {name!r} writes {', '.join(suffixes)} files.")
    if str(target) in seen:  # "a.png" and "./a.png" are one file
        raise _fail(file, f"{where}.output", f"{output!r} is already written by {seen[str(target)]}; give each "
                                             "compose step its own output name.")
    seen[str(target)] = where
    return Step(f"compose:{output}", where, impl, {**common, **options}, layout=layout)


def _inside(root: Path, value: str, file: Path, key: str, must_exist: bool) -> Path:
    path = (root / value).resolve()
    if must_exist and path.is_dir():
        raise _fail(file, key, f"{value!r} is a folder ({path}), not a film file. Point it at the film inside "
                               "it, e.g. source = \"footage/film.mp4\".")
    if must_exist and not path.is_file():
        raise _fail(file, key, f"{value!r}: no such file ({path}). Put the film there or fix the path "
                               "(relative paths are relative to the project folder).")
    return path


_NEEDS = {"train": "extract", "generate": "train"}
_INPUT_STAGE = {"fakes": "train", "reals": "train", "generated": "generate", "walk": "generate",
                "frames": "extract"}


def _check_dependencies(project: Project, file: Path) -> None:
    present = {s.stage for s in project.steps}
    for stage, needs in _NEEDS.items():
        if stage in present and needs not in present:
            raise _fail(file, stage, f"needs the [{needs}] stage, which the manifest does not have.")
    for step in project.steps:
        if step.stage.startswith("compose:"):
            needs = _INPUT_STAGE.get(step.options["input"])
            if needs and needs not in present:
                raise _fail(file, f"{step.where}.input", f"{step.options['input']!r} comes from the [{needs}] "
                                                          "stage, which the manifest does not have.")
