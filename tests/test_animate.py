"""The animation composer: real encodes, decoded back with the bundled ffmpeg and measured."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest
from PIL import Image

import cineml
from cineml import CinemlError
from cineml.progress import Bar
from cineml.testing import make_context
from cineml_plugins import layouts
from cineml_plugins.animate import Animation, frame_plan

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
LAYOUTS = {layout.name: layout for layout in (layouts.grid, layouts.windows, layouts.filmstrip)}


def stills(folder: Path, colors, size=(64, 48), name="fakes{:06d}.jpg") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for k, color in enumerate(colors):
        path = folder / name.format(k * 4)
        Image.new("RGB", size, color).save(path, quality=95)
        paths.append(path)
    return paths


def animate(tmp_path: Path, paths: list[Path], output="out.mp4", **options) -> Path:
    composer = Animation()
    out = tmp_path / "staging" / output
    ctx = make_context(tmp_path, composer, options=options, output=out,
                       inputs={k: v for k, v in (("source", options.pop("_source", None)),) if v})
    ctx.layouts = LAYOUTS
    composer.compose(ctx, paths)
    return out


def probe(path: Path) -> str:
    """ffmpeg's stream description (stderr of ``ffmpeg -i``)."""
    return subprocess.run([FFMPEG, "-hide_banner", "-i", str(path)], capture_output=True, text=True).stderr


def decode(path: Path, pix_fmt="rgb24", size=None) -> np.ndarray:
    """Every video frame as an array (N, H, W, C); yuv420p returns the luma plane only."""
    info = probe(path)
    width, height = map(int, re.search(r", (\d+)x(\d+)", info[info.index("Video:"):]).groups())
    raw = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-map", "0:v", "-f", "rawvideo",
                          "-pix_fmt", pix_fmt, "-"], capture_output=True, check=True).stdout
    if pix_fmt == "yuv420p":
        frame = width * height * 3 // 2
        assert len(raw) % frame == 0
        return np.frombuffer(raw, np.uint8).reshape(-1, frame)[:, :width * height].reshape(-1, height, width, 1)
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width, 3)


def audio_seconds(path: Path) -> tuple[float, float]:
    """Decoded audio duration (from the sample count) and its RMS level."""
    raw = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-map", "0:a", "-f", "s16le", "-ac", "1",
                          "-ar", "8000", "-"], capture_output=True, check=True).stdout
    samples = np.frombuffer(raw, np.int16).astype(np.float32)
    return len(samples) / 8000, float(np.sqrt(np.mean(samples[:8000] ** 2)))


def test_frame_plan_counts():
    assert len(frame_plan(90, 6)) == 90
    assert frame_plan(3, 6, crossfade=0.5) == [(0, 0, 0.0), (0, 1, 0.25), (0, 1, 0.5), (0, 1, 0.75),
                                                (1, 1, 0.0), (1, 2, 0.25), (1, 2, 0.5), (1, 2, 0.75),
                                                (2, 2, 0.0)]
    timed = frame_plan(4, 6, seconds=5, crossfade=0.5)
    assert len(timed) == 30 and sum(1 for _, _, t in timed if t) == 9
    holds = [sum(1 for a, b, t in timed if a == b == k) for k in range(4)]
    assert sorted(holds) == [5, 5, 5, 6]
    sampled = frame_plan(900, 6, seconds=15)
    assert len(sampled) == 90 and sampled[0][0] == 0 and sampled[-1][0] == 899  # ends on the final fakes
    assert [a for a, _, _ in frame_plan(10, 6, seconds=0.5)] == [0, 4, 9]
    assert len(frame_plan(4, 6, seconds=1, crossfade=2)) == 6  # crossfades shrink to fit
    with pytest.raises(CinemlError):
        frame_plan(0, 6)


def test_ninety_odd_sized_jpegs_give_exactly_ninety_frames_limited_range(tmp_path):
    levels = [0, 255] + [int(v) for v in np.linspace(10, 245, 88)]
    out = animate(tmp_path, stills(tmp_path / "train", [(v, v, v) for v in levels], size=(65, 47)))
    info = probe(out)
    assert "Duration: 00:00:15.00" in info
    assert re.search(r"yuv420p\(tv, bt709", info), info
    assert ", 66x48" in info and " 6 fps" in info
    luma = decode(out, "yuv420p")
    assert luma.shape == (90, 48, 66, 1)
    # Limited range: black is coded as 16 and white as 235, not 0 and 255.
    assert abs(float(luma[0, :47, :65].mean()) - 16) < 2
    assert abs(float(luma[1, :47, :65].mean()) - 235) < 2
    assert [p.name for p in out.parent.iterdir()] == ["out.mp4"]


