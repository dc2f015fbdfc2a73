"""The CUDA path against the CPU at 32x32: networks, a training step, bf16, checkpoints, generation.

Every test here is marked ``cuda`` and needs an NVIDIA GPU; elsewhere each one skips and says why.
``benchmarks/gpu_check.py`` runs them on a GPU (``pytest -m cuda tests/test_cuda.py``). With
``CINEML_CUDA_TESTS_ON_CPU=1`` they run with the CPU standing in for the GPU: every comparison is then
CPU against CPU, which checks the tests themselves (``gpu_check.py --dry-run-cpu`` does this), not CUDA.

How the two devices are made comparable:

- Same weights: networks are built on the CPU from one seed (``TrainingLoop`` seeds before building
  them, then moves them), so both devices start from bit-identical parameters.
- Same random numbers: the CUDA generator's stream differs from the CPU's, so ``cpu_draws`` makes
  every ``torch.randn``/``randn_like`` draw on the CPU generator and move the result to the device;
  the training step then checks that the CUDA generator was never touched (nothing escaped).
- Same arithmetic: training runs its main phases with TF32 on (``loop.math_flags``), whose 10-bit
  mantissa would put ~1e-3 relative error in every convolution; comparisons switch it off
  (``loop.tf32 = False``, ``exact_fp32``) and the fixture ``math_flags`` restores PyTorch's flags after
  every test.

Tolerances. In fp32 without TF32, a correct CUDA result differs from the CPU's only by rounding in a
different summation order (cuDNN/cuBLAS against oneDNN/MKL; cuDNN's autotuned Winograd/FFT kernels
round worse, up to ~1e-4 relative): ~1e-6..1e-4 of a tensor's scale after a dozen layers. A real fault
(a wrong memory layout, a missed device transfer, a broken kernel) is off by O(1). So tensors must
agree within 1e-3 of their largest magnitude (``assert_close_scaled``): 10x above the worst rounding,
1000x below a fault. Adam is the exception: its first update is ``lr * g / (|g| + eps)``, about
``±lr`` whatever ``|g|``, so a gradient that is ~0 up to rounding may take either sign on either
device and move its weight by up to 2 lr the other way. Such weights are rare (a gradient within
rounding of zero); a fault flips about half of them. So after a step at most 1% of each network's
weights may differ by more than lr/100.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from test_stylegan2_generate import make_g, pixels, save_snapshot
from test_stylegan2_generate import run as generate_stage
from test_stylegan2_networks import tiny_networks
from test_stylegan2_training import FAST
from test_stylegan2_training import run as train_stage
from training_frames import make_frames

from cineml_plugins.stylegan2 import checkpoints as ckpt
from cineml_plugins.stylegan2.dataset import FrameDataset
from cineml_plugins.stylegan2.loop import TrainingLoop
from cineml_plugins.stylegan2.presets import resolve

RES = 32
STAND_IN = os.environ.get("CINEML_CUDA_TESTS_ON_CPU") == "1"  # the CPU plays the GPU: tests the tests only
# The training-step options: the tests' FAST network with augmentation on, so ADA's ops run on the device.
STEP = {**FAST, "augment_p": 0.3}


def _no_gpu_reason() -> str:
    built = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
    return (f"needs a CUDA GPU: PyTorch {torch.__version__} ({built}) sees none on this machine "
            "(benchmarks/gpu_check.py runs these tests on a GPU)")


pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available() and not STAND_IN, reason=_no_gpu_reason()),
    pytest.mark.usefixtures("one_torch_thread", "math_flags"),
]


@pytest.fixture
def device() -> torch.device:
    """The GPU under test (the CPU when it stands in, see the module docstring)."""
    return torch.device("cpu" if STAND_IN else "cuda")


@pytest.fixture
def math_flags() -> Iterator[None]:
    """Put back PyTorch's process-wide math flags after each test: tests set TF32 themselves, which would
    change every later test's arithmetic (training puts back what it changes, phase by phase)."""
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark)
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved


