"""cineml.testing: the helpers plugin authors use, exercised for real."""

from pathlib import Path

from cineml import Composer, Option, hookimpl
from cineml.testing import make_project, run_project


class Listing(Composer):
    """Lists image names."""

    name = "listing"
    options = (Option("prefix", str, "", "Put before each name."),)

    def compose(self, ctx, images):
        ctx.output.write_text("\n".join(ctx.options["prefix"] + p.name for p in images))


class ListingPlugin:
    __name__ = "listing-plugin"

    @hookimpl
    def register_composers(self, register):
        register(Listing())


MANIFEST = """
    [[compose]]
    use = "listing"
    input = "stills/*.png"
    prefix = "- "
    output = "list.txt"
"""


def test_run_project_with_a_plugin_registered_for_one_test(tmp_path):
    manifest = make_project(tmp_path / "p", MANIFEST, files={"stills/a.png": b"1", "stills/b.png": b"2"})
    record = run_project(manifest, plugins=[ListingPlugin()])
    assert record["status"] == "finished"
    assert (tmp_path / "p/art/list.txt").read_text() == "- a.png\n- b.png"
    again = run_project(manifest, overrides=['compose.0.prefix="* "'], plugins=[ListingPlugin()])
    assert again["stages"][0]["reason"] == "changed: prefix: '- ' -> '* '"


def test_cineml_project_fixture(cineml_project):
    manifest = cineml_project(MANIFEST, files={"stills/x.png": b"1"})
    assert isinstance(manifest, Path) and manifest.name == "project.toml"
    run_project(manifest, plugins=[ListingPlugin()])
    assert (manifest.parent / "art/list.txt").read_text() == "- x.png"


def test_cineml_plugin_fixture_registers_for_the_run_and_the_cli(cineml_project, cineml_plugin, cineml_cli):
    manifest = cineml_project(MANIFEST, files={"stills/a.png": b"1", "stills/b.png": b"2"})
    code, out = cineml_cli("run", manifest)
    assert code == 1 and "no composer or layout named 'listing'" in out  # not installed
    cineml_plugin(ListingPlugin())
    code, out = cineml_cli("run", manifest, "-S", "compose.0.prefix=* ")
    assert code == 0, out
    assert (manifest.parent / "art/list.txt").read_text() == "* a.png\n* b.png"
    code, out = cineml_cli("plugins", "--json")
    assert code == 0 and "listing-plugin" in out
    assert run_project(manifest, ["compose.0.prefix=* "])["stages"][0]["ran"] is False  # same plugin: up to date


def test_the_fixture_plugin_is_gone_after_its_test(cineml_cli, tmp_path):
    code, out = cineml_cli("plugins", "--json")
    assert code == 0 and "listing-plugin" not in out
