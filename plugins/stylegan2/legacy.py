"""Import networks trained elsewhere without running any code from the file.

Two formats:

* **stylegan2-ada-pytorch pickles** (``network-snapshot-*.pkl``; also stylegan3's ``--cfg=stylegan2``
  networks). Each network in them is pickled as ``torch_utils.persistence._reconstruct_persistent_obj(meta)``
  where ``meta`` carries the class's whole module source, to be ``exec``-ed on a normal load. Here a
  restricted unpickler resolves only an allow-list of globals (everything else is refused before it
  can be called), the persistent objects become inert :class:`PersistentStub` records (their source is
  hashed, never run), tensors are rebuilt by torch's own assembly functions and storages are read with
  ``torch.load(weights_only=True)``. The architecture is rebuilt from each network's recorded
  ``_init_kwargs`` and every tensor is copied name for name into CineML's networks.
* **rosinality stylegan2-pytorch checkpoints** (``.pt``: ``{"g_ema": state_dict, "g", "d", "latent_avg",
  "args", ...}``), read with ``torch.load(weights_only=True)``; only the generators are imported (their
  names are mapped onto the reference's; the discriminator's layout is not mapped).

torch is imported inside functions only: the plugin module imports this file at start-up.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from cineml import CinemlError

if TYPE_CHECKING:
    import torch

_Net = TypeVar("_Net", bound="torch.nn.Module")

PICKLE_SUFFIXES = (".pkl", ".pickle")
TORCH_SUFFIXES = (".pt", ".pth", ".ckpt")
_REFUSED = ("The file was not loaded and nothing in it was run. Only StyleGAN2-ADA network pickles "
            "(network-snapshot-*.pkl) and rosinality .pt checkpoints can be imported; if this file came "
            "from somewhere you do not trust, delete it.")


# --- Inert stand-ins for the classes a network pickle names ----------------------------------------


class EasyDict(dict):
    """Stands in for ``dnnlib.util.EasyDict`` (a dict with attribute access) in ``_init_kwargs``."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass
class PersistentStub:
    """What a persistent network object becomes: its class name and state, and a hash of its source.

    ``flavor`` says which reference module the (never executed) source is: ``stylegan3`` when it
    defines the alias-free ``SynthesisInput`` layer, else ``stylegan2``.
    """

    class_name: str
    version: int
    state: dict[str, Any]
    source_sha256: str
    flavor: str

    def child(self, name: str) -> PersistentStub | None:
        child = (self.state.get("_modules") or {}).get(name)
        return child if isinstance(child, PersistentStub) else None


def _reconstruct_persistent_obj(meta: Any) -> PersistentStub:
    """Replaces ``torch_utils.persistence._reconstruct_persistent_obj``: records, never executes."""
    if not isinstance(meta, dict) or meta.get("type") != "class" or not isinstance(meta.get("class_name"), str):
        raise pickle.UnpicklingError("a persistent object whose description is not a class record")
    state = meta.get("state")
    if not isinstance(state, dict):
        raise pickle.UnpicklingError(f"the persistent object {meta['class_name']} has no state dictionary")
    src = meta.get("module_src")
    src = src if isinstance(src, str) else ""
    flavor = "stylegan3" if "class SynthesisInput(" in src else "stylegan2"
    return PersistentStub(meta["class_name"], int(meta.get("version") or 0), state,
                          hashlib.sha256(src.encode()).hexdigest(), flavor)


def _np_dtype(spec: Any, align: bool = False, copy: bool = False) -> np.dtype:
    """``numpy.dtype`` for plain numeric types only (the scalars in module attributes)."""
    if not isinstance(spec, str):
        raise pickle.UnpicklingError(f"numpy dtype {spec!r} is not a plain type code")
    dt = np.dtype(spec, bool(align), True)  # always a copy: BUILD then sets state on it, never on numpy's own
    if dt.kind not in "biufc":
        raise pickle.UnpicklingError(f"numpy dtype {spec!r} is not numeric")
    return dt


