"""The stylegan2 trainer end to end on the CPU: snapshots, exact resumption, kill -9, learning, bad frames."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from test_stylegan2_generate import invoke
from test_stylegan2_import import reference_pickle, tiny_discriminator, tiny_generator
from training_frames import Recorder, deadline, make_frames, truncate

from cineml import CinemlError
from cineml.testing import make_context
from cineml_plugins.stylegan2 import checkpoints as ckpt
from cineml_plugins.stylegan2.dataset import list_frames, open_frames
from cineml_plugins.stylegan2.loop import Sampler
from cineml_plugins.stylegan2.plugin import StyleGAN2Trainer
from cineml_plugins.stylegan2.presets import default_grid, resolve

RES = 16
# A deliberately small network (the "tiny" preset with fewer channels) so every run takes seconds, with
# every training phase of the GPU presets on (style mixing, path length) and ADA at the paper's pace.
FAST = {"config": "tiny", "channel_base": 256, "channel_max": 32, "batch": 8, "device": "cpu", "grid": [8, 4],
        "style_mixing": 0.9, "pl_weight": 2.0, "augment_p": 0.0, "ada_kimg": 500.0, "lr": 0.0025,
        "dlr": 0.0025, "loss": "logistic"}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def run(tmp_path: Path, frames: Path, out: Path, hook=None, **options) -> list[str]:
    impl = StyleGAN2Trainer()
    ctx = make_context(tmp_path, impl, options={**FAST, **options}, inputs={"frames": frames}, output=out, hook=hook)
    messages: list[str] = []
    ctx.log = ctx.warn = messages.append
    impl.train(ctx)
    return messages


def tensors_of(path: Path, prefix: str) -> dict:
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys() if k.startswith(prefix)}


def stats(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "stats.jsonl").read_text().splitlines()]


def layout_contrast(png: Path, tile: int = RES) -> float:
    """Mean over grid tiles of (left-half brightness - right-half brightness), in 0..255 units."""
    a = np.asarray(Image.open(png).convert("L"), dtype=np.float64)
    tiles = a.reshape(a.shape[0] // tile, tile, a.shape[1] // tile, tile).transpose(0, 2, 1, 3)
    return float((tiles[..., : tile // 2].mean(axis=(2, 3)) - tiles[..., tile // 2:].mean(axis=(2, 3))).mean())


# --- names and presets -------------------------------------------------------------------------------


def test_snapshot_names_sort_in_training_order_and_parse_back():
    nimgs = [0, 200, 400, 1000, 1200, 2000, 120000]
    names = [ckpt.fakes_name(n) for n in nimgs]
    assert names[:4] == ["fakes000000.png", "fakes000000_200.png", "fakes000000_400.png", "fakes000001.png"]
    assert sorted(names) == names
    assert [ckpt.parse_kimg(n) for n in names] == [n / 1000 for n in nimgs]
    assert ckpt.checkpoint_name(120000) == "network-snapshot-000120.safetensors"
    assert ckpt.parse_kimg("network-snapshot-000001_200.safetensors") == 1.2


def test_presets_follow_stylegan2_ada_defaults():
    auto = resolve({}, 256, 3)
    assert (auto.batch, auto.mbstd_group, auto.channel_base, auto.map_layers) == (16, 4, 16384, 2)
    assert auto.gamma == pytest.approx(0.8192) and auto.ema_kimg == pytest.approx(5.0) and auto.lr == 0.0025
    assert resolve({}, 1024, 3).batch == 4 and resolve({}, 1024, 3).gamma == pytest.approx(52.4288)
    f = resolve({"config": "stylegan2"}, 1024, 3)
    assert (f.batch, f.gamma, f.ema_kimg, f.channel_base, f.map_layers, f.ema_rampup) == (32, 10, 10, 32768, 8, None)
    p = resolve({"config": "paper256", "gamma": 3, "kimg": 1.2}, 256, 3)
    assert (p.batch, p.mbstd_group, p.gamma, p.kimg, p.channel_base) == (64, 8, 3, 1.2, 16384)
    assert default_grid(1024) == (7, 4) and default_grid(256) == (30, 16) and default_grid(32) == (16, 9)
    assert (auto.dlr, f.dlr, p.dlr) == (auto.lr, f.lr, p.lr)  # the reference: one learning rate for G and D
    assert (auto.loss, f.loss, p.loss) == ("logistic",) * 3  # and its non-saturating logistic loss
    with pytest.raises(CinemlError, match="batch_gpu"):
        resolve({"batch": 8, "batch_gpu": 3}, 64, 3)


def test_plugin_registers_without_importing_torch():
    code = ("import sys; import cineml_plugins.stylegan2.plugin as p; found = []; p.register_trainers(found.append); "
            "assert [t.name for t in found] == ['stylegan2'], found; "
            "assert 'torch' not in sys.modules and 'numpy' not in sys.modules, 'heavy import at start-up'; "
            "assert all(o.help for o in found[0].options)")
    subprocess.run([sys.executable, "-c", code], check=True)


# --- training runs -----------------------------------------------------------------------------------


def test_run_writes_snapshots_and_resumes_exactly(tmp_path):
    frames = make_frames(tmp_path / "frames")
    hook = Recorder()
    out_a = tmp_path / "a"
    run(tmp_path, frames, out_a, hook, kimg=0.048, snapshot_kimg=0.016, keep=2)
    names = sorted(p.name for p in out_a.iterdir())
    assert names == ["fakes000000.png", "fakes000000_016.png", "fakes000000_032.png", "fakes000000_048.png",
                     "network-snapshot-000000_032.safetensors", "network-snapshot-000000_048.safetensors",
                     "reals.png", "stats.jsonl", "training_options.json"]  # pruned to keep=2, cache removed
    assert Image.open(out_a / "reals.png").size == (8 * RES, 4 * RES)
    assert Image.open(out_a / "fakes000000_048.png").size == (8 * RES, 4 * RES)
    lines = stats(out_a)
    assert [r["kimg"] for r in lines] == [0.016, 0.032, 0.048]
    for key in ("loss_G", "loss_D", "r1_penalty", "pl_penalty", "sec_per_kimg", "img_per_sec", "memory_mb"):
        assert all(np.isfinite(r[key]) for r in lines if key in r)
    assert "r1_penalty" in lines[0] and "pl_penalty" in lines[0]  # step 0 runs both regularisers
    assert [h["kimg"] for h in hook.snapshots] == [0.016, 0.032, 0.048]
    assert hook.snapshots[-1]["fakes"] == out_a / "fakes000000_048.png"
    assert hook.snapshots[-1]["checkpoint"].exists()
    state = ckpt.read_state(out_a / "network-snapshot-000000_048.safetensors")
    assert state["nimg"] == 48 and state["step"] == 6 and state["settings"]["channel_max"] == 32

    # The same schedule interrupted at 0.024 kimg (mid-interval) and continued gives identical networks.
    out_b = tmp_path / "b"
    run(tmp_path, frames, out_b, kimg=0.024, snapshot_kimg=0.016)
    assert ckpt.list_checkpoints(out_b)[-1].name == "network-snapshot-000000_024.safetensors"
    messages = run(tmp_path, frames, out_b, kimg=0.048, snapshot_kimg=0.016)
    assert any("Resuming training from network-snapshot-000000_024" in m for m in messages)
    assert [r["kimg"] for r in stats(out_b)] == [0.016, 0.024, 0.032, 0.048]
    final_a = tensors_of(out_a / "network-snapshot-000000_048.safetensors", "")
    final_b = tensors_of(out_b / "network-snapshot-000000_048.safetensors", "")
    assert final_a.keys() == final_b.keys()
    for key in final_a:
        assert (final_a[key] == final_b[key]).all(), key
    assert (out_a / "fakes000000_048.png").read_bytes() == (out_b / "fakes000000_048.png").read_bytes()

    # Running a finished training again does nothing.
    messages = run(tmp_path, frames, out_a, kimg=0.048, snapshot_kimg=0.016, keep=2)
    assert any("nothing to do" in m for m in messages)

    # Transfer learning from run A: kimg restarts, the networks start as A's final ones.
    out_c = tmp_path / "c"
    run(tmp_path, frames, out_c, kimg=0.016, snapshot_kimg=0.016, resume=out_a)  # the engine passes a Path
    assert (out_c / "fakes000000.png").read_bytes() == (out_a / "fakes000000_048.png").read_bytes()
    assert ckpt.read_state(out_c / "network-snapshot-000000_016.safetensors")["nimg"] == 16
    assert json.loads((out_c / "training_options.json").read_text())["ema_rampup"] is None


def test_transfer_from_a_reference_pickle(tmp_path):
    """resume = "net.pkl" (StyleGAN2-ADA format, read without unpickling) starts G, G_ema and D from its weights.

    lr = dlr = 0 keep the weights where they started, so after one step they must still be the pickle's.
    """
    G = tiny_generator(7, channel_max=32)
    D = tiny_discriminator(8, img_resolution=RES, channel_max=32)
    pkl = reference_pickle(tmp_path, G, D)
    frames = make_frames(tmp_path / "frames", count=8)
    out = tmp_path / "out"
    messages = run(tmp_path, frames, out, kimg=0.008, snapshot_kimg=0.008, resume=pkl, lr=0.0, dlr=0.0)
    assert any("Transfer learning from" in m for m in messages)
    assert not any("starts from scratch" in m for m in messages)
    saved = tensors_of(out / "network-snapshot-000000_008.safetensors", "")
    for prefix, net in (("G.", G), ("G_ema.", G), ("D.", D)):
        for name, value in net.state_dict().items():
            if name != "mapping.w_avg":  # a tracked mean, updated by every forward pass in training
                assert torch.equal(saved[prefix + name], value), prefix + name


def test_sigkill_mid_run_then_rerun_resumes(tmp_path):
    frames = make_frames(tmp_path / "frames")
    out = tmp_path / "out"
    options = {**FAST, "kimg": 2.0, "snapshot_kimg": 0.016}
    script = tmp_path / "train.py"
    script.write_text(
        "import json, sys\nfrom pathlib import Path\nfrom cineml.testing import make_context\n"
        "from cineml_plugins.stylegan2.plugin import StyleGAN2Trainer\n"
        "impl = StyleGAN2Trainer()\n"
        "ctx = make_context(Path(sys.argv[1]), impl, options=json.loads(sys.argv[2]),\n"
        "                   inputs={'frames': Path(sys.argv[3])}, output=Path(sys.argv[4]))\n"
        "impl.train(ctx)\n")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path), json.dumps(options), str(frames), str(out)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not ckpt.list_checkpoints(out):
            assert proc.poll() is None, proc.stderr.read().decode()
            assert time.time() < deadline, "no checkpoint within 120 s"
            time.sleep(0.05)
        time.sleep(0.3)  # let it get into the middle of the next steps
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    last = ckpt.list_checkpoints(out)[-1]
    resumed_kimg = ckpt.read_state(last)["kimg"]
    assert (out / "dataset-cache.u8").exists()  # the frame cache survives and is reused

    messages = run(tmp_path, frames, out, kimg=resumed_kimg + 0.032, snapshot_kimg=0.016)
    assert any(f"Resuming training from {last.name} at {resumed_kimg:g} kimg" in m for m in messages)
    assert not any(m.startswith("Reading") for m in messages)
    kimgs = [r["kimg"] for r in stats(out)]
    assert kimgs == sorted(set(kimgs)) and kimgs[-1] == pytest.approx(resumed_kimg + 0.032)
    assert ckpt.read_state(ckpt.list_checkpoints(out)[-1])["nimg"] == round((resumed_kimg + 0.032) * 1000)
    assert not (out / "dataset-cache.u8").exists()


def test_training_learns_the_frames_layout(tmp_path):
    """Bright-left/dark-right frames: the fakes' left-right contrast moves from ~0 to the reals' side."""
    frames = make_frames(tmp_path / "frames", count=64)
    out = tmp_path / "out"
    run(tmp_path, frames, out, kimg=0.64, snapshot_kimg=0.32)  # seeds 0-2 reach 166-208 here; 10-35 at 0.16
    real = layout_contrast(out / "reals.png")
    untrained = layout_contrast(out / "fakes000000.png")
    trained = layout_contrast(out / "fakes000000_640.png")
    assert real > 180
    assert abs(untrained) < 0.25 * real  # an untrained generator has no such layout: the check can fail
    assert trained > 0.5 * real, (untrained, trained, real)


def test_grayscale_frames_train_a_one_channel_network(tmp_path):
    frames = make_frames(tmp_path / "frames", count=8, mode="L")
    out = tmp_path / "out"
    run(tmp_path, frames, out, kimg=0.008, snapshot_kimg=0.008, mirror=True)
    assert Image.open(out / "fakes000000_008.png").mode == "L"
    state = ckpt.read_state(out / "network-snapshot-000000_008.safetensors")
    assert state["G_kwargs"]["img_channels"] == 1
    G = ckpt.load_generator(out)
    assert G.synthesis.b16.torgb.weight.shape[0] == 1


def test_divergence_names_the_last_good_checkpoint(tmp_path):
    frames = make_frames(tmp_path / "frames", count=8)
    out = tmp_path / "out"
    run(tmp_path, frames, out, kimg=0.008, snapshot_kimg=0.008)
    with pytest.raises(CinemlError, match=r"diverged at 0\.0\d+ kimg.*network-snapshot-000000_008"):
        run(tmp_path, frames, out, kimg=0.2, snapshot_kimg=0.1, lr=1e30)


def test_resume_after_frames_were_deleted_starts_a_fresh_pass(tmp_path):
    """A checkpoint taken 16 frames into a pass over 32, continued on 8 frames, used to spin forever."""
    with deadline(5):
        assert sorted(Sampler(8, seed=0, epoch=0, cursor=16).take(8)) == list(range(8))
    frames = make_frames(tmp_path / "frames", count=32)
    out = tmp_path / "out"
    run(tmp_path, frames, out, kimg=0.016, snapshot_kimg=0.016)
    assert ckpt.read_state(out / "network-snapshot-000000_016.safetensors")["data"] == {
        "epoch": 0, "cursor": 16, "size": 32, "frames": 32}
    for frame in list_frames(frames)[8:]:
        frame.unlink()
    with deadline(60):
        messages = run(tmp_path, frames, out, kimg=0.032, snapshot_kimg=0.016)
    assert "The frames folder now has 8 frames, 32 when this run started; continuing on the new set." in messages
    assert any("Resuming training from network-snapshot-000000_016" in m for m in messages)
    assert ckpt.read_state(out / "network-snapshot-000000_032.safetensors")["data"] == {
        "epoch": 2, "cursor": 8, "size": 8, "frames": 8}  # a fresh pass (epoch 1), then the next one


def test_networks_only_files_cannot_be_resumed_and_are_named(tmp_path):
    frames = make_frames(tmp_path / "frames", count=8)
    out = tmp_path / "out"
    run(tmp_path, frames, out, kimg=0.008, snapshot_kimg=0.008)
    source = out / "network-snapshot-000000_008.safetensors"
    code, text = invoke("export", source, "-o", source)
    assert code == 1 and "would overwrite the checkpoint being exported" in text
    assert "loss.pl_mean" in tensors_of(source, "loss.")  # still a resumable checkpoint

    newer = out / "network-snapshot-000000_016.safetensors"  # networks only, where resuming looks
    for command in (("export", source, "-o", newer),
                    ("import", reference_pickle(tmp_path, tiny_generator(3)), "-o", newer, "--force")):
        code, text = invoke(*command)
        assert code == 0, text
        with pytest.raises(CinemlError, match=r"network-snapshot-000000_016\.safetensors holds networks only.*"
                                              r"Move it out of the training folder.*resume"):
            run(tmp_path, frames, out, kimg=0.024, snapshot_kimg=0.008)


def test_a_damaged_newest_checkpoint_is_set_aside(tmp_path):
    frames = make_frames(tmp_path / "frames", count=8)
    out = tmp_path / "out"
    run(tmp_path, frames, out, kimg=0.016, snapshot_kimg=0.008, keep=0)
    newest = out / "network-snapshot-000000_016.safetensors"
    truncate(newest)
    messages = run(tmp_path, frames, out, kimg=0.024, snapshot_kimg=0.008, keep=0)
    assert any(m.startswith("Checkpoint network-snapshot-000000_016.safetensors is damaged") and
               "renamed it to network-snapshot-000000_016.safetensors.damaged and continuing from "
               "network-snapshot-000000_008.safetensors" in m for m in messages), messages
    assert any("Resuming training from network-snapshot-000000_008" in m for m in messages)
    assert (out / "network-snapshot-000000_016.safetensors.damaged").exists()
    assert [ckpt.read_state(p)["nimg"] for p in ckpt.list_checkpoints(out)] == [8, 16, 24]

    for path in ckpt.list_checkpoints(out):
        truncate(path)
    with pytest.raises(CinemlError, match=r"Checkpoint network-snapshot-000000_008\.safetensors is damaged .* no older "
                                          r"checkpoint is left.*running again starts this training over"):
        run(tmp_path, frames, out, kimg=0.032, snapshot_kimg=0.008)
    assert not ckpt.list_checkpoints(out)


def _frame(folder: Path, image: Image.Image) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    image.save(folder / "000001.png")
    return folder


def test_frames_are_flattened_16_bit_palette_and_alpha(tmp_path):
    ramp = np.linspace(0, 255, RES)
    wide = np.tile(np.linspace(0, 65535, RES).round().astype(np.uint16), (RES, 1))
    folder = _frame(tmp_path / "deep", Image.fromarray(wide))
    with Image.open(folder / "000001.png") as im:
        assert im.mode.startswith("I")  # really a 16-bit PNG on disk
    messages = []
    data = open_frames(folder, tmp_path / "c1", log=messages.append)
    assert data.channels == 1 and messages[0].startswith("Reading 1 grayscale frame of 16x16")
    assert np.abs(data.get([0])[0, 0].astype(int) - ramp).max() <= 1  # not clipped to white

    grey = Image.fromarray(np.tile(ramp.astype(np.uint8), (RES, 1))).convert("P")
    assert grey.mode == "P"
    data = open_frames(_frame(tmp_path / "palette", grey), tmp_path / "c2", log=messages.append)
    assert data.channels == 1 and np.abs(data.get([0])[0, 0].astype(int) - ramp).max() <= 1

    rgba = np.zeros((RES, RES, 4), np.uint8)
    rgba[..., :3], rgba[..., 3] = 200, ramp.astype(np.uint8)  # white-ish, fading in from transparent
    data = open_frames(_frame(tmp_path / "alpha", Image.fromarray(rgba)), tmp_path / "c3",
                       log=messages.append)
    assert data.channels == 3
    assert np.abs(data.get([0])[0, :, 0].astype(int) - ramp * 200 / 255).max() <= 1  # on black


# --- bad frames ------------------------------------------------------------------------------------


def _save(folder: Path, name: str, size: tuple[int, int]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (10, 20, 30)).save(folder / name)


@pytest.mark.parametrize("sizes,match", [
    ([], "holds no images"),
    ([(16, 16), (32, 32)], r"000002\.png .* is 32x32 but 000001\.png is 16x16"),
    ([(32, 18)], r"000001\.png .* is 32x18, not square.*letterbox"),
    ([(24, 24)], r"000001\.png .* is 24x24, which is not a power of two.*letterbox"),
])
def test_bad_frames_raise_clear_errors(tmp_path, sizes, match):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i, size in enumerate(sizes):
        _save(folder, f"{i + 1:06d}.png", size)
    with pytest.raises(CinemlError, match=match):
        open_frames(folder, tmp_path / "out")


def test_every_snapshot_reports_diversity_and_a_healthy_run_says_it(tmp_path):
    frames = make_frames(tmp_path / "frames", count=16)
    out = tmp_path / "out"
    messages = run(tmp_path, frames, out, kimg=0.032, snapshot_kimg=0.016)
    lines = stats(out)
    assert all(0 < r["diversity"] < 20 and r["metrics_seconds"] >= 0 for r in lines)
    assert "swd" not in lines[0]  # SWD only when asked for (metrics = ["swd"])
    (summary,) = [m for m in messages if "as much as the frames" in m]
    assert summary.startswith("At 0.032 kimg the generated images vary") and "collapsed" not in summary


def test_a_collapsed_network_is_named_in_plain_words(tmp_path):
    """A deliberately collapsed generator (styles ignore w, no noise: one image for every seed), trained
    with lr = 0 so it stays collapsed: the run ends with the collapse warning pointing at the docs."""
    G = tiny_generator(7, channel_max=32)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("affine.weight") or name.endswith("noise_strength"):
                p.zero_()
    pkl = reference_pickle(tmp_path, G, tiny_discriminator(8, img_resolution=RES, channel_max=32))
    frames = make_frames(tmp_path / "frames", count=16)
    out = tmp_path / "out"
    messages = run(tmp_path, frames, out, kimg=0.016, snapshot_kimg=0.016, resume=pkl, lr=0.0, dlr=0.0, metrics=["swd"])
    (line,) = stats(out)
    assert line["diversity"] < 0.05 and line["swd"] > 0
    (warning,) = [m for m in messages if "the network has collapsed" in m]
    assert "vary 0% as much as the frames" in warning or "vary 1% as much" in warning
    assert "SWD to the frames" in warning and "docs/training.md#collapse" in warning


def test_tf32_is_off_for_the_penalties_and_global_flags_are_left_as_found(tmp_path):
    """The R1 and path-length double backward run without TF32 (as the reference); the main phases may use
    it; after a step PyTorch's process-wide flags are what they were (no other code inherits them)."""
    from cineml_plugins.stylegan2.dataset import FrameDataset
    from cineml_plugins.stylegan2.loop import TrainingLoop

    flags = torch.backends.cuda.matmul, torch.backends.cudnn
    before = (flags[0].allow_tf32, flags[1].allow_tf32, flags[1].benchmark)
    loop = TrainingLoop(resolve({**FAST, "batch": 4}, 8, 1), FrameDataset(np.zeros((4, 1, 8, 8), np.uint8)))
    seen = {}
    for name in ("g_main", "g_reg", "d_main", "d_reg"):
        phase = getattr(loop.loss, name)

        def spy(*args, phase=phase, name=name):
            seen[name] = (flags[0].allow_tf32, flags[1].allow_tf32)
            return phase(*args)

        setattr(loop.loss, name, spy)
    loop.step()  # step 0 runs all four phases
    assert seen == {"g_main": (True, True), "g_reg": (False, False), "d_main": (True, True), "d_reg": (False, False)}
    assert (flags[0].allow_tf32, flags[1].allow_tf32, flags[1].benchmark) == before