def test_crossfade_frame_count_and_blends(tmp_path):
    paths = stills(tmp_path / "train", [(0, 0, 0), (255, 255, 255), (0, 0, 0)])
    out = animate(tmp_path, paths, crossfade=0.5, preset="ultrafast")
    frames = decode(out)
    assert len(frames) == 3 + 2 * 3  # a frame per still, three blended between each pair
    means = frames.reshape(len(frames), -1).mean(axis=1)
    assert means[0] < 5 and means[4] > 250 and means[8] < 5
    assert 40 < means[1] < means[2] < means[3] < 215  # dissolving up...
    assert means[5] > means[6] > means[7]  # ...and down
    timed = decode(animate(tmp_path, paths, output="timed.mp4", seconds=4, crossfade=0.5, preset="ultrafast"))
    assert len(timed) == 24


def test_label_counter_and_progress(tmp_path):
    paths = stills(tmp_path / "train", [(0, 0, 120)] * 6, size=(160, 120))
    composer = Animation()
    ctx = make_context(tmp_path, composer, options={"label": "kimg"}, output=tmp_path / "s" / "l.mp4")
    seen = []

    class Recording:  # a real Bar, remembered so the test can read where it got to
        def __call__(self, description, total=None, unit=""):
            import contextlib

            @contextlib.contextmanager
            def bar():
                seen.append(Bar(None, None))
                yield seen[-1]
            return bar()

    ctx.progress = Recording()
    composer.compose(ctx, paths)
    assert seen and seen[0].completed == 6
    frames = decode(ctx.output)
    corner = frames[:, 80:, :80].astype(int)
    assert (corner.max(axis=(1, 2, 3)) > 200).all()  # white text in the lower left of every frame
    assert not np.array_equal(frames[1, 80:, :80], frames[2, 80:, :80])  # "4 kimg" then "8 kimg"
    # Crossfades dissolve the pictures, not the counter: it switches cleanly half-way.
    faded = decode(animate(tmp_path, paths[:2], output="f.mp4", label="kimg", crossfade=0.5)).astype(int)
    assert len(faded) == 5
    corner = faded[:, 80:, :80]
    assert np.abs(corner[1] - corner[0]).max() < 30 and np.abs(corner[2] - corner[4]).max() < 30
    assert np.abs(corner[0] - corner[4]).max() > 100


def make_film(path: Path, seconds: float) -> Path:
    subprocess.run([FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}",
                    "-f", "lavfi", "-i", f"color=c=gray:s=64x48:d={seconds}", "-shortest",
                    "-c:v", "libx264", "-c:a", "aac", str(path)], check=True)
    return path


def test_audio_from_the_film_is_looped_or_trimmed_to_length(tmp_path):
    film = make_film(tmp_path / "film.mp4", 2.0)
    looped = animate(tmp_path, stills(tmp_path / "a", [(50, 50, 50)] * 30), audio="source",
                     _source=film, preset="ultrafast")
    assert "Audio: aac" in probe(looped)
    seconds, level = audio_seconds(looped)
    assert abs(seconds - 5.0) < 0.06 and level > 1000
    assert len(decode(looped)) == 30
    subprocess.run([FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", "sine=frequency=220:duration=3",
                    str(tmp_path / "sound.wav")], check=True)
    trimmed = animate(tmp_path, stills(tmp_path / "b", [(50, 50, 50)] * 12), output="t.mp4",
                      audio="sound.wav", preset="ultrafast")
    assert abs(audio_seconds(trimmed)[0] - 2.0) < 0.06
    silent = animate(tmp_path, stills(tmp_path / "c", [(50, 50, 50)] * 6), output="s.mp4", preset="ultrafast")
    assert "Audio:" not in probe(silent)


def test_layout_per_frame_plays_one_sequence_per_tile(tmp_path):
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255),
              (255, 255, 255), (0, 0, 0)]
    paths = stills(tmp_path / "g", colors, size=(32, 32))
    out = animate(tmp_path, paths, layout="grid", preset="ultrafast",
                  layout_options={"columns": 2, "rows": 1, "gutter": 0, "margin": 0})
    frames = decode(out).astype(int)
    assert frames.shape == (4, 32, 64, 3)
    for t in range(4):  # left tile plays images 0-3, the right one 4-7 (each its own stretch)
        assert np.abs(frames[t, 8:24, 8:24] - colors[t]).max() < 40
        assert np.abs(frames[t, 8:24, 40:56] - colors[4 + t]).max() < 40
    # 5 images over 4 tiles fill all 4 (pieces [0] [1] [2] [3, 4]; short pieces hold), none left empty
    five = decode(animate(tmp_path, paths[:5], output="five.mp4", layout="grid", preset="ultrafast",
                          layout_options={"columns": 4, "rows": 1, "gutter": 0, "margin": 0})).astype(int)
    assert five.shape[:3] == (2, 32, 128)
    for t, shown in enumerate(((0, 1, 2, 3), (0, 1, 2, 4))):
        assert [np.abs(five[t, 8:24, 32 * k + 8:32 * k + 24] - colors[c]).max() < 40
                for k, c in enumerate(shown)] == [True] * 4
    facade = animate(tmp_path, paths[:6], output="w.mp4", layout="windows", preset="ultrafast",
                     layout_options={"floors": 1, "bays": 2, "seed": 1})
    info = probe(facade)
    assert len(decode(facade)) == 3 and "yuv420p(tv" in info


