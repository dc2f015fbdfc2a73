"""The StyleGAN2 training loop: phases, EMA, snapshots, checkpoints and exact resumption.

One iteration ("step") shows ``batch`` real images and runs, as in the paper's lazy-regularisation
schedule: G main loss; every 4th step the path-length penalty (x4); D main loss; every 16th step R1
(x16). Each phase is its own optimiser step. After the step the EMA generator follows G.

Resumption is exact on the CPU: a checkpoint holds the networks, Adam states, ``pl_mean``, the RNG
state, the data sampler's position and the image count, and snapshots never draw from the global
RNG, so "run to 2 kimg" and "run to 1 kimg, stop, run to 2 kimg" give identical weights.
"""

from __future__ import annotations

import copy
import json
import math
import resource
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from PIL import Image

from cineml import CinemlError, StageContext, atomic_path

from . import checkpoints as ckpt
from .dataset import FrameDataset, open_frames, remove_cache
from .loss import StyleGAN2Loss
from .networks import Discriminator, Generator
from .presets import Settings, expected_cpu_note, resolve

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
            perm = self._permutation()
            part = perm[self.cursor:self.cursor + count]
            out.append(part)
            count -= len(part)
            self.cursor += len(part)
            if self.cursor == self.size:
                self.epoch, self.cursor = self.epoch + 1, 0
        return np.concatenate(out)

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "cursor": self.cursor}


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


def memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2 ** 20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --- The training state ---------------------------------------------------------------------------