def _np_scalar(dtype: Any, data: Any = None) -> Any:
    """``numpy.core.multiarray.scalar`` for numeric dtypes from raw bytes (never object arrays)."""
    if not isinstance(dtype, np.dtype) or dtype.kind not in "biufc" or not isinstance(data, bytes) \
            or len(data) != dtype.itemsize:
        raise pickle.UnpicklingError("a numpy scalar that is not a plain number")
    return np.frombuffer(data, dtype=dtype)[0]


def _load_storage(data: Any) -> Any:
    """``torch.storage._load_from_bytes`` with ``weights_only=True`` (the stock one allows any pickle)."""
    import torch

    if not isinstance(data, (bytes, bytearray)):
        raise pickle.UnpicklingError("a tensor storage that is not bytes")
    storage = torch.load(io.BytesIO(bytes(data)), weights_only=True, map_location="cpu")
    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)):
        raise pickle.UnpicklingError(f"a tensor storage that loads as {type(storage).__name__}")
    return storage


def _is_ints(value: Any) -> bool:
    return isinstance(value, tuple) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, requires_grad: Any = False,
                    backward_hooks: Any = None, metadata: Any = None) -> Any:
    """torch's ``_rebuild_tensor_v2`` after checking its arguments (no hooks, no metadata)."""
    import torch

    if not isinstance(storage, (torch.storage.TypedStorage, torch.UntypedStorage)) or not isinstance(offset, int) \
            or not _is_ints(size) or not _is_ints(stride) or backward_hooks:
        raise pickle.UnpicklingError("a tensor record with unexpected fields")
    return torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False, OrderedDict())


def _rebuild_parameter(data: Any, requires_grad: Any = False, backward_hooks: Any = None,
                       state: Any = None) -> Any:
    """Parameters are imported as plain tensors (their Python-level state is dropped)."""
    import torch

    if not isinstance(data, torch.Tensor) or backward_hooks:
        raise pickle.UnpicklingError("a parameter record with unexpected fields")
    return data