def test_appending_to_a_hard_linked_stats_file_leaves_the_published_one_alone(tmp_path):
    """A continued run's staging folder may hard-link the published train/ files (the engine does so for
    large ones): appending copies first, so the published stats.jsonl never changes under a running stage."""
    from cineml_plugins.stylegan2.training import append_line

    published, staged = tmp_path / "published.jsonl", tmp_path / "staged.jsonl"
    published.write_text('{"kimg": 1}\n')
    os.link(published, staged)
    append_line(staged, '{"kimg": 2}')
    assert published.read_text() == '{"kimg": 1}\n'
    assert staged.read_text() == '{"kimg": 1}\n{"kimg": 2}\n' and staged.stat().st_nlink == 1


def test_cpu_estimate_counts_what_is_left_when_resuming():
    from cineml_plugins.stylegan2.presets import expected_cpu_note

    settings = resolve({"config": "tiny", "kimg": 10}, 32, 1)
    assert "kimg = 10 takes about 4 min" in expected_cpu_note(settings, 24.0, 2)
    resumed = expected_cpu_note(settings, 24.0, 2, done_kimg=7.5)
    assert "the 2.5 kimg left of kimg = 10 take about 1 min" in resumed


def test_mode_seeking_counts_different_pictures_not_grain():
    """The term compares images shrunk to 8x8: per-pixel noise (which G's noise inputs could amplify to fake
    variety) barely registers; two different pictures do."""
    from cineml_plugins.stylegan2.loss import mode_seeking_ratio

    g = torch.Generator().manual_seed(0)
    z = torch.randn(8, 512, generator=g)
    figure = -torch.ones(1, 1, 32, 32)
    figure[..., 8:24, 12:20] = 1
    grain = figure.repeat(8, 1, 1, 1) + 0.5 * torch.randn(8, 1, 32, 32, generator=g)
    shapes = torch.cat([figure.repeat(4, 1, 1, 1), figure.transpose(2, 3).repeat(4, 1, 1, 1)])
    at_full_size = mode_seeking_ratio(grain, z, size=32) / mode_seeking_ratio(shapes, z, size=32)
    shrunk = mode_seeking_ratio(grain, z) / mode_seeking_ratio(shapes, z)
    assert at_full_size > 2 and shrunk < 0.6  # grain outweighs a different picture only at full size


