"""The plugin ecosystem, end to end: real packages installed with pip, found by entry point, tested.

Packages are installed into a temporary folder (``pip install --target``, no network, no build
isolation) that subprocesses get on PYTHONPATH, so the developer's environment is never touched.
The docs' examples are run straight from the markdown, so docs and code cannot drift.
"""

from __future__ import annotations

import importlib.util
import io
import json
import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import cineml.cli
from cineml import CinemlError
from cineml.plugin_scaffold import add_plugin_commands, plugin_names, write_plugin_package
from cineml.testing import make_project, run_project

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs/examples/cineml-contact-sheet"
COLORS = [(220, 40, 40), (40, 200, 60), (50, 80, 230), (230, 200, 40)]


def png(color, size=(48, 27)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def builds_wheels_offline() -> bool:
    """Whether this environment's setuptools can build a wheel by itself (no download needed).

    setuptools >= 70.1 has bdist_wheel built in; older ones (a fresh Python 3.11 venv has 65.5)
    need the separate ``wheel`` package.
    """
    try:
        major, minor = (int(p) for p in re.findall(r"\d+", version("setuptools"))[:2])
    except (PackageNotFoundError, ValueError):
        return False
    return (major, minor) >= (70, 1) or importlib.util.find_spec("wheel") is not None


def pip_install(source: Path, target: Path) -> Path:
    """Install a package folder (copied first, so the build leaves no files in it) into ``target``.

    Offline with this environment's setuptools when it can build wheels (fast); otherwise pip's
    isolated build, which fetches setuptools>=68 from the package index.
    """
    work = target.parent / f"src-{source.name}"
    shutil.copytree(source, work, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    build = ["--no-build-isolation", "--no-index"] if builds_wheels_offline() else []
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *build,
                           "--disable-pip-version-check", "--target", str(target), str(work)],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return work


def environ(site: Path, plugins: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CINEML_")}
    env.update(PYTHONPATH=str(site), CINEML_LOAD_PLUGINS=plugins, PYTHONDONTWRITEBYTECODE="1")
    return env


def run_tests(folder: Path, site: Path, plugins: str, cwd: Path) -> subprocess.CompletedProcess:
    """Run a package's own tests in a fresh interpreter that sees the package only as installed."""
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(folder / "tests")],
                          capture_output=True, text=True, env=environ(site, plugins), cwd=cwd)


def blocks(markdown: Path) -> dict[str, str]:
    """Code blocks whose first line is ``# <file name>``, by file name."""
    found = re.findall(r"```(?:python|toml)\n# ([\w./-]+)\n(.*?)```", markdown.read_text(), re.S)
    return {name: f"# {name}\n{body}" for name, body in found}


@pytest.fixture(scope="module")
def contact_sheet_site(tmp_path_factory) -> tuple[Path, Path]:
    """The example package pip-installed into a temporary site folder: (site, its source copy)."""
    base = tmp_path_factory.mktemp("contact-sheet")
    site = base / "site"
    return site, pip_install(EXAMPLE, site)


def test_installed_example_is_listed_by_cineml_plugins(contact_sheet_site):
    site, _ = contact_sheet_site
    proc = subprocess.run([sys.executable, "-m", "cineml", "plugins", "--json"], capture_output=True, text=True,
                          env=environ(site, "contact-sheet"))
    assert proc.returncode == 0, proc.stderr
    rows = {row["name"]: row for row in json.loads(proc.stdout)}
    meta = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
    sheet = rows["contact-sheet"]
    assert (sheet["version"], sheet["distribution"], sheet["origin"]) == (meta["version"], meta["name"], "entry point")
    assert sheet["provides"] == {"preprocessors": ["vignette"], "layouts": ["contact-sheet"]}
    assert sheet["error"] is None and rows["layouts"]["origin"] == "builtin"


