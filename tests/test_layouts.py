"""Layouts and layout helpers, measured from the pixels they draw."""

from __future__ import annotations

import inspect
import json
import os

import numpy as np
import pytest
from PIL import Image

import cineml
from cineml import CinemlError
from cineml.imaging import even_size, fit, label_text, load_images, metadata, parse_color, timecode
from cineml.testing import make_context
from cineml_plugins import layouts as L

MAGENTA = (255, 0, 255)


def solid(color, size=(20, 10), mode="RGB"):
    return Image.new(mode, size, color)


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """(start, length) of each run of True in a 1-D mask."""
    padded = np.concatenate([[False], mask, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return [(int(a), int(b - a)) for a, b in zip(edges[::2], edges[1::2])]


def is_color(pixels: np.ndarray, color, tol=12) -> np.ndarray:
    return np.all(np.abs(pixels.astype(int) - np.array(color)) <= tol, axis=-1)


# --- helpers --------------------------------------------------------------------------------------


def test_parse_color_accepts_manifest_spellings_and_rejects_the_rest():
    assert parse_color("black") == (0, 0, 0)
    assert parse_color("#fff") == (255, 255, 255)
    assert parse_color("#0b0c0d") == (11, 12, 13)
    assert parse_color([255, 140, 0]) == (255, 140, 0)
    for bad in ("blurple", "#12", [1, 2], [0, 0, 256], [True, 0, 0], 3, None):
        with pytest.raises(CinemlError, match="not a colour"):
            parse_color(bad)


def test_fit_keeps_aspect_with_bars_or_crops_with_cover():
    wide = solid((200, 0, 0), (40, 10))
    boxed = np.asarray(fit(wide, (20, 20), fill=MAGENTA))
    assert boxed.shape == (20, 20, 3)
    rows = runs(is_color(boxed[:, 10], (200, 0, 0)))
    assert rows == [(8, 5)] or rows == [(7, 5)] or rows[0][1] == 5  # 40x10 -> 20x5, centred
    assert is_color(boxed[0, 10], MAGENTA)
    covered = np.asarray(fit(wide, (20, 20), cover=True))
    assert is_color(covered, (200, 0, 0)).all()
    assert fit(solid(128, (9, 9), "L"), (4, 4)).mode == "L"


def test_even_size_pads_odd_sides_only():
    assert even_size(solid((1, 2, 3), (65, 47))).size == (66, 48)
    image = solid((1, 2, 3), (64, 48))
    assert even_size(image) is image


def test_metadata_from_names_and_frame_index(tmp_path):
    assert metadata(tmp_path / "fakes000120.png")["kimg"] == 120
    assert metadata(tmp_path / "fakes000120.5.png")["kimg"] == 120.5
    assert metadata(tmp_path / "fakes000000_040.png")["kimg"] == 0.04  # the stylegan2 trainer's fractional names
    assert metadata(tmp_path / "seed0042.png")["seed"] == 42
    assert metadata(tmp_path / "fakes_init.png")["kimg"] is None
    frames = tmp_path / "frames"
    frames.mkdir()
    (frames / "index.json").write_text(json.dumps({"frames": [
        {"file": "000001.jpg", "time": 0.0}, {"file": "000002.jpg", "time": 83.4}]}))
    for name in ("000001.jpg", "000002.jpg"):
        solid((9, 9, 9)).save(frames / name)
    solid(77, (8, 8), "L").save(tmp_path / "seed0007.png")
    loaded = load_images([frames / "000001.jpg", frames / "000002.jpg", tmp_path / "seed0007.png"])
    assert [im.info["cineml"]["index"] for im in loaded] == [0, 1, 2]
    assert loaded[1].info["cineml"]["time"] == 83.4
    assert label_text(loaded[1], "time") == "01:23.40"
    assert loaded[2].mode == "L" and label_text(loaded[2], "seed") == "seed 7"


def test_load_images_names_the_broken_file(tmp_path):
    bad = tmp_path / "seed0001.png"
    bad.write_bytes(b"not a png")
    with pytest.raises(CinemlError, match="seed0001.png"):
        load_images([bad])


def test_images_load_upright_and_transparent_is_black(tmp_path):
    phone = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 to display
    phone.save(tmp_path / "phone.jpg", exif=exif)
    grey = Image.new("LA", (4, 4), (255, 0))  # fully transparent white
    grey.save(tmp_path / "la.png")
    upright, la = load_images([tmp_path / "phone.jpg", tmp_path / "la.png"])
    assert upright.size == (20, 40)
    assert la.mode == "L" and la.getpixel((1, 1)) == 0


def test_frame_times_follow_a_rewritten_index(tmp_path):
    (tmp_path / "000001.png").write_bytes(b"")
    (tmp_path / "index.json").write_text(json.dumps({"frames": [{"file": "000001.png", "time": 1.0}]}))
    assert metadata(tmp_path / "000001.png")["time"] == 1.0
    (tmp_path / "index.json").write_text(json.dumps({"frames": [{"file": "000001.png", "time": 9.5}]}))
    os.utime(tmp_path / "index.json", ns=(1, 10**18))
    assert metadata(tmp_path / "000001.png")["time"] == 9.5


def test_timecodes_never_show_sixty_seconds():
    assert [timecode(t) for t in (83.4, 59.996, 119.999, 3600.0)] == ["01:23.40", "01:00.00", "02:00.00",
                                                                        "1:00:00.00"]


def test_function_defaults_match_declared_options():
    for layout in (L.grid, L.fakes_grid, L.filmstrip, L.windows):
        params = inspect.signature(layout.func).parameters
        for option in layout.options:
            assert params[option.name].default == option.default, (layout.name, option.name)


# --- grid -----------------------------------------------------------------------------------------


def test_grid_geometry_and_gutters_from_pixels():
    colors = [(40 * k, 255 - 30 * k, 100) for k in range(7)]
    sheet = L.grid([solid(c) for c in colors], columns=3, gutter=4, margin=6, background="#ff00ff")
    assert sheet.size == (3 * 20 + 2 * 4 + 2 * 6, 3 * 10 + 2 * 4 + 2 * 6)
    pixels = np.asarray(sheet)
    tiles_x = runs(~is_color(pixels[6 + 5], MAGENTA, tol=0))
    tiles_y = runs(~is_color(pixels[:, 6 + 10], MAGENTA, tol=0))
    assert tiles_x == [(6, 20), (30, 20), (54, 20)]
    assert tiles_y == [(6, 10), (20, 10), (34, 10)]
    # Filled row by row; the last two cells of a 3x3 grid of seven stay background.
    assert is_color(pixels[20 + 5, 30 + 10], colors[4]).all()
    assert is_color(pixels[34 + 5, 30 + 10], MAGENTA, tol=0).all()


def test_grid_auto_shape_greyscale_and_labels():
    images = [solid(30 * k, (16, 16), "L") for k in range(5)]
    sheet = L.grid(images, gutter=0, margin=0)
    assert sheet.mode == "L" and sheet.size == (48, 32)  # 5 images -> 3 x 2
    big = [solid((0, 0, 200), (64, 64)) for _ in range(2)]
    for k, image in enumerate(big):
        image.info["cineml"] = {"index": k, "seed": 40 + k}
    plain = np.asarray(L.grid(big, margin=0, gutter=0))
    labelled = np.asarray(L.grid(big, margin=0, gutter=0, labels="seed"))
    changed = np.any(plain != labelled, axis=-1)
    assert changed[40:, :32].any() and not changed[:20].any()  # a caption in the lower left


def test_fakes_grid_is_edge_to_edge_with_stylegan_shape():
    assert L.stylegan_shape(1000, (1024, 1024)) == (7, 4)
    assert L.stylegan_shape(1000, (512, 512)) == (15, 8)
    assert L.stylegan_shape(1000, (256, 256)) == (30, 16)
    colors = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]
    sheet = L.fakes_grid([solid(c, (8, 8)) for c in colors], columns=4)
    assert sheet.size == (32, 8)
    pixels = np.asarray(sheet)
    for k, color in enumerate(colors):
        assert is_color(pixels[:, 8 * k:8 * k + 8], color, tol=0).all()


# --- filmstrip ------------------------------------------------------------------------------------


def perforation_runs(pixels: np.ndarray, axis_line: np.ndarray) -> list[tuple[int, int]]:
    return runs(is_color(axis_line, MAGENTA, tol=0))


def test_filmstrip_perforations_four_per_frame_each_edge():
    frames = [solid((255, 255, 255), (60, 45)) for _ in range(3)]
    sheet = L.filmstrip(frames, frames_per_strip=3, background="#ff00ff", base="black",
                        title="", edge_code="none", margin=0)
    pixels = np.asarray(sheet)
    geo = L.FilmGeometry((60, 45), 4, 0)
    assert sheet.size == (3 * geo.pitch, geo.film)
    # Frames: white runs along the middle row give the frame pitch.
    white = runs(is_color(pixels[geo.film // 2], (255, 255, 255), tol=30))
    assert len(white) == 3
    pitch = white[1][0] - white[0][0]
    # Perforations: magenta holes along a row through each edge's perforation band.
    bands = runs(is_color(pixels, MAGENTA, tol=0).any(axis=1))
    assert len(bands) == 2  # one row of perforations along each edge
    for start, height in (bands[0], bands[-1]):
        holes = runs(is_color(pixels[start + height // 2], MAGENTA, tol=0))
        assert len(holes) == 12
        centres = np.array([a + (n - 1) / 2 for a, n in holes])
        assert np.allclose(np.diff(centres), pitch / 4, atol=1.01)
        assert abs(centres[0] - pitch / 8) <= 1.01
    # The holes sit outside the picture area on both edges.
    assert bands[0][0] + bands[0][1] <= geo.frame_top
    assert bands[-1][0] >= geo.frame_top + geo.frame_h


def test_filmstrip_vertical_contact_sheet():
    frames = [solid((255, 255, 255), (40, 40)) for _ in range(7)]
    sheet = L.filmstrip(frames, orientation="vertical", frames_per_strip=3, background="#ff00ff",
                        title="", edge_code="none", margin=0, spacing=10)
    pixels = np.asarray(sheet)
    geo = L.FilmGeometry((40, 40), 4, 0)
    assert sheet.size == (3 * geo.film + 2 * 10, 3 * geo.pitch)
    strips = runs(~is_color(pixels[geo.pitch // 2], MAGENTA, tol=0))
    assert strips == [(s * (geo.film + 10), geo.film) for s in range(3)]
    for s in range(3):  # each strip: 12 holes down each edge
        left = s * (geo.film + 10)
        column = pixels[:, left + geo.edge + geo.perf_across // 2]
        assert len(runs(is_color(column, MAGENTA, tol=0))) == 12
    # The last strip carries one exposed frame; the rest is blank film (no white).
    last = pixels[:, 2 * (geo.film + 10) + geo.film // 2]
    assert len(runs(is_color(last, (255, 255, 255), tol=30))) == 1


def test_filmstrip_edge_printing_draws_on_the_edges_only():
    frames = [solid((0, 0, 0), (256, 192)) for _ in range(2)]
    plain = np.asarray(L.filmstrip(frames, title="", edge_code="none", margin=0))
    printed = np.asarray(L.filmstrip(frames, title="CINEML 5222", edge_code="frame", margin=0))
    geo = L.FilmGeometry((256, 192), 4, 0)
    diff = np.any(plain != printed, axis=-1)
    assert diff[:geo.edge].any() and diff[-geo.edge:].any()
    assert not diff[geo.edge + 1:-geo.edge - 1].any()


# --- windows --------------------------------------------------------------------------------------


def green_panes(sheet: Image.Image) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    pixels = np.asarray(sheet).astype(int)
    green = (pixels[..., 1] > pixels[..., 0] + 80) & (pixels[..., 1] > pixels[..., 2] + 60)
    return runs(green.any(axis=0)), runs(green.any(axis=1))


def test_windows_count_from_pixels():
    images = [solid((0, 255, 0), (40, 40)) for _ in range(6)]
    sheet = L.windows(images, floors=2, bays=3, time="day", mullions="none", dark=0, blinds=0)
    xs, ys = green_panes(sheet)
    assert len(xs) == 3 and len(ys) == 2
    assert all(abs(n - 40) <= 2 for _, n in xs + ys)
    # Auto shape: 7 images -> 3 bays x 3 floors; the two windows without an image are empty glass.
    xs, ys = green_panes(L.windows(images + images[:1], time="day", mullions="none", dark=0, blinds=0))
    assert len(xs) == 3 and len(ys) == 3


def pane_brightness(sheet: Image.Image, boxes: list[tuple[int, int, int, int]]) -> np.ndarray:
    grey = np.asarray(sheet.convert("L"), np.float32)
    return np.array([grey[y + h // 4:y + 3 * h // 4, x + w // 4:x + 3 * w // 4].mean() for x, y, w, h in boxes])


def test_windows_lit_and_dark_are_exact_and_deterministic_for_a_seed():
    floors, bays = 3, 4
    green = [solid((0, 255, 0), (40, 40))] * 12
    xs, ys = green_panes(L.windows(green, floors=floors, bays=bays, time="day", mullions="none",
                                   dark=0, blinds=0))
    boxes = [(x, y, w, h) for y, h in ys for x, w in xs]  # row-major, like the facade
    white = [solid((255, 255, 255), (40, 40))] * 12

    def dark_set(seed):
        night = L.windows(white, floors=floors, bays=bays, dark=0.5, blinds=0, seed=seed, mullions="none")
        level = pane_brightness(night, boxes)
        assert level.max() > 150 and level.min() < 40  # lit panes glow, dark ones do not
        return night, frozenset(np.flatnonzero(level < 90).tolist())

    first, dark = dark_set(3)
    again, dark_again = dark_set(3)
    assert len(dark) == 6 and dark == dark_again
    assert np.array_equal(np.asarray(first), np.asarray(again))
    states, _ = L.window_states(12, 0.5, 0, 3)
    assert dark == {k for k, s in enumerate(states) if s == "dark"}
    assert len({dark_set(seed)[1] for seed in range(4)}) > 1  # the seed decides which


def test_windows_night_glow_and_blinds():
    images = [solid((90, 90, 90), (48, 48))] * 4
    night = np.asarray(L.windows(images, floors=2, bays=2, dark=0, blinds=0, glow=1.5), np.float32)
    dim = np.asarray(L.windows(images, floors=2, bays=2, dark=0, blinds=0, glow=0), np.float32)
    assert night.mean() > dim.mean() + 2  # light spills onto the wall
    assert (night[..., 0] >= night[..., 2]).mean() > 0.5  # warm light
    shut = L.windows(images, floors=2, bays=2, dark=0, blinds=1.0, mullions="none")
    open_ = L.windows(images, floors=2, bays=2, dark=0, blinds=0, mullions="none")
    assert not np.array_equal(np.asarray(shut), np.asarray(open_))


def test_windows_brick_and_errors():
    sheet = L.windows([solid((10, 20, 30), (32, 32))] * 2, material="brick", time="day", labels="index")
    assert sheet.mode == "RGB" and sheet.width > 64
    with pytest.raises(CinemlError, match="no images"):
        L.windows([])


# --- the layout composer --------------------------------------------------------------------------


def test_layout_composer_writes_the_picture(tmp_path):
    paths = []
    for seed in range(4):
        path = tmp_path / "generated" / f"seed{seed:04d}.png"
        path.parent.mkdir(exist_ok=True)
        solid((60 * seed, 100, 200), (32, 32)).save(path)
        paths.append(path)
    composer = L.LayoutComposer()
    output = tmp_path / "staging" / "sheet.jpg"
    ctx = make_context(tmp_path, composer, output=output,
                       options={"layout": "grid", "columns": 4, "gutter": 2, "margin": 0, "labels": "seed"})
    ctx.layouts = {layout.name: layout for layout in (L.grid, L.filmstrip, L.windows, L.fakes_grid)}
    composer.compose(ctx, paths)
    with Image.open(output) as result:
        assert result.format == "JPEG" and result.size == (4 * 32 + 3 * 2, 32)
    assert [p.name for p in output.parent.iterdir()] == ["sheet.jpg"]  # no temporary left behind
    ctx.options["layout"] = "nope"
    with pytest.raises(CinemlError, match="no layout named 'nope'"):
        composer.compose(ctx, paths)


def test_registration_hooks():
    layouts, composers = [], []
    L.register_layouts(layouts.append)
    L.register_composers(composers.append)
    assert [x.name for x in layouts] == ["grid", "fakes-grid", "side-by-side", "filmstrip", "windows"]
    assert all(isinstance(x, cineml.Layout) for x in layouts)
    assert composers[0].name == "layout"


def test_pictures_too_large_to_draw_or_save_are_refused_up_front(tmp_path):
    from cineml_plugins.layouts import save_picture

    tiles = [Image.new("L", (8, 8), 128)] * 4
    with pytest.raises(CinemlError, match=r"grid of 100 x 100 tiles would be .* pixels .* Set tile_width smaller"):
        L.grid(tiles, columns=100, rows=100, tile_width=1024)
    with pytest.raises(CinemlError, match="facade of 40 x 40 windows"):
        L.windows(tiles, floors=40, bays=40, window_width=1024)
    with pytest.raises(CinemlError, match=r"wide\.webp: the picture is 16400 x 8 pixels, more than WEBP allows"):
        save_picture(Image.new("L", (16400, 8)), tmp_path / "wide.webp")
    assert not list(tmp_path.iterdir())  # nothing half-written


def test_a_layout_composer_loads_only_what_the_picture_shows(tmp_path):
    paths = []
    for k in range(10):
        paths.append(tmp_path / f"s{k:02d}.png")
        Image.new("L", (8, 8), 20 * k).save(paths[-1])
    composer = L.LayoutComposer()
    ctx = make_context(tmp_path, composer, options={"layout": "grid", "columns": 3, "rows": 1, "gutter": 0,
                                                    "margin": 0}, output=tmp_path / "out" / "g.png")
    ctx.layouts = {"grid": L.grid}
    warnings = []
    ctx.warn = warnings.append
    composer.compose(ctx, paths)
    picture = np.asarray(Image.open(ctx.output))
    assert [int(picture[4, 8 * k + 4]) for k in range(3)] == [0, 80, 180]  # first, middle (round(4.5)), last
    assert "10 images for a grid of 3; showing 3 evenly spaced" in warnings[0]


def test_fakes_grid_with_one_side_given_treats_columns_and_rows_alike():
    tiles = [Image.new("L", (16, 16), 100)] * 100  # 16² tiles: StyleGAN2's cap is 32 x 32 = 1024
    assert L.fakes_grid(tiles, columns=10).size == (160, 160)
    assert L.fakes_grid(tiles, rows=10).size == (160, 160)


def test_side_by_side_puts_each_input_in_its_column():
    film = [Image.new("L", (8, 6), v) for v in (10, 20, 30)]
    gan = [Image.new("L", (8, 6), v) for v in (110, 120, 130)]
    out = L.side_by_side(film + gan, gutter=2)
    assert out.size == (18, 3 * 6 + 2 * 2)
    assert [out.getpixel((4, 3 + 8 * r)) for r in range(3)] == [10, 20, 30]
    assert [out.getpixel((14, 3 + 8 * r)) for r in range(3)] == [110, 120, 130]
    captioned = L.side_by_side(film[:1] + gan[:1], captions=["film", "GAN"], tile_width=64)
    assert captioned.size == (64 + 4 + 64, 48 + 18) and captioned.getpixel((32, 18 + 24)) == 10
    with pytest.raises(CinemlError, match="got 5 images, which do not split into 2 inputs of equal length"):
        L.side_by_side(film + gan[:2])
    with pytest.raises(CinemlError, match="has 1 captions for 2 inputs"):
        L.side_by_side(film + gan, captions=["film"])
    assert L.side_by_side.tiles({"inputs": 3}) == 3  # an animation shows one row per video frame