def test_the_tiny_preset_trains_with_mode_seeking_and_the_relativistic_loss_and_logs_them(tmp_path):
    frames = make_frames(tmp_path / "frames", count=16)
    run(tmp_path, frames, tmp_path / "out", kimg=0.016, snapshot_kimg=0.016, style_mixing=None, pl_weight=None,
        loss=None)
    settings = json.loads((tmp_path / "out" / "training_options.json").read_text())
    assert (settings["mode_seeking"], settings["style_mixing"], settings["pl_weight"]) == (0.1, 0.0, 0.0)
    assert settings["loss"] == "relativistic"
    record = json.loads((tmp_path / "out" / "stats.jsonl").read_text().splitlines()[-1])
    assert record["mode_seeking"] > 0 and "pl_penalty" not in record
    assert record["r1_penalty"] > 0 and record["r2_penalty"] > 0  # step 0 is a regularisation step


def test_the_relativistic_loss_only_compares_frames_with_generated_images():
    """Relativistic: only D(frame) - D(image) counts, so shifting every score by a constant changes nothing
    (the logistic loss does change); the regulariser adds R2, D's gradient on generated images."""
    from cineml_plugins.stylegan2.loss import StyleGAN2Loss, r1_penalty

    G, D = tiny_generator(), tiny_discriminator()
    real = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    z = torch.randn(4, G.z_dim, generator=torch.Generator().manual_seed(3))

    def losses(relativistic: bool, shift: float) -> tuple[float, float, float]:
        loss = StyleGAN2Loss(G, D, r1_gamma=1.0, style_mixing=0.0, relativistic=relativistic)
        loss.D_main = lambda img: D(img) + shift
        torch.manual_seed(0)  # the same noise inputs every time
        d, d_stats = loss.d_main(z, real)
        torch.manual_seed(0)
        g, _ = loss.g_main(z, real)
        return float(d.detach()), float(g.detach()), float(d_stats["D_real_sign"])

    assert losses(True, 3.0) == pytest.approx(losses(True, 0.0), abs=1e-5)
    assert losses(False, 3.0)[0] != pytest.approx(losses(False, 0.0)[0], abs=1e-2)
    torch.manual_seed(0)
    fake = G(z, noise_mode="random")
    assert losses(True, 0.0)[2] == pytest.approx(float((D(real) - D(fake)).sign().mean().detach()))  # ADA's

    torch.manual_seed(0)
    total, stats = StyleGAN2Loss(G, D, r1_gamma=2.0, style_mixing=0.0, relativistic=True).d_reg(real)
    torch.manual_seed(0)
    r2 = r1_penalty(D, G(torch.randn(4, G.z_dim), noise_mode="random"))[0].mean().detach()
    assert float(stats["r2_penalty"]) == pytest.approx(float(r2), rel=1e-4) and float(r2) > 0
    assert float(total.detach()) == pytest.approx(float(stats["r1_penalty"] + stats["r2_penalty"]), rel=1e-4)
    assert "r2_penalty" not in StyleGAN2Loss(G, D, r1_gamma=2.0, style_mixing=0.0).d_reg(real)[1]


