"""The shipped projects: every manifest validates, and the demo runs every stage end to end."""

import json
import shutil
import subprocess
from pathlib import Path

import imageio_ffmpeg
import pytest

from cineml.manifest import load_project
from cineml.plugins import load_registry
from cineml.testing import run_project

PROJECTS = Path(__file__).resolve().parent.parent / "projects"


@pytest.mark.parametrize("name", sorted(p.name for p in PROJECTS.iterdir() if (p / "project.toml").exists()))
def test_shipped_manifest_validates(tmp_path, name):
    folder = tmp_path / name
    shutil.copytree(PROJECTS / name, folder, ignore=shutil.ignore_patterns(
        "frames", "train", "generated", "art", "footage", ".cineml", "run.json"))
    project = load_project_with_footage(folder / "project.toml")
    assert project.steps, "a project with no stages"


def load_project_with_footage(manifest: Path):
    """Films are not shipped: stand in an empty file where a manifest expects footage."""
    from cineml.manifest import read_toml

    data = read_toml(manifest)
    if "source" not in data and data.get("project", {}).get("source"):
        film = manifest.parent / data["project"]["source"]
        film.parent.mkdir(parents=True, exist_ok=True)
        film.write_bytes(b"")
    return load_project(manifest, load_registry())


def frame_count(video: Path) -> int:
    proc = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-i", str(video), "-map", "0:v",
                           "-f", "null", "-progress", "pipe:1", "-"], capture_output=True, text=True, check=True)
    return int([line for line in proc.stdout.splitlines() if line.startswith("frame=")][-1].split("=")[1])


def test_demo_runs_every_stage(tmp_path):
    """The demo manifest as shipped, shortened with overrides so the suite stays fast."""
    folder = tmp_path / "demo"
    shutil.copytree(PROJECTS / "demo", folder, ignore=shutil.ignore_patterns(
        "frames", "train", "generated", "art", "footage", ".cineml", "run.json"))
    record = run_project(folder / "project.toml", overrides=[
        "source.seconds=4", "train.kimg=0.12", "train.snapshot_kimg=0.04", 'generate.0.seeds="0-11"',
        'generate.0.walk={keyframes = "0-3", seconds = 2, fps = 12}', 'generate.1.input="frames/00000?.jpg"',
        "generate.1.steps=3", "generate.1.first_steps=5"])
    assert record["status"] == "finished" and all(s["ran"] for s in record["stages"])
    assert len(list((folder / "frames").glob("*.jpg"))) == 48  # 4 s at 12 fps
    fakes = sorted((folder / "train").glob("fakes*.png"))
    assert len(fakes) == 4  # untrained + 3 snapshots
    assert len(list((folder / "generated/samples").glob("seed*.png"))) == 12
    assert len(list((folder / "generated/projection").glob("0*.png"))) == 9  # frames 1-9 re-made
    art = folder / "art"
    for name in ("generated-grid.png", "filmstrip.png", "windows.png", "shots.png"):
        assert (art / name).stat().st_size > 1000
    assert len(json.loads((folder / "frames" / "shots.json").read_text())["shots"]) == 6  # the film's six shots
    assert frame_count(art / "fakes.mp4") == 4
    assert frame_count(art / "windows.mp4") == 2  # 24 walk frames over 12 windows
    assert frame_count(art / "film-and-gan.mp4") == 9  # frames 1-9 beside their re-made selves
    assert json.loads((folder / "run.json").read_text())["status"] == "finished"


def test_cineml_new_scaffold_runs(tmp_path, cineml_cli):
    """`cineml new` writes a project that runs as it is (shortened here with -S overrides)."""
    code, out = cineml_cli("new", "fresh", "--dir", tmp_path)
    assert code == 0, out
    manifest = tmp_path / "fresh" / "project.toml"
    code, out = cineml_cli("-q", "run", manifest, "-S", "source.seconds=2", "-S", "train.kimg=0.02",
                        "-S", "train.snapshot_kimg=0.01")
    assert code == 0, out
    art = tmp_path / "fresh" / "art"
    assert frame_count(art / "fakes.mp4") == 3  # untrained + 2 snapshots
    assert (art / "frames-grid.png").stat().st_size > 500
    assert len(list((tmp_path / "fresh/generated").glob("seed*.png"))) == 16
    assert (art / "windows.png").stat().st_size > 1000


TORCHRUN_PROJECT = """
[project]
source = "footage/film.mp4"
[source]
use = "synthetic"
seconds = 2
width = 128
height = 96
[extract]
use = "fps"
fps = 8
[[preprocess]]
use = "letterbox"
size = 16
grayscale = true
[train]
use = "stylegan2"
config = "tiny"
kimg = 0.032
snapshot_kimg = 0.016
batch = 8
device = "cpu"
"""


def test_torchrun_runs_a_whole_project_in_one_command(tmp_path):
    """Every torchrun process runs the CLI; rank 0 alone makes the film, the frames and the outputs."""
    import os
    import sys

    (tmp_path / "project.toml").write_text(TORCHRUN_PROJECT)
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "CINEML_LOAD_PLUGINS": ""}
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc-per-node", "2", "-m", "cineml", "run",
                           str(tmp_path / "project.toml")], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Training with 2 processes" in proc.stdout + proc.stderr
    assert (proc.stdout + proc.stderr).count("Done:") == 1  # ranks > 0 say nothing
    assert sorted(p.name for p in (tmp_path / "train").glob("fakes*.png")) == [
        "fakes000000.png", "fakes000000_016.png", "fakes000000_032.png"]
    state = json.loads((tmp_path / ".cineml/state.json").read_text())
    assert set(state) == {"source", "extract", "train"}
    assert not list((tmp_path / ".cineml/staging").iterdir())
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "finished"


def test_raising_kimg_continues_training_instead_of_starting_over(tmp_path, cineml_cli):
    """The most common thing an artist does with a trained network: train it longer."""
    code, out = cineml_cli("new", "longer", "--dir", tmp_path)
    manifest = tmp_path / "longer" / "project.toml"
    short = ["-S", "source.seconds=2", "-S", "train.snapshot_kimg=0.01", "--to", "train"]
    code, out = cineml_cli("-q", "run", manifest, "-S", "train.kimg=0.02", *short)
    assert code == 0, out
    train = tmp_path / "longer" / "train"
    first = (train / "fakes000000_010.png").read_bytes()
    code, out = cineml_cli("run", manifest, "-S", "train.kimg=0.04", *short)
    assert code == 0, out
    assert "changed: kimg: 0.02 -> 0.04 (continuing from the previous output)" in out
    assert "Resuming training from network-snapshot-000000_020.safetensors" in out
    assert (train / "fakes000000_010.png").read_bytes() == first  # not trained again
    stats = [json.loads(line)["kimg"] for line in (train / "stats.jsonl").read_text().splitlines()]
    assert stats == [0.01, 0.02, 0.03, 0.04]
    # --force starts over, even when only kimg changed.
    code, out = cineml_cli("run", manifest, "-S", "train.kimg=0.03", "--force", "train", *short)
    assert code == 0 and "continuing" not in out and "Resuming" not in out, out
    # A setting that shapes the training (not one that continues it) starts over, as before.
    code, out = cineml_cli("run", manifest, "-S", "train.kimg=0.04", "-S", "train.mirror=true", *short)
    assert code == 0 and "continuing" not in out and "Resuming" not in out, out
