"""Training at scale on the CPU: two-process data parallelism (gloo), bf16 mixed precision,
torch.compile, and a stats log that survives kills.

The multi-process runs are real: ``torchrun`` (as the docs tell artists to use it) and the trainer's
own ``gpus = 2`` launch, each with two CPU processes sharing a 16x16 batch.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from training_frames import Recorder, make_frames

from cineml import CinemlError
from cineml.testing import make_context
from cineml_plugins.stylegan2 import checkpoints as ckpt
from cineml_plugins.stylegan2.dataset import FrameDataset
from cineml_plugins.stylegan2.distributed import DistInfo
from cineml_plugins.stylegan2.launch import run_rank
from cineml_plugins.stylegan2.loop import TrainingLoop
from cineml_plugins.stylegan2.loss import path_lengths, r1_penalty, run_generator
from cineml_plugins.stylegan2.networks import Discriminator, Generator, mixed_precision_resolution
from cineml_plugins.stylegan2.plugin import StyleGAN2Trainer
from cineml_plugins.stylegan2.presets import resolve
from cineml_plugins.stylegan2.training import STATS_NAME

FAST = {"config": "tiny", "channel_base": 256, "channel_max": 32, "batch": 8, "device": "cpu", "grid": [4, 2],
        "augment_p": 0.3, "ada_kimg": 1.0, "style_mixing": 0.9, "pl_weight": 2.0}
TORCHRUN = Path(sys.executable).with_name("torchrun")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# Each torchrun rank trains through the trainer's per-rank entry point and dumps its own networks,
# which rank 0's checkpoint alone could not show.
RANK_SCRIPT = """
import json, os, sys
from pathlib import Path
import torch
from safetensors.torch import save_file
from cineml.testing import make_context
from cineml_plugins.stylegan2 import distributed
from cineml_plugins.stylegan2.plugin import StyleGAN2Trainer
from cineml_plugins.stylegan2.launch import run_rank

