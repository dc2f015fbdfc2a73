"""Safe import of networks from elsewhere: stylegan2-ada-pytorch pickles and rosinality checkpoints.

The pickles are written here in the reference format from CineML's own (tiny) networks: every module
is reduced to ``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with its module source and
``__dict__`` state, tensors are pickled by torch itself (``_rebuild_tensor_v2`` / ``_rebuild_parameter``
/ ``torch.storage._load_from_bytes``), nested settings are ``dnnlib.util.EasyDict``s and gains are numpy
float64 scalars -- stylegan2.md §4.1. Fake ``torch_utils``/``dnnlib`` modules exist only while pickling.
"""

from __future__ import annotations

import contextlib
import io
import os
import pickle
import subprocess
import sys
import types
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cineml import CinemlError
from cineml_plugins.stylegan2 import checkpoints as ckpt
from cineml_plugins.stylegan2.legacy import import_network, read_pickle, write_checkpoint
from cineml_plugins.stylegan2.networks import Discriminator, Generator

TINY = dict(z_dim=32, w_dim=32, img_resolution=16, img_channels=3, channel_base=256, channel_max=64, map_layers=2)
SG2_SRC = "class SynthesisLayer(torch.nn.Module): ...\nclass SynthesisBlock(torch.nn.Module): ...\n"
SG3_SRC = "class SynthesisInput(torch.nn.Module): ...\nclass SynthesisLayer(torch.nn.Module): ...\n"


def tiny_generator(seed: int = 0, **kw) -> Generator:
    """A tiny G with non-trivial noise strengths and w_avg, so every tensor matters."""
    torch.manual_seed(seed)
    G = Generator(**{**TINY, **kw})
    with torch.no_grad():
        for m in G.modules():
            if hasattr(m, "noise_strength"):
                m.noise_strength.uniform_(0.1, 0.5)
            if hasattr(m, "bias") and isinstance(m.bias, torch.nn.Parameter):
                m.bias.normal_(0, 0.1)
        G.mapping.w_avg.normal_()
    return G.eval()


def tiny_discriminator(seed: int = 1, **kw) -> Discriminator:
    torch.manual_seed(seed)
    return Discriminator(**{k: v for k, v in {**TINY, **kw}.items()
                            if k in ("c_dim", "img_resolution", "img_channels", "channel_base", "channel_max")}).eval()


