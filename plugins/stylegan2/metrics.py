"""Multi-scale sliced Wasserstein distance (SWD) between generated and training frames.

From the ProGAN paper (Karras et al. 2018, "Progressive Growing of GANs", section 5 and appendix D):
build a Laplacian pyramid of every image from full resolution down to 16x16, take random 7x7
neighbourhoods (patches) from every level, normalise them per colour channel, and compare the two
sets of patches level by level with the sliced Wasserstein distance: project both onto random unit
directions, sort, and average the absolute differences. Small SWD at a fine level means the
generator's local texture statistics match the film's; at the 16x16 level, its large-scale layout.
Reported x1000 per level (``swd_64``, ``swd_32``, ``swd_16``) and averaged (``swd``).

The patches of both sets are normalised with the *training frames'* per-channel mean and standard
deviation (computed per level), so a global colour or brightness shift still counts as a difference.

FID (Heusel et al. 2017) and KID (Binkowski et al. 2018) compare feature vectors of the two sets from
a feature network the artist provides as a TorchScript file (``inception`` option; NVIDIA's
``inception-2015-12-05`` gives the usual 2048-D pool features). CineML never downloads it.

The end of the module measures a training loop's EMA generator at a snapshot (``compute_metrics``).
"""

from __future__ import annotations

import hashlib
import math
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from cineml import CinemlError, atomic_path

from .presets import FEATURE_METRICS, MISSING_INCEPTION

if TYPE_CHECKING:
    from .loop import TrainingLoop

PATCH = 7
_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16


def _blur(x: torch.Tensor) -> torch.Tensor:
    """5x5 binomial low-pass with reflect padding (the Burt-Adelson Gaussian pyramid kernel)."""
    c = x.shape[1]
    k = _BINOMIAL.to(x.device, x.dtype)
    x = F.pad(x, [2, 2, 2, 2], mode="reflect")
    x = F.conv2d(x, k.reshape(1, 1, 5, 1).expand(c, 1, 5, 1), groups=c)
    return F.conv2d(x, k.reshape(1, 1, 1, 5).expand(c, 1, 1, 5), groups=c)


def _expand(x: torch.Tensor) -> torch.Tensor:
    """x2 up-sampling by zero insertion and the same blur (gain 4)."""
    n, c, h, w = x.shape
    up = x.new_zeros(n, c, 2 * h, 2 * w)
    up[:, :, ::2, ::2] = x * 4
    return _blur(up)


def laplacian_pyramid(x: torch.Tensor, min_res: int = 16) -> list[torch.Tensor]:
    """Band-pass levels from finest to ``min_res``; the last level is the low-pass residual at ``min_res``."""
    levels = []
    while x.shape[-1] > min_res:
        low = _blur(x)[:, :, ::2, ::2]
        levels.append(x - _expand(low))
        x = low
    levels.append(x)
    return levels


def random_patches(level: torch.Tensor, per_image: int, generator: torch.Generator) -> torch.Tensor:
    """``per_image`` random 7x7 patches from every image, flattened: [N * per_image, C * 49]."""
    n, c, h, w = level.shape
    size = min(PATCH, h, w)
    ys = torch.randint(0, h - size + 1, (n, per_image), generator=generator)
    xs = torch.randint(0, w - size + 1, (n, per_image), generator=generator)
    off = torch.arange(size)
    rows = (ys[..., None] + off).reshape(n, per_image, size, 1).expand(-1, -1, -1, size)
    cols = (xs[..., None] + off).reshape(n, per_image, 1, size).expand(-1, -1, size, -1)
    flat = (rows * w + cols).reshape(n, 1, -1).to(level.device)  # [N, 1, P*size*size]
    picked = level.reshape(n, c, h * w).gather(2, flat.expand(n, c, flat.shape[-1]))
    return picked.reshape(n, c, per_image, size * size).permute(0, 2, 1, 3).reshape(n * per_image, c * size * size)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, directions: int = 512, repeats: int = 4,
                       generator: torch.Generator | None = None) -> float:
    """Mean over random unit directions of the 1-D Wasserstein-1 distance between projected sets.

    ``a`` and ``b`` are [N, D] with the same N (so sorted projections pair up directly).
    """
    if a.shape != b.shape:
        raise ValueError(f"sliced_wasserstein needs equal-sized sets, got {tuple(a.shape)} and {tuple(b.shape)}")
    import numpy as np

    total = 0.0
    for _ in range(repeats):
        dirs = torch.randn(a.shape[1], directions, generator=generator).to(a.device, a.dtype)
        dirs /= dirs.norm(dim=0, keepdim=True)
        # Sorted along rows of contiguous [directions, N] arrays by numpy: 15x faster than torch's sort
        # on the CPU (30720 patches x 512 directions: 0.2 s against 3 s), and exactly the same order.
        pa = np.sort((dirs.T @ a.T).cpu().numpy(), axis=1)
        pb = np.sort((dirs.T @ b.T).cpu().numpy(), axis=1)
        total += float(np.abs(pa - pb).mean(dtype=np.float64))
    return total / repeats


