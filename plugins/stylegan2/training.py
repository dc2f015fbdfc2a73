"""The StyleGAN2 training loop: phases, EMA, snapshots, checkpoints and exact resumption.

One iteration ("step") shows ``batch`` real images and runs, as in the paper's lazy-regularisation
schedule: G main loss; every 4th step the path-length penalty (x4); D main loss; every 16th step R1
(x16). Each phase is its own optimiser step. After the step the EMA generator follows G.

Resumption is exact on the CPU: a checkpoint holds the networks, Adam states, ``pl_mean``, the RNG
state, the data sampler's position and the image count, and snapshots never draw from the global
RNG, so "run to 2 kimg" and "run to 1 kimg, stop, run to 2 kimg" give identical weights.

ADA (augment.py) augments everything D sees; its probability ``p`` and sign statistics are
checkpointed too. With several processes (distributed.py) every rank runs this same loop on its
share of the batch; gradients, running averages and statistics are averaged over ranks, and only
rank 0 writes files.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import os
import re
import resource
import shutil
import time
import traceback
import types
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import torch
from PIL import Image

from cineml import CinemlError, Progress, StageContext, atomic_path

from . import checkpoints as ckpt
from . import distributed
from .augment import AdaController, AugmentPipe, DiffAugment
from .cpu_share import CpuShare
from .dataset import FrameDataset, open_frames, remove_cache
from .distributed import DistInfo, Sync
from .loss import StyleGAN2Loss
from .networks import Discriminator, Generator
from .presets import FEATURE_METRICS, TRAIN_OPTIONS, Settings, expected_cpu_note, resolve

STATS_NAME = "stats.jsonl"
OPTIONS_NAME = "training_options.json"


# --- Small helpers --------------------------------------------------------------------------------


def pick_device(name: str) -> torch.device:
    """``auto``: CUDA when PyTorch sees a GPU, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise CinemlError("[train] device = \"cuda\" but PyTorch sees no CUDA GPU (a CPU-only PyTorch build, or no "
                          "driver). Use device = \"auto\" or \"cpu\", or install a CUDA build of PyTorch.")
    return torch.device(name)


class Sampler:
    """Endless shuffled passes over the dataset; its whole state is (epoch, cursor)."""

    def __init__(self, size: int, seed: int, epoch: int = 0, cursor: int = 0) -> None:
        self.size, self.seed, self.epoch, self.cursor = size, seed, epoch, cursor
        self._perm: tuple[int, np.ndarray] | None = None

    def _permutation(self) -> np.ndarray:
        if self._perm is None or self._perm[0] != self.epoch:
            self._perm = (self.epoch, np.random.default_rng([self.seed, self.epoch]).permutation(self.size))
        return self._perm[1]

    def take(self, count: int) -> np.ndarray:
        out = []
        while count > 0:
            if self.cursor >= self.size:  # a pass is over (or the frames folder shrank since the checkpoint)
                self.epoch, self.cursor = self.epoch + 1, 0
            part = self._permutation()[self.cursor:self.cursor + count]
            out.append(part)
            count -= len(part)
            self.cursor += len(part)
        return np.concatenate(out)

    def state(self) -> dict[str, int]:
        """Saved in checkpoints with ``size``, so a resumed run can tell that the frames changed."""
        return {"epoch": self.epoch, "cursor": self.cursor, "size": self.size}


@contextlib.contextmanager
def math_flags(tf32: bool) -> Iterator[None]:
    """cuDNN autotuning on, TF32 matmuls and convolutions on or off, for one training phase; PyTorch's
    process-wide flags are put back afterwards, so no other code (generation, another plugin) inherits them.

    The main phases may use TF32 on Ampere and newer GPUs; the R1 and path-length penalties, whose double
    backward the reference keeps in full fp32 (it leaves TF32 off throughout), never do. No effect on the CPU.
    """
    backends = torch.backends
    saved = backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32, backends.cudnn.benchmark
    backends.cuda.matmul.allow_tf32 = backends.cudnn.allow_tf32 = tf32
    backends.cudnn.benchmark = True
    try:
        yield
    finally:
        backends.cuda.matmul.allow_tf32, backends.cudnn.allow_tf32, backends.cudnn.benchmark = saved


