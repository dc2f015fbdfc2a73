"""Benchmark: projection (the film re-made by its GAN), cold start per frame against warm starts.

    .venv/bin/python benchmarks/project.py                        # builds a small demo network first (~2 min)
    .venv/bin/python benchmarks/project.py --project projects/demo  # after a demo run: its network and frames

Re-makes the same frames two ways on the same network in the same run: every frame from the average image
(``first_steps`` steps each, what a per-image projector does), and as CineML does, the first frame cold and
each next one warm-started from the frame before (``steps`` steps). Prints seconds per frame and PSNR
against the frames for both, and their ratios. ``--device cuda`` (or auto on a GPU machine) times the GPU.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent


def demo_network(work: Path, seconds: float, kimg: float) -> Path:
    """A copy of the demo project, trained for ``kimg`` on ``seconds`` of its film; returns its folder."""
    from cineml.testing import run_project

    project = work / "demo"
    shutil.copytree(ROOT / "projects/demo", project, ignore=shutil.ignore_patterns(
        "frames", "train", "generated", "art", "footage", ".cineml", "run.json", "one-offs"))
    print(f"training the demo network for {kimg:g} kimg on {seconds:g} s of its film in {project} ...", flush=True)
    run_project(project / "project.toml", [f"source.seconds={seconds}", f"train.kimg={kimg}",
                                           f"train.snapshot_kimg={kimg}"], only=["source", "extract", "train"])
    return project


def main() -> None:
    from cineml_plugins.stylegan2.generator import load_network
    from cineml_plugins.stylegan2.pictures import pick_device, to_uint8
    from cineml_plugins.stylegan2.projector import Projector, load_target, psnr

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--project", type=Path, help="a trained project (default: build a small demo one)")
    parser.add_argument("--frames", type=int, default=24, help="consecutive frames to re-make")
    parser.add_argument("--steps", type=int, default=30, help="steps of a warm start")
    parser.add_argument("--first-steps", type=int, default=150, help="steps of a cold start")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cineml-project-"))
    project = args.project or demo_network(work, seconds=6, kimg=2)
    device = pick_device(args.device)
    G = load_network("latest", project / "train", project).G.to(device).eval().requires_grad_(False)
    R, C = G.img_resolution, G.img_channels
    frames = sorted((project / "frames").glob("0*.*"))[:args.frames]
    targets_u8 = np.stack([load_target(p, R, C) for p in frames])
    targets = torch.from_numpy(targets_u8).to(device).float().div(127.5).sub(1)
    projector = Projector(G, "w+", 0.1)
    print(f"{len(frames)} frames of {project}, {R}x{R}, on {device.type} with {torch.get_num_threads()} threads")

    def measure(warm: bool) -> tuple[float, float]:
        start, made = time.perf_counter(), []
        previous = None
        for k in range(len(frames)):
            cold = not warm or previous is None
            begin = projector.average(1) if cold or previous is None else previous
            ws, _ = projector.fit(targets[k:k + 1], begin, args.first_steps if cold else args.steps, cold)
            previous = ws
            with torch.no_grad():
                made.append(to_uint8(G.synthesis(ws, noise_mode="const"))[0].transpose(2, 0, 1))
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = (time.perf_counter() - start) / len(frames)
        return seconds, float(np.mean([psnr(m, t) for m, t in zip(made, targets_u8)]))

    cold_s, cold_psnr = measure(warm=False)
    warm_s, warm_psnr = measure(warm=True)
    print(f"{'start':<32}{'s/frame':>9}{'PSNR dB':>9}")
    print(f"{f'cold, {args.first_steps} steps every frame':<32}{cold_s:>9.3f}{cold_psnr:>9.2f}")
    print(f"{f'warm, {args.steps} steps (first cold)':<32}{warm_s:>9.3f}{warm_psnr:>9.2f}")
    print(f"ratio warm / cold: time x{warm_s / cold_s:.2f}, PSNR {warm_psnr - cold_psnr:+.2f} dB")
    if args.project is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
