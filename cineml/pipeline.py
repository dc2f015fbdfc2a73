"""Plan and run a project's stages: source -> extract (+ preprocess chain) -> train -> generate -> compose.

Each stage has a fingerprint: its implementation, plugin version, settings and its inputs'
fingerprints. A stage whose fingerprint matches the last completed run and whose output exists is
skipped; a changed upstream changes every downstream fingerprint. Stages write into a staging path
under ``.cineml/staging/`` keyed by fingerprint (so an interrupted stage resumes from its own partial
work) and the engine moves the output into place only when the stage returns.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import enum
import functools
import glob as _glob
import hashlib
import json
import os
import platform
import re
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from glob import escape as glob_escape
from pathlib import Path
from typing import Any

from . import __version__
from .api import CinemlError, Project, StageContext, Step, atomic_path, evenly_spaced
from .files import OWNED, exclusive, file_fingerprint, foreign_files, link_copy, move_into_place, output_digest
from .manifest import _suggest
from .plugins import Registry, notify
from .progress import Progress
from .stages import (
    BY_TABLE,
    STAGES,
    StageId,
    folder_inputs,
    inputs_of,
    named_inputs,
    output_path,
    stage_of,
    upstream,
)

STATE_DIR = ".cineml"


class Why(enum.Enum):
    """Why a stage runs or not; the first that applies, in this order."""

    NOT_SELECTED = "not selected"  # --only / --from / --to leave it out
    FORCED = "forced"
    NEVER_RAN = "never ran"
    OUTPUT_MISSING = "output missing"
    UPSTREAM_CHANGED = "upstream changed"
    UPSTREAM_RERUNS = "upstream re-runs"  # its inputs' settings are the same: it runs only if their output differs
    SETTINGS_CHANGED = "settings changed"  # its implementation, plugin version, options, inputs or seed
    UP_TO_DATE = "up to date"


@dataclass(frozen=True)
class PlannedStage:
    """One stage of the plan: whether it runs, why, and what identifies its work."""

    step: Step
    fingerprint: str
    material: dict[str, Any]
    why: Why
    output: Path
    work_key: str  # the fingerprint without ``continues`` options: names the staging folder
    detail: str = ""  # what is missing, which upstream or which settings changed
    continues: bool = False  # only such options changed: start from the previous output
    resumes: bool = False  # an interrupted run of the same work left its staging folder
    resume_at: str | None = None  # where it resumes, as the implementation says it ("0.2 kimg")
    forced: bool = False  # --force: a fresh start, even over an interrupted run's staging folder

    @property
    def run(self) -> bool:
        return self.why not in (Why.NOT_SELECTED, Why.UP_TO_DATE)

    @property
    def reason(self) -> str:
        """The plan's words for it ("upstream extract changed", "changed: kimg: 10 -> 20")."""
        text = {Why.OUTPUT_MISSING: f"output missing ({self.detail})", Why.UPSTREAM_CHANGED:
                f"upstream {self.detail} changed", Why.UPSTREAM_RERUNS: f"upstream {self.detail} re-runs; runs only "
                "if its output changes", Why.SETTINGS_CHANGED: f"changed: {self.detail}" if self.detail
                else self.why.value}.get(self.why, self.why.value)
        if self.continues:
            return text + " (continuing from the previous output)"
        if not self.resumes:
            return text
        return text + (f" (resumes its interrupted run from {self.resume_at})" if self.resume_at else
                       " (resumes its interrupted run)")


def _natural_key(path: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name)]


def _jsonable(value: Any, root: Path) -> Any:
    if isinstance(value, Path):
        try:
            return str(value.relative_to(root))
        except ValueError:
            return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v, root) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, root) for v in value]
    return value


def _settled(options: dict[str, Any], declared: Sequence[Any], before: dict[str, Any] | None) -> dict[str, Any]:
    """The options that fingerprint a step: all of them, except options that were not there when the step last
    ran (a newer CineML or plugin declares them) and are at their defaults. So upgrading re-runs nothing, and
    setting such an option re-runs the step."""
    if not isinstance(before, dict):
        return options
    defaults = {o.name: o.default for o in declared}
    return {k: v for k, v in options.items() if k in before or k not in defaults or v != defaults[k]}