class TrainingLoop:
    """Networks, optimisers, loss and counters of one run; ``step()`` trains one batch."""

    def __init__(self, settings: Settings, dataset: FrameDataset, device: torch.device | str = "cpu") -> None:
        s = self.settings = settings
        self.dataset = dataset
        self.device = device = torch.device(device)
        torch.manual_seed(s.seed)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
            torch.backends.cudnn.benchmark = True
        self.G = Generator(**s.g_kwargs).to(device).train().requires_grad_(False)
        self.D = Discriminator(**s.d_kwargs).to(device).train().requires_grad_(False)
        if device.type == "cuda":
            self.G.to(memory_format=torch.channels_last)
            self.D.to(memory_format=torch.channels_last)
        self.G_ema = copy.deepcopy(self.G).eval()
        self.loss = StyleGAN2Loss(self.G, self.D, s.gamma, s.style_mixing, s.pl_weight, s.pl_decay,
                                  s.pl_batch_shrink)
        self.G_opt = self._adam(self.G, s.g_reg_interval)
        self.D_opt = self._adam(self.D, s.d_reg_interval)
        self.sampler = Sampler(len(dataset), s.seed)
        self.nimg = 0  # images shown so far
        self.step_idx = 0
        self.snapshot_nimg = 0  # nominal image count of the last snapshot

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
        frames = torch.from_numpy(self.dataset.get(self.sampler.take(self.settings.batch)))
        x = frames.to(self.device, non_blocking=True).float().div_(127.5).sub_(1)
        if self.device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _phase(self, module: torch.nn.Module, opt: torch.optim.Optimizer, objective: Callable[[int], Any],
               gain: float, stats: dict[str, list[torch.Tensor]]) -> None:
        s = self.settings
        chunks = s.batch // s.batch_gpu
        module.requires_grad_(True)
        opt.zero_grad(set_to_none=True)
        for i in range(chunks):
            loss, st = objective(i)
            loss.mul(gain / chunks).backward()
            for k, v in st.items():
                stats.setdefault(k, []).append(v)
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
        self._phase(self.G, self.G_opt, lambda i: L.g_main(z()), 1.0, stats)
        if s.pl_weight > 0 and self.step_idx % s.g_reg_interval == 0:
            self._phase(self.G, self.G_opt, lambda i: L.g_reg(z()), s.g_reg_interval, stats)
        self._phase(self.D, self.D_opt, lambda i: L.d_main(z(), reals[i]), 1.0, stats)
        if s.gamma > 0 and self.step_idx % s.d_reg_interval == 0:
            self._phase(self.D, self.D_opt, lambda i: L.d_reg(reals[i]), s.d_reg_interval, stats)
        self.update_ema()
        self.nimg += s.batch
        self.step_idx += 1
        return {k: torch.stack(v).mean() for k, v in stats.items()}

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

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        t: dict[str, torch.Tensor] = {}
        for name, net in (("G", self.G), ("D", self.D), ("G_ema", self.G_ema)):
            t.update({f"{name}.{k}": v for k, v in net.state_dict().items()})
        for name, net, opt in (("G_opt", self.G, self.G_opt), ("D_opt", self.D, self.D_opt)):
            for pname, p in net.named_parameters():
                for k, v in opt.state.get(p, {}).items():
                    t[f"{name}.{pname}.{k}"] = torch.as_tensor(v)
        t["loss.pl_mean"] = self.loss.pl_mean
        t["rng.torch"] = torch.get_rng_state()
        if self.device.type == "cuda":
            for i, st in enumerate(torch.cuda.get_rng_state_all()):
                t[f"rng.cuda{i}"] = st
        return t

    def checkpoint_state(self) -> dict[str, Any]:
        return {"settings": self.settings.to_json(), "G_kwargs": self.G.init_kwargs, "D_kwargs": self.D.init_kwargs,
                "nimg": self.nimg, "snapshot_nimg": self.snapshot_nimg, "kimg": self.snapshot_nimg / 1000,
                "step": self.step_idx, "data": self.sampler.state()}

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

    def restore(self, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
        """Continue exactly where a checkpoint of this run left off."""
        self.load_networks(tensors)
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
        torch.set_rng_state(tensors["rng.torch"])
        if self.device.type == "cuda":
            states = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda"))]
            if len(states) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(states)
        self.nimg, self.step_idx = int(state["nimg"]), int(state["step"])
        self.snapshot_nimg = int(state["snapshot_nimg"])
        self.sampler = Sampler(len(self.dataset), self.settings.seed, **state["data"])


# --- The stage ------------------------------------------------------------------------------------


def _check_compatible(settings: Settings, saved: dict[str, Any], path: Path, warn: Callable[[str], None]) -> None:
    arch = [k for k in Settings.ARCH_KEYS if saved.get(k) != getattr(settings, k)]
    if arch:
        diff = ", ".join(f"{k} {saved.get(k)} -> {getattr(settings, k)}" for k in arch)
        raise CinemlError(f"The training folder {path.parent} holds checkpoints of a different network ({diff}), so "
                          f"this run cannot continue from {path.name}. Delete that folder to start over, or set "
                          "[train] options back to the earlier values.")
    now = settings.to_json()
    changed = [k for k in now if k not in Settings.ARCH_KEYS + Settings.FREE_KEYS and saved.get(k) != now[k]]
    if changed:
        warn("Continuing the interrupted training with changed settings: "
             + ", ".join(f"{k} {saved.get(k)} -> {now[k]}" for k in changed) + ".")


def _trim_stats(path: Path, nimg: int) -> None:
    """Drop stats lines past the checkpoint we resume from (and any line cut short by a kill)."""
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
    """The ``stylegan2`` trainer: frames folder -> snapshots in ``ctx.output`` (resuming when possible)."""
    opts = ctx.options
    out = Path(ctx.output)
    out.mkdir(parents=True, exist_ok=True)
    if "frames" not in ctx.inputs:
        raise CinemlError("The stylegan2 trainer needs the frames folder (inputs['frames']); run the extract stage.")
    for stale in out.glob(".*.tmp*"):  # half-written files of a killed run (see cineml.atomic_path)
        if stale.is_file():
            stale.unlink(missing_ok=True)
    device = pick_device(opts.get("device") or "auto")
    dataset = open_frames(Path(ctx.inputs["frames"]), out, mirror=bool(opts.get("mirror")), log=ctx.log)

    own = ckpt.list_checkpoints(out)
    source = saved = None
    arch_source = ""
    if own:
        saved = ckpt.read_state(own[-1])["settings"]
        arch_source = f"the interrupted run's checkpoint {own[-1]}"
    elif opts.get("resume"):
        source = _load_transfer_source(Path(opts["resume"]), dataset, opts["resume"])
        saved = source[1]["settings"]
        arch_source = f"resume = {str(opts['resume'])!r}"
    arch_from = None if saved is None else {k: saved[k] for k in ARCH_FROM if k in saved}
    settings = resolve(opts, dataset.resolution, dataset.channels, ctx.project.seed, device.type, arch_from,
                       arch_source)

    loop = TrainingLoop(settings, dataset, device)
    if own:
        tensors, state = ckpt.load_checkpoint(own[-1])
        _check_compatible(settings, state["settings"], own[-1], ctx.warn)
        loop.restore(tensors, state)
        _trim_stats(out / STATS_NAME, loop.nimg)
        ctx.log(f"Resuming training from {own[-1].name} at {loop.nimg / 1000:g} kimg.")
    elif source is not None:
        tensors = source[0]
        if not any(k.startswith("G.") for k in tensors):  # imported files may hold only the EMA generator
            tensors.update({"G." + k: v for k, v in ckpt.sub_state(tensors, "G_ema.").items()})
        nets = ("G", "D", "G_ema")
        if not any(k.startswith("D.") for k in tensors):
            ctx.warn(f"resume = {str(opts['resume'])!r} has no discriminator; D starts from scratch.")
            nets = ("G", "G_ema")
        loop.load_networks(tensors, nets, where=str(opts["resume"]))
        ctx.log(f"Transfer learning from {opts['resume']} (kimg restarts at 0).")
    with atomic_path(out / OPTIONS_NAME) as tmp:
        tmp.write_text(json.dumps(settings.to_json(), indent=2))
    _run(ctx, loop, out, fresh=not own)
    remove_cache(out)


def _run(ctx: StageContext, loop: TrainingLoop, out: Path, fresh: bool) -> None:
    s = loop.settings
    gw, gh = s.grid
    grid_z = torch.randn(gw * gh, s.z_dim, generator=torch.Generator().manual_seed(s.seed + 1))
    if fresh or not (out / "reals.png").exists():
        reals = loop.dataset.get(loop.dataset.grid_indices(gw * gh))
        save_png(to_uint8_grid(torch.from_numpy(reals).float() / 127.5 - 1, s.grid), out / "reals.png")
    if fresh:
        save_png(to_uint8_grid(loop.generate_grid(grid_z), s.grid), out / ckpt.fakes_name(0))

    total = max(int(round(s.kimg * 1000)), 0)
    snap = max(int(round(s.snapshot_kimg * 1000)), 1)
    if loop.nimg >= total:
        ctx.log(f"Training already reached {loop.nimg / 1000:g} kimg (kimg = {s.kimg:g}); nothing to do.")
        return
    acc: dict[str, list[float]] = {}
    t_interval, n_interval = time.perf_counter(), loop.nimg
    t_info = 0.0
    cpu_note_due = loop.device.type == "cpu"
    t_first, n_first = None, 0
    with ctx.progress("Training", total=s.kimg, unit="kimg") as bar:
        bar.advance(loop.nimg / 1000)
        while loop.nimg < total:
            stats = loop.step()
            values = {k: float(v) for k, v in stats.items()}
            bad = [k for k in ("loss_G", "loss_D", "r1_penalty", "pl_penalty") if k in values
                   and not math.isfinite(values[k])]
            if bad:
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
                ctx.log(expected_cpu_note(s, spk, torch.get_num_threads()))
            now = time.perf_counter()
            if now - t_info > 1.0:
                t_info = now
                spk = (now - t_interval) / max(loop.nimg - n_interval, 1) * 1000
                bar.update(info=f"{spk:.1f} s/kimg  G {values.get('loss_G', 0):.3f}  D {values.get('loss_D', 0):.3f}")
            if loop.nimg >= total or loop.nimg >= (loop.snapshot_nimg // snap + 1) * snap:
                nominal = total if loop.nimg >= total else loop.nimg // snap * snap
                elapsed = time.perf_counter() - t_interval
                shown = loop.nimg - n_interval
                _snapshot(ctx, loop, out, nominal, grid_z, acc, elapsed, shown)
                acc, t_interval, n_interval = {}, time.perf_counter(), loop.nimg


def _snapshot(ctx: StageContext, loop: TrainingLoop, out: Path, nominal: int, grid_z: torch.Tensor,
              acc: dict[str, list[float]], elapsed: float, shown: int) -> None:
    """fakes grid -> stats line -> checkpoint -> prune -> hook (this order keeps a killed run consistent)."""
    s = loop.settings
    loop.snapshot_nimg = nominal
    fakes = out / ckpt.fakes_name(nominal)
    save_png(to_uint8_grid(loop.generate_grid(grid_z), s.grid), fakes)
    record: dict[str, Any] = {"kimg": nominal / 1000, "nimg": loop.nimg, "step": loop.step_idx}
    record.update({k: sum(v) / len(v) for k, v in sorted(acc.items())})
    record.update({"sec_per_kimg": elapsed / max(shown, 1) * 1000, "img_per_sec": shown / max(elapsed, 1e-9),
                   "memory_mb": round(memory_mb(loop.device), 1), "time": time.time()})
    with open(out / STATS_NAME, "a") as f:
        f.write(json.dumps(record) + "\n")
    path = out / ckpt.checkpoint_name(nominal)
    ckpt.save_checkpoint(path, loop.checkpoint_tensors(), loop.checkpoint_state())
    ckpt.prune(out, s.keep)
    ctx.snapshot_written(nominal / 1000, path, fakes)