def _allowed() -> dict[tuple[str, str], Any]:
    """The only globals a network pickle may name (stylegan2.md §4.2), each mapped to a safe stand-in."""
    return {
        ("torch_utils.persistence", "_reconstruct_persistent_obj"): _reconstruct_persistent_obj,
        ("torch.storage", "_load_from_bytes"): _load_storage,
        ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
        ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
        ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
        ("collections", "OrderedDict"): OrderedDict,
        ("dnnlib.util", "EasyDict"): EasyDict,
        ("numpy._core.multiarray", "scalar"): _np_scalar,
        ("numpy.core.multiarray", "scalar"): _np_scalar,
        ("numpy", "dtype"): _np_dtype,
        ("builtins", "set"): set,
    }


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle named a global outside the allow-list (it was never imported or called)."""

    def __init__(self, module: str, name: str) -> None:
        super().__init__(f"{module}.{name}")
        self.module, self.name = module, name


class SafeUnpickler(pickle.Unpickler):
    """Resolves only :func:`_allowed` globals; anything else raises before it can be called."""

    def __init__(self, file: Any) -> None:
        super().__init__(file)
        self._table = _allowed()

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._table[(module, name)]
        except KeyError:
            raise RefusedGlobal(module, name) from None


def read_pickle(path: Path) -> Any:
    """Unpickle ``path`` safely: network objects become :class:`PersistentStub`, tensors CPU tensors."""
    try:
        with open(path, "rb") as f:
            return SafeUnpickler(f).load()
    except RefusedGlobal as exc:
        what = f"{exc.module}.{exc.name}"
        if exc.module.startswith("dnnlib.tflib"):
            raise CinemlError(
                f"{path} is a TensorFlow-era StyleGAN2 pickle ({what}); importing those is not supported. "
                "Convert it to a PyTorch pickle with stylegan2-ada-pytorch's legacy.py on a machine you trust, "
                "then import the result.") from None
        raise CinemlError(f"{path} refers to {what}, which a StyleGAN2 network pickle never needs, so CineML "
                          f"refused it. {_REFUSED}") from None
    except CinemlError:
        raise
    except Exception as exc:  # truncated files, wrong formats, malformed records
        raise CinemlError(f"{path} is not a readable StyleGAN2 network pickle ({type(exc).__name__}: "
                          f"{_torch_reason(exc)}). {_REFUSED}") from None


# --- From stubs to CineML networks -----------------------------------------------------------------


def flatten(stub: PersistentStub, prefix: str = "") -> dict[str, torch.Tensor]:
    """``state_dict()`` of a stub tree: parameters, persistent buffers, then children (nn.Module order)."""
    import torch

    state, out = stub.state, {}
    skip = state.get("_non_persistent_buffers_set") or set()
    for kind in ("_parameters", "_buffers"):
        table = state.get(kind) or {}
        if not isinstance(table, dict):
            raise CinemlError(f"The network layer {prefix or '(top)'} has a malformed {kind} table.")
        for name, t in table.items():
            if t is None or (kind == "_buffers" and name in skip):
                continue
            if not isinstance(t, torch.Tensor):
                raise CinemlError(f"Tensor {prefix}{name} in the pickle is a {type(t).__name__}, not a tensor.")
            out[prefix + name] = t
    for name, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, PersistentStub):
            raise CinemlError(f"Layer {prefix}{name} in the pickle is a {type(child).__name__}, not a StyleGAN2 "
                              "network layer.")
        out.update(flatten(child, f"{prefix}{name}."))
    return out


def _kwargs(stub: PersistentStub, positional: tuple[str, ...]) -> dict[str, Any]:
    kw = dict(stub.state.get("_init_kwargs") or {})
    for name, value in zip(positional, stub.state.get("_init_args") or ()):
        kw.setdefault(name, value)
    return kw


def _take(table: dict[str, Any], known: dict[str, Any], where: str, path: Path) -> dict[str, Any]:
    """Split ``table`` into known keys (with defaults); any other key is an error naming it."""
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise CinemlError(f"{path}: {where} has settings CineML's StyleGAN2 does not implement: "
                          f"{', '.join(f'{k}={table[k]!r}' for k in unknown)}. This network cannot be imported.")
    return {k: table.get(k, v) for k, v in known.items()}


_IGNORED = object()  # settings that only affect speed (fp16, memory layout): accepted and dropped


def generator_kwargs(stub: PersistentStub, path: Path, label: str = "G_ema") -> dict[str, Any]:
    """CineML ``Generator`` arguments from a reference Generator's recorded constructor arguments."""
    synthesis_stub = stub.child("synthesis")
    if stub.flavor == "stylegan3" or synthesis_stub and synthesis_stub.child("input"):
        raise CinemlError(f"{path} holds a StyleGAN3 (alias-free, config T/R) generator: StyleGAN3 networks are "
                          "not supported, only StyleGAN2 ones (stylegan2-ada-pytorch, or stylegan3 --cfg=stylegan2).")
    if stub.class_name != "Generator" or not stub.child("synthesis") or not stub.child("mapping"):
        raise CinemlError(f"{path}: {label} is a {stub.class_name} with layers "
                          f"{sorted(stub.state.get('_modules') or {})}, not a StyleGAN2 Generator.")
    kw = _kwargs(stub, ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels"))
    mapping = dict(kw.pop("mapping_kwargs", None) or {})
    synthesis = dict(kw.pop("synthesis_kwargs", None) or {})
    core: dict[str, Any] = {k: kw.pop(k) for k in ("z_dim", "c_dim", "w_dim", "img_resolution", "img_channels")
                            if k in kw}
    if len(core) < 5:
        raise CinemlError(f"{path}: {label} does not record its sizes (z_dim, c_dim, w_dim, img_resolution, "
                          "img_channels), so its architecture cannot be rebuilt.")
    synthesis.update(kw)  # stylegan3's copy of the StyleGAN2 generator passes synthesis settings flat
    s = _take(synthesis, dict(channel_base=32768, channel_max=512, conv_clamp=None, architecture="skip",
                              resample_filter=[1, 3, 3, 1], use_noise=True, num_fp16_res=_IGNORED,
                              channels_last=_IGNORED, fp16_channels_last=_IGNORED,
                              fused_modconv_default=_IGNORED), f"{label} synthesis settings", path)
    m = _take(mapping, dict(num_layers=8, lr_multiplier=0.01, w_avg_beta=0.995, embed_features=None,
                            layer_features=None, activation="lrelu"), f"{label} mapping settings", path)
    for key, ok in (("architecture", s["architecture"] == "skip"),
                    ("resample_filter", list(s["resample_filter"]) == [1, 3, 3, 1]),
                    ("use_noise", s["use_noise"] is True), ("activation", m["activation"] == "lrelu"),
                    ("embed_features", m["embed_features"] in (None, core["w_dim"])),
                    ("layer_features", m["layer_features"] in (None, core["w_dim"]))):
        if not ok:
            value = s.get(key, m.get(key))
            raise CinemlError(f"{path}: {label} uses {key}={value!r}; CineML implements StyleGAN2 config F only "
                              "(skip generator, [1,3,3,1] filter, noise inputs, leaky-ReLU mapping).")
    return dict(**core, channel_base=int(s["channel_base"]), channel_max=int(s["channel_max"]),
                map_layers=int(m["num_layers"]), mapping_lr_mul=float(m["lr_multiplier"]),
                w_avg_beta=float(m["w_avg_beta"] if m["w_avg_beta"] is not None else 0.995),
                conv_clamp=None if s["conv_clamp"] is None else float(s["conv_clamp"]))


def discriminator_kwargs(stub: PersistentStub, path: Path) -> dict[str, Any]:
    """CineML ``Discriminator`` arguments from a reference Discriminator's constructor arguments."""
    if stub.class_name != "Discriminator":
        raise CinemlError(f"{path}: D is a {stub.class_name}, not a StyleGAN2 Discriminator.")
    kw = _kwargs(stub, ("c_dim", "img_resolution", "img_channels"))
    if not isinstance(kw.get("img_resolution"), int) or not isinstance(kw.get("img_channels"), int):
        raise CinemlError(f"{path}: D does not record img_resolution / img_channels, so it cannot be rebuilt.")
    d = _take(kw, dict(c_dim=0, img_resolution=None, img_channels=None, architecture="resnet", channel_base=32768,
                       channel_max=512, num_fp16_res=_IGNORED, conv_clamp=None, cmap_dim=None, block_kwargs={},
                       mapping_kwargs={}, epilogue_kwargs={}), "D settings", path)
    if d["architecture"] != "resnet":
        raise CinemlError(f"{path}: D uses architecture={d['architecture']!r}; CineML implements the resnet "
                          "discriminator only. Import the generator alone with `cineml import --no-d`.")
    _take(dict(d["block_kwargs"] or {}), dict(freeze_layers=_IGNORED, fp16_channels_last=_IGNORED,
                                              activation="lrelu"), "D block settings", path)
    mp = _take(dict(d["mapping_kwargs"] or {}), dict(num_layers=8), "D mapping settings", path)
    ep = _take(dict(d["epilogue_kwargs"] or {}), dict(mbstd_group_size=4, mbstd_num_channels=1, activation="lrelu"),
               "D epilogue settings", path)
    if mp["num_layers"] != 8 or ep["mbstd_num_channels"] != 1:
        raise CinemlError(f"{path}: D uses mapping num_layers={mp['num_layers']}, mbstd_num_channels="
                          f"{ep['mbstd_num_channels']}; CineML's discriminator has 8 and 1.")
    return dict(c_dim=int(d["c_dim"]), img_resolution=int(d["img_resolution"]), img_channels=int(d["img_channels"]),
                channel_base=int(d["channel_base"]), channel_max=int(d["channel_max"]),
                mbstd_group_size=int(ep["mbstd_group_size"]),
                conv_clamp=None if d["conv_clamp"] is None else float(d["conv_clamp"]), cmap_dim=d["cmap_dim"])


def load_into(net: _Net, tensors: dict[str, torch.Tensor], label: str, path: Path) -> _Net:
    """Copy ``tensors`` into ``net`` name for name; any missing, extra or mis-shaped tensor is named."""
    import torch

    own = net.state_dict()
    missing = [k for k in own if k not in tensors]
    extra = [k for k in tensors if k not in own]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:6])}{' ...' if len(missing) > 6 else ''}")
        if extra:
            parts.append(f"unexpected {', '.join(extra[:6])}{' ...' if len(extra) > 6 else ''}")
        raise CinemlError(f"{path}: {label} does not have the layout of a StyleGAN2 network built from its own "
                          f"settings ({'; '.join(parts)}). It cannot be imported.")
    with torch.no_grad():
        for name, mine in own.items():
            t = tensors[name]
            if tuple(t.shape) != tuple(mine.shape):
                raise CinemlError(f"{path}: tensor {label}.{name} has shape {list(t.shape)} but the network its "
                                  f"settings describe needs {list(mine.shape)}. It cannot be imported.")
            if not t.is_floating_point():
                raise CinemlError(f"{path}: tensor {label}.{name} has dtype {t.dtype}, not a float type.")
            mine.copy_(t.to(mine.dtype))
    return net.eval().requires_grad_(False)


