"""The film through the GAN: a tiny network trained here re-makes the film's frames (projection), and the
side-by-side video "film | GAN" with the soundtrack. Everything is real: the film, its extraction, the
training steps, the optimisation and the MP4 encode, read back with ffmpeg."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from films import add_sound, make_film
from PIL import Image

from cineml import CinemlError
from cineml.testing import make_context, run_project
from cineml_plugins.stylegan2.generator import load_network
from cineml_plugins.stylegan2.projector import (
    ProjectionGenerator,
    Projector,
    load_discriminator,
    load_target,
    psnr,
)

sys.path.insert(0, str(Path(__file__).parent))
from test_stylegan2_import import reference_pickle  # noqa: E402

FFMPEG = __import__("imageio_ffmpeg").get_ffmpeg_exe()

MANIFEST = """
[project]
source = "film.mp4"
seed = 0

[extract]
fps = 12
format = "png"

[[preprocess]]
use = "letterbox"
size = 16
grayscale = true

[train]
use = "stylegan2"
config = "tiny"
kimg = 0.4
snapshot_kimg = 0.4
batch = 8

[[generate]]
name = "samples"
use = "stylegan2"
seeds = "0-23"

[[generate]]
name = "projection"
use = "projection"
steps = 25
first_steps = 100

[[compose]]
use = "animation"
input = ["frames", "projection"]
layout = "side-by-side"
layout_options = { captions = ["film", "GAN"], tile_width = 64 }
fps = 12
audio = "source"
output = "film-and-gan.mp4"
"""


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-second film with sound (48 frames at 24 fps: 24 at 12 fps), trained on for 0.4 kimg, then re-made."""
    root = tmp_path_factory.mktemp("projection")
    silent = make_film(root / "silent.mp4", frames=48, fps=24, size=(96, 72))
    add_sound(silent, root / "film.mp4", seconds=2.0)
    (root / "project.toml").write_text(MANIFEST)
    record = run_project(root / "project.toml")
    assert record["status"] == "finished", record
    return root


def frames_of(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("[0-9]*.png"))


def test_projected_frames_are_much_closer_to_the_film_than_random_samples(project: Path) -> None:
    made = frames_of(project / "generated/projection")
    film = frames_of(project / "frames")
    assert [p.name for p in made] == [p.name for p in film] and len(made) == 24  # numbered like the frames
    samples = sorted((project / "generated/samples").glob("seed*.png"))
    as_net = [load_target(p, 16, 1) for p in film]
    gained = [psnr(load_target(m, 16, 1), t) for m, t in zip(made, as_net)]
    random = [psnr(load_target(s, 16, 1), t) for s, t in zip(samples, as_net)]
    assert np.mean(gained) > np.mean(random) + 6, (np.mean(gained), np.mean(random))  # measured: 27 vs 13 dB
    record = json.loads((project / "generated/projection/projection.json").read_text())
    assert [e["psnr"] for e in record["frames"]] == pytest.approx(gained, abs=0.01)
    assert [e["start"] for e in record["frames"]] == ["cold"] + ["warm"] * 23  # one shot: one cold start
    latents = np.load(project / "generated/projection/latents.npy")
    G = load_network("latest", project / "train", project).G
    assert latents.shape == (24, G.num_ws, G.w_dim) and latents.dtype == np.float32
    with torch.no_grad():  # the latents re-make the saved images exactly
        again = G.synthesis(torch.from_numpy(latents[:2]), noise_mode="const")
    again = (again * 127.5 + 128).clamp(0, 255).to(torch.uint8).numpy()[:, 0]
    assert np.array_equal(again, np.stack([np.asarray(Image.open(p)) for p in made[:2]]))
    index = json.loads((project / "generated/projection/index.json").read_text())
    film_index = json.loads((project / "frames/index.json").read_text())
    assert [f["time"] for f in index["frames"]] == [f["time"] for f in film_index["frames"]]
    assert not (project / "generated/projection/.latents").exists()


def test_a_warm_start_reaches_the_cold_start_loss_in_a_fraction_of_the_steps(project: Path) -> None:
    G = load_network("latest", project / "train", project).G.eval().requires_grad_(False)
    projector = Projector(G, "w+", 0.1)
    film = frames_of(project / "frames")
    targets = torch.from_numpy(np.stack([load_target(p, 16, 1) for p in film[9:11]])).float().div(127.5).sub(1)
    before, _ = projector.fit(targets[:1], projector.average(1), 100, cold=True)
    _, cold = projector.fit(targets[1:], projector.average(1), 100, cold=True)
    warm_steps = next(s for s in (5, 10, 20, 50, 100) if projector.fit(targets[1:], before, s, cold=False)[1] <= cold)
    assert warm_steps <= 20, warm_steps  # measured: 10 warm steps beat 100 cold ones


def test_the_side_by_side_video_has_a_frame_per_matched_frame_and_the_soundtrack(project: Path) -> None:
    video = project / "art/film-and-gan.mp4"
    probe = subprocess.run([FFMPEG, "-hide_banner", "-i", str(video), "-map", "0:v", "-f", "null", "-",
                            "-progress", "pipe:1"], capture_output=True, text=True)
    frames = int(re.findall(r"^frame=(\d+)", probe.stdout, re.M)[-1])
    assert frames == 24
    assert re.search(r"Stream #0:\d.*: Audio: aac", probe.stderr)
    assert re.search(r"Stream #0:\d.*: Video: h264.*, 132x82", probe.stderr)  # 2 x 64 + a 4 px gutter; 18 px captions