torch.set_num_threads(1)
tmp, options, frames, out = Path(sys.argv[1]), json.loads(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
info = distributed.from_env()
calls = []
class Hook:
    def snapshot_written(self, **kw): calls.append(kw["kimg"])
ctx = make_context(tmp, StyleGAN2Trainer(), options=options, inputs={"frames": frames}, output=out, hook=Hook())
loop = run_rank(ctx, info, torch.device("cpu"))
tensors = {f"{n}.{k}": v.contiguous() for n in ("G", "D", "G_ema") for k, v in getattr(loop, n).state_dict().items()}
save_file(tensors, str(tmp / f"rank{info.rank}.safetensors"))
(tmp / f"rank{info.rank}.json").write_text(json.dumps({"calls": calls, "p": loop.augment.p, "nimg": loop.nimg,
                                                       "world": info.world}))
"""


def test_torchrun_two_processes_stay_identical_and_write_once(tmp_path):
    frames = make_frames(tmp_path / "frames", count=16)
    out = tmp_path / "out"
    script = tmp_path / "rank.py"
    script.write_text(RANK_SCRIPT)
    options = {**FAST, "kimg": 0.032, "snapshot_kimg": 0.016}
    env = dict(os.environ, OMP_NUM_THREADS="1")
    subprocess.run([str(TORCHRUN), "--standalone", "--nproc-per-node", "2", str(script), str(tmp_path),
                    json.dumps(options), str(frames), str(out)], check=True, env=env, timeout=240,
                   capture_output=True)
    info = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert [i["world"] for i in info] == [2, 2] and [i["nimg"] for i in info] == [32, 32]
    assert info[0]["calls"] == [0.016, 0.032] and info[1]["calls"] == []  # only rank 0 reports snapshots
    assert info[0]["p"] == info[1]["p"]  # the ADA controller saw the same (all-reduced) statistics
    ranks = [load_file(str(tmp_path / f"rank{r}.safetensors")) for r in range(2)]
    assert ranks[0].keys() == ranks[1].keys()
    for key in ranks[0]:
        assert torch.equal(ranks[0][key], ranks[1][key]), key
    start = Generator(**resolve({**FAST, "kimg": 0.032}, 16, 3).g_kwargs)  # the networks did train
    assert not torch.equal(ranks[0]["G.synthesis.b16.conv1.weight"], start.synthesis.b16.conv1.weight)
    # Outputs written once, by rank 0: the usual files, one stats line per snapshot.
    assert sorted(p.name for p in out.iterdir()) == [
        "fakes000000.png", "fakes000000_016.png", "fakes000000_032.png", "network-snapshot-000000_016.safetensors",
        "network-snapshot-000000_032.safetensors", "reals.png", "stats.jsonl", "training_options.json"]
    stats = [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]
    assert [r["kimg"] for r in stats] == [0.016, 0.032] and all(r["gpus"] == 2 for r in stats)
    saved = ckpt.load_checkpoint(out / "network-snapshot-000000_032.safetensors")
    assert saved[1]["world"] == 2 and "rng.torch.rank1" in saved[0]  # every rank's RNG, for exact resume
    assert not torch.equal(saved[0]["rng.torch.rank0"], saved[0]["rng.torch.rank1"])  # ranks draw their own z
    for key in ranks[0]:
        assert torch.equal(saved[0][key], ranks[0][key]), key


def test_gpus_option_spawns_workers_and_resumes(tmp_path):
    frames = make_frames(tmp_path / "frames", count=16)
    out = tmp_path / "out"
    impl = StyleGAN2Trainer()

    def run(kimg: float, hook=None) -> list[str]:
        ctx = make_context(tmp_path, impl, options={**FAST, "gpus": 2, "kimg": kimg, "snapshot_kimg": 0.016},
                           inputs={"frames": frames}, output=out, hook=hook)
        messages: list[str] = []
        ctx.log = ctx.warn = messages.append
        impl.train(ctx)
        return messages

    hook = Recorder()
    messages = run(0.016, hook)
    assert any("2 processes (spawn), 4 images each" in m for m in messages)
    assert [h["kimg"] for h in hook.snapshots] == [0.016]
    assert json.loads((out / "training_options.json").read_text())["gpus"] == 2
    messages = run(0.032)
    assert any("Resuming training from network-snapshot-000000_016" in m for m in messages)
    assert [json.loads(line)["kimg"] for line in (out / "stats.jsonl").read_text().splitlines()] == [0.016, 0.032]
    assert ckpt.read_state(out / "network-snapshot-000000_032.safetensors")["nimg"] == 32


def test_multi_process_settings_errors(tmp_path):
    frames = make_frames(tmp_path / "frames", count=4)
    impl = StyleGAN2Trainer()
    ctx = make_context(tmp_path, impl, options={**FAST, "gpus": 2, "device": "auto"}, inputs={"frames": frames})
    if not torch.cuda.is_available():
        with pytest.raises(CinemlError, match="gpus: 2 but PyTorch sees no CUDA GPU.*device = \"cpu\""):
            impl.train(ctx)
    with pytest.raises(CinemlError, match="batch: 6 cannot be split evenly over 4"):
        resolve({"batch": 6}, 16, 3, world=4)
    auto = resolve({}, 256, 3, world=4)  # the 'auto' preset scales the batch with the GPU count
    assert (auto.batch, auto.batch_gpu, auto.mbstd_group) == (64, 16, 4)


# --- mixed precision -------------------------------------------------------------------------------


def test_precision_rule_and_auto_choice():
    assert mixed_precision_resolution(1024) == 128 and mixed_precision_resolution(64) == 8
    assert mixed_precision_resolution(16) == 8 and mixed_precision_resolution(256, num_res=2) == 128
    assert resolve({}, 64, 3, device="cpu").precision == "fp32"
    assert resolve({}, 64, 3, device="cuda", bf16_supported=True).precision == "bf16"
    assert resolve({}, 64, 3, device="cuda", bf16_supported=False).precision == "fp32"
    assert resolve({"precision": "fp32"}, 64, 3, device="cuda", bf16_supported=True).precision == "fp32"


def test_bf16_autocast_on_cpu_gives_finite_outputs_and_gradients():
    torch.manual_seed(0)
    G = Generator(z_dim=32, w_dim=32, img_resolution=32, channel_base=512, channel_max=32, map_layers=2)
    D = Discriminator(img_resolution=32, channel_base=512, channel_max=32)
    z, real = torch.randn(4, 32), torch.rand(4, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        ref_img, ref_logits = G(z), D(real)
    G.set_precision(torch.bfloat16)
    D.set_precision(torch.bfloat16)  # num_fp16_res = 4 at 32 px: blocks 8, 16, 32 in bf16; b4 stays fp32
    dtypes = {}

    def record(name):
        def hook(module, inputs, output) -> None:
            dtypes.setdefault(name, output.dtype)
        return hook

    watched = (("G.b32.conv1.affine", G.synthesis.b32.conv1.affine), ("G.b32.conv1", G.synthesis.b32.conv1),
               ("G.b4.conv1", G.synthesis.b4.conv1), ("D.b32.conv0", D.b32.conv0), ("D.b4.fc", D.b4.fc))
    hooks = [m.register_forward_hook(record(name)) for name, m in watched]
    G.requires_grad_(True)
    D.requires_grad_(True)
    img, ws = run_generator(G, z, style_mixing=0.9)
    logits = D(img)
    for h in hooks:
        h.remove()
    assert dtypes["D.b32.conv0"] == torch.bfloat16 and dtypes["D.b4.fc"] == torch.float32
    assert dtypes["G.b32.conv1"] == torch.bfloat16 and dtypes["G.b4.conv1"] == torch.float32
    assert dtypes["G.b32.conv1.affine"] == torch.float32  # styles (w-space maths) stay fp32
    assert img.dtype == torch.float32 and logits.dtype == torch.float32
    assert torch.isfinite(img).all() and torch.isfinite(logits).all()
    with torch.no_grad():  # bf16 keeps ~3 significant digits: close to fp32, not equal
        diff = (G(z) - ref_img).abs().max()
        assert 0 < diff < 0.1 and (D(real) - ref_logits).abs().max() < 0.1
    torch.nn.functional.softplus(-logits).mean().backward()
    img, ws = run_generator(G, z[:2])
    lengths = path_lengths(img, ws)  # double backward through bf16 layers
    penalty, _ = r1_penalty(D, real)
    (lengths.mean() + penalty.mean()).backward()
    for net in (G, D):
        grads = [p.grad for p in net.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads)


def test_bf16_training_steps_on_cpu():
    frames = np.random.default_rng(0).integers(0, 256, (8, 3, 16, 16), dtype=np.uint8)
    s = resolve({**FAST, "precision": "bf16", "augment_p": 0.5}, 16, 3)
    loop = TrainingLoop(s, FrameDataset(frames))
    assert loop.G.synthesis.amp_dtype == torch.bfloat16 and loop.G_ema.synthesis.amp_dtype is None
    for _ in range(2):
        stats = loop.step()
    assert all(torch.isfinite(v).all() for v in stats.values())
    assert all(torch.isfinite(p).all() for p in loop.G.parameters())


# --- torch.compile ---------------------------------------------------------------------------------


def test_compile_steps_on_cpu(tmp_path):
    """compile = true: two steps whose main phases run the torch.compile'd synthesis network and D, then a
    snapshot. 4x4 frames (one block per network, the smallest the networks build) keep the first
    compilation to about 37 s on one CPU thread with an empty inductor cache (up to 50 s while other
    jobs load the machine), about 5 s with a warm one; 8x8 frames took 56 s cold."""
    from torch._dynamo.eval_frame import OptimizedModule
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    frames = make_frames(tmp_path / "frames", count=8, res=4)
    out = tmp_path / "out"
    options = {**FAST, "compile": True, "kimg": 0.016, "snapshot_kimg": 0.016}
    ctx = make_context(tmp_path, StyleGAN2Trainer(), options=options, inputs={"frames": frames}, output=out)
    try:
        loop = run_rank(ctx, DistInfo(), torch.device("cpu"))
        graphs = counters["stats"]["unique_graphs"]
    finally:
        torch._dynamo.reset()
    assert isinstance(loop.loss.D_main, OptimizedModule)
    # G's synthesis network and D were really compiled, each once with and once without gradients, and D once
    # more for the frames' scores in G's phase (the tiny preset's relativistic loss; taken without gradients);
    # a graph per style-mixing layout of ws (or a graph break) would add more.
    assert graphs == 5
    assert loop.nimg == 16 and loop.step_idx == 2
    (record,) = [json.loads(line) for line in (out / STATS_NAME).read_text().splitlines()]
    for key in ("loss_G", "loss_D", "r1_penalty", "pl_penalty"):
        assert np.isfinite(record[key]), key
    for net in (loop.G, loop.D, loop.G_ema):
        assert all(torch.isfinite(p).all() for p in net.parameters())
    tensors, state = ckpt.load_checkpoint(out / "network-snapshot-000000_016.safetensors")
    assert state["nimg"] == 16 and state["settings"]["compile"] is True
    for name, value in loop.G.state_dict().items():  # the compiled wrappers share (and saved) G's own weights
        assert torch.equal(tensors["G." + name], value), name
    start = Generator(**loop.settings.g_kwargs)
    assert not torch.equal(tensors["G.synthesis.b4.conv1.weight"], start.synthesis.b4.conv1.weight)


# --- the stats log ---------------------------------------------------------------------------------


def test_stats_log_drops_lines_cut_by_a_kill(tmp_path):
    """Each stats line is written whole (one write + fsync), so a kill leaves at most a cut-off last line;
    starting or continuing the run drops it, and the lines of a run killed before its first checkpoint."""
    frames = make_frames(tmp_path / "frames", count=8, res=4)
    out = tmp_path / "out"
    out.mkdir()
    impl = StyleGAN2Trainer()

    def run(kimg: float) -> None:
        options = {**FAST, "kimg": kimg, "snapshot_kimg": 0.016}
        impl.train(make_context(tmp_path, impl, options=options, inputs={"frames": frames}, output=out))

    def lines() -> list[dict]:
        text = (out / STATS_NAME).read_text()
        assert text.endswith("\n")
        return [json.loads(line) for line in text.splitlines()]

    cut = '{"kimg": 0.032, "nimg": 32, "step": 4, "loss_G": 0.7'
    # Killed before its first checkpoint: one whole line, one cut-off line, no checkpoint.
    (out / STATS_NAME).write_text('{"kimg": 0.016, "nimg": 16, "step": 2, "loss_G": 9.0}\n' + cut)
    run(0.016)
    assert [(r["kimg"], r["loss_G"] != 9.0) for r in lines()] == [(0.016, True)]
    with open(out / STATS_NAME, "a") as f:  # killed while writing the next snapshot's line
        f.write(cut)
    run(0.032)
    assert [r["kimg"] for r in lines()] == [0.016, 0.032]