class AugmentPipe(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("p", torch.tensor(0.25))


def ref_g_kwargs(G: Generator) -> dict:
    k = G.init_kwargs
    return dict(z_dim=k["z_dim"], c_dim=k["c_dim"], w_dim=k["w_dim"], img_resolution=k["img_resolution"],
                img_channels=k["img_channels"], mapping_kwargs=dict(num_layers=k["map_layers"]),
                synthesis_kwargs=dict(channel_base=k["channel_base"], channel_max=k["channel_max"], num_fp16_res=4,
                                      conv_clamp=k["conv_clamp"]))


def ref_d_kwargs(D: Discriminator) -> dict:
    k = D.init_kwargs
    return dict(c_dim=k["c_dim"], img_resolution=k["img_resolution"], img_channels=k["img_channels"],
                architecture="resnet", channel_base=k["channel_base"], channel_max=k["channel_max"], num_fp16_res=4,
                conv_clamp=None, cmap_dim=None, block_kwargs={}, mapping_kwargs={},
                epilogue_kwargs=dict(mbstd_group_size=k["mbstd_group_size"]))


@contextlib.contextmanager
def fake_reference_modules():
    """``torch_utils.persistence`` and ``dnnlib.util`` as the pickler needs them to name globals."""
    mods = {name: types.ModuleType(name) for name in ("torch_utils", "torch_utils.persistence", "dnnlib",
                                                       "dnnlib.util")}

    def _reconstruct_persistent_obj(meta):  # never called: the importer maps this global to a stub
        raise AssertionError("the importer must not call the pickled reconstructor")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    mods["torch_utils.persistence"]._reconstruct_persistent_obj = _reconstruct_persistent_obj
    easy = type("EasyDict", (dict,), {"__module__": "dnnlib.util", "__qualname__": "EasyDict"})
    mods["dnnlib.util"].EasyDict = easy
    saved = {n: sys.modules.get(n) for n in mods}
    sys.modules.update(mods)
    try:
        yield _reconstruct_persistent_obj, easy
    finally:
        for n, m in saved.items():
            if m is None:
                sys.modules.pop(n, None)
            else:
                sys.modules[n] = m


def easydicts(value, easy):
    if isinstance(value, dict):
        return easy({k: easydicts(v, easy) for k, v in value.items()})
    return value


def write_reference_pickle(path: Path, nets: dict, init_kwargs: dict, module_src: str = SG2_SRC,
                           protocol: int = 3, extra_state: dict | None = None, class_names: dict | None = None) -> None:
    """Pickle ``nets`` ({"G": module, ...}) the way stylegan2-ada-pytorch's training loop does."""
    with fake_reference_modules() as (reconstruct, easy):

        class ReferencePickler(pickle.Pickler):
            def reducer_override(self, obj):
                if not isinstance(obj, torch.nn.Module):
                    return NotImplemented
                state = {k: v for k, v in obj.__dict__.items() if k != "init_kwargs"}
                for key in ("_parameters", "_buffers", "_modules"):
                    state[key] = OrderedDict(state[key])
                for key in ("weight_gain", "bias_gain", "act_gain"):
                    if isinstance(state.get(key), float):
                        state[key] = np.float64(state[key])  # the reference stores numpy scalars
                state["_init_args"] = ()
                state["_init_kwargs"] = easydicts(init_kwargs.get(id(obj), {}), easy)
                state.update((extra_state or {}).get(id(obj), {}))
                name = (class_names or {}).get(id(obj), type(obj).__name__)
                meta = dict(type="class", version=6, module_src=module_src, class_name=name, state=state)
                return reconstruct, (meta,), None

        data = {"G": None, "D": None, "G_ema": None, "training_set_kwargs": dict(path="frames.zip", resolution=16),
                "augment_pipe": None, **nets}
        with open(path, "wb") as f:
            ReferencePickler(f, protocol=protocol).dump(data)


def reference_pickle(tmp_path: Path, G: Generator, D: Discriminator | None = None, name: str = "net.pkl",
                     **kw) -> Path:
    path = tmp_path / name
    nets = {"G": G, "G_ema": G}
    kwargs = {id(G): ref_g_kwargs(G)}
    if D is not None:
        nets["D"] = D
        kwargs[id(D)] = ref_d_kwargs(D)
    aug = AugmentPipe()
    nets["augment_pipe"] = aug
    write_reference_pickle(path, nets, kwargs, **kw)
    return path


def z_for(seed: int, z_dim: int) -> torch.Tensor:
    return torch.from_numpy(np.random.RandomState(seed).randn(1, z_dim).astype(np.float32))


# --- Round trips -----------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [3, 4])
def test_pickle_round_trip_is_exact(tmp_path, protocol):
    G, D = tiny_generator(), tiny_discriminator()
    path = reference_pickle(tmp_path, G, D, protocol=protocol)
    imp = import_network(path)
    assert imp.format == "stylegan2-ada-pytorch pickle"
    for mine, theirs in ((G, imp.G_ema), (G, imp.G), (D, imp.D)):
        a, b = mine.state_dict(), theirs.state_dict()
        assert list(a) == list(b)
        for k in a:
            assert torch.equal(a[k], b[k]), k
    assert imp.G_ema.init_kwargs == G.init_kwargs
    assert imp.info["augment_p"] == pytest.approx(0.25)
    assert imp.info["training_set_kwargs"] == {"path": "frames.zip", "resolution": 16}
    with torch.no_grad():
        for seed in (0, 7):
            z = z_for(seed, G.z_dim)
            for psi in (1.0, 0.5):
                want = G(z, truncation_psi=psi, noise_mode="const")
                got = imp.G_ema(z, truncation_psi=psi, noise_mode="const")
                assert (want - got).abs().max().item() <= 1e-5
        img = torch.randn(2, 3, 16, 16)
        assert torch.allclose(D(img), imp.D(img), atol=1e-5)


def test_import_never_runs_module_source(tmp_path):
    marker = tmp_path / "pwned"
    src = f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\nclass SynthesisBlock: pass\n"
    path = reference_pickle(tmp_path, tiny_generator(), module_src=src)
    imp = import_network(path)
    assert not marker.exists()
    assert len(imp.info["module_src_sha256"]) == 64


def test_grayscale_and_conditional_networks_import(tmp_path):
    G = tiny_generator(img_channels=1, c_dim=5)
    D = tiny_discriminator(img_channels=1, c_dim=5)
    imp = import_network(reference_pickle(tmp_path, G, D))
    c = torch.zeros(1, 5)
    c[0, 2] = 1
    with torch.no_grad():
        z = z_for(3, G.z_dim)
        out = imp.G_ema(z, c, noise_mode="const")
        assert out.shape == (1, 1, 16, 16)
        assert (out - G(z, c, noise_mode="const")).abs().max().item() <= 1e-5
        img = torch.randn(2, 1, 16, 16)
        assert torch.allclose(D(img, c.repeat(2, 1)), imp.D(img, c.repeat(2, 1)), atol=1e-5)


def test_imported_network_becomes_a_cineml_checkpoint(tmp_path):
    G, D = tiny_generator(), tiny_discriminator()
    imp = import_network(reference_pickle(tmp_path, G, D))
    out = write_checkpoint(imp, tmp_path / "net.safetensors")
    tensors, state = ckpt.load_checkpoint(out)
    assert state["G_kwargs"] == G.init_kwargs and state["settings"]["resolution"] == 16
    assert state["imported"]["format"] == "stylegan2-ada-pytorch pickle"
    G2 = ckpt.load_generator(out)
    z = z_for(1, G.z_dim)
    with torch.no_grad():
        assert (G2(z) - G(z)).abs().max().item() <= 1e-5
    assert {k.split(".")[0] for k in tensors} == {"G", "D", "G_ema"}


# --- Malicious and unsupported files -------------------------------------------------------------


class _Reduce:
    def __init__(self, func, *args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize("make", [
    lambda m: _Reduce(os.system, f"touch {m}"),
    lambda m: _Reduce(exec, f"open({str(m)!r}, 'w').write('x')"),
    lambda m: _Reduce(subprocess.call, ["touch", str(m)]),
    lambda m: _Reduce(eval, f"__import__('pathlib').Path({str(m)!r}).touch()"),
], ids=["os.system", "builtins.exec", "subprocess.call", "builtins.eval"])
def test_malicious_pickles_are_refused_without_side_effects(tmp_path, make):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pkl"
    path.write_bytes(pickle.dumps({"G_ema": make(marker)}))
    with pytest.raises(CinemlError) as err:
        import_network(path)
    assert not marker.exists()
    msg = str(err.value)
    assert "nothing in it was run" in msg
    assert any(name in msg for name in ("system", "exec", "subprocess", "eval"))


def test_payload_hidden_inside_a_network_is_refused(tmp_path):
    marker = tmp_path / "marker"
    G = tiny_generator()
    path = reference_pickle(tmp_path, G, extra_state={id(G): {"payload": _Reduce(os.system, f"touch {marker}")}})
    with pytest.raises(CinemlError, match=r"(posix|os|nt)\.system"):
        import_network(path)
    assert not marker.exists()


def test_torch_load_payload_in_a_storage_is_refused(tmp_path):
    """A storage blob is itself a pickle: it is read with weights_only=True, so code in it is refused too."""
    marker = tmp_path / "marker"
    blob = pickle.dumps(_Reduce(os.system, f"touch {marker}"), protocol=2)
    data = pickle.dumps({"G_ema": _Reduce(torch.storage._load_from_bytes, blob)})
    path = tmp_path / "evil.pkl"
    path.write_bytes(data)
    with pytest.raises(CinemlError):
        import_network(path)
    assert not marker.exists()


def test_stylegan3_networks_are_refused_clearly(tmp_path):
    G = tiny_generator()
    path = reference_pickle(tmp_path, G, module_src=SG3_SRC)
    with pytest.raises(CinemlError, match="StyleGAN3 .* not supported"):
        import_network(path)


def test_unsupported_architecture_and_settings_are_named(tmp_path):
    G = tiny_generator()
    kw = ref_g_kwargs(G)
    kw["synthesis_kwargs"]["architecture"] = "resnet"
    path = tmp_path / "resnet.pkl"
    write_reference_pickle(path, {"G_ema": G}, {id(G): kw})
    with pytest.raises(CinemlError, match="architecture='resnet'"):
        import_network(path)
    kw = ref_g_kwargs(G)
    kw["synthesis_kwargs"]["magic_layers"] = 3
    write_reference_pickle(path, {"G_ema": G}, {id(G): kw})
    with pytest.raises(CinemlError, match="magic_layers=3"):
        import_network(path)


def test_shape_mismatch_names_the_tensor(tmp_path):
    G = tiny_generator()
    kw = ref_g_kwargs(G)
    kw["synthesis_kwargs"]["channel_max"] = 32  # the tensors say 64
    path = tmp_path / "bad.pkl"
    write_reference_pickle(path, {"G_ema": G}, {id(G): kw})
    with pytest.raises(CinemlError, match=r"tensor G_ema\.synthesis\.b\d+\.\S+ has shape"):
        import_network(path)


def test_non_network_files_are_refused(tmp_path):
    path = tmp_path / "dict.pkl"
    path.write_bytes(pickle.dumps({"hello": [1, 2, 3]}))
    with pytest.raises(CinemlError, match="not a StyleGAN2 network snapshot"):
        import_network(path)
    path = tmp_path / "tf.pkl"
    path.write_bytes(b"\x80\x02cdnnlib.tflib.network\nNetwork\nq\x00.")
    with pytest.raises(CinemlError, match="TensorFlow-era"):
        import_network(path)
    path = tmp_path / "junk.pkl"
    path.write_bytes(b"\x80\x04not really a pickle")
    with pytest.raises(CinemlError, match="not a readable"):
        import_network(path)
    with pytest.raises(CinemlError, match="no such file"):
        import_network(tmp_path / "missing.pkl")


def test_reader_only_builds_inert_records(tmp_path):
    G = tiny_generator()
    data = read_pickle(reference_pickle(tmp_path, G))
    stub = data["G_ema"]
    assert type(stub).__name__ == "PersistentStub" and stub.class_name == "Generator"
    assert stub.child("synthesis").class_name == "SynthesisNetwork"
    assert isinstance(stub.state["_init_kwargs"]["mapping_kwargs"], dict)
    assert "torch_utils" not in sys.modules and "dnnlib" not in sys.modules


# --- rosinality -----------------------------------------------------------------------------------


def rosinality_state(size: int, style_dim: int, n_mlp: int, multiplier: int = 2, seed: int = 0) -> dict:
    """A random g_ema state dict with rosinality's exact names, shapes and layouts (model.py, Generator)."""
    g = torch.Generator().manual_seed(seed)
    rnd = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    ch = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * multiplier, 128: 128 * multiplier, 256: 64 * multiplier}
    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    kernel = torch.outer(k, k) / 64 * 4  # make_kernel (sum 1) * factor ** 2
    sd = {}
    for i in range(1, n_mlp + 1):
        sd[f"style.{i}.weight"], sd[f"style.{i}.bias"] = rnd(style_dim, style_dim) * 100, rnd(style_dim) * 0.1

    def styled(name, cin, cout, up):
        sd[f"{name}.conv.weight"] = rnd(1, cout, cin, 3, 3)
        if up:
            sd[f"{name}.conv.blur.kernel"] = kernel.clone()
        sd[f"{name}.conv.modulation.weight"] = rnd(cin, style_dim)
        sd[f"{name}.conv.modulation.bias"] = 1 + 0.1 * rnd(cin)
        sd[f"{name}.noise.weight"] = 0.2 + 0.1 * rnd(1)
        sd[f"{name}.activate.bias"] = 0.1 * rnd(cout)

    def torgb(name, cin, up):
        if up:
            sd[f"{name}.upsample.kernel"] = kernel.clone()
        sd[f"{name}.conv.weight"] = rnd(1, 3, cin, 1, 1)
        sd[f"{name}.conv.modulation.weight"] = rnd(cin, style_dim)
        sd[f"{name}.conv.modulation.bias"] = 1 + 0.1 * rnd(cin)
        sd[f"{name}.bias"] = 0.1 * rnd(1, 3, 1, 1)

    sd["input.input"] = rnd(1, ch[4], 4, 4)
    styled("conv1", ch[4], ch[4], False)
    torgb("to_rgb1", ch[4], False)
    log_size = int(np.log2(size))
    cin = ch[4]
    for i, level in enumerate(range(3, log_size + 1)):
        cout = ch[2 ** level]
        styled(f"convs.{2 * i}", cin, cout, True)
        styled(f"convs.{2 * i + 1}", cout, cout, False)
        torgb(f"to_rgbs.{i}", cout, True)
        cin = cout
    for i in range((log_size - 2) * 2 + 1):
        res = 2 ** ((i + 5) // 2)
        sd[f"noises.noise_{i}"] = rnd(1, 1, res, res)
    return sd


def _upfirdn(x, kernel, up, pad):
    """Zero-insertion up-sampling, padding and a true convolution with ``kernel`` (rosinality's upfirdn2d)."""
    n, c, h, w = x.shape
    if up > 1:
        y = x.new_zeros(n, c, h * up, w * up)
        y[:, :, ::up, ::up] = x
        x = y
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    return F.conv2d(x, kernel.flip([0, 1]).expand(c, 1, *kernel.shape), groups=c)


def rosinality_forward(sd: dict, z: torch.Tensor, n_mlp: int, log_size: int, truncation: float = 1.0,
                       truncation_latent: torch.Tensor | None = None) -> torch.Tensor:
    """rosinality's Generator.forward, written out from its model.py conventions (constant noise)."""
    lrelu = lambda x, b: F.leaky_relu(x + b.reshape(1, -1, *[1] * (x.ndim - 2)), 0.2) * 2 ** 0.5  # noqa: E731
    x = z * torch.rsqrt(z.pow(2).mean(1, keepdim=True) + 1e-8)
    for i in range(1, n_mlp + 1):
        w, b = sd[f"style.{i}.weight"], sd[f"style.{i}.bias"]
        x = lrelu(F.linear(x, w * (0.01 / w.shape[1] ** 0.5)), b * 0.01)
    if truncation < 1:
        x = truncation_latent + truncation * (x - truncation_latent)
    latent = x.unsqueeze(1).repeat(1, log_size * 2 - 2, 1)

    def modconv(name, inp, style, demod=True, up=False):
        weight = sd[f"{name}.weight"]
        mw, mb = sd[f"{name}.modulation.weight"], sd[f"{name}.modulation.bias"]
        s = F.linear(style, mw * (1 / mw.shape[1] ** 0.5), mb)
        batch, cin, h, wd = inp.shape
        k = weight.shape[-1]
        wgt = (1 / (cin * k * k) ** 0.5) * weight * s.view(batch, 1, cin, 1, 1)
        if demod:
            wgt = wgt * torch.rsqrt(wgt.pow(2).sum([2, 3, 4]) + 1e-8).view(batch, -1, 1, 1, 1)
        cout = wgt.shape[1]
        if up:
            wgt = wgt.transpose(1, 2).reshape(batch * cin, cout, k, k)
            out = F.conv_transpose2d(inp.view(1, batch * cin, h, wd), wgt, stride=2, groups=batch)
            out = out.view(batch, cout, *out.shape[2:])
            return _upfirdn(out, sd[f"{name}.blur.kernel"], 1, (1, 1))
        out = F.conv2d(inp.view(1, batch * cin, h, wd), wgt.reshape(batch * cout, cin, k, k), padding=k // 2,
                       groups=batch)
        return out.view(batch, cout, h, wd)

    def styled(name, inp, style, noise, up=False):
        out = modconv(f"{name}.conv", inp, style, up=up)
        out = out + sd[f"{name}.noise.weight"] * noise
        return lrelu(out, sd[f"{name}.activate.bias"])

    def torgb(name, inp, style, skip=None):
        out = modconv(f"{name}.conv", inp, style, demod=False) + sd[f"{name}.bias"]
        if skip is not None:
            out = out + _upfirdn(skip, sd[f"{name}.upsample.kernel"], 2, (2, 1))
        return out

    noise = [sd[f"noises.noise_{i}"] for i in range((log_size - 2) * 2 + 1)]
    out = sd["input.input"].repeat(z.shape[0], 1, 1, 1)
    out = styled("conv1", out, latent[:, 0], noise[0])
    skip = torgb("to_rgb1", out, latent[:, 1])
    i = 1
    for j in range(log_size - 2):
        out = styled(f"convs.{2 * j}", out, latent[:, i], noise[2 * j + 1], up=True)
        out = styled(f"convs.{2 * j + 1}", out, latent[:, i + 1], noise[2 * j + 2])
        skip = torgb(f"to_rgbs.{j}", out, latent[:, i + 2], skip)
        i += 2
    return skip


def test_rosinality_checkpoint_imports_with_its_conventions(tmp_path):
    import argparse

    sd = rosinality_state(size=16, style_dim=64, n_mlp=2)
    latent_avg = torch.randn(64)
    path = tmp_path / "000100.pt"
    torch.save({"g_ema": sd, "g": sd, "latent_avg": latent_avg, "ada_aug_p": 0.1,
                "args": argparse.Namespace(size=16, latent=64, n_mlp=2, channel_multiplier=2)}, path)
    imp = import_network(path)
    assert imp.format == "rosinality checkpoint" and imp.D is None and imp.G is not None
    G = imp.G_ema
    assert (G.img_resolution, G.img_channels, G.z_dim, G.w_dim, G.num_ws) == (16, 3, 64, 64, 6)
    assert torch.equal(G.synthesis.b8.conv0.weight, sd["convs.0.conv.weight"][0])
    assert torch.equal(G.synthesis.b16.torgb.bias, sd["to_rgbs.1.bias"].flatten())
    assert torch.equal(G.synthesis.b16.conv1.noise_const, sd["noises.noise_4"][0, 0])
    assert torch.equal(G.mapping.w_avg, latent_avg)
    z = torch.randn(2, 64)
    with torch.no_grad():
        want = rosinality_forward(sd, z, n_mlp=2, log_size=4)
        got = G(z, noise_mode="const")
        assert (want - got).abs().max().item() < 1e-4 * want.abs().max().item()
        want = rosinality_forward(sd, z, 2, 4, truncation=0.5, truncation_latent=latent_avg)
        got = G(z, truncation_psi=0.5, noise_mode="const")
        assert (want - got).abs().max().item() < 1e-4 * want.abs().max().item()


def test_rosinality_without_latent_avg_and_with_wrong_layout(tmp_path):
    sd = rosinality_state(size=8, style_dim=32, n_mlp=1)
    path = tmp_path / "g.pt"
    torch.save({"g_ema": sd}, path)
    imp = import_network(path)
    assert "computed" in imp.info["w_avg"] and imp.G_ema.mapping.w_avg.abs().sum() > 0
    sd["convs.0.conv.weight"] = sd["convs.0.conv.weight"][0]  # [O,I,k,k] instead of [1,O,I,k,k]
    torch.save({"g_ema": sd}, path)
    with pytest.raises(CinemlError, match=r"tensor g_ema\.convs\.0\.conv\.weight has shape"):
        import_network(path)


def test_rosinality_payload_is_refused(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.pt"
    torch.save({"g_ema": {}, "x": _Reduce(os.system, f"touch {marker}")}, path)
    with pytest.raises(CinemlError, match="could not be read.*unsupported GLOBAL posix.system") as err:
        import_network(path)
    assert not marker.exists()
    assert "weights_only" not in str(err.value) and "\x1b" not in str(err.value)  # no advice to load unsafely


def test_formats_are_told_apart_by_content_not_suffix(tmp_path):
    """A renamed file goes to the reader its content needs; each reader stays the safe one."""
    G = tiny_generator()
    pkl = reference_pickle(tmp_path, G, name="network-snapshot-000100.pt")  # a StyleGAN2-ADA pickle
    imp = import_network(pkl)
    assert imp.format == "stylegan2-ada-pytorch pickle"
    assert torch.equal(imp.G_ema.synthesis.b16.torgb.weight, G.synthesis.b16.torgb.weight)
    sd = rosinality_state(size=8, style_dim=32, n_mlp=1)
    for name, zip_format in (("zip.pkl", True), ("old.pkl", False)):  # torch.save's zip and pre-1.6 formats
        torch.save({"g_ema": sd}, tmp_path / name, _use_new_zipfile_serialization=zip_format)
        assert import_network(tmp_path / name).format == "rosinality checkpoint"
    marker = tmp_path / "marker"
    evil = tmp_path / "evil.pt"
    evil.write_bytes(pickle.dumps(_Reduce(os.system, f"touch {marker}")))
    with pytest.raises(CinemlError, match="refused"):
        import_network(evil)
    assert not marker.exists()


def test_safe_unpickler_handles_plain_torch_tensors(tmp_path):
    """The same tensor records torch writes for any pickled tensor and parameter load as equal tensors."""
    from cineml_plugins.stylegan2.legacy import SafeUnpickler

    t, p = torch.randn(3, 4), torch.nn.Parameter(torch.randn(5))
    out = SafeUnpickler(io.BytesIO(pickle.dumps(OrderedDict(t=t, p=p, s=t[1:], n=np.float64(0.5))))).load()
    assert torch.equal(out["t"], t) and torch.equal(out["p"], p.detach()) and torch.equal(out["s"], t[1:])
    assert out["n"] == 0.5


def test_a_refused_tensor_storage_never_suggests_the_unsafe_load(tmp_path):
    """A .pkl whose tensor storage holds a pickle that torch's weights-only loader refuses: the error says
    so without passing on torch's advice to load it with weights_only=False (which would run it)."""
    import argparse
    import io
    import pickle

    payload = io.BytesIO()
    torch.save(argparse.Namespace(run="anything"), payload)

    class Storage:
        def __reduce__(self):
            return torch.storage._load_from_bytes, (payload.getvalue(),)

    path = tmp_path / "net.pkl"
    path.write_bytes(pickle.dumps({"G_ema": Storage()}, protocol=4))
    with pytest.raises(CinemlError) as err:
        read_pickle(path)
    message = str(err.value)
    assert "not a readable StyleGAN2 network pickle" in message and "nothing in it was run" in message
    assert "weights_only" not in message
