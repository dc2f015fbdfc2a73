"""The frames folder as a training set: validated once, decoded once into a uint8 memmap cache.

A 13-minute film at 512x512 is ~18,000 frames (~14 GB as raw pixels), so frames are never all held
in RAM: they are decoded (in parallel threads) into ``<output>/dataset-cache.u8``, an [N, C, H, W]
uint8 array that the OS pages in as batches are drawn. A small JSON fingerprint beside it lets an
interrupted run reuse the cache. Frames are read through ``cineml.imaging.flatten`` (16-bit scaled to
8, alpha composited on black, grey palettes kept grey); when every frame flattens to greyscale ('L')
the network gets 1 channel.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image

from cineml import CinemlError, atomic_path, flatten, frame_facts

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
CACHE_NAME = "dataset-cache.u8"
CACHE_INFO = "dataset-cache.json"
LETTERBOX_HINT = ('Add a letterbox step to the manifest ([[preprocess]] use = "letterbox") so every frame is padded '
                  "to a square power-of-two size such as 256x256 or 512x512, then run again.")


def list_frames(folder: Path) -> list[Path]:
    """Image files in ``folder`` in frame order (numeric stems sort numerically)."""
    if not folder.is_dir():
        raise CinemlError(f"The frames folder {folder} does not exist; run the extract stage first.")
    files = [p for p in folder.iterdir()
             if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file()]
    return sorted(files, key=lambda p: (0, int(p.stem), p.name) if p.stem.isdigit() else (1, 0, p.name))


def inspect_frames(files: list[Path], folder: Path) -> tuple[int, int]:
    """Check every frame: same square power-of-two size. Returns (resolution, channels).

    Only headers are read for plain 'L'/'RGB' frames; other modes are decoded to see what they flatten to.
    """
    if not files:
        raise CinemlError(f"The frames folder {folder} holds no images (expected 000001.png, 000002.png, ...). "
                          "Run the extract stage first, or check that [extract] wrote frames there.")
    size0, gray = None, True
    for path in files:
        try:
            with Image.open(path) as im:
                size, mode = im.size, flatten(im).mode
        except Exception as exc:  # PIL raises many types for a broken file
            raise CinemlError(f"Frame {path} cannot be read as an image ({exc}); delete it or re-run the "
                              "extract stage.") from exc
        if size0 is None:
            size0, first = size, path
            w, h = size
            if w != h:
                raise CinemlError(f"Frame {path.name} in {folder} is {w}x{h}, not square: StyleGAN2 trains on square "
                                  f"power-of-two images. {LETTERBOX_HINT}")
            if w < 4 or w & (w - 1):
                raise CinemlError(f"Frame {path.name} in {folder} is {w}x{h}, which is not a power of two (>= 4): "
                                  f"StyleGAN2 trains on square power-of-two images. {LETTERBOX_HINT}")
        elif size != size0:
            raise CinemlError(f"Frame {path.name} in {folder} is {size[0]}x{size[1]} but {first.name} is "
                              f"{size0[0]}x{size0[1]}: every frame must have the same size. Re-run the extract "
                              f"stage so all frames come from the same settings. {LETTERBOX_HINT}")
        gray = gray and mode == "L"
    assert size0 is not None  # files is not empty
    return size0[0], 1 if gray else 3


def _fingerprint(files: list[Path], resolution: int, channels: int) -> dict:
    stats = [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    return {"resolution": resolution, "channels": channels, "count": len(files),
            "files": hash_list(stats)}


def hash_list(items: list) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(items).encode()).hexdigest()


def _decode(path: Path, channels: int, resolution: int) -> np.ndarray:
    with Image.open(path) as im:
        im = flatten(im)
        arr = np.asarray(im if channels == 1 else im.convert("RGB"), dtype=np.uint8)
    if arr.shape[:2] != (resolution, resolution):
        raise CinemlError(f"Frame {path} decoded to {arr.shape[1]}x{arr.shape[0]}, expected "
                          f"{resolution}x{resolution}; re-run the extract stage.")
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


class FrameDataset:
    """uint8 frames [N, C, R, R] in a memmap; ``len`` counts x-flipped copies when ``mirror`` is on."""

    def __init__(self, array: np.ndarray, mirror: bool = False, shots: np.ndarray | None = None) -> None:
        self.array = array
        self.num_frames, self.channels, self.resolution, _ = array.shape
        self.mirror = mirror
        self.shots = shots  # each frame's shot (from the extractor's index.json), or None where it gives none

    def weights(self, balance: str) -> np.ndarray | None:
        """How often to draw each dataset index: None (evenly) for ``"frame"``; for ``"shot"`` 1 / the length of
        the frame's shot, so every shot is drawn equally often whatever its length."""
        if balance == "frame":
            return None
        if self.shots is None:
            raise CinemlError("balance = \"shot\" needs each frame's shot, and the frames' index.json gives none.")
        _, inverse, counts = np.unique(self.shots, return_inverse=True, return_counts=True)
        weights = 1.0 / counts[inverse]
        return np.tile(weights, 2) if self.mirror else weights

    def __len__(self) -> int:
        return self.num_frames * (2 if self.mirror else 1)

    def get(self, indices: np.ndarray) -> np.ndarray:
        """Frames for dataset indices (index >= num_frames: the x-flipped frame), uint8 [B, C, R, R]."""
        indices = np.asarray(indices, dtype=np.int64)
        frames = indices % self.num_frames
        order = np.argsort(frames, kind="stable")  # read the memmap in file order
        out = np.empty((len(indices), self.channels, self.resolution, self.resolution), dtype=np.uint8)
        out[order] = self.array[frames[order]]
        flip = indices >= self.num_frames
        if flip.any():
            out[flip] = out[flip][..., ::-1]
        return out

    def grid_indices(self, count: int) -> np.ndarray:
        """``count`` frames spread evenly through the film (for reals.png)."""
        return np.linspace(0, self.num_frames - 1, count).round().astype(np.int64)


