"""ADA: every augmentation op, its exactness and filtering, double backward for R1, the p controller,
and p living through training, stats and checkpoints."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from training_frames import make_frames

from cineml.testing import make_context
from cineml_plugins.stylegan2 import checkpoints as ckpt
from cineml_plugins.stylegan2.augment import COLOR, GEOMETRIC, AdaController, AugmentPipe, rotate2d, translate2d
from cineml_plugins.stylegan2.loss import r1_penalty
from cineml_plugins.stylegan2.networks import Discriminator
from cineml_plugins.stylegan2.plugin import StyleGAN2Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def images(n: int = 16, c: int = 3, res: int = 16) -> torch.Tensor:
    return torch.rand(n, c, res, res) * 2 - 1


def smooth(res: int = 32, fx: float = 0.4, fy: float = 0.3) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(res, dtype=torch.float64), torch.arange(res, dtype=torch.float64),
                            indexing="ij")
    return torch.sin(fx * xx + fy * yy)[None, None].float()


# --- each op ---------------------------------------------------------------------------------------


def test_p_zero_is_the_identity_and_no_op_draws_nothing():
    x = images()
    assert AugmentPipe(0.0)(x) is x
    state = torch.get_rng_state()
    AugmentPipe(0.0)(x)
    assert torch.equal(state, torch.get_rng_state())  # p = 0 leaves the training's random stream alone
    pipe = AugmentPipe(1.0)
    n = x.shape[0]
    identity = {"geom": torch.eye(3, dtype=torch.float64).repeat(n, 1, 1),
                "color": torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)}
    assert torch.equal(pipe.apply(x, identity), x)


@pytest.mark.parametrize("op", GEOMETRIC + COLOR)
@pytest.mark.parametrize("channels", [3, 1])
def test_every_op_keeps_shape_and_changes_images_at_p1(op, channels):
    x = images(32, channels)
    y = AugmentPipe(1.0, ops=(op,))(x)
    assert y.shape == x.shape and y.dtype == x.dtype and torch.isfinite(y).all()
    changed = (y - x).flatten(1).abs().amax(1) > 1e-4
    if channels == 1 and op in ("hue", "saturation"):
        assert not changed.any()  # gray has no hue or saturation: skipped
    elif op in ("xflip", "lumaflip", "rotate90", "xint"):
        assert 8 <= changed.sum() < 32  # a discrete draw that is sometimes "no change" (no flip, 0 turns, 0 px)
    else:
        assert changed.all()  # continuous strengths


def test_xflip_mirrors_exactly():
    x = images(32)
    y = AugmentPipe(1.0, ops=("xflip",))(x)
    flipped = [torch.equal(a, b.flip(2)) for a, b in zip(y, x)]
    same = [torch.equal(a, b) for a, b in zip(y, x)]
    assert all(f or s for f, s in zip(flipped, same)) and any(flipped) and any(same)


def test_rotate90_rotates_exactly():
    x = images(32)
    y = AugmentPipe(1.0, ops=("rotate90",))(x)
    turns = []
    for a, b in zip(y, x):
        k = [k for k in range(4) if torch.equal(a, torch.rot90(b, k, dims=(1, 2)))]
        assert len(k) == 1
        turns.append(k[0])
    assert len(set(turns)) == 4


def test_integer_translation_reflects_at_the_edges():
    x = images(1, 3, 8)
    m = translate2d(torch.tensor([-2.0]), torch.tensor([1.0]))  # output(u) = input(u - (2, -1))
    y = AugmentPipe(1.0).apply(x, {"geom": m, "color": torch.eye(4, dtype=torch.float64)[None]})
    padded = np.pad(x[0].numpy(), ((0, 0), (2, 2), (2, 2)), mode="reflect")
    expected = padded[:, 2 + 1:2 + 1 + 8, 2 - 2:2 - 2 + 8]  # rows shifted up by 1, columns right by 2
    np.testing.assert_array_equal(y[0].numpy(), expected)


def test_fractional_geometry_is_filtered_resampling():
    """Sub-pixel shifts and arbitrary rotations sample a smooth image where the matrix says (interior)."""
    pipe = AugmentPipe(1.0)
    x = smooth(32)
    inner = (slice(None), slice(None), slice(8, -8), slice(8, -8))
    # A shift of (0.5, -0.25) px: output(u) = f(u - t).
    t = (0.5, -0.25)
    y = pipe._resample(x, translate2d(torch.tensor([-t[0]]), torch.tensor([-t[1]])))
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    expected = torch.sin(0.4 * (xx - t[0]) + 0.3 * (yy - t[1]))[None, None]
    assert (y - expected)[inner].abs().max() < 0.01
    # A quarter turn through the filtered path agrees with the exact pixel permutation.
    m = rotate2d(torch.tensor([0.0]), torch.tensor([1.0]))
    assert (pipe._resample(x, m) - pipe._gather_exact(x, m))[inner].abs().max() < 0.01
    # A 30-degree rotation of a radially symmetric image (about the centre) changes nothing but the edges.
    r = (((xx - 15.5) ** 2 + (yy - 15.5) ** 2).sqrt() / 4).cos()[None, None]
    c, s = math.cos(math.pi / 6), math.sin(math.pi / 6)
    rot = pipe._resample(r, rotate2d(torch.tensor([c], dtype=torch.float64), torch.tensor([s], dtype=torch.float64)))
    assert (rot - r)[inner].abs().max() < 0.02


def test_colour_ops_do_what_they_say():
    x = images(16)
    luma = x.mean(1)
    y = AugmentPipe(1.0, ops=("brightness",))(x)  # adds the same offset to every channel and pixel
    d = (y - x).flatten(1)
    assert torch.allclose(d, d[:, :1].expand_as(d), atol=1e-6) and d[:, 0].abs().max() > 0.05
    y = AugmentPipe(1.0, ops=("hue",))(x)  # a rotation about the gray axis keeps every pixel's mean
    assert torch.allclose(y.mean(1), luma, atol=1e-5) and (y - x).abs().max() > 0.1
    y = AugmentPipe(1.0, ops=("saturation",))(x)  # scales the colour away from gray, keeps the mean
    assert torch.allclose(y.mean(1), luma, atol=1e-5)
    chroma_ratio = (y - y.mean(1, keepdim=True)).flatten(1).norm(dim=1) / (x - luma[:, None]).flatten(1).norm(dim=1)
    assert chroma_ratio.std() > 0.1  # per-sample factors
    gray = images(16, 1)
    y = AugmentPipe(1.0, ops=("lumaflip",))(gray)  # on gray, lumaflip negates
    assert all(torch.allclose(a, -b) or torch.equal(a, b) for a, b in zip(y, gray))
    y = AugmentPipe(1.0, ops=("contrast",))(gray)
    ratio = (y / gray).flatten(1)
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-4)


# --- gradients -------------------------------------------------------------------------------------


def test_bgc_pipeline_supports_double_backward():
    pipe = AugmentPipe(1.0)
    x = torch.randn(2, 3, 6, 6, dtype=torch.float64, requires_grad=True)
    params = pipe.sample(2, 3, 6)
    params["geom"][0] = params["geom"][0] @ rotate2d(torch.tensor([0.8]), torch.tensor([0.6]))[0]  # resampled
    params["geom"][1] = torch.tensor([[-1.0, 0, 1], [0, 1, 0], [0, 0, 1]], dtype=torch.float64)  # exact
    assert torch.autograd.gradcheck(lambda t: pipe.apply(t, params), x)
    assert torch.autograd.gradgradcheck(lambda t: pipe.apply(t, params), x)


def test_r1_through_augmentation_reaches_d_weights():
    D = Discriminator(img_resolution=16, channel_base=128, channel_max=16)
    D.requires_grad_(True)
    pipe = AugmentPipe(1.0)
    penalty, logits = r1_penalty(D, images(4), pipe)
    assert penalty.shape == (4,) and torch.isfinite(penalty).all() and (penalty > 0).all()
    penalty.sum().backward()  # second order through grid_sample, gathers and the FIR convolutions
    grads = [p.grad for p in D.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    assert D.b16.conv0.weight.grad.abs().sum() > 0


# --- the p controller ------------------------------------------------------------------------------


def test_controller_moves_p_towards_the_target():
    pipe = AugmentPipe(0.0)
    ada = AdaController(pipe, target=0.6, ada_kimg=500, batch=32, interval=4)
    step = 32 * 4 / 500_000
    for _ in range(4):
        ada.accumulate(0.9)  # D says "real" for 95% of reals: overconfident
    assert ada.update() == pytest.approx(0.9)
    assert pipe.p == pytest.approx(step)
    for _ in range(4):
        ada.accumulate(0.2)
    ada.update()
    assert pipe.p == pytest.approx(0.0)
    ada.accumulate(-1.0)
    ada.update()
    assert pipe.p == 0.0  # never negative
    fast = AdaController(pipe, target=0.6, ada_kimg=0.1, batch=32, interval=4)
    for _ in range(3):
        fast.accumulate(1.0)
        fast.update()
    assert pipe.p == pytest.approx(3 * 32 * 4 / 100)  # no upper clamp (p > 1 means "always")
    assert fast.update() is None  # nothing accumulated: no change


# --- in training -----------------------------------------------------------------------------------


FAST = {"config": "tiny", "channel_base": 256, "channel_max": 32, "batch": 8, "device": "cpu", "grid": [4, 2],
        "snapshot_kimg": 0.016, "augment_p": 0.2, "ada_kimg": 1.0}


def train(tmp_path: Path, out: Path, **options) -> list[str]:
    impl = StyleGAN2Trainer()
    frames = tmp_path / "frames"
    if not frames.exists():
        make_frames(frames, count=16)
    ctx = make_context(tmp_path, impl, options={**FAST, **options}, inputs={"frames": frames}, output=out)
    messages: list[str] = []
    ctx.log = ctx.warn = messages.append
    impl.train(ctx)
    return messages


def test_ada_p_is_logged_checkpointed_and_resumed_exactly(tmp_path):
    out_a, out_b = tmp_path / "a", tmp_path / "b"
    train(tmp_path, out_a, kimg=0.048)  # 6 steps: p updates after steps 4 (and would after 8)
    stats = [json.loads(line) for line in (out_a / "stats.jsonl").read_text().splitlines()]
    p = [r["augment_p"] for r in stats]
    assert p[0] == 0.2 and "ada_rt" not in stats[0]
    assert abs(p[1] - 0.2) == pytest.approx(8 * 4 / 1000) or p[1] == 0.2  # one update of +-0.032 (or r_t = target)
    tensors = ckpt.load_checkpoint(out_a / "network-snapshot-000000_048.safetensors")[0]
    assert float(tensors["augment.p"]) == p[-1]
    assert tensors["augment.acc"][1] == 2  # steps 5 and 6 await the next update

    train(tmp_path, out_b, kimg=0.024)  # interrupted mid-interval, then continued
    messages = train(tmp_path, out_b, kimg=0.048)
    assert any("Resuming" in m for m in messages)
    final_b = ckpt.load_checkpoint(out_b / "network-snapshot-000000_048.safetensors")[0]
    assert final_b.keys() == tensors.keys()
    for key in tensors:
        assert torch.equal(tensors[key], final_b[key]), key


def test_fixed_and_none_modes(tmp_path):
    train(tmp_path, tmp_path / "fixed", kimg=0.032, augment="fixed", augment_p=0.5)
    stats = [json.loads(line) for line in (tmp_path / "fixed" / "stats.jsonl").read_text().splitlines()]
    assert [r["augment_p"] for r in stats] == [0.5, 0.5]
    train(tmp_path, tmp_path / "none", kimg=0.016, augment="none")
    line = json.loads((tmp_path / "none" / "stats.jsonl").read_text())
    assert "augment_p" not in line
    assert "augment.p" not in ckpt.load_checkpoint(ckpt.list_checkpoints(tmp_path / "none")[-1])[0]


def test_ada_speed_follows_the_planned_length_of_short_runs():
    """p may move by 1 within a fifth of a run shorter than 2500 kimg, never faster than in 100 kimg (20 when
    resuming); long runs keep the paper's 500 (100 resuming)."""
    from cineml_plugins.stylegan2.presets import ada_speed, resolve

    assert resolve({"config": "tiny", "kimg": 10}, 32, 1).ada_kimg == 100  # the demo: p stays below 0.1
    assert resolve({"config": "tiny", "kimg": 0.5}, 32, 1).ada_kimg == 100
    assert resolve({"config": "auto", "kimg": 200}, 256, 3).ada_kimg == 100  # an evening on a GPU
    assert resolve({"config": "auto", "kimg": 1000}, 256, 3).ada_kimg == 200  # p can reach 1 within a fifth
    for config in ("auto", "stylegan2", "paper256"):  # their own length (25000 kimg): the paper's pace
        assert resolve({"config": config}, 256, 3).ada_kimg == 500
    assert resolve({"config": "stylegan2", "kimg": 10000}, 512, 1).ada_kimg == 500  # the reference film's run
    assert resolve({"config": "auto", "kimg": 2500}, 256, 3).ada_kimg == 500
    assert ada_speed(1000, resume=True) == 100 and ada_speed(300, resume=True) == 60 and ada_speed(1, True) == 20
    assert resolve({"config": "tiny", "kimg": 10, "ada_kimg": 500}, 32, 1).ada_kimg == 500  # the artist's word