def test_the_tiny_preset_lets_g_learn_at_three_times_ds_rate(tmp_path):
    from cineml_plugins.stylegan2.loop import TrainingLoop

    tiny = resolve({"config": "tiny"}, 16, 1)
    assert (tiny.lr, tiny.dlr) == pytest.approx((0.0075, 0.0025))
    assert resolve({"config": "tiny", "lr": 0.006}, 16, 1).dlr == pytest.approx(0.002)  # follows the artist's lr
    assert resolve({"config": "tiny", "lr": 0.004, "dlr": 0.003}, 16, 1).dlr == 0.003  # dlr set: the artist's word

    dataset = open_frames(make_frames(tmp_path / "frames", count=8), tmp_path / "cache")
    loop = TrainingLoop(resolve({**FAST, "lr": 0.004, "dlr": 0.001}, RES, dataset.channels), dataset)
    # Adam's rates, corrected for lazy regularisation as in the reference (G every 4th step, D every 16th).
    assert loop.G_opt.param_groups[0]["lr"] == pytest.approx(0.004 * 4 / 5)
    assert loop.D_opt.param_groups[0]["lr"] == pytest.approx(0.001 * 16 / 17)


def test_a_dry_run_after_a_kill_says_where_training_resumes(tmp_path):
    from cineml.manifest import load_project
    from cineml.pipeline import Pipeline
    from cineml.plugins import load_registry
    from cineml.testing import make_project

    toml = '[project]\nsource = "film.mp4"\n[extract]\n[train]\nuse = "stylegan2"\nconfig = "tiny"\nkimg = 1\n'
    manifest = make_project(tmp_path / "p", toml, files={"film.mp4": b"not decoded: the plan reads the staging only"})
    registry = load_registry()
    pipeline = Pipeline(load_project(manifest, registry), registry)
    train = next(p for p in pipeline.plan() if p.step.stage == "train")
    staging = pipeline._staging(train)
    staging.mkdir(parents=True)
    for nimg in (200, 400):  # what an interrupted run leaves: checkpoints named by kimg
        (staging / ckpt.checkpoint_name(nimg)).write_bytes(b"")
    train = next(p for p in pipeline.plan() if p.step.stage == "train")
    assert train.reason == "never ran (resumes its interrupted run from 0.4 kimg)"


