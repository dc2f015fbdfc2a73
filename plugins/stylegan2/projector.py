"""The ``projection`` generator: the film re-made by its own GAN, frame by frame.

For every frame (or every ``every``-th) of the input it finds the latent whose image is closest to the
frame, and renders that image. The first frame of each shot starts from the network's average w (a cold
start: ``first_steps`` steps, with noise added to w early on so the search can leave the average, as in
the StyleGAN2 paper's projector); each following frame starts from the latent found for the frame before
it (a warm start: ``steps`` steps), so consecutive re-made frames stay close and the re-made film is
smooth, at a fraction of the cost of a cold start per frame.

The loss is the mean squared pixel error at the network's resolution and at 1/2, 1/4 and 1/8 of it (the
coarse scales pull the layout into place before the detail). ``features`` adds a perceptual term: a
TorchScript feature network the artist provides (NVIDIA's VGG16 ``vgg16.pt`` is called as LPIPS; never
downloaded), or ``"discriminator"``, the trained discriminator's block activations.

The step's folder gets one PNG per re-made frame, named like the frame (``000123.png``); ``latents.npy``,
[N, num_ws, w_dim] float32 (w+ also for ``space = "w"``, whose rows are equal); ``projection.json`` with
every frame's loss, PSNR, steps and start; and ``index.json`` with the frames' film times and shots, so
labels, timecodes and the soundtrack line up with the film. Interrupted work resumes: a finished frame is
its PNG plus its latent in ``.latents/``, and a re-run continues after the last one.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from cineml import CinemlError, Generator, Option, StageContext, atomic_path, flatten, frame_facts

from .dataset import list_frames
from .pictures import pick_device, save_png, to_pil, to_uint8

if TYPE_CHECKING:
    import torch

SCALES = (1, 2, 4, 8)  # the pixel loss is taken at the full size and these fractions of it
W_SAMPLES = 2000  # mapped latents that give the average w and its spread
WARM_LR = 0.1  # a warm start's learning rate, as a share of ``lr`` (measured: at full lr the loss first rises
# fivefold; at a tenth, 10 warm steps beat 100 cold ones)
LATENTS = ".latents"  # finished frames' latents while the step runs
FEATURES_HINT = ("Give a TorchScript feature network (e.g. NVIDIA's vgg16.pt for LPIPS), \"discriminator\" for "
                 "the trained network's own, or leave features unset for the pixel loss alone.")


class ProjectionGenerator(Generator):
    """Re-make the film's frames with the trained network: find each frame's latent, warm-started from the last."""

    name = "projection"
    options = (
        Option("snapshot", (str, int, float), "latest",
               help="The network: \"latest\" (the train stage's newest checkpoint), a kimg number, or a path to a "
                    "checkpoint or an imported StyleGAN2-ADA .pkl / rosinality .pt."),
        Option("input", str, "frames", help="The frames to re-make: \"frames\" (the extract stage's), or a glob "
                                            "relative to the project folder (\"stills/*.png\")."),
        Option("every", int, 1, min=1, help="Re-make every n-th frame (1: all of them)."),
        Option("steps", int, 100, min=1, help="Optimisation steps per frame that starts from the frame before."),
        Option("first_steps", int, None, min=1,
               help="Steps for the first frame of each shot, which starts from the average image (default: 4 x "
                    "steps)."),
        Option("space", str, "w+", choices=("w", "w+"),
               help="\"w+\": one latent per layer (closer fits); \"w\": one latent for all layers (what the network "
                    "can draw from a seed; looser fits)."),
        Option("lr", float, 0.1, min=0, help="Adam's learning rate on the latents for a cold start, ramped down to 0 "
                                            "at the end; warm starts use a tenth of it."),
        Option("features", str, None,
               help="A perceptual term: a TorchScript feature network file (e.g. NVIDIA's vgg16.pt, called as "
                    "LPIPS; never downloaded) or \"discriminator\" (the trained discriminator's activations)."),
        Option("feature_weight", float, 1.0, min=0, help="Weight of the perceptual term against the pixel loss."),
        Option("batch", int, None, min=1, continues=True,
               help="Frames fitted together (default: 1 on the CPU, 8 on a GPU); each starts from the latent "
                    "found before the batch."),
        Option("device", str, "auto", continues=True, choices=("auto", "cpu", "cuda"),
               help="\"auto\" uses a CUDA GPU when PyTorch sees one, else the CPU."),
    )

    def generate(self, ctx: StageContext) -> None:
        project(ctx)

    def reads(self, options: dict[str, Any]) -> tuple[str, ...] | None:
        snapshot = options.get("snapshot", "latest")
        trained = not (isinstance(snapshot, str) and snapshot != "latest")
        return (("train",) if trained else ()) + (("extract",) if options.get("input", "frames") == "frames" else ())


@dataclass
class Frame:
    """One frame to re-make: its file, its number, and the shot it belongs to (None: unknown)."""

    path: Path
    number: int
    shot: int | None
    time: float | None


def frames_to_project(ctx: StageContext, pattern: str, every: int) -> list[Frame]:
    """The input's numbered images in order, every ``every``-th, with shots and times from their index.json."""
    root = ctx.project.root
    if pattern == "frames":
        if "frames" not in ctx.inputs:
            raise ctx.error("input", "\"frames\" needs the extract stage; add [extract] or give a glob.")
        paths = list_frames(Path(ctx.inputs["frames"]))
    else:
        paths = [p for p in root.glob(pattern) if p.is_file()]
    numbered = sorted((p for p in paths if p.stem.isdigit()), key=lambda p: int(p.stem))
    if not numbered:
        raise ctx.error("input", f"{pattern!r} gives no numbered images (000001.png, ...) to re-make. Run the "
                                 "extract stage first, or fix the glob (relative to the project folder).")
    chosen = numbered[::every]
    facts = frame_facts(chosen[0].parent)
    return [Frame(p, int(p.stem), facts.get(p.name, {}).get("shot"), facts.get(p.name, {}).get("time"))
            for p in chosen]


