"""Multi-scale sliced Wasserstein distance (SWD) between generated and training frames.

From the ProGAN paper (Karras et al. 2018, "Progressive Growing of GANs", section 5 and appendix D):
build a Laplacian pyramid of every image from full resolution down to 16x16, take random 7x7
neighbourhoods (patches) from every level, normalise them per colour channel, and compare the two
sets of patches level by level with the sliced Wasserstein distance: project both onto random unit
directions, sort, and average the absolute differences. Small SWD at a fine level means the
generator's local texture statistics match the film's; at the 16x16 level, its large-scale layout.
Reported x1000 per level (``swd_64``, ``swd_32``, ``swd_16``) and averaged (``swd``).

The patches of both sets are normalised with the *training frames'* per-channel mean and standard
deviation (computed per level), so a global colour or brightness shift still counts as a difference.

FID/KID need Inception-v3 weights, which CineML never downloads; they are not implemented.
"""

from __future__ import annotations

import math
from typing import Callable, Iterator

import torch
import torch.nn.functional as F

PATCH = 7
_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16


def _blur(x: torch.Tensor) -> torch.Tensor:
    """5x5 binomial low-pass with reflect padding (the Burt-Adelson Gaussian pyramid kernel)."""
    c = x.shape[1]
    k = _BINOMIAL.to(x.device, x.dtype)
    x = F.pad(x, [2, 2, 2, 2], mode="reflect")
    x = F.conv2d(x, k.reshape(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)
    return F.conv2d(x, k.reshape(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)


def _expand(x: torch.Tensor) -> torch.Tensor:
    """x2 up-sampling by zero insertion and the same blur (gain 4)."""
    n, c, h, w = x.shape
    up = x.new_zeros(n, c, 2 * h, 2 * w)
    up[:, :, ::2, ::2] = x * 4
    return _blur(up)


def laplacian_pyramid(x: torch.Tensor, min_res: int = 16) -> list[torch.Tensor]:
    """Band-pass levels from finest to ``min_res``; the last level is the low-pass residual at ``min_res``."""
    levels = []
    while x.shape[-1] > min_res:
        low = _blur(x)[:, :, ::2, ::2]
        levels.append(x - _expand(low))
        x = low
    levels.append(x)
    return levels


def random_patches(level: torch.Tensor, per_image: int, generator: torch.Generator) -> torch.Tensor:
    """``per_image`` random 7x7 patches from every image, flattened: [N * per_image, C * 49]."""
    n, c, h, w = level.shape
    size = min(PATCH, h, w)
    ys = torch.randint(0, h - size + 1, (n, per_image), generator=generator)
    xs = torch.randint(0, w - size + 1, (n, per_image), generator=generator)
    off = torch.arange(size)
    rows = (ys[..., None] + off).reshape(n, per_image, size, 1).expand(-1, -1, -1, size)
    cols = (xs[..., None] + off).reshape(n, per_image, 1, size).expand(-1, -1, size, -1)
    flat = (rows * w + cols).reshape(n, 1, -1).to(level.device)  # [N, 1, P*size*size]
    picked = level.reshape(n, c, h * w).gather(2, flat.expand(n, c, flat.shape[-1]))
    return picked.reshape(n, c, per_image, size * size).permute(0, 2, 1, 3).reshape(n * per_image, c * size * size)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, directions: int = 512, repeats: int = 4,
                       generator: torch.Generator | None = None) -> float:
    """Mean over random unit directions of the 1-D Wasserstein-1 distance between projected sets.

    ``a`` and ``b`` are [N, D] with the same N (so sorted projections pair up directly).
    """
    if a.shape != b.shape:
        raise ValueError(f"sliced_wasserstein needs equal-sized sets, got {tuple(a.shape)} and {tuple(b.shape)}")
    total = 0.0
    for _ in range(repeats):
        dirs = torch.randn(a.shape[1], directions, generator=generator).to(a.device, a.dtype)
        dirs /= dirs.norm(dim=0, keepdim=True)
        pa, _ = (a @ dirs).sort(dim=0)
        pb, _ = (b @ dirs).sort(dim=0)
        total += float((pa - pb).abs().mean())
    return total / repeats


class PatchSet:
    """Patch descriptors of an image set, per pyramid level, gathered batch by batch."""

    def __init__(self, per_image: int, seed: int, min_res: int = 16) -> None:
        self.per_image, self.min_res = per_image, min_res
        self.generator = torch.Generator().manual_seed(seed)
        self.levels: list[list[torch.Tensor]] = []
        self.channels = 0

    def add(self, images: torch.Tensor) -> None:
        """Images [N, C, H, W] in [-1, 1] (any device); descriptors are kept on the CPU in fp32."""
        pyramid = laplacian_pyramid(images.float(), min(self.min_res, images.shape[-1]))
        if not self.levels:
            self.levels = [[] for _ in pyramid]
            self.channels = images.shape[1]
        for store, level in zip(self.levels, pyramid):
            store.append(random_patches(level, self.per_image, self.generator).cpu())

    def descriptors(self) -> list[torch.Tensor]:
        return [torch.cat(store) for store in self.levels]


def swd(reals: list[torch.Tensor], fakes: list[torch.Tensor], resolution: int, channels: int, seed: int = 0,
        directions: int = 512, repeats: int = 4) -> dict[str, float]:
    """SWD x1000 per level (``swd_<res>``, finest first) and their mean (``swd``), from :class:`PatchSet`
    descriptors; the reals' per-level channel statistics normalise both sets."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, float] = {}
    for i, (a, b) in enumerate(zip(reals, fakes)):
        n = min(len(a), len(b))
        a, b = a[:n], b[:n]
        per = a.reshape(n, channels, -1)
        mean = per.mean(dim=(0, 2), keepdim=True)
        std = per.std(dim=(0, 2), keepdim=True).clamp_min(1e-8)
        a = ((per - mean) / std).reshape(n, -1)
        b = ((b.reshape(n, channels, -1) - mean) / std).reshape(n, -1)
        res = max(resolution >> i, 1)
        out[f"swd_{res}"] = sliced_wasserstein(a, b, directions, repeats, gen) * 1e3
    out["swd"] = sum(out.values()) / len(out)
    return out


def swd_of(real_batches: Iterator[torch.Tensor], fake_batches: Iterator[torch.Tensor], resolution: int,
           per_image: int = 64, seed: int = 0, directions: int = 512, repeats: int = 4) -> dict[str, float]:
    """SWD between two streams of image batches (e.g. training frames and G's output)."""
    reals, fakes = PatchSet(per_image, seed), PatchSet(per_image, seed)  # same patch positions per index
    for batch in real_batches:
        reals.add(batch)
    for batch in fake_batches:
        fakes.add(batch)
    return swd(reals.descriptors(), fakes.descriptors(), resolution, reals.channels, seed + 2, directions, repeats)


def patches_per_image(images: int, target: int = 65536, most: int = 128) -> int:
    """Patches per image so a level holds about ``target`` descriptors (ProGAN: 128 per image)."""
    return max(1, min(most, math.ceil(target / max(images, 1))))


def batches(make: Callable[[int, int], torch.Tensor], count: int, chunk: int) -> Iterator[torch.Tensor]:
    """``make(start, n)`` for consecutive chunks covering ``count`` images."""
    for start in range(0, count, chunk):
        yield make(start, min(chunk, count - start))
