"""Shots and near copies: cuts found in the extraction's own decode pass, dedupe within shots, the shot
contact sheet, timecodes, and training that draws every shot equally often."""

from __future__ import annotations

import json
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner
from films import CUT_FILM_CUTS, cut_film
from PIL import Image

from cineml import CinemlError, label_text, load_images, smpte_timecode
from cineml.cli import cli
from cineml.testing import make_context
from cineml_plugins.extract_fps import FpsExtractor, register_commands
from cineml_plugins.letterbox import Letterbox
from cineml_plugins.shots import dedupe, find_shots
from cineml_plugins.stylegan2.dataset import open_frames
from cineml_plugins.stylegan2.loop import Sampler

EX = FpsExtractor()


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return cut_film(tmp_path_factory.mktemp("film") / "cuts.mp4")


def extract(tmp_path: Path, film: Path, name: str = "frames", chain=(), **options) -> Path:
    out = tmp_path / name
    logs: list[str] = []
    ctx = make_context(tmp_path, EX, options={"format": "png", **options}, inputs={"source": film}, output=out)
    ctx.log = logs.append
    EX.extract(ctx, list(chain))
    (out / "log.txt").write_text("\n".join(logs))
    return out


def read(out: Path, name: str) -> dict:
    return json.loads((out / name).read_text())


@pytest.mark.parametrize("fps", [12, 6, 24, 23.976])  # 24 from 25 fps skips a frame a second: a jerk in the pan
def test_every_cut_is_found_within_a_frame_and_nothing_else(tmp_path: Path, film: Path, fps: float) -> None:
    """Hard cuts and a dip to black are cuts; a white flash, a slow pan, the fades and a frozen still are not."""
    out = extract(tmp_path, film, fps=fps)
    shots = read(out, "shots.json")["shots"]
    found = [s["first"] - 1 for s in shots]  # 0-based frame index of each shot's first frame
    expected = [0] + [round(t * fps) for t in CUT_FILM_CUTS]
    assert len(found) == len(expected) and all(abs(a - b) <= 1 for a, b in zip(found, expected)), (found, expected)
    index = read(out, "index.json")
    assert index["shots"] == len(shots) and index["count"] == index["kept"] == index["expected"]
    for shot in shots:  # every frame knows its shot; a shot's time and timecode are its first frame's
        frames = index["frames"][shot["first"] - 1:shot["last"]]
        assert {f["shot"] for f in frames} == {shot["shot"]} and shot["frames"] == len(frames)
        assert shot["start"] == frames[0]["time"] and shot["timecode"] == smpte_timecode(shot["start"], 25)
    assert shots[-1]["end"] == pytest.approx(18.52, abs=0.05)
    assert "log" not in out.name and f"{index['count']} frames, {len(shots)} shots" in (out / "log.txt").read_text()
    assert not list(out.glob(".thumbs*"))


def test_dedupe_thins_the_frozen_still_and_keeps_the_numbering(tmp_path: Path, film: Path) -> None:
    plain = extract(tmp_path, film, "plain")
    thinned = extract(tmp_path, film, "thinned", dedupe=2.0)
    every = read(plain, "index.json")
    assert every["count"] == len(list(plain.glob("*.png"))) == 222  # 18.52 s at 12 fps, as without dedupe
    assert "kept" not in every["frames"][0]
    index, shots = read(thinned, "index.json"), read(thinned, "shots.json")["shots"]
    still = shots[4]  # 11.5-16.5 s: identical frames
    assert still["frames"] == 60 and 1 <= still["kept"] <= 2
    kept = [f["file"] for f in index["frames"] if f["kept"]]
    dropped = [f["file"] for f in index["frames"] if not f["kept"]]
    assert sorted(p.name for p in thinned.glob("*.png")) == kept  # dropped frames are listed, not on disk
    assert len(index["frames"]) == 222 and index["kept"] == len(kept) and dropped
    assert all(f["kept"] for f in index["frames"] if f["index"] in {s["first"] for s in shots})  # never across a cut
    assert all((thinned / name).read_bytes() == (plain / name).read_bytes() for name in kept)
    assert f"222 frames, 6 shots, kept {len(kept)} (dropped {len(dropped)} near copies)" in \
        (thinned / "log.txt").read_text()
    moving = shots[0]  # testsrc2 moves all the time: most of its frames stay
    assert moving["kept"] > moving["frames"] // 2


