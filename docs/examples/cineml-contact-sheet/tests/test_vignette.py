"""The vignette preprocessor: its transform, and its ffmpeg filter checked against real ffmpeg."""

import re
import subprocess

import imageio_ffmpeg
import numpy as np
import pytest
from cineml_contact_sheet import Vignette
from PIL import Image

from cineml import CinemlError
from cineml.manifest import load_project
from cineml.testing import make_project, registry_with

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg(source, graph, target):
    subprocess.run([FFMPEG, "-v", "error", "-y", "-i", str(source), "-vf", graph, str(target)], check=True)
    with Image.open(target) as image:
        return np.asarray(image.convert("L" if image.mode == "L" else "RGB")).astype(int)


def noise_frame(size, mode="RGB", seed=0):
    shape = (size[1], size[0], 3) if mode == "RGB" else (size[1], size[0])
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8))


def test_corners_lose_strength_of_their_light():
    grey = Image.new("RGB", (64, 48), (200, 200, 200))
    out = np.asarray(Vignette().transform(grey, {"strength": 0.5})).astype(int)
    assert out[24, 32].tolist() == [200, 200, 200]  # the centre keeps its light
    assert abs(out[0, 0, 0] - 100) <= 1  # a corner keeps half of it
    diagonal = [out[round(24 * (1 - t)), round(32 * (1 - t)), 0] for t in np.linspace(0, 1, 9)]
    assert all(a >= b for a, b in zip(diagonal, diagonal[1:])) and diagonal[0] > diagonal[-1]
    assert np.array_equal(np.asarray(Vignette().transform(grey, {"strength": 0.0})), np.asarray(grey))
    assert np.asarray(Vignette().transform(grey, {"strength": 1.0}))[0, 0].tolist() == [0, 0, 0]
    gray = Vignette().transform(grey.convert("L"), {"strength": 0.5})
    assert gray.mode == "L" and abs(int(np.asarray(gray)[0, 0]) - 100) <= 1


@pytest.mark.parametrize("size, strength, mode", [((64, 48), 0.5, "RGB"), ((33, 21), 0.8, "RGB"),
                                                  ((48, 64), 0.25, "L")])
def test_ffmpeg_filter_gives_the_same_pixels(tmp_path, size, strength, mode):
    frame = noise_frame(size, mode)
    frame.save(tmp_path / "in.png")
    options = {"strength": strength}
    graph = Vignette().ffmpeg_filter(options, size[0], size[1], (1, 1))
    assert graph.endswith("setsar=1")
    made = ffmpeg(tmp_path / "in.png", graph, tmp_path / "out.png")
    expected = np.asarray(Vignette().transform(frame, options)).astype(int)
    assert made.shape == expected.shape  # gray stays gray, colour stays colour
    # Identical with the bundled ffmpeg; allow one level on a rare pixel for another libm's cos().
    assert np.abs(made - expected).max() <= 1 and (made != expected).mean() < 0.001


def test_ffmpeg_filter_on_anamorphic_film_works_in_square_pixels(tmp_path):
    noise_frame((40, 48), seed=1).save(tmp_path / "in.png")
    graph = Vignette().ffmpeg_filter({"strength": 0.6}, 40, 48, (16, 15))
    made = ffmpeg(tmp_path / "in.png", "setsar=16/15," + graph, tmp_path / "out.png")
    # The Python path gets frames the extractor already scaled to square pixels (40 * 16/15 -> 43).
    square = ffmpeg(tmp_path / "in.png", "setsar=16/15,scale=43:48,setsar=1", tmp_path / "square.png")
    expected = np.asarray(Vignette().transform(Image.fromarray(square.astype(np.uint8)), {"strength": 0.6}))
    assert made.shape == (48, 43, 3)
    assert np.abs(made - expected.astype(int)).max() <= 1


def test_vignette_options_are_checked_in_the_manifest(tmp_path):
    manifest = make_project(tmp_path / "p", """
        [project]
        source = "footage/film.mp4"

        [[preprocess]]
        use = "vignette"
        strength = 0.3
    """, files={"footage/film.mp4": b"validation does not read the film"})
    (impl, options), = load_project(manifest, registry_with()).step("extract").chain
    assert isinstance(impl, Vignette) and options == {"strength": 0.3}
    manifest.write_text(manifest.read_text().replace("0.3", "1.5"))
    with pytest.raises(CinemlError, match=re.escape("preprocess[0].strength: 1.5 is out of range")):
        load_project(manifest, registry_with())
