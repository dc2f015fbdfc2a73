"""StyleGAN2 config-F networks: mapping + skip-architecture synthesis (G) and a resnet discriminator (D).

Written from the StyleGAN2 paper (Karras et al. 2020, "Analyzing and Improving the Image Quality of
StyleGAN") and the ADA paper's training setup. Parameter and buffer names and shapes are the same as
the reference PyTorch implementation's ``state_dict()`` (e.g. ``synthesis.b64.conv0.affine.weight``,
``mapping.w_avg``, ``b4.fc.weight``), so its networks can be imported name for name. Parameters are
always stored in fp32; ``set_precision(torch.bfloat16)`` runs the highest-resolution blocks under
bf16 autocast (the reference's ``num_fp16_res = 4`` rule) while the mapping network, the 4x4 blocks,
D's epilogue and G's image accumulation stay fp32. bf16 has fp32's range, so unlike the reference's
fp16 it needs neither ``conv_clamp`` nor loss scaling.

Equalised learning rate everywhere: weights are stored as N(0, 1) and scaled at run time by
``1/sqrt(fan_in)`` (times a learning-rate multiplier in the mapping network).
"""

from __future__ import annotations

import contextlib
import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .ops import SQRT2, conv3x3_down, conv3x3_up, downsample2d, lrelu_, make_fir, normalize_2nd_moment, upsample2d

NOISE_MODES = ("random", "const", "none")


