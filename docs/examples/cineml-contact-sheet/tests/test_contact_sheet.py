"""The contact-sheet layout, run through the real engine and checked pixel by pixel."""

import io
import json
import re
from importlib.metadata import version

import numpy as np
import pytest
from cineml_contact_sheet import contact_sheet
from PIL import Image

import cineml
from cineml import CinemlError
from cineml.testing import registry_with, run_project

COLORS = [(220, 40, 40), (40, 200, 60), (50, 80, 230), (230, 200, 40), (200, 60, 200), (40, 200, 200)]
BAND, BACKGROUND = (0x26, 0x26, 0x26), (0x14, 0x14, 0x14)  # the default header and sheet colours

MANIFEST = """
[project]
name = "Night Walk"

[[compose]]
use = "contact-sheet"
input = "stills/*.png"
columns = 3
gutter = 6
margin = 10
labels = "none"
output = "sheet.png"
"""


def png(color, size=(64, 36)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, "PNG")
    return buffer.getvalue()


def stills(count: int) -> dict[str, bytes]:
    return {f"stills/{k + 1:03d}.png": png(color) for k, color in enumerate(COLORS[:count])}


def box(pixels: np.ndarray, color, tol: int = 3) -> tuple[int, int, int, int]:
    """(left, top, width, height) of the pixels of ``color``."""
    ys, xs = np.nonzero(np.all(np.abs(pixels.astype(int) - color) <= tol, axis=-1))
    assert len(xs), f"no pixel of colour {color}"
    return int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def test_installed_plugin_registers_the_layout_and_the_vignette():
    registry = registry_with()
    info = registry.plugins["contact-sheet"]
    assert info.version == version("cineml-contact-sheet") and info.origin == "entry point"
    assert info.provides == {"layouts": ["contact-sheet"], "preprocessors": ["vignette"]}
    assert registry.impls["layouts"]["contact-sheet"].plugin == "contact-sheet"


def test_sheet_geometry_through_the_engine(cineml_project):
    manifest = cineml_project(MANIFEST, files=stills(5))
    assert run_project(manifest)["status"] == "finished"
    pixels = np.asarray(Image.open(manifest.parent / "art/sheet.png").convert("RGB"))

    boxes = [box(pixels, color) for color in COLORS[:5]]
    assert all(b[2:] == (64, 36) for b in boxes)  # thumbnails as wide as the first image
    top = boxes[0][1]
    for k, (left, y, _, _) in enumerate(boxes):  # row by row, margin 10, gutter 6
        assert (left, y) == (10 + (k % 3) * (64 + 6), top + (k // 3) * (36 + 6))
    assert pixels.shape[1] == 2 * 10 + 3 * 64 + 2 * 6
    assert pixels.shape[0] == top + 2 * 36 + 6 + 10

    band_height = top - 10  # the header band, then the margin, then the grid
    assert band_height > 20
    band = pixels[:band_height].astype(int)
    assert np.all(band[:10] == BAND) and np.all(band[:, :10] == BAND)  # band colour around the text
    assert (band.min(axis=-1) > 200).sum() > 40  # light header text on the band
    assert np.all(pixels[band_height:top] == BACKGROUND)
    assert np.all(pixels[top + 42:top + 78, 150:214] == BACKGROUND)  # the sixth cell is empty


def test_title_defaults_to_the_project_name(cineml_project):
    manifest = cineml_project(MANIFEST.replace('labels = "none"\n', ""), files=stills(4))
    run_project(manifest)
    made = np.asarray(Image.open(manifest.parent / "art/sheet.png").convert("RGB"))
    images = cineml.load_images(sorted((manifest.parent / "stills").glob("*.png")))
    options = dict(columns=3, gutter=6, margin=10)
    assert np.array_equal(made, np.asarray(contact_sheet(images, title="Night Walk", **options)))
    other = np.asarray(contact_sheet(images, title="Day Walk", **options))
    changed_rows = np.nonzero(np.any(other != made, axis=(1, 2)))[0]
    assert len(changed_rows) and changed_rows.max() < box(made, COLORS[0])[1]  # only the header


def test_header_counts_the_images():
    images = [Image.new("RGB", (64, 36), color) for color in COLORS]
    five = np.asarray(contact_sheet(images[:5], columns=3, title="T", labels="none"))
    six = np.asarray(contact_sheet(images, columns=3, title="T", labels="none"))
    top = box(five, COLORS[0])[1]
    assert five.shape == six.shape
    assert not np.array_equal(five[:top], six[:top])  # "5 images" / "6 images"
    grid = np.s_[top:top + 36, :]  # first row of thumbnails: identical
    assert np.array_equal(five[grid], six[grid])


def test_labels_show_film_time_bottom_right(tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    paths = []
    for k, color in enumerate(COLORS[:3]):
        paths.append(frames / f"{k + 1:06d}.png")
        paths[-1].write_bytes(png(color, (96, 54)))
    (frames / "index.json").write_text(json.dumps(
        {"frames": [{"file": p.name, "time": 12.5 * k} for k, p in enumerate(paths)]}))
    images = cineml.load_images(paths)

    def sheet(labels):
        return np.asarray(contact_sheet(images, columns=3, header=False, margin=4, gutter=4, labels=labels))

    auto, plain = sheet("auto"), sheet("none")
    assert np.array_equal(auto, sheet("time")) and not np.array_equal(auto, sheet("index"))
    for k in range(3):
        x = 4 + k * (96 + 4)
        tile, bare = auto[4:58, x:x + 96], plain[4:58, x:x + 96]
        assert np.all(bare == COLORS[k])
        ys, xs = np.nonzero(np.any(tile != bare, axis=-1))
        assert ys.min() > 54 // 2 and xs.min() > 96 // 2  # the label sits bottom-right
        assert np.all(tile[ys.max() - 1, xs.max() - 1] == 0)  # on its black box
        assert (tile.min(axis=-1) > 200).sum() > 10  # in white text


@pytest.mark.parametrize("line, words", [
    ("columns = 0", "compose[0].columns: 0 is out of range"),
    ('background = "blurple"', "compose[0].background: 'blurple' is not valid: 'blurple' is not a colour"),
    ('labels = "frame"', "compose[0].labels: 'frame' is not valid"),
])
def test_bad_options_fail_before_anything_is_drawn(cineml_project, line, words):
    key = line.split(" = ")[0]
    text = re.sub(rf"^{key} = .*$", line, MANIFEST, flags=re.M) if key in MANIFEST else MANIFEST + line
    manifest = cineml_project(text, files=stills(2))
    with pytest.raises(CinemlError, match=re.escape(words)):
        run_project(manifest)
    assert not (manifest.parent / "art").exists()


def test_no_images_is_a_clear_error():
    with pytest.raises(CinemlError, match="contact-sheet layout got no images"):
        contact_sheet([])
