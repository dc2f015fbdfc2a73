"""Small image helpers for layout authors: fit, text, colours, even sizes, loading with metadata.

A layout is just ``func(images, **options) -> PIL.Image``; these helpers cover the fiddly parts
every layout needs (fitting tiles, labelling them, parsing colours from manifests) so that an
artist's layout stays a dozen readable lines. PIL only at import time: the CLI imports this
module at start-up, so numpy is imported inside the one function that needs it.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageColor, ImageDraw, ImageFont, ImageOps

from .api import CinemlError

Color = tuple[int, int, int]

#: Resampling used to shrink or enlarge tiles (LANCZOS keeps GAN textures crisp when shrinking).
RESAMPLE = Image.Resampling.LANCZOS
#: Shrink by whole factors first when reducing a lot (Pillow's ``reducing_gap``): several times
#: faster than a plain LANCZOS pass at 4x, and visually the same at 3.
REDUCING_GAP = 3.0

_KIMG = re.compile(r"fakes(\d+)(?:[._](\d+))?", re.IGNORECASE)  # fakes000120, fakes000000_040 (0.04)
_SEED = re.compile(r"seed(\d+)", re.IGNORECASE)
_NUMBER = re.compile(r"(\d+)")


def parse_color(value: Any) -> Color:
    """``"black"``, ``"#0b0b0b"``, ``"#fff"``, ``[255, 140, 0]`` -> ``(r, g, b)``.

    Manifests spell colours in all these ways; a layout calls this once per colour option so a
    typo fails early with a message that says what is accepted.
    """
    if isinstance(value, str):
        try:
            rgb = ImageColor.getrgb(value.strip())
        except ValueError:
            rgb = None
        if rgb is not None:
            return (int(rgb[0]), int(rgb[1]), int(rgb[2]))
    elif isinstance(value, (list, tuple)) and len(value) in (3, 4) and all(
            isinstance(c, int) and not isinstance(c, bool) and 0 <= c <= 255 for c in value):
        return (value[0], value[1], value[2])
    raise CinemlError(
        f"{value!r} is not a colour. Write a colour name (\"black\", \"orange\"), a hex code "
        f"(\"#0b0b0b\" or \"#fff\") or a list of three integers from 0 to 255 ([255, 140, 0]).")


def color_problem(value: Any) -> str | None:
    """An :class:`Option` ``check`` for colours: ``None`` when ``value`` parses, else why not.

    With it a bad colour fails when project.toml is read, not half-way through a render.
    """
    try:
        parse_color(value)
    except CinemlError as error:
        return str(error)
    return None


def color_for(image: Image.Image, color: Any) -> int | Color:
    """A colour in the form ``image``'s mode wants (a grey level for ``L`` images)."""
    rgb = parse_color(color) if not isinstance(color, tuple) or len(color) != 3 else color
    if image.mode == "L":
        return round(0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2])
    return rgb


