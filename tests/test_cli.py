"""The CLI end to end on the toy project: exit codes, dry runs, scaffolding, listings."""

import json

from cineml.scaffold import TEMPLATE


def test_run_then_dry_run_explains(toy_project, cineml_cli):
    code, out = cineml_cli("run", toy_project)
    assert code == 0, out
    assert (toy_project.parent / "art/fakes.txt").exists()
    code, out = cineml_cli("run", toy_project, "--dry-run", "-S", "train.snapshots=3")
    assert code == 0
    assert "changed: snapshots: 2 -> 3" in out and "upstream train changed" in out
    state = json.loads((toy_project.parent / ".cineml/state.json").read_text())
    assert state["train"]["material"]["options"]["snapshots"] == 2  # dry run changed nothing


def test_user_error_is_one_paragraph_exit_1(toy_project, cineml_cli):
    code, out = cineml_cli("run", toy_project, "-S", "train.kimg=-1")
    assert code == 1
    assert out.startswith("Error:") and "train.kimg: -1 is out of range" in out
    assert "Traceback" not in out


def test_verbose_shows_traceback(toy_project, cineml_cli):
    code, out = cineml_cli("-v", "run", toy_project, "-S", "train.kimg=-1")
    assert code == 1 and "Traceback" in out


def test_messages_are_printed_as_written_not_as_markup(toy_project, cineml_cli):
    plugin = toy_project.parent / "toy_plugins.py"
    text = plugin.read_text()
    assert "def train(self, ctx):\n" in text
    plugin.write_text(text.replace("def train(self, ctx):\n", "def train(self, ctx):\n"
                                   "        ctx.log('[bold]kept[/bold] as typed')\n"
                                   "        ctx.warn('a [/closing] tag')\n"
                                   "        raise CinemlError('[train] inception = [/x] is wrong')\n", 1))
    plugin.write_text("from cineml import CinemlError\n" + plugin.read_text())
    code, out = cineml_cli("run", toy_project)
    assert code == 1, out
    assert "[bold]kept[/bold] as typed" in out and "warning: a [/closing] tag" in out
    assert "Error: [train] inception = [/x] is wrong" in out and "Traceback" not in out


def test_file_system_errors_are_one_paragraph(tmp_path, cineml_cli):
    (tmp_path / "a-file").write_text("not a folder")
    code, out = cineml_cli("new", "film", "--dir", tmp_path / "a-file" / "projects")
    assert code == 1 and "Traceback" not in out, out
    assert out.startswith("Error:") and "a-file" in out and "Check that the folder exists" in out


def test_usage_error_exit_2(cineml_cli):
    code, out = cineml_cli("run")
    assert code == 2 and "Missing argument" in out


def test_new_scaffolds_every_stage_and_refuses_overwrite(tmp_path, cineml_cli):
    code, out = cineml_cli("new", "my-film", "--dir", tmp_path)
    assert code == 0, out
    assert "renders a 12 s demo film of its own" in out and "delete the [source] table" in out
    manifest = tmp_path / "my-film" / "project.toml"
    text = manifest.read_text()
    for table in ("[project]", "[source]", "[extract]", "[[preprocess]]", "[train]", "[generate]", "[[compose]]"):
        assert table in text
    code, out = cineml_cli("new", "my-film", "--dir", tmp_path)
    assert code == 1 and "already exists" in out
    assert TEMPLATE.count("#") > 10  # commented for artists


def test_plugins_json(cineml_cli):
    code, out = cineml_cli("plugins", "--json")
    assert code == 0
    rows = json.loads(out)
    assert {r["name"] for r in rows} >= {"fps", "letterbox", "stylegan2", "layouts", "animation", "synthetic"}
    assert all(r["version"] and r["distribution"] == "cineml" for r in rows)


def test_layouts_lists_project_local_layout(toy_project, cineml_cli):
    code, out = cineml_cli("layouts", "--project", toy_project, "--json")
    assert code == 0, out
    stack = next(r for r in json.loads(out) if r["name"] == "stack")
    assert stack["plugin"] == "toy_plugins.py" and stack["options"][0]["name"] == "gap"


