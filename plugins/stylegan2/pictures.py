"""Images out of a network: NCHW tensors in [-1, 1] to PIL mosaics, written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cineml import atomic_path


def to_uint8_grid(images: torch.Tensor, grid: tuple[int, int]) -> Image.Image:
    """[N, C, H, W] in [-1, 1] (N = columns * rows) -> one PIL mosaic, row by row."""
    gw, gh = grid
    x = (images.detach().float().cpu() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    n, c, h, w = x.shape
    mosaic = x.reshape(gh, gw, c, h, w).permute(0, 3, 1, 4, 2).reshape(gh * h, gw * w, c).numpy()
    return Image.fromarray(np.ascontiguousarray(mosaic[:, :, 0] if c == 1 else mosaic))  # mode L or RGB from the shape


def save_png(image: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
