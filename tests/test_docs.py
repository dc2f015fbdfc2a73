"""Docs that are generated from code must match it; the README's commands must match CI's."""

import importlib.util
import re
from pathlib import Path

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


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)\n```", readme, re.S)
    test_command = next(b for b in blocks if b.endswith("pytest"))
    assert test_command in (ROOT / ".ci/run").read_text()