class PatchSet:
    """Patch descriptors of an image set, per pyramid level, gathered batch by batch."""

    def __init__(self, per_image: int, seed: int, min_res: int = 16) -> None:
        self.per_image, self.min_res = per_image, min_res
        self.generator = torch.Generator().manual_seed(seed)
        self.levels: list[list[torch.Tensor]] = []
        self.channels = 0

    def add(self, images: torch.Tensor) -> None:
        """Images [N, C, H, W] in [-1, 1] (any device); descriptors are kept on the CPU in fp32."""
        pyramid = laplacian_pyramid(images.float(), min(self.min_res, images.shape[-1]))
        if not self.levels:
            self.levels = [[] for _ in pyramid]
            self.channels = images.shape[1]
        for store, level in zip(self.levels, pyramid):
            store.append(random_patches(level, self.per_image, self.generator).cpu())

    def descriptors(self) -> list[torch.Tensor]:
        return [torch.cat(store) for store in self.levels]


def swd(reals: list[torch.Tensor], fakes: list[torch.Tensor], resolution: int, channels: int, seed: int = 0,
        directions: int = 512, repeats: int = 4) -> dict[str, float]:
    """SWD x1000 per level (``swd_<res>``, finest first) and their mean (``swd``), from :class:`PatchSet`
    descriptors; the reals' per-level channel statistics normalise both sets."""
    gen = torch.Generator().manual_seed(seed)
    out: dict[str, float] = {}
    for i, (a, b) in enumerate(zip(reals, fakes)):
        n = min(len(a), len(b))
        a, b = a[:n], b[:n]
        per = a.reshape(n, channels, -1)
        mean = per.mean(dim=(0, 2), keepdim=True)
        std = per.std(dim=(0, 2), keepdim=True).clamp_min(1e-8)
        a = ((per - mean) / std).reshape(n, -1)
        b = ((b.reshape(n, channels, -1) - mean) / std).reshape(n, -1)
        res = max(resolution >> i, 1)
        out[f"swd_{res}"] = sliced_wasserstein(a, b, directions, repeats, gen) * 1e3
    out["swd"] = sum(out.values()) / len(out)
    return out


def swd_of(real_batches: Iterator[torch.Tensor], fake_batches: Iterator[torch.Tensor], resolution: int,
           per_image: int = 64, seed: int = 0, directions: int = 512, repeats: int = 4) -> dict[str, float]:
    """SWD between two streams of image batches (e.g. training frames and G's output)."""
    reals, fakes = PatchSet(per_image, seed), PatchSet(per_image, seed)  # same patch positions per index
    for batch in real_batches:
        reals.add(batch)
    for batch in fake_batches:
        fakes.add(batch)
    return swd(reals.descriptors(), fakes.descriptors(), resolution, reals.channels, seed + 2, directions, repeats)


class PixelSpread:
    """Per-pixel standard deviation across an image set, gathered batch by batch (float64 sums), so
    1024 frames at 512 px never sit in memory at once."""

    def __init__(self) -> None:
        self.n = 0
        self.sum: torch.Tensor | float = 0.0  # per-pixel sums once a batch was added
        self.sumsq: torch.Tensor | float = 0.0

    def add(self, images: torch.Tensor) -> None:
        x = images.detach().to(torch.float64)  # summed where the images are (no copy off the GPU)
        self.n += x.shape[0]
        self.sum = self.sum + x.sum(dim=0)
        self.sumsq = self.sumsq + x.square().sum(dim=0)

    def value(self) -> float:
        """Mean over pixels of the (unbiased) per-pixel standard deviation."""
        if self.n < 2:
            return 0.0
        var = (self.sumsq - self.sum * self.sum / self.n) / (self.n - 1)
        return float(torch.as_tensor(var).clamp_min(0).sqrt().mean())


def diversity(reals: torch.Tensor | PixelSpread, fakes: torch.Tensor | PixelSpread) -> float:
    """How much the generated images vary, as a fraction of how much the frames vary: the per-pixel
    standard deviation across each set ([N, C, H, W] in the same range), averaged over pixels, fakes
    over reals.

    About 1 when the network spreads over the film; well below 1 (0.5) when every image shows nearly
    the same thing (mode collapse), however sharp. Cheap, so every snapshot reports it.
    """
    def spread(x: torch.Tensor | PixelSpread) -> float:
        if isinstance(x, PixelSpread):
            return x.value()
        acc = PixelSpread()
        acc.add(x)
        return acc.value()

    return spread(fakes) / max(spread(reals), 1e-8)


