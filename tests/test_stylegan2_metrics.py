"""Multi-scale sliced Wasserstein distance: its pieces, its behaviour, and its place in training."""

from __future__ import annotations

import json

import pytest
import torch
from training_frames import make_frames

from cineml import CinemlError
from cineml.testing import make_context
from cineml_plugins.stylegan2 import checkpoints as ckpt
from cineml_plugins.stylegan2 import metrics
from cineml_plugins.stylegan2.metrics import _expand, laplacian_pyramid, random_patches, sliced_wasserstein
from cineml_plugins.stylegan2.plugin import StyleGAN2Trainer
from cineml_plugins.stylegan2.presets import resolve

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def texture(n: int, res: int = 32, seed: int = 0, shift: float = 0.0, blur: bool = False) -> torch.Tensor:
    """Film-grain-like frames: a smooth random layout plus fine noise, in [-1, 1]."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.nn.functional.interpolate(torch.rand(n, 3, 4, 4, generator=g), size=res, mode="bilinear")
    fine = torch.rand(n, 3, res, res, generator=g) * 0.4
    if blur:
        fine = torch.nn.functional.avg_pool2d(fine, 3, stride=1, padding=1, count_include_pad=False)
    return (coarse + fine - 0.7 + shift).clamp(-1, 1)


def test_laplacian_pyramid_reconstructs_the_image():
    x = texture(2, 64)
    levels = laplacian_pyramid(x, 16)
    assert [lv.shape[-1] for lv in levels] == [64, 32, 16]
    img = levels[-1]
    for band in reversed(levels[:-1]):
        img = _expand(img) + band
    torch.testing.assert_close(img, x, atol=1e-5, rtol=0)
    assert levels[0].mean().abs() < 0.02  # band-pass levels carry no mean


def test_random_patches_are_7x7_neighbourhoods():
    x = torch.arange(2 * 3 * 16 * 16, dtype=torch.float32).reshape(2, 3, 16, 16)
    p = random_patches(x, 5, torch.Generator().manual_seed(1))
    assert p.shape == (10, 3 * 49)
    first = p[0].reshape(3, 7, 7)
    y0, x0 = divmod(int(first[0, 0, 0]), 16)
    torch.testing.assert_close(first, x[0, :, y0:y0 + 7, x0:x0 + 7])


def test_sliced_wasserstein_of_one_dimension_is_the_mean_shift():
    a = torch.randn(1000, 1, dtype=torch.float64)
    assert sliced_wasserstein(a, a + 0.5, directions=8, repeats=1) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="equal-sized"):
        sliced_wasserstein(a, a[:10])


def swd_of(reals, fakes, res, per_image):  # fewer projections than the default 512 x 4, to stay quick
    return metrics.swd_of(reals, fakes, res, per_image=per_image, directions=128, repeats=2)


def test_swd_is_zero_for_identical_sets_and_grows_with_a_shift():
    reals = texture(64, seed=0)
    same = swd_of(iter([reals]), iter([reals.clone()]), 32, per_image=32)
    assert set(same) == {"swd_32", "swd_16", "swd"} and same["swd"] == pytest.approx(0, abs=1e-9)
    floor = swd_of(iter([reals]), iter([texture(64, seed=1)]), 32, per_image=32)["swd"]  # same distribution
    small = swd_of(iter([reals]), iter([texture(64, seed=1, shift=0.1)]), 32, per_image=32)["swd"]
    large = swd_of(iter([reals]), iter([texture(64, seed=1, shift=0.3)]), 32, per_image=32)["swd"]
    assert 0 < floor < small < large and large > 4 * floor, (floor, small, large)
    # Finer texture statistics show at the finest level much more than at the coarse one.
    blurred = swd_of(iter([reals]), iter([texture(64, seed=1, blur=True)]), 32, per_image=32)
    same_dist = swd_of(iter([reals]), iter([texture(64, seed=1)]), 32, per_image=32)
    assert blurred["swd_32"] > 3 * same_dist["swd_32"]
    assert blurred["swd_32"] / same_dist["swd_32"] > blurred["swd_16"] / same_dist["swd_16"]


def test_swd_is_logged_at_snapshots_and_never_changes_training(tmp_path):
    frames = make_frames(tmp_path / "frames", count=16)
    impl = StyleGAN2Trainer()
    opts = {"config": "tiny", "channel_base": 256, "channel_max": 32, "batch": 8, "device": "cpu", "grid": [4, 2],
            "kimg": 0.032, "snapshot_kimg": 0.016}
    for name, extra in (("with", {"metrics": ["swd"], "metric_images": 16}), ("without", {})):
        ctx = make_context(tmp_path, impl, options={**opts, **extra}, inputs={"frames": frames}, output=tmp_path / name)
        impl.train(ctx)
    stats = [json.loads(line) for line in (tmp_path / "with" / "stats.jsonl").read_text().splitlines()]
    assert all(r["swd"] > 0 and r["swd_16"] == r["swd"] for r in stats)  # 16 px: one level
    assert "swd" not in (tmp_path / "without" / "stats.jsonl").read_text()
    a = ckpt.load_checkpoint(tmp_path / "with" / "network-snapshot-000000_032.safetensors")[0]
    b = ckpt.load_checkpoint(tmp_path / "without" / "network-snapshot-000000_032.safetensors")[0]
    for key in a:
        assert torch.equal(a[key], b[key]), key  # metrics draw from their own random stream


def test_unknown_metric_is_a_clear_error():
    with pytest.raises(CinemlError, match="unknown metric 'is'.*swd, fid, kid"):
        resolve({"metrics": ["is"]}, 64, 3)
    from cineml_plugins.stylegan2.presets import _metric_names

    assert _metric_names(["swd"]) is None and "swd" in _metric_names(["fid50k"])


def test_coverage_tells_a_collapsed_set_from_a_varied_one():
    from cineml_plugins.stylegan2.metrics import coverage

    g = torch.Generator().manual_seed(0)
    shots = torch.rand(6, 1, 32, 32, generator=g) * 2 - 1  # six distinct shots ...
    reals = shots.repeat_interleave(40, dim=0) + 0.05 * torch.randn(240, 1, 32, 32, generator=g)  # ... 40 frames each
    varied = shots.repeat_interleave(40, dim=0) + 0.05 * torch.randn(240, 1, 32, 32, generator=g)
    one_shot = shots[:1].repeat(240, 1, 1, 1) + 0.3 * torch.randn(240, 1, 32, 32, generator=g).mean(dim=(2, 3),
                                                                                                       keepdim=True)
    noise = torch.rand(240, 1, 32, 32, generator=g) * 2 - 1
    assert coverage(reals, varied) > 0.9
    assert coverage(reals, one_shot) < 0.2  # brightness varies, the shot does not: 1 of 6 at most
    assert coverage(reals, noise) == 0.0
