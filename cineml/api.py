"""The public API plugin authors build on: option declarations, implementation base classes, the
project and stage context handed to them, layouts, errors, and the atomic-write helper.

Everything here is re-exported from :mod:`cineml`; import it from there. This module is the leaf of
the package: it imports nothing else of CineML, so the hook specs, the engine and every plugin can
depend on it without cycles.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from PIL import Image

    from .progress import Progress


class CinemlError(Exception):
    """A user-facing error: the CLI prints its message as one paragraph and exits 1.

    Say what is wrong, where (file, key, frame) and what to do about it.
    """


REQUIRED: Any = object()  # sentinel default: the option must be given in the manifest


@dataclass(frozen=True)
class Option:
    """One declared option of an implementation, so the engine can validate and document it.

    ``type`` is a Python type (``int``, ``float``, ``str``, ``bool``, ``list``, ``dict``) or a tuple
    of them; ``float`` also accepts integers. ``path=True`` resolves a string against the project
    folder (``must_exist`` then checks it is there). ``check`` may return an error message for a
    value that has the right type but is still wrong (e.g. "not a power of two").

    ``continues=True`` marks an option whose change carries on the stage's earlier work instead of
    starting over (a trainer's ``kimg``: raise it and training goes on from its last checkpoint). The
    stage still re-runs, in the same staging folder, which the engine first fills with the previous
    output (hard links, so gigabytes of checkpoints cost nothing) when that is all that changed.

    ``names="layouts"`` (or any registry: "composers", "trainers"...) says the value is the name of a
    registered entry: a misspelt name is refused when the manifest is read, with a did-you-mean, not
    when the stage finally runs.
    """

    name: str
    type: type | tuple[type, ...]
    default: Any = REQUIRED
    help: str = ""
    choices: tuple[Any, ...] | None = None
    min: float | None = None
    max: float | None = None
    path: bool = False
    must_exist: bool = False
    check: Callable[[Any], str | None] | None = None
    continues: bool = False
    names: str | None = None  # a registry this option names an entry of ("layouts"): checked when planning

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def describe_type(self) -> str:
        """Human wording of the expected value, used in errors and docs."""
        types = self.type if isinstance(self.type, tuple) else (self.type,)
        words = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
                 list: "a list", dict: "a table"}
        text = " or ".join(words.get(t, t.__name__) for t in types)
        if self.choices:
            text = "one of " + ", ".join(repr(c) for c in self.choices)
        if self.min is not None and self.max is not None:
            text += f" from {self.min:g} to {self.max:g}"
        elif self.min is not None:
            text += f" >= {self.min:g}"
        elif self.max is not None:
            text += f" <= {self.max:g}"
        return text


class Implementation:
    """Base of everything a plugin registers for a stage.

    Subclasses set ``name`` (what manifests write in ``use = "..."``), ``options`` and a docstring
    (its first line is the help text). The plugin manager fills ``plugin`` and ``plugin_version``.
    """

    name: ClassVar[str] = ""
    options: ClassVar[tuple[Option, ...]] = ()
    plugin: str = ""
    plugin_version: str = ""

    @property
    def help(self) -> str:
        doc = (type(self).__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    def resume_point(self, partial: Path) -> str | None:
        """Where an interrupted run whose partial work is in the folder ``partial`` will carry on, in a few
        words for the plan ("0.2 kimg", "frame 1201"); None when this implementation cannot tell."""
        return None

    def reads(self, options: dict[str, Any]) -> tuple[str, ...] | None:
        """The upstream stages this step reads with these options, or None for its stage's usual ones
        (a generator sampling a network file named in its options reads no training stage)."""
        return None


@dataclass
class Step:
    """One stage of a project, bound to its implementation and validated options."""

    stage: str  # "source", "extract", "train", "generate", "compose:<output>" (a ``cineml.stages.StageId``)
    where: str  # the key path in project.toml, for messages ("compose[1]")
    impl: Any  # the registered Implementation
    options: dict[str, Any]
    chain: list[tuple[Any, dict[str, Any]]] = field(default_factory=list)  # extract: (Preprocessor, options)
    layout: Layout | None = None  # compose steps that name a layout


@dataclass
class Project:
    """A film project: its folder, its film, and the validated stage settings (what hooks receive)."""

    name: str
    root: Path
    manifest_path: Path
    source: Path | None = None
    seed: int = 0
    plugins: list[Path] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    raw: dict[str, Any] = field(default_factory=dict)
    #: The plugin manager's hook relay (pluggy's ``pm.hook``), set when the project is loaded: a plugin calls
    #: other plugins' hooks through it, as pytest plugins do through ``config.hook``
    #: (``project.hook.report_sections(project=project)``). None for a project made by hand.
    hook: Any = field(default=None, repr=False, compare=False)

    def step(self, stage: str) -> Step | None:
        return next((s for s in self.steps if s.stage == stage), None)


@dataclass
class StageContext:
    """What a running stage gets from the engine.

    ``output`` is a staging path (a folder, or a file for compose steps) that the engine moves into
    place only after the stage returns; for long stages it survives interruption, so a re-run with
    the same settings finds its own partial work there and can resume. ``inputs`` holds upstream
    outputs: ``"source"`` (the film), ``"frames"``, ``"train"``, ``"generated"``.
    """

    project: Project
    stage: str
    options: dict[str, Any]
    output: Path
    inputs: dict[str, Path]
    progress: Progress
    notify: Callable[..., None] | None = None  # the engine's lifecycle-hook caller: notify(hook_name, **kwargs)
    previous: Path | None = None  # this stage's last completed output, if any
    layouts: dict[str, Layout] = field(default_factory=dict)  # every registered layout, by name
    where: str = ""  # the stage's key path in project.toml ("compose[2]"), for error messages
    log: Callable[[str], None] = print
    warn: Callable[[str], None] = print

    def error(self, key: str | None, message: str) -> CinemlError:
        """An error about this step's option ``key`` (or the step itself, for None) worded as the engine words
        manifest errors: ``project.toml: compose[1].fps: <message>``. Raise what it returns."""
        where = self.where or self.stage
        return CinemlError(f"{self.project.manifest_path}: {where}{'.' + key if key else ''}: {message}")

    def snapshot_written(self, kimg: float, checkpoint: Path, fakes: Path | None) -> None:
        """Trainers call this after each snapshot; it fires the ``snapshot_written`` hook."""
        if self.notify is not None:
            self.notify("snapshot_written", project=self.project, kimg=kimg, checkpoint=checkpoint, fakes=fakes)


class Source(Implementation):
    """Makes the project's film when it is not footage the artist supplies (e.g. a synthetic demo)."""

    def make(self, ctx: StageContext) -> None:
        """Write the film to ``ctx.output`` (a file path ending in ``.mp4``)."""
        raise NotImplementedError


class Extractor(Implementation):
    """Turns the project's film into numbered frames, streamed through the preprocess chain."""

    def extract(self, ctx: StageContext, chain: Sequence[tuple[Preprocessor, dict[str, Any]]]) -> None:
        """Write ``000001.<ext>``… and ``index.json`` into the folder ``ctx.output``.

        ``chain`` is the manifest's preprocess steps in order, each with its validated options.
        Resume from frames already in ``ctx.output`` when it is not empty.
        """
        raise NotImplementedError


class Preprocessor(Implementation):
    """A per-frame transform (letterbox, grayscale, ...), chained in manifest order."""

    def transform(self, image: Image.Image, options: dict[str, Any]) -> Image.Image:
        """Return the transformed frame. Input frames always have square pixels."""
        raise NotImplementedError

    def ffmpeg_filter(self, options: dict[str, Any], width: int, height: int,
                      sar: tuple[int, int]) -> str | None:
        """An ffmpeg filter-graph fragment doing the same as :meth:`transform`, or ``None``.

        Given the incoming stream's stored size and sample aspect ratio. When every step of a
        chain has one, extraction runs the whole chain inside ffmpeg. The fragment must end with
        square pixels (``setsar=1``).
        """
        return None


class Trainer(Implementation):
    """Trains a network on the frames folder."""

    def train(self, ctx: StageContext) -> None:
        """Train on ``ctx.inputs["frames"]``, writing snapshots into the folder ``ctx.output``.

        Write ``reals.png`` once and ``fakes<kimg:06d>.png`` at every snapshot, with a fraction
        for snapshots between whole kimg (``fakes000001_200.png`` = 1.2 kimg; compose steps find
        and order them by those names), call ``ctx.snapshot_written(...)`` after each snapshot, and
        resume from the latest checkpoint in ``ctx.output`` when there is one.
        """
        raise NotImplementedError


class Generator(Implementation):
    """Samples a trained network into images."""

    def generate(self, ctx: StageContext) -> None:
        """Read ``ctx.inputs["train"]`` and write images into the folder ``ctx.output``.

        Stills go at the top level (``seed0042.png``), walk frames under ``walk/``.
        """
        raise NotImplementedError


class Composer(Implementation):
    """Turns a sequence of images into one artwork file (an animation, a layout...)."""

    #: Output suffixes this composer can write, e.g. (".mp4", ".gif"). Empty: any.
    suffixes: ClassVar[tuple[str, ...]] = ()

    def compose(self, ctx: StageContext, images: list[Path]) -> None:
        """Write one file at ``ctx.output`` (the step's output name, in a staging folder)."""
        raise NotImplementedError


@dataclass
class Layout:
    """A named function from a list of images (+ keyword options) to one image.

    Make one with the :func:`layout` decorator and register it in ``register_layouts``.
    """

    name: str
    func: Callable[..., Image.Image]
    options: tuple[Option, ...] = ()
    help: str = ""
    plugin: str = ""
    plugin_version: str = ""
    #: ``capacity(options) -> int | None``: how many images one picture shows with these (validated)
    #: options, or None when that depends on the images. Animations need it to give each tile its own
    #: stretch of the input; without it the artist must say ``tiles = N``.
    capacity: Callable[[dict[str, Any]], int | None] | None = None

    def __call__(self, images: Sequence[Image.Image], **options: Any) -> Image.Image:
        return self.func(list(images), **options)

    def tiles(self, options: dict[str, Any]) -> int | None:
        """Images one picture shows with ``options`` (None: unknown, see ``capacity``)."""
        return self.capacity(options) if self.capacity else None


def layout(name: str, options: Sequence[Option] = (),
           capacity: Callable[[dict[str, Any]], int | None] | None = None) -> Callable[[Callable[..., Any]], Layout]:
    """Decorator: turn ``func(images, **options) -> PIL.Image`` into a registrable :class:`Layout`."""

    def wrap(func: Callable[..., Any]) -> Layout:
        doc = (func.__doc__ or "").strip()
        return Layout(name=name, func=func, options=tuple(options), help=doc.splitlines()[0] if doc else "",
                      capacity=capacity)

    return wrap


def evenly_spaced(items: Sequence[Any], count: int) -> list[Any]:
    """``count`` of ``items`` spread evenly from the first to the last (all of them when there are fewer):
    how compose steps sample ``count`` and how a layout's ``capacity`` is filled."""
    n = len(items)
    if n <= count:
        return list(items)
    return [items[round(i * (n - 1) / max(count - 1, 1))] for i in range(count)]


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``final``; rename it to ``final`` only if the block succeeds.

    Works for files and folders. An interrupted write leaves no file that looks complete.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp" + final.suffix, dir=final.parent)
    os.close(fd)
    tmp = Path(name)
    tmp.unlink()
    try:
        yield tmp
        os.replace(tmp, final)
    except BaseException:
        if tmp.is_dir():
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


__all__ = [
    "REQUIRED", "CinemlError", "Composer", "Extractor", "Generator", "Implementation", "Layout",
    "Option", "Preprocessor", "Project", "Source", "StageContext", "Step", "Trainer", "atomic_path", "layout",
]