def coverage(reals: torch.Tensor, fakes: torch.Tensor, k: int = 5, size: int = 16) -> float:
    """Share of training frames that some generated image comes close to: the coverage of Naeem et al.
    2020 ("Reliable Fidelity and Diversity Metrics for Generative Models"), on ``size`` px thumbnails.

    A frame counts as covered when a generated image lies within the distance to its ``k``-th nearest
    fellow frame. A collapsed network covers the one shot it makes and nothing else, however much its
    brightness or grain varies (which the diversity ratio counts); noise covers nothing.
    """
    def thumbs(x: torch.Tensor) -> torch.Tensor:
        x = x.float()
        if x.shape[-1] > size:
            x = F.adaptive_avg_pool2d(x, size)
        return x.flatten(1).cpu().double()

    r, f = thumbs(reals), thumbs(fakes)
    real_d = torch.cdist(r, r)
    radius = real_d.kthvalue(min(k + 1, len(r)), dim=1).values  # +1: each frame is its own nearest
    nearest_fake = torch.cdist(r, f).min(dim=1).values
    return float((nearest_fake <= radius).double().mean())


def patches_per_image(images: int, target: int = 65536, most: int = 128) -> int:
    """Patches per image so a level holds about ``target`` descriptors (ProGAN: 128 per image)."""
    return max(1, min(most, math.ceil(target / max(images, 1))))


def batches(make: Callable[[int, int], torch.Tensor], count: int, chunk: int) -> Iterator[torch.Tensor]:
    """``make(start, n)`` for consecutive chunks covering ``count`` images."""
    for start in range(0, count, chunk):
        yield make(start, min(chunk, count - start))


# --- FID and KID on feature vectors ---------------------------------------------------------------


def _sqrtm_psd(a: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric positive semi-definite matrix (eigenvalues below 0 from rounding -> 0)."""
    vals, vecs = torch.linalg.eigh((a + a.T) / 2)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def fid_from_stats(mu1: torch.Tensor, s1: torch.Tensor, mu2: torch.Tensor, s2: torch.Tensor) -> float:
    """Frechet distance of two Gaussians: ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)), in float64.

    Tr((S1 S2)^(1/2)) = Tr((R S2 R)^(1/2)) with R = S1^(1/2): the same eigenvalues, but R S2 R is
    symmetric PSD, so eigh gives a stable root (no complex parts as with a general sqrtm of S1 S2).
    """
    mu1, s1, mu2, s2 = (t.to(torch.float64) for t in (mu1, s1, mu2, s2))
    root = _sqrtm_psd(s1)
    inner = root @ s2 @ root
    vals = torch.linalg.eigvalsh((inner + inner.T) / 2).clamp_min(0)
    value = (mu1 - mu2).square().sum() + s1.trace() + s2.trace() - 2 * vals.sqrt().sum()
    return float(value)


def mean_cov(feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and (unbiased) covariance of [N, D] feature vectors, in float64."""
    x = feats.to(torch.float64)
    mu = x.mean(dim=0)
    xc = x - mu
    return mu, xc.T @ xc / max(len(x) - 1, 1)


def fid(real_feats: torch.Tensor, fake_feats: torch.Tensor) -> float:
    """Frechet Inception Distance between two [N, D] feature sets (lower is better)."""
    return fid_from_stats(*mean_cov(real_feats), *mean_cov(fake_feats))


KID_FULL_KERNEL = 4096  # 3 kernel matrices of 4096^2 float64 = 400 MB


