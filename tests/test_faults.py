"""kill -9 of a real `cineml run` mid-stage, then a re-run: the outputs equal a clean run's and no child
process outlives the kill.

Extraction and training have their own kill tests beside the code they test
(tests/test_extract.py::test_resume_after_kill_equals_a_clean_run,
tests/test_stylegan2_training.py::test_sigkill_mid_run_then_rerun_resumes); this file holds the
MP4 encode, whose ffmpeg MoviePy starts, and the synthetic film's encode.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio_ffmpeg
import pytest
from films import make_film

from cineml.testing import make_project

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="dying with the parent is Linux's prctl")

ENCODE = """
[project]
source = "film.mp4"

[extract]
use = "fps"
fps = 12

[[preprocess]]
use = "letterbox"
size = 256

[[compose]]
use = "animation"
input = "frames"
fps = 24
seconds = 20
preset = "veryslow"
output = "frames.mp4"
"""


def cineml(*args: object, **kw: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "CINEML_LOAD_PLUGINS": ""}
    return subprocess.run([sys.executable, "-m", "cineml", "-q", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600, **kw)


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes that name ``text`` (a project folder), from /proc."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().split(b"\0")
        except OSError:  # the process ended while we looked
            continue
        line = " ".join(a.decode(errors="replace") for a in args if a)
        if text in line:
            found.append(line)
    return found


def kill_when(proc: subprocess.Popen, ready: callable, timeout: float = 300) -> None:
    end = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"cineml finished before it could be killed: {proc.stderr.read()}"
        assert time.monotonic() < end, "the stage never started"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def assert_nothing_goes_on(root: Path) -> None:
    """After the kill no process works for the project: no file in it changes (an orphaned ffmpeg would go on
    encoding, then finish its file) and no process names it."""
    def sizes() -> dict[Path, int]:
        return {p: p.stat().st_size for p in root.rglob("*") if p.is_file()}

    before = sizes()
    time.sleep(1.5)
    assert sizes() == before
    assert processes_mentioning(str(root)) == []


def test_kill_during_an_mp4_encode_leaves_no_ffmpeg_and_the_rerun_equals_a_clean_run(tmp_path):
    film = make_film(tmp_path / "film.mp4", seconds=2, fps=12)
    clean = make_project(tmp_path / "clean", ENCODE, files={"film.mp4": film.read_bytes()})
    assert cineml("run", clean).returncode == 0
    expected = imageio_ffmpeg.count_frames_and_secs(str(clean.parent / "art/frames.mp4"))[0]
    assert expected == 480

    root = tmp_path / "killed"
    manifest = make_project(root, ENCODE, files={"film.mp4": film.read_bytes()})
    assert cineml("run", manifest, "--to", "extract").returncode == 0
    proc = subprocess.Popen([sys.executable, "-m", "cineml", "-q", "run", str(manifest)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "CINEML_LOAD_PLUGINS": ""})

    def encoding() -> bool:  # MoviePy's ffmpeg is writing the staging file
        return any(p.stat().st_size > 0 for p in (root / ".cineml/staging").glob("compose*/*.mp4"))

    kill_when(proc, encoding)
    assert_nothing_goes_on(root)
    assert not (root / "art/frames.mp4").exists()
    rerun = cineml("run", manifest)
    assert rerun.returncode == 0, rerun.stderr
    assert imageio_ffmpeg.count_frames_and_secs(str(root / "art/frames.mp4"))[0] == expected


def test_kill_while_rendering_the_demo_film_leaves_no_ffmpeg_and_the_rerun_equals_a_clean_run(tmp_path):
    manifest_text = '[project]\nsource = "footage/film.mp4"\n\n[source]\nuse = "synthetic"\nseconds = 6\n'
    clean = make_project(tmp_path / "clean", manifest_text)
    assert cineml("run", clean).returncode == 0
    root = tmp_path / "killed"
    manifest = make_project(root, manifest_text)
    proc = subprocess.Popen([sys.executable, "-m", "cineml", "-q", "run", str(manifest)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "CINEML_LOAD_PLUGINS": ""})

    def rendering() -> bool:
        return any(p.stat().st_size > 0 for p in (root / ".cineml/staging").rglob("*.mp4"))

    kill_when(proc, rendering)
    assert_nothing_goes_on(root)
    assert not (root / "footage/film.mp4").exists()
    assert cineml("run", manifest).returncode == 0
    film, reference = root / "footage/film.mp4", clean.parent / "footage/film.mp4"
    assert imageio_ffmpeg.count_frames_and_secs(str(film)) == imageio_ffmpeg.count_frames_and_secs(str(reference))
