"""Docs that are generated from code must match it; the README's commands must match CI's."""

import ast
import http.server
import importlib.util
import inspect
import json
import re
import threading
import types
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cineml import Option

ROOT = Path(__file__).resolve().parent.parent


def load_gen():
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "docs/gen_docs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_hook_documented_with_exact_signature():
    gen = load_gen()
    from cineml import hookspecs

    text = (ROOT / "docs/hooks.md").read_text()
    for name, fn in vars(hookspecs).items():
        if hasattr(fn, "cineml_spec"):
            assert f"## `{name}`" in text, f"hook {name} is not documented in docs/hooks.md"
            assert gen.hook_signature(fn) in text, f"docs/hooks.md has a stale signature for {name}"


def test_generated_docs_are_current():
    gen = load_gen()
    for name, make in gen.PAGES.items():
        assert (ROOT / "docs" / name).read_text() == make(), f"run `python docs/gen_docs.py` to refresh docs/{name}"


def test_ci_runs_the_readme_test_and_demo_commands():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    test_command = next(b for b in blocks if b.endswith("pytest"))
    demo_command = next(b for b in blocks if b.endswith("cineml run projects/demo/project.toml"))
    ci = (ROOT / ".ci/run").read_text()
    assert test_command in ci and demo_command in ci


# --- hook examples --------------------------------------------------------------------------------
# Every hookspec docstring ends with an ``Example::`` plugin that docs/hooks.md shows. These tests read
# the examples back from docs/hooks.md, check their shape, then load them as real plugins and run them.


def hook_specs() -> dict[str, object]:
    from cineml import hookspecs

    return {name: fn for name, fn in vars(hookspecs).items() if hasattr(fn, "cineml_spec")}


def hook_examples() -> dict[str, str]:
    """``hook name -> example code`` from the python blocks with ``@hookimpl`` in docs/hooks.md."""
    parts = re.split(r"^## `(\w+)`$", (ROOT / "docs/hooks.md").read_text(), flags=re.M)
    sections = dict(zip(parts[1::2], parts[2::2]))
    examples = {}
    for name in hook_specs():
        blocks = [b for b in re.findall(r"```python\n(.*?)\n```", sections.get(name, ""), re.S) if "@hookimpl" in b]
        assert len(blocks) == 1, f"docs/hooks.md: the {name} section needs one example with @hookimpl"
        examples[name] = blocks[0]
    return examples


def test_every_hook_has_an_example_with_the_exact_arguments():
    for name, code in hook_examples().items():
        compile(code, f"docs/hooks.md ({name} example)", "exec")
        impls = [node for node in ast.walk(ast.parse(code)) if isinstance(node, ast.FunctionDef)
                 and node.name == name and any(ast.unparse(d) == "hookimpl" for d in node.decorator_list)]
        assert len(impls) == 1, f"the {name} example needs one `@hookimpl def {name}(...)`"
        spec_args = list(inspect.signature(hook_specs()[name]).parameters)
        assert [a.arg for a in impls[0].args.args] == spec_args, f"the {name} example must take {spec_args}"


def example_plugins() -> list[types.ModuleType]:
    modules = []
    for name, code in hook_examples().items():
        module = types.ModuleType(f"example_{name}")
        exec(compile(code, f"docs/hooks.md ({name} example)", "exec"), module.__dict__)
        modules.append(module)
    return modules


def test_hook_examples_register_as_plugins():
    """pluggy checks each example against its spec; every registry example registers an implementation."""
    from cineml.plugins import KINDS
    from cineml.testing import registry_with

    registry = registry_with(*example_plugins(), builtins=False)  # strict: a bad example raises
    for name in hook_specs():
        assert registry.plugins[f"example_{name}"].hooks == [name]
    for kind, (hook, base) in KINDS.items():
        (impl,) = registry.impls[kind].values()
        assert isinstance(impl, base) and impl.help and all(isinstance(o, Option) for o in impl.options), hook


