"""Cost of one StyleGAN2 training iteration (CPU; GPU presets with --device cuda), fused vs non-fused convs.

Prints, on one CPU thread, the seconds of each training phase and of the amortised iteration
(G main + D main + G path-length reg / 4 + D R1 reg / 16, the paper's lazy schedule), with sec/kimg,
for 32x32 and 64x64 at channel_base 2048 / 2 mapping layers / batch 4, and for the ``tiny`` preset.
Then it times the generator with fused (grouped-conv) and non-fused modulated convolutions and
prints their ratio (> 1: fused is slower), which is why training uses the non-fused form on the CPU.

Times are per-thread CPU time (``time.thread_time``), median of several repeats, so other processes
on a shared machine disturb them less than wall-clock time; wall time is printed beside.

With ``--device cuda`` it times the GPU presets instead: 256x256 and 512x512 for ``auto`` and
``stylegan2``, each in fp32 (TF32 matmuls/convolutions, as training runs), bf16 (``precision``) and
bf16 + ``compile``. Each phase is timed in wall-clock seconds between ``torch.cuda.synchronize()``
calls, after warm-up calls that are not timed (for ``compile``, the ones that compile). Every case
prints sec/kimg and ``torch.cuda.max_memory_allocated()``, and its time and memory as ratios to the
fp32 case of the same resolution and config, measured in the same run.

    .venv/bin/python benchmarks/train_step.py [--quick]
    .venv/bin/python benchmarks/train_step.py --device cuda [--quick] [--res 256] [--config auto]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from cineml_plugins.stylegan2.dataset import FrameDataset
from cineml_plugins.stylegan2.loop import TrainingLoop
from cineml_plugins.stylegan2.presets import resolve


def measure(fn, repeats: int, warmup: int = 1, device: torch.device | None = None) -> tuple[float, float]:
    """Median (CPU seconds, wall seconds) of ``fn()`` over ``repeats`` calls (on CUDA the wall time is
    taken between synchronisations, so it covers the queued GPU work)."""
    cuda = device is not None and device.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    for _ in range(warmup):
        fn()
    cpu, wall = [], []
    for _ in range(repeats):
        sync()
        c0, w0 = time.thread_time(), time.perf_counter()
        fn()
        sync()
        cpu.append(time.thread_time() - c0)
        wall.append(time.perf_counter() - w0)
    return statistics.median(cpu), statistics.median(wall)


def make_loop(res: int, options: dict, device: torch.device | None = None) -> TrainingLoop:
    device = device or torch.device("cpu")
    frames = np.random.default_rng(0).integers(0, 256, (64, 3, res, res), dtype=np.uint8)
    bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
    settings = resolve(options, res, 3, device=device.type, bf16_supported=bf16)
    return TrainingLoop(settings, FrameDataset(frames), device)


def time_phases(loop: TrainingLoop, repeats: int, warmup: int = 1) -> tuple[dict[str, tuple[float, float]],
                                                                             dict[str, float]]:
    """Median (CPU, wall) seconds of each training phase on one whole batch, and the lazy schedule's
    weight of each phase per iteration."""
    s, L, dev = loop.settings, loop.loss, loop.device
    reals = loop.next_reals()
    z = lambda: torch.randn(s.batch, s.z_dim, device=dev)  # noqa: E731
    phases = {
        "G main": lambda: loop._phase(loop.G, loop.G_opt, lambda i: L.g_main(z(), reals), 1.0, {}),
        "G reg": lambda: loop._phase(loop.G, loop.G_opt, lambda i: L.g_reg(z()), s.g_reg_interval, {}),
        "D main": lambda: loop._phase(loop.D, loop.D_opt, lambda i: L.d_main(z(), reals), 1.0, {}),
        "D reg": lambda: loop._phase(loop.D, loop.D_opt, lambda i: L.d_reg(reals), s.d_reg_interval, {}),
    }
    weights = {"G main": 1, "G reg": 1 / s.g_reg_interval, "D main": 1, "D reg": 1 / s.d_reg_interval}
    return {k: measure(fn, repeats, warmup, dev) for k, fn in phases.items()}, weights


def bench_iteration(name: str, res: int, options: dict, repeats: int) -> None:
    loop = make_loop(res, options)
    s = loop.settings
    times, weights = time_phases(loop, repeats)
    cpu = sum(times[k][0] * w for k, w in weights.items())
    wall = sum(times[k][1] * w for k, w in weights.items())
    detail = "  ".join(f"{k} {v[0] * 1000:.0f}ms" for k, v in times.items())
    print(f"{name:<34} {cpu:7.3f} s/iter  {cpu / s.batch * 1000:8.1f} s/kimg   (wall {wall:.3f} s/iter)   {detail}")


# --- GPU --------------------------------------------------------------------------------------------

GPU_VARIANTS = (("fp32", {"precision": "fp32"}), ("bf16", {"precision": "bf16"}),
                ("bf16 + compile", {"precision": "bf16", "compile": True}))


def run_case(res: int, options: dict, repeats: int, warmup: int, device: torch.device) -> dict:
    """One preset's amortised iteration on ``device``: batch, sec/iter, sec/kimg, peak memory (CUDA only; MiB)
    and each phase's median wall ms. Raises ``torch.cuda.OutOfMemoryError`` when it does not fit.

    Returns numbers instead of printing them, so benchmarks/gpu_check.py can collect them per case."""
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        loop = make_loop(res, options, device)
        batch = loop.settings.batch
        times, weights = time_phases(loop, repeats, warmup)
    finally:
        loop = None
        torch._dynamo.reset()  # compiled graphs belong to this case's networks
    wall = sum(times[k][1] * w for k, w in weights.items())
    return {"batch": batch, "sec_per_iter": wall, "sec_per_kimg": wall / batch * 1000,
            "peak_mib": torch.cuda.max_memory_allocated(device) / 2 ** 20 if cuda else None,
            "phases_ms": {k: v[1] * 1000 for k, v in times.items()}}


def bench_gpu_case(res: int, config: str, options: dict, repeats: int, warmup: int) -> tuple[float, float] | None:
    """(sec/kimg, peak MiB) of one preset on the GPU, printed; None when it does not fit in memory."""
    try:
        case = run_case(res, {"config": config, **options}, repeats, warmup, torch.device("cuda"))
    except torch.cuda.OutOfMemoryError:
        print("    out of GPU memory (set batch_gpu in [train] to split the batch into smaller passes)")
        return None
    detail = "  ".join(f"{k} {ms:.0f}ms" for k, ms in case["phases_ms"].items())
    print(f"    {case['sec_per_kimg']:8.2f} s/kimg  {case['sec_per_iter']:7.3f} s/iter  "
          f"{case['peak_mib']:8.0f} MiB peak   {detail}")
    return case["sec_per_kimg"], case["peak_mib"]


def bench_gpu(resolutions: list[int], configs: list[str], repeats: int) -> None:
    name = torch.cuda.get_device_name()
    print(f"torch {torch.__version__}, {name}; fp32 = TF32 matmuls/convolutions (as training runs); phases: "
          f"median wall time of {repeats} runs between torch.cuda.synchronize() calls, after untimed warm-up "
          "(3 calls per phase with compile, else 1)")
    for res in resolutions:
        for config in configs:
            s = resolve({"config": config}, res, 3)
            print(f"{res}x{res} config {config} (batch {s.batch}, channel_base {s.channel_base}, "
                  f"map {s.map_layers}):")
            base = None
            for label, options in GPU_VARIANTS:
                print(f"  {label}:")
                result = bench_gpu_case(res, config, options, repeats, 3 if options.get("compile") else 1)
                if result is None:
                    continue
                if label == "fp32":
                    base = result
                elif base is not None:
                    print(f"    {label} / fp32: time {result[0] / base[0]:.2f}x, memory {result[1] / base[1]:.2f}x")


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
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu",
                        help="cpu: small networks on one thread; cuda: the GPU presets at 256 and 512 px")
    parser.add_argument("--res", type=int, action="append", choices=(256, 512),
                        help="with --device cuda: only this resolution (repeatable; default both)")
    parser.add_argument("--config", action="append", choices=("auto", "stylegan2"),
                        help="with --device cuda: only this preset (repeatable; default both)")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    if args.device == "cuda":
        if not torch.cuda.is_available():
            built = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            parser.exit(2, f"--device cuda: PyTorch {torch.__version__} ({built}) sees no CUDA GPU on this "
                           "machine. Run it on a machine with an NVIDIA GPU, its driver and a CUDA build of "
                           "PyTorch, or use --device cpu.\n")
        bench_gpu(args.res or [256, 512], args.config or ["auto", "stylegan2"], repeats)
        return
    torch.set_num_threads(1)
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
