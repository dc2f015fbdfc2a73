"""The ``stylegan2`` training stage as one rank runs it: frames in, snapshots out, resuming when it can.

:func:`run_training` opens the frames, decides what to continue from (this run's newest readable
checkpoint, else ``resume``'s network, else nothing), builds the :class:`~.loop.TrainingLoop`, and
steps it to ``kimg``, writing a fakes grid, a stats line and a checkpoint at every snapshot (in an
order that keeps a killed run consistent). launch.py decides which processes run it.
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from cineml import CinemlError, Progress, StageContext, atomic_path, frame_facts

from . import checkpoints as ckpt
from .cpu_share import CpuShare
from .dataset import FrameDataset, open_frames, remove_cache
from .distributed import Sync
from .loop import TrainingLoop, require_training_state
from .metrics import compute_metrics, real_features
from .pictures import save_png, to_uint8_grid
from .presets import FEATURE_METRICS, TRAIN_OPTIONS, Settings, expected_cpu_note, resolve

STATS_NAME = "stats.jsonl"
TENSORBOARD = "tensorboard"  # event files for TensorBoard (train.tensorboard = true)
OPTIONS_NAME = "training_options.json"


def run_training(ctx: StageContext, sync: Sync, device: torch.device) -> TrainingLoop:
    opts = ctx.options
    info = sync.info
    main = info.main
    log = ctx.log if main else (lambda msg: None)
    out = Path(ctx.output)
    if "frames" not in ctx.inputs:
        raise CinemlError("The stylegan2 trainer needs the frames folder (inputs['frames']); run the extract stage.")
    if main:
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob(".*.tmp*"):  # half-written files of a killed run (see cineml.atomic_path)
            if stale.is_file():
                stale.unlink(missing_ok=True)
    # The frames cache is decoded by rank 0, then by the first process of each other machine, then the
    # rest find it ready (a shared file system sees one cache; local disks one per machine).
    frames, mirror = Path(ctx.inputs["frames"]), bool(opts.get("mirror"))
    if opts.get("balance") == "shot" and not any(f.get("shot") is not None for f in frame_facts(frames).values()):
        raise ctx.error("balance", f"\"shot\" draws every shot equally often, but {frames / 'index.json'} gives the "
                                   "frames no shots (they were extracted with [extract] shots = false, or by an "
                                   "extractor that does not find shots). Set shots = true in [extract] and run again, "
                                   "or use balance = \"frame\".")
    dataset = None
    for turn in (main, not main and info.local_rank == 0, info.local_rank != 0):
        if turn:
            out.mkdir(parents=True, exist_ok=True)
            dataset = open_frames(frames, out, mirror=mirror, log=log)
        sync.barrier()
    assert dataset is not None

    # Rank 0 decides what to continue from and shares it (other machines may not see its files).
    plan: dict[str, Any] = {"kind": None, "arch_from": None, "arch_source": "", "tensors": None, "state": None}
    if main:
        own = _newest_readable(out, ctx.warn)
        saved = None
        if own is not None:
            path, tensors, state = own
            require_training_state(tensors, state, _name_checkpoint(path, ctx.previous))  # before its settings
            plan.update(kind="resume", tensors=tensors, state=state, path=path)
            saved = state["settings"]
            plan["arch_source"] = f"the interrupted run's checkpoint {path}"
        elif opts.get("resume"):
            tensors, state = _load_transfer_source(Path(opts["resume"]), dataset, opts["resume"])
            plan.update(kind="transfer", tensors=tensors, state=state)
            saved = state["settings"]
            plan["arch_source"] = f"resume = {str(opts['resume'])!r}"
        plan["arch_from"] = None if saved is None else {k: saved[k] for k in ARCH_FROM if k in saved}
    plan = sync.broadcast_object(plan)
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    settings = resolve(opts, dataset.resolution, dataset.channels, ctx.project.seed, device.type, plan["arch_from"],
                       plan["arch_source"], world=info.world, bf16_supported=bf16, error=ctx.error)
    if settings.tensorboard:
        tensorboard_writer(ctx.error)  # say now, not at the first snapshot, that it cannot be loaded

    loop = TrainingLoop(settings, dataset, device, sync)
    tensors, state = plan["tensors"], plan["state"]
    if plan["kind"] == "resume":
        if main:
            _check_compatible(settings, state["settings"], plan["path"], ctx.warn)
        loop.restore(tensors, state, where=f"Checkpoint {plan['path']}")
        if main and loop.frames_changed:
            then, now = loop.frames_changed
            ctx.warn(f"The frames folder now has {now} frames, {then} when this run started; continuing on the "
                     "new set.")
        log(f"Resuming training from {plan['path'].name} at {loop.nimg / 1000:g} kimg.")
    elif plan["kind"] == "transfer":
        if not any(k.startswith("G.") for k in tensors):  # imported files may hold only the EMA generator
            tensors.update({"G." + k: v for k, v in ckpt.sub_state(tensors, "G_ema.").items()})
        nets: tuple[str, ...] = ("G", "D", "G_ema")
        if not any(k.startswith("D.") for k in tensors):
            if main:
                ctx.warn(f"resume = {str(opts['resume'])!r} has no discriminator; D starts from scratch.")
            nets = ("G", "G_ema")
        loop.load_networks(tensors, nets, where=str(opts["resume"]))
        log(f"Transfer learning from {opts['resume']} (kimg restarts at 0).")
    fresh = plan["kind"] != "resume"
    if main:  # lines past the checkpoint we continue from (all of them when starting afresh) are stale
        _trim_stats(out / STATS_NAME, -1 if fresh else loop.nimg)
    del plan, tensors
    loop.broadcast_networks()
    if info.world > 1:
        log(f"Training with {info.world} processes ({info.launcher}), {settings.batch // info.world} images each "
            f"per step.")
    if main:
        with atomic_path(out / OPTIONS_NAME) as tmp:
            tmp.write_text(json.dumps(settings.to_json(), indent=2))
    _run(ctx, loop, out, fresh=fresh)
    sync.barrier()
    if info.local_rank == 0:
        remove_cache(out)
    return loop


def _run(ctx: StageContext, loop: TrainingLoop, out: Path, fresh: bool) -> None:
    s = loop.settings
    main = loop.sync.info.main
    log = ctx.log if main else (lambda msg: None)
    gw, gh = s.grid
    grid_z = torch.randn(gw * gh, s.z_dim, generator=torch.Generator().manual_seed(s.seed + 1))
    if main and (fresh or not (out / "reals.png").exists()):
        reals = loop.dataset.get(loop.dataset.grid_indices(gw * gh))
        save_png(to_uint8_grid(torch.from_numpy(reals).float() / 127.5 - 1, s.grid), out / "reals.png")
    if main and fresh:
        save_png(to_uint8_grid(loop.generate_grid(grid_z), s.grid), out / ckpt.fakes_name(0))

    total = max(int(round(s.kimg * 1000)), 0)
    snap = max(int(round(s.snapshot_kimg * 1000)), 1)
    if loop.nimg >= total:
        log(f"Training already reached {loop.nimg / 1000:g} kimg (kimg = {s.kimg:g}); nothing to do.")
        return
    if main and any(m in s.metrics for m in FEATURE_METRICS):
        real_features(loop, out, log)  # loads and checks the feature network before training starts
    acc: dict[str, list[float]] = {}
    t_interval, n_interval = time.perf_counter(), loop.nimg
    t_info = 0.0
    cpu_note_due = loop.device.type == "cpu" and main
    t_first, n_first = None, 0
    resumed_at = loop.nimg / 1000  # 0 for a fresh run
    progress = ctx.progress if main else Progress(enabled=False)
    # Fewer threads while the machine is busy (not with compile: a new thread count recompiles the graphs).
    share = CpuShare() if loop.device.type == "cpu" and not s.compile else None
    with progress("Training", total=s.kimg, unit="kimg") as bar:
        bar.advance(loop.nimg / 1000)
        while loop.nimg < total:
            if share is not None:
                share.poll()
            stats = loop.step()
            values = {k: float(v) for k, v in stats.items()}
            bad = [k for k in ("loss_G", "loss_D", "r1_penalty", "pl_penalty") if k in values
                   and not math.isfinite(values[k])]
            if bad:  # the values are averaged over ranks, so every rank stops here together
                last = ckpt.list_checkpoints(out)
                where = (f"the last good checkpoint is {last[-1]}, and running again resumes from it" if last
                         else "no checkpoint was written yet, so running again starts over")
                raise CinemlError(
                    f"Training diverged at {loop.nimg / 1000:.3f} kimg: {', '.join(bad)} became NaN/inf; "
                    f"{where}. Lower lr or raise gamma in [train] before running again.")
            for k, v in values.items():
                acc.setdefault(k, []).append(v)
            bar.advance(s.batch / 1000)
            if cpu_note_due and t_first is None:
                t_first, n_first = time.perf_counter(), loop.nimg  # the first step warms up: time the next 4
            elif cpu_note_due and t_first is not None and loop.nimg - n_first >= 4 * s.batch:
                cpu_note_due = False
                spk = (time.perf_counter() - t_first) / (loop.nimg - n_first) * 1000
                log(expected_cpu_note(s, spk, torch.get_num_threads(), done_kimg=resumed_at))
            now = time.perf_counter()
            if main and now - t_info > 1.0:
                t_info = now
                spk = (now - t_interval) / max(loop.nimg - n_interval, 1) * 1000
                aug = f"  p {loop.augment.p:.3f}" if loop.augment is not None else ""
                busy = share.note() if share is not None else ""
                bar.update(info=f"{spk:.1f} s/kimg  G {values.get('loss_G', 0):.3f}  "
                                f"D {values.get('loss_D', 0):.3f}{aug}{busy}")
            if loop.nimg >= total or loop.nimg >= (loop.snapshot_nimg // snap + 1) * snap:
                nominal = total if loop.nimg >= total else loop.nimg // snap * snap
                elapsed = time.perf_counter() - t_interval
                shown = loop.nimg - n_interval
                _snapshot(ctx, loop, out, nominal, grid_z, acc, elapsed, shown)
                acc, t_interval, n_interval = {}, time.perf_counter(), loop.nimg
    if main and loop.last_record:
        report_learning(loop.last_record, log, ctx.warn)


COLLAPSED = 0.6  # diversity below this: the images vary too little to show the film (docs/training.md#collapse)


def report_learning(record: dict[str, Any], log: Callable[[str], None], warn: Callable[[str], None]) -> None:
    """Say in plain words how varied (and, with SWD on, how close to the frames) the last snapshot is."""
    variety = record.get("diversity")
    if variety is None:
        return
    swd = f"; SWD to the frames {record['swd']:.0f} (lower is closer)" if "swd" in record else ""
    line = (f"At {record['kimg']:g} kimg the generated images vary {variety:.0%} as much as the frames "
            f"(diversity {variety:.2f}){swd}.")
    if variety < COLLAPSED:
        warn(f"{line} Most seeds show nearly the same image: the network has collapsed, or has not yet "
             "learned the film's variety. See docs/training.md#collapse for what to do.")
    else:
        log(line)


def _snapshot(ctx: StageContext, loop: TrainingLoop, out: Path, nominal: int, grid_z: torch.Tensor,
              acc: dict[str, list[float]], elapsed: float, shown: int) -> None:
    """fakes grid -> metrics -> stats line -> checkpoint -> prune -> hook (this order keeps a killed run
    consistent). Every rank comes here; only rank 0 writes."""
    s = loop.settings
    loop.snapshot_nimg = nominal
    loop.check_in_sync()
    rng = loop.rng_states()  # a collective: every rank hands its RNG state to rank 0's checkpoint
    if not loop.sync.info.main:
        return
    fakes = out / ckpt.fakes_name(nominal)
    save_png(to_uint8_grid(loop.generate_grid(grid_z), s.grid), fakes)
    record: dict[str, Any] = {"kimg": nominal / 1000, "nimg": loop.nimg, "step": loop.step_idx}
    record.update({k: sum(v) / len(v) for k, v in sorted(acc.items())})
    if loop.augment is not None:
        record["augment_p"] = loop.augment.p  # the current value, not the interval's mean
    if loop.ada is not None and loop.ada.rt is not None:
        record["ada_rt"] = loop.ada.rt
    t0 = time.perf_counter()
    record.update(compute_metrics(loop, out))
    record["metrics_seconds"] = round(time.perf_counter() - t0, 3)
    record.update({"sec_per_kimg": elapsed / max(shown, 1) * 1000, "img_per_sec": shown / max(elapsed, 1e-9),
                   "memory_mb": round(memory_mb(loop.device), 1), "time": time.time()})
    if loop.world > 1:
        record["gpus"] = loop.world
    append_line(out / STATS_NAME, json.dumps(record))
    if s.tensorboard:
        log_tensorboard(out / TENSORBOARD, record, fakes)
    loop.last_record = record
    path = out / ckpt.checkpoint_name(nominal)
    tensors = loop.checkpoint_tensors(rng)
    ckpt.save_checkpoint(path, tensors, loop.checkpoint_state())
    ckpt.prune(out, s.keep)
    ctx.snapshot_written(nominal / 1000, path, fakes)


def tensorboard_writer(error: Callable[[str, str], CinemlError] | None = None) -> Any:
    """TensorBoard's SummaryWriter class (PyTorch's), or a clear error when the tensorboard package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as exc:
        message = (f"true, but TensorBoard cannot be loaded here ({exc}). Install it (pip install tensorboard), or "
                   "set tensorboard = false.")
        raise (error or (lambda key, text: CinemlError(f"train.{key} = {text}")))("tensorboard", message) from None
    return SummaryWriter


