"""Built-in layouts: grid (and the StyleGAN-style fakes grid), filmstrip, building windows.

Each layout is a plain function ``(images, **options) -> PIL.Image`` wrapped by
:func:`cineml.layout`, so this file doubles as the example an artist copies to write their own.
The :class:`LayoutComposer` is what runs a layout from a ``[[compose]]`` step.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

import cineml
from cineml import (
    CinemlError,
    Option,
    atomic_path,
    check_canvas,
    color_problem,
    common_mode,
    draw_text,
    evenly_spaced,
    fit,
    grid_shape,
    hookimpl,
    label_text,
    load_images,
    noise,
    parse_color,
)

LABELS = ("none", "index", "kimg", "seed", "time", "timecode", "shot")


def color_option(name: str, default: Any, help: str, auto: bool = False) -> Option:
    """A colour option (name, hex or [r, g, b]); ``auto=True`` also accepts the word "auto"."""
    check = (lambda v: None if v == "auto" else color_problem(v)) if auto else color_problem
    return Option(name, (str, list), default, help, check=check)


def _tile_size(image: Image.Image, width: int, height: int) -> tuple[int, int]:
    """Tile size from options; 0 means "as the first image", one side alone keeps its aspect."""
    if width and height:
        return width, height
    if width:
        return width, max(1, round(width * image.height / image.width))
    if height:
        return max(1, round(height * image.width / image.height)), height
    return image.size


def _fit_tile(image: Image.Image, size: tuple[int, int], mode: str, how: str, fill: Any) -> Image.Image:
    image = image if image.mode == mode else image.convert(mode)
    if how == "stretch":
        return image.resize(size, Image.Resampling.LANCZOS, reducing_gap=3.0) if image.size != size else image
    return fit(image, size, fill=fill, cover=how == "cover")


def product(options: dict[str, Any], a: str, b: str) -> int | None:
    """Capacity of a layout sized by two options (None while either is 0 = worked out from the images)."""
    return int(options[a]) * int(options[b]) if options.get(a) and options.get(b) else None


def _require_images(images: Sequence[Image.Image], layout: str) -> None:
    if not images:
        raise CinemlError(f"The {layout} layout got no images. Check the compose step's input "
                          f"(and its count/every/start/end sampling): it matched no files.")


# --- grid -----------------------------------------------------------------------------------------

GRID_OPTIONS = [
    Option("columns", int, 0, "Tiles per row; 0 works it out (near-square).", min=0),
    Option("rows", int, 0, "Rows of tiles; 0 works it out from the image count.", min=0),
    Option("tile_width", int, 0, "Tile width in pixels; 0 uses the first image's width.", min=0),
    Option("tile_height", int, 0, "Tile height in pixels; 0 keeps the first image's aspect.", min=0),
    Option("gutter", int, 8, "Space between tiles, in pixels.", min=0),
    Option("margin", int, 16, "Space around the whole grid, in pixels.", min=0),
    color_option("background", "black", "Colour behind the tiles and of empty cells."),
    Option("labels", str, "none", "Caption each tile with its index, kimg, seed, film time (mm:ss.hh), timecode "
           "(hh:mm:ss:ff at the film's rate) or shot (its number and first timecode).", choices=LABELS),
    Option("label_size", int, 0, "Caption height in pixels; 0 scales with the tile.", min=0),
    Option("fit", str, "contain", "contain: whole image with bars; cover: fill and crop; stretch.",
           choices=("contain", "cover", "stretch")),
    Option("order", str, "rows", "Fill row by row or column by column.", choices=("rows", "columns")),
]


def draw_grid(images: Sequence[Image.Image], columns: int, rows: int, tile: tuple[int, int],
              gutter: int, margin: int, background: Any, labels: str = "none", label_size: int = 0,
              how: str = "contain", order: str = "rows") -> Image.Image:
    """The grid both ``grid`` and ``fakes-grid`` draw: extra images beyond the cells are dropped."""
    tw, th = tile
    mode = common_mode(images)
    color = parse_color(background)
    size = (columns * tw + (columns - 1) * gutter + 2 * margin, rows * th + (rows - 1) * gutter + 2 * margin)
    check_canvas(size, f"grid of {columns} x {rows} tiles", "Set tile_width smaller, or fewer columns and rows.")
    sheet = Image.new("RGB", size, color)
    sheet = sheet.convert(mode) if mode == "L" else sheet
    font_size = label_size or max(9, th // 12)
    for k, image in enumerate(images[:columns * rows]):
        row, col = divmod(k, columns) if order == "rows" else (k % rows, k // rows)
        x, y = margin + col * (tw + gutter), margin + row * (th + gutter)
        sheet.paste(_fit_tile(image, (tw, th), mode, how, color), (x, y))
        text = label_text(image, labels)
        if text:
            pad = max(2, font_size // 3)
            draw_text(sheet, (x + pad * 2, y + th - pad * 2), text, size=font_size, fill="white",
                      anchor="ld", box=(0, 0, 0), padding=pad)
    return sheet


@cineml.layout("grid", options=GRID_OPTIONS, capacity=lambda o: product(o, "columns", "rows"))
def grid(images: list[Image.Image], columns: int = 0, rows: int = 0, tile_width: int = 0,
         tile_height: int = 0, gutter: int = 8, margin: int = 16, background: Any = "black",
         labels: str = "none", label_size: int = 0, fit: str = "contain",
         order: str = "rows") -> Image.Image:
    """Tiles in rows and columns, with gutters, a margin and optional captions."""
    _require_images(images, "grid")
    cols, rws = grid_shape(len(images), columns, rows)
    return draw_grid(images, cols, rws, _tile_size(images[0], tile_width, tile_height), gutter,
                     margin, background, labels, label_size, fit, order)


def stylegan_shape(count: int, tile: tuple[int, int]) -> tuple[int, int]:
    """StyleGAN2-ADA's training-grid shape for tiles of ``tile`` size.

    Its rule fills roughly a 7680x4320 canvas: 7x4 at 1024², 15x8 at 512², 30x16 at 256². With
    fewer images than that, keep the same 16:9 canvas shape rather than one long row.
    """
    gw = int(np.clip(7680 // tile[0], 7, 32))
    gh = int(np.clip(4320 // tile[1], 4, 32))
    if count >= gw * gh:
        return gw, gh
    columns = min(count, gw, max(1, round(math.sqrt(count * 16 / 9 * tile[1] / tile[0]))))
    return columns, math.ceil(count / columns)


@cineml.layout("fakes-grid", options=[
    Option("columns", int, 0, "Tiles per row; 0 uses StyleGAN2's rule (7 at 1024², 15 at 512²...).", min=0),
    Option("rows", int, 0, "Rows; 0 uses StyleGAN2's rule (4 at 1024², 8 at 512²...).", min=0),
    Option("tile_width", int, 0, "Tile width in pixels; 0 uses the first image's width.", min=0),
    Option("tile_height", int, 0, "Tile height in pixels; 0 keeps the first image's aspect.", min=0),
    Option("labels", str, "none", "Caption each tile.", choices=LABELS),
], capacity=lambda o: product(o, "columns", "rows"))
def fakes_grid(images: list[Image.Image], columns: int = 0, rows: int = 0, tile_width: int = 0,
               tile_height: int = 0, labels: str = "none") -> Image.Image:
    """A StyleGAN-style training grid: tiles edge to edge, no gutter, no margin."""
    _require_images(images, "fakes-grid")
    tile = _tile_size(images[0], tile_width, tile_height)
    auto_cols, auto_rows = stylegan_shape(len(images), tile)
    # One side given: the other follows, up to StyleGAN2's cap of images either way.
    if columns and not rows:
        auto_rows = math.ceil(min(len(images), auto_cols * auto_rows) / columns)
    if rows and not columns:
        auto_cols = math.ceil(min(len(images), auto_cols * auto_rows) / rows)
    return draw_grid(images, columns or auto_cols, rows or auto_rows, tile, 0, 0, "black", labels)


# --- side by side ---------------------------------------------------------------------------------


def _check_captions(value: Any) -> str | None:
    return None if isinstance(value, list) and all(isinstance(v, str) for v in value) else "a list of texts"


@cineml.layout("side-by-side", options=[
    Option("inputs", int, 2, "How many inputs the step's input list names: one column each.", min=2),
    Option("captions", list, [], "A caption over each column, e.g. [\"film\", \"GAN\"]; [] for none.",
           check=_check_captions),
    Option("tile_width", int, 0, "Tile width in pixels; 0 uses the first image's width.", min=0),
    Option("tile_height", int, 0, "Tile height in pixels; 0 keeps the first image's aspect.", min=0),
    Option("gutter", int, 4, "Space between tiles, in pixels.", min=0),
    Option("margin", int, 0, "Space around the whole picture, in pixels.", min=0),
    color_option("background", "black", "Colour between and around the tiles."),
    Option("labels", str, "none", "Caption each tile (see grid's labels).", choices=LABELS),
], capacity=lambda o: int(o["inputs"]))
def side_by_side(images: list[Image.Image], inputs: int = 2, captions: Sequence[str] = (), tile_width: int = 0,
                 tile_height: int = 0, gutter: int = 4, margin: int = 0, background: Any = "black",
                 labels: str = "none") -> Image.Image:
    """Inputs side by side, image by image ("film | GAN"): a column per input, a row per frame.

    Give the compose step a list of inputs (``input = ["frames", "projection"]``): the engine matches them
    by frame number and hands them over input after input, so column j is the j-th stretch of the images.
    In an animation each video frame is one row.
    """
    _require_images(images, "side-by-side")
    if len(images) % inputs:
        raise CinemlError(f"The side-by-side layout got {len(images)} images, which do not split into {inputs} "
                          f"inputs of equal length. Give the compose step a list of {inputs} inputs "
                          f"(input = [\"frames\", \"projection\"]), or set inputs to their number.")
    if captions and len(captions) != inputs:
        raise CinemlError(f"The side-by-side layout has {len(captions)} captions for {inputs} inputs: give one "
                          "caption per input, or captions = [].")
    tile = _tile_size(images[0], tile_width, tile_height)
    rows = len(images) // inputs
    sheet = draw_grid(images, inputs, rows, tile, gutter, margin, background, labels, order="columns")
    if not captions:
        return sheet
    size = max(9, tile[1] // 10)
    band = size * 2
    out = Image.new("RGB", (sheet.width, sheet.height + band), parse_color(background)).convert(sheet.mode)
    out.paste(sheet, (0, band))
    for j, text in enumerate(captions):
        x = margin + j * (tile[0] + gutter) + tile[0] // 2
        draw_text(out, (x, band // 2), text, size=size, fill="white", anchor="mm")
    return out


# --- filmstrip ------------------------------------------------------------------------------------

# 35 mm cine film, in millimetres (the frame's width runs across the film).
FRAME_ACROSS = 24.89
PERF_ACROSS, PERF_ALONG, PERF_EDGE = 2.79, 1.98, 2.01
EDGE_CODES = ("none", "frame", "index", "kimg", "seed", "time", "timecode", "shot")

FILMSTRIP_OPTIONS = [
    Option("orientation", str, "horizontal", "Frames run left to right, or top to bottom.",
           choices=("horizontal", "vertical")),
    Option("frames_per_strip", int, 6, "Frames on each strip; more images make a contact sheet "
           "of several strips.", min=1),
    Option("frame_width", int, 0, "Frame width in pixels; 0 uses the first image's width.", min=0),
    Option("frame_height", int, 0, "Frame height in pixels; 0 keeps the first image's aspect.", min=0),
    Option("fit", str, "contain", "contain: whole image; cover: fill the frame and crop.",
           choices=("contain", "cover", "stretch")),
    color_option("base", "#0d0d0d", "Film base colour: black for B&W stock, e.g. \"#c8733a\" for "
                 "colour negative."),
    color_option("background", "#f1efe8", "The light table behind the film (shows through the "
                 "perforations)."),
    Option("perforations", int, 4, "Perforations per frame on each edge (35 mm cine: 4).", min=1, max=16),
    Option("frame_line", int, 0, "Gap between frames in pixels; 0 scales with the frame.", min=0),
    Option("title", str, "CINEML", "Edge printing along the top edge (the stock name); \"\" for none."),
    Option("edge_code", str, "frame", "Number printed along the bottom edge for each frame.",
           choices=EDGE_CODES),
    color_option("edge_color", "auto", "Colour of the edge printing; auto suits the base.", auto=True),
    Option("spacing", int, -1, "Space between strips in pixels; -1 scales with the film.", min=-1),
    Option("margin", int, -1, "Space around the contact sheet in pixels; -1 scales with the film.", min=-1),
    Option("seed", int, 0, "Seed of the film-base grain."),
]


class FilmGeometry:
    """Pixel sizes of one strip, from cine proportions scaled to the frame size.

    Everything across the film is proportional to the frame's height across (so perforations
    and edges look right at any size); along the film, ``perforations`` holes share each frame.
    """

    def __init__(self, frame: tuple[int, int], perforations: int, frame_line: int) -> None:
        self.frame_w, self.frame_h = frame
        mm = self.frame_h / FRAME_ACROSS
        self.edge = max(2, round(PERF_EDGE * mm))
        self.perf_across = max(2, round(PERF_ACROSS * mm))
        self.perf_along = max(2, round(PERF_ALONG * mm))
        self.perf_gap = max(2, round(0.9 * mm))
        self.line = frame_line or max(2, round(self.frame_w / 48))
        self.pitch = self.frame_w + self.line
        self.perforations = perforations
        self.film = self.frame_h + 2 * (self.edge + self.perf_across + self.perf_gap)
        self.frame_top = self.edge + self.perf_across + self.perf_gap
        self.radius = max(0, round(0.45 * mm))

    def frame_x(self, k: int) -> int:
        return k * self.pitch + self.line // 2

    def perf_centres(self, count: int) -> list[float]:
        """Centres along the strip of every perforation for ``count`` frames."""
        step = self.pitch / self.perforations
        return [(j + 0.5) * step for j in range(count * self.perforations)]


def _edge_code(image: Image.Image | None, kind: str, number: int) -> str:
    if kind == "none":
        return ""
    if kind == "frame":
        return f"{number:d}"
    return "" if image is None else label_text(image, kind)


def _draw_strip(frames: Sequence[Image.Image | None], geo: FilmGeometry, base: tuple[int, int, int],
                background: tuple[int, int, int], ink: tuple[int, int, int], title: str,
                edge_code: str, first_number: int, how: str, seed: int, rotate: bool) -> Image.Image:
    """One horizontal strip; with ``rotate`` the frames go in turned a quarter so the caller can
    stand the strip upright (text then runs down the film, as on real vertical stock)."""
    strip = _blank_strip(len(frames), geo.frame_w, geo.frame_h, geo.perforations, geo.line, base,
                         background, seed).copy()
    draw = ImageDraw.Draw(strip)
    mask = _frame_mask(geo.frame_w, geo.frame_h, geo.radius)
    for k, image in enumerate(frames):
        x, y = geo.frame_x(k), geo.frame_top
        if image is None:  # unexposed film: a faint fogged frame, as on a real roll's tail
            fog = tuple(min(255, c + 10) for c in base)
            draw.rounded_rectangle((x, y, x + geo.frame_w - 1, y + geo.frame_h - 1), geo.radius, fill=fog)
            continue
        tile = image.convert("RGB") if image.mode != "RGB" else image
        if rotate:
            tile = tile.transpose(Image.Transpose.ROTATE_90)
        strip.paste(_fit_tile(tile, (geo.frame_w, geo.frame_h), "RGB", how, base), (x, y), mask)

    size = round(geo.edge * 0.72)
    if size >= 7:
        _edge_print(strip, draw, frames, geo, ink, title, edge_code, first_number, size)
    return strip


@functools.lru_cache(maxsize=8)
def _frame_mask(width: int, height: int, radius: int) -> Image.Image:
    """Camera gates leave slightly rounded frame corners."""
    mask = Image.new("L", (width, height), 0)
    ImageDraw.Draw(mask).rounded_rectangle((0, 0, width - 1, height - 1), radius, 255)
    return mask


@functools.lru_cache(maxsize=32)
def _blank_strip(frames: int, frame_w: int, frame_h: int, perforations: int, line: int,
                 base: tuple[int, int, int], background: tuple[int, int, int], seed: int) -> Image.Image:
    """Unexposed film with grain and perforations, cached: only the frames change per call."""
    geo = FilmGeometry((frame_w, frame_h), perforations, line)
    check_canvas((frames * geo.pitch, geo.film), f"film strip of {frames} frames",
                 "Set frame_width smaller, or fewer frames_per_strip.")
    grain = noise((frames * geo.pitch, geo.film), seed=seed, scale=1.5, octaves=2)
    shade = (np.asarray(base, np.float32)[None, None, :] * (0.92 + 0.16 * grain[..., None])
             + 3.0 * (grain[..., None] - 0.5))
    strip = Image.fromarray(np.clip(shade, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(strip)
    half_along = geo.perf_along / 2
    for centre in geo.perf_centres(frames):
        x0 = round(centre - half_along)
        for y0 in (geo.edge, geo.film - geo.edge - geo.perf_across):
            draw.rounded_rectangle((x0, y0, x0 + geo.perf_along - 1, y0 + geo.perf_across - 1),
                                   geo.radius, fill=background)
    return strip


def _edge_print(strip: Image.Image, draw: ImageDraw.ImageDraw, frames: Sequence[Image.Image | None],
                geo: FilmGeometry, ink: tuple[int, int, int], title: str, edge_code: str,
                first_number: int, size: int) -> None:
    """Latent-image edge printing: the stock title every other frame along the top edge, a frame
    code with a key triangle along the bottom, like the manufacturer's and lab's markings."""
    top, bottom = geo.edge / 2, geo.film - geo.edge / 2
    for k, image in enumerate(frames):
        x = geo.frame_x(k)
        if title and k % 2 == 0:
            draw_text(strip, (x + geo.pitch * 0.12, top), title, size=size, fill=ink, anchor="lm")
        code = _edge_code(image, edge_code, first_number + k)
        if code:
            tri = size * 0.42
            cx = x + geo.pitch * 0.08
            draw.polygon([(cx, bottom - tri), (cx, bottom + tri), (cx + tri * 1.5, bottom)], fill=ink)
            draw_text(strip, (cx + tri * 2.4, bottom), code, size=size, fill=ink, anchor="lm")


@cineml.layout("filmstrip", options=FILMSTRIP_OPTIONS)  # no capacity: more images make more strips
def filmstrip(images: list[Image.Image], orientation: str = "horizontal", frames_per_strip: int = 6,
              frame_width: int = 0, frame_height: int = 0, fit: str = "contain",
              base: Any = "#0d0d0d", background: Any = "#f1efe8", perforations: int = 4,
              frame_line: int = 0, title: str = "CINEML", edge_code: str = "frame",
              edge_color: Any = "auto", spacing: int = -1, margin: int = -1, seed: int = 0) -> Image.Image:
    """Frames on strips of 35 mm film with perforations and edge printing; a contact sheet."""
    _require_images(images, "filmstrip")
    frame = _tile_size(images[0], frame_width, frame_height)
    vertical = orientation == "vertical"
    geo = FilmGeometry(frame[::-1] if vertical else frame, perforations, frame_line)
    base_c, back_c = parse_color(base), parse_color(background)
    if edge_color == "auto":  # pale on dark (B&W) stock, dark on pale (orange mask) stock
        light = sum(base_c) / 3 < 110
        ink = tuple(round(0.55 * b + 0.45 * (222 if light else 20)) for b in base_c)
        ink = (min(255, ink[0] + 8), ink[1], max(0, ink[2] - 8)) if light else ink
    else:
        ink = parse_color(edge_color)
    gap = geo.film // 5 if spacing < 0 else spacing
    pad = geo.film // 4 if margin < 0 else margin

    count = math.ceil(len(images) / frames_per_strip)
    strips = []
    for s in range(count):
        chunk: list[Image.Image | None] = list(images[s * frames_per_strip:(s + 1) * frames_per_strip])
        chunk += [None] * (frames_per_strip - len(chunk))
        strip = _draw_strip(chunk, geo, base_c, back_c, ink, title, edge_code, s * frames_per_strip + 1,
                            fit, seed + s, vertical)
        strips.append(strip.transpose(Image.Transpose.ROTATE_270) if vertical else strip)

    sw, sh = strips[0].size
    check_canvas((2 * pad + sw, 2 * pad + count * sh + (count - 1) * gap), f"contact sheet of {count} strips",
                 "Set frame_width smaller, or give fewer images (count).")
    if vertical:
        sheet = Image.new("RGB", (2 * pad + count * sw + (count - 1) * gap, 2 * pad + sh), back_c)
        for s, strip in enumerate(strips):
            sheet.paste(strip, (pad + s * (sw + gap), pad))
    else:
        sheet = Image.new("RGB", (2 * pad + sw, 2 * pad + count * sh + (count - 1) * gap), back_c)
        for s, strip in enumerate(strips):
            sheet.paste(strip, (pad, pad + s * (sh + gap)))
    return sheet.convert("L") if common_mode(images) == "L" and _is_grey(base_c, back_c, ink) else sheet


def _is_grey(*colors: tuple[int, ...]) -> bool:
    return all(c[0] == c[1] == c[2] for c in colors)


# --- building windows -----------------------------------------------------------------------------

WINDOW_OPTIONS = [
    Option("floors", int, 0, "Floors of windows; 0 works it out (near-square facade).", min=0),
    Option("bays", int, 0, "Windows per floor; 0 works it out.", min=0),
    Option("window_width", int, 0, "Glass width in pixels (8 or more); 0 uses the first image's width.", min=0,
           check=lambda v: None if v == 0 or v >= 8 else "a window needs at least 8 pixels (or 0: automatic)"),
    Option("window_height", int, 0, "Glass height in pixels (8 or more); 0 keeps the first image's aspect.", min=0,
           check=lambda v: None if v == 0 or v >= 8 else "a window needs at least 8 pixels (or 0: automatic)"),
    Option("time", str, "night", "night: lit windows glow on a dark wall; day: glass reflects the sky.",
           choices=("night", "day")),
    Option("material", str, "concrete", "Facade: weathered concrete panels or brick.",
           choices=("concrete", "brick")),
    color_option("wall", "auto", "Wall colour (daylight value); auto suits the material.", auto=True),
    color_option("frame", "auto", "Window frame colour; auto is off-white paint.", auto=True),
    Option("mullions", str, "cross", "Glazing bars over each image.",
           choices=("none", "cross", "transom", "grid")),
    Option("dark", float, 0.2, "Share of windows with the light off.", min=0, max=1),
    Option("blinds", float, 0.15, "Share of windows with a blind part-way down.", min=0, max=1),
    Option("glow", float, 1.0, "Strength of the light spilling from lit windows at night.", min=0, max=3),
    Option("labels", str, "none", "A small plaque under each window.", choices=LABELS),
    Option("seed", int, 0, "Which windows are dark or have blinds, and the wall's texture."),
]

# Interior light colours seen from outside: tungsten (most rooms), cool fluorescent, a TV's blue.
LIGHTS = {"warm": (1.10, 0.98, 0.80), "cool": (0.97, 1.0, 1.06), "tv": (0.78, 0.9, 1.18)}
GLOW = {"warm": (255, 190, 112), "cool": (220, 228, 235), "tv": (120, 160, 255)}


class Facade:
    """The static part of a windows picture, built once per geometry and seed and cached.

    ``base`` is the sky and wall with casings, sills, shadows and glow; ``overlay`` (RGBA) holds
    what lies over the glass (reveal shadows, glazing bars, blinds); ``panes`` are the glass
    positions with each window's state. Animating a facade then costs only the images per frame.
    """

    def __init__(self, floors: int, bays: int, pane: tuple[int, int], time: str, material: str,
                 wall: tuple[int, int, int], frame: tuple[int, int, int], mullions: str,
                 dark: float, blinds: float, glow: float, seed: int) -> None:
        pw, ph = pane
        unit = min(pw, ph)
        self.pane, self.night, self.material = pane, time == "night", material
        self.casing = max(2, round(unit * 0.07))
        self.sill = max(2, round(unit * 0.07))
        ww, wh = pw + 2 * self.casing, ph + 2 * self.casing
        self.bay_gap, self.floor_gap = round(pw * 0.55), round(ph * 0.62)
        self.sky = round(ph * 0.45)
        self.side, self.top, self.bottom = round(pw * 0.6), self.sky + round(ph * 0.7), round(ph * 0.7)
        self.size = (2 * self.side + bays * ww + (bays - 1) * self.bay_gap,
                     self.top + floors * wh + (floors - 1) * self.floor_gap + self.bottom)
        check_canvas(self.size, f"facade of {floors} x {bays} windows", "Set window_width smaller, or fewer floors "
                     "and bays.")
        self.windows = [(self.side + b * (ww + self.bay_gap), self.top + f * (wh + self.floor_gap), ww, wh)
                        for f in range(floors) for b in range(bays)]
        self.panes = [(x + self.casing, y + self.casing) for x, y, _, _ in self.windows]
        self.states, self.blind_drop = window_states(floors * bays, dark, blinds, seed)
        rng = np.random.default_rng(seed + 7919)
        self.lights = rng.choice(list(LIGHTS), len(self.windows), p=[0.72, 0.17, 0.11]).tolist()
        self.base = self._wall(wall, seed)
        self._sky(seed)
        self._shadows()
        if self.night and glow > 0:
            self._glow(glow)
        self._casings(frame)
        self.overlay = self._overlay(frame, mullions)
        self.tints = {state: self._tint(state) for state in ("lit", "dark", "blinds", "empty")}
        self.lamp = self._lamp()

    # The wall: colour, material texture, joints, weathering, and (at night) darkness.
    def _wall(self, wall: tuple[int, int, int], seed: int) -> Image.Image:
        width, height = self.size
        pw, ph = self.pane
        if self.material == "brick":
            rgb = self._bricks(wall, seed)
        else:
            rgb = np.empty((height, width, 3), np.float32)
            rgb[:] = np.asarray(wall, np.float32)
            cloud = noise((width, height), seed, scale=max(8, pw * 0.5), octaves=5)
            grain = noise((width, height), seed + 1, scale=1.2, octaves=2)
            rgb *= (0.88 + 0.2 * cloud + 0.07 * (grain - 0.5))[..., None]
            joint = np.ones((height, width), np.float32)  # precast panels: a joint per bay and floor
            for x, _, _, _ in self.windows[1:len({w[0] for w in self.windows})]:
                jx = x - self.bay_gap // 2
                joint[self.sky:, max(0, jx - 1):jx + 1] = 0.84
            for y in self._floor_lines():
                joint[max(0, y - 1):y + 1, :] = 0.84
            rgb *= joint[..., None]
        # Rain streaks below each sill: darker, fading downwards, broken up by noise.
        rng = np.random.default_rng(seed + 5)
        streak = np.zeros((height, width), np.float32)
        lines = noise((width, 1), seed + 2, scale=max(2, pw / 40), octaves=3)[0]
        patchy = noise((width, height), seed + 6, scale=max(4, ph / 6), octaves=2)
        for x, y, w, h in self.windows:
            fall = round(self.floor_gap * rng.uniform(0.8, 1.9))
            y0, x0, x1 = y + h + self.sill, x - self.casing, x + w + self.casing
            rows = min(fall, height - y0)
            if rows > 0:
                ramp = np.linspace(1, 0, rows, dtype=np.float32) ** 1.3
                cols = np.clip((lines[x0:x1] - 0.42) * 3.0, 0, 1)
                streak[y0:y0 + rows, x0:x1] += ramp[:, None] * cols[None, :]
        streak *= 0.4 + 0.9 * patchy
        rgb *= (1 - 0.16 * np.clip(streak, 0, 1))[..., None]
        # Parapet coping at the top, plinth at the bottom.
        cope = max(3, round(ph * 0.09))
        rgb[self.sky:self.sky + cope] *= 1.14
        rgb[self.sky + cope:self.sky + cope + max(2, cope // 2)] *= 0.72
        plinth = round(self.bottom * 0.42)
        rgb[height - plinth:] *= 0.7
        rgb[height - plinth:height - plinth + 2] *= 1.25
        if self.night:  # moonless: a blue-black wall, a sodium street light warming the ground floor
            grey = rgb.mean(axis=2, keepdims=True)
            rgb = 0.2 * (0.6 * rgb + 0.4 * grey) * np.array([0.82, 0.9, 1.12], np.float32)
            street = np.linspace(0, 1, height, dtype=np.float32) ** 4
            rgb += street[:, None, None] * np.array([70, 38, 10], np.float32)
        else:  # sun from the upper left
            light = (np.linspace(1.06, 0.94, width, dtype=np.float32)[None, :]
                     * np.linspace(1.04, 0.96, height, dtype=np.float32)[:, None])
            rgb *= light[..., None]
        return Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))

    def _floor_lines(self) -> list[int]:
        ys = sorted({y for _, y, _, _ in self.windows})
        return [y - self.floor_gap // 2 + self.sill // 2 for y in ys[1:]]

    def _bricks(self, wall: tuple[int, int, int], seed: int) -> np.ndarray:
        """Running bond with a tone per brick, mortar joints and soldier-course lintels."""
        width, height = self.size
        course = max(4, round(self.pane[1] / 7))
        brick = course * 2.2
        mortar = max(1, round(course * 0.14))
        rng = np.random.default_rng(seed + 3)
        ys, xs = np.mgrid[0:height, 0:width]
        row = ys // course
        shifted = xs + (row % 2) * (brick / 2)
        col = (shifted // brick).astype(np.int64)
        shade = rng.uniform(0.78, 1.12, (int(row.max()) + 1, int(col.max()) + 2)).astype(np.float32)
        hue = rng.uniform(-0.06, 0.06, shade.shape).astype(np.float32)
        rgb = np.asarray(wall, np.float32)[None, None, :] * shade[row, col][..., None]
        rgb[..., 0] *= 1 + hue[row, col]
        rgb *= (0.9 + 0.2 * noise((width, height), seed + 4, scale=max(3, course * 0.6), octaves=3))[..., None]
        joint = ((ys % course) < mortar) | ((shifted % brick) < mortar)
        soldier = max(3, round(course * 0.75))
        grain = 0.9 + 0.2 * noise((width, height), seed + 8, scale=max(2, course * 0.3), octaves=2)
        for x, y, w, _ in self.windows:  # a soldier course (bricks on end) over each opening
            top, x0, x1 = max(0, y - round(course * 1.7)), x - self.casing, x + w + self.casing
            region = (slice(top, y), slice(x0, x1))
            index = (xs[region] - x0) // soldier
            tones = rng.uniform(0.74, 1.0, int(index.max()) + 1).astype(np.float32)
            rgb[region] = (np.asarray(wall, np.float32) * (tones[index] * grain[region])[..., None])
            joint[region] = ((xs[region] - x0) % soldier) < mortar
            joint[top:top + mortar, x0:x1] = True
        rgb[joint] = np.asarray((178, 170, 158), np.float32) * 0.9
        return rgb

    def _sky(self, seed: int) -> None:
        """A strip of sky above the roofline, so the wall reads as a building."""
        width, sky = self.size[0], self.sky
        if sky < 2:
            return
        t = np.linspace(0, 1, sky, dtype=np.float32)[:, None, None]
        top, horizon = ((6, 9, 22), (30, 34, 58)) if self.night else ((104, 152, 210), (196, 214, 232))
        rgb = np.asarray(top, np.float32) * (1 - t) + np.asarray(horizon, np.float32) * t
        rgb = np.broadcast_to(rgb, (sky, width, 3)).copy()
        if self.night:
            rng = np.random.default_rng(seed + 11)
            count = width * sky // 900
            ys, xs = rng.integers(0, sky - 1, count), rng.integers(0, width, count)
            rgb[ys, xs] += rng.uniform(40, 200, (count, 1)) * (1 - t[ys, 0])
        self.base.paste(Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)), (0, 0))

    def _shadows(self) -> None:
        """Soft shadows the casings and sills cast on the wall (down-right in daylight)."""
        mask = Image.new("L", self.size, 0)
        draw = ImageDraw.Draw(mask)
        c, s = self.casing, self.sill
        dx, dy = (0, 0) if self.night else (round(c * 0.6), round(c * 0.9))
        for x, y, w, h in self.windows:
            draw.rectangle((x + dx, y + dy, x + w - 1 + dx, y + h - 1 + dy), fill=120)
            draw.rectangle((x - c + dx, y + h + dy, x + w + c - 1 + dx, y + h + s + c // 2 + dy), fill=170)
        shade = np.asarray(mask.filter(ImageFilter.GaussianBlur(max(1, c * 0.8))), np.float32) / 255
        rgb = np.asarray(self.base, np.float32) * (1 - 0.55 * shade[..., None])
        self.base = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))

    def _glow(self, strength: float) -> None:
        """Light spilling from lit windows onto the wall: a tight halo and a wide soft one."""
        mask = Image.new("RGB", self.size, (0, 0, 0))
        draw = ImageDraw.Draw(mask)
        for (x, y, w, h), state, light in zip(self.windows, self.states, self.lights):
            if state in ("lit", "blinds"):
                level = 1.0 if state == "lit" else 0.7
                draw.rectangle((x, y, x + w - 1, y + h - 1), fill=tuple(round(v * level) for v in GLOW[light]))
        unit = min(self.pane)
        wide = np.asarray(mask.filter(ImageFilter.GaussianBlur(unit * 0.5)), np.float32)
        near = np.asarray(mask.filter(ImageFilter.GaussianBlur(unit * 0.1)), np.float32)
        light = (0.7 * wide + 0.35 * near) * (0.6 * strength)
        rgb = np.asarray(self.base, np.float32)
        rgb[self.sky:] += light[self.sky:]
        self.base = Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8))

    def _casings(self, frame: tuple[int, int, int]) -> None:
        """Painted casings and projecting sills; at night lit rooms light their inner edges."""
        draw = ImageDraw.Draw(self.base, "RGBA")
        c, s = self.casing, self.sill
        paint = np.asarray(frame, np.float32) * (0.2 if self.night else 1.0)
        tone = lambda k, extra=(0, 0, 0): tuple(int(min(255, v * k + e)) for v, e in zip(paint, extra))
        for (x, y, w, h), state, light in zip(self.windows, self.states, self.lights):
            lit = self.night and state in ("lit", "blinds")
            rim = np.asarray(GLOW[light], np.float32) * 0.2 if lit else np.zeros(3)
            draw.rectangle((x, y, x + w - 1, y + h - 1), fill=tone(1.0))
            draw.rectangle((x, y, x + w - 1, y + max(1, c // 4)), fill=tone(1.15))  # lit top edge
            draw.rectangle((x + w - max(1, c // 4), y, x + w - 1, y + h - 1), fill=tone(0.86))
            inner = max(1, c // 4)  # the sash, a step in from the casing
            draw.rectangle((x + c - inner, y + c - inner, x + w - c + inner - 1, y + h - c + inner - 1),
                           fill=tone(0.9, tuple(rim)))
            # The sill: a lit top face, a darker front edge.
            top = tone(1.08, tuple(rim * 1.4)) if lit else tone(1.08)
            draw.rectangle((x - c, y + h, x + w + c - 1, y + h + s - 1), fill=top)
            draw.rectangle((x - c, y + h + s - max(1, s // 3), x + w + c - 1, y + h + s - 1), fill=tone(0.72))

    # What lies over the glass: reveal shadow, glazing bars, blinds.
    def _overlay(self, frame: tuple[int, int, int], mullions: str) -> Image.Image:
        overlay = Image.new("RGBA", self.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(overlay)
        pw, ph = self.pane
        bar = max(1, round(min(pw, ph) * 0.028))
        paint = tuple(int(v * (0.2 if self.night else 0.97)) for v in frame)
        for (px, py), state, drop, light in zip(self.panes, self.states, self.blind_drop, self.lights):
            if state == "blinds":
                self._blind(draw, px, py, round(ph * drop), GLOW[light])
            depth = max(1, round(ph * 0.04))  # the casing's inner reveal shades the glass's top/left
            alpha = 90 if self.night else 80
            draw.rectangle((px, py, px + pw - 1, py + depth - 1), fill=(0, 0, 0, alpha))
            draw.rectangle((px, py + depth, px + max(0, depth // 2 - 1), py + ph - 1), fill=(0, 0, 0, alpha // 2))
            for x0, y0, x1, y1 in _bars(mullions, px, py, pw, ph, bar):
                draw.rectangle((x0, y0, x1, y1), fill=paint + (255,))
                if x1 - x0 > y1 - y0:
                    draw.line((x0, y1 + 1, x1, y1 + 1), fill=(0, 0, 0, 70))
                else:
                    draw.line((x1 + 1, y0, x1 + 1, y1), fill=(0, 0, 0, 70))
        return overlay

    def _blind(self, draw: ImageDraw.ImageDraw, px: int, py: int, drop: int, light: tuple[int, ...]) -> None:
        pw = self.pane[0]
        slat = max(2, round(self.pane[1] / 22))
        if self.night:
            face = tuple(round(v * 0.95) for v in light) + (240,)
            line = tuple(round(v * 0.55) for v in light) + (255,)
        else:
            face, line = (226, 219, 203, 250), (150, 144, 132, 255)
        draw.rectangle((px, py, px + pw - 1, py + drop - 1), fill=face)
        for y in range(py + slat - 1, py + drop, slat):
            draw.line((px, y, px + pw - 1, y), fill=line)
        rail = max(2, slat // 2)
        draw.rectangle((px, py + drop - rail, px + pw - 1, py + drop), fill=line)

    def _lamp(self) -> np.ndarray:
        """A room lit by a ceiling lamp: brightest high in the middle, dimmer at the sill."""
        pw, ph = self.pane
        ys, xs = np.mgrid[0:ph, 0:pw].astype(np.float32)
        fall = 1.12 - 0.28 * ((xs / pw - 0.5) * 2) ** 2 - 0.3 * (ys / ph) ** 1.5
        return fall[..., None] if self.night else np.ones((ph, pw, 1), np.float32)

    def _tint(self, state: str) -> tuple[np.ndarray, np.ndarray]:
        """Per-state ``(multiply, add)`` for the image behind the glass: light, sky reflection."""
        pw, ph = self.pane
        ys, xs = np.mgrid[0:ph, 0:pw].astype(np.float32)
        sky = (np.array([150, 178, 210], np.float32)[None, None, :]
               * (1.15 - 0.35 * ys[..., None] / ph))
        sheen = np.clip(1 - np.abs((xs + ys * 0.7) / (pw + 0.7 * ph) - 0.32) * 9, 0, 1)[..., None]
        if self.night:
            table = {"lit": (1.0, 6 + 0 * sky), "blinds": (1.0, 6 + 0 * sky),
                     "dark": (0.08, 3 + sky * 0.05 + sheen * 12),
                     "empty": (0.0, 5 + sky * 0.06 + sheen * 12)}
        else:
            table = {"lit": (0.8, sky * 0.16 + sheen * 36), "blinds": (0.8, sky * 0.16 + sheen * 36),
                     "dark": (0.28, sky * 0.55 + sheen * 60), "empty": (0.0, sky * 0.7 + sheen * 60)}
        mul, add = table[state]
        return np.full((1, 1, 3), mul, np.float32), np.asarray(add, np.float32)

    def render(self, images: Sequence[Image.Image], labels: str = "none") -> Image.Image:
        out = self.base.copy()
        for k, (px, py) in enumerate(self.panes):
            state = self.states[k] if k < len(images) else "empty"
            mul, add = self.tints[state]
            if k < len(images):
                image = images[k].convert("RGB") if images[k].mode != "RGB" else images[k]
                pixels = np.asarray(fit(image, self.pane, cover=True), np.float32)
                if state in ("lit", "blinds"):
                    mul = mul * np.asarray(LIGHTS[self.lights[k]], np.float32) * self.lamp \
                        if self.night else mul
                pixels = pixels * mul + add
            else:
                pixels = np.broadcast_to(add, (self.pane[1], self.pane[0], 3))
            out.paste(Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), (px, py))
        out = Image.alpha_composite(out.convert("RGBA"), self.overlay).convert("RGB")
        if labels != "none":
            size = max(8, round(self.pane[1] * 0.06))
            ink = (200, 190, 170) if self.night else (40, 38, 34)
            for k, (x, y, w, h) in enumerate(self.windows[:len(images)]):
                text = label_text(images[k], labels)
                if text:
                    draw_text(out, (x + w / 2, y + h + self.sill + self.floor_gap * 0.2), text,
                              size=size, fill=ink, anchor="mt")
        return out


def _bars(mullions: str, px: int, py: int, pw: int, ph: int, bar: int) -> list[tuple[int, int, int, int]]:
    """Rectangles of the glazing bars for one pane."""
    half = bar // 2
    vertical = lambda fx: (px + round(pw * fx) - half, py, px + round(pw * fx) - half + bar - 1, py + ph - 1)
    horizontal = lambda fy, x0=0.0, x1=1.0: (px + round(pw * x0), py + round(ph * fy) - half,
                                            px + round(pw * x1) - 1, py + round(ph * fy) - half + bar - 1)
    if mullions == "cross":
        return [vertical(0.5), horizontal(0.5)]
    if mullions == "transom":
        return [horizontal(0.28), (px + pw // 2 - half, py, px + pw // 2 - half + bar - 1, py + round(ph * 0.28))]
    if mullions == "grid":
        return [vertical(1 / 3), vertical(2 / 3), horizontal(0.5)]
    return []


def window_states(count: int, dark: float, blinds: float, seed: int) -> tuple[list[str], list[float]]:
    """Which windows are ``lit``, ``dark`` or have ``blinds`` (and how far down), for a seed.

    Exactly ``round(dark * count)`` windows are dark and ``round(blinds * count)`` have blinds
    (as many as fit), so "a fifth of the lights off" means what it says at any size.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(count)
    n_dark = min(count, round(dark * count))
    n_blinds = min(count - n_dark, round(blinds * count))
    states = ["lit"] * count
    for k in order[:n_dark]:
        states[k] = "dark"
    for k in order[n_dark:n_dark + n_blinds]:
        states[k] = "blinds"
    drops = rng.uniform(0.25, 0.8, count).round(3).tolist()
    return states, drops


