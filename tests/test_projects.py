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
    import tomllib

    data = tomllib.loads(manifest.read_text())
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
        "source.seconds=4", "train.kimg=0.12", "train.snapshot_kimg=0.04", 'generate.seeds="0-11"',
        'generate.walk={keyframes = "0-3", seconds = 2, fps = 12}'])
    assert record["status"] == "finished" and all(s["ran"] for s in record["stages"])
    assert len(list((folder / "frames").glob("*.jpg"))) == 48  # 4 s at 12 fps
    fakes = sorted((folder / "train").glob("fakes*.png"))
    assert len(fakes) == 4  # untrained + 3 snapshots
    assert len(list((folder / "generated").glob("seed*.png"))) == 12
    art = folder / "art"
    for name in ("generated-grid.png", "filmstrip.png", "windows.png"):
        assert (art / name).stat().st_size > 1000
    assert frame_count(art / "fakes.mp4") == 4
    assert frame_count(art / "windows.mp4") == 2  # 24 walk frames over 12 windows
    assert json.loads((folder / "run.json").read_text())["status"] == "finished"


def test_cineml_new_scaffold_runs(tmp_path, cli_run):
    """`cineml new` writes a project that runs as it is (shortened here with -S overrides)."""
    code, out = cli_run("new", "fresh", "--dir", tmp_path)
    assert code == 0, out
    manifest = tmp_path / "fresh" / "project.toml"
    code, out = cli_run("-q", "run", manifest, "-S", "source.seconds=2", "-S", "train.kimg=0.02",
                        "-S", "train.snapshot_kimg=0.01")
    assert code == 0, out
    art = tmp_path / "fresh" / "art"
    assert frame_count(art / "fakes.mp4") == 3  # untrained + 2 snapshots
    assert (art / "frames-grid.png").stat().st_size > 500
