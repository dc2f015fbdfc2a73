"""The ``stylegan2`` generator: sample a trained (or imported) network into stills, walks and mixing grids.

Seeds mean what they mean in the reference tools: ``z = numpy.random.RandomState(seed).randn(z_dim)``,
so seed 42 of an imported network gives the same picture here as in StyleGAN2-ADA's ``generate.py``
(same truncation, constant noise). With random noise every image draws its grain from its own seed, so
an image does not depend on the batch it was drawn in. Walks are periodic: the frame after the last
would be frame 0 again, so a looping video has no seam and no repeated frame.

torch is imported inside functions only (the engine imports plugin modules at start-up).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from cineml import CinemlError, Generator, Option, StageContext, atomic_path

from .pictures import pick_device, save_png, to_pil, to_uint8

if TYPE_CHECKING:
    import torch

NOISE_MODES = ("const", "random", "none")
_RANGE = re.compile(r"^\s*(\d+)\s*(?:-\s*(\d+)\s*)?$")
_WALK_KEYS = {"keyframes": "0-7", "seconds": 8.0, "fps": 12.0, "space": "w", "interpolation": "cubic"}
_MIXING_KEYS = {"rows": "0-3", "columns": "10-13", "layers": "0-6"}
MIXING_LAYERS = 7  # default: style layers 0-6 (coarse and middle), or all of a smaller network's
MARKER = ".network.json"  # which network file the stills in an output folder were drawn from


# --- Option parsing --------------------------------------------------------------------------------


def parse_seeds(value: Any, key: str | None = "generate.seeds", limit: int = 2 ** 32 - 1) -> list[int]:
    """``"0-3,7,10-12"`` / ``42`` / ``[1, "5-6"]`` -> ``[0, 1, 2, 3, 7, 10, 11, 12]`` (duplicates dropped).

    Errors start with ``key = value:`` (left out when ``key`` is None: the manifest adds it itself).
    """
    where = f"{key} = {value!r}: " if key else ""
    example = 'e.g. "0-89", "0-3,7,10-12" or 42'
    if isinstance(value, bool) or not isinstance(value, (int, str, list, tuple)):
        raise CinemlError(f"{where}not a list of seeds; write seeds as ranges and numbers, {example}.")
    parts: list[Any] = ([value] if isinstance(value, int) else value.split(",") if isinstance(value, str)
                        else list(value))
    seeds: list[int] = []
    for part in parts:
        if isinstance(part, int) and not isinstance(part, bool):
            lo = hi = part
        else:
            m = _RANGE.match(part) if isinstance(part, str) else None
            if not m:
                raise CinemlError(f"{where}{str(part).strip()!r} is not a seed or a range of seeds; write "
                                  f"non-negative numbers and ranges separated by commas, {example}.")
            lo, hi = int(m.group(1)), int(m.group(2) or m.group(1))
        if lo < 0 or hi > limit:
            raise CinemlError(f"{where}seeds go from 0 to {limit}.")
        if hi < lo:
            raise CinemlError(f"{where}the range {lo}-{hi} runs backwards; write {hi}-{lo}.")
        if hi - lo > 1_000_000:
            raise CinemlError(f"{where}the range {lo}-{hi} asks for more than a million images.")
        seeds.extend(range(lo, hi + 1))
    if not seeds:
        raise CinemlError(f"{where}names no seeds; {example}.")
    return list(dict.fromkeys(seeds))


@dataclass(frozen=True)
class WalkSpec:
    keyframes: list[int]
    seconds: float
    fps: float
    space: str
    interpolation: str

    @property
    def frames(self) -> int:
        return int(round(self.seconds * self.fps))


def parse_walk(value: Any, key: str = "generate.walk") -> WalkSpec | None:
    """The ``walk`` sub-table, completed with defaults; errors name the sub-key."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise CinemlError(f"{key} must be a table, e.g. walk = {{ keyframes = \"0-7\", seconds = 8, fps = 12 }}.")
    unknown = sorted(set(value) - set(_WALK_KEYS))
    if unknown:
        raise CinemlError(f"{key}.{unknown[0]}: unknown key; a walk takes {', '.join(_WALK_KEYS)}.")
    v = {**_WALK_KEYS, **value}
    for name in ("seconds", "fps"):
        if isinstance(v[name], bool) or not isinstance(v[name], (int, float)) or v[name] <= 0:
            raise CinemlError(f"{key}.{name} = {v[name]!r} must be a positive number.")
    if v["space"] not in ("w", "z"):
        raise CinemlError(f"{key}.space = {v['space']!r} must be \"w\" (interpolate styles) or \"z\" (slerp latents).")
    allowed = ("linear", "cubic") if v["space"] == "w" else ("slerp",)
    interp = v["interpolation"]
    if v["space"] == "z" and "interpolation" not in value:
        interp = "slerp"
    if interp not in allowed:
        raise CinemlError(f"{key}.interpolation = {interp!r}: in space {v['space']!r} use "
                          f"{' or '.join(repr(a) for a in allowed)}.")
    keys = parse_seeds(v["keyframes"], f"{key}.keyframes")
    if len(keys) < 2:
        raise CinemlError(f"{key}.keyframes = {v['keyframes']!r}: a walk needs at least two keyframe seeds.")
    spec = WalkSpec(keys, float(v["seconds"]), float(v["fps"]), v["space"], interp)
    if spec.frames < 1:
        raise CinemlError(f"{key}: seconds * fps = {spec.seconds * spec.fps:g} gives no frame.")
    return spec


@dataclass(frozen=True)
class MixingSpec:
    rows: list[int]
    columns: list[int]
    layers: list[int] | None  # None: the default, layers 0-6 clamped to the network's num_ws

    def layers_for(self, num_ws: int) -> list[int]:
        return list(range(min(MIXING_LAYERS, num_ws))) if self.layers is None else self.layers


def parse_mixing(value: Any, key: str = "generate.mixing") -> MixingSpec | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise CinemlError(f"{key} must be a table, e.g. mixing = {{ rows = \"0-3\", columns = \"10-13\", "
                          "layers = \"0-6\" }.")
    unknown = sorted(set(value) - set(_MIXING_KEYS))
    if unknown:
        raise CinemlError(f"{key}.{unknown[0]}: unknown key; mixing takes {', '.join(_MIXING_KEYS)}.")
    v = {**_MIXING_KEYS, **value}
    layers = parse_seeds(value["layers"], f"{key}.layers", limit=63) if "layers" in value else None
    return MixingSpec(parse_seeds(v["rows"], f"{key}.rows"), parse_seeds(v["columns"], f"{key}.columns"), layers)


def _check(parse: Any) -> Any:
    """Adapt a parser to ``Option.check`` (message instead of exception)."""

    def check(value: Any) -> str | None:
        try:
            parse(value)
        except CinemlError as exc:
            return str(exc)
        return None

    return check


# --- Networks --------------------------------------------------------------------------------------


@dataclass
class Loaded:
    G: Any
    path: Path
    kimg: float | None
    format: str


def load_checkpoint_generator(path: Path) -> tuple[Any, float | None]:
    """G_ema of a CineML checkpoint file, with its kimg."""
    from . import checkpoints as ckpt
    from .legacy import load_into
    from .networks import Generator

    tensors, state = ckpt.load_checkpoint(path, ("G_ema.",))
    try:
        G = Generator(**state["G_kwargs"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CinemlError(f"{path}: the checkpoint's G_kwargs do not describe a generator ({exc}).") from None
    G = load_into(G, ckpt.sub_state(tensors, "G_ema."), "G_ema", path)
    kimg = ckpt.parse_kimg(path.name)
    return G, kimg if kimg is not None else state.get("kimg")


def interrupted_training(root: Path) -> Path | None:
    """The staging folder of an interrupted training with the newest checkpoint, if any.

    The engine publishes ``train/`` only when the stage finishes; until then its checkpoints sit in
    ``.cineml/staging/train-*/`` (see cineml.pipeline).
    """
    from . import checkpoints as ckpt

    newest: tuple[int, Path] | None = None
    for folder in (Path(root) / ".cineml" / "staging").glob("train-*"):
        found = ckpt.list_checkpoints(folder)
        if found and (newest is None or found[-1].stat().st_mtime_ns > newest[0]):
            newest = (found[-1].stat().st_mtime_ns, folder)
    return None if newest is None else newest[1]


def _no_checkpoint(snapshot: Any, train_dir: Path | None, root: Path, key: str) -> CinemlError:
    staged = interrupted_training(root)
    if staged is not None:
        rel = staged.relative_to(root) if staged.is_relative_to(root) else staged
        return CinemlError(
            f"{key} = {snapshot!r}: there is no checkpoint in the training folder {train_dir}, but an interrupted "
            f"training left checkpoints in {rel}. Sample those with -S {key}={rel} (or run the train stage again "
            "to finish it).")
    return CinemlError(f"{key} = {snapshot!r}: there is no checkpoint in the training folder {train_dir}. "
                       "Run the train stage first, or set snapshot to a checkpoint or .pkl path.")


def _load_latest(found: list[Path], key: str, warn: Callable[[str], None]) -> tuple[Any, float | None, Path]:
    """The newest checkpoint that reads; a damaged newer one is skipped with a warning."""
    from . import checkpoints as ckpt

    def skip(path: Path, exc: ckpt.UnreadableCheckpoint, older: Path | None) -> None:
        if older is None:
            raise CinemlError(f"{key} = \"latest\": {exc} No older checkpoint is left in {path.parent}; "
                              "run the train stage again, or set snapshot to another network.") from None
        warn(f"{key} = \"latest\": checkpoint {path.name} is damaged ({exc.reason}); sampling the older "
             f"{older.name} instead. Delete the damaged file, or run the train stage again.")

    path, (G, kimg) = ckpt.newest_readable(found, load_checkpoint_generator, skip)
    return G, kimg, path


def load_network(snapshot: Any, train_dir: Path | None, root: Path, key: str = "generate.snapshot",
                 warn: Callable[[str], None] = print) -> Loaded:
    """``"latest"`` | kimg number | path (checkpoint, training folder, or a .pkl / .pt to import)."""
    from . import checkpoints as ckpt
    from .legacy import import_network, is_foreign

    if isinstance(snapshot, str) and re.fullmatch(r"\s*\d+(\.\d+)?\s*", snapshot):
        snapshot = float(snapshot)
    if snapshot == "latest" or isinstance(snapshot, (int, float)) and not isinstance(snapshot, bool):
        found = ckpt.list_checkpoints(Path(train_dir)) if train_dir is not None else []
        if not found:
            raise _no_checkpoint(snapshot, train_dir, root, key)
        if snapshot == "latest":
            G, kimg, path = _load_latest(found, key, warn)
            return Loaded(G, path, kimg, "cineml")
        match = [p for p in found if abs((ckpt.parse_kimg(p.name) or -1) - float(snapshot)) < 1e-6]
        if not match:
            have = ", ".join(f"{ckpt.parse_kimg(p.name):g}" for p in found)
            raise CinemlError(f"{key} = {snapshot!r}: no checkpoint at that kimg in {train_dir}; "
                              f"there are: {have}. Use one of those, or \"latest\".")
        G, kimg = load_checkpoint_generator(match[0])
        return Loaded(G, match[0], kimg, "cineml")
    if not isinstance(snapshot, str):
        raise CinemlError(f"{key} = {snapshot!r} must be \"latest\", a kimg number, or a path.")
    path = Path(snapshot).expanduser()
    path = path if path.is_absolute() else root / path
    if not path.exists():
        raise CinemlError(f"{key} = {snapshot!r}: no such file or folder ({path}).")
    if path.is_file() and is_foreign(path):
        imported = import_network(path, with_d=False)
        return Loaded(imported.G_ema, path, None, imported.format)
    path = ckpt.find_checkpoint(path, key)
    G, kimg = load_checkpoint_generator(path)
    return Loaded(G, path, kimg, "cineml")


# --- Latents ---------------------------------------------------------------------------------------


def seed_z(seeds: Sequence[int], z_dim: int) -> np.ndarray:
    """The reference tools' latents: ``RandomState(seed).randn(z_dim)``, one row per seed (float32)."""
    return np.stack([np.random.RandomState(s).randn(z_dim) for s in seeds]).astype(np.float32)


def class_vector(G: Any, class_index: int | None, n: int, device: Any) -> torch.Tensor | None:
    import torch

    if G.c_dim == 0:
        return None
    if class_index is None:
        raise CinemlError(f"This network is conditional ({G.c_dim} classes): set generate.class_index to the class "
                          "to draw (0 to {}).".format(G.c_dim - 1))
    if not 0 <= class_index < G.c_dim:
        raise CinemlError(f"generate.class_index = {class_index} is out of range: this network has classes 0 to "
                          f"{G.c_dim - 1}.")
    c = torch.zeros(n, G.c_dim, device=device)
    c[:, class_index] = 1
    return c


def map_seeds(G: Any, seeds: Sequence[int], psi: float, cutoff: int | None, class_index: int | None,
              device: Any) -> torch.Tensor:
    """ws [N, num_ws, w_dim] for seeds, truncated towards the tracked ``w_avg``."""
    import torch

    z = torch.from_numpy(seed_z(seeds, G.z_dim)).to(device)
    c = class_vector(G, class_index, len(seeds), device)
    return G.mapping(z, c, truncation_psi=psi, truncation_cutoff=cutoff)


def slerp(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation of directions (the mapping network normalises z, so only direction counts)."""
    a, b = a / np.linalg.norm(a), b / np.linalg.norm(b)
    omega = math.acos(float(np.clip(np.dot(a, b), -1.0, 1.0)))
    if omega < 1e-6:
        return a
    return (math.sin((1 - t) * omega) * a + math.sin(t * omega) * b) / math.sin(omega)


def loop_positions(keys: int, frames: int, indices: Sequence[int] | None = None) -> list[tuple[int, float]]:
    """(segment, fraction) of frames ``indices`` (default: all) on the closed loop through ``keys`` keyframes.

    Frame i sits at ``i * keys / frames``, so frame ``frames`` (one past the last) lands on (0, 0.0), where
    frame 0 is: the walk is periodic, the last frame leads into the first like any other step.
    """
    out = []
    for i in range(frames) if indices is None else indices:
        t = i * keys / frames
        whole = math.floor(t)
        out.append((int(whole) % keys, t - whole))
    return out


def catmull_rom(p0: torch.Tensor, p1: torch.Tensor, p2: torch.Tensor, p3: torch.Tensor, u: float) -> torch.Tensor:
    """Uniform Catmull-Rom spline between p1 (u=0) and p2 (u=1)."""
    return 0.5 * ((2 * p1) + (p2 - p0) * u + (2 * p0 - 5 * p1 + 4 * p2 - p3) * u ** 2
                  + (3 * p1 - p0 - 3 * p2 + p3) * u ** 3)


def walk_ws(G: Any, spec: WalkSpec, psi: float, cutoff: int | None, class_index: int | None,
            device: Any, indices: Sequence[int] | None = None) -> torch.Tensor:
    """ws [len(indices), num_ws, w_dim] of walk frames ``indices`` (default: all) along the closed loop."""
    import torch

    keys, pos = spec.keyframes, loop_positions(len(spec.keyframes), spec.frames, indices)
    n = len(keys)
    if spec.space == "z":
        kz = seed_z(keys, G.z_dim).astype(np.float64)
        z = np.stack([slerp(kz[k], kz[(k + 1) % n], u) for k, u in pos]).astype(np.float32)
        c = class_vector(G, class_index, len(z), device)
        return G.mapping(torch.from_numpy(z).to(device), c, truncation_psi=psi, truncation_cutoff=cutoff)
    kw = map_seeds(G, keys, psi, cutoff, class_index, device)
    frames = []
    for k, u in pos:
        if spec.interpolation == "linear":
            frames.append(torch.lerp(kw[k], kw[(k + 1) % n], u))
        else:
            frames.append(catmull_rom(kw[(k - 1) % n], kw[k], kw[(k + 1) % n], kw[(k + 2) % n], u))
    return torch.stack(frames)


# --- Images ----------------------------------------------------------------------------------------


def noise_layers(G: Any) -> list[Any]:
    """G's noise-adding layers in a fixed order (module order: b4.conv1, b8.conv0, b8.conv1, ...)."""
    from .networks import SynthesisLayer

    return [m for m in G.synthesis.modules() if isinstance(m, SynthesisLayer)]


def seed_noise(G: Any, seeds: Sequence[int], device: Any) -> list[torch.Tensor]:
    """Per-layer noise maps [N, 1, H, W]; sample i's maps come from a generator seeded with ``seeds[i]``.

    Drawn on the CPU, so a seed's grain is the same whatever the batch, resume point or device.
    """
    import torch

    shapes = [tuple(layer.noise_const.shape) for layer in noise_layers(G)]
    per_seed = []
    for seed in seeds:
        gen = torch.Generator().manual_seed(int(seed))
        per_seed.append([torch.randn(1, *shape, generator=gen) for shape in shapes])
    return [torch.stack([maps[j] for maps in per_seed]).to(device) for j in range(len(shapes))]


@contextlib.contextmanager
def noise_maps(G: Any, maps: Sequence[torch.Tensor]) -> Iterator[None]:
    """Let G's "const" noise mode add ``maps`` (one [N, 1, H, W] tensor per layer) instead of its own.

    The networks scale whatever ``noise_const`` holds by the learned strength and broadcast it over the
    batch and channels, so swapping the buffers gives per-sample noise without a second code path.
    """
    layers = noise_layers(G)
    saved = [layer.noise_const for layer in layers]
    try:
        for layer, m in zip(layers, maps):
            layer.noise_const = m
        yield
    finally:
        for layer, m in zip(layers, saved):
            layer.noise_const = m


def synthesize(G: Any, ws: torch.Tensor, noise_mode: str, batch: int, seeds: Sequence[int] | None = None,
               bar: Any = None) -> Iterator[np.ndarray]:
    """Images (HWC uint8) for ws, ``batch`` at a time.

    Random noise comes from each image's own seed (``seeds[i]``, default i; see ``seed_noise``), so an
    image is the same whichever batch it is drawn in.
    """
    seeds = range(len(ws)) if seeds is None else seeds
    for start in range(0, len(ws), batch):
        chunk = ws[start:start + batch]
        if noise_mode == "random":
            with noise_maps(G, seed_noise(G, seeds[start:start + batch], ws.device)):
                img = G.synthesis(chunk, noise_mode="const")
        else:
            img = G.synthesis(chunk, noise_mode=noise_mode)
        for array in to_uint8(img):
            yield array
            if bar is not None:
                bar.advance(1)


def mixing_grid(G: Any, spec: MixingSpec, psi: float, cutoff: int | None, noise_mode: str, batch: int,
                class_index: int | None, device: Any, bar: Any = None) -> Image.Image:
    """Rows x columns style-mixing figure: cell (r, c) is row seed r with the columns' ws at ``layers``.

    The top row shows the column sources and the left column the row sources; the corner is black.
    """
    import torch

    layers = spec.layers_for(G.num_ws)
    bad = [i for i in layers if i >= G.num_ws]
    if bad:
        raise CinemlError(f"generate.mixing.layers names layer {bad[0]}, but this network has {G.num_ws} style "
                          f"layers (0 to {G.num_ws - 1}).")
    wr = map_seeds(G, spec.rows, psi, cutoff, class_index, device)
    wc = map_seeds(G, spec.columns, psi, cutoff, class_index, device)
    mixed = wr.unsqueeze(1).repeat(1, len(spec.columns), 1, 1)  # [R, C, num_ws, w_dim]
    mixed[:, :, layers] = wc.unsqueeze(0)[:, :, layers]
    ws = torch.cat([wc, wr, mixed.flatten(0, 1)])
    seeds = list(spec.columns) + list(spec.rows) + [r for r in spec.rows for _ in spec.columns]
    tiles = list(synthesize(G, ws, noise_mode, batch, seeds, bar))
    r, c = len(spec.rows), len(spec.columns)
    h, w = tiles[0].shape[:2]
    mode = "L" if tiles[0].shape[2] == 1 else "RGB"
    canvas = Image.new(mode, ((c + 1) * w, (r + 1) * h))
    for j in range(c):
        canvas.paste(to_pil(tiles[j]), ((j + 1) * w, 0))
    for i in range(r):
        canvas.paste(to_pil(tiles[c + i]), (0, (i + 1) * h))
        for j in range(c):
            canvas.paste(to_pil(tiles[c + r + i * c + j]), ((j + 1) * w, (i + 1) * h))
    return canvas


# --- The stage -------------------------------------------------------------------------------------


class StyleGAN2Generator(Generator):
    """Sample a StyleGAN2 network (a training snapshot or an imported .pkl/.pt) into stills, walks and mixing grids."""

    name = "stylegan2"
    options = (
        Option("snapshot", (str, int, float), "latest",
               help="\"latest\" (the newest checkpoint of the train stage), a kimg number of one of its snapshots, "
                    "or a path (relative to the project) to a checkpoint, a training folder, or a StyleGAN2-ADA "
                    ".pkl / rosinality .pt to import safely."),
        Option("seeds", (str, int, list), "0-89", check=_check(lambda v: parse_seeds(v, None)),
               help="Seeds to draw, as ranges and numbers: \"0-89\", \"0-3,7,10-12\", 42. Each makes seedNNNN.png; "
                    "a seed means the same latent as in StyleGAN2-ADA's generate.py."),
        Option("truncation", float, 1.0,
               help="Truncation psi: 1 draws from the whole distribution, smaller values pull towards the average "
                    "image (0.7 is a common choice; 0 gives the average for every seed)."),
        Option("truncation_cutoff", int, None, min=0,
               help="Truncate only the first this many style layers (default: all)."),
        Option("noise_mode", str, "const", choices=NOISE_MODES,
               help="Per-pixel noise: \"const\" (the network's fixed maps), \"random\" (grain drawn from each image's "
                    "own seed, or a walk frame's number, so it does not depend on the batch), \"none\"."),
        Option("class_index", int, None, min=0, help="Class to draw, for conditional networks only."),
        Option("batch", int, None, min=1, continues=True,
               help="Images per forward pass (default: 1 on the CPU, where batching measured slower "
                    "(benchmarks/generate.py); 8 on a GPU)."),
        Option("device", str, "auto", continues=True, choices=("auto", "cpu", "cuda"),
               help="\"auto\" uses a CUDA GPU when PyTorch sees one, else the CPU."),
        Option("walk", dict, None, check=_check(lambda v: parse_walk(v, "walk")),
               help="A looping latent walk into walk/000001.png...: { keyframes = \"0-7\", seconds = 8, fps = 12, "
                    "space = \"w\" (or \"z\": slerp), interpolation = \"cubic\" (or \"linear\") }. It is "
                    "periodic: the last frame leads back into the first (the first keyframe) like any other step, "
                    "so the first frame is not repeated at the end and the video loops without a seam."),
        Option("mixing", dict, None, check=_check(lambda v: parse_mixing(v, "mixing")),
               help="A style-mixing grid mixing.png: { rows = \"0-3\", columns = \"10-13\", layers = \"0-6\" } "
                    "(cell = row seed with the column seed's styles at those layers; without layers, 0-6 or as "
                    "many as a small network has)."),
    )

    def generate(self, ctx: StageContext) -> None:
        generate(ctx)

    def reads(self, options: dict[str, Any]) -> tuple[str, ...] | None:
        """A network file or folder named in ``snapshot`` needs no training stage (its content is fingerprinted)."""
        snapshot = options.get("snapshot", "latest")
        return () if isinstance(snapshot, str) and snapshot != "latest" else None


def generate(ctx: StageContext) -> None:
    """Write stills, the optional walk and mixing grid, and generated.json into ``ctx.output``."""
    import torch

    o = {opt.name: opt.default for opt in StyleGAN2Generator.options}
    o.update(ctx.options)
    seeds = parse_seeds(o["seeds"])
    walk, mixing = parse_walk(o["walk"]), parse_mixing(o["mixing"])
    psi, cutoff, noise_mode = float(o["truncation"]), o["truncation_cutoff"], o["noise_mode"]
    if noise_mode not in NOISE_MODES:
        raise CinemlError(f"generate.noise_mode = {noise_mode!r} must be one of {', '.join(NOISE_MODES)}.")
    class_index = o["class_index"]
    device = pick_device(o["device"], f"{ctx.where or ctx.stage}.device")
    batch = int(o["batch"] or (8 if device.type == "cuda" else 1))
    train_dir = ctx.inputs.get("train")
    net = load_network(o["snapshot"], Path(train_dir) if train_dir else None, ctx.project.root, warn=ctx.warn)
    G = net.G.to(device).eval().requires_grad_(False)
    if G.c_dim == 0 and class_index is not None:
        ctx.warn("generate.class_index is set but this network is unconditional; ignoring it.")
        class_index = None
    out = Path(ctx.output)
    out.mkdir(parents=True, exist_ok=True)
    keep_only_work_of(out, net.path, ctx.log)
    kimg = f", {net.kimg:g} kimg" if net.kimg is not None else ""
    ctx.log(f"Sampling {net.path.name}{kimg} ({G.img_resolution}x{G.img_resolution}, {G.img_channels} channel"
            f"{'s' if G.img_channels > 1 else ''}) on {device.type}.")
    record: dict[str, Any] = {
        "snapshot": str(net.path), "kimg": net.kimg, "format": net.format, "network": G.init_kwargs,
        "device": device.type, "truncation": psi, "truncation_cutoff": cutoff, "noise_mode": noise_mode,
        "class_index": class_index, "images": [],
    }
    with torch.no_grad():
        todo = [s for s in seeds if not (out / still_name(s)).exists()]  # resume an interrupted run
        with ctx.progress("Generating", total=len(seeds), unit="images") as bar:
            bar.advance(len(seeds) - len(todo))
            for start in range(0, len(todo), batch):
                part = todo[start:start + batch]
                ws = map_seeds(G, part, psi, cutoff, class_index, device)
                for seed, array in zip(part, synthesize(G, ws, noise_mode, batch, part, bar)):
                    save_png(to_pil(array), out / still_name(seed))
        for seed in seeds:
            record["images"].append({"file": still_name(seed), "seed": seed, "psi": psi, "cutoff": cutoff,
                                     "noise_mode": noise_mode})
        if walk is not None:
            record["walk"] = _walk(ctx, G, walk, psi, cutoff, noise_mode, batch, class_index, device, out)
        if mixing is not None:
            with ctx.progress("Style mixing", total=len(mixing.rows) * (len(mixing.columns) + 1) + len(mixing.columns),
                              unit="images") as bar:
                grid = mixing_grid(G, mixing, psi, cutoff, noise_mode, batch, class_index, device, bar)
            save_png(grid, out / "mixing.png")
            record["mixing"] = {"file": "mixing.png", "rows": mixing.rows, "columns": mixing.columns,
                                "layers": mixing.layers_for(G.num_ws), "psi": psi, "cutoff": cutoff,
                                "noise_mode": noise_mode}
    with atomic_path(out / "generated.json") as tmp:
        tmp.write_text(json.dumps(record, indent=1))


def network_marker(path: Path) -> dict[str, Any]:
    """What identifies the network images are drawn from: its content, as the engine fingerprints files (a
    new file at the same path differs; a copied or touched one does not)."""
    from cineml import file_fingerprint

    return {"network": file_fingerprint(Path(path))}


def keep_only_work_of(out: Path, network: Path, log: Callable[[str], None], old: list[Path] | None = None) -> None:
    """Resume only images drawn from the same network file: delete the ``old`` work (default: stills, walk/ and
    mixing.png) left by another one (or by a run that predates the marker), then record ``network`` in
    ``out/.network.json``."""
    marker, now = out / MARKER, network_marker(network)
    try:
        before = json.loads(marker.read_text())
    except FileNotFoundError:
        before = None
    except ValueError:  # a damaged marker says nothing: start over
        before = {}
    if old is None:
        old = [*out.glob("seed*.png"), *(p for p in (out / "walk", out / "mixing.png") if p.exists())]
    old = [p for p in old if p.exists() and (not p.is_dir() or any(p.iterdir()))]
    if old and before != now:
        log(f"Deleting {len(old)} earlier output(s) in {out.name}: they were drawn from "
            f"{'another network file' if before else 'an unrecorded network'}.")
        for p in old:
            shutil.rmtree(p) if p.is_dir() else p.unlink()
    if before != now:
        with atomic_path(marker) as tmp:
            tmp.write_text(json.dumps(now))


def still_name(seed: int) -> str:
    return f"seed{seed:04d}.png"


def _walk(ctx: StageContext, G: Any, spec: WalkSpec, psi: float, cutoff: int | None, noise_mode: str, batch: int,
          class_index: int | None, device: Any, out: Path) -> dict[str, Any]:
    folder = out / "walk"
    folder.mkdir(exist_ok=True)
    n = spec.frames
    names = [f"{i + 1:06d}.png" for i in range(n)]
    todo = [i for i in range(n) if not (folder / names[i]).exists()]
    with ctx.progress("Latent walk", total=n, unit="frames") as bar:
        bar.advance(n - len(todo))
        if todo:
            ws = walk_ws(G, spec, psi, cutoff, class_index, device, todo)
            for i, array in zip(todo, synthesize(G, ws, noise_mode, batch, todo, bar)):
                save_png(to_pil(array), folder / names[i])
    return {"folder": "walk", "frames": n, "keyframes": spec.keyframes, "seconds": spec.seconds, "fps": spec.fps,
            "space": spec.space, "interpolation": spec.interpolation, "psi": psi, "cutoff": cutoff,
            "noise_mode": noise_mode, "loops": True}
