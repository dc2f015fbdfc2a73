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


def hooks_page() -> str:
    from cineml import hookspecs

    specs = [fn for fn in vars(hookspecs).values() if inspect.isfunction(fn) and hasattr(fn, "cineml_spec")]
    out = ["# Hooks", "",
           "Every hook CineML calls, with its exact signature. Implement any subset in a plugin module,",
           "decorated with `@cineml.hookimpl`; a function may accept a subset of the arguments (pluggy passes",
           "only what it asks for). Registry hooks run once at start-up; lifecycle hooks run during",
           "`cineml run` and their return values are ignored.", "",
           "_Generated from `cineml/hookspecs.py` by `python docs/gen_docs.py`; a test fails when they drift._", ""]
    for fn in specs:
        out += [f"## `{fn.__name__}`", "", "```python", hook_signature(fn), "```", "", inspect.getdoc(fn), ""]
    return "\n".join(out)


PAGES = {"hooks.md": hooks_page}

if __name__ == "__main__":
    for name, make in PAGES.items():
        (DOCS / name).write_text(make())
        print(f"wrote docs/{name}", file=sys.stderr)
