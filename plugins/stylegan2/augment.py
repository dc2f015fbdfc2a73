"""Adaptive discriminator augmentation (ADA): the 'bgc' pipeline and the p controller.

Written from Karras et al. 2020b, "Training Generative Adversarial Networks with Limited Data".
Everything the discriminator sees (reals, fakes, the reals of R1) passes through the same random,
differentiable augmentation, each op applied per sample with probability ``p``. Because the ops
leak nothing of their own into the generator's images when p stays below ~0.8, the generator still
learns the clean distribution while D sees many more distinct images; on a film, with thousands of
near-identical frames from long static shots, that is what keeps D from memorising the training set.

* Geometric ops (xflip, rotate90, xint, scale, rotate, aniso, xfrac) are composed into ONE 3x3 matrix
  per sample and applied once. Samples whose matrix only permutes pixels (flips, quarter turns,
  whole-pixel shifts) are gathered exactly; the others are resampled with proper filtering: reflect
  padding, x2 windowed-sinc up-sampling, bilinear ``grid_sample``, low-pass x2 down-sampling.
* Colour ops (brightness, contrast, lumaflip, hue, saturation) are composed into ONE 4x4 matrix
  acting on (r, g, b, 1). One-channel images get the matrix averaged over channels, so brightness,
  contrast and lumaflip still apply; hue and saturation leave gray unchanged and are skipped.

Random parameters are drawn on the CPU generator (so CUDA never synchronises to decide which samples
to augment, and a checkpoint of the CPU RNG state replays them exactly). Every op is built from
gathers, convolutions and ``grid_sample``, all twice differentiable, as R1 needs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

GEOMETRIC = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac")
COLOR = ("brightness", "contrast", "lumaflip", "hue", "saturation")
PIPELINES: dict[str, tuple[str, ...]] = {
    "blit": ("xflip", "rotate90", "xint"),
    "geom": ("scale", "rotate", "aniso", "xfrac"),
    "color": COLOR,
    "bg": ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac"),
    "bgc": GEOMETRIC + COLOR,
}


@dataclass
class Strengths:
    """The paper's default strengths (fractions of the image size; std of log2 factors)."""

    xint_max: float = 0.125
    scale_std: float = 0.2
    rotate_max: float = 1.0  # of a full turn
    aniso_std: float = 0.2
    xfrac_std: float = 0.125
    brightness_std: float = 0.2
    contrast_std: float = 0.5
    hue_max: float = 1.0  # of a full turn
    saturation_std: float = 1.0


# --- Matrices (float64, CPU, [N, 3, 3] or [N, 4, 4]) ----------------------------------------------


def _eye(n: int, d: int) -> torch.Tensor:
    return torch.eye(d, dtype=torch.float64).repeat(n, 1, 1)


def translate2d(tx: torch.Tensor, ty: torch.Tensor) -> torch.Tensor:
    m = _eye(len(tx), 3)
    m[:, 0, 2], m[:, 1, 2] = tx, ty
    return m


def scale2d(sx: torch.Tensor, sy: torch.Tensor) -> torch.Tensor:
    m = _eye(len(sx), 3)
    m[:, 0, 0], m[:, 1, 1] = sx, sy
    return m


def rotate2d(cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    m = _eye(len(cos), 3)
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = cos, -sin, sin, cos
    return m


_LUMA = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=torch.float64) / math.sqrt(3)


def _luma_outer() -> torch.Tensor:
    return torch.outer(_LUMA, _LUMA)


def translate3d(t: torch.Tensor) -> torch.Tensor:
    m = _eye(len(t), 4)
    m[:, 0, 3] = m[:, 1, 3] = m[:, 2, 3] = t
    return m


def scale3d(s: torch.Tensor) -> torch.Tensor:
    m = _eye(len(s), 4)
    m[:, 0, 0] = m[:, 1, 1] = m[:, 2, 2] = s
    return m


