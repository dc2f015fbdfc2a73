"""The fps extractor on real films: frame counts, timestamps, both paths, damage, resume."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import textwrap
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from films import FFMPEG, add_sound, coded_film, garble, make_film, source_times, truncate
from PIL import Image

from cineml import CinemlError, Preprocessor
from cineml.testing import make_context
from cineml_plugins.extract_fps import FpsExtractor, resume_point
from cineml_plugins.letterbox import Letterbox

EX, LB = FpsExtractor(), Letterbox()
LB_OPTS = {"size": 64, "fill": "black", "resample": "lanczos", "grayscale": False}


class PythonOnly(Preprocessor):
    """A step with no ffmpeg filter, forcing the Python fallback path (it changes nothing)."""

    name = "python-only"

    def transform(self, image, options):
        return image


def extract(tmp_path: Path, film: Path, out: str, chain=(), warns: list | None = None, **options) -> Path:
    ctx = make_context(tmp_path, EX, options=options, inputs={"source": film}, output=tmp_path / out)
    if warns is not None:
        ctx.warn = warns.append
    EX.extract(ctx, list(chain))
    return ctx.output


def frames(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.name[:6].isdigit())


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def fps_filter_count(frames: int, rate: str, fps: float) -> int:
    """round-half-away(D x F), with D = frames / rate exactly (the film's end time)."""
    return math.floor(Fraction(frames) / Fraction(rate) * Fraction(str(fps)) + Fraction(1, 2))


@pytest.mark.parametrize("rate, n, fps", [
    ("25", 100, 12),          # 4 s -> 48
    ("24000/1001", 50, 12),   # 2.085 s -> 25.03 -> 25
    ("30000/1001", 61, 10),   # 2.035 s -> 20.35 -> 20
    ("30000/1001", 61, 12),   # 24.42 -> 24
    ("10", 102, 12),          # the 10.2 s at 12 fps -> 122 rule
    ("10", 25, 5),            # 12.5 rounds half away from zero -> 13
    ("25", 50, 30),           # faster than the film: slots repeat, as the filter does
    ("25", 40, 23.976),
])
def test_frame_counts_follow_the_fps_filter(tmp_path: Path, rate: str, n: int, fps: float) -> None:
    film = make_film(tmp_path / "f.mp4", frames=n, fps=rate, size=(64, 48))
    out = extract(tmp_path, film, "out", fps=fps)
    want = fps_filter_count(n, rate, fps)
    names = [p.name for p in frames(out)]
    assert names == [f"{i:06d}.jpg" for i in range(1, want + 1)]
    index = json.loads((out / "index.json").read_text())
    assert index["count"] == want and index["fps"] == fps
    # each time is a real source frame's timestamp, within half an output slot (+ rounding) of the slot
    step = float(Fraction(rate)) ** -1
    for k, entry in enumerate(index["frames"]):
        assert abs(entry["time"] - k / fps) <= 0.5 / fps + step + 1e-6
        assert entry["time"] / step == pytest.approx(round(entry["time"] / step), abs=1e-3)


@pytest.mark.parametrize("fps", [12, 10, 30, 23.976])
def test_index_times_are_the_source_frames_really_shown(tmp_path: Path, fps: float) -> None:
    """A film whose frame i is grey level 5 i: every extracted frame's level says which source frame
    it shows, and index.json must give that frame's time (at 12 fps from 25, slot 0 shows 0.04 s)."""
    film = tmp_path / "coded.mkv"
    raw = b"".join(bytes([5 * i]) * (16 * 16) for i in range(50))
    subprocess.run([FFMPEG, "-v", "error", "-f", "rawvideo", "-pix_fmt", "gray", "-s", "16x16", "-r", "25",
                    "-i", "-", "-c:v", "ffv1", "-pix_fmt", "gray", str(film)], input=raw, check=True)
    out = extract(tmp_path, film, "out", fps=fps, format="png")
    index = json.loads((out / "index.json").read_text())
    shown = [round(pixels(out / f["file"]).mean() / 5) for f in index["frames"]]
    assert [f["time"] for f in index["frames"]] == pytest.approx([i / 25 for i in shown], abs=1e-6)
    assert shown[:3] == {12: [1, 3, 5], 10: [1, 3, 6], 30: [0, 1, 2], 23.976: [0, 1, 2]}[fps]


def shown_levels(out: Path) -> list[int]:
    """Which source frame each extracted frame of a coded film shows (levels wrap at 256)."""
    index = json.loads((out / "index.json").read_text())
    return [round(pixels(out / f["file"]).mean() / 5) for f in index["frames"]]


@pytest.mark.parametrize("container", ["mkv", "mp4"])
def test_variable_frame_rate_is_not_damage(tmp_path: Path, container: str) -> None:
    """Jittered 30 fps with a slow stretch (as phones and screen recorders write): nothing is dropped or
    called damaged, and every index time is the timestamp of the frame really shown."""
    expr = "(N/30 + 0.008*sin(N*7.3) + 0.1*clip(N-30,0,3))/TB"
    film = coded_film(tmp_path / f"vfr.{container}", rate=30, vf=f"settb=1/1000,setpts='{expr}'",
                      extra=("-fps_mode", "passthrough", "-enc_time_base", "1/1000"))
    times = source_times(film)
    for fps in (12, 30, "source"):
        warns: list[str] = []
        out = extract(tmp_path, film, f"out-{fps}", fps=fps, format="png", warns=warns)
        index = json.loads((out / "index.json").read_text())
        assert warns == [] and index["count"] == (50 if fps == "source" else index["expected"])
        assert [f["time"] for f in index["frames"]] == pytest.approx([times[i] for i in shown_levels(out)], abs=2e-3)


def test_a_slide_show_avi_gives_every_frame_its_picture(tmp_path: Path) -> None:
    """An AVI that stores a picture only when it changes (cinepak, as old CD-ROM films are): the demuxer
    makes up a 1-tick duration for each picture, and ffmpeg shows each until the next one. The frames
    repeat, as they should; no warning, and index.json names the picture each frame really shows."""
    film = coded_film(tmp_path / "slides.avi", frames=50, rate=15, size=32, vf="select='not(mod(n,7))'",
                      extra=("-fps_mode", "vfr"), codec=("-c:v", "cinepak"))
    times = source_times(film)
    assert len(times) == 8 and times[1] == pytest.approx(7 / 15)  # 8 pictures, each held for 7/15 s
    warns: list[str] = []
    out = extract(tmp_path, film, "out", fps=12, format="png", warns=warns)
    index = json.loads((out / "index.json").read_text())
    assert warns == [] and index["count"] == 45  # the last picture too is held 7/15 s: 56 / 15 s at 12 fps
    shown = [7 * round(pixels(out / f["file"]).mean() / 35) for f in index["frames"]]  # lossy: nearest picture
    assert [f["time"] for f in index["frames"]] == pytest.approx([i / 15 for i in shown], abs=1e-6)
    assert shown[:8] == [0] * 6 + [7] * 2


def test_start_in_an_mpeg_ts_lands_on_the_right_frame(tmp_path: Path) -> None:
    """A TS seek lands on the next keyframe after the target: CineML seeks earlier and trims."""
    film = coded_film(tmp_path / "cam.ts", frames=100, size=32,
                      codec=("-c:v", "libx264", "-qp", "0", "-preset", "ultrafast", "-g", "12"))
    for start, first in ((0.3, 8), (1.0, 25), (1.2, 30)):
        warns: list[str] = []
        out = extract(tmp_path, film, f"ts-{start}", fps="source", format="png", start=start, end=2.0, warns=warns)
        shown = shown_levels(out)  # end is exclusive: frame 50 starts at 2.0 s
        assert shown[0] == first and shown == list(range(first, 50)) and warns == [], (start, shown[:3], warns)


def test_no_preprocess_step_still_shows_square_pixels(tmp_path: Path) -> None:
    film = make_film(tmp_path / "pal.mp4", frames=5, size=(720, 576), sar="64/45")  # anamorphic 16:9 DVD
    out = extract(tmp_path, film, "out", format="png")
    index = json.loads((out / "index.json").read_text())
    assert Image.open(out / "000001.png").size == (index["width"], index["height"]) == (1024, 576)


def test_interlaced_films_are_deinterlaced(tmp_path: Path) -> None:
    film = tmp_path / "dvd.mkv"
    subprocess.run([FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=50",
                    "-frames:v", "40", "-vf", "tinterlace=mode=interleave_top,setfield=tff", "-c:v", "libx264",
                    "-flags", "+ildct+ilme", "-x264opts", "tff=1", "-qp", "0", str(film)], check=True)

    def combing(path: Path) -> float:  # odd/even line disagreement against their neighbours
        a = pixels(path).mean(axis=2)
        return float(np.abs(a[1:-1] - (a[:-2] + a[2:]) / 2).mean())

    woven = extract(tmp_path, film, "off", deinterlace="off", format="png")
    joined = extract(tmp_path, film, "auto", format="png")
    assert combing(joined / "000005.png") < 0.6 * combing(woven / "000005.png")


def test_rates_as_fractions_and_too_short_films(tmp_path: Path) -> None:
    film = make_film(tmp_path / "f.mp4", frames=48, fps=24, size=(64, 48))
    out = extract(tmp_path, film, "ntsc", fps="24000/1001")
    assert len(frames(out)) == 48  # 2 s at 23.976
    with pytest.raises(CinemlError, match=r"at fps = 2 gives no frame\. Use a higher fps"):
        extract(tmp_path, make_film(tmp_path / "blip.mp4", frames=3, fps=25, size=(64, 48)), "none", fps=2)


def test_source_rate_keeps_every_coded_frame_with_real_timestamps(tmp_path: Path) -> None:
    film = make_film(tmp_path / "ntsc.mp4", frames=61, fps="30000/1001", size=(64, 48))
    out = extract(tmp_path, film, "out", fps="source")
    assert len(frames(out)) == 61
    index = json.loads((out / "index.json").read_text())
    assert index["count"] == 61 and index["decoded_source_frames"] == 61
    assert [f["time"] for f in index["frames"]] == pytest.approx([k * 1001 / 30000 for k in range(61)], abs=1e-3)


def test_start_and_end_select_the_right_stretch(tmp_path: Path) -> None:
    film = make_film(tmp_path / "f.mp4", frames=100, fps=25, size=(96, 64), gop=50)
    whole = extract(tmp_path, film, "whole", format="png")
    part = extract(tmp_path, film, "part", format="png", start=1.0, end=3.0)
    got = frames(part)
    assert len(got) == 24  # 2 s at 12 fps
    index = json.loads((part / "index.json").read_text())
    # real source times: the 25 fps frames each 12 fps slot shows (1.04 s, the first after the seek)
    assert index["frames"][0]["time"] == pytest.approx(1.04) and index["frames"][-1]["time"] == pytest.approx(2.92)
    # the accurate seek lands on the same source frames as slots 13.. of the whole film
    for k in (0, 11, 23):
        assert np.array_equal(pixels(got[k]), pixels(frames(whole)[12 + k]))
    with pytest.raises(CinemlError, match="past the end"):
        extract(tmp_path, film, "late", start=9.0)
    with pytest.raises(CinemlError, match="must be after start"):
        extract(tmp_path, film, "backwards", start=2.0, end=1.0)


def test_ffmpeg_path_and_python_fallback_agree(tmp_path: Path) -> None:
    film = make_film(tmp_path / "pal.mp4", frames=25, fps=25, size=(180, 144), sar="16/15")
    fast = extract(tmp_path, film, "fast", chain=[(LB, LB_OPTS)], format="png")
    slow = extract(tmp_path, film, "slow", chain=[(LB, LB_OPTS), (PythonOnly(), {})], format="png")
    a, b = frames(fast), frames(slow)
    assert [p.name for p in a] == [p.name for p in b] and len(a) == 12
    for pa, pb in zip(a, b):
        x, y = pixels(pa), pixels(pb)
        assert x.shape == y.shape == (64, 64, 3)
        rows_a, rows_b = np.flatnonzero(x.max(axis=(1, 2)) > 40), np.flatnonzero(y.max(axis=(1, 2)) > 40)
        assert (rows_a[0], rows_a[-1]) == (rows_b[0], rows_b[-1]) == (8, 55)  # 768x576 -> 64x48 box
        assert np.abs(x - y)[8:56].mean() < 3  # same source frame, full chroma, two resamplers
    ia, ib = (json.loads((d / "index.json").read_text()) for d in (fast, slow))
    assert ia["frames"] == ib["frames"]


def test_index_json_describes_the_set(tmp_path: Path) -> None:
    film = make_film(tmp_path / "f.mp4", frames=30, fps=25, size=(160, 90), audio=True)
    out = extract(tmp_path, film, "out", chain=[(LB, LB_OPTS)], fps=10, format="webp", quality=80)
    index = json.loads((out / "index.json").read_text())
    assert index["count"] == 12 == len(frames(out))  # 1.2 s at 10 fps; the audio stream is ignored
    assert (index["width"], index["height"], index["format"]) == (64, 64, "webp")
    assert index["source"]["width"] == 160 and index["source"]["fps"] == 25 and index["source"]["audio"]
    assert index["chain"] == [{"use": "letterbox", "options": LB_OPTS}]
    assert index["frames"][3] == {"index": 4, "file": "000004.webp", "time": 0.32, "shot": 0}  # the 25 fps frame shown
    assert all((out / f["file"]).is_file() for f in index["frames"])
    assert Image.open(out / "000001.webp").size == (64, 64)
    stamp = (out / "index.json").stat().st_mtime_ns
    extract(tmp_path, film, "out", chain=[(LB, LB_OPTS)], fps=10, format="webp", quality=80)
    assert (out / "index.json").stat().st_mtime_ns == stamp  # complete: nothing redone


def test_truncated_film_warns_and_is_not_padded(tmp_path: Path) -> None:
    film = make_film(tmp_path / "f.mp4", frames=100, fps=25, size=(160, 120), gop=25)
    warns: list[str] = []
    out = extract(tmp_path, truncate(film, tmp_path / "half.mp4"), "out", warns=warns)
    count = len(frames(out))
    assert 15 <= count <= 29  # about half of 48, not 48 with the last frame repeated
    assert len(warns) == 1 and "half.mp4 looks damaged" in warns[0] and "of the 4.00 s it declares" in warns[0]
    assert f"{count} frames were extracted where 48 were expected" in warns[0]
    warns.clear()
    out = extract(tmp_path, tmp_path / "half.mp4", "every", warns=warns, fps="source")
    assert len(frames(out)) < 60 and len(warns) == 1 and "of the 4.00 s it declares" in warns[0]


def test_garbage_inside_warns_and_drops_the_padding(tmp_path: Path) -> None:
    film = make_film(tmp_path / "f.mp4", frames=100, fps=25, size=(160, 120), gop=25)
    warns: list[str] = []
    out = extract(tmp_path, garble(film, tmp_path / "bad.mp4"), "out", warns=warns, format="png")
    assert len(warns) == 1 and "bad.mp4 looks damaged" in warns[0] and "left out" in warns[0]
    got = frames(out)
    assert 24 < len(got) < 48
    # testsrc2 changes every frame: a repeated image would be padding across the damaged stretch
    images = [pixels(p) for p in got]
    assert all(not np.array_equal(a, b) for a, b in zip(images, images[1:]))
    index = json.loads((out / "index.json").read_text())
    times = [f["time"] for f in index["frames"]]
    assert index["count"] == len(got) and times == sorted(times) and times[-1] > 3.5
    assert not (out / ".renumbering").exists()


def test_broken_or_longer_sound_does_not_touch_the_picture(tmp_path: Path) -> None:
    film = make_film(tmp_path / "f.mp4", frames=100, fps=25, size=(160, 120))
    warns: list[str] = []
    broken = add_sound(film, tmp_path / "broken-sound.mkv", seconds=4, broken=True)
    assert len(frames(extract(tmp_path, broken, "broken", warns=warns))) == 48 and warns == []
    # The sound outlasting the picture makes the container declare 9 s: not damage, no padding.
    longer = add_sound(film, tmp_path / "long-sound.mp4", seconds=9)
    ctx = make_context(tmp_path, EX, options={}, inputs={"source": longer}, output=tmp_path / "long")
    logs: list[str] = []
    ctx.warn, ctx.log = warns.append, logs.append
    EX.extract(ctx, [])
    assert len(frames(ctx.output)) == 48 and warns == []
    assert any("the picture ends at 4.0 s while the sound runs to 9.0 s" in m for m in logs), logs


def test_resume_point_keeps_only_complete_contiguous_frames(tmp_path: Path) -> None:
    for name in ("000001.jpg", "000002.jpg", "000003.jpg", "000005.jpg", ".000004.jpg.tmp", "000004.jpg.tmp"):
        (tmp_path / name).write_bytes(b"x")
    assert resume_point(tmp_path, "jpg") == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["000001.jpg", "000002.jpg", "000003.jpg"]


SCRIPT = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from cineml.testing import make_context
    from cineml_plugins.extract_fps import FpsExtractor
    from cineml_plugins.letterbox import Letterbox

    class Slow(Letterbox):  # Python-only: no ffmpeg filter, a little work per frame
        name = "slow"
        def ffmpeg_filter(self, options, width, height, sar):
            return None
        def transform(self, image, options):
            time.sleep(0.004)
            return super().transform(image, options)

    film, out, path = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    ex = FpsExtractor()
    step = Letterbox() if path == "fast" else Slow()
    opts = {"size": 256 if path == "fast" else 64, "fill": "black", "resample": "lanczos",
            "grayscale": False}
    ctx = make_context(out.parent, ex, options={"fps": "source", "format": "png", "dedupe": 3.0},
                       inputs={"source": film}, output=out)
    ex.extract(ctx, [(step, opts)])
""")


@pytest.mark.parametrize("path", ["fast", "python"])
def test_resume_after_kill_equals_a_clean_run(tmp_path: Path, path: str) -> None:
    film = make_film(tmp_path / "f.mp4", frames=250, fps=25, size=(320, 240))
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    run = [sys.executable, str(script), str(film)]
    staging = tmp_path / "staging"
    proc = subprocess.Popen([*run, str(staging), path])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and proc.poll() is None:
        if staging.is_dir() and len(list(staging.glob("*.png"))) >= 40:
            break
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (staging / "index.json").exists(), "extraction finished before it could be killed"
    time.sleep(0.3)
    killed = len(list(staging.glob("*.png")))
    time.sleep(0.3)
    assert len(list(staging.glob("*.png"))) == killed  # no orphaned ffmpeg still writing
    assert 40 <= killed < 250
    subprocess.run([*run, str(staging), path], check=True)
    clean = tmp_path / "clean"
    subprocess.run([*run, str(clean), path], check=True)
    a, b = frames(staging), frames(clean)
    index = json.loads((clean / "index.json").read_text())
    assert [p.name for p in a] == [p.name for p in b] and len(a) == index["kept"] and index["count"] == 250
    assert 0 < index["kept"] < 250  # the near copies dedupe drops are dropped alike
    assert all(pa.read_bytes() == pb.read_bytes() for pa, pb in zip(a, b))
    for name in ("index.json", "shots.json"):
        assert (staging / name).read_text() == (clean / name).read_text()
    assert not [p for p in staging.iterdir() if p.name.endswith(".tmp") or p.name.startswith(".thumbs")]


def test_missing_film_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CinemlError, match="Film not found"):
        extract(tmp_path, tmp_path / "gone.mp4", "out")
    ctx = make_context(tmp_path, EX, output=tmp_path / "out")
    with pytest.raises(CinemlError, match=r"got no film: set source in \[project\]"):
        EX.extract(ctx, [])


def test_the_plan_says_at_which_frame_an_interrupted_extraction_resumes(tmp_path: Path) -> None:
    partial = tmp_path / "staging"
    partial.mkdir()
    assert EX.resume_point(partial) is None
    for k in (1, 2, 3):
        (partial / f"{k:06d}.jpg").write_bytes(b"")
    (partial / "index.json.tmp").write_text("")  # not a frame
    assert EX.resume_point(partial) == "frame 4"