def kid(real_feats: torch.Tensor, fake_feats: torch.Tensor, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> float:
    """Kernel Inception Distance: the unbiased MMD^2 with the kernel k(x, y) = (x.y / d + 1)^3, averaged
    over ``subsets`` random subsets of ``subset_size`` vectors from each set (Binkowski et al. 2018).

    Unbiased: it is ~0 (and may be slightly negative) when both sets come from one distribution.
    """
    x, y = real_feats.to(torch.float64), fake_feats.to(torch.float64)
    m = min(subset_size, len(x), len(y))
    if m < 2:
        raise ValueError(f"kid needs at least 2 vectors per set, got {len(x)} and {len(y)}")
    d = x.shape[1]
    kernel = lambda a, b: (a @ b.T / d + 1) ** 3  # noqa: E731
    # Up to KID_FULL_KERNEL vectors per set, the whole kernel matrices once; each subset sums a block.
    full = max(len(x), len(y)) <= KID_FULL_KERNEL
    if full:
        kxx, kyy, kxy = kernel(x, x), kernel(y, y), kernel(x, y)
    gen = torch.Generator().manual_seed(seed)
    total = 0.0
    for _ in range(subsets):
        i = torch.randperm(len(x), generator=gen)[:m]
        j = torch.randperm(len(y), generator=gen)[:m]
        if full:
            sxx, syy, sxy = kxx[i][:, i], kyy[j][:, j], kxy[i][:, j]
        else:
            sxx, syy, sxy = kernel(x[i], x[i]), kernel(y[j], y[j]), kernel(x[i], y[j])
        within = (sxx.sum() - sxx.diagonal().sum() + syy.sum() - syy.diagonal().sum()) / (m * (m - 1))
        total += float(within - 2 * sxy.mean())
    return total / subsets


# --- The artist's feature network -----------------------------------------------------------------


def file_hash(path: Path) -> str:
    """SHA-256 of a file (keys the cached real features to the exact network)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_torchscript(path: Path, device: torch.device, key: str, hint: str) -> Any:
    """A feature network the artist provides as a TorchScript file, in eval mode on ``device``; ``key`` names the
    option and ``hint`` says where such a file comes from, in the error for a missing or wrong file."""
    if not Path(path).is_file():
        raise CinemlError(f"{key}: {str(path)!r}: no such file. {hint}")
    try:  # a TorchScript archive: its code is TorchScript, its tensors load without unpickling objects
        with warnings.catch_warnings():  # torch.jit is deprecated, but it is the format the network ships in
            warnings.simplefilter("ignore", DeprecationWarning)
            return torch.jit.load(str(path), map_location=device).eval()
    except Exception as exc:  # noqa: BLE001 (any failure means: not a TorchScript file)
        raise CinemlError(f"{key}: {str(path)!r} is not a TorchScript archive ({exc}). {hint}") from None


class FeatureNet:
    """A TorchScript feature network from the artist's file: images -> one feature vector each.

    Expects what NVIDIA's ``inception-2015-12-05`` TorchScript takes: float images [N, 3, H, W] with
    values 0..255 at any size (it resizes to 299x299 itself); called as ``net(x, return_features=True)``
    it returns the 2048-D pool features. Networks without that keyword are called as ``net(x)``.
    """

    def __init__(self, path: Path | str, device: torch.device | str = "cpu") -> None:
        self.path, self.device = Path(path), torch.device(device)
        self.net = load_torchscript(self.path, self.device, "train.inception", MISSING_INCEPTION)
        self.keyword: bool | None = None  # does forward take return_features? found on the first call
        self._hash: str | None = None

    @property
    def sha256(self) -> str:
        if self._hash is None:
            self._hash = file_hash(self.path)
        return self._hash

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Images [N, C, H, W] in [-1, 1] -> features [N, D] (float32, CPU). Pixels are rounded to the
        0..255 levels a saved PNG would hold; 1-channel images are repeated to RGB."""
        x = (images.to(self.device, torch.float32) * 127.5 + 128).clamp(0, 255).floor()
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        out = self._forward(x)
        if not isinstance(out, torch.Tensor) or out.ndim < 2 or out.shape[0] != len(x):
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise CinemlError(f"train.inception: {str(self.path)!r} returned {shape} for {len(x)} images; it "
                              "must return one feature vector per image ([N, D]).")
        return out.reshape(len(x), -1).float().cpu()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        first: Exception | str = "not tried"
        if self.keyword is not False:
            try:
                out = self.net(x, return_features=True)
                self.keyword = True
                return out
            except (RuntimeError, TypeError) as exc:
                if self.keyword:
                    raise
                first = exc
        try:
            out = self.net(x)
        except (RuntimeError, TypeError) as exc:
            raise CinemlError(f"train.inception: {str(self.path)!r} failed on images {tuple(x.shape)} "
                              f"(with return_features=True: {first}; without: {exc}).") from None
        self.keyword = False
        return out


# --- During training: the snapshot metrics of a TrainingLoop ---------------------------------------


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

    cache = loop.metric_cache
    if "real_features" in cache:
        return cache["real_features"]
    s = loop.settings
    assert s.inception is not None, "resolve() refuses fid/kid without inception"
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
    if real_feats is not None and "fid" in s.metrics:
        result["fid"] = fid(real_feats, torch.cat(fake_feats))
    if real_feats is not None and "kid" in s.metrics:
        result["kid"] = kid(real_feats, torch.cat(fake_feats), seed=s.seed)
    return result
