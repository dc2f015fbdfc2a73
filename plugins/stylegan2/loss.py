"""StyleGAN2 losses: non-saturating logistic loss, lazy R1 on reals, path-length regularisation; or the
relativistic pairing loss with R1 and R2 (R3GAN: Huang et al. 2024), which the ``tiny`` preset uses.

With ADA, every image D sees goes through ``augment`` first (fakes in both phases, reals, and the
reals of R1, whose gradient is then taken with respect to the un-augmented image, through the
augmentation: hence its double backward). ``d_main`` reports ``D_real_sign`` = E[sign(D(real))],
the overfitting heuristic that drives the ADA controller (relativistic: E[sign(D(real) - D(fake))] over
the batch's pairs, since only differences of D's scores mean anything there).

The relativistic loss scores each frame against a generated image, D(real) - D(fake), instead of each
alone: D cannot call every image "fake" at once, and G is pulled towards the frames D ranks highest, so
a generator stuck on one picture keeps being pushed off it (R3GAN's argument against mode dropping; on
the learning benchmark it more than halved the SWD of a real clip at 16 kimg). Its regulariser penalises D's
gradient on generated images too (R2), beside the frames' (R1).

Each ``*_loss`` method returns a scalar to back-propagate (the training loop multiplies the lazy
regularisers by their interval) plus detached statistics for the log. Control decisions (the
style-mixing coin and cut-off) are drawn on the CPU generator so CUDA runs never synchronise for them.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .networks import Discriminator, Generator


def run_generator(G: Generator, z: torch.Tensor, style_mixing: float = 0.0, update_w_avg: bool = True,
                  noise_mode: str = "random") -> tuple[torch.Tensor, torch.Tensor]:
    """G(z) with style mixing: with probability ``style_mixing`` the ws after a random cut-off come from a second z."""
    ws = G.mapping(z, update_w_avg=update_w_avg)
    if style_mixing > 0 and ws.shape[1] > 1:
        cutoff = int(torch.randint(1, ws.shape[1], ()))
        if float(torch.rand(())) < style_mixing:
            ws2 = G.mapping(torch.randn_like(z))
            ws = torch.cat([ws[:, :cutoff], ws2[:, cutoff:]], dim=1)
    return G.synthesis(ws, noise_mode=noise_mode), ws


def r1_penalty(D: Discriminator, img: torch.Tensor,
               augment: Callable[[torch.Tensor], torch.Tensor] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample squared gradient norm of D's logits at the images (with graph, for double backward): R1 at
    the frames, R2 (relativistic loss) at generated images."""
    img = img.detach().requires_grad_(True)
    logits = D(img if augment is None else augment(img))
    (grad,) = torch.autograd.grad(logits.sum(), img, create_graph=True)
    return grad.square().sum(dim=[1, 2, 3]), logits


