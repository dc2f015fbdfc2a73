"""The plugin manager, tested through real installed distributions (dist-info on sys.path)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from cineml import CinemlError
from cineml.plugins import Registry, load_registry

GOOD = '''
from cineml import Composer, Option, hookimpl

class Echo(Composer):
    """Writes the image names."""
    name = "echo"
    options = (Option("upper", bool, False, "Shout."),)
    def compose(self, ctx, images):
        ctx.output.write_text(" ".join(p.name for p in images))

@hookimpl
def register_composers(register):
    register(Echo())

@hookimpl
def register_commands(cli):
    @cli.command()
    def hello():
        """Say hello from a plugin."""
        print("hello from cineml-echo")
'''


def install(site, dist, version, module, code, ep=None):
    """Write a real installed distribution: a module plus its dist-info with a cineml entry point."""
    site.mkdir(exist_ok=True)
    (site / f"{module}.py").write_text(textwrap.dedent(code))
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(f"[cineml]\n{ep or module} = {module}\n")


def cineml(site, *args, **env):
    environ = {k: v for k, v in os.environ.items() if not k.startswith("CINEML_")}
    environ.update(PYTHONPATH=str(site), **env)
    return subprocess.run([sys.executable, "-m", "cineml", *args], capture_output=True, text=True, env=environ)


def test_entry_point_discovery_lists_plugin_with_version(tmp_path):
    site = tmp_path / "site"
    install(site, "cineml-echo", "1.2.3", "cineml_echo", GOOD, ep="echo")
    proc = cineml(site, "plugins", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert rows["echo"]["version"] == "1.2.3" and rows["echo"]["distribution"] == "cineml-echo"
    assert rows["echo"]["provides"] == {"composers": ["echo"]}
    assert "register_composers" in rows["echo"]["hooks"]
    assert rows["letterbox"]["origin"] == "builtin"  # built-ins load through the same entry points
    hello = cineml(site, "hello")
    assert hello.returncode == 0 and "hello from cineml-echo" in hello.stdout


def test_load_plugins_env_limits_third_party(tmp_path):
    site = tmp_path / "site"
    install(site, "cineml-echo", "1.0", "cineml_echo", GOOD, ep="echo")
    names = lambda proc: {r["name"] for r in json.loads(proc.stdout)}  # noqa: E731
    assert "echo" not in names(cineml(site, "plugins", "--json", CINEML_LOAD_PLUGINS=""))
    assert "echo" in names(cineml(site, "plugins", "--json", CINEML_LOAD_PLUGINS="cineml-echo"))
    assert "echo" in names(cineml(site, "plugins", "--json", CINEML_LOAD_PLUGINS="echo"))
    assert "echo" in names(cineml(site, "plugins", "--json", CINEML_LOAD_PLUGINS="Cineml_Echo"))  # normalised
    typo = cineml(site, "plugins", "--json", CINEML_LOAD_PLUGINS="cineml-ecko")
    assert "CINEML_LOAD_PLUGINS names 'cineml-ecko', but no installed plugin" in typo.stderr


def test_broken_plugin_is_reported_once_and_cli_keeps_working(tmp_path):
    site = tmp_path / "site"
    install(site, "cineml-broken", "0.1", "cineml_broken", "import no_such_module_anywhere\n", ep="broken")
    proc = cineml(site, "plugins", "--json")
    assert proc.returncode == 0
    assert proc.stderr.count("Error loading plugin \"broken\"") == 1
    assert "cineml-broken" in proc.stderr and "ModuleNotFoundError" in proc.stderr
    row = next(r for r in json.loads(proc.stdout) if r["name"] == "broken")
    assert "no_such_module_anywhere" in row["error"]
    strict = cineml(site, "plugins", CINEML_STRICT_PLUGINS="1")
    assert strict.returncode == 1 and "CINEML_STRICT_PLUGINS" in strict.stderr
    assert "Traceback" not in strict.stderr


def test_plugin_whose_register_hook_raises_is_rolled_back(tmp_path):
    site = tmp_path / "site"
    install(site, "cineml-half", "0.1", "cineml_half", GOOD.replace(
        "    register(Echo())", "    register(Echo())\n    raise ValueError('oops')"), ep="half")
    proc = cineml(site, "plugins", "--json")
    rows = {r["name"]: r for r in json.loads(proc.stdout)}
    assert "ValueError: oops" in rows["half"]["error"] and rows["half"]["provides"] == {}
    proc = cineml(site, "layouts", "--json")
    assert proc.returncode == 0


def test_name_clash_is_an_error_naming_both(tmp_path):
    site = tmp_path / "site"
    install(site, "cineml-echo", "1.0", "cineml_echo", GOOD, ep="echo")
    install(site, "cineml-echo2", "1.0", "cineml_echo2", GOOD, ep="echo2")
    proc = cineml(site, "plugins")
    assert proc.returncode == 1
    assert "Two plugins register a composer named 'echo': 'echo' and 'echo2'" in proc.stderr


def test_registering_the_wrong_type_is_a_clear_error(tmp_path):
    path = tmp_path / "bad.py"
    path.write_text("from cineml import hookimpl\n@hookimpl\ndef register_layouts(register):\n"
                    "    register(lambda images: images[0])\n")
    reg = Registry()
    with pytest.raises(CinemlError, match="not a cineml.Layout instance"):
        reg.load_files([path])


def test_a_layout_may_not_take_a_composers_name(tmp_path):
    # A compose step's `use` looks in both, so a layout named "animation" would be silently hidden.
    path = tmp_path / "mine.py"
    path.write_text("import cineml\nfrom cineml import hookimpl\n\n"
                    "@cineml.layout('animation')\ndef animation(images):\n    return images[0]\n\n"
                    "@hookimpl\ndef register_layouts(register):\n    register(animation)\n")
    with pytest.raises(CinemlError, match=r"Two plugins register a layout and a composer named 'animation': "
                                          r"'animation' and 'mine.py'\. 'animation' is built in, so rename the one "
                                          r"in 'mine.py'"):
        load_registry().load_files([path])


def test_local_plugin_file_import_error_is_fatal_and_names_file(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text("raise RuntimeError('typo in my layout')\n")
    with pytest.raises(CinemlError, match=r'Error loading plugin file ".*mine.py": RuntimeError: typo'):
        Registry().load_files([path])


def test_help_does_not_import_torch_or_moviepy(tmp_path):
    code = ("import sys, runpy; sys.argv=['cineml','--help']\n"
            "try:\n    runpy.run_module('cineml', run_name='__main__')\nexcept SystemExit: pass\n"
            "heavy = [m for m in ('torch', 'moviepy') if m in sys.modules]\n"
            "print('HEAVY', heavy)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "Usage: cineml" in proc.stdout
    assert "HEAVY []" in proc.stdout, proc.stdout


def test_a_misspelt_hook_in_a_project_file_is_named(tmp_path):
    path = tmp_path / "mine.py"
    path.write_text("import cineml\nfrom cineml import hookimpl\n\n"
                    "@cineml.layout('pair')\ndef pair(images):\n    return images[0]\n\n"
                    "@hookimpl\ndef register_layout(register):\n    register(pair)\n")
    with pytest.raises(CinemlError, match="'register_layout' is not a CineML hook, so it is never called. "
                                          "Did you mean 'register_layouts'"):
        load_registry().load_files([path])


def test_a_project_file_can_import_its_sibling_modules(tmp_path):
    (tmp_path / "shapes.py").write_text("SIDE = 7\n")
    (tmp_path / "mine.py").write_text(
        "import cineml\nfrom cineml import hookimpl\nimport shapes\n\n"
        "@cineml.layout('side', capacity=lambda o: shapes.SIDE)\ndef side(images):\n    return images[0]\n\n"
        "@hookimpl\ndef register_layouts(register):\n    register(side)\n")
    registry = load_registry()
    registry.load_files([tmp_path / "mine.py"])
    assert registry.impls["layouts"]["side"].tiles({}) == 7


def test_a_hook_under_another_name_with_specname_is_fine(tmp_path):
    path = tmp_path / "named.py"
    path.write_text("import cineml\nfrom cineml import hookimpl\n\n"
                    "@cineml.layout('pair2')\ndef pair2(images):\n    return images[0]\n\n"
                    "@hookimpl(specname='register_layouts')\ndef my_layouts(register):\n    register(pair2)\n")
    registry = load_registry()
    registry.load_files([path])
    assert "pair2" in registry.impls["layouts"] and registry.plugins["named.py"].hooks == ["register_layouts"]