def channels_at(res: int, channel_base: int, channel_max: int) -> int:
    """Feature maps at a resolution: ``min(channel_base // res, channel_max)``."""
    return min(channel_base // res, channel_max)


def mixed_precision_resolution(img_resolution: int, num_res: int = 4) -> int:
    """Lowest block resolution run in reduced precision: the ``num_res`` highest ones, never below 8."""
    return max(2 ** (int(math.log2(img_resolution)) + 1 - num_res), 8)


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast on ``device`` when ``dtype`` is set, else nothing."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def full_precision(device: torch.device) -> contextlib.AbstractContextManager:
    """Suspend autocast (when on) for the small, sensitive w-space maths: styles and demodulation."""
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


# --- Building blocks ------------------------------------------------------------------------------


class FullyConnectedLayer(nn.Module):
    """Dense layer with equalised learning rate; ``lr_mul`` slows it down (0.01 in the mapping net)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True, bias_init: float = 0.0,
                 lr_mul: float = 1.0, activation: str = "linear") -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.activation = activation
        act_gain = SQRT2 if activation == "lrelu" else 1.0  # folded in: lrelu(x) * g == lrelu(x * g)
        self.weight_gain = lr_mul / math.sqrt(in_features) * act_gain
        self.bias_gain = lr_mul * act_gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x * self.weight_gain  # scale the (small) input rather than the weight: one less weight-sized pass
        if self.bias is None:
            x = x.matmul(self.weight.t())
        else:
            x = torch.addmm(self.bias * self.bias_gain, x, self.weight.t())
        return lrelu_(x) if self.activation == "lrelu" else x


class MappingNetwork(nn.Module):
    """z (+ label embedding) -> normalised -> ``num_layers`` dense lrelu layers -> w, broadcast to ``num_ws``.

    Tracks ``w_avg``, the running mean of w, which truncation pulls towards.
    """

    w_avg: torch.Tensor  # buffer, when num_ws and w_avg_beta are set

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int | None, num_layers: int = 8,
                 lr_mul: float = 0.01, w_avg_beta: float | None = 0.995) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers, self.w_avg_beta = num_layers, w_avg_beta
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, w_dim)
        features = [z_dim + (w_dim if c_dim > 0 else 0)] + [w_dim] * num_layers
        for i in range(num_layers):
            layer = FullyConnectedLayer(features[i], features[i + 1], lr_mul=lr_mul, activation="lrelu")
            setattr(self, f"fc{i}", layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z: torch.Tensor | None, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, update_w_avg: bool = False) -> torch.Tensor:
        """Return ws [N, num_ws, w_dim] (or w [N, w_dim] when ``num_ws`` is None)."""
        parts = []
        if self.z_dim > 0:
            assert z is not None, "a mapping network with z_dim > 0 needs z"
            parts.append(normalize_2nd_moment(z))
        if self.c_dim > 0:
            parts.append(normalize_2nd_moment(self.embed(c)))
        x = parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if update_w_avg and self.w_avg_beta is not None:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is None:
            return x
        x = x.unsqueeze(1).expand(-1, self.num_ws, -1)
        if truncation_psi != 1:
            cut = self.num_ws if truncation_cutoff is None else truncation_cutoff
            x = torch.cat([self.w_avg.lerp(x[:, :cut], truncation_psi), x[:, cut:]], dim=1)
        return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv with weight demodulation (optionally up-sampling x2), noise, bias, leaky ReLU.

    Two equivalent executions: *fused* folds the per-sample styles and demodulation into per-sample
    weights and runs one grouped conv; *non-fused* scales the activations by the styles, runs the
    shared conv, and scales the result by the demodulation coefficients.
    """

    resample_filter: torch.Tensor  # buffers
    noise_const: torch.Tensor

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, up: bool = False,
                 conv_clamp: float | None = None) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.resolution, self.up = in_channels, out_channels, resolution, up
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.register_buffer("resample_filter", make_fir())
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.register_buffer("noise_const", torch.randn(resolution, resolution))
        self.noise_strength = nn.Parameter(torch.zeros([]))
        self.bias = nn.Parameter(torch.zeros(out_channels))

    def _noise(self, x: torch.Tensor, noise_mode: str) -> torch.Tensor | None:
        if noise_mode == "random":
            r = self.resolution
            return torch.randn(x.shape[0], 1, r, r, device=x.device, dtype=x.dtype) * (self.noise_strength * SQRT2)
        if noise_mode == "const":
            return self.noise_const * (self.noise_strength * SQRT2)
        return None

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_mode: str = "random",
                fused: bool = False) -> torch.Tensor:
        n = x.shape[0]
        with full_precision(w.device):
            styles = self.affine(w)  # [N, I]
            if not fused:
                dcoefs = (styles.square().matmul(self.weight.square().sum(dim=[2, 3]).t()) + 1e-8).rsqrt()  # [N, O]
        noise = self._noise(x, noise_mode)
        bias = (self.bias * SQRT2).reshape(1, -1, 1, 1)
        if fused:
            wn = self.weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)  # [N, O, I, 3, 3]
            wn = wn * ((wn.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt() * SQRT2)
            wn = wn.reshape(-1, self.in_channels, 3, 3)
            x = x.reshape(1, -1, *x.shape[2:])
            if self.up:
                x = conv3x3_up(x, wn, self.resample_filter, groups=n)
            else:
                x = F.conv2d(x, wn, padding=1, groups=n)
            x = x.reshape(n, self.out_channels, *x.shape[2:])
            if noise is not None:
                x = x.add_(noise)
            x = x.add_(bias)
        else:
            x = x * styles.reshape(n, -1, 1, 1)
            if self.up:
                x = conv3x3_up(x, self.weight, self.resample_filter)
            else:
                x = F.conv2d(x, self.weight, padding=1)
            scale = (dcoefs * SQRT2).reshape(n, -1, 1, 1).to(x.dtype)  # bf16 under autocast: activations stay bf16
            bias = bias.to(x.dtype)
            noise = None if noise is None else noise.to(x.dtype)
            if noise is None:
                x = torch.addcmul(bias, x, scale)
            elif noise.ndim == 2:  # const noise [H, W]: merge with the bias first (small tensor)
                x = torch.addcmul(bias + noise, x, scale)
            else:
                x = torch.addcmul(noise, x, scale).add_(bias)
        return lrelu_(x, self.conv_clamp)


class ToRGBLayer(nn.Module):
    """Modulated 1x1 conv without demodulation: features -> image channels (linear)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        n, c, h, wd = x.shape
        with full_precision(w.device):
            styles = self.affine(w) * self.weight_gain  # [N, I]
        wn = self.weight.flatten(1).unsqueeze(0) * styles.unsqueeze(1)  # [N, O, I]
        y = torch.baddbmm(self.bias.reshape(1, -1, 1), wn, x.reshape(n, c, h * wd)).reshape(n, -1, h, wd)
        if self.conv_clamp is not None:
            y = y.clamp(-self.conv_clamp, self.conv_clamp)
        return y


class SynthesisBlock(nn.Module):
    """One resolution of the synthesis network: (const | up-conv0) -> conv1 -> ToRGB, image skip-summed."""

    resample_filter: torch.Tensor  # buffer

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 conv_clamp: float | None = None) -> None:
        super().__init__()
        self.resolution = resolution
        self.register_buffer("resample_filter", make_fir())
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True, conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, conv_clamp=conv_clamp)
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2

    def forward(self, x: torch.Tensor | None, img: torch.Tensor | None, ws: torch.Tensor, noise_mode: str,
                fused: bool, amp_dtype: torch.dtype | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``ws`` holds this block's ``num_conv + 1`` w vectors (the last one feeds ToRGB)."""
        with autocast(ws.device, amp_dtype):
            if x is None:
                x = self.const.unsqueeze(0).expand(ws.shape[0], -1, -1, -1)
                x = self.conv1(x, ws[:, 0], noise_mode, fused)
            else:
                x = self.conv0(x, ws[:, 0], noise_mode, fused)
                x = self.conv1(x, ws[:, 1], noise_mode, fused)
            y = self.torgb(x, ws[:, self.num_conv])
        if amp_dtype is not None:
            y = y.float()  # the image accumulates in fp32
        img = y if img is None else upsample2d(img, self.resample_filter).add_(y)
        return x, img


class SynthesisNetwork(nn.Module):
    """ws -> image: blocks ``b4 .. b{img_resolution}``, each adding its ToRGB to the up-sampled image."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 32768,
                 channel_max: int = 512, conv_clamp: float | None = None) -> None:
        super().__init__()
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.block_resolutions = [2 ** i for i in range(2, int(math.log2(img_resolution)) + 1)]
        self.num_ws = 0
        for res in self.block_resolutions:
            in_ch = channels_at(res // 2, channel_base, channel_max) if res > 4 else 0
            out_ch = channels_at(res, channel_base, channel_max)
            block = SynthesisBlock(in_ch, out_ch, w_dim, res, img_channels, conv_clamp)
            setattr(self, f"b{res}", block)
            self.num_ws += block.num_conv
        self.num_ws += 1  # the last ToRGB
        self.fused_modconv: bool | None = None  # None: choose per call (see ``use_fused``)
        self.amp_dtype: torch.dtype | None = None  # see ``set_precision``
        self.amp_resolution = mixed_precision_resolution(img_resolution)

    def set_precision(self, dtype: torch.dtype | None, num_res: int = 4) -> None:
        """Run the ``num_res`` highest-resolution blocks under ``dtype`` autocast (None: all fp32)."""
        self.amp_dtype = dtype
        self.amp_resolution = mixed_precision_resolution(self.img_resolution, num_res)

    def use_fused(self, device: torch.device) -> bool:
        """Fused (grouped-conv) modulated convs only for CUDA inference.

        Measured on the CPU (benchmarks/train_step.py): with autograd the fused form costs 4-5x the
        non-fused one, in inference 1.3-4.4x at batch 4 and 0.9-1.6x at batch 1 (PyTorch's grouped
        convolutions plus building per-sample weights), so the CPU never uses it by default. On CUDA
        the reference uses it for inference only; so do we.
        """
        if self.fused_modconv is not None:
            return self.fused_modconv
        return device.type == "cuda" and not torch.is_grad_enabled()

    def forward(self, ws: torch.Tensor, noise_mode: str = "const", fused: bool | None = None) -> torch.Tensor:
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        fused = self.use_fused(ws.device) if fused is None else fused
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            amp = self.amp_dtype if res >= self.amp_resolution else None
            x, img = block(x, img, ws[:, w_idx:w_idx + block.num_conv + 1], noise_mode, fused, amp)
            w_idx += block.num_conv
        assert img is not None  # there is always a 4x4 block
        return img


class Generator(nn.Module):
    """StyleGAN2 generator: ``G(z) = synthesis(mapping(z))``, images NCHW float32 in about [-1, 1]."""

    def __init__(self, z_dim: int = 512, c_dim: int = 0, w_dim: int = 512, img_resolution: int = 256,
                 img_channels: int = 3, channel_base: int = 32768, channel_max: int = 512, map_layers: int = 8,
                 mapping_lr_mul: float = 0.01, w_avg_beta: float = 0.995, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.init_kwargs: dict[str, Any] = dict(
            z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
            channel_base=channel_base, channel_max=channel_max, map_layers=map_layers,
            mapping_lr_mul=mapping_lr_mul, w_avg_beta=w_avg_beta, conv_clamp=conv_clamp)
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, channel_base, channel_max, conv_clamp)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, map_layers, mapping_lr_mul, w_avg_beta)

    def forward(self, z: torch.Tensor, c: torch.Tensor | None = None, truncation_psi: float = 1.0,
                truncation_cutoff: int | None = None, noise_mode: str = "const") -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode)

    def set_precision(self, dtype: torch.dtype | None, num_res: int = 4) -> None:
        """bf16 autocast in the ``num_res`` highest-resolution synthesis blocks; the mapping stays fp32."""
        self.synthesis.set_precision(dtype, num_res)


# --- Discriminator --------------------------------------------------------------------------------


class Conv2dLayer(nn.Module):
    """Conv with equalised learning rate, optional /2 FIR down-sampling, bias and leaky ReLU.

    ``gain`` multiplies the output (the resnet branches use sqrt(0.5)); it and the activation gain are
    folded into the weight and bias.
    """

    resample_filter: torch.Tensor  # buffer

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 activation: str = "linear", down: bool = False, gain: float = 1.0,
                 conv_clamp: float | None = None) -> None:
        super().__init__()
        self.kernel_size, self.down, self.activation = kernel_size, down, activation
        self.register_buffer("resample_filter", make_fir())
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        act_gain = (SQRT2 if activation == "lrelu" else 1.0) * gain
        self.weight_gain = act_gain / math.sqrt(in_channels * kernel_size ** 2)
        self.act_gain = act_gain
        self.conv_clamp = None if conv_clamp is None else conv_clamp * gain

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Apply the weight gain to whichever is smaller, the weight or the output (4x4 layers: the output).
        n, _, h, wd = x.shape
        out_numel = n * self.weight.shape[0] * (h // 2 * (wd // 2) if self.down else h * wd)
        scale_weight = self.weight.numel() <= out_numel
        w = self.weight * self.weight_gain if scale_weight else self.weight
        b = None
        if self.bias is not None:
            b = self.bias * (self.act_gain if scale_weight else self.act_gain / self.weight_gain)
        if not self.down:
            x = F.conv2d(x, w, b, padding=self.kernel_size // 2)
        elif self.kernel_size == 1:
            x = F.conv2d(downsample2d(x, self.resample_filter), w, b)
        else:
            x = conv3x3_down(x, w, self.resample_filter, b)
        if not scale_weight:
            x = x.mul_(self.weight_gain)  # in place: the conv's backward does not read its output
        if self.activation == "lrelu":
            return lrelu_(x, self.conv_clamp)
        return x if self.conv_clamp is None else x.clamp(-self.conv_clamp, self.conv_clamp)


class DiscriminatorBlock(nn.Module):
    """Resnet block: [fromrgb] -> conv0 -> conv1 (/2), plus a /2 1x1 skip; both branches scaled by sqrt(0.5)."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, resolution: int,
                 img_channels: int, conv_clamp: float | None = None) -> None:
        super().__init__()
        self.resolution = resolution
        self.register_buffer("resample_filter", make_fir())
        if in_channels == 0:
            self.fromrgb = Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu", conv_clamp=conv_clamp)
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(tmp_channels, out_channels, 3, activation="lrelu", down=True,
                                 gain=math.sqrt(0.5), conv_clamp=conv_clamp)
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=True, gain=math.sqrt(0.5))

    def forward(self, x: torch.Tensor | None, img: torch.Tensor) -> torch.Tensor:
        if x is None:
            x = self.fromrgb(img)
        y = self.skip(x)
        x = self.conv1(self.conv0(x))
        return y.add_(x)


