"""The pipeline: skip, re-run, --force, --only/--from/--to, --dry-run, atomic outputs, run.json."""

import json
import os
import subprocess
import sys

import pytest

from cineml import CinemlError
from cineml.manifest import load_project
from cineml.pipeline import Pipeline
from cineml.plugins import load_registry


def plan_of(manifest, *overrides, **kw):
    project = load_project(manifest, load_registry(), overrides)
    return {p.step.stage: (p.run, p.reason) for p in Pipeline(project, load_registry_for(project)).plan(**kw)}


def load_registry_for(project):
    reg = load_registry()
    reg.load_files(project.plugins)
    return reg


def run(manifest, *overrides, **kw):
    reg = load_registry()
    project = load_project(manifest, reg, overrides)
    pipe = Pipeline(project, reg)
    planned = pipe.plan(**kw)
    pipe.run(planned)
    return {p.step.stage: (p.run, p.reason) for p in planned}


def test_first_run_runs_everything_and_writes_outputs(toy_project):
    root = toy_project.parent
    ran = run(toy_project)
    assert all(r for r, _ in ran.values()), ran
    assert (root / "footage/film.txt").read_text().count("\n") == 5
    frames = sorted((root / "frames").glob("*.txt"))
    assert [f.read_text() for f in frames] == [f"FRAME {i}" for i in range(5)]
    assert (root / "art/fakes.txt").read_text() == "fakes000000.png\nfakes000001.png"
    assert (root / "snapshots.log").read_text().splitlines() == ["0.0 fakes000000.png", "1.0 fakes000001.png"]
    record = json.loads((root / "run.json").read_text())
    assert record["status"] == "finished"
    assert [s["stage"] for s in record["stages"]] == ["source", "extract", "train", "compose:fakes.txt"]
    assert record["plugins"]["toy_plugins.py"]["version"].startswith("local-")
    assert all(s["fingerprint"] and s["seconds"] >= 0 for s in record["stages"])
    stages = {s["stage"]: s for s in record["stages"]}  # resolved settings, defaults included
    assert stages["train"]["options"] == {"kimg": 1.0, "snapshots": 2, "resume": None}
    assert stages["extract"]["chain"][0]["use"] == "upper" and "options" in stages["extract"]["chain"][0]
    assert stages["compose:fakes.txt"]["options"]["every"] == 1
    assert not list((root / ".cineml/staging").iterdir())  # staging cleaned after success


def test_second_run_skips_everything(toy_project):
    run(toy_project)
    second = run(toy_project)
    assert second == {s: (False, "up to date") for s in second}


def test_changed_setting_reruns_that_stage_and_everything_downstream(toy_project):
    run(toy_project)
    again = run(toy_project, "preprocess.0.suffix=!")
    assert again["source"] == (False, "up to date")
    assert again["extract"][0] and "preprocess chain changed" in again["extract"][1]
    assert again["train"] == (True, "upstream extract changed")
    assert again["compose:fakes.txt"] == (True, "upstream train changed")
    assert (toy_project.parent / "frames/000001.txt").read_text() == "FRAME 0!"


def test_reason_names_the_changed_option(toy_project):
    run(toy_project)
    plan = plan_of(toy_project, "train.snapshots=3")
    assert plan["train"] == (True, "changed: snapshots: 2 -> 3")
    assert plan["extract"] == (False, "up to date")


def test_an_option_a_newer_plugin_adds_reruns_nothing_until_it_is_set(tmp_path, monkeypatch):
    """Upgrading CineML (or a plugin) that declares a new option, at its default, keeps every stage up to date."""
    from films import make_film

    from cineml.api import Option
    from cineml_plugins.extract_fps import FpsExtractor

    make_film(tmp_path / "film.mp4", frames=10)
    manifest = tmp_path / "project.toml"
    manifest.write_text('[project]\nsource = "film.mp4"\n\n[extract]\nfps = 5\n')
    run(manifest)
    monkeypatch.setattr(FpsExtractor, "options", (*FpsExtractor.options, Option("sharpen", bool, False, "New.")))
    assert plan_of(manifest)["extract"] == (False, "up to date")
    assert plan_of(manifest, "extract.sharpen=true")["extract"] == (True, "changed: sharpen: None -> True")
    run(manifest, "extract.sharpen=true")
    assert plan_of(manifest)["extract"] == (True, "changed: sharpen: True -> False")  # back to the default: a change


