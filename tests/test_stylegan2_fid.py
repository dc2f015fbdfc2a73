"""FID and KID: the formulas against closed forms, the artist's TorchScript feature network, and their
place in training (real features cached once per run, finite values in stats.jsonl)."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from training_frames import make_frames

from cineml import CinemlError
from cineml.testing import make_context
from cineml_plugins.stylegan2 import checkpoints as ckpt
from cineml_plugins.stylegan2 import metrics
from cineml_plugins.stylegan2.metrics import FeatureNet, fid, fid_from_stats, kid
from cineml_plugins.stylegan2.plugin import StyleGAN2Trainer
from cineml_plugins.stylegan2.presets import resolve

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def gaussian(n: int, mean: torch.Tensor, cov: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(n, len(mean), generator=g, dtype=torch.float64)
    return mean + z @ torch.linalg.cholesky(cov).T


def test_fid_of_identical_sets_is_zero():
    x = torch.randn(300, 16, dtype=torch.float64)
    assert fid(x, x.clone()) == pytest.approx(0, abs=1e-8)
    assert fid(x.float(), x.float()) == pytest.approx(0, abs=1e-5)  # float32 features are promoted to float64


def test_fid_matches_the_closed_form_of_two_gaussians():
    mu1, mu2 = torch.tensor([0.0, 1.0, -2.0, 0.5]), torch.tensor([1.0, 1.0, 0.0, -0.5])
    d1, d2 = torch.tensor([1.0, 4.0, 0.25, 2.0]), torch.tensor([9.0, 1.0, 0.25, 0.5])
    # Diagonal covariances commute, so sqrt(S1 S2) is elementwise: FID = |mu1 - mu2|^2 + sum (sqrt d1 - sqrt d2)^2.
    expected = float((mu1 - mu2).square().sum() + (d1.sqrt() - d2.sqrt()).square().sum())
    assert fid_from_stats(mu1, torch.diag(d1), mu2, torch.diag(d2)) == pytest.approx(expected, rel=1e-10)
    # A common rotation of both changes nothing.
    q, _ = torch.linalg.qr(torch.randn(4, 4, dtype=torch.float64))
    rot = lambda d: q @ torch.diag(d).double() @ q.T  # noqa: E731
    assert fid_from_stats(q @ mu1.double(), rot(d1), q @ mu2.double(), rot(d2)) == pytest.approx(expected, rel=1e-9)
    # Non-commuting covariances: Tr sqrt(S1 S2) is the sum of the square roots of S1 S2's (real, >= 0) eigenvalues.
    a, b = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    s1, s2 = a @ a.T / 6, b @ b.T / 6
    tr_root = torch.linalg.eigvals(s1 @ s2).real.clamp_min(0).sqrt().sum()
    expected = float((mu1 - mu2).square().sum() + s1.trace() + s2.trace() - 2 * tr_root)
    assert fid_from_stats(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-8)
    # From samples: the estimate approaches the closed form.
    x = gaussian(40000, mu1.double(), s1 + 0.1 * torch.eye(4, dtype=torch.float64), seed=1)
    y = gaussian(40000, mu2.double(), s2 + 0.1 * torch.eye(4, dtype=torch.float64), seed=2)
    exact = fid_from_stats(mu1, s1 + 0.1 * torch.eye(4, dtype=torch.float64), mu2,
                           s2 + 0.1 * torch.eye(4, dtype=torch.float64))
    assert fid(x, y) == pytest.approx(exact, rel=0.02)


def test_fid_is_symmetric_and_grows_with_a_mean_shift():
    x = torch.randn(500, 32, dtype=torch.float64)
    y = torch.randn(500, 32, dtype=torch.float64) * 1.2
    assert fid(x, y) == pytest.approx(fid(y, x), rel=1e-9)
    values = [fid(x, y + shift) for shift in (0.0, 0.25, 0.5, 1.0)]
    assert values == sorted(values) and values[0] > 0
    # A shift of every coordinate by s adds exactly 32 s^2 (only the means move).
    assert values[3] - values[0] == pytest.approx(32 - 2 * float((x.mean(0) - y.mean(0)).sum()), rel=1e-6)


def test_kid_is_the_unbiased_mmd_with_the_cubic_kernel():
    x, y = torch.randn(6, 3, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64) + 0.3
    k = lambda a, b: (float(a @ b) / 3 + 1) ** 3  # noqa: E731
    m = 6
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    # One subset of all 6 vectors: only the order differs, and MMD^2 does not depend on it.
    assert kid(x, y, subsets=1, subset_size=6) == pytest.approx(xx + yy - 2 * xy, rel=1e-10)
    with pytest.raises(ValueError, match="at least 2"):
        kid(x[:1], y)


def test_kid_gives_the_same_value_with_or_without_whole_kernel_matrices(monkeypatch):
    x, y = torch.randn(300, 8), torch.randn(250, 8) * 1.3
    whole = kid(x, y, subsets=4, subset_size=100, seed=2)
    monkeypatch.setattr(metrics, "KID_FULL_KERNEL", 0)  # large sets: kernels per subset only
    assert kid(x, y, subsets=4, subset_size=100, seed=2) == pytest.approx(whole, rel=1e-10)


def test_kid_is_near_zero_for_one_distribution_and_positive_for_a_shift():
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(400, 64, generator=g), torch.randn(400, 64, generator=g)
    same = kid(x, y, subsets=20, subset_size=200)
    shifted = kid(x, y + 0.5, subsets=20, subset_size=200)
    wider = kid(x, y * 1.5, subsets=20, subset_size=200)
    assert shifted > 0.5 and wider > 0.04, (shifted, wider)
    assert abs(same) < 0.01 * shifted and abs(same) < 0.2 * wider, (same, shifted, wider)


class ChannelMeans(torch.nn.Module):
    """Features = per-channel means: shows exactly what pixel values the network received."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3))