def rotate3d_luma(theta: torch.Tensor) -> torch.Tensor:
    """Rotation by ``theta`` about the gray axis (1, 1, 1): a hue rotation (Rodrigues' formula)."""
    v = _LUMA[:3]
    k = torch.tensor([[0, -v[2], v[1]], [v[2], 0, -v[0]], [-v[1], v[0], 0]], dtype=torch.float64)
    c, s = theta.cos()[:, None, None], theta.sin()[:, None, None]
    r = c * torch.eye(3, dtype=torch.float64) + s * k + (1 - c) * torch.outer(v, v)
    m = _eye(len(theta), 4)
    m[:, :3, :3] = r
    return m


# --- The pipeline ---------------------------------------------------------------------------------


def _lowpass_taps(half: int = 11, beta: float = 8.0) -> np.ndarray:
    """Half-band windowed-sinc for x2 resampling: tap 0 is 1, other even taps are 0, odd taps sum to 1.

    So zero-insertion up-sampling with it keeps the original samples exactly and has unit DC gain.
    """
    m = np.arange(-half, half + 1)
    h = np.sinc(m / 2) * np.kaiser(2 * half + 1, beta)
    h[(m % 2 == 0) & (m != 0)] = 0.0
    odd = m % 2 != 0
    h[odd] /= h[odd].sum()
    return h


def reflect(coord: torch.Tensor, size: int) -> torch.Tensor:
    """Reflect coordinates into [0, size-1] about the first and last pixel centres ('reflect' padding)."""
    period = 2 * (size - 1)
    r = torch.remainder(coord, period)
    return torch.where(r > size - 1, period - r, r)