def test_new_with_a_spaced_name_runs_and_odd_names_are_refused(tmp_path, cineml_cli):
    import tomllib

    code, out = cineml_cli("new", "Det perfekte menneske", "--dir", tmp_path)
    assert code == 0 and "cineml run '" in out, out
    manifest = tmp_path / "Det perfekte menneske" / "project.toml"
    assert tomllib.loads(manifest.read_text())["project"]["name"] == "Det perfekte menneske"
    for name in ('Leth "1967"', "a/b", "C:\\films"):
        code, out = cineml_cli("new", name, "--dir", tmp_path)
        assert code == 1 and "use a plain name" in out, (name, out)


def test_network_errors_get_no_folder_advice():
    from cineml.cli import _describe

    assert _describe(ConnectionError("webhook down")) == "webhook down. Run again with --verbose for details."
    assert "Check that the folder exists" in _describe(PermissionError(13, "Permission denied", "/art/x.png"))


def test_global_flags_work_after_the_command_too(toy_project, cineml_cli):
    code, out = cineml_cli("run", toy_project)
    assert code == 0 and "stage(s) ran" in out
    code, out = cineml_cli("run", toy_project, "--quiet")
    assert code == 0 and "stage(s) ran" not in out and "plan" not in out  # quiet, as `cineml -q run`
    code, out = cineml_cli("run", toy_project, "-S", "train.kimg=-1", "-v")
    assert code == 1 and "Traceback" in out  # verbose, as `cineml -v run`


def test_a_plugin_command_with_its_own_q_option_keeps_it(cineml_cli):
    import click

    from cineml.cli import cli

    @click.command("jpeg")  # as a plugin's register_commands would add it
    @click.option("-q", "quality", type=int, default=90)
    def jpeg(quality):
        click.echo(f"quality {quality}")

    cli.add_command(jpeg)
    try:
        code, out = cineml_cli("jpeg", "-q", "75")
    finally:
        cli.commands.pop("jpeg")
    assert code == 0 and "quality 75" in out, out


def test_new_with_a_film_puts_it_in_the_project_with_settings_that_fit(tmp_path, cineml_cli):
    """The newcomer's path: `cineml new NAME --film FILM` on a colour and on a black-and-white film (stored in a
    colour format, as digitised prints are), then the scaffold runs as written (shortened) and never touches
    the film."""
    from films import ffmpeg, make_film

    from cineml.manifest import read_toml

    (tmp_path / "in").mkdir()
    colour = make_film(tmp_path / "in" / "Colour Film.mp4", seconds=2, fps=12)
    grey = tmp_path / "in" / "leth 1967.mov"
    ffmpeg("-i", str(colour), "-vf", "hue=s=0", "-pix_fmt", "yuv420p", str(grey))
    for film, black_and_white in ((colour, False), (grey, True)):
        code, out = cineml_cli("new", film.stem, "--dir", tmp_path / "projects", "--film", film)
        assert code == 0, out
        root = tmp_path / "projects" / film.stem
        data = read_toml(root / "project.toml")
        assert data["project"]["source"] == f"footage/{film.name}" and "source" not in data  # no demo film
        assert (root / "footage" / film.name).read_bytes() == film.read_bytes()
        assert data["preprocess"][0]["grayscale"] is black_and_white
        assert ("the film is black and white" if black_and_white else "the film is in colour") in out
        assert (data["preprocess"][0]["size"], data["train"]["config"], data["train"]["kimg"]) == (32, "tiny", 16)
        assert "no CUDA GPU here" in out  # these machines; a GPU gets the auto preset at up to 512 px
    code, out = cineml_cli("run", root / "project.toml", "-S", "train.kimg=0.02", "-S", "train.snapshot_kimg=0.01",
                           "-S", "generate.seeds=0-3")
    assert code == 0, out
    assert (root / "footage" / grey.name).read_bytes() == grey.read_bytes()
    assert {p.name for p in (root / "art").iterdir()} >= {"fakes.mp4", "frames-grid.png", "windows.png"}
    code, out = cineml_cli("new", "again", "--dir", tmp_path / "projects", "--film", tmp_path / "in" / "gone.mp4")
    assert code == 2 and "does not exist" in out
