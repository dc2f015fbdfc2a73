"""StyleGAN2 networks and losses: faithfulness to the reference architecture and the paper's maths."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cineml_plugins.stylegan2 import ops
from cineml_plugins.stylegan2.dataset import FrameDataset
from cineml_plugins.stylegan2.loop import TrainingLoop
from cineml_plugins.stylegan2.loss import path_lengths, r1_penalty
from cineml_plugins.stylegan2.networks import Discriminator, Generator, MinibatchStdLayer, SynthesisLayer, ToRGBLayer
from cineml_plugins.stylegan2.presets import resolve

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def meta_networks(res, channel_base=32768, map_layers=8, img_channels=3):
    with torch.device("meta"):
        G = Generator(img_resolution=res, img_channels=img_channels, channel_base=channel_base, map_layers=map_layers)
        D = Discriminator(img_resolution=res, img_channels=img_channels, channel_base=channel_base)
    return G, D


# Counts measured on the reference implementation (StyleGAN2-ADA, research notes section 1.1).
@pytest.mark.parametrize("res,cbase,maps,ch,g_total,d_total", [
    (256, 32768, 8, 3, 30_034_338, 28_864_129),
    (512, 32768, 8, 3, 30_276_583, 28_982_849),
    (1024, 32768, 8, 3, 30_370_060, 29_012_513),
    (64, 32768, 8, 3, 27_032_600, 26_488_833),
    (64, 32768, 8, 1, 27_027_470, 26_487_809),
    (256, 16384, 2, 3, 23_191_522, 24_001_089),
])
def test_parameter_counts_match_reference(res, cbase, maps, ch, g_total, d_total):
    G, D = meta_networks(res, cbase, maps, ch)
    assert count(G) == g_total
    assert count(D) == d_total
    if (res, cbase, maps) == (256, 32768, 8):
        assert count(G.mapping) == 2_101_248
        assert count(G.synthesis) == 27_933_090
        assert G.num_ws == 14


def test_state_dict_names_and_shapes_follow_reference():
    G, D = meta_networks(256)
    g = {k: tuple(v.shape) for k, v in G.state_dict().items()}
    d = {k: tuple(v.shape) for k, v in D.state_dict().items()}
    assert next(iter(g)).startswith("synthesis.")  # synthesis is registered before mapping
    expected_g = {
        "mapping.fc0.weight": (512, 512), "mapping.fc7.bias": (512,), "mapping.w_avg": (512,),
        "synthesis.b4.const": (512, 4, 4), "synthesis.b4.resample_filter": (4, 4),
        "synthesis.b4.conv1.weight": (512, 512, 3, 3), "synthesis.b4.conv1.noise_strength": (),
        "synthesis.b4.conv1.noise_const": (4, 4), "synthesis.b4.conv1.affine.weight": (512, 512),
        "synthesis.b128.conv0.weight": (256, 512, 3, 3), "synthesis.b128.conv0.affine.bias": (512,),
        "synthesis.b128.conv0.resample_filter": (4, 4), "synthesis.b256.conv1.noise_const": (256, 256),
        "synthesis.b256.torgb.weight": (3, 128, 1, 1), "synthesis.b256.torgb.bias": (3,),
        "synthesis.b256.torgb.affine.weight": (128, 512),
    }
    expected_d = {
        "b256.fromrgb.weight": (128, 3, 1, 1), "b256.fromrgb.bias": (128,), "b256.resample_filter": (4, 4),
        "b256.conv0.weight": (128, 128, 3, 3), "b256.conv1.weight": (256, 128, 3, 3),
        "b256.skip.weight": (256, 128, 1, 1), "b8.conv1.resample_filter": (4, 4),
        "b4.conv.weight": (512, 513, 3, 3), "b4.fc.weight": (512, 8192), "b4.out.weight": (1, 512),
    }
    for k, shape in expected_g.items():
        assert g[k] == shape, k
    for k, shape in expected_d.items():
        assert d[k] == shape, k
    assert "b256.skip.bias" not in d and "b128.fromrgb.weight" not in d  # resnet D: fromrgb only at the top
    assert not any(k.startswith("synthesis.b4.conv0") or ".torgb.resample_filter" in k for k in g)
    # 14 ws at 256: every block's convs plus the last ToRGB
    assert sum(1 for k in g if k.endswith(".affine.weight") and ".torgb." not in k) + 1 == 14


# --- Resampling ---------------------------------------------------------------------------------


def _zero_insert(x):
    """x2 zero insertion without the trailing zero: length 2H-1."""
    n, c, h, w = x.shape
    z = x.new_zeros(n, c, 2 * h - 1, 2 * w - 1)
    z[:, :, ::2, ::2] = x
    return z


def _naive_up_conv(x, weight, f):
    """Definition: zero insertion, full *convolution* with the kernel, FIR (gain 4) with padding 1."""
    full = F.conv2d(_zero_insert(x), weight.flip([2, 3]), padding=2)
    fk = (f * 4).expand(full.shape[1], 1, 4, 4)
    return F.conv2d(F.pad(full, [1, 1, 1, 1]), fk, groups=full.shape[1])


def test_fir_resampling_keeps_constant_images_constant():
    f = ops.make_fir()
    assert torch.allclose(f.sum(), torch.tensor(1.0)) and torch.equal(f, f.t())
    img = torch.full((1, 2, 16, 16), 0.7)
    up = ops.upsample2d(img, f)
    down = ops.downsample2d(img, f)
    assert up.shape[-1] == 32 and down.shape[-1] == 8
    torch.testing.assert_close(up[..., 2:-2, 2:-2], torch.full_like(up[..., 2:-2, 2:-2], 0.7))
    torch.testing.assert_close(down[..., 1:-1, 1:-1], torch.full_like(down[..., 1:-1, 1:-1], 0.7))
    ident = torch.zeros(2, 2, 3, 3)
    ident[0, 0, 1, 1] = ident[1, 1, 1, 1] = 1
    upc = ops.conv3x3_up(img, ident, f)
    downc = ops.conv3x3_down(img, ident, f)
    assert upc.shape[-1] == 32 and downc.shape[-1] == 8
    torch.testing.assert_close(upc[..., 3:-3, 3:-3], torch.full_like(upc[..., 3:-3, 3:-3], 0.7))
    torch.testing.assert_close(downc[..., 1:-1, 1:-1], torch.full_like(downc[..., 1:-1, 1:-1], 0.7))


def test_upsample_matches_zero_insertion_definition():
    f = ops.make_fir()
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    z = x.new_zeros(2, 3, 10, 10)
    z[:, :, ::2, ::2] = x
    ref = F.conv2d(F.pad(z, [2, 1, 2, 1]), (f.double() * 4).expand(3, 1, 4, 4), groups=3)
    torch.testing.assert_close(ops.upsample2d(x, f.double()), ref)
    w = torch.randn(4, 3, 3, 3, dtype=torch.float64)
    up = ops.conv3x3_up(x, w, f.double())
    torch.testing.assert_close(up, _naive_up_conv(x, w, f.double()))
    # Away from the border it is "FIR up-sample, then conv": the order of linear filters does not matter.
    alt = F.conv2d(ops.upsample2d(x, f.double()), w.flip([2, 3]), padding=1)
    torch.testing.assert_close(up[..., 1:-1, 1:-1], alt[..., 1:-1, 1:-1])


# --- Modulated convolution -----------------------------------------------------------------------


def _naive_synthesis_layer(layer: SynthesisLayer, x, w):
    """Per-sample formula from the paper: modulate, demodulate, convolve, + noise, + bias, lrelu * sqrt(2)."""
    styles = w @ (layer.affine.weight / math.sqrt(w.shape[1])).t() + layer.affine.bias
    out = []
    for n in range(x.shape[0]):
        wn = layer.weight * styles[n].reshape(1, -1, 1, 1)
        wn = wn / torch.sqrt((wn ** 2).sum(dim=[1, 2, 3], keepdim=True) + 1e-8)
        if layer.up:
            y = _naive_up_conv(x[n:n + 1], wn, layer.resample_filter)
        else:
            y = F.conv2d(x[n:n + 1], wn, padding=1)
        y = y + layer.noise_const * layer.noise_strength + layer.bias.reshape(1, -1, 1, 1)
        out.append(F.leaky_relu(y, 0.2) * math.sqrt(2))
    return torch.cat(out)


@pytest.mark.parametrize("up", [False, True])
def test_modulated_conv_fused_nonfused_and_naive_agree(up):
    torch.manual_seed(0)
    layer = SynthesisLayer(6, 5, 16, resolution=8, up=up).double()
    with torch.no_grad():
        layer.noise_strength.fill_(0.3)
        layer.bias.normal_()
    x = torch.randn(3, 6, 4 if up else 8, 4 if up else 8, dtype=torch.float64)
    w = torch.randn(3, 16, dtype=torch.float64)
    naive = _naive_synthesis_layer(layer, x, w)
    torch.testing.assert_close(layer(x, w, "const", fused=False), naive)
    torch.testing.assert_close(layer(x, w, "const", fused=True), naive)
    # gradients agree too (incl. second order through demodulation, used by the path-length penalty)
    for fused in (False, True):
        xg = x.clone().requires_grad_(True)
        (g,) = torch.autograd.grad(layer(xg, w, "const", fused=fused).square().sum(), xg, create_graph=True)
        (g_ref,) = torch.autograd.grad(_naive_synthesis_layer(layer, xg, w).square().sum(), xg, create_graph=True)
        torch.testing.assert_close(g, g_ref)


def test_torgb_is_modulated_without_demodulation():
    torch.manual_seed(1)
    layer = ToRGBLayer(8, 3, 16).double()
    x = torch.randn(2, 8, 4, 4, dtype=torch.float64)
    w = torch.randn(2, 16, dtype=torch.float64)
    styles = (w @ (layer.affine.weight / 4).t() + layer.affine.bias) / math.sqrt(8)
    ref = torch.stack([F.conv2d(x[n:n + 1], layer.weight * styles[n].reshape(1, -1, 1, 1), layer.bias)[0]
                       for n in range(2)])
    torch.testing.assert_close(layer(x, w), ref)


def test_demodulation_gives_unit_variance():
    torch.manual_seed(2)
    layer = SynthesisLayer(64, 64, 32, resolution=32)
    with torch.no_grad():
        layer.weight.mul_(7.0)  # any weight scale: demodulation removes it
    x = torch.randn(8, 64, 32, 32)
    w = torch.randn(8, 32) * 3
    with torch.no_grad():
        y = layer(x, w, "none") / math.sqrt(2)  # undo the activation gain
    inner = y[..., 1:-1, 1:-1]
    # y = lrelu(z) with z ~ N(0, 1):  E[y^2] = 0.5 + 0.5 * 0.2^2
    assert inner.square().mean().item() == pytest.approx(0.52, rel=0.03)
    # per output channel too (each is demodulated separately)
    per_channel = (inner.square().mean(dim=[0, 2, 3]) / 0.52)
    assert per_channel.min() > 0.85 and per_channel.max() < 1.15


# --- Generator / discriminator ----------------------------------------------------------------------


def tiny_networks(res=16, img_channels=3, seed=0):
    torch.manual_seed(seed)
    G = Generator(z_dim=32, w_dim=32, img_resolution=res, img_channels=img_channels, channel_base=256,
                  channel_max=32, map_layers=2)
    D = Discriminator(img_resolution=res, img_channels=img_channels, channel_base=256, channel_max=32)
    return G, D


@pytest.mark.parametrize("res,img_channels", [(4, 3), (16, 3), (32, 1)])
def test_shapes_any_power_of_two_and_grayscale(res, img_channels):
    G, D = tiny_networks(res, img_channels)
    z = torch.randn(4, 32)
    img = G(z)
    assert img.shape == (4, img_channels, res, res)
    assert D(img).shape == (4, 1)
    assert G.num_ws == 2 * int(math.log2(res)) - 2


def test_noise_modes():
    G, _ = tiny_networks()
    for layer in G.modules():
        if isinstance(layer, SynthesisLayer):
            layer.noise_strength.data.fill_(0.5)
    z = torch.randn(2, 32)
    torch.testing.assert_close(G(z, noise_mode="const"), G(z, noise_mode="const"))
    assert not torch.allclose(G(z, noise_mode="random"), G(z, noise_mode="random"))
    assert not torch.allclose(G(z, noise_mode="const"), G(z, noise_mode="none"))
    with pytest.raises(ValueError):
        G(z, noise_mode="loud")


def test_truncation_psi_zero_gives_w_avg():
    G, _ = tiny_networks()
    z = torch.randn(64, 32)
    G.mapping(z, update_w_avg=True)
    w_avg = G.mapping.w_avg.clone()
    assert w_avg.abs().sum() > 0
    ws = G.mapping(torch.randn(5, 32), truncation_psi=0.0)
    torch.testing.assert_close(ws, w_avg.expand_as(ws))
    ws_cut = G.mapping(torch.randn(5, 32), truncation_psi=0.0, truncation_cutoff=3)
    torch.testing.assert_close(ws_cut[:, :3], w_avg.expand(5, 3, -1))
    assert not torch.allclose(ws_cut[:, 3:], w_avg.expand(5, G.num_ws - 3, -1))
    # w_avg follows a moving average with beta 0.995
    batch = torch.randn(16, 32)
    w_new = G.mapping(batch, update_w_avg=True)[:, 0].mean(0)
    torch.testing.assert_close(G.mapping.w_avg, w_new.detach().lerp(w_avg, 0.995))


def test_same_seed_same_networks_and_images():
    G1, D1 = tiny_networks(seed=3)
    G2, D2 = tiny_networks(seed=3)
    G3, _ = tiny_networks(seed=4)
    for a, b in zip(list(G1.state_dict().values()) + list(D1.state_dict().values()),
                    list(G2.state_dict().values()) + list(D2.state_dict().values())):
        assert torch.equal(a, b)
    z = torch.randn(3, 32, generator=torch.Generator().manual_seed(9))
    assert torch.equal(G1(z), G2(z))
    assert not torch.allclose(G1(z), G3(z))


def test_minibatch_stddev_groups_samples_by_index_modulo():
    layer = MinibatchStdLayer(group_size=2)
    x = torch.randn(4, 3, 2, 2)
    y = layer(x)
    assert y.shape == (4, 4, 2, 2)
    # group size 2 over 4 samples: samples {0, 2} and {1, 3} form the groups
    for members in ((0, 2), (1, 3)):
        g = x[list(members)]
        expected = (g.var(dim=0, unbiased=False) + 1e-8).sqrt().mean()
        for i in members:
            torch.testing.assert_close(y[i, 3], torch.full((2, 2), expected.item()))


# --- Regularisers ---------------------------------------------------------------------------------


def test_r1_penalty_matches_autograd_jacobian():
    _, D = tiny_networks(res=8)
    D = D.double()
    real = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    penalty, _ = r1_penalty(D, real)
    jac = torch.autograd.functional.jacobian(lambda x: D(x).sum(), real)  # d(sum of logits)/dx
    torch.testing.assert_close(penalty, jac.square().sum(dim=[1, 2, 3]))
    # second order: the penalty's gradient w.r.t. a D weight is correct (double backward through FIR convs)
    weight = D.b8.conv1.weight

    def r1_of(w):
        old = weight.data.clone()
        weight.data.copy_(w)
        try:
            return r1_penalty(D, real)[0].sum()
        finally:
            weight.data.copy_(old)

    (analytic,) = torch.autograd.grad(r1_penalty(D, real)[0].sum(), weight)
    idx = (0, 1, 2, 1)
    eps = 1e-6
    plus, minus = weight.detach().clone(), weight.detach().clone()
    plus[idx] += eps
    minus[idx] -= eps
    numeric = (r1_of(plus) - r1_of(minus)) / (2 * eps)
    assert analytic[idx].item() == pytest.approx(numeric.item(), rel=1e-4, abs=1e-8)


def test_path_length_matches_explicit_jacobian():
    G, _ = tiny_networks(res=8)
    G = G.double()
    for layer in G.modules():
        if isinstance(layer, SynthesisLayer):
            layer.noise_strength.data.fill_(0.2)
    ws = G.mapping(torch.randn(2, 32, dtype=torch.float64)).detach().clone().requires_grad_(True)
    img = G.synthesis(ws, noise_mode="const")
    noise = torch.randn_like(img) / math.sqrt(64)
    lengths = path_lengths(img, ws, noise)
    # J^T y by central differences, independently of autograd (samples do not interact in synthesis)
    jty = torch.zeros_like(ws)
    eps = 1e-6
    with torch.no_grad():
        for k in range(ws.shape[1]):
            for d in range(ws.shape[2]):
                step = torch.zeros_like(ws)
                step[:, k, d] = eps
                plus = (G.synthesis(ws + step, noise_mode="const") * noise).sum(dim=[1, 2, 3])
                minus = (G.synthesis(ws - step, noise_mode="const") * noise).sum(dim=[1, 2, 3])
                jty[:, k, d] = (plus - minus) / (2 * eps)
    expected = jty.square().sum(dim=2).mean(dim=1).sqrt()
    torch.testing.assert_close(lengths.detach(), expected, rtol=1e-6, atol=1e-9)


# --- EMA -------------------------------------------------------------------------------------------


def test_ema_update_follows_half_life():
    ds = FrameDataset(np.zeros((4, 3, 8, 8), dtype=np.uint8))
    s = resolve({"config": "tiny", "channel_base": 64, "channel_max": 16, "batch": 4, "ema_kimg": 0.01}, 8, 3)
    s.ema_rampup = None
    loop = TrainingLoop(s, ds)
    before = {k: v.clone() for k, v in loop.G_ema.state_dict().items()}
    with torch.no_grad():
        for p in loop.G.parameters():
            p.add_(1.0)
        loop.G.mapping.w_avg.add_(5.0)
    loop.update_ema()
    beta = 0.5 ** (4 / 10)  # batch 4, half-life 10 images
    g = loop.G.state_dict()
    for k, v in loop.G_ema.state_dict().items():
        if k.endswith(("w_avg", "noise_const", "resample_filter")):
            torch.testing.assert_close(v, g[k])  # buffers are copied
        else:
            torch.testing.assert_close(v, g[k].lerp(before[k], beta))