def test_edited_footage_reruns_extract(toy_project):
    film = toy_project.parent / "footage/film.txt"
    film.parent.mkdir()
    film.write_text("a\nb\n")
    toy_project.write_text(toy_project.read_text().replace('[source]\nuse = "textfilm"\nframes = 5\n', ""))
    run(toy_project)
    assert plan_of(toy_project)["extract"] == (False, "up to date")
    film.write_text("other\n")
    plan = plan_of(toy_project)
    assert "source" not in plan
    assert plan["extract"] == (True, "changed: the film changed")


def test_missing_output_reruns(toy_project):
    run(toy_project)
    (toy_project.parent / "art/fakes.txt").unlink()
    plan = plan_of(toy_project)
    assert plan["compose:fakes.txt"] == (True, "output missing (art/fakes.txt)")
    assert plan["train"] == (False, "up to date")


def test_force_only_from_to(toy_project):
    run(toy_project)
    assert plan_of(toy_project, force=("train",))["train"] == (True, "forced")
    forced = plan_of(toy_project, force=("train",))
    assert forced["compose:fakes.txt"] == (True, "upstream train re-runs; runs only if its output changes")
    assert {s for s, (r, _) in plan_of(toy_project, force=True, only=("extract",)).items() if r} == {"extract"}
    assert {s for s, (r, _) in plan_of(toy_project, force=True, start="train").items() if r} == \
        {"train", "compose:fakes.txt"}
    assert {s for s, (r, _) in plan_of(toy_project, force=True, stop="extract").items() if r} == \
        {"source", "extract"}
    assert {s for s, (r, _) in plan_of(toy_project, force=True, only=("preprocess",)).items() if r} == {"extract"}


def test_unknown_stage_name_is_a_clear_error(toy_project):
    import pytest

    from cineml import CinemlError

    with pytest.raises(CinemlError, match="No stage named 'trian' in this project. Did you mean 'train'?"):
        plan_of(toy_project, only=("trian",))