@functools.lru_cache(maxsize=4)
def _facade(*key: Any) -> Facade:
    return Facade(*key)


DEFAULT_WALL = {"concrete": (176, 168, 156), "brick": (150, 74, 52)}


@cineml.layout("windows", options=WINDOW_OPTIONS, capacity=lambda o: product(o, "bays", "floors"))
def windows(images: list[Image.Image], floors: int = 0, bays: int = 0, window_width: int = 0,
            window_height: int = 0, time: str = "night", material: str = "concrete",
            wall: Any = "auto", frame: Any = "auto", mullions: str = "cross", dark: float = 0.2,
            blinds: float = 0.15, glow: float = 1.0, labels: str = "none", seed: int = 0) -> Image.Image:
    """A building facade whose windows show the images, by day or lit up at night."""
    _require_images(images, "windows")
    bays, floors = grid_shape(len(images), bays, floors)
    pane = _tile_size(images[0], window_width, window_height)
    wall_c = DEFAULT_WALL[material] if wall == "auto" else parse_color(wall)
    frame_c = (233, 229, 220) if frame == "auto" else parse_color(frame)
    facade = _facade(floors, bays, pane, time, material, wall_c, frame_c, mullions, float(dark),
                     float(blinds), float(glow), seed)
    return facade.render(images, labels)


