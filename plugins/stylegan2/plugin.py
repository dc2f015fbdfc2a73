"""Registers the built-in ``stylegan2`` trainer and generator, and the generate / import / export commands.

Imports neither torch nor numpy: the engine imports every plugin module at start-up, and the training
code is loaded only when a training stage actually runs.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from cineml import StageContext, Trainer, hookimpl

from .presets import TRAIN_OPTIONS


class StyleGAN2Trainer(Trainer):
    """Train StyleGAN2 (config F) on the frames; resumes interrupted runs; CUDA when available, else CPU."""

    name = "stylegan2"
    options = TRAIN_OPTIONS

    def resume_point(self, partial: Path) -> str | None:
        from .checkpoints import list_checkpoints, parse_kimg

        found = list_checkpoints(partial)
        kimg = parse_kimg(found[-1].name) if found else None
        return None if kimg is None else f"{kimg:g} kimg"

    def train(self, ctx: StageContext) -> None:
        if "torch" not in sys.modules:  # OpenMP reads it once, when torch loads
            # A waiting thread spins 10000 rounds, not GNU OpenMP's 300000, then sleeps: beside busy programs a
            # spinning thread burns the core its sibling needs, and on an idle machine this is as fast
            # (benchmarks/learns.py --contention; docs/training.md, "CPU or GPU").
            os.environ.setdefault("GOMP_SPINCOUNT", "10000")
        from .launch import train

        train(ctx)


@hookimpl
def register_trainers(register):  # noqa: ANN001 (pluggy passes the engine's register callable)
    register(StyleGAN2Trainer())


@hookimpl
def register_generators(register):  # noqa: ANN001
    from .generator import StyleGAN2Generator  # numpy, PIL and cineml only: torch loads when it generates
    from .projector import ProjectionGenerator

    register(StyleGAN2Generator())
    register(ProjectionGenerator())


@hookimpl
def suggest_settings(film):  # noqa: ANN001
    """``cineml new --film``: a first run this machine finishes in an evening (GPU) or minutes (CPU)."""
    from .presets import suggest_for_film

    return suggest_for_film(film)


@hookimpl
def register_commands(cli):  # noqa: ANN001
    from .commands import add_commands  # cineml generate / import / export

    add_commands(cli)