def exact_fp32() -> None:
    """IEEE fp32 matmuls and convolutions on CUDA (no TF32), so CUDA can be held to the CPU's numbers."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


@pytest.fixture
def cpu_draws(monkeypatch: pytest.MonkeyPatch) -> None:
    """Draw every ``torch.randn``/``randn_like`` tensor on the CPU generator and move it to its device, so a
    CUDA run sees the very numbers a CPU run from the same seed sees."""
    randn = torch.randn

    def randn_on_cpu(*size, device=None, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202 (torch.randn's own)
        out = randn(*size, **kwargs)
        return out if device is None else out.to(device)

    def randn_like_on_cpu(x: torch.Tensor, *, dtype: torch.dtype | None = None, **_) -> torch.Tensor:  # noqa: ANN003
        return randn(x.shape, dtype=dtype or x.dtype).to(x.device)

    monkeypatch.setattr(torch, "randn", randn_on_cpu)
    monkeypatch.setattr(torch, "randn_like", randn_like_on_cpu)


def assert_close_scaled(actual: torch.Tensor, expected: torch.Tensor, what: str, rtol: float = 1e-3) -> None:
    """``actual`` (any device) within ``rtol`` of ``expected``'s largest magnitude (see the module docstring)."""
    actual, expected = actual.detach().float().cpu(), expected.detach().float().cpu()
    assert actual.shape == expected.shape, what
    assert torch.isfinite(actual).all(), f"{what}: not finite"
    scale = float(expected.abs().max()) or 1.0
    err = float((actual - expected).abs().max())
    assert err <= rtol * scale, f"{what}: off by {err:.3g}, more than {rtol:g} x its scale {scale:.3g}"


def train_one_step(device: torch.device, **options) -> tuple[TrainingLoop, dict[str, float]]:  # noqa: ANN003
    """A fresh TrainingLoop (STEP options) on ``device`` after one full ``step()``, with its statistics."""
    frames = np.random.default_rng(0).integers(0, 256, (16, 3, RES, RES), dtype=np.uint8)
    settings = resolve({**STEP, **options}, RES, 3, device=device.type)
    loop = TrainingLoop(settings, FrameDataset(frames), device)
    loop.tf32 = False  # full fp32 in every phase, so CUDA can be held to the CPU's numbers
    exact_fp32()
    return loop, {k: float(v) for k, v in loop.step().items()}


def untouched_cuda_generator(device: torch.device) -> object:
    """A token of the CUDA generator's state, to show afterwards that no draw escaped ``cpu_draws``."""
    return torch.cuda.get_rng_state(device).clone() if device.type == "cuda" else None


# --- networks ---------------------------------------------------------------------------------------


def test_g_and_d_forward_and_backward_match_the_cpu(device):
    """G (inference: fused modconv on CUDA; training: non-fused) and D, channels-last on CUDA as training
    runs them, and every parameter's gradient of D(G(z)) + D(reals)."""
    exact_fp32()
    G, D = tiny_networks(res=RES)
    G_dev, D_dev = copy.deepcopy(G).to(device), copy.deepcopy(D).to(device)
    if device.type == "cuda":
        G_dev.to(memory_format=torch.channels_last)
        D_dev.to(memory_format=torch.channels_last)
    z = torch.randn(4, G.z_dim)
    reals = torch.rand(4, 3, RES, RES) * 2 - 1
    with torch.no_grad():
        assert_close_scaled(G_dev(z.to(device), noise_mode="const"), G(z, noise_mode="const"), "G inference")
    for net in (G, D, G_dev, D_dev):
        net.requires_grad_(True)
    outputs = {}
    for name, (g, d, dev) in {"cpu": (G, D, torch.device("cpu")), "device": (G_dev, D_dev, device)}.items():
        img = g(z.to(dev), noise_mode="const")
        x = reals.to(dev)
        logits = d(img) + d(x.contiguous(memory_format=torch.channels_last) if dev.type == "cuda" else x)
        logits.sum().backward()
        outputs[name] = img, logits
    assert_close_scaled(outputs["device"][0], outputs["cpu"][0], "G training forward")
    assert_close_scaled(outputs["device"][1], outputs["cpu"][1], "D logits")
    for label, a, b in (("G", G_dev, G), ("D", D_dev, D)):
        for (name, p_dev), p in zip(a.named_parameters(), b.parameters()):
            assert p.grad is not None, f"{label}.{name} got no gradient"
            assert_close_scaled(p_dev.grad, p.grad, f"{label}.{name} gradient")