@cineml.layout("triptych", capacity=lambda options: 3)
def triptych(images):
    """Three panels side by side (a layout that declares its capacity)."""
    sheet = Image.new("RGB", (sum(i.width for i in images), images[0].height))
    for k, image in enumerate(images):
        sheet.paste(image.convert("RGB"), (k * images[0].width, 0))
    return sheet


def test_a_layout_declares_its_capacity_for_animations(tmp_path, monkeypatch):
    monkeypatch.setitem(LAYOUTS, "triptych", triptych)
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0), (0, 255, 255), (255, 0, 255)]
    frames = decode(animate(tmp_path, stills(tmp_path / "t", colors, size=(32, 32)), layout="triptych",
                            preset="ultrafast")).astype(int)
    assert frames.shape == (2, 32, 96, 3)  # 6 images / 3 panels: 2 frames, each panel its own pair
    for t in range(2):
        for panel in range(3):
            assert np.abs(frames[t, 8:24, panel * 32 + 8:panel * 32 + 24] - colors[2 * panel + t]).max() < 40
    assert layouts.grid.tiles({"columns": 3, "rows": 2}) == 6 and layouts.grid.tiles({"columns": 3, "rows": 0}) is None
    assert layouts.filmstrip.tiles({"frames_per_strip": 4}) is None  # more images make more strips


