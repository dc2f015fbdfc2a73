"""Benchmark: the animation composer against the plain ffmpeg CLI, and layouts per second.

    .venv/bin/python benchmarks/compose.py            # 90 grids of 1024², as the reference artist's
    .venv/bin/python benchmarks/compose.py --quick    # 30 grids of 512²

Makes ``--count`` JPEG "fakes grids" (detailed noise that drifts from grid to grid, like training
progress), then encodes them to MP4 at 6 fps both ways, alternating, best of ``--repeat``:

* ffmpeg: ``ffmpeg -r 6 -i fakes%05d.jpg -vcodec libx264 -pix_fmt yuv420p`` plus the range fix
  (``-vf scale=out_range=tv,format=yuv420p``; JPEGs are full range);
* CineML: the ``animation`` composer (MoviePy frame function, JPEG decode in a worker thread).

Both use x264's defaults (preset medium, crf 23). Prints the time ratio (target <= 1.3) and checks
that both files hold exactly ``--count`` frames. Then times each built-in layout at about 1024²
output from 16 tiles of 512², cold (first call) and warm (repeated calls, what an animation pays per frame).
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imageio_ffmpeg
import numpy as np
from PIL import Image

from cineml.imaging import noise
from cineml.testing import make_context
from cineml_plugins import layouts
from cineml_plugins.animate import Animation

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def make_grids(folder: Path, count: int, size: int) -> list[Path]:
    """JPEG grids with fine detail that drifts from one to the next (x264 has real work to do)."""
    folder.mkdir(parents=True, exist_ok=True)
    fields = [np.stack([noise((size, size), seed=3 * k + c, scale=size / 16, octaves=6) for c in range(3)], -1)
              for k in range(2)]
    rng = np.random.default_rng(0)
    paths = []
    for k in range(count):
        a = k / max(1, count - 1)
        rgb = (fields[0] * (1 - a) + fields[1] * a) * 255 + rng.normal(0, 6, (size, size, 3))
        path = folder / f"fakes{k:05d}.jpg"
        Image.fromarray(np.clip(rgb, 0, 255).astype(np.uint8)).save(path, quality=95)
        paths.append(path)
    return paths


def frames_in(path: Path) -> int:
    log = subprocess.run([FFMPEG, "-hide_banner", "-i", str(path), "-map", "0:v", "-f", "null", "-"],
                         capture_output=True, text=True).stderr
    return int(re.findall(r"frame=\s*(\d+)", log)[-1])


def run_ffmpeg(folder: Path, out: Path) -> float:
    started = time.perf_counter()
    subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-r", "6", "-i",
                    str(folder / "fakes%05d.jpg"), "-vcodec", "libx264", "-pix_fmt", "yuv420p",
                    "-vf", "scale=out_range=tv,format=yuv420p", str(out)], check=True)
    return time.perf_counter() - started


def run_cineml(root: Path, paths: list[Path], out: Path) -> float:
    composer = Animation()
    ctx = make_context(root, composer, output=out, options={"fps": 6.0, "crf": 23, "preset": "medium"})
    started = time.perf_counter()
    composer.compose(ctx, paths)
    return time.perf_counter() - started


def bench_animation(root: Path, count: int, size: int, repeat: int) -> None:
    print(f"making {count} JPEG grids of {size}x{size}...", flush=True)
    paths = make_grids(root / "train", count, size)
    times: dict[str, list[float]] = {"ffmpeg": [], "cineml": []}
    for r in range(repeat):
        times["ffmpeg"].append(run_ffmpeg(root / "train", root / "ffmpeg.mp4"))
        times["cineml"].append(run_cineml(root, paths, root / "art" / "cineml.mp4"))
        print(f"  run {r + 1}: ffmpeg {times['ffmpeg'][-1]:.2f} s, cineml {times['cineml'][-1]:.2f} s", flush=True)
    counts = frames_in(root / "ffmpeg.mp4"), frames_in(root / "art" / "cineml.mp4")
    best = {k: min(v) for k, v in times.items()}
    print(f"animation, {count} x {size}² JPEG -> MP4 (x264 medium, crf 23), best of {repeat}:")
    print(f"  ffmpeg CLI   {best['ffmpeg']:6.2f} s  {counts[0]} frames")
    print(f"  CineML       {best['cineml']:6.2f} s  {counts[1]} frames")
    print(f"  ratio CineML / ffmpeg = {best['cineml'] / best['ffmpeg']:.2f}  (target <= 1.3)")
    if counts != (count, count):
        print(f"  FRAME COUNT MISMATCH: expected {count}", file=sys.stderr)


def bench_layouts(seconds: float) -> None:
    tiles = [Image.fromarray((np.stack([noise((512, 512), seed=k * 3 + c, scale=48) for c in range(3)], -1)
                              * 255).astype(np.uint8)) for k in range(16)]
    cases = {
        "grid": (layouts.grid, {"columns": 4, "tile_width": 240, "gutter": 8, "margin": 20}),
        "fakes-grid": (layouts.fakes_grid, {"columns": 4, "tile_width": 256}),
        "filmstrip": (layouts.filmstrip, {"frames_per_strip": 4, "frame_width": 224, "frame_height": 168}),
        "windows": (layouts.windows, {"floors": 4, "bays": 4, "window_width": 141, "window_height": 131}),
    }
    print("layouts, 16 tiles of 512² in (resized to fit), about 1024² out:")
    for name, (layout, options) in cases.items():
        layouts._facade.cache_clear()
        started = time.perf_counter()
        picture = layout(tiles, **options)
        cold = time.perf_counter() - started
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            layout(tiles, **options)
            calls += 1
        warm = calls / (time.perf_counter() - started)
        print(f"  {name:11s} {picture.width}x{picture.height}  first call {cold * 1000:6.0f} ms, "
              f"then {warm:6.1f} layouts/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 grids of 512² instead of 90 of 1024²")
    parser.add_argument("--count", type=int, default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    count = args.count or (30 if args.quick else 90)
    size = args.size or (512 if args.quick else 1024)
    with tempfile.TemporaryDirectory(prefix="cineml-bench-") as tmp:
        bench_animation(Path(tmp), count, size, args.repeat)
    bench_layouts(1.0 if args.quick else 3.0)


if __name__ == "__main__":
    main()