def test_tensorboard_gets_every_snapshot_statistic_and_fakes_grid(tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install tensorboard)")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    frames = make_frames(tmp_path / "frames", count=16, res=RES)
    out = tmp_path / "train"
    run(tmp_path, frames, out, kimg=0.032, snapshot_kimg=0.016, tensorboard=True)
    events = EventAccumulator(str(out / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    events.Reload()
    lines = stats(out)
    assert [e.step for e in events.Scalars("train/loss_G")] == [line["nimg"] for line in lines]
    assert [e.value for e in events.Scalars("train/loss_G")] == pytest.approx([line["loss_G"] for line in lines])
    assert len(events.Images("fakes")) == len(lines) == 2


def test_tensorboard_missing_is_a_clear_error(tmp_path, monkeypatch):
    import builtins

    real = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ModuleNotFoundError("No module named 'tensorboard'")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    frames = make_frames(tmp_path / "frames", count=16, res=RES)
    with pytest.raises(CinemlError, match=r"\.tensorboard: true, but TensorBoard cannot be loaded here .*"
                                          r"pip install tensorboard"):
        run(tmp_path, frames, tmp_path / "train", kimg=0.016, snapshot_kimg=0.016, tensorboard=True)
    assert not list((tmp_path / "train").glob("network-snapshot-*"))
