"""The stage table: every fact about CineML's stages, stated once.

The manifest reader, the planner and runner, the plugin manager and the docs all iterate ``STAGES``;
adding a stage or a named input is one row here (the model is datasette's ``SETTINGS``). Rows are in
pipeline order. Besides the stages, two registries feed them: preprocessors (chained into extraction)
and layouts (which compose steps may name directly).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import api
from .api import REQUIRED, Implementation, Option, StageContext, Step


class StageId(str):
    """A stage's name as state.json, hooks and messages spell it: ``"train"``, or ``"compose:fakes.mp4"``
    for one step of an array stage (its group, then the step's name)."""

    @classmethod
    def of(cls, group: str, name: str | None = None) -> StageId:
        return cls(group if name is None else f"{group}:{name}")

    @property
    def group(self) -> str:
        return self.partition(":")[0]

    @property
    def name(self) -> str:
        return self.partition(":")[2] or self.group


@dataclass(frozen=True)
class Stage:
    """One row of the stage table."""

    table: str  # key in project.toml, and the stage's id (or its group, for array stages)
    kind: str  # registry kind; plugins fill it through the hook ``register_<kind>``
    base: type[Implementation]  # what every registered implementation must be
    method: str  # what the engine calls: method(ctx), plus the chain (``chain``) or the images (``takes_images``)
    output: str | None = None  # folder under the project it writes (file stages: the folder their files go in)
    is_file: bool = False  # each step writes one file (compose: its ``output`` option), not a folder
    steps: bool = False  # an array of tables ([[compose]]): every table is a stage "<table>:<its step_key option>"
    step_key: str = "output"  # the option that names each step of an array
    single: bool = False  # a lone [table] is one unnamed step, the stage "<table>" (as before arrays existed)
    upstream: tuple[str, ...] = ()  # stages whose output it reads; "source" is the film, whoever made it
    makes: dict[str, tuple[str, ...]] = field(default_factory=dict)  # named inputs: name -> globs under the project
    takes_images: bool = False  # compose-like: its ``input`` option names images, resolved by the engine
    options: tuple[Option, ...] = ()  # options every step of this stage has, whatever implementation it uses
    default_use: str | None = None  # the implementation when ``use`` is not given
    chain: tuple[str, str] | None = None  # (table, registry kind) of the per-frame steps it streams frames through
    film: bool = False  # it writes the project's film (``project.source``), which the artist may supply instead
    may_read_film: bool = False  # reads the film when there is one (a soundtrack), so it is an input when it exists
    also_names: str | None = None  # ``use`` may also name an entry of this registry, run by ``runner``
    runner: str | None = None
    every_rank: bool = False  # under torchrun, processes of rank > 0 run it too (and nothing else)

    @property
    def title(self) -> str:  # as the manifest writes it: "[train]", "[[compose]]"
        return f"[[{self.table}]]" if self.steps and not self.single else f"[{self.table}]"

    def call(self, step: Step, ctx: StageContext, images: list[Path] | None) -> None:
        """Run one step of this stage."""
        extra = ([step.chain] if self.chain else []) + ([images] if self.takes_images else [])
        getattr(step.impl, self.method)(ctx, *extra)


def _check_input(value: Any) -> str | None:
    if isinstance(value, list) and (len(value) < 2 or not all(isinstance(v, str) and v for v in value)):
        return "a list of inputs names two or more of them, e.g. [\"frames\", \"projection\"]"
    return None


#: Options every generate step has, whatever implementation it uses.
GENERATE_OPTIONS = (
    Option("name", str, None, "The step's name, and its folder under generated/ (needed in a [[generate]] array; "
           "compose steps take its images with input = \"<name>\"). Without it the step writes generated/."),
)

#: Options every compose step has, whatever implementation it uses.
COMPOSE_OPTIONS = (
    Option("input", (str, list), "fakes", "What to compose: fakes, reals, generated, walk, frames, a [[generate]] "
           "step's name, or a glob relative to the project folder (\"stills/*.png\"). A list of them "
           "([\"frames\", \"projection\"]) is matched image by image (by frame number where the files are "
           "numbered) for side-by-side; the images go to the composer input by input.", check=_check_input),
    Option("output", str, REQUIRED, "File name to write under art/ (e.g. \"fakes.mp4\", \"grid.png\")."),
    Option("count", int, None, "Take this many images, evenly spaced over the selection.", min=1),
    Option("every", int, 1, "Take every n-th image.", min=1),
    Option("start", int, None, "First image (0-based index into the input, after sorting).", min=0),
    Option("end", int, None, "Stop before this index (0-based; negative counts from the end)."),
    Option("one_per_shot", bool, False, "Take one image per shot, its middle frame (a shot contact sheet with "
           "labels = \"shot\"); for frames extracted with [extract] shots = true."),
)

STAGES: tuple[Stage, ...] = (
    Stage("source", "sources", api.Source, "make", is_file=True, film=True),
    Stage("extract", "extractors", api.Extractor, "extract", output="frames", upstream=("source",),
          makes={"frames": ("frames/*.jpg", "frames/*.png", "frames/*.webp")}, default_use="fps",
          chain=("preprocess", "preprocessors")),
    Stage("train", "trainers", api.Trainer, "train", output="train", upstream=("extract",),
          makes={"fakes": ("train/fakes*.png",), "reals": ("train/reals.png",)}, every_rank=True),
    Stage("generate", "generators", api.Generator, "generate", output="generated", upstream=("train",),
          makes={"generated": ("generated/*.png",), "walk": ("generated/walk/*.png",)}, steps=True, single=True,
          step_key="name", options=GENERATE_OPTIONS),
    Stage("compose", "composers", api.Composer, "compose", output="art", is_file=True, steps=True, takes_images=True,
          options=COMPOSE_OPTIONS, may_read_film=True, also_names="layouts", runner="layout"),
)

#: Every registry plugins fill, with the class its entries must be: one per stage, plus the per-frame steps
#: chained into extraction and the layouts compose steps may name.
REGISTRIES: dict[str, type] = {**{s.kind: s.base for s in STAGES}, "preprocessors": api.Preprocessor,
                               "layouts": api.Layout}

BY_TABLE = {s.table: s for s in STAGES}


def stage_of(stage: str) -> Stage:
    """The row of ``"train"`` or ``"compose:fakes.mp4"``."""
    return BY_TABLE[StageId(stage).group]


#: Named inputs of compose steps: name -> (stage that makes them, globs under the project folder).
NAMED_INPUTS = {name: (s.table, globs) for s in STAGES for name, globs in s.makes.items()}

#: The registries whose names a step's ``use`` draws from together (a compose ``use`` names a composer or
#: a layout), so registering one name in both would be ambiguous.
SHARED_NAMES = {k: (s.kind, s.also_names) for s in STAGES if s.also_names for k in (s.kind, s.also_names)}


def output_path(root: Path, film: Path | None, stage: str, options: dict[str, Any]) -> Path:
    """Where a stage's output lives in the project: the film for the source stage, a file for compose steps,
    a folder for the others (a named step's folder inside its stage's)."""
    row = stage_of(stage)
    if row.output is None:
        assert film is not None, "a source stage always has its film path"
        return film
    named = options.get(row.step_key) if row.steps else None
    return root / row.output / named if named else root / row.output


def inputs_of(step: Step) -> list[str]:
    """The input names of a step that takes images: its ``input``, or each of a list of them."""
    value = step.options["input"]
    return list(value) if isinstance(value, list) else [value]


def named_inputs(steps: Sequence[Step]) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Names compose steps may give as ``input``: the stages' fixed ones (``NAMED_INPUTS``) and each named
    folder step's ("projection" -> the [[generate]] step of that name, its ``generated/projection/*.png``;
    "samples/walk" -> ``generated/samples/walk/*.png``)."""
    found = dict(NAMED_INPUTS)
    for step in steps:
        row = stage_of(step.stage)
        name = step.options.get(row.step_key) if row.steps and not row.is_file else None
        if name:  # the row's named inputs, inside the step's folder: "projection", "projection/walk"
            for i, (key, globs) in enumerate(row.makes.items()):
                moved = tuple(f"{row.output}/{name}/{g.removeprefix(f'{row.output}/')}" for g in globs)
                found[name if i == 0 else f"{name}/{key}"] = (step.stage, moved)
    return found


def folder_inputs(root: Path, film: Path | None) -> dict[str, Path]:
    """What a stage context's ``inputs`` holds: every folder stage's output by folder name, and the film."""
    found = {s.output: root / s.output for s in STAGES if s.output and not s.is_file}
    return found if film is None else {**found, "source": film}


def upstream(step: Step, steps: Sequence[Step] = ()) -> list[str]:
    """The stages a step reads from, among the project's ``steps``: its row's (a stage group such as "generate"
    stands for every step of it), and for a step that takes images, where each ``input`` comes from ("source"
    stands for the film, whether a stage made it or the artist supplied it)."""
    row = stage_of(step.stage)
    own = step.impl.reads(step.options)
    found = list(row.upstream if own is None else own)
    if row.takes_images:
        named = named_inputs(steps)
        for name in inputs_of(step):
            if name in named:
                found.append(named[name][0])
                continue
            # a glob into a stage's output folder depends on the step writing that folder ("generated/*.png")
            parts = Path(name).parts if not Path(name).is_absolute() else ()
            for other in steps:
                folder = stage_of(other.stage)
                if folder.output and not folder.is_file:
                    mine = Path(output_path(Path(), None, other.stage, other.options)).parts
                    if parts[:len(mine)] == mine and len(parts) > len(mine):
                        found.append(other.stage)
            if not steps:  # no project at hand: the stage that writes the top folder
                found += [s.table for s in STAGES if parts and s.output == parts[0] and not s.is_file]
    return found + ["source"] if row.may_read_film else found