def test_a_dotenv_above_moviepy_cannot_break_encoding(tmp_path):
    """``import moviepy`` loads the first .env above its install folder (with a venv inside the project:
    the project's). One that points FFMPEG_BINARY at a missing program must not break the animation."""
    env_file = tmp_path / ".env"
    env_file.write_text("FFMPEG_BINARY=/nonexistent/ffmpeg\n")
    paths = stills(tmp_path / "s", [(200, 0, 0), (0, 200, 0), (0, 0, 200)])
    script = f"""
import os, sys
import dotenv
dotenv.find_dotenv = lambda *args, **kwargs: {str(env_file)!r}  # as if the .env were above site-packages
os.environ.pop("FFMPEG_BINARY", None)
sys.path.insert(0, {str(Path(__file__).parent)!r})
from pathlib import Path
from test_animate import animate
animate(Path({str(tmp_path)!r}), [Path(p) for p in {[str(p) for p in paths]!r}], preset="ultrafast")
"""
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    frames = decode(tmp_path / "staging/out.mp4").astype(int)
    assert len(frames) == 3 and np.abs(frames[2, 10:30, 10:50] - (0, 0, 200)).max() < 40
    # An FFMPEG_BINARY the artist exported themselves is respected, with a clear error when it is wrong.
    proc = subprocess.run([sys.executable, "-c", script.replace('os.environ.pop("FFMPEG_BINARY", None)',
                                                                'os.environ["FFMPEG_BINARY"] = "/nonexistent/ffmpeg"')],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "CinemlError: MoviePy could not start ffmpeg" in proc.stderr
    assert "unset it" in proc.stderr


def test_gif_output_keeps_frame_count_and_length(tmp_path):
    out = animate(tmp_path, stills(tmp_path / "g", [(k * 20, 0, 0) for k in range(9)], size=(65, 47)),
                  output="a.gif")
    with Image.open(out) as gif:
        assert gif.size == (65, 47)  # no padding line: only x264 needs even sides
        durations = []
        for index in range(gif.n_frames):
            gif.seek(index)
            durations.append(gif.info["duration"])
    assert len(durations) == 9 and sum(durations) == 1500  # 9 frames at 6 fps, in centiseconds


def test_webp_output_keeps_frames_colours_and_length(tmp_path):
    colors = [(200, 0, 0), (0, 200, 0), (0, 0, 200), (200, 200, 0), (0, 200, 200)]
    out = animate(tmp_path, stills(tmp_path / "w", colors, size=(33, 21)), output="a.webp", fps=6)
    with Image.open(out) as webp:
        assert webp.n_frames == 5 and webp.size == (33, 21)
        durations, seen = [], []
        for index in range(webp.n_frames):
            webp.seek(index)
            webp.load()  # the frame's duration is known once it is decoded
            durations.append(webp.info["duration"])
            seen.append(np.asarray(webp.convert("RGB"))[10, 16].astype(int))
    assert sum(durations) == 833  # 5 frames at 6 fps, in milliseconds, rounding carried forward
    assert all(np.abs(s - c).max() < 30 for s, c in zip(seen, colors))


def test_bad_settings_name_the_problem(tmp_path):
    paths = stills(tmp_path / "x", [(1, 2, 3)] * 2)
    with pytest.raises(CinemlError, match=r"layout_options\.colums: unknown option\. Did you mean 'columns'"):
        animate(tmp_path, paths, layout="grid", layout_options={"colums": 2})
    with pytest.raises(CinemlError, match="how many images each frame"):
        animate(tmp_path, paths, layout="grid")
    with pytest.raises(CinemlError, match="no such file"):
        animate(tmp_path, paths, audio="missing.wav")
    with pytest.raises(CinemlError, match="too fast for a GIF"):
        animate(tmp_path, paths, output="fast.gif", fps=60)
    with pytest.raises(CinemlError, match="two decimals"):
        animate(tmp_path, paths, fps=23.976)
    with pytest.raises(CinemlError, match="no images"):
        animate(tmp_path, [])
    silent = tmp_path / "silent.mp4"
    subprocess.run([FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", "color=c=gray:s=64x48:d=1",
                    str(silent)], check=True)
    with pytest.raises(CinemlError, match="soundtrack"):
        animate(tmp_path, paths, audio="source", _source=silent)
    assert not list((tmp_path / "staging").glob("*.tmp*"))  # failures leave no partial file


def test_engine_runs_layout_and_animation_steps(tmp_path):
    from cineml.testing import make_project, run_project

    folder = tmp_path / "project"
    stills(folder / "stills", [(30 * k, 200 - 20 * k, 90) for k in range(8)], size=(48, 48), name="seed{:04d}.png")
    manifest = make_project(folder, """
        [project]
        name = "demo"

        [[compose]]
        use = "windows"
        input = "stills/*.png"
        output = "facade.png"
        bays = 4
        labels = "seed"

        [[compose]]
        use = "animation"
        input = "stills/*.png"
        output = "facade.mp4"
        fps = 4
        layout = "windows"
        layout_options = { floors = 1, bays = 2, time = "day" }
    """)
    run_project(manifest)
    with Image.open(folder / "art" / "facade.png") as facade:
        assert facade.width > 4 * 48
    assert len(decode(folder / "art" / "facade.mp4")) == 4


def test_more_stills_than_frames_shows_an_even_sample(tmp_path):
    levels = [20 * k for k in range(12)]
    paths = stills(tmp_path / "s", [(v, v, v) for v in levels])
    composer = Animation()
    ctx = make_context(tmp_path, composer, options={"seconds": 1.0, "preset": "ultrafast"},
                       output=tmp_path / "st" / "s.mp4")
    warnings = []
    ctx.warn = warnings.append
    composer.compose(ctx, paths)
    means = decode(ctx.output).reshape(6, -1).mean(axis=1)
    assert np.allclose(means, [levels[round(f * 11 / 5)] for f in range(6)], atol=3)  # first to last
    assert warnings and "12 stills in 6 frames" in warnings[0]


def test_film_timing_holds_each_frame_until_the_next_ones_time(tmp_path):
    """Frames 1, 3, 4 and 7 of a 12 fps film (the others dropped as near copies): 7 video frames, each
    still shown from its film time on, so the soundtrack stays in sync."""
    import json

    from cineml_plugins.animate import film_plan

    folder = tmp_path / "frames"
    folder.mkdir()
    numbers = [1, 3, 4, 7]
    for k, n in enumerate(numbers):
        Image.new("L", (16, 16), 40 * k + 20).save(folder / f"{n:06d}.png")
    (folder / "index.json").write_text(json.dumps({"frames": [
        {"file": f"{n:06d}.png", "time": round(0.04 + (n - 1) / 12, 6)} for n in numbers]}))
    out = animate(tmp_path, sorted(folder.glob("*.png")), fps=12, timing="film")
    lumas = [16 + 219 * (40 * k + 20) / 255 for k in range(4)]  # the stills' levels in the video's tv range
    shown = [int(np.argmin([abs(float(f.mean()) - y) for y in lumas])) for f in decode(out, pix_fmt="yuv420p")]
    assert shown == [0, 0, 1, 2, 2, 2, 3]
    assert film_plan([0.0, 0.5], 12) == [(0, 0, 0.0)] * 6 + [(1, 1, 0.0)]
    Image.new("L", (16, 16)).save(tmp_path / "still.png")
    with pytest.raises(CinemlError, match=r"timing: \"film\" shows each image at its time in the film, but "
                                          r".*still.png has none"):
        animate(tmp_path, [tmp_path / "still.png"], fps=12, timing="film")