def open_frames(folder: Path, cache_dir: Path, mirror: bool = False,
                log: Callable[[str], None] = print) -> FrameDataset:
    """Validate the frames folder and return a dataset over its (possibly reused) memmap cache."""
    folder = Path(folder)
    files = list_frames(folder)
    resolution, channels = inspect_frames(files, folder)
    facts = frame_facts(folder)
    found = [facts.get(p.name, {}).get("shot") for p in files]
    shots = np.array(found, dtype=np.int64) if files and None not in found else None
    info = _fingerprint(files, resolution, channels)
    shape = (len(files), channels, resolution, resolution)
    cache, info_path = cache_dir / CACHE_NAME, cache_dir / CACHE_INFO
    if cache.exists() and info_path.exists():
        try:
            same = json.loads(info_path.read_text()) == info
        except ValueError:
            same = False
        if same and cache.stat().st_size == int(np.prod(shape)):
            return FrameDataset(np.memmap(cache, dtype=np.uint8, mode="r", shape=shape), mirror, shots)
    gray = " grayscale" if channels == 1 else ""
    plural = "s" if len(files) != 1 else ""
    log(f"Reading {len(files)}{gray} frame{plural} of {resolution}x{resolution} from {folder} into {cache.name}")
    info_path.unlink(missing_ok=True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    with atomic_path(cache) as tmp:
        mm = np.memmap(tmp, dtype=np.uint8, mode="w+", shape=shape)  # raw bytes; the shape is in the JSON
        workers = min(8, os.cpu_count() or 1)
        with ThreadPoolExecutor(workers) as pool:  # PIL decodes without the GIL
            for start in range(0, len(files), 256):  # in chunks, so decoded frames never pile up in RAM
                chunk = files[start:start + 256]
                for i, arr in enumerate(pool.map(lambda p: _decode(p, channels, resolution), chunk)):
                    mm[start + i] = arr
        mm.flush()
        del mm
    with atomic_path(info_path) as tmp:
        tmp.write_text(json.dumps(info))
    return FrameDataset(np.memmap(cache, dtype=np.uint8, mode="r", shape=shape), mirror, shots)


def remove_cache(cache_dir: Path) -> None:
    """Delete the decoded-frames cache (after training finished; it is rebuilt if ever needed)."""
    (cache_dir / CACHE_INFO).unlink(missing_ok=True)
    (cache_dir / CACHE_NAME).unlink(missing_ok=True)