def log_tensorboard(folder: Path, record: dict[str, Any], fakes: Path) -> None:
    """One snapshot for TensorBoard: every number of the stats line, and the fakes grid, at the image count.
    Each snapshot writes (and closes) its own small event file, so a killed run loses nothing written."""
    import numpy as np
    from PIL import Image

    step = int(record["nimg"])
    with tensorboard_writer()(str(folder), filename_suffix=f".{step:09d}") as writer:
        for key, value in record.items():
            if key not in ("kimg", "nimg", "step", "time") and isinstance(value, (int, float)):
                writer.add_scalar(f"train/{key}", value, step)
        with Image.open(fakes) as image:
            writer.add_image("fakes", np.asarray(image.convert("RGB")), step, dataformats="HWC")


def _check_compatible(settings: Settings, saved: dict[str, Any], path: Path, warn: Callable[[str], None]) -> None:
    arch = [k for k in Settings.ARCH_KEYS if saved.get(k) != getattr(settings, k)]
    if arch:
        diff = ", ".join(f"{k} {saved.get(k)} -> {getattr(settings, k)}" for k in arch)
        raise CinemlError(f"The training folder {path.parent} holds checkpoints of a different network ({diff}), so "
                          f"this run cannot continue from {path.name}. Delete that folder to start over, or set "
                          "[train] options back to the earlier values.")
    now = settings.to_json()
    # Options an artist may change between an interrupted run and its continuation without notice: those
    # that continue earlier work, resume (which only matters for a fresh start), and ADA's speed (its
    # default follows kimg, see presets.ada_speed).
    free = {o.name for o in TRAIN_OPTIONS if o.continues} | {"resume", "ada_kimg"}
    changed = [k for k in now if k not in Settings.ARCH_KEYS and k not in free and saved.get(k) != now[k]]
    if changed:
        warn("Continuing the interrupted training with changed settings: "
             + ", ".join(f"{k} {saved.get(k)} -> {now[k]}" for k in changed) + ".")