# --- one training step ------------------------------------------------------------------------------


def test_a_training_step_matches_the_cpu(device, cpu_draws):
    """TrainingLoop.step() at step 0 runs all four phases (G main, path length, D main, R1) and the EMA."""
    cpu_loop, cpu_stats = train_one_step(torch.device("cpu"))
    token = untouched_cuda_generator(device)
    loop, stats = train_one_step(device)
    if token is not None:
        assert torch.equal(torch.cuda.get_rng_state(device), token), \
            "a random draw used the CUDA generator, so the two devices saw different numbers: extend cpu_draws"
    assert stats.keys() == cpu_stats.keys() >= {"loss_G", "pl_penalty", "loss_D", "r1_penalty"}
    for key, want in cpu_stats.items():
        if key == "D_real_sign":  # a mean of signs over the batch: one logit within rounding of 0 may flip
            assert abs(stats[key] - want) <= 2 / loop.settings.batch, key
        else:  # losses and logits are O(1): 1e-4 is far above fp32 rounding and far below a fault
            assert stats[key] == pytest.approx(want, rel=1e-3, abs=1e-4), key
    lr = loop.settings.lr
    for name in ("G", "D", "G_ema"):
        mine, theirs = getattr(loop, name).state_dict(), getattr(cpu_loop, name).state_dict()
        far = total = 0
        for key, value in theirs.items():
            got = mine[key].detach().float().cpu()
            assert torch.isfinite(got).all(), f"{name}.{key} is not finite"
            far += int(((got - value.float()).abs() > lr / 100).sum())
            total += value.numel()
        assert far <= 0.01 * total, f"{name}: {far} of {total} weights differ from the CPU's by more than lr/100"


# --- bf16 -------------------------------------------------------------------------------------------