class MinibatchStdLayer(nn.Module):
    """Appends the feature-averaged stddev over groups of samples (sample i is in group i mod N/G)."""

    def __init__(self, group_size: int, num_channels: int = 1) -> None:
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g = min(self.group_size, n)
        while n % g:  # the reference requires N % G == 0; fall back to the largest divisor instead
            g -= 1
        f = self.num_channels
        y = x.reshape(g, -1, f, c // f, h, w)
        y = (y.var(dim=0, unbiased=False) + 1e-8).sqrt()  # [N/G, F, C/F, H, W]
        y = y.mean(dim=[2, 3, 4]).reshape(-1, f, 1, 1).repeat(g, 1, h, w)
        return torch.cat([x, y], dim=1)


class DiscriminatorEpilogue(nn.Module):
    """The 4x4 head: minibatch stddev -> 3x3 conv -> dense -> logit (or a projection on ``cmap``)."""

    def __init__(self, in_channels: int, cmap_dim: int, resolution: int, img_channels: int,
                 mbstd_group_size: int = 4, mbstd_num_channels: int = 1, from_rgb: bool = False,
                 conv_clamp: float | None = None) -> None:
        super().__init__()
        self.cmap_dim = cmap_dim
        if from_rgb:  # only when the whole image is 4x4 (no block above to read it)
            self.fromrgb = Conv2dLayer(img_channels, in_channels, 1, activation="lrelu")
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels)
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, 3, activation="lrelu",
                                conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation="lrelu")
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x: torch.Tensor | None, img: torch.Tensor, cmap: torch.Tensor | None = None) -> torch.Tensor:
        if x is None:
            x = self.fromrgb(img)
        x = self.conv(self.mbstd(x))
        x = self.out(self.fc(x.flatten(1)))
        if cmap is not None:
            x = (x * cmap).sum(dim=1, keepdim=True) / math.sqrt(self.cmap_dim)
        return x


