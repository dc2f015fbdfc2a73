"""Who trains where: one process, ``gpus = N`` processes started here (spawn), or torchrun's.

Every process ends up in :func:`run_rank`, which joins the process group when there is one and runs
the stage (training.py) as its rank; only rank 0 writes files.
"""

from __future__ import annotations

import traceback
from pathlib import Path
from typing import Any

import torch

from cineml import CinemlError, Progress, Project, StageContext

from . import distributed
from .distributed import DistInfo, Sync
from .loop import TrainingLoop
from .pictures import pick_device
from .training import run_training


def train(ctx: StageContext) -> None:
    """The ``stylegan2`` trainer: frames folder -> snapshots in ``ctx.output`` (resuming when possible).

    One process by default; ``gpus > 1`` starts ranks 1..N-1 (spawn) and trains as rank 0 here; under
    torchrun every process arrives here with its rank in the environment.
    """
    opts = ctx.options
    device = pick_device(opts.get("device") or "auto", f"{ctx.where or ctx.stage}.device")
    gpus = int(opts.get("gpus") or 1)
    launched = distributed.from_env()
    if launched is not None:
        if gpus > 1 and launched.main:
            ctx.warn(f"{ctx.where or ctx.stage}.gpus = {gpus} is ignored: torchrun started {launched.world} processes.")
        if launched.main:
            run_rank(ctx, launched, device)
            return
        code = 0
        try:
            run_rank(ctx, launched, device)
        except CinemlError:
            pass  # settings and divergence errors are decided collectively: rank 0 reports the same one
        except BaseException:
            traceback.print_exc()
            code = 1
        if code:
            raise SystemExit(code)  # the traceback is above; rank 0 reports the run's outcome
        return  # the engine publishes nothing on ranks > 0 (cineml.pipeline.worker_rank)
    if gpus == 1:
        run_rank(ctx, DistInfo(), device)
        return
    if device.type == "cpu" and (opts.get("device") or "auto") == "auto":
        raise ctx.error("gpus", f"{gpus} but PyTorch sees no CUDA GPU. Set gpus = 1, or set device = \"cpu\" to "
                                "split the batch over CPU processes (only useful for testing).")
    if device.type == "cuda" and torch.cuda.device_count() < gpus:
        raise ctx.error("gpus", f"{gpus} but PyTorch sees {torch.cuda.device_count()} CUDA GPU(s) on this machine. "
                                "Lower gpus, or use torchrun to train across several machines (docs/training.md).")
    job = {"options": dict(opts), "inputs": dict(ctx.inputs), "output": Path(ctx.output), "seed": ctx.project.seed,
           "name": ctx.project.name, "root": ctx.project.root, "manifest": ctx.project.manifest_path,
           "device": device.type, "threads": torch.get_num_threads()}
    workers = distributed.Workers(gpus, _spawned_worker, job)
    try:
        run_rank(ctx, workers.rank0, device)
        workers.join()
    except CinemlError:
        raise
    except KeyboardInterrupt:
        if workers.failed is None:
            raise  # Ctrl-C: the engine says how to resume; ``stop`` ends the workers
        raise CinemlError(f"Training stopped because one of the {gpus} training processes failed "
                          f"({workers.failed}); its error, if it printed one, is above. Running again resumes "
                          "from the last checkpoint.") from None
    except BaseException:  # a collective failed: did a worker die?
        try:
            failed = workers.claim_failure()
        except KeyboardInterrupt:  # the watcher's interrupt arrived while we were already handling it
            failed = workers.claim_failure()
        if failed is None:
            raise
        raise CinemlError(f"Training stopped because one of the {gpus} training processes failed ({failed}); "
                          "its error, if it printed one, is above. Running again resumes from the last "
                          "checkpoint.") from None
    finally:
        workers.stop()


def run_rank(ctx: StageContext, info: DistInfo, device: torch.device) -> TrainingLoop:
    """Train as one rank of ``info`` (a single process when ``info.world == 1``); returns the loop."""
    if info.world > 1:
        device = distributed.init(info, device)
    try:
        return run_training(ctx, Sync(info), device)
    finally:
        if info.world > 1:
            distributed.shutdown()


def _spawned_worker(info: DistInfo, job: dict[str, Any]) -> None:
    """Entry point of ranks 1..N-1 started by ``gpus > 1``: the same training, silent, writing nothing."""
    torch.set_num_threads(job["threads"])  # as many as rank 0 uses (matters on a shared CPU)
    project = Project(name=job["name"], root=job["root"], manifest_path=job["manifest"], seed=job["seed"])
    quiet = lambda msg: None  # noqa: E731
    ctx = StageContext(project=project, stage="train", options=job["options"], output=job["output"],
                       inputs=job["inputs"], progress=Progress(enabled=False), log=quiet, warn=quiet)
    try:
        run_rank(ctx, info, torch.device(job["device"]))
    except CinemlError:
        pass  # settings and divergence errors are decided collectively: rank 0 raises the same one