def test_bf16_is_finite_and_close_to_fp32(device, cpu_draws):
    """bf16 keeps ~3 significant digits (8-bit mantissa): over a dozen layers ~1e-2 of the output's scale,
    so within 0.1 (in images of about [-1, 1] and logits of about +-1) while a fault (fp16-style overflow,
    a wrong cast) gives inf/NaN or O(1) errors. The same for one training step's losses."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        pytest.skip(f"{torch.cuda.get_device_name(device)} does not run bf16")
    exact_fp32()
    G, D = tiny_networks(res=RES)
    G, D = G.to(device), D.to(device)
    z = torch.randn(4, G.z_dim, device=device)
    reals = torch.rand(4, 3, RES, RES, device=device) * 2 - 1
    with torch.no_grad():
        ref_img, ref_logits = G(z), D(reals)
        G.set_precision(torch.bfloat16)
        D.set_precision(torch.bfloat16)
        seen = []  # (a hook that returned something would replace the layer's output)
        hook = G.synthesis.b32.conv1.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
        img, logits = G(z), D(reals)
        hook.remove()
    assert seen[0] == torch.bfloat16, "the 32x32 block did not run under bf16 autocast"
    assert img.dtype == logits.dtype == torch.float32
    assert torch.isfinite(img).all() and torch.isfinite(logits).all()
    assert 0 < float((img - ref_img).abs().max()) < 0.1  # > 0: bf16 really ran
    assert float((logits - ref_logits).abs().max()) < 0.1

    _, fp32 = train_one_step(device, precision="fp32")
    loop, bf16 = train_one_step(device, precision="bf16")
    assert loop.G.synthesis.amp_dtype == torch.bfloat16
    assert all(np.isfinite(v) for v in bf16.values()), bf16
    for net in (loop.G, loop.D, loop.G_ema):
        assert all(torch.isfinite(t).all() for t in net.state_dict().values())
    for key in ("loss_G", "loss_D", "D_real"):
        assert abs(bf16[key] - fp32[key]) < 0.1, (key, bf16[key], fp32[key])
    for key in ("pl_penalty", "r1_penalty"):  # squared gradient norms: bf16 rounding shows more here
        assert bf16[key] == pytest.approx(fp32[key], rel=0.25), (key, bf16[key], fp32[key])


# --- checkpoints ------------------------------------------------------------------------------------


def test_a_checkpoint_moves_between_cuda_and_cpu(tmp_path, device):
    """The trainer's own snapshots: one written on CUDA (bf16 there by default) resumes on the CPU, and the
    CPU's resumes on CUDA. Loading a CUDA checkpoint on the CPU loses nothing: every tensor (weights, Adam
    moments and step counts, pl_mean, RNG, ADA state) comes back bit for bit."""
    frames = make_frames(tmp_path / "frames", count=16, res=RES)
    out = tmp_path / "out"
    opts = {"snapshot_kimg": 0.008, "keep": 0, "augment_p": 0.3}
    previous = None
    for kimg, dev in ((0.008, device.type), (0.016, "cpu"), (0.024, device.type)):
        messages = train_stage(tmp_path, frames, out, device=dev, kimg=kimg, **opts)
        if previous is not None:
            assert any(f"Resuming training from {previous.name}" in m for m in messages), messages
        previous = out / ckpt.checkpoint_name(round(kimg * 1000))
        assert ckpt.read_state(previous)["nimg"] == round(kimg * 1000)
    last, _ = ckpt.load_checkpoint(out / ckpt.checkpoint_name(24))
    assert all(torch.isfinite(v).all() for v in last.values() if v.is_floating_point())

    written_on_device = out / ckpt.checkpoint_name(8)
    tensors, state = ckpt.load_checkpoint(written_on_device)
    assert state["settings"]["device"] == device.type
    settings = resolve({**FAST, **opts}, RES, 3, device="cpu")
    loop = TrainingLoop(settings, FrameDataset(np.zeros((16, 3, RES, RES), np.uint8)), "cpu")
    loop.restore(tensors, state)
    back = loop.checkpoint_tensors()
    for key, value in tensors.items():
        if key.startswith("rng.cuda"):  # the CUDA generator's state: a CPU run has none to restore
            continue
        assert key in back, f"{key} was lost moving the checkpoint to the CPU"
        assert torch.equal(back[key].cpu().double(), value.double()), f"{key} changed moving to the CPU"


# --- generation -------------------------------------------------------------------------------------


@pytest.mark.parametrize("flags", ["fp32", "pytorch-defaults"])
def test_generate_on_cuda_matches_the_cpu(tmp_path, device, flags):
    """The generate stage (stills with per-seed random noise, truncation, a walk) on CUDA (batch 8, fused
    modulated convolutions) against the CPU (batch 1, non-fused): the same PNGs within 1 grey level.

    ``fp32``: TF32 off, so only rounding differs. ``pytorch-defaults``: what ``cineml generate`` runs with
    (cuDNN convolutions in TF32, matmuls in fp32); TF32's ~1e-3 relative error per layer may reach a second
    grey level on a few pixels, in which case generation needs TF32 off to keep its promise."""
    if flags == "fp32":
        exact_fp32()
    else:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, True
    folder = tmp_path / "train"
    save_snapshot(folder, make_g(3, img_resolution=RES), 1000)
    opts = {"seeds": "0-9", "truncation": 0.7, "noise_mode": "random",
            "walk": {"keyframes": "0-1", "seconds": 1, "fps": 4}}
    cpu = generate_stage(tmp_path, folder, "cpu", device="cpu", **opts)
    gpu = generate_stage(tmp_path, folder, "gpu", device=device.type, **opts)
    assert json.loads((gpu / "generated.json").read_text())["device"] == device.type
    names = sorted(str(p.relative_to(cpu)) for p in cpu.rglob("*.png"))
    assert len(names) == 10 + 4 and names == sorted(str(p.relative_to(gpu)) for p in gpu.rglob("*.png"))
    worst = {name: int(np.abs(pixels(gpu / name) - pixels(cpu / name)).max()) for name in names}
    assert max(worst.values()) <= 1, {k: v for k, v in worst.items() if v > 1}