def test_the_python_path_finds_the_same_shots(tmp_path: Path, film: Path) -> None:
    """A greyscale JPEG chain takes the fallback path (raw frames on a pipe): thumbnails come from the same graph."""
    fast = extract(tmp_path, film, "fast")
    grey = extract(tmp_path, film, "grey", chain=[(Letterbox(), {"size": 64, "fill": "black", "resample": "lanczos",
                                                               "grayscale": True})], format="jpg")
    assert read(fast, "shots.json")["shots"] == read(grey, "shots.json")["shots"]
    with Image.open(next(grey.glob("*.jpg"))) as im:
        assert im.mode == "L" and im.size == (64, 64)


def test_shots_off_writes_no_shot_list(tmp_path: Path, film: Path) -> None:
    out = extract(tmp_path, film, shots=False)
    index = read(out, "index.json")
    assert not (out / "shots.json").exists() and index["shots"] is None and "shot" not in index["frames"][0]
    assert not list(out.glob(".thumbs*"))


# --- the detector on made-up thumbnails -------------------------------------------------------------------


def texture(seed: int, width: int = 32, block: int = 8) -> np.ndarray:
    """A 32 x ``width`` thumbnail of random grey blocks."""
    rng = np.random.default_rng(seed)
    small = rng.integers(30, 225, (32 // block, width // block)).astype(np.float32)
    return np.kron(small, np.ones((block, block), np.float32))


def test_a_pan_is_not_a_cut_but_a_cut_during_a_pan_is() -> None:
    wide = np.concatenate([texture(1, 128), texture(2, 128)], axis=1)
    pan = [wide[:, 2 * k:2 * k + 32] for k in range(60)]  # across the frame in 1.3 s
    other = [np.roll(texture(3), k, axis=1) for k in range(30)]
    thumbs = np.clip(np.stack(pan + other), 0, 255).astype(np.uint8)
    assert find_shots(thumbs, 12) == [0, 60]


def test_a_blackout_inside_a_shot_and_a_late_cut() -> None:
    a, b = texture(4), texture(5)
    black = np.zeros_like(a)
    same = [a] * 20 + [black] * 3 + [a] * 20  # lights off and on: one shot
    assert find_shots(np.stack(same).astype(np.uint8), 12) == [0]
    dip = [a] * 20 + [a * f for f in (0.6, 0.3)] + [black] * 4 + [b * f for f in (0.3, 0.6)] + [b] * 20
    assert find_shots(np.stack(dip).astype(np.uint8), 12) == [0, 26]  # where the picture comes back
    quick = [a] * 20 + [b] * 2 + [texture(6)] * 20  # shots last >= 0.5 s
    assert find_shots(np.stack(quick).astype(np.uint8), 12) == [0, 20]


def test_dedupe_compares_with_the_last_kept_frame_and_never_across_a_cut() -> None:
    a = texture(7)
    drift = np.stack([a + k for k in range(10)] + [a] * 5).astype(np.uint8)  # a grey level a frame, then a cut
    keep = dedupe(drift, [0, 10], 2.5)
    assert keep.tolist() == [True, False, False, True, False, False, True, False, False, True,
                             True, False, False, False, False]
    assert dedupe(drift, [0], 0).all()


# --- bad input ------------------------------------------------------------------------------------------


MANIFEST = """
[project]
source = "cuts.mp4"

[extract]
fps = 12
{extract}

[[preprocess]]
use = "letterbox"
size = 16
grayscale = true

[train]
use = "stylegan2"
config = "tiny"
kimg = 0.02
snapshot_kimg = 0.01
balance = "shot"
"""


def project(tmp_path: Path, film: Path, extract: str) -> Path:
    (tmp_path / "cuts.mp4").write_bytes(film.read_bytes())
    path = tmp_path / "project.toml"
    path.write_text(MANIFEST.format(extract=extract))
    return path


@pytest.mark.parametrize("value", ["300", "-1", '"lots"'])
def test_a_bad_dedupe_names_the_key(tmp_path: Path, film: Path, value: str) -> None:
    result = CliRunner().invoke(cli, ["run", str(project(tmp_path, film, f"dedupe = {value}")), "-n"])
    assert result.exit_code != 0 and "extract.dedupe" in result.output
    assert not (tmp_path / "frames").exists()


def test_balance_by_shot_needs_shots(tmp_path: Path, film: Path) -> None:
    result = CliRunner().invoke(cli, ["-q", "run", str(project(tmp_path, film, "shots = false"))])
    assert result.exit_code != 0
    assert "train.balance" in result.output and "shots = true" in result.output, result.output
    assert not (tmp_path / "train").exists()


# --- balanced training ----------------------------------------------------------------------------------


def test_balance_by_shot_draws_every_shot_equally_and_resumes_exactly(tmp_path: Path, film: Path) -> None:
    out = extract(tmp_path, film, chain=[(Letterbox(), {"size": 8, "fill": "black", "resample": "lanczos",
                                                        "grayscale": True})])
    dataset = open_frames(out, tmp_path / "cache", log=lambda msg: None)
    shots = dataset.shots
    assert shots is not None and len(shots) == 222 and shots.max() == 5
    sampler = Sampler(len(dataset), 7, weights=dataset.weights("shot"))
    drawn = sampler.take(60_000)
    per_shot = np.bincount(shots[drawn], minlength=6) / len(drawn)
    assert np.allclose(per_shot, 1 / 6, atol=0.015), per_shot  # shots of 24 to 60 frames, drawn alike
    plain = np.bincount(shots[Sampler(len(dataset), 7).take(60_000)], minlength=6) / 60_000
    assert plain.max() / plain.min() > 2  # by frame, the longest shot is drawn 2.5 times as often
    first = Sampler(len(dataset), 7, weights=dataset.weights("shot"))
    head = first.take(1000)
    state = first.state()
    resumed = Sampler(len(dataset), 7, state["epoch"], state["cursor"], dataset.weights("shot"))
    whole = Sampler(len(dataset), 7, weights=dataset.weights("shot")).take(1500)
    assert np.array_equal(np.concatenate([head, resumed.take(500)]), whole)
    mirrored = open_frames(out, tmp_path / "cache", mirror=True, log=lambda msg: None)
    assert len(mirrored.weights("shot")) == 2 * 222


# --- timecodes, labels and the shot contact sheet ---------------------------------------------------------


def test_smpte_timecode() -> None:
    assert smpte_timecode(83.4, 25) == "00:01:23:10"
    assert smpte_timecode(3600 + 0.5, 24) == "01:00:00:12"
    assert smpte_timecode(3600, 24000 / 1001) == "00:59:56:10"  # non-drop-frame: 24 a "second" at 23.976
    assert smpte_timecode(59.999, 25) == "00:01:00:00"


def test_one_frame_per_shot_labelled_with_its_timecode(tmp_path: Path, film: Path) -> None:
    from cineml.manifest import load_project
    from cineml.pipeline import Pipeline
    from cineml.plugins import load_registry

    frames = extract(tmp_path, film)
    shots = read(frames, "shots.json")["shots"]
    (tmp_path / "cuts.mp4").symlink_to(film)
    path = tmp_path / "project.toml"
    path.write_text('[project]\nsource = "cuts.mp4"\n\n[extract]\nformat = "png"\n\n'
                    '[[compose]]\nuse = "grid"\ninput = "frames"\none_per_shot = true\nlabels = "shot"\n'
                    'output = "shots.png"\n\n'
                    '[[compose]]\nuse = "grid"\ninput = "stills/*.png"\none_per_shot = true\noutput = "bad.png"\n')
    registry = load_registry()
    pipeline = Pipeline(load_project(path, registry), registry)
    sheet, bad = [s for s in pipeline.project.steps if s.stage.startswith("compose")]
    images = pipeline.compose_images(sheet)
    middles = [f"{(s['first'] + s['last']) // 2:06d}.png" for s in shots]
    assert [p.name for p in images] == middles
    labels = [label_text(im, "shot") for im in load_images(images)]
    assert labels[1] == "shot 2 · 00:00:02:01" and len(set(labels)) == 6
    assert label_text(load_images(images[:1])[0], "timecode") == smpte_timecode(
        read(frames, "index.json")["frames"][int(middles[0][:6]) - 1]["time"], 25)
    (tmp_path / "stills").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "stills" / "a.png")
    with pytest.raises(CinemlError, match=r"compose\[1\]\.one_per_shot: .*a.png has no shot"):
        pipeline.compose_images(bad)


def test_probe_lists_the_shots(film: Path) -> None:
    @click.group()
    def probe_cli() -> None:
        pass

    register_commands(probe_cli)
    result = CliRunner().invoke(probe_cli, ["probe", str(film), "--shots"], terminal_width=120)
    assert result.exit_code == 0, result.output
    assert "6 shots at 12 fps" in result.output and "00:00:11:13" in result.output
    assert "139-198" in result.output