def fit(image: Image.Image, size: tuple[int, int], fill: Any = "black",
        resample: Image.Resampling = RESAMPLE, cover: bool = False) -> Image.Image:
    """Scale ``image`` into a ``size`` cell keeping its aspect ratio, centred.

    ``cover=False`` shows the whole image with ``fill`` bars (never crops a face away);
    ``cover=True`` fills the cell and crops the overflow (windows, film frames). ``fill=None``
    returns the scaled image without bars, so it may be smaller than the cell.
    """
    width, height = int(size[0]), int(size[1])
    if width < 1 or height < 1:
        raise CinemlError(f"Cannot fit an image into a {width}x{height} cell: both sides must be >= 1.")
    if image.size == (width, height):
        return image
    if cover:  # crop the centre to the cell's aspect, then scale that box
        scale = max(width / image.width, height / image.height)
        box_w, box_h = width / scale, height / scale
        left, top = (image.width - box_w) / 2, (image.height - box_h) / 2
        return image.resize((width, height), resample, box=(left, top, left + box_w, top + box_h),
                            reducing_gap=REDUCING_GAP)
    scale = min(width / image.width, height / image.height)
    new = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    scaled = image.resize(new, resample, reducing_gap=REDUCING_GAP) if new != image.size else image
    if fill is None or scaled.size == (width, height):
        return scaled
    cell = Image.new(scaled.mode, (width, height), color_for(scaled, fill))
    cell.paste(scaled, ((width - new[0]) // 2, (height - new[1]) // 2))
    return cell


@functools.lru_cache(maxsize=64)
def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font at ``size`` pixels (no system font path, so it works everywhere)."""
    return ImageFont.load_default(max(1, int(size)))


def draw_text(image: Image.Image, xy: tuple[float, float], text: str, size: int = 16,
              fill: Any = "white", anchor: str = "la", stroke: int = 0,
              stroke_fill: Any = "black", box: Any = None, padding: int | None = None) -> Image.Image:
    """Draw ``text`` on ``image`` in place (and return it) with Pillow's default font.

    ``anchor`` is Pillow's two-letter anchor ("la" left/ascender, "rs" right/baseline, "mm"
    centre...). ``stroke`` outlines the letters and ``box`` puts a solid background behind them,
    either of which keeps a label readable on any tile.
    """
    draw = ImageDraw.Draw(image)
    face = font(size)
    fill_c = color_for(image, fill)
    if box is not None:
        pad = max(1, size // 4) if padding is None else padding
        left, top, right, bottom = draw.textbbox(xy, text, font=face, anchor=anchor, stroke_width=stroke)
        draw.rectangle((left - pad, top - pad, right + pad - 1, bottom + pad - 1), fill=color_for(image, box))
    draw.text(xy, text, fill=fill_c, font=face, anchor=anchor, stroke_width=stroke,
              stroke_fill=color_for(image, stroke_fill) if stroke else None)
    return image


def text_size(text: str, size: int) -> tuple[int, int]:
    """Width and height in pixels of ``text`` drawn at ``size`` (to place labels before drawing)."""
    left, top, right, bottom = font(size).getbbox(text)  # whole pixels, though typed float for FreeType fonts
    return int(right - left), int(bottom - top)


def even_size(image: Image.Image, fill: Any = "black") -> Image.Image:
    """Pad ``image`` by one pixel on the right and/or bottom so both sides are even.

    H.264 in yuv420p stores colour at half resolution and needs even sides; padding (rather
    than scaling) keeps every pixel of the artwork where it was.
    """
    width, height = image.width + image.width % 2, image.height + image.height % 2
    if (width, height) == image.size:
        return image
    padded = Image.new(image.mode, (width, height), color_for(image, fill))
    padded.paste(image, (0, 0))
    return padded


def flatten(image: Image.Image) -> Image.Image:
    """``image`` as ``L`` (greyscale stays greyscale) or ``RGB`` (alpha composited on black)."""
    if image.mode in ("L", "RGB"):
        return image
    if image.mode in ("1", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        if image.mode.startswith("I;16") or image.mode == "I":
            import numpy as np  # 16-bit PNGs: keep the top 8 bits rather than clipping

            array = np.asarray(image, dtype=np.uint32)
            peak = 65535 if image.mode.startswith("I;16") or array.max() > 255 else 255
            return Image.fromarray((array * 255 // peak).astype(np.uint8))
        return image.convert("L")
    if image.mode == "LA":  # like RGBA: transparent is black
        black = Image.new("L", image.size, 0)
        return Image.composite(image.getchannel("L"), black, image.getchannel("A"))
    if image.mode == "P" and "transparency" not in image.info and _palette_is_grey(image):
        return image.convert("L")
    if "A" in image.mode or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def _palette_is_grey(image: Image.Image) -> bool:
    palette = image.getpalette() or []
    return all(palette[i] == palette[i + 1] == palette[i + 2] for i in range(0, len(palette) - 2, 3))


def metadata(path: str | Path, index: int = 0) -> dict[str, Any]:
    """What a file name says about an image: ``path``, ``index``, ``kimg``, ``seed``, and for frames
    ``time``, ``timecode``, ``shot`` and ``shot_timecode``.

    ``kimg`` comes from training grids (``fakes000120.png`` -> 120; fractional names such as
    ``fakes000000_040.png``, the stylegan2 trainer's, -> 0.04), ``seed`` from generated stills
    (``seed0042.png`` -> 42), and the frame facts (seconds into the film, its ``hh:mm:ss:ff`` at the film's
    rate, its shot and that shot's first timecode) from the ``index.json`` and ``shots.json`` an extractor
    writes beside frames. Missing facts are ``None`` so layouts can test for them.
    """
    path = Path(path)
    kimg_match = _KIMG.search(path.stem)
    seed_match = _SEED.search(path.stem)
    kimg: float | int | None = None
    if kimg_match:
        number = float(f"{kimg_match.group(1)}.{kimg_match.group(2) or 0}")
        kimg = int(number) if number.is_integer() else number
    facts = frame_facts(path.parent).get(path.name, {})
    return {"path": str(path), "index": index, "kimg": kimg,
            "seed": int(seed_match.group(1)) if seed_match else None,
            **{key: facts.get(key) for key in ("time", "timecode", "shot", "shot_timecode")}}


def _mtime(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def frame_facts(folder: str | Path) -> dict[str, dict[str, Any]]:
    """``file name -> {"time", "timecode", "shot", "shot_timecode"}`` for the frames in ``folder``, from the
    ``index.json`` (and ``shots.json``) an extractor writes beside them; empty when there is none.

    Read once per version of those files (their modification times are part of the cache key).
    """
    folder = Path(folder)
    return _frame_facts(str(folder), _mtime(folder / "index.json"), _mtime(folder / "shots.json"))


@functools.lru_cache(maxsize=16)
def _frame_facts(folder: str, *mtimes: int) -> dict[str, dict[str, Any]]:
    """:func:`frame_facts`, cached by folder and file times.

    Accepts the shapes an extractor is likely to write: ``{"frames": [{"file", "time"}...]}``,
    a list of such entries, ``{"000001.jpg": 0.0, ...}`` or a plain list of times in file order.
    """
    index = Path(folder) / "index.json"
    if not index.is_file():
        return {}
    data = _read_json(index)
    rate = None
    if isinstance(data, dict):
        source = data.get("source")
        rate = source.get("fps") if isinstance(source, dict) else None
        rate = rate if isinstance(rate, (int, float)) and rate > 0 else None
    if isinstance(data, dict) and isinstance(data.get("frames"), (list, dict)):
        data = data["frames"]
    facts: dict[str, dict[str, Any]] = {}

    def add(name: str, entry: Any) -> None:
        time = _entry_time(entry)
        shot = entry.get("shot") if isinstance(entry, dict) else None
        if time is not None or isinstance(shot, int):
            facts[name] = {"time": time, "shot": shot if isinstance(shot, int) else None,
                           "timecode": None if time is None or rate is None else smpte_timecode(time, rate)}

    if isinstance(data, dict):
        for name, value in data.items():
            add(str(name), value)
    elif isinstance(data, list):
        for position, entry in enumerate(data):
            name = None
            if isinstance(entry, dict):
                name = next((entry[k] for k in ("file", "name", "path", "filename") if k in entry), None)
            elif isinstance(entry, (list, tuple)) and len(entry) == 2 and isinstance(entry[0], str):
                name, entry = entry
            if name is None:  # a bare list of times: frames are numbered from 1 in this order
                for ext in (".jpg", ".png", ".webp", ".jpeg"):
                    add(f"{position + 1:06d}{ext}", entry)
            else:
                add(Path(str(name)).name, entry)
    shots_file = Path(folder) / "shots.json"
    starts = _read_json(shots_file).get("shots", []) if shots_file.is_file() else []
    for fact in facts.values():
        shot = fact["shot"]
        fact["shot_timecode"] = starts[shot].get("timecode") if shot is not None and 0 <= shot < len(starts) else None
    return facts


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise CinemlError(f"{path} is not valid JSON ({error}). Delete the frames folder and "
                          f"extract again, or remove {path.name} to compose without frame times.") from error


def _entry_time(entry: Any) -> float | None:
    if isinstance(entry, (int, float)) and not isinstance(entry, bool):
        return float(entry)
    if isinstance(entry, dict):
        for key in ("time", "t", "timestamp", "pts_time", "seconds"):
            if isinstance(entry.get(key), (int, float)):
                return float(entry[key])
    return None


def load_image(path: str | Path, index: int = 0) -> Image.Image:
    """Open one image fully decoded, as ``L`` or ``RGB``, with ``info["cineml"]`` metadata."""
    path = Path(path)
    try:
        with Image.open(path) as opened:
            opened.load()
            upright = ImageOps.exif_transpose(opened)  # a phone photo tagged "rotate 90" stands up
            image = flatten(upright)
            if image is opened:
                image = opened.copy()
    except FileNotFoundError as error:
        raise CinemlError(f"Image {path} does not exist. Check the compose step's input.") from error
    except (OSError, ValueError, Image.DecompressionBombError) as error:
        raise CinemlError(f"Cannot read image {path} ({error}). Replace or delete the file, "
                          f"or exclude it from the compose step's input.") from error
    image.info["cineml"] = metadata(path, index)
    return image


def load_images(paths: Iterable[str | Path]) -> list[Image.Image]:
    """Open every path in order (see :func:`load_image`); ``index`` is the position in the list."""
    return [load_image(path, index) for index, path in enumerate(paths)]


def label_text(image: Image.Image, kind: str) -> str:
    """The label for a tile: ``kind`` is ``none``, ``index``, ``kimg``, ``seed`` or ``time``.

    Reads ``image.info["cineml"]``; an image without that fact gets an empty label rather than
    an error, so one odd file in a sequence does not stop a render.
    """
    meta = image.info.get("cineml", {})
    if kind == "none":
        return ""
    if kind == "index":
        return str(meta.get("index", ""))
    if kind == "kimg":
        kimg = meta.get("kimg")
        if kimg is None:
            return "init" if "init" in Path(str(meta.get("path", ""))).stem else ""
        return f"{kimg:g} kimg" if isinstance(kimg, float) else f"{kimg} kimg"
    if kind == "seed":
        return "" if meta.get("seed") is None else f"seed {meta['seed']}"
    if kind == "time":
        return "" if meta.get("time") is None else timecode(meta["time"])
    if kind == "timecode":
        return "" if meta.get("timecode") is None else meta["timecode"]
    if kind == "shot":
        return "" if meta.get("shot") is None else f"shot {meta['shot'] + 1} · {meta['shot_timecode']}"
    raise CinemlError(f"Unknown label kind {kind!r}: use none, index, kimg, seed, time, timecode or shot.")


def timecode(seconds: float) -> str:
    """``83.4`` -> ``"01:23.40"`` (hours appear only when needed)."""
    hundredths = round(max(0.0, float(seconds)) * 100)  # round first: 59.996 s is 01:00.00, not 00:60.00
    hours, rest = divmod(hundredths, 360000)
    minutes, rest = divmod(rest, 6000)
    text = f"{minutes:02d}:{rest // 100:02d}.{rest % 100:02d}"
    return f"{hours}:{text}" if hours else text


def smpte_timecode(seconds: float, rate: float) -> str:
    """``83.4`` s at 25 fps -> ``"00:01:23:10"``: hours, minutes, seconds and frames at the film's own rate.

    Non-drop-frame: the frame count is written at the nominal whole rate (24 for 23.976, 30 for 29.97), as
    editing software labels such films; at 23.976 the label runs 0.1% behind the clock over an hour.
    """
    base = max(1, round(rate))
    frames = round(max(0.0, float(seconds)) * rate)
    total_seconds, ff = divmod(frames, base)
    hours, rest = divmod(total_seconds, 3600)
    return f"{hours:02d}:{rest // 60:02d}:{rest % 60:02d}:{ff:02d}"


def grid_shape(count: int, columns: int = 0, rows: int = 0) -> tuple[int, int]:
    """Columns and rows for ``count`` tiles; 0 means "work it out" (near-square when both are 0)."""
    count = max(1, count)
    if columns and rows:
        return columns, rows
    if columns:
        return columns, math.ceil(count / columns)
    if rows:
        return math.ceil(count / rows), rows
    columns = math.ceil(math.sqrt(count))
    return columns, math.ceil(count / columns)


#: The largest picture a layout draws (pixels): 500 MP is 1.5 GB of RGB, and a 70 x 70 cm print at 800 dpi.
MAX_PICTURE_PIXELS = 500_000_000


def check_canvas(size: tuple[int, int], what: str, hint: str) -> None:
    """Refuse, before allocating, a picture too large to draw (a 100 x 100 grid of 1024² tiles is 100k²)."""
    width, height = size
    if width * height > MAX_PICTURE_PIXELS:
        raise CinemlError(f"The {what} would be {width} x {height} pixels ({width * height / 1e6:,.0f} MP), more than "
                          f"the {MAX_PICTURE_PIXELS / 1e6:,.0f} MP CineML draws. {hint}")


def common_mode(images: Sequence[Image.Image]) -> str:
    """``L`` when every image is greyscale (a B&W film stays B&W), else ``RGB``."""
    return "L" if images and all(image.mode == "L" for image in images) else "RGB"


def noise(size: tuple[int, int], seed: int = 0, scale: float = 64.0, octaves: int = 4,
          persistence: float = 0.5) -> Any:
    """Seeded fractal value noise in [0, 1] as a float32 numpy array of shape (height, width).

    Smooth random grids upsampled bicubically and summed over octaves: cheap, deterministic
    texture for procedural backgrounds (plaster, concrete, paper, film grain at ``scale=1``).
    """
    import numpy as np

    width, height = int(size[0]), int(size[1])
    rng = np.random.default_rng(seed)
    total = np.zeros((height, width), np.float32)
    amplitude, weight, cell = 1.0, 0.0, max(1.0, float(scale))
    for _ in range(max(1, octaves)):
        grid_w, grid_h = max(2, math.ceil(width / cell) + 2), max(2, math.ceil(height / cell) + 2)
        grid = rng.random((grid_h, grid_w), dtype=np.float32)
        if cell <= 1.0:
            layer = grid[:height, :width]
        else:
            big = Image.fromarray(grid).resize((round(grid_w * cell), round(grid_h * cell)),
                                                    Image.Resampling.BICUBIC)
            layer = np.asarray(big)[:height, :width]
        total += amplitude * layer
        weight += amplitude
        amplitude *= persistence
        cell /= 2
    return np.clip(total / weight, 0.0, 1.0)


__all__ = ["Color", "common_mode", "draw_text", "even_size", "fit", "flatten", "font", "grid_shape",
           "label_text", "load_image", "load_images", "metadata", "noise", "parse_color",
           "text_size", "timecode"]
