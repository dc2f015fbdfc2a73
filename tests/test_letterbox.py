"""Letterbox geometry, measured from the pixels of real extracted frames and of Pillow output."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from films import make_film
from PIL import Image, ImageColor

from cineml.testing import make_context
from cineml_plugins.extract_fps import FpsExtractor
from cineml_plugins.ffmpeg import display_size
from cineml_plugins.letterbox import Letterbox, check_fill, check_size, content_box

LB = Letterbox()


def opts(**kw: object) -> dict:
    return {"size": 64, "fill": "black", "resample": "lanczos", "grayscale": False, **kw}


def measured_box(image: Image.Image, fill: str, tol: int = 40) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the pixels that differ from the bar colour."""
    a = np.asarray(image.convert("RGB")).astype(int)
    diff = np.abs(a - np.array(ImageColor.getrgb(fill))[None, None, :]).max(axis=2) > tol
    rows, cols = np.flatnonzero(diff.any(axis=1)), np.flatnonzero(diff.any(axis=0))
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


def assert_letterboxed(image: Image.Image, size: int, display: tuple[int, int], fill: str) -> None:
    """Square, whole frame inside (aspect within 1 px), centred within 1 px, bars of ``fill``."""
    assert image.size == (size, size)
    x, y, w, h = measured_box(image, fill)
    dw, dh = display
    if dw >= dh:
        assert w == size and abs(h - size * dh / dw) <= 1, (w, h, display)
    else:
        assert h == size and abs(w - size * dw / dh) <= 1, (w, h, display)
    assert abs(x - (size - w) / 2) <= 1 and abs(y - (size - h) / 2) <= 1, (x, y, w, h)
    bars = np.asarray(image.convert("RGB")).astype(int)
    corner = bars[0, 0] if y or x else None
    if corner is not None:
        assert np.abs(corner - np.array(ImageColor.getrgb(fill))).max() <= 3


FILMS = {  # name: (stored size, SAR, display rotation)
    "landscape": ((320, 180), None, None),
    "portrait": ((90, 160), None, None),
    "pal-sar-16:15": ((360, 288), "16/15", None),
    "odd": ((333, 201), None, None),
    "phone-rotated": ((160, 90), None, 90),
}


@pytest.mark.parametrize("name", FILMS)
def test_extracted_frames_are_letterboxed_by_display_aspect(tmp_path: Path, name: str) -> None:
    (w, h), sar, rotation = FILMS[name]
    suffix = ".mkv" if w % 2 or h % 2 else ".mp4"
    film = make_film(tmp_path / f"{name}{suffix}", frames=6, fps=12, size=(w, h), sar=sar,
                     codec="ffv1" if suffix == ".mkv" else "libx264", rotation=rotation)
    display = display_size(w, h, (16, 15) if sar else (1, 1))
    if rotation:
        display = display[::-1]  # shown upright: a portrait frame
    ex = FpsExtractor()
    for fill in ("black", "#ff00ff"):
        out = tmp_path / f"out-{fill}"
        ctx = make_context(tmp_path, ex, options={"format": "png"}, inputs={"source": film}, output=out)
        ex.extract(ctx, [(LB, opts(fill=fill))])
        frames = sorted(out.glob("*.png"))
        assert len(frames) == 6
        for frame in frames[::3]:
            assert_letterboxed(Image.open(frame), 64, display, fill)


@pytest.mark.parametrize("display", [(768, 576), (1920, 800), (90, 160), (333, 201), (64, 64)])
def test_transform_geometry(display: tuple[int, int]) -> None:
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(60, 255, (display[1], display[0], 3), dtype=np.uint8))
    out = LB.transform(image, opts(fill="#102030"))
    assert out.mode == "RGB"
    assert_letterboxed(out, 64, display, "#102030")
    assert measured_box(out, "#102030") == content_box(*display, 64)


def test_grayscale_frames_are_one_channel_in_every_format_and_path(tmp_path: Path) -> None:
    film = make_film(tmp_path / "a.mp4", frames=4, fps=12, size=(160, 90))
    ex = FpsExtractor()
    for fmt in ("png", "jpg"):  # png: all inside ffmpeg; jpg: ffmpeg filters, Pillow encodes
        out = tmp_path / fmt
        ex.extract(make_context(tmp_path, ex, options={"format": fmt}, inputs={"source": film}, output=out),
                   [(LB, opts(grayscale=True))])
        frame = Image.open(out / f"000001.{fmt}")
        assert frame.mode == "L" and frame.size == (64, 64)
        assert_letterboxed(frame, 64, (160, 90), "black")
    assert LB.transform(Image.new("RGB", (40, 30), "red"), opts(grayscale=True)).mode == "L"


def test_resample_choices_all_work_in_both_paths() -> None:
    image = Image.new("RGB", (120, 90), "white")
    for method in ("lanczos", "bicubic", "bilinear", "area", "nearest"):
        out = LB.transform(image, opts(resample=method))
        assert measured_box(out, "black") == content_box(120, 90, 64)
        assert "flags=" in LB.ffmpeg_filter(opts(resample=method), 120, 90, (1, 1))


def test_ffmpeg_filter_uses_display_aspect_and_ends_square() -> None:
    graph = LB.ffmpeg_filter(opts(size=512), 720, 576, (16, 15))
    assert graph.startswith("scale=512:384:flags=lanczos")  # 768x576 (4:3) fitted into 512
    assert "pad=512:512:0:64:color=0x000000" in graph and graph.endswith("setsar=1")
    gray = LB.ffmpeg_filter(opts(size=256, grayscale=True, fill="white"), 576, 720, (1, 1))
    assert "color=0xffffff" in gray and "format=gray" in gray and gray.endswith("setsar=1")


def test_option_checks_explain_what_is_valid() -> None:
    assert check_size(512) is None and check_size(4) is None
    assert "256 and 512" in check_size(500)
    assert "1024 and 2048" in check_size(1500)
    assert "too small" in check_size(2)
    assert check_fill("black") is None and check_fill("#336699") is None
    assert "not a colour" in check_fill("blurple")
    declared = {o.name: o for o in LB.options}
    assert declared["size"].default == 512 and declared["fill"].default == "black"
    assert declared["resample"].default == "lanczos" and declared["grayscale"].default is False