@dataclass
class Imported:
    """Networks read from a foreign file, rebuilt as CineML networks (CPU, eval mode)."""

    path: Path
    format: str  # "stylegan2-ada-pytorch pickle" | "rosinality checkpoint"
    G_ema: Any
    G: Any = None
    D: Any = None
    info: dict[str, Any] = field(default_factory=dict)

    def checkpoint(self) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
        """Tensors and JSON state in the layout of CineML's checkpoints (see checkpoints.py)."""
        tensors = {}
        for name in ("G", "D", "G_ema"):
            net = getattr(self, name)
            if net is not None:
                tensors.update({f"{name}.{k}": v for k, v in net.state_dict().items()})
        g = self.G_ema.init_kwargs
        settings = {"config": "imported", "resolution": g["img_resolution"], "img_channels": g["img_channels"],
                    "channel_base": g["channel_base"], "channel_max": g["channel_max"],
                    "map_layers": g["map_layers"], "z_dim": g["z_dim"], "w_dim": g["w_dim"]}
        if self.D is not None:
            settings["mbstd_group"] = self.D.init_kwargs["mbstd_group_size"]
        state = {"settings": settings, "G_kwargs": g, "D_kwargs": None if self.D is None else self.D.init_kwargs,
                 "nimg": 0, "snapshot_nimg": 0, "kimg": 0.0,
                 "imported": {"from": str(self.path), "format": self.format, **self.info}}
        return tensors, state