class AugmentPipe:
    """Per-sample random augmentation with probability ``p`` per op (``p`` may exceed 1: then always).

    ``__call__(images)`` draws parameters and augments; ``sample(n, channels)`` + ``apply(images,
    params)`` split the two so tests can fix the parameters.
    """

    def __init__(self, p: float = 0.0, ops: Sequence[str] = PIPELINES["bgc"], strengths: Strengths | None = None,
                 filter_half: int = 11) -> None:
        unknown = [o for o in ops if o not in GEOMETRIC + COLOR]
        if unknown:
            raise ValueError(f"unknown augmentation ops {unknown}; known: {GEOMETRIC + COLOR}")
        self.p = float(p)
        self.ops = tuple(ops)
        self.s = strengths or Strengths()
        self.taps = _lowpass_taps(filter_half)
        self._filters: dict[tuple, torch.Tensor] = {}

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if self.p <= 0:
            return images
        return self.apply(images, self.sample(images.shape[0], images.shape[1], images.shape[-1]))

    # -- parameters --

    def sample(self, n: int, channels: int = 3, size: int = 1) -> dict[str, torch.Tensor]:
        """Per-sample matrices ``geom`` [N, 3, 3] (output -> input pixel coordinates about the centre)
        and ``color`` [N, 4, 4] (on (r, g, b, 1)), drawn with probability ``p`` per op."""
        s, p = self.s, self.p
        rand = lambda: torch.rand(n, dtype=torch.float64)  # noqa: E731
        normal = lambda: torch.randn(n, dtype=torch.float64)  # noqa: E731
        fire = lambda: rand() < p  # noqa: E731
        ops = set(self.ops)
        # Geometric: M = M_1 @ M_2 @ ... so that sampling input(M u) applies op 1 first.
        g = _eye(n, 3)
        if "xflip" in ops:
            flip = torch.where(fire(), torch.randint(0, 2, (n,)).double(), torch.zeros(n, dtype=torch.float64))
            g = g @ scale2d(1 - 2 * flip, torch.ones(n, dtype=torch.float64))
        if "rotate90" in ops:
            k = torch.where(fire(), torch.randint(0, 4, (n,)), torch.zeros(n, dtype=torch.int64))
            cos = torch.tensor([1.0, 0.0, -1.0, 0.0], dtype=torch.float64)[k]  # exact quarter turns
            sin = torch.tensor([0.0, 1.0, 0.0, -1.0], dtype=torch.float64)[k]
            g = g @ rotate2d(cos, sin)
        if "xint" in ops:
            on = fire().double()
            t = ((rand() * 2 - 1) * s.xint_max * size).round() * on, ((rand() * 2 - 1) * s.xint_max * size).round() * on
            g = g @ translate2d(-t[0], -t[1])
        if "scale" in ops:
            f = torch.exp2(normal() * s.scale_std * fire().double())
            g = g @ scale2d(1 / f, 1 / f)
        p_rot = 1 - math.sqrt(max(1 - min(p, 1.0), 0.0))  # two chances, so that P(any rotation) = p

        def rotation() -> torch.Tensor:
            theta = (rand() * 2 - 1) * math.pi * s.rotate_max * (rand() < p_rot).double()
            return rotate2d(theta.cos(), -theta.sin())

        if "rotate" in ops:
            g = g @ rotation()
        if "aniso" in ops:
            f = torch.exp2(normal() * s.aniso_std * fire().double())
            g = g @ scale2d(1 / f, f)
        if "rotate" in ops:
            g = g @ rotation()
        if "xfrac" in ops:
            on = fire().double()
            g = g @ translate2d(-normal() * s.xfrac_std * size * on, -normal() * s.xfrac_std * size * on)
        # Colour: C = C_last @ ... @ C_first acting on column vectors (r, g, b, 1).
        c = _eye(n, 4)
        if "brightness" in ops:
            c = translate3d(normal() * s.brightness_std * fire().double()) @ c
        if "contrast" in ops:
            c = scale3d(torch.exp2(normal() * s.contrast_std * fire().double())) @ c
        vv = _luma_outer()
        if "lumaflip" in ops:
            i = torch.where(fire(), torch.randint(0, 2, (n,)).double(), torch.zeros(n, dtype=torch.float64))
            c = (torch.eye(4, dtype=torch.float64) - 2 * vv * i[:, None, None]) @ c
        if channels > 1 and "hue" in ops:
            theta = (rand() * 2 - 1) * math.pi * s.hue_max * fire().double()
            c = rotate3d_luma(theta) @ c
        if channels > 1 and "saturation" in ops:
            f = torch.exp2(normal() * s.saturation_std * fire().double())[:, None, None]
            c = (vv + (torch.eye(4, dtype=torch.float64) - vv) * f) @ c
        return {"geom": g, "color": c}

    # -- application --

    def apply(self, images: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
        """Augment ``images`` [N, C, H, W] with fixed parameters (see :meth:`sample`)."""
        x = self._geometric(images, params["geom"])
        return self._color(x, params["color"])

    def _geometric(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        lin, shift = m[:, :2, :2], m[:, :2, 2]
        identity = (m == torch.eye(3, dtype=torch.float64)).flatten(1).all(1)
        integer = (lin.abs().round() == lin.abs()).flatten(1).all(1) & (shift.round() == shift).all(1) & ~identity
        smooth = ~identity & ~integer
        if identity.all():
            return x
        parts, where = [], []
        for mask, fn in ((identity, None), (integer, self._gather_exact), (smooth, self._resample)):
            idx = mask.nonzero().flatten()
            if len(idx):
                sub = x.index_select(0, idx.to(x.device))
                parts.append(sub if fn is None else fn(sub, m[idx]))
                where.append(idx)
        order = torch.cat(where).argsort().to(x.device)  # back to the batch order
        out = torch.cat(parts).index_select(0, order)
        assert out.shape[0] == n
        return out

    @staticmethod
    def _source(m: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, size: tuple[int, int]) -> tuple:
        """Map output pixel coordinates through ``m`` about the image centre; reflect into the image.

        Computed on the images' device in fp32 (exact for the integer transforms: small integers and
        half-integers), so large grids never go through the CPU.
        """
        hh, ww = size
        cy, cx = (hh - 1) / 2, (ww - 1) / 2
        m = m.to(ys.device, torch.float32)
        u = (xs - cx)[None, None, :]
        v = (ys - cy)[None, :, None]
        sx = m[:, 0, 0, None, None] * u + m[:, 0, 1, None, None] * v + (m[:, 0, 2, None, None] + cx)
        sy = m[:, 1, 0, None, None] * u + m[:, 1, 1, None, None] * v + (m[:, 1, 2, None, None] + cy)
        return reflect(sx, ww), reflect(sy, hh)

    def _gather_exact(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """Flips, quarter turns and whole-pixel shifts: a pure pixel permutation (with reflection)."""
        n, c, h, w = x.shape
        ys = torch.arange(h, dtype=torch.float32, device=x.device)
        xs = torch.arange(w, dtype=torch.float32, device=x.device)
        sx, sy = self._source(m, ys, xs, (h, w))
        flat = (sy.round() * w + sx.round()).long().reshape(n, 1, h * w)
        return x.reshape(n, c, h * w).gather(2, flat.expand(n, c, h * w)).reshape(n, c, h, w)

    def _filter(self, channels: int, dtype: torch.dtype, device: torch.device, gain: float) -> torch.Tensor:
        key = (channels, dtype, device, gain)
        if key not in self._filters:
            f = torch.tensor(self.taps * gain, dtype=dtype, device=device)
            self._filters[key] = f
        return self._filters[key]

    def _sep_conv(self, x: torch.Tensor, f: torch.Tensor, stride: int = 1, pad: int = 0) -> torch.Tensor:
        c, k = x.shape[1], len(f)
        x = F.conv2d(x, f.reshape(1, 1, k, 1).expand(c, 1, k, 1), stride=(stride, 1), padding=(pad, 0), groups=c)
        return F.conv2d(x, f.reshape(1, 1, 1, k).expand(c, 1, 1, k), stride=(1, stride), padding=(0, pad), groups=c)

    def _resample(self, x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        """Reflect-pad, x2 up-sample, bilinear sample at the mapped coordinates, low-pass, x2 down-sample."""
        n, c, h, w = x.shape
        half = len(self.taps) // 2
        pad = half // 2 + 2  # original pixels of reflection around the image
        ry = reflect(torch.arange(-pad, h + pad, device=x.device), h)
        rx = reflect(torch.arange(-pad, w + pad, device=x.device), w)
        xp = x.index_select(2, ry).index_select(3, rx)
        hp, wp = h + 2 * pad, w + 2 * pad
        up = xp.new_zeros(n, c, 2 * hp - 1, 2 * wp - 1)
        up[:, :, ::2, ::2] = xp  # zero insertion: up-sampled index k is padded coordinate k / 2
        up = self._sep_conv(up, self._filter(c, x.dtype, x.device, 1.0), pad=half)
        # Output at twice the resolution, with a margin of `half` samples for the down-sampling filter.
        oh, ow = 2 * h - 1 + 2 * half, 2 * w - 1 + 2 * half
        ys = (torch.arange(oh, dtype=torch.float32, device=x.device) - half) / 2  # in original pixel coordinates
        xs = (torch.arange(ow, dtype=torch.float32, device=x.device) - half) / 2
        sx, sy = self._source(m, ys, xs, (h, w))
        kx, ky = 2 * (sx + pad), 2 * (sy + pad)  # up-sampled array indices
        grid = torch.stack([kx / (up.shape[3] - 1) * 2 - 1, ky / (up.shape[2] - 1) * 2 - 1], dim=-1)
        y = F.grid_sample(up, grid.to(x.dtype), mode="bilinear", padding_mode="border", align_corners=True)
        return self._sep_conv(y, self._filter(c, x.dtype, x.device, 0.5), stride=2)

    def _color(self, x: torch.Tensor, cm: torch.Tensor) -> torch.Tensor:
        active = ~(cm == torch.eye(4, dtype=torch.float64)).flatten(1).all(1)
        if not active.any():
            return x
        cm = cm.to(x.device, x.dtype)
        n, c = x.shape[:2]
        if c == 3:
            y = torch.einsum("nij,njhw->nihw", cm[:, :3, :3], x) + cm[:, :3, 3, None, None]
        elif c == 1:  # gray g stands for (g, g, g): average the colour matrix's effect over channels
            gain = cm[:, :3, :3].sum(dim=2).mean(dim=1)
            y = x * gain.reshape(n, 1, 1, 1) + cm[:, :3, 3].mean(dim=1).reshape(n, 1, 1, 1)
        else:
            raise ValueError(f"colour augmentation needs 1 or 3 channels, got {c}")
        keep = active.to(x.device).reshape(n, 1, 1, 1)
        return torch.where(keep, y, x)


# --- The p controller -----------------------------------------------------------------------------


class AdaController:
    """Adjusts ``pipe.p`` every ``interval`` steps from E[sign(D(real))] (the paper's r_t heuristic).

    ``p += sign(r_t - target) * batch * interval / (ada_kimg * 1000)``, ``p >= 0``, no upper clamp:
    D growing confident on reals (r_t above the target) means it is overfitting, so augment more.
    ``acc`` holds (sum of per-step mean signs, steps) since the last update; it is checkpointed.
    """

    def __init__(self, pipe: AugmentPipe, target: float = 0.6, ada_kimg: float = 500, batch: int = 32,
                 interval: int = 4) -> None:
        self.pipe, self.target, self.ada_kimg, self.batch, self.interval = pipe, target, ada_kimg, batch, interval
        self.acc = torch.zeros(2, dtype=torch.float64)
        self.rt: float | None = None

    def accumulate(self, sign_mean: float | torch.Tensor) -> None:
        self.acc += torch.tensor([float(sign_mean), 1.0], dtype=torch.float64)

    def update(self, all_reduce=None) -> float | None:  # noqa: ANN001 (a callable summing over ranks)
        """Apply the heuristic to what was accumulated (summed over ranks by ``all_reduce``); returns r_t."""
        acc = self.acc.clone()
        if all_reduce is not None:
            acc = all_reduce(acc)
        self.acc.zero_()
        if acc[1] <= 0:
            return None
        rt = float(acc[0] / acc[1])
        step = float(np.sign(rt - self.target)) * self.batch * self.interval / (self.ada_kimg * 1000)
        self.pipe.p = max(self.pipe.p + step, 0.0)
        self.rt = rt
        return rt


class DiffAugment:
    """DiffAugment's ``color,translation,cutout`` policy (Zhao et al. 2020, "Differentiable Augmentation
    for Data-Efficient GAN Training"), applied to every image D sees, always (no controller).

    ADA has to learn how much to augment, which takes kimg that a short run does not have; DiffAugment
    augments at full strength from the first step. Per sample: brightness + U(-0.5, 0.5), saturation
    x U(0, 2) (colour images only), contrast x U(0.5, 1.5) about the image mean; a shift of up to 1/8 of
    the side with zero padding; a zeroed square of half the side at a random place. Built from
    arithmetic and gathers, so it is twice differentiable (R1). ``p`` is 1: checkpoints and stats
    treat it like a fixed ADA probability.
    """

    def __init__(self) -> None:
        self.p = 1.0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        dev, dt = x.device, x.dtype

        def rand(*shape: int) -> torch.Tensor:  # drawn on the CPU generator, like AugmentPipe
            return torch.rand(*shape).to(dev, dt)

        x = x + (rand(n, 1, 1, 1) - 0.5)
        if c > 1:
            mean = x.mean(dim=1, keepdim=True)
            x = (x - mean) * (rand(n, 1, 1, 1) * 2) + mean
        mean = x.mean(dim=[1, 2, 3], keepdim=True)
        x = (x - mean) * (rand(n, 1, 1, 1) + 0.5) + mean
        # translation: output pixel (i, j) shows input (i + dy, j + dx), zero outside
        ty, tx = max(h // 8, 1), max(w // 8, 1)
        dy = torch.randint(-ty, ty + 1, (n, 1, 1)).to(dev)
        dx = torch.randint(-tx, tx + 1, (n, 1, 1)).to(dev)
        iy = torch.arange(h, device=dev).view(1, h, 1) + dy
        ix = torch.arange(w, device=dev).view(1, 1, w) + dx
        inside = ((iy >= 0) & (iy < h) & (ix >= 0) & (ix < w)).unsqueeze(1).to(dt)  # [N, 1, H, W]
        rows = iy.clamp(0, h - 1).expand(n, h, w)
        cols = ix.clamp(0, w - 1).expand(n, h, w)
        batch = torch.arange(n, device=dev).view(n, 1, 1)
        x = x.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2) * inside
        # cutout: a square of half the side, centred anywhere in the image
        cy = torch.randint(0, h, (n, 1, 1)).to(dev)
        cx = torch.randint(0, w, (n, 1, 1)).to(dev)
        ys = torch.arange(h, device=dev).view(1, h, 1)
        xs = torch.arange(w, device=dev).view(1, 1, w)
        hole = ((ys - cy).abs() < h // 4) & ((xs - cx).abs() < w // 4)
        return x * (~hole).unsqueeze(1).to(dt)
