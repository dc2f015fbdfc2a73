"""Manifest errors name the file, the key path, the bad value and what is expected."""

import pytest

from cineml import CinemlError
from cineml.manifest import load_project
from cineml.plugins import load_registry


def load(manifest, *overrides):
    return load_project(manifest, load_registry(), overrides)


def error_of(manifest, *overrides) -> str:
    with pytest.raises(CinemlError) as info:
        load(manifest, *overrides)
    return str(info.value)


def edit(manifest, old, new):
    text = manifest.read_text()
    assert old in text
    manifest.write_text(text.replace(old, new))


def test_valid_manifest_loads_typed_settings(toy_project):
    project = load(toy_project)
    assert project.name == "toy" and project.root == toy_project.parent
    assert [s.stage for s in project.steps] == ["source", "extract", "train", "compose:fakes.txt"]
    train = project.step("train")
    assert train.options == {"kimg": 1.0, "snapshots": 2, "resume": None} and isinstance(train.options["kimg"], float)
    assert project.step("extract").chain[0][0].name == "upper"
    assert project.source == toy_project.parent / "footage/film.txt"
    assert project.step("compose:fakes.txt").options["every"] == 1


def test_unknown_key_with_suggestion(toy_project):
    edit(toy_project, "[train]\nuse = \"counter\"", "[train]\nuse = \"counter\"\nsnapshot = 3")
    msg = error_of(toy_project)
    assert str(toy_project) in msg and "train.snapshot: unknown option. Did you mean 'snapshots'?" in msg


def test_wrong_type(toy_project):
    msg = error_of(toy_project, 'train.kimg="lots"')
    assert "train.kimg: 'lots' is not valid; expected a number" in msg


def test_bool_is_not_a_number(toy_project):
    assert "expected an integer" in error_of(toy_project, "train.snapshots=true")


def test_out_of_range(toy_project):
    msg = error_of(toy_project, "train.snapshots=0")
    assert "train.snapshots: 0 is out of range; expected an integer >= 1" in msg


def test_missing_file(toy_project):
    edit(toy_project, '[source]\nuse = "textfilm"\nframes = 5\n', "")
    msg = error_of(toy_project)
    assert "project.source: 'footage/film.txt': no such file" in msg
    (toy_project.parent / "footage/film.txt").mkdir(parents=True)  # a folder where the film should be
    msg = error_of(toy_project)
    assert "project.source: 'footage/film.txt' is a folder" in msg and "not a film file" in msg


def test_unknown_implementation_with_suggestion(toy_project):
    edit(toy_project, 'use = "upper"', 'use = "uper"')
    msg = error_of(toy_project)
    assert "preprocess[0].use: no preprocessor named 'uper' is installed. Did you mean 'upper'?" in msg
    assert "Installed: " in msg and "Valid keys" not in msg  # implementations, not keys
    assert "cineml plugins" in msg


def test_unknown_table(toy_project):
    with toy_project.open("a") as f:
        f.write("\n[trian]\nuse = 1\n")
    assert "trian: unknown table. Did you mean 'train'?" in error_of(toy_project)


def test_output_may_not_leave_the_project(toy_project):
    msg = error_of(toy_project, 'compose.0.output="../../escape.txt"')
    assert "compose[0].output: '../../escape.txt' leaves the project's art/ folder" in msg


def test_a_generated_film_may_not_leave_the_project(toy_project):
    # [source] writes the film, so it is an output; a film the artist brings may live anywhere.
    msg = error_of(toy_project, 'project.source="../escaped/film.txt"')
    assert "project.source: '../escaped/film.txt' leaves the project folder" in msg
    assert not (toy_project.parent.parent / "escaped").exists()


def test_output_suffix_checked(toy_project):
    assert "'concat' writes .txt files" in error_of(toy_project, 'compose.0.output="x.mp4"')


def test_missing_required_and_use(toy_project):
    edit(toy_project, 'output = "fakes.txt"', "")
    assert "compose[0].output: missing" in error_of(toy_project)


def test_invalid_toml_names_the_file(toy_project):
    toy_project.write_text("[train\n")
    msg = error_of(toy_project)
    assert str(toy_project) in msg and "not valid TOML" in msg


def test_missing_manifest(tmp_path):
    assert "no such project file" in error_of(tmp_path / "nope.toml")


def test_stage_dependencies(toy_project):
    edit(toy_project, '[extract]\nuse = "lines"\n\n[[preprocess]]\nuse = "upper"\n', "")
    assert "train: needs the [extract] stage" in error_of(toy_project)


def test_override_syntax_errors(toy_project):
    assert "expected key=value" in error_of(toy_project, "train.kimg")
    assert "no 5 at that point" in error_of(toy_project, "preprocess.5.suffix=x")


def test_overrides_apply(toy_project):
    project = load(toy_project, "train.kimg=2", "preprocess.0.suffix=!", "project.seed=7")
    assert project.step("train").options["kimg"] == 2.0
    assert project.step("extract").chain[0][1]["suffix"] == "!"
    assert project.seed == 7