class WithKeyword(torch.nn.Module):
    """The NVIDIA convention: logits by default, features with return_features=True."""

    def forward(self, x: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        feats = x.mean(dim=(2, 3))
        return feats if return_features else feats.sum(dim=1, keepdim=True) * 0 - 1


class TinyFeatures(torch.nn.Module):
    """A small conv + pooling stand-in for Inception (8-D features)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.conv = torch.nn.Conv2d(3, 8, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x / 127.5 - 1)).mean(dim=(2, 3))


def script(module: torch.nn.Module, path):
    """Save ``module`` as a TorchScript archive (the format NVIDIA's Inception file ships in)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit is deprecated but still the format
        torch.jit.save(torch.jit.script(module), str(path))
    return path


def test_feature_net_gets_0_255_rgb_and_supports_both_call_conventions(tmp_path):
    images = torch.stack([torch.full((1, 8, 8), -1.0), torch.full((1, 8, 8), 1.0), torch.full((1, 8, 8), 0.0)])
    plain = FeatureNet(script(ChannelMeans(), tmp_path / "plain.pt"))
    out = plain(images)  # grayscale: repeated to 3 channels, values rounded to 0..255 like a saved PNG
    torch.testing.assert_close(out, torch.tensor([[0.0] * 3, [255.0] * 3, [128.0] * 3]))
    assert plain.keyword is False
    keyed = FeatureNet(script(WithKeyword(), tmp_path / "keyed.pt"))
    torch.testing.assert_close(keyed(images.repeat(1, 3, 1, 1)), out)  # the features, not the logits
    assert keyed.keyword is True
    assert len(keyed.sha256) == 64 and keyed.sha256 != plain.sha256


def test_feature_net_errors_are_clear(tmp_path):
    with pytest.raises(CinemlError, match="no such file.*never downloads"):
        FeatureNet(tmp_path / "missing.pt")
    (tmp_path / "weights.pkl").write_bytes(b"not a torchscript archive")
    with pytest.raises(CinemlError, match="weights.pkl.*not a TorchScript archive.*inception-2015-12-05"):
        FeatureNet(tmp_path / "weights.pkl")
    with pytest.raises(CinemlError, match="asks for fid and kid but inception is not set.*never downloads.*"
                                          "inception-2015-12-05"):
        resolve({"metrics": ["swd", "fid", "kid"]}, 64, 3)
    assert resolve({"metrics": ["kid"], "inception": "net.pt"}, 64, 3).inception == "net.pt"


def test_fid_and_kid_are_logged_and_real_features_cached(tmp_path):
    frames = make_frames(tmp_path / "frames", count=16)
    net = script(TinyFeatures(), tmp_path / "tiny_inception.pt")
    impl = StyleGAN2Trainer()
    opts = {"config": "tiny", "channel_base": 256, "channel_max": 32, "batch": 8, "device": "cpu", "grid": [4, 2],
            "kimg": 0.016, "snapshot_kimg": 0.016, "metrics": ["fid", "kid"], "metric_images": 16,
            "inception": str(net)}
    logs: list[str] = []
    out = tmp_path / "run"
    for kimg in (0.016, 0.032):  # the second run continues the first: the real features come from the cache
        ctx = make_context(tmp_path, impl, options={**opts, "kimg": kimg}, inputs={"frames": frames}, output=out)
        ctx.log = logs.append
        impl.train(ctx)
    stats = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    assert [r["kimg"] for r in stats] == [0.016, 0.032]
    for r in stats:
        assert math.isfinite(r["fid"]) and r["fid"] > 0 and math.isfinite(r["kid"]), r
        assert "swd" not in r and r["metrics_seconds"] >= 0
    cached = list(out.glob("inception-reals-*-16.safetensors"))
    assert len(cached) == 1 and FeatureNet(net).sha256[:16] in cached[0].name
    assert sum("Computing the feature vectors of 16 training frames" in m for m in logs) == 1, logs
    # Metrics draw from their own random stream: the same run without them (in one go, as resuming is
    # exact) ends with the same weights.
    plain = {k: v for k, v in opts.items() if k not in ("metrics", "inception")}
    ctx = make_context(tmp_path, impl, options={**plain, "kimg": 0.032}, inputs={"frames": frames},
                       output=tmp_path / "plain")
    impl.train(ctx)
    a = ckpt.load_checkpoint(out / "network-snapshot-000000_032.safetensors")[0]
    b = ckpt.load_checkpoint(tmp_path / "plain" / "network-snapshot-000000_032.safetensors")[0]
    for key in a:
        assert torch.equal(a[key], b[key]), key