def load_target(path: Path, resolution: int, channels: int) -> np.ndarray:
    """A frame as the network sees images: [C, R, R] uint8 (resized when it is another size)."""
    try:
        with Image.open(path) as im:
            image = flatten(im)
            image = image.convert("L" if channels == 1 else "RGB")
            if image.size != (resolution, resolution):
                image = image.resize((resolution, resolution), Image.Resampling.LANCZOS)
            array = np.asarray(image, dtype=np.uint8)
    except OSError as exc:
        raise CinemlError(f"Frame {path} cannot be read as an image ({exc}); delete it or re-run the extract "
                          "stage.") from None
    return array[None] if channels == 1 else array.transpose(2, 0, 1)


def psnr(made: np.ndarray, target: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 images of the same shape (99 for identical ones)."""
    mse = float(np.mean((made.astype(np.float64) - target.astype(np.float64)) ** 2))
    return 99.0 if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


# --- the search ------------------------------------------------------------------------------------


class Projector:
    """Fits latents of ``G`` to target images: ``fit(targets, start, steps, cold)``."""

    def __init__(self, G: Any, space: str, lr: float, perceptual: Any = None, weight: float = 1.0) -> None:
        import torch

        self.G, self.space, self.lr, self.perceptual, self.weight = G, space, lr, perceptual, weight
        device = next(G.parameters()).device
        gen = torch.Generator().manual_seed(0)
        z = torch.randn(W_SAMPLES, G.z_dim, generator=gen).to(device)
        with torch.no_grad():
            c = torch.zeros(W_SAMPLES, G.c_dim, device=device) if G.c_dim else None
            w = G.mapping(z, c)[:, :1]  # [N, 1, w_dim]: w before broadcasting
        self.w_avg = w.mean(0, keepdim=True)  # [1, 1, w_dim]
        self.w_std = float(((w - self.w_avg) ** 2).sum(-1).mean().sqrt())

    def average(self, count: int) -> torch.Tensor:
        """``count`` copies of the average w, as w+ [count, num_ws, w_dim]."""
        return self.w_avg.expand(count, self.G.num_ws, -1).clone()

    def loss(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Per-image loss [N]: multi-scale pixel MSE, plus the weighted perceptual term."""
        import torch.nn.functional as F

        total = images.new_zeros(len(images))
        for scale in SCALES:
            if images.shape[-1] // scale < 4:
                break
            a = F.avg_pool2d(images, scale) if scale > 1 else images
            b = F.avg_pool2d(targets, scale) if scale > 1 else targets
            total = total + (a - b).square().mean(dim=(1, 2, 3))
        if self.perceptual is not None:
            total = total + self.weight * self.perceptual(images, targets)
        return total

    def fit(self, targets: torch.Tensor, start: torch.Tensor, steps: int, cold: bool) -> tuple[torch.Tensor,
                                                                                                torch.Tensor]:
        """Latents (w+ [N, num_ws, w_dim]) for ``targets`` [N, C, R, R] in [-1, 1], from ``start``; and their loss."""
        import torch

        param = (start[:, :1] if self.space == "w" else start).detach().clone().requires_grad_(True)
        lr = self.lr if cold else self.lr * WARM_LR  # a warm start is close already: big steps would throw it out
        opt = torch.optim.Adam([param], lr=lr, betas=(0.9, 0.999))
        gen = torch.Generator().manual_seed(1)
        for i in range(steps):
            t = i / steps
            for group in opt.param_groups:  # up over the first 5%, cosine down over the last 25%
                down = 0.5 - 0.5 * math.cos(math.pi * min(1.0, (1 - t) / 0.25))
                group["lr"] = lr * down * min(1.0, (t + 1 / steps) / 0.05)
            ws = param
            if cold:  # noise on w early on, so the search can leave the average (decays to 0 at 75%)
                spread = self.w_std * 0.05 * max(0.0, 1 - t / 0.75) ** 2
                ws = ws + torch.randn(ws.shape, generator=gen).to(ws.device) * spread
            images = self.G.synthesis(ws.expand(-1, self.G.num_ws, -1), noise_mode="const")
            loss = self.loss(images, targets)
            opt.zero_grad(set_to_none=True)
            loss.sum().backward()  # a sum: each frame's gradient is its own
            opt.step()
        with torch.no_grad():
            final = param.detach().expand(-1, self.G.num_ws, -1).clone()
            return final, self.loss(self.G.synthesis(final, noise_mode="const"), targets)


class LpipsFeatures:
    """Distance in a TorchScript feature network's space; NVIDIA's vgg16.pt is called as LPIPS."""

    def __init__(self, net: Any) -> None:
        self.net, self.lpips = net, True

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = (x * 127.5 + 128).clamp(0, 255)
        x = x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x
        if self.lpips:
            try:
                return self.net(x, resize_images=False, return_lpips=True)
            except (RuntimeError, TypeError):
                self.lpips = False
        return self.net(x).reshape(len(x), -1)

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        import torch

        with torch.no_grad():
            want = self.features(targets)
        return (self.features(images) - want).square().sum(1)


class DiscriminatorFeatures:
    """Distance between the discriminator's block activations (each block's mean squared difference)."""

    def __init__(self, D: Any) -> None:
        self.D = D

    def blocks(self, img: torch.Tensor) -> list[torch.Tensor]:
        x, found = None, []
        for res in self.D.block_resolutions:
            x = getattr(self.D, f"b{res}")(x, img)
            found.append(x)
        return found

    def __call__(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        import torch

        with torch.no_grad():
            want = self.blocks(targets)
        return torch.stack([(a - b).square().mean(dim=(1, 2, 3)) for a, b in zip(self.blocks(images), want)]).sum(0)


def load_discriminator(snapshot: Path, key: str) -> Any:
    """The discriminator stored with a network: a CineML checkpoint's ``D``, or an imported pickle's."""
    from . import checkpoints as ckpt
    from .legacy import import_network, is_foreign, load_into
    from .networks import Discriminator

    if is_foreign(snapshot):
        D = import_network(snapshot, with_d=True).D
        if D is None:
            raise CinemlError(f"{key} = \"discriminator\": {snapshot} holds no discriminator. {FEATURES_HINT}")
        return D
    tensors, state = ckpt.load_checkpoint(snapshot, ("D.",))
    if not tensors or "D_kwargs" not in state:
        raise CinemlError(f"{key} = \"discriminator\": {snapshot} holds no discriminator. {FEATURES_HINT}")
    return load_into(Discriminator(**state["D_kwargs"]), ckpt.sub_state(tensors, "D."), "D", snapshot)


def perceptual_term(ctx: StageContext, value: str | None, snapshot: Path, device: torch.device) -> Any:
    if value is None:
        return None
    key = f"{ctx.where or ctx.stage}.features"
    if value == "discriminator":
        D = load_discriminator(snapshot, key).to(device).eval().requires_grad_(False)
        return DiscriminatorFeatures(D)
    from .metrics import load_torchscript

    path = Path(value).expanduser()
    path = path if path.is_absolute() else ctx.project.root / path
    return LpipsFeatures(load_torchscript(path, device, key, FEATURES_HINT))


# --- the stage -------------------------------------------------------------------------------------


def project(ctx: StageContext) -> None:
    """Re-make the input frames into ``ctx.output``, resuming after the last frame a killed run finished."""
    import torch

    from .generator import keep_only_work_of, load_network

    o = {opt.name: opt.default for opt in ProjectionGenerator.options}
    o.update(ctx.options)
    where = ctx.where or ctx.stage
    frames = frames_to_project(ctx, o["input"], int(o["every"]))
    device = pick_device(o["device"], f"{where}.device")
    batch = int(o["batch"] or (8 if device.type == "cuda" else 1))
    steps = int(o["steps"])
    first_steps = int(o["first_steps"] or 4 * steps)
    train_dir = ctx.inputs.get("train")
    net = load_network(o["snapshot"], Path(train_dir) if train_dir else None, ctx.project.root,
                       key=f"{where}.snapshot", warn=ctx.warn)
    G = net.G.to(device).eval().requires_grad_(False)
    perceptual = perceptual_term(ctx, o["features"], net.path, device)
    out = Path(ctx.output)
    latents = out / LATENTS
    out.mkdir(parents=True, exist_ok=True)
    keep_only_work_of(out, net.path, ctx.log, old=[*out.glob("[0-9]*.png"), latents])  # another network's
    latents.mkdir(exist_ok=True)
    projector = Projector(G, o["space"], float(o["lr"]), perceptual, float(o["feature_weight"]))
    R, C = G.img_resolution, G.img_channels
    ctx.log(f"Re-making {len(frames)} frames with {net.path.name} ({R}x{R}) on {device.type}: {first_steps} steps "
            f"for each shot's first frame, {steps} for the others.")
    previous: tuple[int | None, torch.Tensor] | None = None  # (shot, latent) of the last frame made
    with ctx.progress("Projecting", total=len(frames), unit="frames") as bar:
        k = 0
        while k < len(frames):
            frame = frames[k]
            done = _finished(out, frame)
            if done is not None:  # a killed run made it already
                previous = (frame.shot, torch.from_numpy(done).to(device)[None])
                bar.advance()
                k += 1
                continue
            if previous is None or previous[0] != frame.shot:  # a shot's first frame (unknown shots: one long one)
                cold, group, start = True, [frame], projector.average(1)
            else:  # the next frames of the shot, each from the latent found for the frame before them
                cold, group = False, _same_shot(frames, k, batch, out)
                start = previous[1].expand(len(group), -1, -1)
            targets_u8 = np.stack([load_target(f.path, R, C) for f in group])
            targets = torch.from_numpy(targets_u8).to(device).float().div(127.5).sub(1)
            ws, loss = projector.fit(targets, start, first_steps if cold else steps, cold)
            with torch.no_grad():
                made = to_uint8(G.synthesis(ws, noise_mode="const"))
            for j, f in enumerate(group):
                save_png(to_pil(made[j]), out / f"{f.number:06d}.png")
                with atomic_path(latents / f"{f.number:06d}.npy") as tmp, open(tmp, "wb") as handle:
                    np.save(handle, ws[j].cpu().numpy().astype(np.float32))
                quality = round(psnr(made[j].transpose(2, 0, 1), targets_u8[j]), 3)
                _save_record(out, f, float(loss[j]), quality, first_steps if cold else steps,
                             "cold" if cold else "warm")
            previous = (group[-1].shot, ws[-1:].detach())
            bar.advance(len(group))
            k += len(group)
    _write_results(out, frames, G, net, o, first_steps, steps)
    ctx.log(f"Re-made {len(frames)} frames: mean PSNR {_mean_psnr(out):.1f} dB against the frames.")


def _same_shot(frames: list[Frame], k: int, batch: int, out: Path) -> list[Frame]:
    """Frames k.. of one shot, up to ``batch``, none of them made yet."""
    group = [frames[k]]
    while (len(group) < batch and k + len(group) < len(frames) and frames[k + len(group)].shot == frames[k].shot
           and _finished(out, frames[k + len(group)]) is None):
        group.append(frames[k + len(group)])
    return group


def _finished(out: Path, frame: Frame) -> np.ndarray | None:
    """The latent of a frame a run already made (its PNG and latent both on disk), else None."""
    latent = out / LATENTS / f"{frame.number:06d}.npy"
    if not (out / f"{frame.number:06d}.png").exists() or not latent.exists():
        return None
    try:
        return np.load(latent, allow_pickle=False)
    except (OSError, ValueError):  # cut short by a kill before the rename? atomic, so only a damaged disk
        return None


def _save_record(out: Path, frame: Frame, loss: float, psnr: float, steps: int, start: str) -> None:
    """A frame's line of projection.json, kept beside its latent so a resumed run has it too."""
    with atomic_path(out / LATENTS / f"{frame.number:06d}.json") as tmp:
        tmp.write_text(json.dumps({"loss": loss, "psnr": psnr, "steps": steps, "start": start}))


def _load_record(out: Path, frame: Frame) -> dict[str, Any]:
    try:
        return json.loads((out / LATENTS / f"{frame.number:06d}.json").read_text())
    except (OSError, ValueError):
        return {}


def _write_results(out: Path, frames: list[Frame], G: Any, net: Any, o: dict[str, Any], first_steps: int,
                   steps: int) -> None:
    """latents.npy, projection.json and index.json from the finished frames; then .latents/ goes."""
    import shutil

    lat = np.stack([np.load(out / LATENTS / f"{f.number:06d}.npy") for f in frames])
    with atomic_path(out / "latents.npy") as tmp, open(tmp, "wb") as handle:
        np.save(handle, lat)
    entries = []
    for f in frames:
        entry = _load_record(out, f)
        entries.append({"file": f"{f.number:06d}.png", "frame": f.number, "source": str(f.path.name),
                        "shot": f.shot, **entry})
    record = {"snapshot": str(net.path), "kimg": net.kimg, "format": net.format, "space": o["space"],
              "steps": steps, "first_steps": first_steps, "features": o["features"], "network": G.init_kwargs,
              "latents": "latents.npy", "frames": entries}
    with atomic_path(out / "projection.json") as tmp:
        tmp.write_text(json.dumps(record, indent=1))
    index = {"frames": [{"index": i, "file": f"{f.number:06d}.png", "time": f.time, "shot": f.shot}
                        for i, f in enumerate(frames, 1)],
             "source": json.loads((frames[0].path.parent / "index.json").read_text()).get("source")
             if (frames[0].path.parent / "index.json").exists() else None}
    with atomic_path(out / "index.json") as tmp:
        tmp.write_text(json.dumps(index, indent=1))
    if (frames[0].path.parent / "shots.json").exists():
        shutil.copyfile(frames[0].path.parent / "shots.json", out / "shots.json")
    shutil.rmtree(out / LATENTS, ignore_errors=True)


def _mean_psnr(out: Path) -> float:
    entries = json.loads((out / "projection.json").read_text())["frames"]
    values = [e["psnr"] for e in entries if e.get("psnr") is not None]
    return float(np.mean(values)) if values else float("nan")