def test_cineml_run_draws_a_contact_sheet_with_the_installed_layout(contact_sheet_site, tmp_path):
    site, _ = contact_sheet_site
    manifest = make_project(tmp_path / "p", """
        [project]
        name = "Ecosystem"

        [[compose]]
        use = "contact-sheet"
        input = "stills/*.png"
        columns = 2
        gutter = 4
        margin = 8
        output = "sheet.png"
    """, files={f"stills/{k}.png": png(color) for k, color in enumerate(COLORS)})
    proc = subprocess.run([sys.executable, "-m", "cineml", "-q", "run", str(manifest)], capture_output=True,
                          text=True, env=environ(site, "contact-sheet"))
    assert proc.returncode == 0, proc.stderr
    pixels = np.asarray(Image.open(tmp_path / "p/art/sheet.png").convert("RGB")).astype(int)
    assert pixels.shape[1] == 2 * 8 + 2 * 48 + 4
    tops = []
    for k, color in enumerate(COLORS):
        ys, xs = np.nonzero(np.all(np.abs(pixels - color) <= 3, axis=-1))
        assert xs.min() == 8 + (k % 2) * (48 + 4) and xs.max() - xs.min() + 1 == 48
        tops.append(int(ys.min()))
    assert tops[2] - tops[0] == 27 + 4 and tops[0] > 8 + 20  # a header band above the grid
    assert (pixels[:tops[0] - 8].min(axis=-1) > 200).sum() > 30  # with light title text on it
    record = json.loads((tmp_path / "p/run.json").read_text())
    assert record["plugins"]["contact-sheet"]["distribution"] == "cineml-contact-sheet"
    step = record["stages"][-1]  # run by the built-in `layout` composer, with the package's layout
    assert step["layout"]["name"] == "contact-sheet" and step["layout"]["plugin"] == "contact-sheet"

    # Without the plugin allowed, the manifest error says what is missing and how to look.
    proc = subprocess.run([sys.executable, "-m", "cineml", "run", str(manifest)], capture_output=True, text=True,
                          env=environ(site, ""))
    assert proc.returncode == 1 and "no composer or layout named 'contact-sheet'" in proc.stderr