def import_pickle(path: Path, with_d: bool = True) -> Imported:
    """A stylegan2-ada-pytorch network pickle -> CineML networks (nothing in the file is executed)."""
    from .networks import Discriminator, Generator

    data = read_pickle(path)
    if isinstance(data, tuple):
        raise CinemlError(f"{path} holds a tuple, like TensorFlow-era StyleGAN2 pickles; only the PyTorch format "
                          "(a dict with G, D, G_ema) can be imported.")
    if not isinstance(data, dict) or not isinstance(data.get("G_ema", data.get("G")), PersistentStub):
        keys = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise CinemlError(f"{path} is a pickle but not a StyleGAN2 network snapshot (found {keys}; expected G, D, "
                          "G_ema).")
    nets: dict[str, Any] = {}
    sha = ""
    for label in ("G_ema", "G"):
        stub = data.get(label)
        if isinstance(stub, PersistentStub):
            kwargs = generator_kwargs(stub, path, label)  # conditional (c_dim > 0) networks are supported
            nets[label] = load_into(Generator(**kwargs), flatten(stub), label, path)
            sha = sha or stub.source_sha256
    if "G_ema" not in nets:
        nets["G_ema"] = nets["G"]
    d = data.get("D")
    if with_d and isinstance(d, PersistentStub):
        nets["D"] = load_into(Discriminator(**discriminator_kwargs(d, path)), flatten(d), "D", path)
    info: dict[str, Any] = {"module_src_sha256": sha}
    tsk = data.get("training_set_kwargs")
    if isinstance(tsk, dict):
        info["training_set_kwargs"] = {k: v for k, v in tsk.items() if isinstance(v, (str, int, float, bool))}
    aug = data.get("augment_pipe")
    if isinstance(aug, PersistentStub):
        p = (aug.state.get("_buffers") or {}).get("p")
        if p is not None and getattr(p, "numel", lambda: 0)() == 1:
            info["augment_p"] = float(p)
    return Imported(path, "stylegan2-ada-pytorch pickle", nets["G_ema"], nets.get("G"), nets.get("D"), info)