def test_a_kill_mid_projection_resumes_with_nothing_lost(project: Path, tmp_path: Path) -> None:
    root = tmp_path / "again"
    shutil.copytree(project, root, ignore=shutil.ignore_patterns("art", ".cineml"))
    shutil.copytree(project / ".cineml", root / ".cineml")
    shutil.rmtree(root / "generated/projection")
    env = {**os.environ, "CINEML_LOAD_PLUGINS": "", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "cineml", "-q", "run", str(root / "project.toml"), "--only", "generate:projection"]
    proc = subprocess.Popen(command, env=env)
    staging = root / ".cineml/staging"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        made = [p for p in staging.glob("generate_projection*/[0-9]*.png")] if staging.exists() else []
        if len(made) >= 6:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kept = {p.name: p.stat().st_mtime_ns for p in staging.glob("generate_projection*/[0-9]*.png")}
    assert 6 <= len(kept) < 24, len(kept)
    subprocess.run(command, env=env, check=True, timeout=300)
    out = root / "generated/projection"
    assert [p.name for p in frames_of(out)] == [f"{k:06d}.png" for k in range(1, 25)]
    assert {p.name: p.stat().st_mtime_ns for p in frames_of(out) if p.name in kept} == kept  # not made again
    record = json.loads((out / "projection.json").read_text())
    assert len(record["frames"]) == 24 and all(e["psnr"] > 0 for e in record["frames"])
    resumed = np.load(out / "latents.npy")
    subprocess.run([*command, "--force", "generate:projection"], env=env, check=True, timeout=300)  # a clean run
    np.testing.assert_array_equal(resumed, np.load(out / "latents.npy"))  # as if never interrupted


def test_a_reference_pickle_is_projected_the_same_way(project: Path, tmp_path: Path) -> None:
    net = load_network("latest", project / "train", project)
    pkl = reference_pickle(tmp_path, net.G, load_discriminator(net.path, "D"), name="net.pkl")
    impl = ProjectionGenerator()
    out = tmp_path / "out"
    ctx = make_context(project, impl, {"snapshot": str(pkl), "steps": 5, "first_steps": 10, "every": 6,
                                       "features": "discriminator"},
                       inputs={"frames": project / "frames"}, output=out)
    impl.generate(ctx)
    assert [p.name for p in frames_of(out)] == ["000001.png", "000007.png", "000013.png", "000019.png"]
    assert json.loads((out / "projection.json").read_text())["format"].startswith("stylegan2-ada")


def test_bad_projection_settings_are_named(project: Path, tmp_path: Path) -> None:
    impl = ProjectionGenerator()

    def run(options: dict, inputs: dict) -> None:
        ctx = make_context(project, impl, options, inputs=inputs, output=tmp_path / "out")
        ctx.where = "generate[1]"
        impl.generate(ctx)

    frames = {"frames": project / "frames"}
    with pytest.raises(CinemlError, match=r"generate\[1\]\.snapshot = 'latest': there is no checkpoint"):
        run({}, {**frames, "train": tmp_path / "empty"})
    (tmp_path / "vgg.pt").write_text("not a network")
    with pytest.raises(CinemlError, match=r"generate\[1\]\.features: .*vgg.pt' is not a TorchScript archive"):
        run({"features": str(tmp_path / "vgg.pt"), "steps": 1}, {**frames, "train": project / "train"})
    with pytest.raises(CinemlError, match=r"generate\[1\]\.input: 'stills/\*.png' gives no numbered images"):
        run({"input": "stills/*.png"}, {"train": project / "train"})
    assert not (tmp_path / "out").exists() or not frames_of(tmp_path / "out")


def test_cineml_generate_runs_one_named_step(project: Path, tmp_path: Path) -> None:
    root = tmp_path / "p"
    shutil.copytree(project, root)
    env = {**os.environ, "CINEML_LOAD_PLUGINS": ""}

    def cineml(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "cineml", "-q", *args], env=env, capture_output=True, text=True)

    done = cineml("generate", str(root / "project.toml"), "--step", "samples", "-S", 'generate.0.seeds="100-101"',
                  "--name", "extra")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (root / "one-offs/extra").glob("seed*.png")) == ["seed0100.png", "seed0101.png"]
    both = cineml("generate", str(root / "project.toml"))
    assert both.returncode != 0 and "this plan runs 2 (generate:samples, generate:projection)" in both.stderr
    assert "cineml generate --step NAME" in both.stderr


def test_every_zero_is_a_manifest_error(tmp_path: Path) -> None:
    from cineml.manifest import load_project
    from cineml.plugins import load_registry

    (tmp_path / "film.mp4").write_bytes(b"")
    (tmp_path / "project.toml").write_text(MANIFEST)
    with pytest.raises(CinemlError, match=r"generate\[1\]\.every"):
        load_project(tmp_path / "project.toml", load_registry(), ["generate.1.every=0"])