def test_example_package_passes_its_own_tests(contact_sheet_site, tmp_path):
    site, source = contact_sheet_site
    proc = run_tests(source, site, "contact-sheet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert re.search(r"\b1[0-9] passed\b", proc.stdout), proc.stdout[-500:]


@pytest.fixture
def cli_with_plugin_commands():
    """The real CLI group with ``cineml plugin`` added (removed afterwards unless it was already there)."""
    cli = cineml.cli.cli
    added = "plugin" not in cli.commands
    add_plugin_commands(cli)
    yield cli
    if added:
        cli.commands.pop("plugin", None)


def test_plugin_new_writes_a_package_that_passes_its_own_tests(cli_with_plugin_commands, tmp_path):
    result = CliRunner().invoke(cli_with_plugin_commands, ["plugin", "new", "cineml-demo-thing", "--dir",
                                                           str(tmp_path)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    package = tmp_path / "cineml-demo-thing"
    assert f"Created {package}" in result.output
    assert sorted(p.relative_to(package).as_posix() for p in package.rglob("*") if p.is_file()) == [
        ".gitignore", "README.md", "cineml_demo_thing.py", "pyproject.toml", "tests/conftest.py",
        "tests/test_cineml_demo_thing.py"]
    project = tomllib.loads((package / "pyproject.toml").read_text())["project"]
    assert project["name"] == "cineml-demo-thing" and project["dependencies"] == ["cineml"]
    assert project["entry-points"]["cineml"] == {"demo-thing": "cineml_demo_thing"}

    site = tmp_path / "site"
    source = pip_install(package, site)
    proc = run_tests(source, site, "demo-thing", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "3 passed" in proc.stdout

    again = CliRunner().invoke(cli_with_plugin_commands, ["plugin", "new", "demo-thing", "--dir", str(tmp_path)])
    assert again.exit_code == 1 and "already exists and is not empty" in again.output


def test_plugin_names_are_validated_and_never_clash_with_installed_ones(tmp_path):
    names = plugin_names("film-burn")
    assert (names.distribution, names.module, names.plugin) == ("cineml-film-burn", "cineml_film_burn", "film-burn")
    for bad in ("Film_Burn", "cineml-", "cineml", "-x", "x--y", "3d", "cineml-a b"):
        with pytest.raises(CinemlError, match="is not a valid plugin name"):
            plugin_names(bad)
    with pytest.raises(CinemlError, match="already provides a layout called 'grid'"):
        write_plugin_package(tmp_path / "cineml-grid", "cineml-grid")
    with pytest.raises(CinemlError, match="A plugin called 'letterbox' is already installed"):
        write_plugin_package(tmp_path / "cineml-letterbox", "letterbox")
    assert not any(tmp_path.iterdir())  # nothing written for a refused name


def test_plugins_guide_example_package_passes_its_tests(tmp_path):
    files = blocks(ROOT / "docs/plugins.md")
    assert set(files) == {"pyproject.toml", "cineml_gif.py", "tests/conftest.py", "tests/test_gif.py"}
    package = tmp_path / "cineml-gif"
    for name, text in files.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    site = tmp_path / "site"
    source = pip_install(package, site)
    proc = run_tests(source, site, "gif", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "2 passed" in proc.stdout


def test_layouts_guide_example_runs(tmp_path):
    files = blocks(ROOT / "docs/layouts.md")
    assert set(files) == {"my_layouts.py", "project.toml"}
    stills = {f"stills/{k}.png": png(color, (40, 30)) for k, color in enumerate(COLORS[:3])}
    manifest = make_project(tmp_path / "p", files["project.toml"], files={"my_layouts.py": files["my_layouts.py"],
                                                                         **stills})
    assert run_project(manifest)["status"] == "finished"
    pixels = np.asarray(Image.open(tmp_path / "p/art/polaroids.png").convert("RGB")).astype(int)
    size, pad, foot = 64, 4, 16  # size = 64 in the guide's project.toml
    card_w, card_h = size + 2 * pad, size + pad + foot
    assert pixels.shape == (card_h + 2 * pad, pad + 3 * (card_w + pad), 3)
    assert np.all(pixels[0] == (0x2B, 0x2B, 0x2B))  # the table
    captions = []
    for k, color in enumerate(COLORS[:3]):
        x = pad + k * (card_w + pad)
        photo = pixels[2 * pad:2 * pad + size, x + pad:x + pad + size]
        assert np.all(np.abs(photo - color) <= 2)  # cover-fitted: the whole square is the image
        assert np.all(pixels[pad:2 * pad, x:x + card_w] == 255)  # white card above the photo
        captions.append(pixels[2 * pad + size:pad + card_h, x:x + card_w])
        assert (captions[-1].max(axis=-1) < 160).sum() >= 3 and np.median(captions[-1]) == 255  # dark text
    assert not np.array_equal(captions[0], captions[1])  # "0", "1": each card's own label

    # Editing the layout file re-renders the steps that use it, and says why.
    code = tmp_path / "p/my_layouts.py"
    code.write_text(code.read_text().replace("(255, 255, 255)", "(250, 250, 240)"))
    again = run_project(manifest)
    assert again["stages"][0]["ran"] and "layout plugin changed" in again["stages"][0]["reason"]
    assert tuple(np.asarray(Image.open(tmp_path / "p/art/polaroids.png").convert("RGB"))[pad, pad]) == (250, 250, 240)


def test_reference_docs_ignore_installed_third_party_plugins(contact_sheet_site):
    """docs/manifest.md and docs/cli.md document what ships with CineML, whatever else is installed."""
    site, _ = contact_sheet_site
    code = ("import sys; sys.path.insert(0, 'docs'); import gen_docs\n"
            "from pathlib import Path\n"
            "for name, make in gen_docs.PAGES.items():\n"
            "    assert Path('docs', name).read_text() == make(), name\n"
            "from cineml.cli import registry\n"
            "assert 'contact-sheet' in registry().impls['layouts']\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env=environ(site, "contact-sheet"))
    assert proc.returncode == 0, proc.stderr