# --- rosinality stylegan2-pytorch ----------------------------------------------------------------


def _rosinality_names(num_layers: int, log_size: int, n_mlp: int) -> dict[str, tuple[str, str]]:
    """CineML name -> (rosinality name, conversion) for a rosinality Generator."""
    names: dict[str, tuple[str, str]] = {}
    for i in range(n_mlp):  # style.0 is PixelNorm
        names[f"mapping.fc{i}.weight"] = (f"style.{i + 1}.weight", "copy")
        names[f"mapping.fc{i}.bias"] = (f"style.{i + 1}.bias", "copy")
    names["synthesis.b4.const"] = ("input.input", "squeeze0")

    def styled(ours: str, theirs: str, noise_index: int) -> None:
        names[f"{ours}.weight"] = (f"{theirs}.conv.weight", "squeeze0")
        names[f"{ours}.affine.weight"] = (f"{theirs}.conv.modulation.weight", "copy")
        names[f"{ours}.affine.bias"] = (f"{theirs}.conv.modulation.bias", "copy")
        names[f"{ours}.noise_strength"] = (f"{theirs}.noise.weight", "scalar")
        names[f"{ours}.bias"] = (f"{theirs}.activate.bias", "copy")
        names[f"{ours}.noise_const"] = (f"noises.noise_{noise_index}", "squeeze01")

    def torgb(ours: str, theirs: str) -> None:
        names[f"{ours}.weight"] = (f"{theirs}.conv.weight", "squeeze0")
        names[f"{ours}.affine.weight"] = (f"{theirs}.conv.modulation.weight", "copy")
        names[f"{ours}.affine.bias"] = (f"{theirs}.conv.modulation.bias", "copy")
        names[f"{ours}.bias"] = (f"{theirs}.bias", "flatten")

    styled("synthesis.b4.conv1", "conv1", 0)
    torgb("synthesis.b4.torgb", "to_rgb1")
    for k, level in enumerate(range(3, log_size + 1)):
        res = 2 ** level
        styled(f"synthesis.b{res}.conv0", f"convs.{2 * k}", 2 * k + 1)
        styled(f"synthesis.b{res}.conv1", f"convs.{2 * k + 1}", 2 * k + 2)
        torgb(f"synthesis.b{res}.torgb", f"to_rgbs.{k}")
    assert len([n for n in names if n.endswith("noise_const")]) == num_layers
    return names


def _torch_load(path: Path) -> Any:
    """``torch.load(weights_only=True)``; rosinality's training checkpoints also hold an argparse.Namespace."""
    import argparse

    import torch

    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CinemlError(f"{path} could not be read as a plain PyTorch checkpoint ({type(exc).__name__}: "
                          f"{_torch_reason(exc)}). {_REFUSED}") from None


def _torch_reason(exc: Exception) -> str:
    """The line of a torch.load error that says what was wrong, without its terminal colours or its advice
    to load with ``weights_only=False`` (which would run whatever the file holds)."""
    lines = [re.sub(r"\x1b\[[0-9;]*m", "", line).strip() for line in str(exc).splitlines()]
    useful = [line for line in lines if line and "weights_only" not in line]
    return useful[0] if useful else "unreadable"


