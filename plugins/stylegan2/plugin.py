"""Registers the built-in ``stylegan2`` trainer and generator, and the generate / import / export commands.

Imports neither torch nor numpy: the engine imports every plugin module at start-up, and the training
code is loaded only when a training stage actually runs.
"""

from __future__ import annotations

from cineml import Option, StageContext, Trainer, hookimpl

from .presets import CONFIGS


def _positive_pair(value: object) -> str | None:
    if value is None:
        return None
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value)):
        return "must be two positive integers: [columns, rows], e.g. [8, 4]"
    return None


_PRESET = "(default: from the preset chosen by config)"


class StyleGAN2Trainer(Trainer):
    """Train StyleGAN2 (config F) on the frames; resumes interrupted runs; CUDA when available, else CPU."""

    name = "stylegan2"
    options = (
        Option("config", str, "auto", choices=CONFIGS,
               help="Preset: 'auto' (scales batch, gamma and EMA with resolution, StyleGAN2-ADA defaults), "
                    "'stylegan2' (paper config F), 'paper256', or 'tiny' (small network for CPU demos and tests)."),
        Option("kimg", float, None, min=0.001,
               help=f"Length of training in thousands of real images shown (fractions allowed) {_PRESET}."),
        Option("snapshot_kimg", float, None, min=0.001,
               help=f"Write a fakes grid and a checkpoint every this many kimg (fractions allowed) {_PRESET}."),
        Option("batch", int, None, min=1, help=f"Images per training step {_PRESET}."),
        Option("batch_gpu", int, None, min=1,
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
        Option("style_mixing", float, 0.9, min=0, max=1, help="Probability of style mixing per batch."),
        Option("pl_weight", float, 2.0, min=0, help="Path-length regularisation weight (0 turns it off)."),
        Option("keep", int, 3, min=0, help="Checkpoints to keep (older ones are deleted; 0 keeps all)."),
        Option("device", str, "auto", choices=("auto", "cpu", "cuda"),
               help="Where to train: 'auto' picks a CUDA GPU when PyTorch sees one, else the CPU."),
        Option("resume", str, None, path=True, must_exist=True,
               help="Start from another run's network (a training folder or .safetensors checkpoint) for "
                    "transfer learning; kimg counting restarts."),
        Option("grid", list, None, check=_positive_pair,
               help="Fakes grid size [columns, rows] (default: like StyleGAN2, at most 16 x 9 below 128 px)."),
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