class Discriminator(nn.Module):
    """StyleGAN2 resnet discriminator: image [N, C, R, R] -> logits [N, 1]."""

    def __init__(self, c_dim: int = 0, img_resolution: int = 256, img_channels: int = 3, channel_base: int = 32768,
                 channel_max: int = 512, mbstd_group_size: int = 4, conv_clamp: float | None = None,
                 cmap_dim: int | None = None) -> None:
        super().__init__()
        if img_resolution < 4 or img_resolution & (img_resolution - 1):
            raise ValueError(f"img_resolution must be a power of two >= 4, got {img_resolution}")
        self.init_kwargs: dict[str, Any] = dict(
            c_dim=c_dim, img_resolution=img_resolution, img_channels=img_channels, channel_base=channel_base,
            channel_max=channel_max, mbstd_group_size=mbstd_group_size, conv_clamp=conv_clamp, cmap_dim=cmap_dim)
        self.c_dim, self.img_resolution, self.img_channels = c_dim, img_resolution, img_channels
        self.block_resolutions = [2 ** i for i in range(int(math.log2(img_resolution)), 2, -1)]
        for res in self.block_resolutions:
            in_ch = channels_at(res, channel_base, channel_max) if res < img_resolution else 0
            tmp_ch = channels_at(res, channel_base, channel_max)
            out_ch = channels_at(res // 2, channel_base, channel_max)
            setattr(self, f"b{res}", DiscriminatorBlock(in_ch, tmp_ch, out_ch, res, img_channels, conv_clamp))
        c4 = channels_at(4, channel_base, channel_max)
        cmap_dim = (cmap_dim or c4) if c_dim > 0 else 0
        if c_dim > 0:
            self.mapping = MappingNetwork(0, c_dim, cmap_dim, None, w_avg_beta=None)
        self.b4 = DiscriminatorEpilogue(c4, cmap_dim, 4, img_channels, mbstd_group_size,
                                        from_rgb=img_resolution == 4, conv_clamp=conv_clamp)
        self.amp_dtype: torch.dtype | None = None
        self.amp_resolution = mixed_precision_resolution(img_resolution)

    def set_precision(self, dtype: torch.dtype | None, num_res: int = 4) -> None:
        """Run the ``num_res`` highest-resolution blocks under ``dtype`` autocast; the 4x4 epilogue stays fp32."""
        self.amp_dtype = dtype
        self.amp_resolution = mixed_precision_resolution(self.img_resolution, num_res)

    def forward(self, img: torch.Tensor, c: torch.Tensor | None = None) -> torch.Tensor:
        x = None
        for res in self.block_resolutions:
            with autocast(img.device, self.amp_dtype if res >= self.amp_resolution else None):
                x = getattr(self, f"b{res}")(x, img)
        cmap = self.mapping(None, c) if self.c_dim > 0 else None
        if x is not None and self.amp_dtype is not None:
            x = x.float()  # the epilogue runs in fp32
        return self.b4(x, img, cmap)
