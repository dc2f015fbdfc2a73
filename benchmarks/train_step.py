"""CPU cost of one StyleGAN2 training iteration, and fused vs non-fused modulated convolutions.

Prints, on one CPU thread, the seconds of each training phase and of the amortised iteration
(G main + D main + G path-length reg / 4 + D R1 reg / 16, the paper's lazy schedule), with sec/kimg,
for 32x32 and 64x64 at channel_base 2048 / 2 mapping layers / batch 4, and for the ``tiny`` preset.
Then it times the generator with fused (grouped-conv) and non-fused modulated convolutions and
prints their ratio (> 1: fused is slower), which is why training uses the non-fused form on the CPU.

Times are per-thread CPU time (``time.thread_time``), median of several repeats, so other processes
on a shared machine disturb them less than wall-clock time; wall time is printed beside.

    .venv/bin/python benchmarks/train_step.py [--quick]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from cineml_plugins.stylegan2.dataset import FrameDataset
from cineml_plugins.stylegan2.presets import resolve
from cineml_plugins.stylegan2.training import TrainingLoop


def measure(fn, repeats: int, warmup: int = 1) -> tuple[float, float]:
    """Median (CPU seconds, wall seconds) of ``fn()`` over ``repeats`` calls."""
    for _ in range(warmup):
        fn()
    cpu, wall = [], []
    for _ in range(repeats):
        c0, w0 = time.thread_time(), time.perf_counter()
        fn()
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - w0)
    return statistics.median(cpu), statistics.median(wall)


def make_loop(res: int, options: dict) -> TrainingLoop:
    frames = np.random.default_rng(0).integers(0, 256, (64, 3, res, res), dtype=np.uint8)
    settings = resolve(options, res, 3)
    return TrainingLoop(settings, FrameDataset(frames), "cpu")


def bench_iteration(name: str, res: int, options: dict, repeats: int) -> None:
    loop = make_loop(res, options)
    s, L = loop.settings, loop.loss
    reals = loop.next_reals()
    z = lambda: torch.randn(s.batch, s.z_dim)  # noqa: E731
    phases = {
        "G main": lambda: loop._phase(loop.G, loop.G_opt, lambda i: L.g_main(z()), 1.0, {}),
        "G reg": lambda: loop._phase(loop.G, loop.G_opt, lambda i: L.g_reg(z()), s.g_reg_interval, {}),
        "D main": lambda: loop._phase(loop.D, loop.D_opt, lambda i: L.d_main(z(), reals), 1.0, {}),
        "D reg": lambda: loop._phase(loop.D, loop.D_opt, lambda i: L.d_reg(reals), s.d_reg_interval, {}),
    }
    weights = {"G main": 1, "G reg": 1 / s.g_reg_interval, "D main": 1, "D reg": 1 / s.d_reg_interval}
    times = {k: measure(fn, repeats) for k, fn in phases.items()}
    cpu = sum(times[k][0] * w for k, w in weights.items())
    wall = sum(times[k][1] * w for k, w in weights.items())
    detail = "  ".join(f"{k} {v[0] * 1000:.0f}ms" for k, v in times.items())
    print(f"{name:<34} {cpu:7.3f} s/iter  {cpu / s.batch * 1000:8.1f} s/kimg   (wall {wall:.3f} s/iter)   {detail}")


def bench_fused(res: int, options: dict, repeats: int) -> None:
    loop = make_loop(res, options)
    G = loop.G
    z = torch.randn(loop.settings.batch, loop.settings.z_dim)
    ws = G.mapping(z).detach()

    def train(fused: bool):
        def fn():
            w = ws.clone().requires_grad_(True)
            img = G.synthesis(w, noise_mode="random", fused=fused)
            torch.autograd.grad(img.square().sum(), [w] + list(G.synthesis.parameters()))
        return fn

    def infer(fused: bool, batch: int):
        def fn():
            with torch.no_grad():
                G.synthesis(ws[:batch], noise_mode="const", fused=fused)
        return fn

    G.requires_grad_(True)
    for label, make in (("fwd+bwd", train), ("inference", lambda f: infer(f, len(ws))),
                        ("inference batch 1", lambda f: infer(f, 1))):
        non = measure(make(False), repeats)[0]
        fus = measure(make(True), repeats)[0]
        print(f"  {res}x{res} {label:<18} non-fused {non * 1000:7.1f} ms   fused {fus * 1000:7.1f} ms   "
              f"fused/non-fused = {fus / non:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    args = parser.parse_args()
    torch.set_num_threads(1)
    repeats = 3 if args.quick else 7
    base = {"config": "tiny", "channel_base": 2048, "channel_max": 512, "map_layers": 2, "batch": 4}
    print(f"torch {torch.__version__}, 1 CPU thread; phases: median CPU time of {repeats} runs")
    bench_iteration("32x32 cbase 2048, map 2, batch 4", 32, base, repeats)
    bench_iteration("64x64 cbase 2048, map 2, batch 4", 64, base, repeats)
    tiny = resolve({"config": "tiny"}, 32, 3)
    bench_iteration(f"32x32 tiny preset (batch {tiny.batch})", 32, {"config": "tiny"}, repeats)
    print("Fused vs non-fused modulated convolutions (synthesis network, cbase 2048, batch 4):")
    bench_fused(32, base, repeats)
    bench_fused(64, base, repeats)


if __name__ == "__main__":
    main()
