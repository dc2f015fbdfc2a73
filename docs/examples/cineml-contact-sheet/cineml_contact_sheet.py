"""cineml-contact-sheet: a vcsi-style contact sheet layout and a lens vignette for CineML.

An example third-party plugin, kept small enough to read in one sitting:

* the ``contact-sheet`` layout: a header band (title, image count, film time span) over a grid of
  thumbnails, each labelled with its film time (or kimg, seed, index), like vcsi's sheets;
* the ``vignette`` preprocessor: darkens frame corners with a lens's cos⁴ fall-off, in Python
  (``transform``) and as an ffmpeg filter that gives the same pixels (``ffmpeg_filter``).

Only PIL and numpy are imported here: the ``cineml`` CLI imports every plugin at start-up.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import cineml
from cineml import CinemlError, Option, Preprocessor, hookimpl

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

LABELS = ("auto", "none", "index", "time", "kimg", "seed")


# --- the contact-sheet layout --------------------------------------------------------------------

SHEET_OPTIONS = (
    Option("columns", int, 4, "Thumbnails per row (fewer when there are fewer images).", min=1, max=64),
    Option("tile_width", int, 0, "Thumbnail width in pixels; 0 uses the first image's width.", min=0),
    Option("gutter", int, 6, "Space between thumbnails, in pixels.", min=0),
    Option("margin", int, 12, "Space around the sheet and inside the header band, in pixels.", min=0),
    Option("header", bool, True, "Draw the header band: title, image count, film time span."),
    Option("title", str, "auto", "Header title; \"auto\" uses the project's name, \"\" none."),
    Option("title_size", int, 0, "Title text height in pixels; 0 scales with the sheet.", min=0),
    Option("labels", str, "auto", "Label on each thumbnail; auto: film time when known, else kimg, "
           "seed, or the position (#1, #2...).", choices=LABELS),
    Option("label_size", int, 0, "Label text height in pixels; 0 scales with the thumbnail.", min=0),
    Option("fit", str, "contain", "contain: whole image with bars; cover: fill and crop.",
           choices=("contain", "cover")),
    Option("background", (str, list), "#141414", "Sheet colour (name, hex or [r, g, b]).",
           check=cineml.color_problem),
    Option("header_color", (str, list), "#262626", "Colour of the header band.", check=cineml.color_problem),
    Option("text_color", (str, list), "#f2f2f2", "Colour of the header text (labels are white on black).",
           check=cineml.color_problem),
)


def thumbnail_label(image: Image.Image, kind: str) -> str:
    """A thumbnail's label; ``auto`` takes the first fact the image's file name or index.json gives."""
    if kind == "auto":
        for fact in ("time", "kimg", "seed", "index"):
            text = thumbnail_label(image, fact)
            if text:
                return text
        return ""
    text = cineml.label_text(image, kind)
    return f"#{int(text) + 1}" if kind == "index" and text else text


def project_title(images: list[Image.Image]) -> str:
    """The name of the project the images belong to: ``[project] name`` of the nearest project.toml.

    A layout is given only images, but ``cineml.load_images`` records each one's path; the
    project folder is the first folder above it holding a ``project.toml``.
    """
    path = images[0].info.get("cineml", {}).get("path")
    if not path:
        return ""
    for folder in list(Path(path).resolve().parents)[:4]:
        manifest = folder / "project.toml"
        if manifest.is_file():
            try:
                meta = tomllib.loads(manifest.read_text(encoding="utf-8")).get("project", {})
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
                meta = {}
            name = meta.get("name") if isinstance(meta, dict) else None
            return name if isinstance(name, str) and name else folder.name
    return ""


def header_lines(images: list[Image.Image], title: str, tile: tuple[int, int]) -> list[str]:
    """The header's text: the title (if any), then count, thumbnail size and film time span."""
    facts = [f"{len(images)} image{'s' if len(images) != 1 else ''}", f"{tile[0]}x{tile[1]}"]
    first, last = cineml.label_text(images[0], "time"), cineml.label_text(images[-1], "time")
    if first and last:
        facts.append(f"{first} - {last}")
    return ([title] if title else []) + ["  |  ".join(facts)]


