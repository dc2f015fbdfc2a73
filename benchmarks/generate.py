"""Benchmark: StyleGAN2 generation throughput (images/s), batch 1 vs batched, fused vs non-fused modconv.

    .venv/bin/python benchmarks/generate.py                 # 64² and 256², config-F widths, on the CPU
    .venv/bin/python benchmarks/generate.py --device cuda   # the same on a GPU
    .venv/bin/python benchmarks/generate.py --quick         # fewer images

Networks are config F (channel_base 32768, channel_max 512, 8 mapping layers; ~27M / ~30M parameters at
64² / 256²), randomly initialised (speed does not depend on training). Each variant runs the
generator exactly as the ``stylegan2`` generate stage does (seeds -> ``RandomState`` z -> mapping ->
synthesis with constant noise -> uint8), after one warm-up batch; the number is the best of
``--repeat`` timed passes, taken round-robin over the variants so that load from other processes on
a shared machine hits every variant alike. Ratios are against batch 1 fused (what the stage uses for one image) in the
same run. A last line times the whole stage (checkpoint loading and PNG writing included) at the
batched size.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from cineml.testing import make_context
from cineml_plugins.stylegan2 import checkpoints as ckpt
from cineml_plugins.stylegan2.generator import StyleGAN2Generator, map_seeds, synthesize
from cineml_plugins.stylegan2.networks import Generator


def config_f(res: int) -> Generator:
    torch.manual_seed(0)
    return Generator(z_dim=512, w_dim=512, img_resolution=res, img_channels=3, channel_base=32768,
                     channel_max=512, map_layers=8).eval().requires_grad_(False)


def timed_pass(G: Generator, device: torch.device, batch: int, fused: bool, count: int) -> float:
    """Seconds to make ``count`` images the way the generate stage does (mapping included)."""
    G.synthesis.fused_modconv = fused
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.no_grad():
        sync()
        t0 = time.perf_counter()
        for start in range(0, count, batch):
            ws = map_seeds(G, list(range(start, min(start + batch, count))), 1.0, None, None, device)
            for _ in synthesize(G, ws, "const", batch):
                pass
        sync()
        elapsed = time.perf_counter() - t0
    G.synthesis.fused_modconv = None
    return elapsed


def stage_images_per_second(G: Generator, device: str, count: int, batch: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "train").mkdir()
        ckpt.save_checkpoint(root / "train" / ckpt.checkpoint_name(1000),
                             {f"G_ema.{k}": v for k, v in G.state_dict().items()}, {"G_kwargs": G.init_kwargs})
        impl = StyleGAN2Generator()
        ctx = make_context(root, impl, {"seeds": f"0-{count - 1}", "batch": batch, "device": device},
                           inputs={"train": root / "train"})
        ctx.log = lambda msg: None
        t0 = time.perf_counter()
        impl.generate(ctx)
        return count / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--quick", action="store_true", help="Fewer images per measurement.")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--resolutions", default="64,256")
    args = ap.parse_args()
    device = torch.device(args.device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"torch {torch.__version__}, {gpu}")
    for res in (int(r) for r in args.resolutions.split(",")):
        G = config_f(res).to(device)
        params = sum(p.numel() for p in G.parameters())
        if device.type == "cuda":
            batch, count = 32, 256 if not args.quick else 64
        else:
            batch = 8 if res <= 64 else 4
            count = (32 if res <= 64 else 8) // (2 if args.quick else 1)
        print(f"\n{res}x{res} config F ({params / 1e6:.1f}M parameters), {count} images per pass:")
        variants = [(b, fused) for b in (1, batch) for fused in (True, False)]
        for b, fused in variants:  # warm-up
            timed_pass(G, device, b, fused, b)
        best = {v: float("inf") for v in variants}
        for _ in range(args.repeat):  # round-robin, so load from other processes hits every variant alike
            for v in variants:
                best[v] = min(best[v], timed_pass(G, device, v[0], v[1], count))
        base = count / best[variants[0]]
        for (b, fused), seconds in best.items():
            ips = count / seconds
            print(f"  batch {b:3d}  {'fused    ' if fused else 'non-fused'}  {ips:8.2f} images/s  "
                  f"({ips / base:.2f}x batch-1 fused)")
        if res <= 64 or device.type == "cuda":
            ips = stage_images_per_second(G.cpu(), args.device, count, batch)
            print(f"  whole generate stage (batch {batch}, loading + PNG writing included): {ips:.2f} images/s")


if __name__ == "__main__":
    main()
