"""The shape of the code: the stage table, one hook-call path, no import cycles, a leaf public face, and
state written by earlier CineMLs still honoured."""

import ast
import shutil
from pathlib import Path

import pytest

from cineml import hookimpl
from cineml.stages import NAMED_INPUTS, REGISTRIES, STAGES, StageId
from cineml.testing import registry_with, run_project

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).parent / "fixtures"


def imports_of(path: Path, package: str) -> set[str]:
    """Modules of ``package`` that the file imports, at module level or inside functions (``TYPE_CHECKING``
    blocks included: they are imports a reader follows too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:  # relative: "from . import x", "from .x import y"
                base = node.module
                found |= {base} if base else {a.name for a in node.names}
            elif node.module and node.module.startswith(package + "."):
                found.add(node.module[len(package) + 1:].split(".")[0])
        elif isinstance(node, ast.Import):
            found |= {a.name[len(package) + 1:].split(".")[0] for a in node.names if a.name.startswith(package + ".")}
    return {m.split(".")[0] for m in found}


def graph(folder: Path, package: str) -> dict[str, set[str]]:
    modules = {p.stem: p for p in folder.glob("*.py") if p.stem != "__init__"}
    return {name: imports_of(path, package) & set(modules) for name, path in modules.items()}


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(edges[node]):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [node])
    return found


@pytest.mark.parametrize("folder, package", [("cineml", "cineml"), ("plugins/stylegan2", "cineml_plugins.stylegan2")])
def test_no_import_cycles(folder, package):
    edges = graph(ROOT / folder, package)
    assert len(edges) > 5
    assert cycles(edges) == []


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]


def test_public_face_and_hook_specs_import_nothing_from_the_engine():
    edges = graph(ROOT / "cineml", "cineml")
    assert edges["api"] <= {"progress"}  # the type of StageContext.progress, a public helper
    assert edges["progress"] == set()
    assert edges["hookspecs"] <= {"api"}


def test_builtins_import_only_what_cineml_exports():
    for path in (ROOT / "plugins").rglob("*.py"):
        tree = ast.parse(path.read_text())
        deep = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module
                and n.module.startswith("cineml.")]
        assert deep == [], f"{path.relative_to(ROOT)} imports {deep}: import from cineml instead"


def test_the_stage_table_is_consistent():
    tables = [s.table for s in STAGES]
    assert tables == ["source", "extract", "train", "generate", "compose"]
    for row in STAGES:
        assert all(up in tables for up in row.upstream)
        assert all(tables.index(up) < tables.index(row.table) for up in row.upstream)  # rows in pipeline order
        assert REGISTRIES[row.kind] is row.base
    assert NAMED_INPUTS["fakes"] == ("train", ("train/fakes*.png",))
    stage = StageId.of("compose", "fakes.mp4")
    assert stage == "compose:fakes.mp4" and (stage.group, stage.name) == ("compose", "fakes.mp4")
    assert (StageId("train").group, StageId("train").name) == ("train", "train")


def test_state_written_by_earlier_cineml_is_up_to_date(tmp_path):
    """A project run by CineML before the stage table (tests/fixtures/state-v1) re-runs nothing."""
    root = tmp_path / "state-v1"
    shutil.copytree(FIXTURES / "state-v1", root)
    record = run_project(root / "project.toml")
    assert [(s["stage"], s["ran"], s["reason"]) for s in record["stages"]] == [
        (stage, False, "up to date") for stage in
        ("source", "extract", "train", "compose:fakes.txt", "compose:stack.png")]


class Wrapper:
    """A lifecycle hook written as a pluggy wrapper: code before and after the other implementations."""

    def __init__(self):
        self.calls = []

    @hookimpl(wrapper=True)
    def stage_finished(self, stage):
        self.calls.append(("before", stage))
        result = yield
        self.calls.append(("after", stage))
        return result


class Broken:
    @hookimpl
    def stage_finished(self, stage):
        raise RuntimeError("observer bug")


def test_wrapper_lifecycle_hooks_run_and_a_failing_observer_stops_nothing(toy_project, capsys):
    wrapper = Wrapper()
    record = run_project(toy_project, plugins=[Broken(), wrapper])
    assert record["status"] == "finished"
    stages = [s["stage"] for s in record["stages"]]
    assert wrapper.calls == [(when, stage) for stage in stages for when in ("before", "after")]
    assert "failed in its stage_finished hook (RuntimeError: observer bug); carrying on" in capsys.readouterr().out


def test_registry_hooks_go_through_pluggy_so_its_tracing_sees_them():
    registry = registry_with(builtins=False)
    seen = []
    registry.pm.trace.root.setwriter(seen.append)
    registry.pm.enable_tracing()

    class Plugin:
        @hookimpl
        def register_layouts(self, register):
            pass

    registry.add_plugin(Plugin(), name="traced")
    assert any("register_layouts" in line for line in seen)