def _newest_readable(out: Path, warn: Callable[[str], None]) -> tuple[Path, dict, dict] | None:
    """(path, tensors, state) of the newest checkpoint in ``out`` that reads, or None when there is none.

    A damaged one (cut short by a full disk, a copy that did not finish) is renamed ``<name>.damaged``
    with a warning, and the one before it is used.
    """
    def set_aside(path: Path, exc: ckpt.UnreadableCheckpoint, older: Path | None) -> None:
        damaged = path.with_name(path.name + ".damaged")
        path.replace(damaged)
        if older is None:
            raise CinemlError(
                f"Checkpoint {path.name} is damaged ({exc.reason}) and no older checkpoint is left "
                f"to continue from. It was renamed to {damaged.name}; running again starts this training "
                "over (set [train] resume to another network to start from it instead).") from None
        warn(f"Checkpoint {path.name} is damaged ({exc.reason}); renamed it to {damaged.name} and continuing "
             f"from {older.name}.")

    found = ckpt.list_checkpoints(out)
    if not found:
        return None
    path, (tensors, state) = ckpt.newest_readable(found, ckpt.load_checkpoint, set_aside)
    return path, tensors, state


def _name_checkpoint(path: Path, previous: Path | None) -> str:
    """``Checkpoint <path>``, plus the published file it was copied from when the run continues in a staging
    folder (moving only that one away would leave the copy the trainer reads)."""
    copied = previous / path.name if previous is not None else None
    if copied is None or not copied.exists() or copied.parent.resolve() == path.parent.resolve():
        return f"Checkpoint {path}"
    return f"Checkpoint {path} (a copy of {copied}: move both)"