def test_crash_mid_stage_leaves_no_output_that_looks_complete_and_resumes(toy_project):
    root = toy_project.parent
    env = {**os.environ, "CRASH_AFTER": "3", "CINEML_LOAD_PLUGINS": ""}
    proc = subprocess.run([sys.executable, "-m", "cineml", "-q", "run", str(toy_project)], env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 9, proc.stderr  # died like kill -9 inside extract
    assert (root / "footage/film.txt").exists()  # the stage before it completed
    assert not (root / "frames").exists()  # never a half-written frames folder in place
    staging = list((root / ".cineml/staging").glob("extract-*"))
    assert len(staging) == 1 and len(list(staging[0].glob("*.txt"))) == 3  # partial work kept for resume
    state = json.loads((root / ".cineml/state.json").read_text())
    assert "source" in state and "extract" not in state
    assert plan_of(toy_project)["extract"] == (True, "never ran (resumes its interrupted run)")  # --dry-run says so
    ran = run(toy_project)
    assert ran["source"] == (False, "up to date")
    assert ran["extract"] == (True, "never ran (resumes its interrupted run)")
    assert len(list((root / "frames").glob("*.txt"))) == 5


def test_failed_stage_records_failure_in_run_json(toy_project):
    import pytest

    root = toy_project.parent
    (root / "toy_plugins.py").write_text((root / "toy_plugins.py").read_text().replace(
        'ctx.output.write_text(ctx.options["sep"]', 'raise RuntimeError("boom")\n        ctx.output.write_text('
        'ctx.options["sep"]') + """

@hookimpl
def run_failed(project, record, error):
    (project.root / "failed.log").write_text(f"{record['status']} {error}")
""")
    with pytest.raises(RuntimeError, match="boom"):
        run(toy_project)
    record = json.loads((root / "run.json").read_text())
    assert record["status"] == "failed" and "boom" in record["error"]
    assert (root / "failed.log").read_text() == "failed boom"  # the hook saw the recorded failure
    assert not (root / "art/fakes.txt").exists()


def test_editing_a_local_plugin_file_reruns_its_stages(toy_project):
    run(toy_project)
    plugin = toy_project.parent / "toy_plugins.py"
    plugin.write_text(plugin.read_text() + "\n# edited\n")
    plan = plan_of(toy_project)
    assert plan["source"][0] and "plugin toy_plugins.py local-" in plan["source"][1]


def test_glob_input_tracks_its_files(toy_project):
    root = toy_project.parent
    (root / "stills").mkdir()
    for i in range(3):
        (root / "stills" / f"s{i}.png").write_bytes(b"x")
    with toy_project.open("a") as f:
        f.write('\n[[compose]]\nuse = "concat"\ninput = "stills/*.png"\nevery = 2\noutput = "stills.txt"\n')
    run(toy_project)
    assert (root / "art/stills.txt").read_text() == "s0.png\ns2.png"
    (root / "stills" / "s2.png").write_bytes(b"changed")
    plan = plan_of(toy_project)
    assert plan["compose:stills.txt"] == (True, "changed: input files changed")


def test_sampling_count_start_end(toy_project):
    root = toy_project.parent
    (root / "stills").mkdir()
    for i in range(10):
        (root / "stills" / f"s{i}.png").write_bytes(b"x")
    with toy_project.open("a") as f:
        f.write('\n[[compose]]\nuse = "concat"\ninput = "stills/*.png"\nstart = 1\nend = -1\ncount = 3\n'
                'sep = ","\noutput = "s.txt"\n')
    run(toy_project)
    # natural sort (s2 before s10), start/end slice s1..s8, then 3 evenly spaced
    assert (root / "art/s.txt").read_text() == "s1.png,s5.png,s8.png"


def test_only_runs_cannot_leave_stale_art_up_to_date(toy_project):
    """compose run with --only on an old train output must re-run once train is rebuilt."""
    run(toy_project)
    assert run(toy_project, "train.snapshots=3", only=("compose",))["compose:fakes.txt"] == (False, "up to date")
    assert run(toy_project, "train.snapshots=3", only=("train",))["train"][0]
    again = run(toy_project, "train.snapshots=3")
    assert again["compose:fakes.txt"] == (True, "changed: input train changed")  # built from the old train
    art = (toy_project.parent / "art/fakes.txt").read_text()
    assert art.splitlines() == ["fakes000000.png", "fakes000001.png", "fakes000002.png"]
    assert all(not r for r, _ in run(toy_project, "train.snapshots=3").values())


def test_a_glob_into_a_stage_folder_follows_that_stage(toy_project):
    with toy_project.open("a") as f:
        f.write('\n[[compose]]\nuse = "concat"\ninput = "train/fakes*.png"\nsep = ","\noutput = "glob.txt"\n')
    run(toy_project)
    assert (toy_project.parent / "art/glob.txt").read_text() == "fakes000000.png,fakes000001.png"
    ran = run(toy_project, "train.snapshots=3")  # train re-runs in the same run: the glob sees its new files
    assert ran["compose:glob.txt"] == (True, "upstream train changed")
    assert (toy_project.parent / "art/glob.txt").read_text().count(",") == 2
    assert all(not r for r, _ in run(toy_project, "train.snapshots=3").values())  # and not one run behind


def test_a_project_folder_named_like_a_glob_pattern(toy_project, tmp_path):
    import shutil

    root = tmp_path / "Leth [1967] *"
    shutil.copytree(toy_project.parent, root)
    run(root / "project.toml")
    assert (root / "art/fakes.txt").read_text().splitlines() == ["fakes000000.png", "fakes000001.png"]


def test_film_fingerprint_is_its_content_not_its_mtime(tmp_path):
    from cineml.pipeline import file_fingerprint

    film = tmp_path / "film.mp4"
    data = bytearray(os.urandom(5 << 20))
    film.write_bytes(data)
    before = file_fingerprint(film)
    os.utime(film, (1, 1))  # touched, or copied without -p
    assert file_fingerprint(film) == before
    film.write_bytes(data[:-1000])  # trimmed
    assert file_fingerprint(film) != before
    data[:16] = b"\0" * 16  # re-encoded: the header changes
    film.write_bytes(data)
    assert file_fingerprint(film) != before


def test_editing_a_layout_reruns_the_animation_that_uses_it(toy_project):
    root = toy_project.parent
    (root / "my_layouts.py").write_text(
        "import cineml\nfrom cineml import hookimpl\n\n"
        "@cineml.layout('pair', capacity=lambda o: 2)\ndef pair(images):\n"
        "    from PIL import Image\n    out = Image.new('L', (8, 4))\n"
        "    for k, im in enumerate(images):\n        out.paste(im, (4 * k, 0))\n    return out\n\n"
        "@hookimpl\ndef register_layouts(register):\n    register(pair)\n")
    toy_project.write_text(toy_project.read_text().replace('plugins = ["toy_plugins.py"]',
                                                           'plugins = ["toy_plugins.py", "my_layouts.py"]')
                           + '\n[[compose]]\nuse = "animation"\ninput = "fakes"\nlayout = "pair"\nfps = 2\n'
                             'output = "pair.gif"\n')
    run(toy_project)
    assert (root / "art/pair.gif").exists()
    (root / "my_layouts.py").write_text((root / "my_layouts.py").read_text() + "# edited\n")
    plan = plan_of(toy_project)
    assert plan["compose:pair.gif"] == (True, "changed: layout plugin changed")
    assert plan["compose:fakes.txt"] == (False, "up to date")


def test_an_empty_stage_range_is_an_error(toy_project):
    import pytest

    from cineml import CinemlError

    with pytest.raises(CinemlError, match="--from train --to extract selects no stage; stages run in this order"):
        plan_of(toy_project, start="train", stop="extract")


def test_a_failing_observer_plugin_does_not_stop_the_run(toy_project):
    root = toy_project.parent
    (root / "observer.py").write_text(
        "from cineml import hookimpl\n\n"
        "@hookimpl\ndef stage_finished(project, stage, output, seconds):\n    raise ConnectionError('webhook down')\n\n"
        "@hookimpl\ndef snapshot_written(project, kimg, checkpoint, fakes):\n"
        "    raise ConnectionError('webhook down')\n")
    toy_project.write_text(toy_project.read_text().replace('plugins = ["toy_plugins.py"]',
                                                           'plugins = ["observer.py", "toy_plugins.py"]'))
    reg = load_registry()
    project = load_project(toy_project, reg)
    warnings = []
    pipe = Pipeline(project, reg, warn=warnings.append)
    assert pipe.run(pipe.plan())["status"] == "finished"
    assert (root / "art/fakes.txt").exists()
    assert (root / "snapshots.log").read_text().count("fakes") == 2  # the other plugin's hook still ran
    assert any("'observer.py' failed in its stage_finished hook (ConnectionError: webhook down)" in w
               for w in warnings), warnings
    assert any("snapshot_written" in w for w in warnings)


def test_a_second_run_on_the_same_project_is_refused_while_one_works(toy_project):
    import fcntl

    import pytest

    from cineml import CinemlError

    lock = toy_project.parent / ".cineml/lock"
    lock.parent.mkdir()
    with open(lock, "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        held.write("pid 4242 since 2026-11-25T10:00:00")
        held.flush()
        with pytest.raises(CinemlError, match=r"Another cineml run is working on .*\(pid 4242"):
            run(toy_project)
    assert run(toy_project)["train"][0]  # free again


def test_a_symlinked_output_folder_keeps_its_link(toy_project, tmp_path):
    big = tmp_path / "big-disk" / "frames"
    big.mkdir(parents=True)
    (toy_project.parent / "frames").symlink_to(big)
    run(toy_project)
    frames = toy_project.parent / "frames"
    assert frames.is_symlink() and len(list(big.glob("*.txt"))) == 5
    run(toy_project, "extract.every=2")  # replaced again: through the link, nothing left beside it
    assert frames.is_symlink() and len(list(big.glob("*.txt"))) == 3
    assert [p.name for p in big.parent.iterdir()] == ["frames"]


def test_an_unreadable_state_file_is_reported(toy_project):
    run(toy_project)
    (toy_project.parent / ".cineml/state.json").write_text("{ torn")
    reg = load_registry()
    with pytest.raises(CinemlError, match="a file it did not write"):  # no record of who wrote the film: keep it
        Pipeline(load_project(toy_project, reg), reg, warn=lambda msg: None).plan()
    (toy_project.parent / "footage/film.txt").unlink()
    warnings = []
    plan = Pipeline(load_project(toy_project, reg), reg, warn=warnings.append).plan()
    assert all(p.reason == "never ran" for p in plan)
    assert "state.json is unreadable" in warnings[0]


def test_replacing_a_file_an_option_names_reruns_the_step(toy_project):
    root = toy_project.parent
    (root / "sep.txt").write_text("one")
    run(toy_project, 'compose.0.sep="sep.txt"')  # a string option that names a file in the project
    assert plan_of(toy_project, 'compose.0.sep="sep.txt"')["compose:fakes.txt"] == (False, "up to date")
    (root / "sep.txt").write_text("two, longer")
    assert plan_of(toy_project, 'compose.0.sep="sep.txt"')["compose:fakes.txt"] == \
        (True, "changed: the file sep names changed")


def test_source_stage_never_overwrites_a_film_it_did_not_write(toy_project):
    """The newcomer's half-step: own film copied in, scaffold's [source] table left in place."""
    root = toy_project.parent
    film = root / "footage/film.txt"
    film.parent.mkdir()
    film.write_text("my own film\n")
    with pytest.raises(CinemlError) as err:
        run(toy_project)
    msg = str(err.value)
    assert "would replace footage/film.txt, a file it did not write" in msg
    assert "delete the [source] table" in msg and str(toy_project) in msg
    assert film.read_text() == "my own film\n"
    assert not (root / "frames").exists() and not (root / ".cineml/state.json").exists()  # refused before any work
    with pytest.raises(CinemlError):  # --dry-run says so too, before a real run could
        plan_of(toy_project)


def test_source_stage_refuses_a_film_swapped_in_after_it_ran(toy_project):
    root = toy_project.parent
    film = root / "footage/film.txt"
    run(toy_project)
    assert run(toy_project, "source.frames=7")["source"][0]  # its own film: re-rendered freely
    assert film.read_text().count("\n") == 7
    film.write_text("my own film\n")  # the artist drops their film over the rendered one
    for kw in ({"force": ("source",)}, {}):
        overrides = () if kw else ("source.frames=3",)
        with pytest.raises(CinemlError, match="a file it did not write"):
            run(toy_project, *overrides, **kw)
        assert film.read_text() == "my own film\n"
    film.unlink()
    assert run(toy_project)["source"] == (True, "output missing (footage/film.txt)")


def test_cli_refuses_to_render_over_the_artists_film(tmp_path):
    """`cineml new`, the film copied to footage/, [source] forgotten: exit 1, the film byte-identical."""
    from cineml.testing import invoke_cli

    code, out = invoke_cli("new", "film", "--dir", tmp_path)
    assert code == 0, out
    footage = tmp_path / "film/footage"
    footage.mkdir()
    film = footage / "film.mp4"
    film.write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 64)
    before = film.read_bytes()
    code, out = invoke_cli("run", tmp_path / "film/project.toml")
    assert code == 1
    assert "would replace footage/film.mp4" in " ".join(out.split())
    assert film.read_bytes() == before


def test_force_after_an_interrupted_run_starts_over(toy_project):
    root = toy_project.parent
    env = {**os.environ, "CRASH_AFTER": "3", "CINEML_LOAD_PLUGINS": ""}
    subprocess.run([sys.executable, "-m", "cineml", "-q", "run", str(toy_project)], env=env, capture_output=True)
    (staging,) = (root / ".cineml/staging").glob("extract-*")
    (staging / "leftover.txt").write_text("from the interrupted run")
    ran = run(toy_project, force=("extract",))
    assert ran["extract"] == (True, "forced")
    assert not (root / "frames/leftover.txt").exists()  # nothing of the interrupted run's work survives
    assert len(list((root / "frames").glob("*.txt"))) == 5


def test_finishing_a_step_keeps_the_staging_of_a_step_whose_name_starts_the_same(toy_project):
    root = toy_project.parent
    toy_project.write_text(toy_project.read_text() + '\n[[compose]]\nuse = "concat"\ninput = "fakes"\n'
                                                      'output = "fakes.txt-2.txt"\n')
    run(toy_project, only=("source", "extract", "train"))
    other = root / ".cineml/staging/compose_fakes.txt-2.txt-0123456789abcdef"
    other.mkdir(parents=True)  # an interrupted run of the second step
    run(toy_project, only=("compose:fakes.txt",))
    assert other.exists()


def test_a_new_file_in_a_folder_an_option_names_reruns_the_step(toy_project):
    """resume = "nets" is a folder: its newest checkpoint is what the step uses."""
    root = toy_project.parent
    (root / "nets").mkdir()
    (root / "nets/network-snapshot-000010.safetensors").write_text("one")
    run(toy_project, 'train.resume="nets"')
    assert plan_of(toy_project, 'train.resume="nets"')["train"] == (False, "up to date")
    (root / "nets/network-snapshot-000020.safetensors").write_text("two")
    assert plan_of(toy_project, 'train.resume="nets"')["train"] == (True, "changed: the folder resume names changed")


def test_a_linked_output_folder_holding_the_artists_files_is_never_emptied(toy_project, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    (other / "precious.txt").write_text("keep")
    (toy_project.parent / "frames").symlink_to(other)
    with pytest.raises(CinemlError, match=r"frames is a link to .*other, which holds files CineML did not "
                                          r"write \(precious.txt\)"):
        run(toy_project)
    assert (other / "precious.txt").read_text() == "keep" and [p.name for p in other.iterdir()] == ["precious.txt"]
    (other / "precious.txt").unlink()  # an empty folder: CineML may fill it, and replace it later
    run(toy_project)
    assert len(list(other.glob("*.txt"))) == 5
    run(toy_project, "extract.every=2")
    assert len(list(other.glob("*.txt"))) == 3


def test_an_option_naming_a_stage_folder_is_up_to_date_on_the_next_run(toy_project):
    """resume = "frames" names the project's own stage folder: its stage's fingerprint stands for it (a listing
    taken while planning would be stale once extraction ran, and re-run the step every second time)."""
    run(toy_project, 'train.resume="frames"')
    assert plan_of(toy_project, 'train.resume="frames"')["train"] == (False, "up to date")


def test_a_forced_stage_that_makes_the_same_output_re_runs_nothing_downstream(toy_project):
    """--force extract re-extracts; training (hours, on a real film) re-runs only if the frames changed."""
    run(toy_project)
    plan = plan_of(toy_project, force=("extract",))
    assert plan["train"] == (True, "upstream extract re-runs; runs only if its output changes")
    run(toy_project, force=("extract",))
    record = json.loads((toy_project.parent / "run.json").read_text())
    assert [(s["stage"], s["ran"], s["reason"]) for s in record["stages"]] == [
        ("source", False, "up to date"), ("extract", True, "forced"), ("train", False, "up to date"),
        ("compose:fakes.txt", False, "up to date")]


def test_a_forced_stage_that_makes_a_different_output_re_runs_downstream(toy_project, tmp_path):
    """The same, with an extractor whose output differs each time (the frames carry the run's count)."""
    from cineml import Extractor, hookimpl

    class Counting(Extractor):
        name = "counting"
        runs = 0

        def extract(self, ctx, chain):
            Counting.runs += 1
            ctx.output.mkdir(parents=True, exist_ok=True)
            (ctx.output / "000001.txt").write_text(f"take {Counting.runs}")

    class Plugin:
        @hookimpl
        def register_extractors(self, register):
            register(Counting())

    from cineml.testing import run_project

    run_project(toy_project, ["extract.use=counting"], plugins=[Plugin()])
    record = run_project(toy_project, ["extract.use=counting"], plugins=[Plugin()], force=("extract",))
    assert {s["stage"]: s["ran"] for s in record["stages"]} == {  # the toy trainer's fakes depend only on the
        "source": False, "extract": True, "train": True, "compose:fakes.txt": False}  # frame count: the same


GENERATE_STEPS = """
[[generate]]
use = "numbered"
name = "bright"
level = 200

[[generate]]
use = "numbered"
name = "half"
level = 100
every = 2

[[compose]]
use = "concat"
input = ["bright", "half"]
output = "pairs.txt"
"""


def test_named_generate_steps_have_their_own_folders_and_compose_matches_them_by_frame(toy_project):
    toy_project.write_text(toy_project.read_text() + GENERATE_STEPS)
    root = toy_project.parent
    ran = run(toy_project)
    assert ran["generate:bright"] == (True, "never ran") and ran["generate:half"] == (True, "never ran")
    assert sorted(p.name for p in (root / "generated/bright").glob("*.png")) == [f"{k:06d}.png" for k in range(1, 6)]
    assert sorted(p.name for p in (root / "generated/half").glob("*.png")) == ["000001.png", "000003.png", "000005.png"]
    # matched by frame number (the numbers both have), handed over input after input
    assert (root / "art/pairs.txt").read_text().split("\n") == ["000001.png", "000003.png", "000005.png"] * 2
    plan = plan_of(toy_project, "generate.1.level=50")
    assert plan["generate:half"] == (True, "changed: level: 100 -> 50")
    assert plan["generate:bright"] == (False, "up to date")
    assert plan["compose:pairs.txt"] == (True, "upstream generate:half changed")
    assert plan_of(toy_project, only=["generate"]) == {**plan_of(toy_project), **{
        s: (False, "not selected") for s in ("source", "extract", "train", "compose:fakes.txt", "compose:pairs.txt")}}


@pytest.mark.parametrize("steps, message", [
    ('[[generate]]\nuse = "numbered"\nname = "a"\n\n[[generate]]\nuse = "numbered"\n',
     r"generate\[1\]\.name: missing; every \[\[generate\]\] step needs a name"),
    ('[[generate]]\nuse = "numbered"\nname = "a"\n\n[[generate]]\nuse = "numbered"\nname = "a"\n',
     r"generate\[1\]\.name: 'a' is already the name of generate\[0\]"),
    ('[[generate]]\nuse = "numbered"\nname = "../up"\n', r"generate\[0\]\.name: '\.\./up': use a plain folder name"),
    ('[[generate]]\nuse = "numbered"\nname = "a"\n\n[[compose]]\nuse = "concat"\ninput = "generated"\n'
     'output = "g.txt"\n', r"compose\[1\]\.input: 'generated' comes from the \[generate\] stage, which the manifest "
                           r"does not have \(its \[\[generate\]\] steps are named: use input = 'a'\)"),
    ('[[generate]]\nuse = "numbered"\nname = "a"\n\n[[compose]]\nuse = "concat"\ninput = ["a"]\noutput = "g.txt"\n',
     r"compose\[1\]\.input: \['a'\] is not valid: a list of inputs names two or more"),
])
def test_generate_steps_and_list_inputs_are_checked(toy_project, steps, message):
    toy_project.write_text(toy_project.read_text() + steps)
    with pytest.raises(CinemlError, match=message):
        plan_of(toy_project)


def test_a_list_input_of_unnumbered_images_must_have_equal_lengths(toy_project):
    toy_project.write_text(toy_project.read_text() + GENERATE_STEPS.replace('["bright", "half"]', '["fakes", "half"]'))
    with pytest.raises(CinemlError, match=r"compose\[1\]\.input: a list of inputs is matched image by image, but "
                                          r"they give different numbers of images \('fakes' 2, 'half' 3\)"):
        run(toy_project)
    assert not (toy_project.parent / "art/pairs.txt").exists()
