"""Images out of a network (NCHW tensors in about [-1, 1] to uint8 arrays, PIL images and mosaics, written
atomically), and the device they are made on. torch is imported inside the functions: the generator
imports this module at start-up."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from cineml import CinemlError, atomic_path

if TYPE_CHECKING:
    import torch


def to_uint8_grid(images: torch.Tensor, grid: tuple[int, int]) -> Image.Image:
    """[N, C, H, W] in [-1, 1] (N = columns * rows) -> one PIL mosaic, row by row."""
    import torch

    gw, gh = grid
    x = (images.detach().float().cpu() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    n, c, h, w = x.shape
    mosaic = x.reshape(gh, gw, c, h, w).permute(0, 3, 1, 4, 2).reshape(gh * h, gw * w, c).numpy()
    return Image.fromarray(np.ascontiguousarray(mosaic[:, :, 0] if c == 1 else mosaic))  # mode L or RGB from the shape


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """NCHW floats in about [-1, 1] -> NHWC uint8, the reference's ``img * 127.5 + 128`` rounding."""
    import torch

    x = (images * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def to_pil(array: np.ndarray) -> Image.Image:
    """HWC uint8 -> PIL: mode L for one channel, RGB for three."""
    if array.shape[2] == 1:
        return Image.fromarray(np.ascontiguousarray(array[:, :, 0]))  # uint8 HxW: mode L
    if array.shape[2] == 3:
        return Image.fromarray(np.ascontiguousarray(array))  # uint8 HxWx3: mode RGB
    raise CinemlError(f"The network makes {array.shape[2]}-channel images; only 1 (grayscale) and 3 (RGB) can be "
                      "saved as pictures.")


def save_png(image: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


def pick_device(name: str, key: str = "device") -> torch.device:
    """``auto``: CUDA when PyTorch sees a GPU, else the CPU; ``key`` names the option in the error."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CinemlError(f'{key} = "cuda" but PyTorch sees no CUDA GPU here; use "auto" or "cpu".')
    return torch.device(name)
