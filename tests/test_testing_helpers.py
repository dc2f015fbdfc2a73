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
