"""Registers the built-in ``stylegan2`` trainer and generator, and the generate / import / export commands.

Imports neither torch nor numpy: the engine imports every plugin module at start-up, and the training
code is loaded only when a training stage actually runs.
"""

from __future__ import annotations

from cineml import Option, StageContext, Trainer, hookimpl

from .presets import AUGMENTS, CONFIGS, METRICS


def _positive_pair(value: object) -> str | None:
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value)):
        return "must be two positive integers: [columns, rows], e.g. [8, 4]"
    return None


def _metric_names(value: object) -> str | None:
    if not isinstance(value, list) or not all(isinstance(v, str) and v in METRICS for v in value):
        return f"must be a list of metric names from: {', '.join(METRICS)} (e.g. [\"swd\"]), or [] for none"
    return None


_PRESET = "(default: from the preset chosen by config)"


class StyleGAN2Trainer(Trainer):
    """Train StyleGAN2 (config F) on the frames; resumes interrupted runs; CUDA when available, else CPU."""

    name = "stylegan2"
    options = (
        Option("config", str, "auto", choices=CONFIGS,
               help="Preset: 'auto' (scales batch, gamma and EMA with resolution, StyleGAN2-ADA defaults), "
                    "'stylegan2' (paper config F), 'paper256', or 'tiny' (small network for CPU demos and tests)."),
        Option("kimg", float, None, continues=True, min=0.001,
               help=f"Length of training in thousands of real images shown (fractions allowed) {_PRESET}."),
        Option("snapshot_kimg", float, None, continues=True, min=0.001,
               help=f"Write a fakes grid and a checkpoint every this many kimg (fractions allowed) {_PRESET}."),
        Option("batch", int, None, min=1, help=f"Images per training step {_PRESET}."),
        Option("batch_gpu", int, None, continues=True, min=1,
               help="Images per forward pass; smaller than batch accumulates gradients to save memory "
                    "(default: the whole batch)."),
        Option("gamma", float, None, min=0, help=f"R1 regularisation weight {_PRESET}."),
        Option("lr", float, None, min=0, help=f"Adam learning rate of G and D {_PRESET}."),
        Option("ema_kimg", float, None, min=0, help=f"Half-life of the generator's moving average {_PRESET}."),
        Option("mirror", bool, False, help="Also train on left-right mirrored frames (doubles the data)."),
        Option("seed", int, None, help="Random seed (default: the project's seed)."),
        Option("channel_base", int, None, min=16,
               help=f"Feature maps per layer are min(channel_base / resolution, channel_max) {_PRESET}."),
        Option("channel_max", int, None, min=1, help=f"Most feature maps in any layer {_PRESET}."),
        Option("map_layers", int, None, min=1, max=16, help=f"Layers in the mapping network {_PRESET}."),
        Option("mbstd_group", int, None, min=1, help=f"Minibatch-stddev group size {_PRESET}."),
        Option("style_mixing", float, None, min=0, max=1,
               help="Probability of style mixing per batch (default: 0.9 in every preset)."),
        Option("pl_weight", float, None, min=0,
               help="Path-length regularisation weight, 0 turns it off (default: 2 in every preset)."),
        Option("keep", int, 3, continues=True, min=0, help="Checkpoints to keep (older ones are deleted; 0 keeps all)."),
        Option("device", str, "auto", continues=True, choices=("auto", "cpu", "cuda"),
               help="Where to train: 'auto' picks a CUDA GPU when PyTorch sees one, else the CPU."),
        Option("resume", str, None, path=True, must_exist=True,
               help="Start from another network for transfer learning: a training folder (its newest checkpoint), "
                    "a .safetensors checkpoint, a StyleGAN2-ADA .pkl or a rosinality .pt (both read safely, never "
                    "unpickled); kimg counting restarts."),
        Option("grid", list, None, continues=True, check=_positive_pair,
               help="Fakes grid size [columns, rows] (default: like StyleGAN2, at most 16 x 9 below 128 px)."),
        Option("augment", str, "ada", choices=AUGMENTS,
               help="Discriminator augmentation (flips, rotations, scaling, colour...) against overfitting on few "
                    "or repetitive frames: 'ada' adapts its probability p to D's overconfidence, 'fixed' keeps "
                    "p = augment_p, 'diffaugment' always shifts, cuts out and recolours (full strength from the "
                    "first step), 'none' turns it off."),
        Option("augment_p", float, None, min=0,
               help="Augmentation probability: the starting value for 'ada', the constant one for 'fixed' "
                    "(default: 0 in every preset)."),
        Option("ada_target", float, 0.6, min=0, max=1,
               help="ADA raises p while the share of reals D scores positive (E[sign D(x)]) exceeds this."),
        Option("ada_kimg", float, None, min=0.001,
               help="ADA speed: p can move by 1 in this many kimg (default: the paper's 500, 100 when resume is "
                    "set, or kimg / 5 but at least 2 when that is less, so that p reacts within a short run)."),
        Option("precision", str, "auto", choices=("auto", "fp32", "bf16"),
               help="'bf16' runs the 4 highest-resolution layers of G and D in bfloat16 (faster on recent "
                    "GPUs); 'auto' uses bf16 on a CUDA GPU that supports it and fp32 otherwise."),
        Option("compile", bool, False, continues=True,
               help="Compile G and D with torch.compile for the main training phases (GPU speed-up after a "
                    "slow first step)."),
        Option("gpus", int, 1, continues=True, min=1,
               help="Train on this many GPUs of this machine, splitting the batch (started by cineml itself; "
                    "under torchrun the launch decides). With device = 'cpu' it starts CPU processes instead, "
                    "which is only useful for testing."),
        Option("metrics", list, [], continues=True, check=_metric_names,
               help="Quality metrics computed at every snapshot and logged in stats.jsonl, lower is better: "
                    "'swd' (sliced Wasserstein distance of multi-scale patches), 'fid' (Frechet Inception "
                    "Distance) and 'kid' (Kernel Inception Distance); fid and kid need inception."),
        Option("metric_images", int, 1024, continues=True, min=16,
               help="Real and generated images each metric compares (more: steadier but slower)."),
        Option("inception", str, None, continues=True, path=True, must_exist=True,
               help="Feature network for fid and kid: a TorchScript file on this machine (never downloaded), "
                    "e.g. NVIDIA's inception-2015-12-05.pt (0..255 RGB images of any size in, 2048-D pool "
                    "features out with return_features=True; other networks are called as net(x))."),
    )

    def train(self, ctx: StageContext) -> None:
        from .training import train

        train(ctx)


@hookimpl
def register_trainers(register):  # noqa: ANN001 (pluggy passes the engine's register callable)
    register(StyleGAN2Trainer())


@hookimpl
def register_generators(register):  # noqa: ANN001
    from .generator import StyleGAN2Generator  # numpy, PIL and cineml only: torch loads when it generates

    register(StyleGAN2Generator())


@hookimpl
def register_commands(cli):  # noqa: ANN001
    from .commands import add_commands  # cineml generate / import / export

    add_commands(cli)
