"""Letterbox: fit each frame, whole and uncropped, into a power-of-two square with bars.

StyleGAN2 trains on square power-of-two images. Cropping would cut the film's composition, so
the frame is scaled to fit (by its *display* aspect ratio) and padded centred with a fill colour.
The same geometry is available as a Pillow transform and as an ffmpeg filter fragment; both
compute the content box with :func:`content_box`, so the two paths agree to the pixel.
"""

from __future__ import annotations

from typing import Any

from PIL import Image, ImageColor

from cineml import Option, Preprocessor, hookimpl

from .ffmpeg import display_size, round_half_away

#: resample option -> (ffmpeg scale flag, Pillow filter)
RESAMPLE: dict[str, tuple[str, Image.Resampling]] = {
    "lanczos": ("lanczos", Image.Resampling.LANCZOS),
    "bicubic": ("bicubic", Image.Resampling.BICUBIC),
    "bilinear": ("bilinear", Image.Resampling.BILINEAR),
    "area": ("area", Image.Resampling.BOX),
    "nearest": ("neighbor", Image.Resampling.NEAREST),
}


def check_size(value: int) -> str | None:
    """Power of two >= 4; otherwise name the nearest valid sizes."""
    if value >= 4 and value & (value - 1) == 0:
        return None
    if value < 4:
        return f"{value} is too small: use a power of two from 4 up (e.g. 256, 512 or 1024)"
    lower = 1 << (value.bit_length() - 1)
    return f"{value} is not a power of two: the nearest valid sizes are {lower} and {lower * 2}"


def check_fill(value: str) -> str | None:
    try:
        ImageColor.getrgb(value)
    except ValueError:
        return f"{value!r} is not a colour: use a name (black, white, gray, ...) or #rrggbb"
    return None


def content_box(width: int, height: int, size: int) -> tuple[int, int, int, int]:
    """(x, y, w, h) of a ``width`` x ``height`` square-pixel frame fitted into ``size``².

    Box sides and offsets are even (at most 1 px off exact centring) so that ffmpeg's
    chroma-subsampled pad lands exactly where Pillow does, and JPEG chroma has no half-pixel edge.
    """
    if width >= height:
        w, h = size, 2 * round_half_away(size * height / width / 2)
    else:
        w, h = 2 * round_half_away(size * width / height / 2), size
    w, h = max(2, w), max(2, h)
    return (size - w) // 4 * 2, (size - h) // 4 * 2, w, h


class Letterbox(Preprocessor):
    """Fit the whole frame into a power-of-two square, padding centred with bars (no cropping)."""

    name = "letterbox"
    options = (
        Option("size", int, 512, "side of the square in pixels (a power of two >= 4)",
               check=check_size),
        Option("fill", str, "black", "colour of the bars: a name or #rrggbb", check=check_fill),
        Option("resample", str, "lanczos", "resampling filter", choices=tuple(RESAMPLE)),
        Option("grayscale", bool, False, "write 1-channel grayscale frames"),
    )

    def transform(self, image: Image.Image, options: dict[str, Any]) -> Image.Image:
        size = options.get("size", 512)
        if image.mode not in ("RGB", "L"):
            image = image.convert("RGB")
        x, y, w, h = content_box(image.width, image.height, size)
        fitted = image.resize((w, h), RESAMPLE[options.get("resample", "lanczos")][1])
        canvas = Image.new("RGB", (size, size), ImageColor.getrgb(options.get("fill", "black")))
        canvas.paste(fitted.convert("RGB") if fitted.mode != "RGB" else fitted, (x, y))
        return canvas.convert("L") if options.get("grayscale", False) else canvas

    def ffmpeg_filter(self, options: dict[str, Any], width: int, height: int,
                      sar: tuple[int, int]) -> str | None:
        size = options.get("size", 512)
        dw, dh = display_size(width, height, sar)
        x, y, w, h = content_box(dw, dh, size)
        r, g, b = ImageColor.getrgb(options.get("fill", "black"))[:3]
        flag = RESAMPLE[options.get("resample", "lanczos")][0]
        graph = (f"scale={w}:{h}:flags={flag},setsar=1,"
                 f"pad={size}:{size}:{x}:{y}:color=0x{r:02x}{g:02x}{b:02x}")
        if options.get("grayscale", False):
            graph += ",format=gray"
        return graph + ",setsar=1"


@hookimpl
def register_preprocessors(register: Any) -> None:
    register(Letterbox())