@cineml.layout("contact-sheet", options=SHEET_OPTIONS)
def contact_sheet(images: list[Image.Image], columns: int = 4, tile_width: int = 0, gutter: int = 6,
                  margin: int = 12, header: bool = True, title: str = "auto", title_size: int = 0,
                  labels: str = "auto", label_size: int = 0, fit: str = "contain",
                  background: Any = "#141414", header_color: Any = "#262626",
                  text_color: Any = "#f2f2f2") -> Image.Image:
    """A vcsi-style contact sheet: a title band over a grid of thumbnails labelled with film time."""
    if not images:
        raise CinemlError("The contact-sheet layout got no images. Check the compose step's input "
                          "(and its count/every/start/end): it matched no files.")
    tw = tile_width or images[0].width
    th = max(1, round(tw * images[0].height / images[0].width))
    cols = min(columns, len(images))
    rows = math.ceil(len(images) / cols)
    bg, band, ink = (cineml.parse_color(c) for c in (background, header_color, text_color))
    width = 2 * margin + cols * tw + (cols - 1) * gutter

    lines: list[tuple[str, int]] = []
    if header:
        big = title_size or max(12, min(72, width // 24))
        text = header_lines(images, project_title(images) if title == "auto" else title, (tw, th))
        lines = [(line, big if k == 0 and len(text) > 1 else max(9, round(big * 0.6)))
                 for k, line in enumerate(text)]
    band_height = 2 * margin + sum(round(size * 1.35) for _, size in lines) if lines else 0

    sheet = Image.new("RGB", (width, band_height + 2 * margin + rows * th + (rows - 1) * gutter), bg)
    if lines:
        sheet.paste(band, (0, 0, width, band_height))
        y = margin
        for line, size in lines:
            cineml.draw_text(sheet, (margin, y), line, size=size, fill=ink, anchor="la")
            y += round(size * 1.35)

    small = label_size or max(9, th // 9)
    pad = max(2, small // 4)
    for k, image in enumerate(images):
        row, col = divmod(k, cols)
        x, y = margin + col * (tw + gutter), band_height + margin + row * (th + gutter)
        sheet.paste(cineml.fit(image.convert("RGB"), (tw, th), fill=bg, cover=fit == "cover"), (x, y))
        text = "" if labels == "none" else thumbnail_label(image, labels)
        if text:  # bottom-right, white on a black box so it reads on any frame and any sheet colour
            cineml.draw_text(sheet, (x + tw - 2 * pad, y + th - 2 * pad), text, size=small, fill="white",
                             anchor="rd", box=(0, 0, 0), padding=pad)
    return sheet


# --- the vignette preprocessor -------------------------------------------------------------------


def lens_angle(strength: float) -> float:
    """The lens angle whose cos⁴ fall-off leaves the corners at ``1 - strength`` of their light.

    Rounded to a 32-bit float, as ffmpeg's ``vignette`` stores it, and written to the filter with
    ``repr`` (which round-trips): Python and ffmpeg then use the very same number.
    """
    angle = math.acos((1.0 - min(max(strength, 0.0), 1.0)) ** 0.25)
    return float(np.float32(angle))


def falloff(width: int, height: int, angle: float) -> np.ndarray:
    """Per-pixel light factor, float32 (height, width): cos⁴(angle · r / r_corner).

    Measured to reproduce ffmpeg's ``vignette`` filter (``dither=0``) to the pixel: r is the
    distance from the centre (w/2, h/2) with each offset truncated to whole pixels, r_corner is
    hypot(w/2, h/2), the factor is a float32 and so is its product with the pixel value.
    """
    dx = np.trunc(np.arange(width, dtype=np.float64) - width / 2)
    dy = np.trunc(np.arange(height, dtype=np.float64) - height / 2)
    r = np.hypot(dx[None, :], dy[:, None]) / math.hypot(width / 2, height / 2)
    return (np.cos(angle * r) ** 4).astype(np.float32)


def _display_width(width: int, sar: tuple[int, int]) -> int:
    """Width of a frame with pixel aspect ``sar`` in square pixels, as ``scale=iw*sar:ih`` (half away)."""
    num, den = sar
    if num <= 0 or den <= 0 or num == den:
        return width
    return max(1, int(math.floor(width * num / den + 0.5)))


class Vignette(Preprocessor):
    """Darken the corners like a lens (cos⁴ fall-off); strength 0.5 halves the corners' light."""

    name = "vignette"
    options = (
        Option("strength", float, 0.5, "How much darker the corners get: 0 none, 1 black corners.",
               min=0.0, max=1.0),
    )

    def transform(self, image: Image.Image, options: dict[str, Any]) -> Image.Image:
        if image.mode not in ("L", "RGB"):
            image = image.convert("RGB")
        factor = falloff(image.width, image.height, lens_angle(options.get("strength", 0.5)))
        pixels = np.asarray(image, dtype=np.float32)
        if image.mode == "RGB":
            factor = factor[..., None]
        # float32 product, truncated, like ffmpeg without dithering: both paths give identical frames.
        return Image.fromarray(np.floor(pixels * factor).astype(np.uint8))  # (h, w) -> L, (h, w, 3) -> RGB

    def ffmpeg_filter(self, options: dict[str, Any], width: int, height: int,
                      sar: tuple[int, int]) -> str | None:
        # Square pixels first (as the Python path receives them), then RGB or gray: ffmpeg's
        # vignette on YUV scales limited-range luma and is ~9 levels off; on RGB/gray it is exact.
        display = _display_width(width, sar)
        square = f"scale={display}:{height}," if display != width else ""
        angle = lens_angle(options.get("strength", 0.5))
        return (f"{square}setsar=1,format=rgb24|gbrp|gray,"
                f"vignette=angle={angle!r}:dither=0,setsar=1")


# --- registration --------------------------------------------------------------------------------


@hookimpl
def register_layouts(register: Any) -> None:
    register(contact_sheet)


@hookimpl
def register_preprocessors(register: Any) -> None:
    register(Vignette())