def test_hook_examples_run_in_a_real_pipeline(tmp_path, capsys):
    """The runnable examples, end to end: the test-pattern film, extraction every 0.5 s through the
    posterize preprocessor, the diptych layout and the PDF composer, observed by the lifecycle examples."""
    from cineml.testing import make_project, run_project

    plugins = example_plugins()
    manifest = make_project(tmp_path / "examples", """
        [project]
        source = "film.mp4"
        [source]
        use = "testpattern"
        seconds = 2
        [extract]
        use = "every"
        seconds = 0.5
        [[preprocess]]
        use = "posterize"
        bits = 2
        [[compose]]
        use = "diptych"
        input = "frames"
        output = "diptych.png"
        [[compose]]
        use = "pdf"
        input = "frames"
        output = "frames.pdf"
    """)
    record = run_project(manifest, plugins=plugins)
    root = manifest.parent
    assert record["status"] == "finished"
    out = capsys.readouterr().out
    assert "examples: running source, extract, compose:diptych.png, compose:frames.pdf" in out
    assert "examples: extract (seconds=0.5)" in out
    assert "examples finished: source (" in out

    index = json.loads((root / "frames/index.json").read_text())
    assert [f["time"] for f in index["frames"]] == pytest.approx([0, 0.5, 1, 1.5])
    frame = Image.open(root / "frames" / index["frames"][0]["file"])
    assert frame.size == (640, 360) and set(np.unique(np.asarray(frame))) <= {0, 64, 128, 192}
    assert Image.open(root / "art/diptych.png").size == (640 + 16 + 640, 360)
    assert len(re.findall(rb"/Type\s*/Page\b", (root / "art/frames.pdf").read_bytes())) == 4  # one page a frame
    timings = (root / "timings.log").read_text().splitlines()
    assert [line.split(": ")[0] for line in timings] == ["source", "extract", "compose:diptych.png",
                                                        "compose:frames.pdf"]


def test_hook_examples_report_failures_and_post_snapshots(tmp_path, capsys, monkeypatch):
    from cineml.manifest import Project
    from cineml.testing import registry_with

    hook = registry_with(*example_plugins(), builtins=False).hook
    project = Project(name="film", root=tmp_path, manifest_path=tmp_path / "project.toml")
    error = ValueError("frame 12 is empty")
    hook.stage_failed(project=project, stage="train", error=error)
    hook.run_failed(project=project, record={"status": "failed", "started": "2025-01-01T00:00:00+00:00"}, error=error)
    assert "film: train failed" in capsys.readouterr().out
    assert (tmp_path / "failures.log").read_text() == "2025-01-01T00:00:00+00:00 ValueError: frame 12 is empty\n"

    posts = []

    class Webhook(http.server.BaseHTTPRequestHandler):
        def do_POST(self):
            posts.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args):
            pass

    with http.server.HTTPServer(("127.0.0.1", 0), Webhook) as server:
        threading.Thread(target=server.handle_request, daemon=True).start()
        monkeypatch.setenv("FAKES_WEBHOOK", f"http://127.0.0.1:{server.server_port}/")
        hook.snapshot_written(project=project, kimg=1.2,
                              checkpoint=tmp_path / "network-snapshot-000001_200.safetensors",
                              fakes=tmp_path / "fakes000001_200.png")
    assert posts == [{"text": f"film at 1.2 kimg: {tmp_path / 'fakes000001_200.png'} "
                              "(network-snapshot-000001_200.safetensors)"}]


def test_register_commands_example_runs(tmp_path):
    import click
    from click.testing import CliRunner

    from cineml.testing import registry_with

    cli = click.Group("cineml")
    registry_with(*example_plugins(), builtins=False).hook.register_commands(cli=cli)
    assert CliRunner().invoke(cli, ["latest", str(tmp_path)]).output == "no fakes grid yet\n"
    for name in ("fakes000000.png", "fakes000001_200.png", "fakes000001.png"):
        (tmp_path / name).touch()
    assert CliRunner().invoke(cli, ["latest", str(tmp_path)]).output == f"{tmp_path / 'fakes000001_200.png'}\n"