def import_rosinality(path: Path, data: Any = None) -> Imported:
    """A rosinality stylegan2-pytorch ``.pt`` -> CineML generators (``g_ema``, and ``g`` when present)."""
    import torch

    from .networks import Generator

    data = _torch_load(path) if data is None else data
    if not isinstance(data, dict) or not isinstance(data.get("g_ema"), dict):
        keys = sorted(map(str, data)) if isinstance(data, dict) else type(data).__name__
        raise CinemlError(f"{path} is not a rosinality stylegan2-pytorch checkpoint (found {keys}; expected a "
                          "dict with g_ema).")
    sd = data["g_ema"]
    if "synthesis.b4.const" in sd:
        raise CinemlError(f"{path} holds a reference-layout state dict, not a rosinality one; save it as a "
                          "CineML checkpoint instead.")
    if "input.input" not in sd or "style.1.weight" not in sd:
        raise CinemlError(f"{path}: g_ema lacks input.input / style.1.weight, so it is not a rosinality StyleGAN2 "
                          "generator (lucidrains' and other layouts are not supported).")
    n_mlp = len([k for k in sd if re.fullmatch(r"style\.\d+\.weight", k)])
    n_rgbs = len([k for k in sd if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", k)])
    log_size = n_rgbs + 2
    w_dim = int(sd["style.1.weight"].shape[0])
    img_channels = int(sd["to_rgb1.conv.weight"].shape[1])
    chans = {4: int(sd["input.input"].shape[1])}
    for k in range(n_rgbs):
        chans[2 ** (k + 3)] = int(sd[f"convs.{2 * k}.conv.weight"].shape[1])
    # rosinality: 512 up to 32 px, then 256*m, 128*m, ... (m = channel_multiplier) == min(16384*m / res, 512)
    big = [r for r in chans if r >= 64]
    mult = chans[min(big)] * min(big) // 16384 if big else 1
    kwargs = dict(z_dim=w_dim, c_dim=0, w_dim=w_dim, img_resolution=2 ** log_size, img_channels=img_channels,
                  channel_base=16384 * max(mult, 1), channel_max=512, map_layers=n_mlp)
    G0 = Generator(**kwargs)
    names = _rosinality_names(2 * n_rgbs + 1, log_size, n_mlp)
    nets = {}
    for label in ("g_ema", "g"):
        src = data.get(label)
        if not isinstance(src, dict):
            continue
        _check_rosinality_filters(src, log_size, path, label)
        converted: dict[str, torch.Tensor] = {}
        for ours, mine in G0.state_dict().items():
            if ours.endswith("resample_filter") or ours == "mapping.w_avg":
                converted[ours] = mine  # fixed filters (checked above); w_avg below
                continue
            theirs, how = names[ours]
            if theirs not in src:
                raise CinemlError(f"{path}: {label} has no tensor {theirs} (needed for {ours}); it is not a "
                                  "complete rosinality generator.")
            converted[ours] = _convert(src[theirs], how, mine.shape, (f"{label}.{theirs}", ours), path)
        extra = sorted(k for k in src if k not in {v[0] for v in names.values()}
                       and not k.endswith((".blur.kernel", ".upsample.kernel")))
        if extra:
            raise CinemlError(f"{path}: {label} has tensors CineML cannot place: {', '.join(extra[:6])}.")
        G = Generator(**kwargs)
        nets[label] = load_into(G, converted, label, path)
    avg = data.get("latent_avg")
    if isinstance(avg, torch.Tensor) and avg.numel() == w_dim:
        avg_note = "latent_avg from the checkpoint"
        for G in nets.values():
            G.mapping.w_avg.copy_(avg.reshape(-1).float())
    else:  # rosinality computes it at sampling time (mean_latent): the mean w of 4096 random z
        avg_note = "w_avg computed from 4096 random z (the checkpoint has no latent_avg)"
        for G in nets.values():
            gen = torch.Generator().manual_seed(0)
            z = torch.randn(4096, w_dim, generator=gen)
            with torch.no_grad():
                G.mapping.w_avg.copy_(G.mapping(z)[:, 0].mean(0))
    return Imported(path, "rosinality checkpoint", nets["g_ema"], nets.get("g"), None,
                    {"w_avg": avg_note, "channel_multiplier": mult})


_LAYOUTS = {"copy": lambda s: s, "squeeze0": lambda s: (1, *s), "scalar": lambda s: (1,),
            "squeeze01": lambda s: (1, 1, *s), "flatten": lambda s: (1, *s, 1, 1)}


def _convert(t: torch.Tensor, how: str, shape: Any, names: tuple[str, str], path: Path) -> torch.Tensor:
    """rosinality layout -> reference layout: [1,O,I,k,k] -> [O,I,k,k], [1] -> [], [1,1,R,R] -> [R,R],
    [1,C,1,1] -> [C]."""
    expect = _LAYOUTS[how](tuple(shape))
    if tuple(t.shape) != expect:
        raise CinemlError(f"{path}: tensor {names[0]} has shape {list(t.shape)}, but a rosinality generator of this "
                          f"size has {list(expect)} there (CineML's {names[1]}). It cannot be imported.")
    return t.reshape(shape)


def _check_rosinality_filters(sd: dict[str, Any], log_size: int, path: Path, label: str) -> None:
    """Up-sampling filters must be the [1,3,3,1] kernel times 4 (what CineML's ops hard-code)."""
    import torch

    k = torch.tensor([1.0, 3.0, 3.0, 1.0])
    expect = torch.outer(k, k) / 64 * 4  # normalised to sum 1, times up-sampling gain 4
    for name, t in sd.items():
        if name.endswith((".blur.kernel", ".upsample.kernel")):
            if tuple(t.shape) != (4, 4) or not torch.allclose(t.float(), expect, atol=1e-6):
                raise CinemlError(f"{path}: {label}.{name} is not the [1,3,3,1] blur kernel; CineML supports the "
                                  "standard StyleGAN2 filter only.")


# --- Entry points ----------------------------------------------------------------------------------


# torch.save's pre-1.6 (non-zip) files open with a pickled magic number: PROTO 2, LONG1 of 10 bytes.
_TORCH_LEGACY_HEAD = b"\x80\x02\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")


def import_network(path: str | Path, with_d: bool = True) -> Imported:
    """Import a StyleGAN2-ADA pickle or a rosinality checkpoint, told apart by content, not by suffix
    (a renamed file still goes to the right safe reader)."""
    path = Path(path)
    if not path.is_file():
        raise CinemlError(f"{path}: no such file. Give the path to a network-snapshot .pkl or a .pt checkpoint.")
    with open(path, "rb") as f:
        head = f.read(len(_TORCH_LEGACY_HEAD))
    if head.startswith(b"PK") or head == _TORCH_LEGACY_HEAD:  # torch.save's zip, or its pre-1.6 format
        return import_rosinality(path)
    if head[:1] == b"\x80" or path.suffix.lower() in PICKLE_SUFFIXES:
        return import_pickle(path, with_d=with_d)
    raise CinemlError(f"{path}: unknown network format (expected a .pkl network pickle or a .pt checkpoint).")


def is_foreign(path: Path) -> bool:
    """Whether ``path`` names a file for this importer rather than a CineML checkpoint."""
    return Path(path).suffix.lower() in PICKLE_SUFFIXES + TORCH_SUFFIXES


def write_checkpoint(imported: Imported, out: Path) -> Path:
    """Save as a CineML checkpoint (one .safetensors with its JSON state), via checkpoints.py's writer."""
    from .checkpoints import save_checkpoint

    tensors, state = imported.checkpoint()
    save_checkpoint(out, tensors, state)
    return out


__all__ = ["EasyDict", "Imported", "PersistentStub", "SafeUnpickler", "flatten", "import_network",
           "import_pickle", "import_rosinality", "is_foreign", "read_pickle", "write_checkpoint"]