def test_duplicate_compose_outputs(toy_project):
    with toy_project.open("a") as f:
        f.write('\n[[compose]]\nuse = "concat"\noutput = "fakes.txt"\n')
    assert "compose[1].output: 'fakes.txt' is already written by compose[0]" in error_of(toy_project)


def test_local_plugin_file_missing(toy_project):
    edit(toy_project, '"toy_plugins.py"', '"nope.py"')
    assert "plugins: 'nope.py': no such file" in error_of(toy_project)


def test_choices_suggest(tmp_path):
    from cineml import Option
    from cineml.manifest import validate_options

    opts = (Option("mode", str, "day", "Look.", choices=("day", "night")),)
    with pytest.raises(CinemlError, match=r"x.mode: 'nigth' is not valid; expected one of 'day', 'night'. "
                                          r"Did you mean 'night'\?"):
        validate_options(opts, {"mode": "nigth"}, "x", tmp_path)
    assert validate_options(opts, {}, "x", tmp_path) == {"mode": "day"}


def test_values_an_artist_can_mistype(toy_project):
    assert ("compose[0].use: ['concat'] is not valid; expected the name"
            in error_of(toy_project, 'compose.0.use=["concat"]'))
    assert "train.kimg: nan is not valid" in error_of(toy_project, "train.kimg=nan")
    assert "finite" in error_of(toy_project, "train.kimg=inf")
    # An integer or a date typed for a text option is the text as typed (-S title=1967).
    project = load(toy_project, "compose.0.sep=1967")
    assert project.step("compose:fakes.txt").options["sep"] == "1967"
    with toy_project.open("a") as f:
        f.write('\n[[compose]]\nuse = "concat"\ninput = "fakes"\noutput = "./fakes.txt"\n')
    assert "compose[1].output: './fakes.txt' is already written by compose[0]" in error_of(toy_project)


def test_overrides_reach_a_single_table_and_reject_empty_keys(toy_project):
    edit(toy_project, "[[preprocess]]", "[preprocess]")  # one table, not an array of them
    assert load(toy_project, "preprocess.0.suffix=!").step("extract").chain[0][1]["suffix"] == "!"
    assert "-S '=5': the key before '=' is empty" in error_of(toy_project, "=5")
    assert "has an empty part" in error_of(toy_project, "train..kimg=5")


def test_plugin_files_load_in_the_order_the_manifest_gives(toy_project):
    from cineml.plugins import load_registry

    root = toy_project.parent
    for name in ("b_first.py", "a_second.py"):
        (root / name).write_text("")
    toy_project.write_text(toy_project.read_text().replace('plugins = ["toy_plugins.py"]',
                                                           'plugins = ["toy_plugins.py", "b_first.py", "a_second.py"]'))
    reg = load_registry()
    project = load_project(toy_project, reg)
    assert [p.name for p in project.plugins] == ["toy_plugins.py", "b_first.py", "a_second.py"]
    local = [name for name, info in reg.plugins.items() if info.version.startswith("local-")]
    assert local == ["toy_plugins.py", "b_first.py", "a_second.py"]


def test_a_misspelt_layout_in_an_option_is_refused_when_the_manifest_is_read(toy_project):
    toy_project.write_text(toy_project.read_text() + '\n[[compose]]\nuse = "animation"\ninput = "fakes"\n'
                                                      'layout = "windowz"\noutput = "w.mp4"\n')
    msg = error_of(toy_project)
    assert "compose[1].layout: no layout named 'windowz' is installed. Did you mean 'windows'?" in msg
    assert "Installed: " in msg


def test_an_error_in_a_dash_s_value_names_the_argument(toy_project):
    msg = error_of(toy_project, "train.snapshots=0")
    assert msg.startswith("-S train.snapshots=0 (overriding project.toml): train.snapshots: 0 is out of range")
    msg = error_of(toy_project, "compose.0.every=0")
    assert msg.startswith("-S compose.0.every=0 (overriding project.toml): compose[0].every: 0 is out of range")
    edit(toy_project, "frames = 5", "frames = 0")  # the file's own mistake: the file is named
    assert error_of(toy_project, "train.snapshots=3").startswith(str(toy_project))


def test_every_manifest_error_is_reported_at_once(toy_project):
    edit(toy_project, "frames = 5", "frames = 5\nframez = 3")  # a typo
    edit(toy_project, 'use = "counter"', 'use = "counter"\nkimg = "long"')  # a wrong type
    edit(toy_project, 'output = "fakes.txt"', 'output = "fakes.txt"\nevery = 0')  # a bad value
    lines = error_of(toy_project).splitlines()
    assert len(lines) == 3, lines
    assert "source.framez: unknown option. Did you mean 'frames'?" in lines[0]
    assert "train.kimg: 'long' is not valid; expected a number" in lines[1]
    assert "compose[0].every: 0 is out of range" in lines[2]
    assert all(line.startswith(str(toy_project)) for line in lines)


def test_an_error_that_stops_the_reading_keeps_the_lines_before_it(toy_project):
    edit(toy_project, "[source]", "[sorce]")  # the real cause ...
    msg = error_of(toy_project)  # ... and its consequence: the film is now missing
    assert "sorce: unknown table. Did you mean 'source'?" in msg
    assert "project.source: 'footage/film.txt': no such file" in msg