def to_uint8_grid(images: torch.Tensor, grid: tuple[int, int]) -> Image.Image:
    """[N, C, H, W] in [-1, 1] (N = columns * rows) -> one PIL mosaic, row by row."""
    gw, gh = grid
    x = (images.detach().float().cpu() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    n, c, h, w = x.shape
    x = x.reshape(gh, gw, c, h, w).permute(0, 3, 1, 4, 2).reshape(gh * h, gw * w, c).numpy()
    return Image.fromarray(np.ascontiguousarray(x[:, :, 0] if c == 1 else x))  # mode L or RGB from the shape


def save_png(image: Image.Image, path: Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")


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


# --- The training state ---------------------------------------------------------------------------


TRAINING_TENSORS = ("loss.pl_mean", "rng.torch")  # what a resumable checkpoint holds beyond the networks
TRAINING_STATE = ("settings", "nimg", "step", "snapshot_nimg", "data")


def require_training_state(tensors: dict[str, torch.Tensor], state: dict[str, Any], where: str) -> None:
    """Refuse to continue from a networks-only file (``cineml export``/``import`` output) with a clear error."""
    missing = [k for k in TRAINING_TENSORS if k not in tensors] + [k for k in TRAINING_STATE if k not in state]
    if missing:
        raise CinemlError(
            f"{where} holds networks only (no {missing[0]}; `cineml export` and `cineml import` write such "
            "files), so this training cannot continue from it. Move it out of the training folder, or use it "
            "as [train] resume = \"...\" to start a new training from its weights.")


class TrainingLoop:
    """Networks, optimisers, loss and counters of one run; ``step()`` trains one batch."""

    def __init__(self, settings: Settings, dataset: FrameDataset, device: torch.device | str = "cpu",
                 sync: Sync | None = None) -> None:
        s = self.settings = settings
        self.dataset = dataset
        self.device = device = torch.device(device)
        self.sync = sync or Sync()
        self.rank, self.world = self.sync.info.rank, self.sync.info.world
        if s.batch % self.world or (s.batch // self.world) % s.batch_gpu:
            raise CinemlError(f"[train] batch = {s.batch} does not split into {self.world} process(es) of whole "
                              f"batch_gpu = {s.batch_gpu} chunks; pick a batch that is a multiple of both.")
        torch.manual_seed(s.seed)  # identical networks on every rank
        self.tf32 = True  # the main phases may use TF32 (see math_flags); False: full fp32 throughout
        self.G = Generator(**s.g_kwargs).to(device).train().requires_grad_(False)
        self.D = Discriminator(**s.d_kwargs).to(device).train().requires_grad_(False)
        if device.type == "cuda":
            self.G.to(memory_format=torch.channels_last)
            self.D.to(memory_format=torch.channels_last)
        self.G_ema = copy.deepcopy(self.G).eval()  # snapshots and metrics sample it in fp32
        amp = torch.bfloat16 if s.precision == "bf16" else None
        self.G.set_precision(amp, s.num_fp16_res)
        self.D.set_precision(amp, s.num_fp16_res)
        self.augment: AugmentPipe | DiffAugment | None = None
        self.ada: AdaController | None = None
        if s.augment == "diffaugment":
            self.augment = DiffAugment()
        elif s.augment != "none":
            self.augment = AugmentPipe(p=s.augment_p)
        if s.augment == "ada":
            self.ada = AdaController(self.augment, s.ada_target, s.ada_kimg, s.batch, s.ada_interval)
        self.loss = StyleGAN2Loss(self.G, self.D, s.gamma, s.style_mixing, s.pl_weight, s.pl_decay,
                                  s.pl_batch_shrink, augment=self.augment, mode_seeking=s.mode_seeking)
        if s.compile:
            synthesis = torch.compile(self.G.synthesis)
            # ws are a broadcast view without style mixing and a new tensor with it: give the compiled
            # graph one memory layout, or it recompiles whenever the coin first falls the other way.
            self.loss.G_main = types.SimpleNamespace(
                mapping=self.G.mapping, synthesis=lambda ws, **kw: synthesis(ws.contiguous(), **kw))
            self.loss.D_main = torch.compile(self.D)
        self.G_opt = self._adam(self.G, s.g_reg_interval)
        self.D_opt = self._adam(self.D, s.d_reg_interval)
        self.sampler = Sampler(len(dataset), s.seed)
        self.nimg = 0  # images shown so far (all ranks together)
        self.step_idx = 0
        self.snapshot_nimg = 0  # nominal image count of the last snapshot
        self.frames_changed: tuple[int, int] | None = None  # (then, now) frame counts when resuming on a new set
        self._seed_rank(0)
        self.metric_cache: dict[str, Any] = {}  # real-frame descriptors/features and the feature net
        self.last_record: dict[str, Any] = {}  # the newest snapshot's stats line

    def _seed_rank(self, step: int) -> None:
        """Ranks > 0 draw their own latents and augmentations (rank 0 keeps the single-process stream)."""
        if self.rank > 0:
            torch.manual_seed(int(np.random.SeedSequence([self.settings.seed, self.rank, step]).generate_state(1)[0]))

    @property
    def batch_per_rank(self) -> int:
        return self.settings.batch // self.world

    def _adam(self, module: torch.nn.Module, reg_interval: int) -> torch.optim.Optimizer:
        """Adam with lr and betas corrected for lazy regularisation: c = I / (I + 1)."""
        s = self.settings
        c = reg_interval / (reg_interval + 1)
        kwargs = dict(lr=s.lr * c, betas=(s.betas[0] ** c, s.betas[1] ** c), eps=s.eps)
        try:
            return torch.optim.Adam(module.parameters(), fused=True, **kwargs)
        except (RuntimeError, TypeError):  # fused Adam unsupported on this device/build
            return torch.optim.Adam(module.parameters(), foreach=True, **kwargs)

    # -- one iteration --

    def next_reals(self) -> torch.Tensor:
        """This rank's share of the next global batch (every rank advances the same sampler)."""
        indices = self.sampler.take(self.settings.batch)
        per = self.batch_per_rank
        frames = torch.from_numpy(self.dataset.get(indices[self.rank * per:(self.rank + 1) * per]))
        x = frames.to(self.device, non_blocking=True).float().div_(127.5).sub_(1)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _phase(self, module: torch.nn.Module, opt: torch.optim.Optimizer, objective: Callable[[int], Any],
               gain: float, stats: dict[str, list[torch.Tensor]]) -> None:
        s = self.settings
        chunks = self.batch_per_rank // s.batch_gpu
        module.requires_grad_(True)
        opt.zero_grad(set_to_none=True)
        for i in range(chunks):
            loss, st = objective(i)
            loss.mul(gain / chunks).backward()
            for k, v in st.items():
                stats.setdefault(k, []).append(v)
        self.sync.grads(module.parameters())
        for p in module.parameters():
            if p.grad is not None:
                torch.nan_to_num_(p.grad, nan=0.0, posinf=1e5, neginf=-1e5)
        opt.step()
        module.requires_grad_(False)

    def step(self) -> dict[str, torch.Tensor]:
        """Train on one batch; returns the batch's (detached) statistics."""
        s, dev = self.settings, self.device
        bg = s.batch_gpu
        reals = self.next_reals().split(bg)
        z = lambda: torch.randn(bg, s.z_dim, device=dev)  # noqa: E731 (fresh latents per phase, as in the paper)
        stats: dict[str, list[torch.Tensor]] = {}
        L = self.loss
        with math_flags(tf32=self.tf32):
            self._phase(self.G, self.G_opt, lambda i: L.g_main(z()), 1.0, stats)
        if s.pl_weight > 0 and self.step_idx % s.g_reg_interval == 0:
            with math_flags(tf32=False):  # double backward in full fp32, as the reference
                self._phase(self.G, self.G_opt, lambda i: L.g_reg(z()), s.g_reg_interval, stats)
        with math_flags(tf32=self.tf32):
            self._phase(self.D, self.D_opt, lambda i: L.d_main(z(), reals[i]), 1.0, stats)
        if s.gamma > 0 and self.step_idx % s.d_reg_interval == 0:
            with math_flags(tf32=False):
                self._phase(self.D, self.D_opt, lambda i: L.d_reg(reals[i]), s.d_reg_interval, stats)
        if self.sync.active:  # running averages follow the whole batch, so every rank keeps the same ones
            self.sync.mean_([self.G.mapping.w_avg, self.loss.pl_mean])
        self.update_ema()
        self.nimg += s.batch
        self.step_idx += 1
        out = {k: torch.stack(v).mean() for k, v in stats.items()}
        if self.sync.active:  # every rank logs, and decides on, the same whole-batch statistics
            keys = sorted(out)
            vec = torch.stack([out[k].float() for k in keys])
            self.sync.mean_([vec])
            out = dict(zip(keys, vec.unbind()))
        if self.ada is not None and "D_real_sign" in out:
            self.ada.accumulate(out["D_real_sign"])
            if self.step_idx % s.ada_interval == 0:
                self.ada.update()
        if self.augment is not None:
            out["augment_p"] = torch.tensor(self.augment.p)
        return out

    @torch.no_grad()
    def update_ema(self) -> None:
        """G_ema <- lerp towards G with a half-life of ``ema_kimg`` (ramped up early in training)."""
        s = self.settings
        ema_nimg = s.ema_kimg * 1000
        if s.ema_rampup is not None:
            ema_nimg = min(ema_nimg, self.nimg * s.ema_rampup)
        beta = 0.5 ** (s.batch / max(ema_nimg, 1e-8))
        torch._foreach_lerp_(list(self.G_ema.parameters()), list(self.G.parameters()), 1.0 - beta)
        for b_ema, b in zip(self.G_ema.buffers(), self.G.buffers()):
            b_ema.copy_(b)

    # -- snapshots --

    @torch.no_grad()
    def generate_grid(self, z: torch.Tensor, chunk: int = 16) -> torch.Tensor:
        """G_ema images for fixed latents, constant noise (so grids are comparable across snapshots)."""
        out = [self.G_ema(zc.to(self.device), noise_mode="const").cpu() for zc in z.split(chunk)]
        return torch.cat(out)

    def checkpoint_tensors(self, rng: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
        t: dict[str, torch.Tensor] = {}
        for name, net in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema)):
            t.update({f"{name}.{k}": v for k, v in net.state_dict().items()})
        for name, net, opt in (("G_opt", self.G, self.G_opt), ("D_opt", self.D, self.D_opt)):
            for pname, p in net.named_parameters():
                for k, v in opt.state.get(p, {}).items():
                    t[f"{name}.{pname}.{k}"] = torch.as_tensor(v)
        t["loss.pl_mean"] = self.loss.pl_mean
        if self.augment is not None:
            t["augment.p"] = torch.tensor(self.augment.p, dtype=torch.float64)
        if self.ada is not None:
            t["augment.acc"] = self.ada.acc.clone()
        t.update(self.rng_states() if rng is None else rng)
        return t

    def rng_states(self) -> dict[str, torch.Tensor]:
        """This process's RNG states (``rng.torch``, ``rng.cuda<i>``), plus every other rank's under
        ``rng.*.rank<r>``. A collective: with several ranks, all of them must call it together."""
        t = {"rng.torch": torch.get_rng_state()}
        if self.device.type == "cuda" and not self.sync.active:
            for i, st in enumerate(torch.cuda.get_rng_state_all()):
                t[f"rng.cuda{i}"] = st
        if self.sync.active:
            mine = {"torch": torch.get_rng_state()}
            if self.device.type == "cuda":
                mine["cuda"] = torch.cuda.get_rng_state(self.device)
            for r, states in enumerate(self.sync.gather(mine)):
                t.update({f"rng.{k}.rank{r}": v for k, v in states.items()})
        return t

    def checkpoint_state(self) -> dict[str, Any]:
        return {"settings": self.settings.to_json(), "G_kwargs": self.G.init_kwargs, "D_kwargs": self.D.init_kwargs,
                "nimg": self.nimg, "snapshot_nimg": self.snapshot_nimg, "kimg": self.snapshot_nimg / 1000,
                "step": self.step_idx, "data": {**self.sampler.state(), "frames": self.dataset.num_frames},
                "world": self.world}

    def load_networks(self, tensors: dict[str, torch.Tensor], names: tuple[str, ...] = ("G", "D", "G_ema"),
                      where: str = "the checkpoint") -> None:
        for name in names:
            net = getattr(self, name)
            own = net.state_dict()
            theirs = ckpt.sub_state(tensors, name + ".")
            bad = sorted(set(own) ^ set(theirs)) + sorted(k for k in own if k in theirs
                                                          and own[k].shape != theirs[k].shape)
            if bad:
                raise CinemlError(f"{where}: its {name} does not fit the network these settings build (first "
                                  f"differences: {', '.join(bad[:4])}); it cannot be loaded.")
            net.load_state_dict(theirs)

    def restore(self, tensors: dict[str, torch.Tensor], state: dict[str, Any], where: str = "the checkpoint") -> None:
        """Continue exactly where a checkpoint of this run left off (``where`` names it in errors; the
        caller has checked that it holds training state, see ``require_training_state``)."""
        self.load_networks(tensors, where=where)
        for name, net, opt in (("G_opt", self.G, self.G_opt), ("D_opt", self.D, self.D_opt)):
            sd = opt.state_dict()
            sd["state"] = {}
            for i, (pname, _) in enumerate(net.named_parameters()):
                entry = {k: tensors[f"{name}.{pname}.{k}"] for k in ("step", "exp_avg", "exp_avg_sq")
                         if f"{name}.{pname}.{k}" in tensors}
                if entry:
                    sd["state"][i] = entry
            opt.load_state_dict(sd)
        self.loss.pl_mean.copy_(tensors["loss.pl_mean"])
        if self.augment is not None and "augment.p" in tensors and self.settings.augment == "ada":
            self.augment.p = float(tensors["augment.p"])
        if self.ada is not None and "augment.acc" in tensors:
            self.ada.acc.copy_(tensors["augment.acc"])
        self.nimg, self.step_idx = int(state["nimg"]), int(state["step"])
        self.snapshot_nimg = int(state["snapshot_nimg"])
        data = state["data"]
        epoch, cursor = data["epoch"], data["cursor"]
        if data.get("size", len(self.dataset)) != len(self.dataset):  # frames added or deleted: a fresh pass
            epoch, cursor = epoch + 1, 0
            if data.get("frames", self.dataset.num_frames) != self.dataset.num_frames:
                self.frames_changed = (int(data["frames"]), self.dataset.num_frames)
        self.sampler = Sampler(len(self.dataset), self.settings.seed, epoch, cursor)
        same_world = int(state.get("world", 1)) == self.world
        if self.rank == 0:
            torch.set_rng_state(tensors["rng.torch"])
            if self.device.type == "cuda" and not self.sync.active:
                states = [tensors[k] for k in sorted(k for k in tensors if re.fullmatch(r"rng\.cuda\d+", k))]
                if len(states) == torch.cuda.device_count():
                    torch.cuda.set_rng_state_all(states)
        elif same_world and f"rng.torch.rank{self.rank}" in tensors:
            torch.set_rng_state(tensors[f"rng.torch.rank{self.rank}"])
        else:  # a different number of ranks than before: fresh, but reproducible, streams
            self._seed_rank(self.step_idx)
        if self.sync.active and self.device.type == "cuda" and same_world and f"rng.cuda.rank{self.rank}" in tensors:
            torch.cuda.set_rng_state(tensors[f"rng.cuda.rank{self.rank}"], self.device)

    def broadcast_networks(self) -> None:
        """Copy rank 0's networks to every rank (they start identical anyway; this makes sure)."""
        if self.sync.active:
            self.sync.broadcast_([*self.G.state_dict().values(), *self.D.state_dict().values(),
                                  *self.G_ema.state_dict().values()])

    def check_in_sync(self) -> None:
        """Every rank must hold bit-identical networks; compare checksums of them on rank 0.

        The checksums add the parameters' bit patterns as integers: exact, so they do not depend on
        the order of a reduction (which differs with thread counts and devices).
        """
        if not self.sync.active:
            return
        sums = []
        with torch.no_grad():
            for net in (self.G, self.D, self.G_ema):
                bits = torch.cat([p.detach().float().flatten() for p in net.parameters()]).view(torch.int32).long()
                weights = torch.arange(len(bits), device=bits.device) % 1009 + 1
                sums.append((int(bits.sum()), int((bits * weights).sum())))
        seen = self.sync.gather(sums)
        if any(other != seen[0] for other in seen[1:]):
            raise CinemlError(f"The {self.world} training processes no longer hold identical networks at "
                              f"{self.nimg / 1000:g} kimg (checksums {seen}). This is a bug in the stylegan2 trainer; "
                              "the last checkpoint is still good, so running again resumes from it.")


# --- The stage ------------------------------------------------------------------------------------


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


def train(ctx: StageContext) -> None:
    """The ``stylegan2`` trainer: frames folder -> snapshots in ``ctx.output`` (resuming when possible).

    One process by default; ``gpus > 1`` starts ranks 1..N-1 (spawn) and trains as rank 0 here; under
    torchrun every process arrives here with its rank in the environment.
    """
    opts = ctx.options
    device = pick_device(opts.get("device") or "auto")
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


def _spawned_worker(info: DistInfo, job: dict[str, Any]) -> None:
    """Entry point of ranks 1..N-1 started by ``gpus > 1``: the same training, silent, writing nothing."""
    from cineml import Project

    torch.set_num_threads(job["threads"])  # as many as rank 0 uses (matters on a shared CPU)
    project = Project(name=job["name"], root=job["root"], manifest_path=job["manifest"], seed=job["seed"])
    quiet = lambda msg: None  # noqa: E731
    ctx = StageContext(project=project, stage="train", options=job["options"], output=job["output"],
                       inputs=job["inputs"], progress=Progress(enabled=False), log=quiet, warn=quiet)
    try:
        run_rank(ctx, info, torch.device(job["device"]))
    except CinemlError:
        pass  # settings and divergence errors are decided collectively: rank 0 raises the same one



def run_rank(ctx: StageContext, info: DistInfo, device: torch.device) -> TrainingLoop:
    """Train as one rank of ``info`` (a single process when ``info.world == 1``); returns the loop."""
    if info.world > 1:
        device = distributed.init(info, device)
    try:
        return _train(ctx, Sync(info), device)
    finally:
        if info.world > 1:
            distributed.shutdown()


def _train(ctx: StageContext, sync: Sync, device: torch.device) -> TrainingLoop:
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
        nets = ("G", "D", "G_ema")
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
            elif cpu_note_due and loop.nimg - n_first >= 4 * s.batch:
                cpu_note_due = False
                spk = (time.perf_counter() - t_first) / (loop.nimg - n_first) * 1000
                log(expected_cpu_note(s, spk, torch.get_num_threads()))
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
    loop.last_record = record
    path = out / ckpt.checkpoint_name(nominal)
    tensors = loop.checkpoint_tensors(rng)
    ckpt.save_checkpoint(path, tensors, loop.checkpoint_state())
    ckpt.prune(out, s.keep)
    ctx.snapshot_written(nominal / 1000, path, fakes)


def metric_frames(loop: TrainingLoop) -> np.ndarray:
    """The ``metric_images`` training frames every metric compares against (fixed by the seed)."""
    s = loop.settings
    count = min(s.metric_images, loop.dataset.num_frames)
    return np.sort(np.random.default_rng(s.seed + 3).choice(loop.dataset.num_frames, count, replace=False))


def real_batches(loop: TrainingLoop, chunk: int = 64):
    """The metric frames in [-1, 1] on the training device, ``chunk`` at a time."""
    pick = metric_frames(loop)
    for start in range(0, len(pick), chunk):
        yield torch.from_numpy(loop.dataset.get(pick[start:start + chunk])).to(loop.device).float() / 127.5 - 1


def real_features(loop: TrainingLoop, out: Path, log: Callable[[str], None] = lambda msg: None) -> torch.Tensor:
    """Feature vectors of the metric frames from the artist's network: computed once per run and cached in
    ``out`` (keyed by the network file's hash and the frame count), so snapshots only embed fakes."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from .metrics import FeatureNet

    cache = loop.metric_cache
    if "real_features" in cache:
        return cache["real_features"]
    s = loop.settings
    if "feature_net" not in cache:
        cache["feature_net"] = FeatureNet(s.inception, loop.device)
    net = cache["feature_net"]
    count = min(s.metric_images, loop.dataset.num_frames)  # as many as metric_frames picks
    path = out / f"inception-reals-{net.sha256[:16]}-{count}.safetensors"
    meta = {"inception_sha256": net.sha256, "frames": str(loop.dataset.num_frames), "count": str(count),
            "seed": str(s.seed), "resolution": str(s.resolution), "channels": str(s.img_channels)}
    feats = None
    if path.is_file():
        try:
            with safe_open(str(path), framework="pt") as f:
                if f.metadata() == meta:
                    feats = f.get_tensor("features")
        except Exception:  # noqa: BLE001 (a damaged cache is simply recomputed)
            feats = None
    if feats is None:
        log(f"Computing the feature vectors of {count} training frames with {Path(s.inception).name} "
            f"(once; cached in {path.name}).")
        with torch.random.fork_rng(devices=[loop.device] if loop.device.type == "cuda" else []):
            feats = torch.cat([net(batch) for batch in real_batches(loop)])
        with atomic_path(path) as tmp:
            save_file({"features": feats.contiguous()}, str(tmp), metadata=meta)
    cache["real_features"] = feats
    return feats


DIVERSITY_IMAGES = 128  # when no other metric is on: enough for a per-pixel spread, cheap at every snapshot


def compute_metrics(loop: TrainingLoop, out: Path) -> dict[str, float]:
    """``diversity`` and the chosen metrics between ``metric_images`` training frames and as many G_ema
    images (``diversity`` alone: ``DIVERSITY_IMAGES`` of each).

    The fakes are generated once, ``batch_gpu`` at a time (what training fits in memory), and shared by
    every metric. Runs under a forked RNG so that metrics never change the training's random stream.
    """
    from .metrics import PatchSet, PixelSpread, diversity, fid, kid, patches_per_image, swd

    s, dev, cache = loop.settings, loop.device, loop.metric_cache
    chunk = max(1, min(s.batch_gpu, 64))
    count = min(s.metric_images, loop.dataset.num_frames)  # as many as metric_frames picks
    if not s.metrics:
        count = min(count, DIVERSITY_IMAGES)
    per_image = patches_per_image(count)
    want_swd = "swd" in s.metrics
    want_feats = any(m in s.metrics for m in FEATURE_METRICS)
    if "spread_reals" not in cache or (want_swd and "swd_reals" not in cache):
        spread, reals = PixelSpread(), PatchSet(per_image, s.seed)
        for batch in real_batches(loop, chunk):
            spread.add(batch)
            if want_swd:
                reals.add(batch)
        cache["spread_reals"] = spread
        if want_swd:
            cache["swd_reals"] = reals.descriptors()
    real_feats = real_features(loop, out) if want_feats else None
    fakes, fake_spread = PatchSet(per_image, s.seed), PixelSpread()
    fake_feats = []
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []), torch.no_grad():
        torch.manual_seed(s.seed + 4)
        for start in range(0, count, chunk):
            z = torch.randn(min(chunk, count - start), s.z_dim, device=dev)
            images = loop.G_ema(z, noise_mode="random").clamp(-1, 1)
            fake_spread.add(images)
            if want_swd:
                fakes.add(images)
            if want_feats:
                fake_feats.append(cache["feature_net"](images))
    result: dict[str, float] = {"diversity": round(diversity(cache["spread_reals"], fake_spread), 4)}
    if want_swd:
        result.update(swd(cache["swd_reals"], fakes.descriptors(), s.resolution, s.img_channels, seed=s.seed))
    if "fid" in s.metrics:
        result["fid"] = fid(real_feats, torch.cat(fake_feats))
    if "kid" in s.metrics:
        result["kid"] = kid(real_feats, torch.cat(fake_feats), seed=s.seed)
    return result
