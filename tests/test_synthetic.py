"""The synthetic demo film: real renders encoded with the bundled ffmpeg and decoded back."""

from __future__ import annotations

import contextlib
import re
import subprocess
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

import cineml
from cineml.progress import Progress
from cineml.testing import make_context
from cineml_plugins import synthetic
from cineml_plugins.synthetic import SyntheticFilm, iter_frames, render_audio, render_film, shot_plan

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
W, H = 128, 96


def probe(path: Path) -> str:
    """ffmpeg's stream report (there is no ffprobe in the bundle)."""
    return subprocess.run([FFMPEG, "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr


def duration(path: Path) -> float:
    h, m, s = re.search(r"Duration: (\d+):(\d+):([\d.]+)", probe(path)).groups()
    return int(h) * 3600 + int(m) * 60 + float(s)


def decode(path: Path, width: int, height: int) -> np.ndarray:
    """Every frame as RGB, shape (n, height, width, 3)."""
    raw = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-map", "0:v", "-f", "rawvideo",
                          "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def decode_audio(path: Path) -> np.ndarray:
    raw = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-map", "0:a", "-f", "s16le", "-ac", "1",
                          "-ar", "48000", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, "<i2").astype(np.float32) / 32768


def frame_changes(frames: np.ndarray, block: int = 8) -> np.ndarray:
    """How much each frame differs from the next, blind to grain (block means) and flicker (mean removed)."""
    n, h, w = frames.shape
    small = frames.astype(np.float32).reshape(n, h // block, block, w // block, block).mean((2, 4))
    small -= small.mean((1, 2), keepdims=True)
    return np.abs(np.diff(small, axis=0)).mean((1, 2))


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """A 6 s film at 128x96 with sound, encoded and decoded back (one render for several tests)."""
    path = tmp_path_factory.mktemp("film") / "film.mp4"
    assert render_film(path, seconds=6, fps=24, width=W, height=H, seed=3, audio=True) == path
    return path, decode(path, W, H)


def test_encoded_film_has_the_asked_length_size_and_sound(film: tuple[Path, np.ndarray]) -> None:
    path, frames = film
    info = probe(path)
    assert re.search(r"Video: h264 .*yuv420p.*, 128x96", info), info
    assert "Audio: aac" in info
    assert frames.shape == (6 * 24, H, W, 3)
    assert duration(path) == pytest.approx(6.0, abs=0.05)
    sound = decode_audio(path)
    assert len(sound) / 48000 == pytest.approx(6.0, abs=0.06)
    assert 0.05 < float(np.sqrt(np.mean(sound ** 2))) < 0.5  # audible, not clipped to a wall
    assert len(list(path.parent.iterdir())) == 1  # no temp files or WAV left beside it


def test_decoded_frames_are_the_rendered_frames(film: tuple[Path, np.ndarray]) -> None:
    """The encode keeps order, levels (no range squeeze) and picture: only fine grain is smoothed."""
    _, frames = film
    raw = np.stack(list(iter_frames(6, 24, W, H, seed=3))).astype(np.float32)
    decoded = frames[..., 1].astype(np.float32)
    assert decoded.shape == raw.shape
    assert abs(decoded.mean() - raw.mean()) < 2.0
    blocks = lambda v: v.reshape(len(v), H // 8, 8, W // 8, 8).mean((2, 4))  # noqa: E731
    assert np.abs(blocks(decoded) - blocks(raw)).mean() < 2.5


def test_frames_are_grey_and_mostly_white(film: tuple[Path, np.ndarray]) -> None:
    _, frames = film
    rgb = frames.astype(np.int16)
    assert np.abs(rgb[..., 0] - rgb[..., 1]).max() <= 3  # R = G = B after yuv420p round trip
    assert np.abs(rgb[..., 2] - rgb[..., 1]).max() <= 3
    grey = frames[..., 1].reshape(len(frames), -1)
    white = (grey > 170).mean(axis=1)
    assert white.min() > 0.6, "every shot is set in the white room"
    assert np.median(white) > 0.85
    dark = (grey < 80).mean(axis=1)
    assert dark.min() > 0.003, "and every frame shows a dark figure"


def test_film_cuts_between_shots_and_moves_within_them(film: tuple[Path, np.ndarray]) -> None:
    _, frames = film
    grey = frames[..., 1]
    change = frame_changes(grey)
    plan = shot_plan(len(grey))
    cuts = [shot.start - 1 for shot in plan[1:]]  # change[i] compares frames i and i+1
    inside = np.delete(change, cuts)
    assert len(plan) >= 5
    assert sorted(np.argsort(change)[-len(cuts):].tolist()) == cuts  # the largest jumps are the cuts
    assert change[cuts].min() > 1.8 * inside.max()
    assert np.median(inside) < 0.3 * change[cuts].min()
    # The figure moves inside every shot: its silhouette leaves where it was at the shot's start.
    for shot in plan:
        masks = grey[shot.start:shot.stop] < 80
        assert max((m ^ masks[0]).mean() for m in masks) > 0.008, shot.name
    # In the opening shot it walks across the room from left to right.
    walk = plan[0]
    xs = [np.nonzero(grey[i] < 80)[1].mean() for i in (walk.start + 1, walk.stop - 2)]
    assert xs[1] - xs[0] > 0.4 * W


def test_raw_frames_are_deterministic_for_a_seed() -> None:
    a = np.stack(list(iter_frames(2, 12, 96, 72, seed=5)))
    b = np.stack(list(iter_frames(2, 12, 96, 72, seed=5)))
    c = np.stack(list(iter_frames(2, 12, 96, 72, seed=6)))
    assert a.shape == (24, 72, 96) and a.dtype == np.uint8
    assert a.tobytes() == b.tobytes()
    assert a.tobytes() != c.tobytes()  # the seed changes grain and flicker...
    assert np.abs(a.astype(float) - c).mean() < 12  # ...not the choreography
    sound = render_audio(2.0, seed=5, cuts=[0.0, 1.0])
    assert len(sound) == 2 * synthetic.RATE
    assert np.array_equal(sound, render_audio(2.0, seed=5, cuts=[0.0, 1.0]))
    assert 0.5 < float(np.abs(sound).max()) <= 1.0


def test_source_plugin_renders_without_audio(tmp_path: Path) -> None:
    bars = []

    class Recorder(Progress):
        @contextlib.contextmanager
        def __call__(self, description, total=None, unit=""):
            with super().__call__(description, total, unit) as bar:
                bars.append((description, total, bar))
                yield bar

    impl = SyntheticFilm()
    ctx = make_context(tmp_path, impl, options={"seconds": 2, "width": 96, "height": 72, "audio": False},
                       output=tmp_path / "source" / "film.mp4")
    ctx.progress = Recorder(enabled=False)
    impl.make(ctx)
    info = probe(ctx.output)
    assert "Video: h264" in info and "Audio" not in info
    assert decode(ctx.output, 96, 72).shape[0] == 48
    assert [(d, t, b.completed) for d, t, b in bars] == [("Rendering film", 48, 48)]
    assert [p.name for p in ctx.output.parent.iterdir()] == ["film.mp4"]


def test_plugin_declares_its_options_and_registers() -> None:
    impl = SyntheticFilm()
    assert impl.name == "synthetic" and isinstance(impl, cineml.Source) and impl.help
    opts = {o.name: o for o in impl.options}
    assert {k: opts[k].default for k in opts} == {"seconds": 20.0, "fps": 24, "width": 640, "height": 480,
                                                    "seed": 0, "audio": True}
    assert (opts["seconds"].min, opts["seconds"].max) == (2, 120)
    assert all(o.help for o in impl.options)
    assert opts["width"].check(641) and opts["height"].check(479) and opts["width"].check(640) is None
    registered = []
    synthetic.register_sources(registered.append)
    assert [type(r) for r in registered] == [SyntheticFilm]


@pytest.mark.parametrize("kwargs, word", [({"width": 101}, "width"), ({"height": 70.5}, "height"),
                                          ({"seconds": 1}, "seconds"), ({"fps": 0}, "fps"),
                                          ({"seed": -1}, "seed")])
def test_bad_settings_raise_a_clear_error_and_write_nothing(tmp_path: Path, kwargs: dict, word: str) -> None:
    args = {"seconds": 2, "width": 96, "height": 72, **kwargs}
    with pytest.raises(cineml.CinemlError, match=word):
        render_film(tmp_path / "film.mp4", **args)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_render_leaves_no_file(tmp_path: Path) -> None:
    def stop(n: int) -> None:
        if stop.count == 10:
            raise KeyboardInterrupt
        stop.count += n

    stop.count = 0
    with pytest.raises(KeyboardInterrupt):
        render_film(tmp_path / "film.mp4", seconds=3, width=96, height=72, on_frame=stop)
    assert list(tmp_path.iterdir()) == []
