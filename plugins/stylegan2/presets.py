"""Training presets and the resolution of the artist's options into one settings record.

The numbers are the StyleGAN2-ADA paper's ``train.py`` configurations (``stylegan2`` = config F,
``paper256``, and ``auto``, which scales with resolution), plus ``tiny`` for CPU demos and tests.
This module imports neither torch nor numpy: the plugin module uses it at start-up.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypedDict

from cineml import CinemlError, Option

CONFIGS = ("auto", "stylegan2", "paper256", "tiny")
METRICS = ("swd", "fid", "kid")
AUGMENTS = ("ada", "fixed", "diffaugment", "none")
LOSSES = ("logistic", "relativistic")
FEATURE_METRICS = ("fid", "kid")  # need the artist's feature network (option ``inception``)
MISSING_INCEPTION = (
    "FID and KID need a feature network as a TorchScript file on this machine, which CineML never downloads: "
    "set inception = \"path/to/inception-2015-12-05.pt\" in [train] (NVIDIA's Inception-v3 TorchScript, the one "
    "the StyleGAN2-ADA and StyleGAN3 metrics use), or remove \"fid\" and \"kid\" from metrics.")

# Per-config values. None: computed by the ``auto`` formulas from the resolution. style_mixing, pl_weight and
# augment_p are the reference's 0.9, 2 and 0 in every preset (a preset may set its own); dlr_ratio is D's
# learning rate over G's (1: the reference's single lr); loss is the reference's logistic loss.
_REFERENCE = dict(style_mixing=0.9, pl_weight=2.0, augment_p=0.0, mode_seeking=0.0, dlr_ratio=1.0, loss="logistic")
_SPECS: dict[str, dict[str, Any]] = {
    "stylegan2": dict(kimg=25000, snapshot_kimg=200, batch=32, mbstd_group=4, channel_base=32768,
                      channel_max=512, map_layers=8, lr=0.002, gamma=10.0, ema_kimg=10.0, ema_rampup=None,
                      **_REFERENCE),
    "paper256": dict(kimg=25000, snapshot_kimg=200, batch=64, mbstd_group=8, channel_base=16384,
                     channel_max=512, map_layers=8, lr=0.0025, gamma=1.0, ema_kimg=20.0, ema_rampup=None,
                     **_REFERENCE),
    # snapshot_kimg 50, not the reference's 200: artists animate the fakes grids, so more snapshots
    # make a smoother film of the training (docs/training.md, "Presets").
    "auto": dict(kimg=25000, snapshot_kimg=50, batch=None, mbstd_group=None, channel_base=None,
                 channel_max=512, map_layers=2, lr=None, gamma=None, ema_kimg=None, ema_rampup=0.05, **_REFERENCE),
    # Small enough that a 32x32 run shows shapes within minutes on two CPU cores. Short runs: no style mixing
    # or path-length penalty (a step costs 0.78x, and neither helps in a thousand steps), G learning at three
    # times D's rate (0.0075 against 0.0025), a light mode-seeking term against collapse onto one picture,
    # the relativistic loss with R1 + R2, and four mapping layers, which let G keep a film's shots apart
    # (docs/training.md#short-runs has the measurements).
    "tiny": dict(kimg=20, snapshot_kimg=1, batch=8, mbstd_group=4, channel_base=512, channel_max=64,
                 map_layers=4, lr=0.0075, gamma=None, ema_kimg=None, ema_rampup=0.05,
                 **{**_REFERENCE, "style_mixing": 0.0, "pl_weight": 0.0, "mode_seeking": 0.1, "dlr_ratio": 1 / 3,
                    "loss": "relativistic"}),
}


def _positive_pair(value: object) -> str | None:
    if value is None:
        return None
    if not (isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) and v > 0 for v in value)):
        return "must be two positive integers: [columns, rows], e.g. [8, 4]"
    return None


def _metric_names(value: object) -> str | None:
    unknown = [v for v in value if v not in METRICS] if isinstance(value, (list, tuple)) else [value]
    if unknown:
        return (f"unknown metric {unknown[0]!r}; expected a list of metric names from: {', '.join(METRICS)} "
                "(e.g. [\"swd\"]), or [] for none")
    return None


_PRESET = "(default: from the preset chosen by config)"


def _reference(key: str) -> str:
    value = _REFERENCE[key]
    shown = repr(value) if isinstance(value, str) else f"{value:g}"
    return f"(default: from the preset; {shown} in the paper's configurations)"


#: The trainer's options: declarations, defaults and checks (the values behind None come from the preset).
TRAIN_OPTIONS = (
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
    Option("lr", float, None, min=0, help=f"Adam learning rate of G, and of D unless dlr is set {_PRESET}."),
    Option("dlr", float, None, min=0,
           help="Adam learning rate of D (default: lr in the paper's configurations; lr / 3 in tiny, where a "
                "generator learning faster than its critic made short runs learn the film sooner)."),
    Option("ema_kimg", float, None, min=0, help=f"Half-life of the generator's moving average {_PRESET}."),
    Option("mirror", bool, False, help="Also train on left-right mirrored frames (doubles the data)."),
    Option("balance", str, "frame", choices=("frame", "shot"),
           help="frame: every frame as often as any other; shot: every shot as often as any other (each frame "
                "drawn with weight 1 / its shot's length), so a few long takes do not dominate. shot needs frames "
                "extracted with [extract] shots = true."),
    Option("seed", int, None, help="Random seed (default: the project's seed)."),
    Option("channel_base", int, None, min=16,
           help=f"Feature maps per layer are min(channel_base / resolution, channel_max) {_PRESET}."),
    Option("channel_max", int, None, min=1, help=f"Most feature maps in any layer {_PRESET}."),
    Option("map_layers", int, None, min=1, max=16, help=f"Layers in the mapping network {_PRESET}."),
    Option("mbstd_group", int, None, min=1, help=f"Minibatch-stddev group size {_PRESET}."),
    Option("style_mixing", float, None, min=0, max=1,
           help=f"Probability of style mixing per batch {_reference('style_mixing')}."),
    Option("pl_weight", float, None, min=0,
           help=f"Path-length regularisation weight, 0 turns it off {_reference('pl_weight')}."),
    Option("mode_seeking", float, None, min=0,
           help="Weight of the mode-seeking term (Mao et al. 2019): G is rewarded for making images that differ "
                "as much as their latents do, against collapse onto one image in short runs; 0 turns it off "
                f"{_reference('mode_seeking')}."),
    Option("loss", str, None, choices=LOSSES,
           help="'logistic': StyleGAN2's non-saturating loss with R1 on the frames; 'relativistic': D scores "
                "each frame against a generated image, D(frame) - D(image), with R1 and R2 (R3GAN, Huang et "
                "al. 2024): fewer collapsed runs in short trainings (docs/training.md#short-runs) "
                f"{_reference('loss')}."),
    Option("keep", int, 3, continues=True, min=0, help="Checkpoints to keep (older ones are deleted; 0 keeps all)."),
    Option("tensorboard", bool, False, continues=True,
           help="Also log every snapshot's statistics and fakes grid for TensorBoard, in train/tensorboard/ "
                "(needs the tensorboard package: pip install tensorboard; then tensorboard --logdir that folder)."),
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
                f"{_reference('augment_p')}."),
    Option("ada_target", float, 0.6, min=0, max=1,
           help="ADA raises p while the share of reals D scores positive (E[sign D(x)]; relativistic loss: "
                "E[sign(D(x) - D(G(z)))]) exceeds this."),
    Option("ada_kimg", float, None, min=0.001,
           help="ADA speed: p can move by 1 in this many kimg (default: min(500, max(kimg / 5, 100)), so that p "
                "reacts within runs shorter than the paper's; min(100, max(kimg / 5, 20)) when resume is set)."),
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


DEFAULTS = {o.name: o.default for o in TRAIN_OPTIONS}


@dataclass
class Settings:
    """Everything a training run needs, resolved from preset + options + dataset; stored in checkpoints."""

    config: str
    resolution: int
    img_channels: int
    kimg: float
    snapshot_kimg: float
    batch: int
    batch_gpu: int
    mbstd_group: int
    channel_base: int
    channel_max: int
    map_layers: int
    lr: float  # G's
    dlr: float  # D's
    gamma: float
    ema_kimg: float
    ema_rampup: float | None
    mirror: bool
    seed: int
    balance: str  # "frame" or "shot"
    keep: int
    tensorboard: bool
    device: str
    grid: tuple[int, int]
    style_mixing: float
    pl_weight: float
    mode_seeking: float
    loss: str  # one of LOSSES
    augment: str  # one of AUGMENTS
    augment_p: float  # initial (ada) or constant (fixed) augmentation probability
    ada_target: float
    ada_kimg: float
    metric_images: int
    resume: str | None = None
    z_dim: int = 512
    w_dim: int = 512
    ada_interval: int = 4
    precision: str = "fp32"  # resolved: "fp32" or "bf16"
    num_fp16_res: int = 4
    compile: bool = False
    gpus: int = 1  # processes sharing the batch (world size)
    metrics: tuple[str, ...] = ()
    inception: str | None = None  # TorchScript feature network for FID/KID
    pl_decay: float = 0.01
    pl_batch_shrink: int = 2
    g_reg_interval: int = 4
    d_reg_interval: int = 16
    betas: tuple[float, float] = (0.0, 0.99)
    eps: float = 1e-8

    # Settings that define the network shapes: a checkpoint must agree on them to be resumed.
    ARCH_KEYS = ("resolution", "img_channels", "channel_base", "channel_max", "map_layers", "z_dim", "w_dim")

    @property
    def g_kwargs(self) -> dict[str, Any]:
        return dict(z_dim=self.z_dim, w_dim=self.w_dim, img_resolution=self.resolution,
                    img_channels=self.img_channels, channel_base=self.channel_base,
                    channel_max=self.channel_max, map_layers=self.map_layers)

    @property
    def d_kwargs(self) -> dict[str, Any]:
        return dict(img_resolution=self.resolution, img_channels=self.img_channels,
                    channel_base=self.channel_base, channel_max=self.channel_max,
                    mbstd_group_size=self.mbstd_group)

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["grid"], d["betas"], d["metrics"] = list(self.grid), list(self.betas), list(self.metrics)
        return d


def default_grid(resolution: int) -> tuple[int, int]:
    """The reference's snapshot grid (an ~8K x 4K mosaic), capped at 16 x 9 below 128 px so grids stay quick."""
    gw = max(7, min(7680 // resolution, 32))
    gh = max(4, min(4320 // resolution, 32))
    if resolution < 128:
        gw, gh = min(gw, 16), min(gh, 9)
    return gw, gh


def auto_values(resolution: int, gpus: int = 1) -> dict[str, Any]:
    """The ``auto`` config's formulas (StyleGAN2-ADA ``train.py``)."""
    batch = max(min(gpus * min(4096 // resolution, 32), 64), gpus)
    return dict(batch=batch, mbstd_group=min(batch // gpus, 4),
                channel_base=32768 if resolution >= 512 else 16384,
                lr=0.002 if resolution >= 1024 else 0.0025,
                gamma=0.0002 * resolution ** 2 / batch, ema_kimg=batch * 10 / 32)


class _Dims(TypedDict, total=False):
    """The ``Settings`` network sizes a network we continue from fixes."""

    z_dim: int
    w_dim: int


def resolve(options: dict[str, Any], resolution: int, img_channels: int, project_seed: int = 0,
            device: str = "cpu", arch_from: dict[str, Any] | None = None, arch_source: str = "",
            world: int = 1, bf16_supported: bool = False,
            error: Callable[[str, str], Exception] | None = None) -> Settings:
    """Preset values overridden by every option the artist set (``None`` means "from the preset").

    ``arch_from`` holds the settings of a network we continue from (``arch_source`` says which, for
    messages): its architecture is used unless the options name one explicitly (then they must agree).
    ``world`` processes share the (global) batch; ``bf16_supported`` says the device runs bf16 fast.
    ``error(key, message)`` makes the exception for a bad option (the stage's ``ctx.error``, which words
    it like every manifest error). Values are checked against the declarations in TRAIN_OPTIONS here
    too, because benchmarks and tests call this without a manifest.
    """
    fail = error or (lambda key, message: CinemlError(f"train.{key}: {message}"))
    for opt in TRAIN_OPTIONS:
        value = options.get(opt.name)
        if value is None:
            continue
        if opt.choices and value not in opt.choices:
            raise fail(opt.name, f"{value!r} is not valid; expected {opt.describe_type()}.")
        problem = opt.check(value) if opt.check else None
        if problem:
            raise fail(opt.name, f"{value!r} is not valid: {problem}")
    config = given(options, "config")
    spec = dict(_SPECS[config])
    auto = auto_values(resolution, world)
    for key, value in spec.items():
        if value is None and key in auto:
            spec[key] = auto[key]

    def pick(key: str) -> Any:
        value = options.get(key)
        return spec[key] if value is None else value

    batch = int(pick("batch"))
    if config in ("auto", "tiny"):  # these scale gamma and the EMA half-life with the batch actually used
        spec["gamma"] = 0.0002 * resolution ** 2 / batch
        spec["ema_kimg"] = batch * 10 / 32
    if batch % world:
        raise fail("batch", f"{batch} cannot be split evenly over {world} GPUs/processes; pick a batch that is "
                            f"a multiple of {world}.")
    per_rank = batch // world
    batch_gpu = int(options.get("batch_gpu") or per_rank)
    if per_rank % batch_gpu:
        where = f"batch / gpus = {per_rank}" if world > 1 else f"batch = {batch}"
        raise fail("batch_gpu", f"{where} is not a multiple of batch_gpu = {batch_gpu}; pick a batch_gpu that "
                                "divides the batch.")
    arch = {k: pick(k) for k in ("channel_base", "channel_max", "map_layers")}
    if arch_from:
        for key in [k for k in arch if k in arch_from]:
            if options.get(key) is not None and options[key] != arch_from[key]:
                raise fail(key, f"{options[key]} disagrees with the network of {arch_source} ({key} = "
                                f"{arch_from[key]}); remove {key} from [train] so that network's architecture is "
                                "used, or start over in a fresh training folder.")
            arch[key] = arch_from[key]
    grid = options.get("grid") or default_grid(resolution)
    seed = options.get("seed")
    precision = given(options, "precision")
    if precision == "auto":
        precision = "bf16" if device == "cuda" and bf16_supported else "fp32"
    augment = given(options, "augment")
    metrics = tuple(options.get("metrics") or ())
    inception = options.get("inception")
    wants = [m for m in metrics if m in FEATURE_METRICS]
    if wants and not inception:
        raise fail("metrics", f"{list(metrics)!r} asks for {' and '.join(wants)} but inception is not set. "
                              f"{MISSING_INCEPTION}")
    ada_kimg = options.get("ada_kimg")
    lr = float(pick("lr"))
    dlr = float(options["dlr"]) if options.get("dlr") is not None else round(lr * spec["dlr_ratio"], 12)
    dims: _Dims = {}  # sizes the network we continue from fixes (Settings' defaults otherwise)
    if arch_from and "z_dim" in arch_from:
        dims["z_dim"] = int(arch_from["z_dim"])
    if arch_from and "w_dim" in arch_from:
        dims["w_dim"] = int(arch_from["w_dim"])
    return Settings(
        **dims,
        config=config, resolution=resolution, img_channels=img_channels,
        kimg=float(pick("kimg")), snapshot_kimg=float(pick("snapshot_kimg")), batch=batch, batch_gpu=batch_gpu,
        mbstd_group=int(options.get("mbstd_group") or spec["mbstd_group"]),
        channel_base=int(arch["channel_base"]), channel_max=int(arch["channel_max"]),
        map_layers=int(arch["map_layers"]), lr=lr, dlr=dlr, gamma=float(pick("gamma")),
        ema_kimg=float(pick("ema_kimg")),
        ema_rampup=None if options.get("resume") else spec["ema_rampup"],
        mirror=bool(given(options, "mirror")), seed=int(project_seed if seed is None else seed),
        balance=str(given(options, "balance")),
        keep=int(given(options, "keep")), tensorboard=bool(given(options, "tensorboard")), device=device,
        grid=(int(grid[0]), int(grid[1])),
        resume=None if options.get("resume") is None else str(options["resume"]),
        style_mixing=float(pick("style_mixing")), pl_weight=float(pick("pl_weight")),
        mode_seeking=float(pick("mode_seeking")), loss=str(pick("loss")),
        augment=augment, augment_p=float(pick("augment_p")),
        ada_target=float(given(options, "ada_target")),
        ada_kimg=float(ada_kimg if ada_kimg is not None
                       else ada_speed(float(pick("kimg")), bool(options.get("resume")))),
        precision=precision, compile=bool(given(options, "compile")), gpus=world, metrics=metrics,
        metric_images=int(given(options, "metric_images")),
        inception=None if inception is None else str(inception))


def ada_speed(kimg: float, resume: bool = False) -> float:
    """ADA's default adjustment speed: p may move by 1 over this many kimg.

    The paper's 500 kimg (100 when fine-tuning a trained network) is made for runs of thousands of kimg:
    in a 200-kimg evening on a GPU p could reach 0.4 at most, however much D overfits. So a run shorter
    than 2500 kimg lets p move by 1 within a fifth of its planned length, but never faster than by 1 in
    100 kimg (20 when resuming): measured on the README demo (benchmarks/learns.py), letting p move by 1
    in 2 kimg made a 10-kimg run's images grainier and further from the film (SWD 197 against 84), and
    the real clip gained nothing; a run of a thousand steps has no time to see through augmentations.
    Runs of 2500 kimg or more (500 when resuming) keep the paper's pace exactly.
    """
    return min(100.0, max(kimg / 5, 20.0)) if resume else min(500.0, max(kimg / 5, 100.0))


def given(options: dict[str, Any], key: str) -> Any:
    """The option's value, or its declared default (TRAIN_OPTIONS is the one place defaults are stated)."""
    value = options.get(key)
    return DEFAULTS[key] if value is None else value


def expected_cpu_note(settings: Settings, sec_per_kimg: float, threads: int, done_kimg: float = 0.0) -> str:
    """One line telling the artist what CPU training costs at this size, and how long what is left takes."""
    left_kimg = max(settings.kimg - done_kimg, 0)
    left = left_kimg * sec_per_kimg
    span = f"{left / 3600:.1f} h" if left >= 3600 else f"{math.ceil(left / 60)} min"
    todo = (f"the {left_kimg:g} kimg left of kimg = {settings.kimg:g} take" if done_kimg > 0
            else f"kimg = {settings.kimg:g} takes")
    return (f"Training on the CPU ({threads} thread{'' if threads == 1 else 's'}): about {sec_per_kimg:.0f} s "
            f"per kimg at {settings.resolution}x{settings.resolution}, so {todo} about {span}; "
            "a CUDA GPU is typically 50-200x faster.")


def suggest_for_film(film: Any) -> dict[str, tuple[Any, str]]:
    """Size, preset and length of a first training run on ``film`` for this machine (``cineml new --film``).

    On a CUDA GPU: the largest power of two that does not enlarge the film, between 64 and 512 px, with
    the ``auto`` preset for 2000 kimg (an evening or a night on one recent GPU at 512 px). On a CPU: the
    README demo's sketch, 32 px with ``tiny`` for 16 kimg (a few minutes), to see the pipeline work first.
    """
    import torch

    from cineml_plugins.ffmpeg import probe

    if not torch.cuda.is_available():
        why = "no CUDA GPU here: a 32 px sketch in a few minutes on the CPU (use a GPU and size 512 for the film)"
        return {"preprocess.0.size": (32, why), "train.config": ("tiny", why), "train.kimg": (16, why),
                "train.snapshot_kimg": (0.5, why)}
    info = probe(film)
    side = max(info.display_width, info.display_height)
    size = max(64, min(512, 2 ** int(math.log2(side))))
    gpu = torch.cuda.get_device_name(0)
    why = f"{gpu}: {size} px (the film is {info.display_width}x{info.display_height}), StyleGAN2-ADA's auto preset"
    return {"preprocess.0.size": (size, why), "train.config": ("auto", why),
            "train.kimg": (2000, f"{gpu}: a first run of an evening or a night; raise it to continue"),
            "train.snapshot_kimg": (50, why)}