# --- the composer that runs a layout, and registration ----------------------------------------------


class LayoutComposer(cineml.Composer):
    """Lay the step's images out with a named layout and save one picture."""

    name = "layout"
    suffixes = (".png", ".jpg", ".jpeg", ".webp")
    options = (Option("layout", str, "grid", "Name of the registered layout to run."),)

    def compose(self, ctx: cineml.StageContext, images: list[Path]) -> None:
        options = dict(ctx.options)
        name = options.pop("layout", "grid")
        if name not in ctx.layouts:
            known = ", ".join(sorted(ctx.layouts)) or "none registered"
            raise ctx.error("use", f"there is no layout named {name!r} (known: {known}). Check `use` in "
                                   "project.toml or install its plugin.")
        layout = ctx.layouts[name]
        declared = {o.name for o in layout.options}
        values = {k: v for k, v in options.items() if k in declared}
        capacity = layout.tiles(values)
        if capacity and len(images) > capacity:  # load only what the picture shows, spread over the input
            ctx.warn(f"Compose step {ctx.where or ctx.stage}: {len(images)} images for a {name} of {capacity}; "
                     f"showing {capacity} evenly spaced (set count = {capacity} to choose them yourself).")
            images = evenly_spaced(images, capacity)
        save_picture(layout(load_images(images), **values), ctx.output)


def save_picture(picture: Image.Image, path: Path) -> None:
    """Save atomically in the format the suffix names (high-quality JPEG/WebP, fast PNG)."""
    suffix = path.suffix.lower()
    limit = {".jpg": 65500, ".jpeg": 65500, ".webp": 16383}.get(suffix)
    if limit and max(picture.size) > limit:
        raise CinemlError(f"{path.name}: the picture is {picture.width} x {picture.height} pixels, more than "
                          f"{suffix[1:].upper()} allows ({limit} per side). Write .png, or make the tiles smaller "
                          "(tile_width, frame_width or window_width).")
    with atomic_path(path) as tmp:
        if suffix in (".jpg", ".jpeg"):
            picture.convert("L" if picture.mode == "L" else "RGB").save(tmp, "JPEG", quality=95, subsampling=0)
        elif suffix == ".webp":
            picture.save(tmp, "WEBP", quality=95, method=4)
        else:
            picture.save(tmp, "PNG", compress_level=4)


@hookimpl
def register_layouts(register: Any) -> None:
    for item in (grid, fakes_grid, side_by_side, filmstrip, windows):
        register(item)


@hookimpl
def register_composers(register: Any) -> None:
    register(LayoutComposer())