def _trim_stats(path: Path, nimg: int) -> None:
    """Drop stats lines past the checkpoint we resume from, and a line cut short by a kill (every record
    is a JSON object, so no cut-off part of one parses)."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("nimg", 0) <= nimg:
            keep.append(line)
    with atomic_path(path) as tmp:
        tmp.write_text("".join(k + "\n" for k in keep))


ARCH_FROM = ("channel_base", "channel_max", "map_layers", "z_dim", "w_dim")


def _load_transfer_source(path: Path, dataset: FrameDataset, given: Any) -> tuple[dict[str, torch.Tensor], dict]:
    """Tensors + state of the network to start from: a CineML checkpoint/folder, or a .pkl/.pt to import."""
    from .legacy import import_network, is_foreign

    if path.is_file() and is_foreign(path):
        tensors, state = import_network(path, with_d=True).checkpoint()
    else:
        tensors, state = ckpt.load_checkpoint(ckpt.find_checkpoint(path), ("G.", "D.", "G_ema."))
    settings, g_kwargs = state["settings"], state.get("G_kwargs") or {}
    if g_kwargs.get("c_dim", 0):
        raise CinemlError(f"resume = {str(given)!r} is a class-conditional network (c_dim = {g_kwargs['c_dim']}); "
                          "CineML trains unconditional networks on film frames, so it cannot continue it.")
    for key, mine in (("resolution", dataset.resolution), ("img_channels", dataset.channels)):
        if settings.get(key) != mine:
            raise CinemlError(
                f"resume = {str(given)!r}: that network was trained with {key} = {settings.get(key)} but the "
                f"frames here have {key} = {mine}. Transfer learning needs the same image size and channel "
                "count: change the letterbox size (or grayscale step) or pick another network.")
    return tensors, state


def append_line(path: Path, line: str) -> None:
    """Append ``line`` + newline in one write, then fsync, so a kill leaves at most a cut-off last line
    (which ``_trim_stats`` drops when the run continues), never a line merged into the next one.

    Copy-on-write: a continued run's staging folder may hold hard links to the published files (the
    engine's rule: replace them, never modify in place), so a linked file is first replaced by a copy.
    """
    data = (line + "\n").encode()
    if path.exists() and path.stat().st_nlink > 1:
        with atomic_path(path) as tmp:
            shutil.copyfile(path, tmp)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        done = os.write(fd, data)
        while done < len(data):  # a short write (full disk, signal): finish the line
            done += os.write(fd, data[done:])
        os.fsync(fd)
    finally:
        os.close(fd)


def memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