def test_ada_climbs_at_its_speed_when_d_overfits(tmp_path):
    """D overfits 16 frames at once; at ada_kimg = 2 p climbs within the run (by up to 0.016 per update
    here), where the paper's pace could not have moved it past 0.0008."""
    out = tmp_path / "out"
    train(tmp_path, out, kimg=0.4, snapshot_kimg=0.4, augment_p=0.0, ada_kimg=2.0, gamma=0.0, mode_seeking=0.0,
          style_mixing=0.9, pl_weight=2.0)
    (line,) = [json.loads(x) for x in (out / "stats.jsonl").read_text().splitlines()]
    assert line["ada_rt"] > 0.6 and line["augment_p"] > 0.05, line


def test_diffaugment_shifts_cuts_out_and_recolours_every_image():
    from cineml_plugins.stylegan2.augment import DiffAugment

    torch.manual_seed(0)
    x = torch.ones(64, 1, 32, 32)
    y = DiffAugment()(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    zeros = (y == 0).flatten(1).float().mean(dim=1)
    assert (zeros >= 0.06).all()  # a cutout of at least a quarter of a 16x16 square in every image
    assert zeros.max() <= 0.25 + 2 * 4 / 32 + 1e-6  # half-side square (1/4) + shifted-in borders (<= 4 px)
    assert len({round(float(v), 4) for v in y[y != 0]}) > 32  # brightness/contrast differ per image
    colour = DiffAugment()(torch.rand(8, 3, 16, 16))
    assert colour.shape == (8, 3, 16, 16)


def test_diffaugment_trains_and_is_twice_differentiable(tmp_path):
    from cineml_plugins.stylegan2.augment import DiffAugment

    D = Discriminator(img_resolution=16, channel_base=128, channel_max=16).requires_grad_(True)
    penalty, _ = r1_penalty(D, images(4), DiffAugment())
    penalty.sum().backward()
    assert D.b16.conv0.weight.grad.abs().sum() > 0
    out = tmp_path / "out"
    train(tmp_path, out, kimg=0.032, augment="diffaugment")
    stats = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    assert [r["augment_p"] for r in stats] == [1.0, 1.0] and "ada_rt" not in stats[-1]
