"""Low-level ops for StyleGAN2: the [1,3,3,1] FIR filter, resampling convolutions, bias + activation.

Everything is plain PyTorch (so first- and second-order gradients, needed by R1 and the path-length
penalty, come for free) and written for small CPU batches: the FIR filter runs as one depthwise
convolution, gains are folded into the (small) weights instead of multiplying activations, and
leaky ReLU's positive homogeneity lets ``lrelu(x) * g == lrelu(x * g)`` move gains anywhere.

Conventions follow the StyleGAN2 paper's reference implementation so imported weights behave the same:

* ``upsample2d``: zero-insertion x2, FIR with gain 4 (sum of the 2-D filter), pad [2, 1] -> 2H.
* up-sampling 3x3 conv: a stride-2 *transposed* conv with the kernel applied as a true convolution
  (not flipped), then the FIR with gain 4 and padding 1 on each side -> 2H.
* down-sampling 3x3 conv: FIR with padding 2 on each side, then a stride-2 3x3 conv, no padding -> H/2.
* ``downsample2d`` (1x1 skip): FIR with padding 1 on each side, keep every second pixel -> H/2.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

SQRT2 = math.sqrt(2.0)
LRELU_SLOPE = 0.2


def make_fir(taps: tuple[float, ...] = (1, 3, 3, 1), device: torch.device | str | None = None) -> torch.Tensor:
    """The 2-D FIR filter: outer product of ``taps`` with itself, normalised to sum 1 (shape [k, k])."""
    f = torch.tensor(taps, dtype=torch.float32, device=device)
    f = torch.outer(f, f)
    return f / f.sum()


def fir_kernel(f: torch.Tensor, channels: int, gain: float, dtype: torch.dtype) -> torch.Tensor:
    """Depthwise kernel [C, 1, k, k] for ``F.conv2d(..., groups=C)``; ``f`` is symmetric so no flip."""
    return (f * gain).to(dtype).expand(channels, 1, *f.shape)


def fir(x: torch.Tensor, f: torch.Tensor, pad: int | tuple[int, int], down: int = 1, gain: float = 1.0) -> torch.Tensor:
    """Pad each spatial side by ``pad`` (before, after), filter with ``f`` and keep every ``down``-th pixel."""
    c = x.shape[1]
    k = fir_kernel(f, c, gain, x.dtype)
    if isinstance(pad, int):
        return F.conv2d(x, k, stride=down, padding=pad, groups=c)
    p0, p1 = pad
    if p0 == p1:
        return F.conv2d(x, k, stride=down, padding=p0, groups=c)
    return F.conv2d(F.pad(x, [p0, p1, p0, p1]), k, stride=down, groups=c)


def upsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """x2 FIR up-sampling (zero insertion, pad [2, 1], gain 4), as one depthwise transposed conv."""
    c = x.shape[1]
    return F.conv_transpose2d(x, fir_kernel(f, c, 4.0, x.dtype), stride=2, padding=1, groups=c)


def downsample2d(x: torch.Tensor, f: torch.Tensor) -> torch.Tensor:
    """/2 FIR down-sampling (pad 1 on each side, keep every second pixel)."""
    return fir(x, f, 1, down=2)


def conv3x3_up(x: torch.Tensor, weight: torch.Tensor, f: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """3x3 conv after x2 up-sampling: transposed stride-2 conv, then the FIR (gain 4, pad 1).

    ``weight`` is [O, I, 3, 3] (or [G*O, I, 3, 3] grouped); equals ``conv2d(upsample2d(x), flip(weight), padding=1)``.
    """
    if groups == 1:
        wt = weight.transpose(0, 1)
    else:
        o = weight.shape[0] // groups
        wt = weight.reshape(groups, o, -1, *weight.shape[2:]).transpose(1, 2).reshape(-1, o, *weight.shape[2:])
    x = F.conv_transpose2d(x, wt, stride=2, groups=groups)
    return fir(x, f, 1, gain=4.0)


def conv3x3_down(x: torch.Tensor, weight: torch.Tensor, f: torch.Tensor,
                 bias: torch.Tensor | None = None) -> torch.Tensor:
    """3x3 conv followed by /2 down-sampling: FIR (pad 2) then a stride-2 conv without padding."""
    return F.conv2d(fir(x, f, 2), weight, bias, stride=2)


def lrelu_(x: torch.Tensor, clamp: float | None = None) -> torch.Tensor:
    """In-place leaky ReLU (slope 0.2) with an optional symmetric clamp; gains are folded in by callers."""
    x = F.leaky_relu_(x, LRELU_SLOPE)
    if clamp is not None:
        x = x.clamp(-clamp, clamp)  # not in place: leaky ReLU's backward reads its output
    return x


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """Scale each vector to unit mean square (the mapping network's input normalisation)."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()