def path_lengths(img: torch.Tensor, ws: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
    """Per-sample ``|J_w^T y|``: y is image-space noise scaled by 1/sqrt(H*W), averaged over the ws."""
    if noise is None:
        noise = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
    (grad,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
    return grad.square().sum(dim=2).mean(dim=1).sqrt()


def mode_seeking_ratio(img: torch.Tensor, z: torch.Tensor, size: int = 8) -> torch.Tensor:
    """How far apart images are for how far apart their latents are (MSGAN, Mao et al. 2019): the batch's
    first half against its second, mean absolute differences. The generator maximises it.

    The images are compared shrunk to ``size`` x ``size`` (area averages): at full size G could raise the
    ratio with per-pixel grain from its noise inputs instead of with different pictures."""
    half = z.shape[0] // 2
    small = F.adaptive_avg_pool2d(img, size) if img.shape[-1] > size else img
    d_img = (small[:half] - small[half:2 * half]).abs().mean()
    d_z = (z[:half] - z[half:2 * half]).abs().mean()
    return d_img / d_z


class StyleGAN2Loss:
    """The four training phases' objectives for a generator ``G`` and discriminator ``D``."""

    def __init__(self, G: Generator, D: Discriminator, r1_gamma: float, style_mixing: float = 0.9,
                 pl_weight: float = 2.0, pl_decay: float = 0.01, pl_batch_shrink: int = 2,
                 augment: Callable[[torch.Tensor], torch.Tensor] | None = None, mode_seeking: float = 0.0,
                 relativistic: bool = False) -> None:
        self.G, self.D = G, D
        self.augment = augment
        # The main phases may run compiled copies (torch.compile); the regularisers need double
        # backward, which compiled graphs do not support, so they always use the eager modules.
        self.G_main: Generator = G
        self.D_main: nn.Module = D
        self.r1_gamma, self.style_mixing = r1_gamma, style_mixing
        self.pl_weight, self.pl_decay, self.pl_batch_shrink = pl_weight, pl_decay, pl_batch_shrink
        self.pl_mean = torch.zeros([], device=next(G.parameters()).device)
        self.mode_seeking, self.relativistic = mode_seeking, relativistic

    def run_D(self, img: torch.Tensor) -> torch.Tensor:
        return self.D_main(img if self.augment is None else self.augment(img))

    def g_main(self, z: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Non-saturating generator loss ``softplus(-D(G(z)))``; relativistic: ``softplus(D(x) - D(G(z)))``."""
        img, _ = run_generator(self.G_main, z, self.style_mixing)
        logits = self.run_D(img)
        if self.relativistic:
            with torch.no_grad():
                real_logits = self.run_D(real)
            loss = F.softplus(real_logits - logits).mean()
        else:
            loss = F.softplus(-logits).mean()
        stats = {"loss_G": loss.detach(), "D_fake": logits.detach().mean()}
        if self.mode_seeking > 0 and z.shape[0] >= 2:
            ratio = mode_seeking_ratio(img, z)
            loss = loss + self.mode_seeking / (ratio + 1e-5)
            stats["mode_seeking"] = ratio.detach()
        return loss, stats

    def g_reg(self, z: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Path-length penalty ``pl_weight * (|J^T y| - a)^2``, ``a`` a running mean (on batch/shrink samples)."""
        n = max(z.shape[0] // self.pl_batch_shrink, 1)
        img, ws = run_generator(self.G, z[:n], self.style_mixing)
        lengths = path_lengths(img, ws)
        pl_mean = self.pl_mean.lerp(lengths.mean(), self.pl_decay)
        self.pl_mean.copy_(pl_mean.detach())
        penalty = (lengths - pl_mean).square().mean()
        return penalty * self.pl_weight, {"pl_penalty": penalty.detach(), "pl_mean": self.pl_mean.clone()}

    def d_main(self, z: torch.Tensor, real: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logistic discriminator loss ``softplus(D(G(z))) + softplus(-D(x))``; relativistic:
        ``softplus(D(G(z)) - D(x))``, the batch's frames and generated images taken in pairs."""
        with torch.no_grad():
            fake, _ = run_generator(self.G_main, z, self.style_mixing)
        fake_logits = self.run_D(fake)
        real_logits = self.run_D(real)
        real_scores = real_logits.detach().float()
        if self.relativistic:
            loss = F.softplus(fake_logits - real_logits).mean()
            overconfidence = (real_scores - fake_logits.detach().float()).sign().mean()
        else:
            loss = (F.softplus(fake_logits) + F.softplus(-real_logits)).mean()
            overconfidence = real_scores.sign().mean()
        return loss, {"loss_D": loss.detach(), "D_real": real_scores.mean(), "D_real_sign": overconfidence}

    def d_reg(self, real: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """R1: ``gamma/2 * |grad_x D(x)|^2`` on reals; relativistic: plus R2, the same on generated images
        (from latents drawn here, so the logistic loss's random stream stays the reference's)."""
        penalty, _ = r1_penalty(self.D, real, self.augment)
        penalty = penalty.mean()
        stats = {"r1_penalty": penalty.detach()}
        if self.relativistic:
            z = torch.randn(real.shape[0], self.G.z_dim, device=real.device)
            with torch.no_grad():
                fake, _ = run_generator(self.G, z, self.style_mixing)
            r2 = r1_penalty(self.D, fake, self.augment)[0].mean()
            penalty, stats["r2_penalty"] = penalty + r2, r2.detach()
        return penalty * (self.r1_gamma / 2), stats
