"""The StyleGAN2 training loop: one ``step()`` per batch, EMA, and everything a checkpoint needs to continue.

One iteration ("step") shows ``batch`` real images and runs, as in the paper's lazy-regularisation
schedule: G main loss; every 4th step the path-length penalty (x4); D main loss; every 16th step R1
(x16; with the relativistic loss, R1 + R2). Each phase is its own optimiser step. After the step the EMA
generator follows G.

Resumption is exact on the CPU: a checkpoint holds the networks, Adam states, ``pl_mean``, the RNG
state, the data sampler's position and the image count, and snapshots never draw from the global
RNG, so "run to 2 kimg" and "run to 1 kimg, stop, run to 2 kimg" give identical weights.

ADA (augment.py) augments everything D sees; its probability ``p`` and sign statistics are
checkpointed too. With several processes (distributed.py) every rank runs this same loop on its
share of the batch; gradients, running averages and statistics are averaged over ranks. The stage
around it (snapshots, files, resuming) is training.py; who runs it on which process is launch.py.
"""

from __future__ import annotations

import contextlib
import copy
import re
import types
from collections.abc import Callable, Iterator
from typing import Any, cast

import numpy as np
import torch

from cineml import CinemlError

from . import checkpoints as ckpt
from .augment import AdaController, AugmentPipe, DiffAugment
from .dataset import FrameDataset
from .distributed import Sync
from .loss import StyleGAN2Loss
from .networks import Discriminator, Generator
from .presets import Settings


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
            raise CinemlError(f"train.batch: {s.batch} does not split into {self.world} process(es) of whole "
                              f"batch_gpu = {s.batch_gpu} chunks; pick a batch that is a multiple of both.")
        torch.manual_seed(s.seed)  # identical networks on every rank
        self.tf32 = True  # the main phases may use TF32 (see math_flags); False: full fp32 throughout
        self.G = Generator(**s.g_kwargs).to(device).train().requires_grad_(False)
        self.D = Discriminator(**s.d_kwargs).to(device).train().requires_grad_(False)
        if device.type == "cuda":
            self.G.to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # torch's stubs lack it
            self.D.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        self.G_ema = copy.deepcopy(self.G).eval()  # snapshots and metrics sample it in fp32
        amp = torch.bfloat16 if s.precision == "bf16" else None
        self.G.set_precision(amp, s.num_fp16_res)
        self.D.set_precision(amp, s.num_fp16_res)
        self.augment: AugmentPipe | DiffAugment | None = None
        self.ada: AdaController | None = None
        if s.augment == "diffaugment":
            self.augment = DiffAugment()
        elif s.augment != "none":
            self.augment = pipe = AugmentPipe(p=s.augment_p)
            if s.augment == "ada":
                self.ada = AdaController(pipe, s.ada_target, s.ada_kimg, s.batch, s.ada_interval)
        self.loss = StyleGAN2Loss(self.G, self.D, s.gamma, s.style_mixing, s.pl_weight, s.pl_decay,
                                  s.pl_batch_shrink, augment=self.augment, mode_seeking=s.mode_seeking,
                                  relativistic=s.loss == "relativistic")
        if s.compile:
            synthesis = torch.compile(self.G.synthesis)
            # ws are a broadcast view without style mixing and a new tensor with it: give the compiled
            # graph one memory layout, or it recompiles whenever the coin first falls the other way.
            self.loss.G_main = cast(Generator, types.SimpleNamespace(  # G's two halves, as run_generator calls them
                mapping=self.G.mapping, synthesis=lambda ws, **kw: synthesis(ws.contiguous(), **kw)))
            self.loss.D_main = cast(torch.nn.Module, torch.compile(self.D))
        self.G_opt = self._adam(self.G, s.lr, s.g_reg_interval)
        self.D_opt = self._adam(self.D, s.dlr, s.d_reg_interval)
        self.sampler = Sampler(len(dataset), s.seed, weights=dataset.weights(s.balance))
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

    def _adam(self, module: torch.nn.Module, lr: float, reg_interval: int) -> torch.optim.Optimizer:
        """Adam with lr and betas corrected for lazy regularisation: c = I / (I + 1)."""
        s = self.settings
        c = reg_interval / (reg_interval + 1)
        lr, betas = lr * c, (s.betas[0] ** c, s.betas[1] ** c)
        try:
            return torch.optim.Adam(module.parameters(), lr=lr, betas=betas, eps=s.eps, fused=True)
        except (RuntimeError, TypeError):  # fused Adam unsupported on this device/build
            return torch.optim.Adam(module.parameters(), lr=lr, betas=betas, eps=s.eps, foreach=True)

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
        # G main: fool D (non-saturating or relativistic loss; plus mode seeking when on).
        with math_flags(tf32=self.tf32):
            self._phase(self.G, self.G_opt, lambda i: L.g_main(z(), reals[i]), 1.0, stats)
        # G reg, every 4th step: path-length penalty, x4 (lazy regularisation); double backward in fp32.
        if s.pl_weight > 0 and self.step_idx % s.g_reg_interval == 0:
            with math_flags(tf32=False):
                self._phase(self.G, self.G_opt, lambda i: L.g_reg(z()), s.g_reg_interval, stats)
        # D main: tell the frames from G's images (logistic or relativistic loss; ADA augments both).
        with math_flags(tf32=self.tf32):
            self._phase(self.D, self.D_opt, lambda i: L.d_main(z(), reals[i]), 1.0, stats)
        # D reg, every 16th step: R1 on the frames (relativistic: + R2 on G's images), x16; double backward in fp32.
        if s.gamma > 0 and self.step_idx % s.d_reg_interval == 0:
            with math_flags(tf32=False):
                self._phase(self.D, self.D_opt, lambda i: L.d_reg(reals[i]), s.d_reg_interval, stats)
        # Running averages follow the whole batch, so every rank keeps the same ones; then the EMA generator.
        if self.sync.active:
            self.sync.mean_([self.G.mapping.w_avg, self.loss.pl_mean])
        self.update_ema()
        self.nimg += s.batch
        self.step_idx += 1
        # Statistics, and ADA's reaction to D's overconfidence on the frames.
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
        self.sampler = Sampler(len(self.dataset), self.settings.seed, epoch, cursor,
                               self.dataset.weights(self.settings.balance))
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


# --- What the loop needs ------------------------------------------------------------------------


class Sampler:
    """Endless passes over the dataset; its whole state is (epoch, cursor).

    A pass is a shuffle of every index, or with ``weights`` ``size`` draws with those relative weights (with
    replacement): either way a function of (seed, epoch) alone, so a resumed run draws what the run it
    continues would have drawn.
    """

    def __init__(self, size: int, seed: int, epoch: int = 0, cursor: int = 0,
                 weights: np.ndarray | None = None) -> None:
        self.size, self.seed, self.epoch, self.cursor = size, seed, epoch, cursor
        self.p = None if weights is None else np.asarray(weights, dtype=np.float64) / np.sum(weights)
        self._perm: tuple[int, np.ndarray] | None = None

    def _permutation(self) -> np.ndarray:
        if self._perm is None or self._perm[0] != self.epoch:
            rng = np.random.default_rng([self.seed, self.epoch])
            drawn = rng.permutation(self.size) if self.p is None else rng.choice(self.size, self.size, p=self.p)
            self._perm = (self.epoch, drawn)
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
