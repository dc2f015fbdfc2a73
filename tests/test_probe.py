"""probe(): what CineML reads from real films, and clear errors for things that are not films."""

from __future__ import annotations

import os
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from films import make_audio, make_film, make_image, truncate

from cineml import CinemlError
from cineml_plugins.extract_fps import register_commands
from cineml_plugins.ffmpeg import display_size, fps_frame_count, probe, round_half_away


def test_probe_reads_size_sar_fps_duration_audio(tmp_path: Path) -> None:
    film = make_film(tmp_path / "pal.mp4", frames=50, fps=25, size=(720, 576), sar="16/15", audio=True)
    info = probe(film)
    assert (info.width, info.height, info.sar) == (720, 576, (16, 15))
    assert (info.display_width, info.display_height) == (768, 576)
    assert info.codec == "h264" and info.fps == 25
    assert info.duration == pytest.approx(2.0, abs=0.03)
    assert len(info.audio) == 1 and info.audio[0].startswith("aac")
    assert info.expected_frames == 50
    assert info.size_bytes == film.stat().st_size


def test_probe_ntsc_rate_portrait_and_odd_mkv(tmp_path: Path) -> None:
    info = probe(make_film(tmp_path / "ntsc.mp4", frames=48, fps="24000/1001", size=(90, 160)))
    assert info.fps == pytest.approx(24000 / 1001, abs=1e-9)  # ffmpeg prints 23.98; snapped back
    assert (info.display_width, info.display_height) == (90, 160) and info.sar == (1, 1)
    assert info.audio == []
    odd = probe(make_film(tmp_path / "odd.mkv", frames=10, size=(333, 201), codec="ffv1"))
    assert (odd.width, odd.height, odd.codec) == (333, 201, "ffv1")


def test_probe_phone_footage_rotation_swaps_the_frame(tmp_path: Path) -> None:
    info = probe(make_film(tmp_path / "phone.mp4", frames=5, size=(160, 90), rotation=90))
    assert info.rotation == 90  # ffmpeg turns the frames upright before any filter sees them
    assert (info.width, info.height, info.display_width, info.display_height) == (90, 160, 90, 160)


def test_frame_count_rule_and_display_size() -> None:
    assert fps_frame_count(784, 12) == 9408
    assert fps_frame_count(79.5, 12) == 954
    assert fps_frame_count(10.2, 12) == 122
    assert fps_frame_count(79.5, 5) == 398  # 397.5 rounds half away from zero
    assert round_half_away(-2.5) == -3
    assert display_size(720, 576, (16, 15)) == (768, 576)
    assert display_size(720, 480, (8, 9)) == (640, 480)
    assert display_size(640, 480, (0, 1)) == (640, 480)  # unknown SAR means square pixels


@pytest.mark.parametrize("kind, words", [
    ("missing", "not found"),
    ("folder", "is a folder"),
    ("empty", "empty (0 bytes)"),
    ("text", "not a video"),
    ("text.mp4", "not a video"),
    ("image", "still image"),
    ("image.mp4", "still image"),
    ("no-moov", "moov atom"),
    ("audio-only", "no video stream"),
])
def test_probe_rejects_non_films_with_clear_errors(tmp_path: Path, kind: str, words: str) -> None:
    path = tmp_path / f"bad-{kind}"
    if kind == "folder":
        path.mkdir()
    elif kind == "empty":
        path.write_bytes(b"")
    elif kind.startswith("text"):
        path = tmp_path / ("notes.txt" if kind == "text" else "notes.mp4")
        path.write_text("INT. KITCHEN - NIGHT\nNot a film, a screenplay.\n")
    elif kind.startswith("image"):
        path = make_image(tmp_path / "still.png")
        if kind == "image.mp4":
            path = path.rename(tmp_path / "still.mp4")
    elif kind == "no-moov":
        film = make_film(tmp_path / "full.mp4", frames=25, faststart=False)
        path = truncate(film, tmp_path / "cut.mp4", 0.5)
    elif kind == "audio-only":
        path = make_audio(tmp_path / "sound.m4a")
    with pytest.raises(CinemlError) as err:
        probe(path)
    message = str(err.value)
    assert words in message and path.name in message
    if kind.startswith("text"):  # a screenplay named .mp4 is not a truncated film
        assert "It is a text file" in message and "truncated" not in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root can read files and enter folders whatever their mode")
def test_probe_unreadable_file_and_folder(tmp_path: Path) -> None:
    film = make_film(tmp_path / "locked" / "film.mp4", frames=5)
    film.chmod(0)
    with pytest.raises(CinemlError, match="Cannot read the film .*permission denied"):
        probe(film)
    film.chmod(0o644)
    film.parent.chmod(0)
    try:
        with pytest.raises(CinemlError, match="Cannot reach the film .*permission denied on a folder"):
            probe(film)
    finally:
        film.parent.chmod(0o755)


def test_probe_cli_command_prints_table(tmp_path: Path) -> None:
    @click.group()
    def cli() -> None:
        pass

    register_commands(cli)
    film = make_film(tmp_path / "pal.mp4", frames=25, size=(720, 576), sar="16/15", audio=True)
    result = CliRunner().invoke(cli, ["probe", str(film)], terminal_width=120)
    assert result.exit_code == 0, result.output
    for text in ("720x576", "SAR 16:15", "768x576 (4:3)", "25.000 fps", "progressive", "aac", "12 frames",
                 "(fps = 12 in [extract])"):
        assert text in result.output
    deep = tmp_path / ("a-very-long-folder-name-for-a-film-" * 4)
    deep.mkdir()
    film = film.rename(deep / "pal.mp4")
    result = CliRunner().invoke(cli, ["probe", str(film)], terminal_width=60)
    assert str(film) in result.output  # the path on one line, not broken inside a word
    bad = CliRunner().invoke(cli, ["probe", str(tmp_path / "nope.mp4")])
    assert bad.exit_code == 1 and "not found" in bad.output