def _digest(material: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def _under_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def worker_rank() -> int:
    """This process's rank under torchrun (0 when not launched by it).

    Every torchrun process runs the whole CLI; only rank 0 may run the other stages and publish
    outputs, state and run.json. Ranks > 0 take part in training only.
    """
    return int(os.environ.get("RANK", "0")) if _under_torchrun() else 0


class Pipeline:
    """Runs one project with one registry; ``plan()`` explains, ``run()`` does."""

    def __init__(self, project: Project, registry: Registry, progress: Progress | None = None,
                 log: Callable[[str], None] = print, warn: Callable[[str], None] = print) -> None:
        self.project, self.registry = project, registry
        self.progress = progress or Progress(enabled=False)
        self.log, self.warn = log, warn
        self.state_dir = project.root / STATE_DIR
        self.state_file = self.state_dir / "state.json"

    def _notify(self, name: str, **kwargs: Any) -> None:
        notify(self.registry.pm, name, self.warn, **kwargs)

    # --- state -----------------------------------------------------------------------------------

    def load_state(self) -> dict[str, Any]:
        try:
            return json.loads(self.state_file.read_text())
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:  # written atomically, so only a disk fault gets here
            self.warn(f"{self.state_file} is unreadable ({exc}): every stage counts as never run. Outputs already "
                      "in place are kept until their stage finishes again.")
            return {}

    def _save_state(self, state: dict[str, Any]) -> None:
        with atomic_path(self.state_file) as tmp:
            tmp.write_text(json.dumps(state, indent=1, sort_keys=True, default=str))  # TOML dates in options

    # --- planning --------------------------------------------------------------------------------

    def compose_images(self, step: Step) -> list[Path]:
        """The images a compose step works on: its input resolved and sorted (several inputs matched image by
        image into rows), then sampled row by row, and handed over input after input."""
        names = inputs_of(step)
        streams = [self._resolve(name) for name in names]
        rows: list[tuple[Path, ...]] = ([(p,) for p in streams[0]] if len(streams) == 1
                                        else self._matched(step, names, streams))
        o = step.options
        if o["one_per_shot"]:
            rows = self._one_per_shot(step, rows)
        rows = rows[o["start"]:o["end"]][:: o["every"]]
        rows = rows if o["count"] is None else evenly_spaced(rows, o["count"])
        return [row[i] for i in range(len(streams)) for row in rows]

    def _resolve(self, name: str) -> list[Path]:
        """The files an input names (a named input, or a glob under the project), in natural order."""
        named = named_inputs(self.project.steps)
        patterns = named[name][1] if name in named else (name,)
        found: set[Path] = set()
        root = self.project.root
        for pattern in patterns:  # root_dir: a project folder named "Leth [1967]" is not a pattern
            found.update(root / p for p in _glob.glob(pattern, root_dir=root, recursive=True))
        return sorted((p for p in found if p.is_file()), key=_natural_key)

    def _matched(self, step: Step, names: list[str], streams: list[list[Path]]) -> list[tuple[Path, ...]]:
        """Rows of one image per input: by frame number when every file is numbered (000123.png; the numbers
        all inputs have), else by position (then every input must give as many)."""
        key = f"{self.project.manifest_path}: {step.where}.input"
        if all(p.stem.isdigit() for stream in streams for p in stream):
            numbered = [{int(p.stem): p for p in stream} for stream in streams]
            common = sorted(set.intersection(*(set(n) for n in numbered)))
            if not common and all(streams):
                raise CinemlError(f"{key}: {', '.join(map(repr, names))} have no frame number in common, so no "
                                  "image of one can be matched with an image of the other. Re-make one of them from "
                                  "the same frames (e.g. a projection of these frames).")
            return [tuple(n[k] for n in numbered) for k in common]
        counts = [len(stream) for stream in streams]
        if len(set(counts)) > 1:
            told = ", ".join(f"{name!r} {count}" for name, count in zip(names, counts))
            raise CinemlError(f"{key}: a list of inputs is matched image by image, but they give different numbers "
                              f"of images ({told}) and are not all numbered frames. Give inputs of the same length "
                              "(globs can pick the same stretch of each).")
        return list(zip(*streams))

    def _one_per_shot(self, step: Step, rows: list[tuple[Path, ...]]) -> list[tuple[Path, ...]]:
        """The middle row of each shot, in shot order (shots from the index.json beside the first input's frames)."""
        from .imaging import frame_facts

        shots: dict[int, list[tuple[Path, ...]]] = {}
        for row in rows:
            path = row[0]
            shot = frame_facts(path.parent).get(path.name, {}).get("shot")
            if shot is None:
                raise CinemlError(f"{self.project.manifest_path}: {step.where}.one_per_shot: {path} has no shot in "
                                  f"{path.parent / 'index.json'}. Use input = \"frames\" with [extract] shots = true "
                                  "(the default; run the extract stage again if it was off), or drop one_per_shot.")
            shots.setdefault(shot, []).append(row)
        return [group[(len(group) - 1) // 2] for _, group in sorted(shots.items())]

    def _work_key(self, step: Step, material: dict[str, Any]) -> str:
        """The fingerprint without the options that continue earlier work (``Option(continues=True)``),
        and without the files those options name."""
        free = {o.name for o in step.impl.options if o.continues}
        options = {k: v for k, v in material["options"].items() if k not in free}
        inputs = {k: v for k, v in material["inputs"].items() if k.split(" ", 1)[-1] not in free}
        return _digest({**material, "options": options, "inputs": inputs})

    def _option_files(self, step: Step, fingerprint: Callable[[Path], str] = file_fingerprint) -> dict[str, str]:
        """Content fingerprints of files that options name (a checkpoint to sample, a network to resume
        from, a soundtrack): replacing the file at the same path re-runs the step."""
        found = {}
        outputs = {(self.project.root / row.output).resolve() for row in STAGES if row.output}
        for key, value in sorted(step.options.items()):
            if isinstance(value, Path):
                path = value
            elif isinstance(value, str) and value and "\n" not in value and len(value) < 1024:
                path = Path(value).expanduser()
                path = path if path.is_absolute() else self.project.root / path
            else:
                continue
            try:
                if path.is_file():
                    found[f"file {key}"] = fingerprint(path)
                # A folder that a path option names (resume = "other/train"): a new checkpoint in it re-runs
                # the step. Not the project's own stage folders (resume = "train"): their stages' fingerprints
                # already stand for them, and they change as this very run goes on.
                elif isinstance(value, Path) and path.is_dir() and path.resolve() not in outputs:
                    found[f"folder {key}"] = self._files_digest(sorted(p for p in path.iterdir() if p.is_file()))
            except OSError:  # unreadable or a name the file system rejects: the stage will say so
                continue
        return found

    def _files_digest(self, images: list[Path]) -> str:
        """What a compose step's glob input matches: names, sizes and mtimes."""
        stats = [(p, p.stat()) for p in images]
        return _digest({"files": [[_jsonable(p, self.project.root), st.st_size, st.st_mtime_ns] for p, st in stats]})

    def _layout_versions(self, step: Step) -> list[Any] | None:
        """Plugin and version of every layout a step renders: its own (``use = "windows"``) and one named
        in its options (an animation's ``layout = "mine"``), so editing that layout's file re-runs it."""
        names = [step.layout.name] if step.layout is not None else []
        named = step.options.get("layout")
        if isinstance(named, str) and named and named not in names:
            names.append(named)
        layouts = self.registry.impls["layouts"]
        found = [[layouts[n].plugin, layouts[n].plugin_version] for n in names if n in layouts]
        return None if not found else found[0] if len(found) == 1 else found

    def plan(self, force: bool | Sequence[str] = False, only: Sequence[str] = (), start: str | None = None,
             stop: str | None = None) -> list[PlannedStage]:
        """Decide, for every stage, whether it runs and why. Filters intersect (kedro-style)."""
        state = self.load_state()
        root = self.project.root
        fingerprints: dict[str, str] = {}
        changed: set[str] = set()
        fingerprint_file = functools.cache(file_fingerprint)  # the film feeds several stages: read it once
        stages = [s.stage for s in self.project.steps]
        selected = _select(stages, only, start, stop)
        forced_stages = set(stages) if force is True else _select(stages, force, None, None) if force else set()
        film = self.project.source
        if film is not None and "source" not in stages:  # the artist's film: its content stands for it
            fingerprints["source"] = fingerprint_file(film) if film.is_file() else "missing"
        planned = []
        for step in self.project.steps:
            row = stage_of(step.stage)
            inputs = {up: fingerprints[up] for up in upstream(step, self.project.steps) if up in fingerprints}
            if row.takes_images and not set(inputs_of(step)) <= set(named_inputs(self.project.steps)):
                inputs["files"] = self._files_digest(self.compose_images(step))
            inputs.update(self._option_files(step, fingerprint_file))
            previous = state.get(step.stage)
            before = (previous or {}).get("material", {})
            before_chain = before.get("chain") or []
            material = {
                "use": step.impl.name, "plugin": step.impl.plugin, "version": step.impl.plugin_version,
                "options": _settled(_jsonable(step.options, root), [*step.impl.options, *row.options],
                                    before.get("options")),
                "chain": [{"use": p.name, "plugin": p.plugin, "version": p.plugin_version,
                           "options": _settled(_jsonable(o, root), p.options,
                                               before_chain[i].get("options") if i < len(before_chain) else None)}
                          for i, (p, o) in enumerate(step.chain)],
                "layout": self._layout_versions(step),
                "inputs": inputs,
                "seed": self.project.seed,
            }
            fp = _digest(material)
            fingerprints[step.stage] = fp
            output = output_path(root, self.project.source, step.stage, step.options)
            forced = step.stage in forced_stages
            ups_changed = [u for u in upstream(step, self.project.steps) if u in changed]
            detail = ""
            if step.stage not in selected:
                why = Why.NOT_SELECTED
                if previous is not None:  # downstream depends on what is on disk, not on what would be built
                    fingerprints[step.stage] = previous.get("fingerprint", fp)
            elif forced:
                why = Why.FORCED
            elif previous is None:
                why = Why.NEVER_RAN
            elif not output.exists():
                why, detail = Why.OUTPUT_MISSING, str(output.relative_to(root) if root in output.parents else output)
            elif ups_changed:
                why = Why.UPSTREAM_RERUNS if previous.get("fingerprint") == fp else Why.UPSTREAM_CHANGED
                detail = ", ".join(ups_changed)
            elif previous.get("fingerprint") != fp:
                why, detail = Why.SETTINGS_CHANGED, _explain(previous.get("material", {}), material)
            else:
                why = Why.UP_TO_DATE
            work_key = self._work_key(step, material)
            planned_stage = PlannedStage(step, fp, material, why, output, work_key, detail,
                                         forced=forced and step.stage in selected)
            if planned_stage.run:
                if row.film:
                    _refuse_foreign_film(self.project, output, previous, fingerprint_file)
                _refuse_foreign_link_target(output, previous)
                changed.add(step.stage)
            # Only the stage's own options changed, and only ones that carry on its work (not forced, not a
            # missing output, not a changed upstream):
            continues = (why is Why.SETTINGS_CHANGED and previous is not None and previous.get("work_key") == work_key)
            partial = self._staging_of(step.stage, work_key)
            resumes = not continues and planned_stage.run and not forced and _has_work(partial)
            at = step.impl.resume_point(partial) if resumes else None
            planned.append(dataclasses.replace(planned_stage, continues=continues, resumes=resumes, resume_at=at))
        return planned

    # --- running ---------------------------------------------------------------------------------

    def run(self, planned: list[PlannedStage], into: Path | None = None) -> dict[str, Any]:
        """Run the planned stages in order; write ``run.json``; return the run record.

        ``into``: the one stage that runs publishes its output into that folder instead of its own, and the
        state records nothing (a one-off, e.g. other seeds from ``cineml generate``)."""
        if into is not None:
            running = [p for p in planned if p.run]
            if len(running) != 1 or stage_of(running[0].step.stage).is_file:
                names = ", ".join(p.step.stage for p in running) or "none"
                raise CinemlError(f"--into {into} needs exactly one folder stage to run (e.g. --only generate "
                                  f"--force generate); this plan runs {len(running)} ({names}). With several "
                                  "[[generate]] steps, name one: cineml generate --step NAME.")
            if foreign_files(into):
                raise CinemlError(f"--into {into}: that folder holds files CineML did not write; give a new or empty "
                                  "folder.")
            planned = [dataclasses.replace(p, output=into.resolve()) if p.run else p for p in planned]
        if worker_rank() > 0:
            return self._run_as_worker(planned)
        with exclusive(self.state_dir / "lock", self.project.root):
            return self._run(planned, record_state=into is None)

    def _run(self, planned: list[PlannedStage], record_state: bool = True) -> dict[str, Any]:
        project = self.project
        record: dict[str, Any] = {
            "cineml": __version__, "python": platform.python_version(), "platform": platform.platform(),
            "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "project": project.name, "manifest": str(project.manifest_path), "seed": project.seed,
            "plugins": {n: {"version": p.version, "distribution": p.distribution, "origin": p.origin}
                        for n, p in self.registry.plugins.items() if p.error is None},
            "settings": _jsonable(project.raw, project.root), "stages": [], "status": "running",
        }
        self._notify("run_started", project=project, plan=[{"stage": p.step.stage, "run": p.run, "reason": p.reason}
                                                 for p in planned])
        before = self.load_state()
        altered: set[str] = set()  # stages that ran this time and made a different output than before
        try:
            for p in planned:
                # Under torchrun every rank must run what the plan says: the other ranks cannot see the outputs.
                reads = set(upstream(p.step, self.project.steps))
                if p.why is Why.UPSTREAM_RERUNS and not altered & reads and not _under_torchrun():
                    p = dataclasses.replace(p, why=Why.UP_TO_DATE, detail="")
                entry = {"stage": p.step.stage, "use": p.step.impl.name, "plugin": p.step.impl.plugin,
                         "version": p.step.impl.plugin_version, "fingerprint": p.fingerprint,
                         "ran": p.run, "reason": p.reason,
                         "options": _jsonable(p.step.options, self.project.root)}  # defaults filled in
                if p.step.chain:
                    entry["chain"] = [{"use": s.name, "options": _jsonable(o, self.project.root)}
                                      for s, o in p.step.chain]
                if p.step.layout is not None:
                    layout = p.step.layout
                    entry["layout"] = {"name": layout.name, "plugin": layout.plugin, "version": layout.plugin_version}
                record["stages"].append(entry)
                if p.run:
                    seconds, made = self._run_stage(p, record_state)
                    entry["seconds"] = round(seconds, 3)
                    if not record_state:
                        entry["into"] = str(p.output)
                    elif made != before.get(p.step.stage, {}).get("output_digest"):
                        altered.add(p.step.stage)
            record["status"] = "finished"
        except BaseException as exc:
            record["status"] = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            record["error"] = f"{type(exc).__name__}: {exc}"
            self._write_record(record)
            self._notify("run_failed", project=project, record=record, error=exc)
            raise
        self._write_record(record)
        self._notify("run_finished", project=project, record=record)
        return record

    def _run_as_worker(self, planned: list[PlannedStage]) -> dict[str, Any]:
        """A torchrun rank > 0: train beside rank 0 in the same staging folder; publish nothing."""
        for p in planned:
            if p.run and stage_of(p.step.stage).every_rank:
                self._call(p.step, self._context(p, self._staging(p)))
        return {"status": "worker", "rank": worker_rank(), "stages": []}

    def _staging(self, p: PlannedStage) -> Path:
        return self._staging_of(p.step.stage, p.work_key)

    def _staging_of(self, stage: str, work_key: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", stage)
        return self.state_dir / "staging" / f"{safe}-{work_key[:16]}"

    def _context(self, p: PlannedStage, staging: Path) -> StageContext:
        step, project = p.step, self.project
        out = staging / p.output.name if stage_of(step.stage).is_file else staging
        return StageContext(project=project, stage=step.stage, options=dict(step.options), output=out,
                            inputs=folder_inputs(project.root, project.source), progress=self.progress,
                            notify=self._notify,
                            previous=p.output if p.output.exists() else None,
                            layouts=dict(self.registry.impls["layouts"]), where=step.where, log=self.log,
                            warn=self.warn)

    def _run_stage(self, p: PlannedStage, record_state: bool = True) -> tuple[float, str | None]:
        """Run one stage and publish its output; returns the seconds and the output's digest (None for a
        one-off, which records nothing)."""
        step, project = p.step, self.project
        images = None
        if "files" in p.material["inputs"]:  # a glob input: upstream stages of this run may have changed it
            images = self.compose_images(step)
            material = {**p.material, "inputs": {**p.material["inputs"], "files": self._files_digest(images)}}
            p = dataclasses.replace(p, material=material, fingerprint=_digest(material),
                                    work_key=self._work_key(step, material))
        staging = self._staging(p)
        if p.forced:  # an interrupted run's partial work would otherwise be resumed
            shutil.rmtree(staging, ignore_errors=True)
        if p.continues and not staging.exists() and p.output.is_dir():
            self.log(f"{step.stage}: continuing from {p.output.name}/ (only options that carry on earlier work "
                     "changed)")
            link_copy(p.output, staging)
        staging.mkdir(parents=True, exist_ok=True)
        ctx = self._context(p, staging)
        out = ctx.output
        self.log(f"{step.stage} ({step.impl.name}, {p.reason})")
        self._notify("stage_started", project=project, stage=step.stage, options=ctx.options)
        started = time.perf_counter()
        try:
            self._call(step, ctx, images)
            if not out.exists():
                raise CinemlError(f"Stage {step.stage} ({step.impl.name}, plugin {step.impl.plugin!r}) finished "
                                  f"without writing its output {out.name}. This is a bug in that plugin.")
            if out.is_dir():
                (out / OWNED).write_text(f"{step.stage}\n")
            move_into_place(out, p.output)
        except BaseException as exc:
            self._notify("stage_failed", project=project, stage=step.stage, error=exc)
            raise
        seconds = time.perf_counter() - started
        if not record_state:  # a one-off: its folder is all there is to it
            shutil.rmtree(staging, ignore_errors=True)
            self._notify("stage_finished", project=project, stage=step.stage, output=p.output, seconds=seconds)
            return seconds, None
        state = self.load_state()
        state[step.stage] = {"fingerprint": p.fingerprint, "work_key": p.work_key, "material": p.material,
                             "seconds": round(seconds, 3),
                             "finished": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        if stage_of(step.stage).film:  # what it wrote, so that a later run can tell the artist's own film from it
            state[step.stage]["output"] = file_fingerprint(p.output)
        digest = state[step.stage]["output_digest"] = output_digest(p.output)  # did a re-run change what others read?
        self._save_state(state)
        step_name = staging.name.rsplit("-", 1)[0]
        for stale in (self.state_dir / "staging").glob(f"{glob_escape(step_name)}-*"):
            if stale.name.rsplit("-", 1)[0] == step_name:  # not another step whose name starts the same
                shutil.rmtree(stale, ignore_errors=True)
        self._notify("stage_finished", project=project, stage=step.stage, output=p.output, seconds=seconds)
        return seconds, digest

    def _call(self, step: Step, ctx: StageContext, images: list[Path] | None = None) -> None:
        row = stage_of(step.stage)
        if row.takes_images:
            images = self.compose_images(step) if images is None else images
            if not images:
                raise CinemlError(f"{self.project.manifest_path}: {step.where}.input: {step.options['input']!r} "
                                  "matches no images. Run the stage that makes them first, or fix the glob "
                                  "(relative to the project folder).")
        row.call(step, ctx, images)

    def _write_record(self, record: dict[str, Any]) -> None:
        record["finished"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        stamp = record["started"].replace(":", "-") + f"-{time.time_ns() % 10**9:09d}"  # two runs in one second
        for path in (self.project.root / "run.json", self.state_dir / "runs" / f"{stamp}.json"):
            with atomic_path(path) as tmp:
                tmp.write_text(json.dumps(record, indent=1, default=str))


def _has_work(folder: Path) -> bool:
    """An interrupted run left something in this staging folder."""
    return folder.is_dir() and any(folder.iterdir())


def _refuse_foreign_link_target(output: Path, previous: dict[str, Any] | None) -> None:
    """A stage replaces its whole output folder. Where that folder is a link (``frames -> /mnt/big/frames``),
    the folder it points to must be empty or one the engine published itself: never empty a folder of the
    artist's other files. (A folder published before the mark existed counts as the engine's when the state
    records that stage.)"""
    if not output.is_symlink() or not output.resolve().is_dir():
        return
    target = output.resolve()
    foreign = foreign_files(target)
    if foreign and previous is None:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise CinemlError(
            f"{output} is a link to {target}, which holds files CineML did not write ({shown}). A stage replaces "
            "its whole output folder, so CineML will not write there: point the link at an empty folder (CineML "
            "fills it, and replaces it on later runs), or move those files elsewhere first.")


def _select(stages: list[str], only: Sequence[str], start: str | None, stop: str | None) -> set[str]:
    """Stages chosen by --only / --from / --to; names may be a group ("compose") or a stage."""

    chains = {row.chain[0]: row.table for row in STAGES if row.chain}  # --only preprocess: the stage running it

    def matches(stage: str, name: str) -> bool:
        name = chains.get(name, name)
        return stage == name or StageId(stage).group == name

    for name in [*only, *(n for n in (start, stop) if n)]:
        if not any(matches(s, name) for s in stages):
            hint = _suggest(name, sorted({*stages, *(StageId(s).group for s in stages)}), "")
            raise CinemlError(f"No stage named {name!r} in this project.{hint} Stages: {', '.join(stages)} "
                              f"(or a group: {', '.join(BY_TABLE)}).")
    chosen = [s for s in stages if not only or any(matches(s, n) for n in only)]
    if start:
        first = next(i for i, s in enumerate(stages) if matches(s, start))
        chosen = [s for s in chosen if stages.index(s) >= first]
    if stop:
        last = max(i for i, s in enumerate(stages) if matches(s, stop))
        chosen = [s for s in chosen if stages.index(s) <= last]
    if not chosen:
        asked = " ".join(f"{flag} {value}" for flag, value in
                         (("--only", ",".join(only)), ("--from", start), ("--to", stop)) if value)
        raise CinemlError(f"{asked} selects no stage; stages run in this order: {', '.join(stages)}.")
    return set(chosen)


def _refuse_foreign_film(project: Project, film: Path, previous: dict[str, Any] | None,
                         fingerprint: Callable[[Path], str]) -> None:
    """A source stage may replace only the film it wrote itself (its content fingerprint is recorded in
    the state): a file there that it did not write is most likely the artist's own film."""
    if not film.exists() and not film.is_symlink():
        return
    recorded = None if previous is None else previous.get("output", "unrecorded")
    if film.is_file() and recorded in ("unrecorded", fingerprint(film)):
        return  # the film it wrote ("unrecorded": written by a CineML that did not record it yet)
    where = film.relative_to(project.root) if project.root in film.parents else film
    raise CinemlError(
        f"{project.manifest_path}: the [source] stage would replace {where}, a file it did not write (most likely "
        "your own film). CineML never overwrites a file it did not make. To work on that film, delete the [source] "
        "table from project.toml (project.source already points at the film); to render the [source] film instead, "
        "move that file elsewhere or set project.source to another name.")


def _explain(old: dict[str, Any], new: dict[str, Any]) -> str:
    """Say what changed between two fingerprint materials, in words an artist can act on ("" if nothing shows)."""
    reasons = []
    if old.get("use") != new.get("use"):
        reasons.append(f"implementation {old.get('use')} -> {new.get('use')}")
    if old.get("version") != new.get("version"):
        reasons.append(f"plugin {new.get('plugin')} {old.get('version')} -> {new.get('version')}")
    oo, no = old.get("options", {}), new.get("options", {})
    keys = [k for k in sorted(set(oo) | set(no)) if oo.get(k) != no.get(k)]
    reasons += [f"{k}: {oo.get(k)!r} -> {no.get(k)!r}" for k in keys]
    if old.get("chain") != new.get("chain"):
        reasons.append("preprocess chain changed")
    for k in sorted(set(old.get("inputs", {})) | set(new.get("inputs", {}))):
        if old.get("inputs", {}).get(k) != new.get("inputs", {}).get(k):
            kind, _, key = k.partition(" ")
            reasons.append("the film changed" if k == "source" else
                           f"the {kind} {key} names changed" if kind in ("file", "folder") else f"input {k} changed")
    if old.get("seed") != new.get("seed"):
        reasons.append(f"seed {old.get('seed')} -> {new.get('seed')}")
    if old.get("layout") != new.get("layout"):
        reasons.append("layout plugin changed")
    return "; ".join(reasons)
