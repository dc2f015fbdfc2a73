"""Benchmark: CineML's fps extractor + letterbox against the plain ffmpeg CLI doing the same job.

    .venv/bin/python benchmarks/extract.py                    # 2-minute films, 10-minute RSS run
    .venv/bin/python benchmarks/extract.py --seconds 20 --long-seconds 60   # quick check

Makes testsrc2 films (768x576 square pixels, and 720x576 at SAR 16:15 = 4:3 displayed), then times
extract + letterbox to 512² JPEG (12 fps, quality 90 = ``-q:v 2``; also greyscale, the reference film's
setting, which takes the Python path) against one hand-written ffmpeg command, best of ``--repeat``
alternating runs, and prints the ratio (target <= 1.1); then the cost of shot detection and dedupe
against the same extraction without them (goal <= 1.10). Peak memory is measured per run in a fresh
child process: its own peak RSS plus the largest ffmpeg child's (``RUSAGE_CHILDREN``), for a short and
a long film, on the ffmpeg path and the Python fallback path; it must not grow with the film's length.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import imageio_ffmpeg

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()
SIZE = 512


def make_film(path: Path, seconds: float, size: str, sar: str) -> Path:
    if not path.exists():
        subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        f"testsrc2=size={size}:rate=25", "-t", str(seconds), "-vf", f"setsar={sar}",
                        "-c:v", "libx264", "-preset", "veryfast", "-pix_fmt", "yuv420p", str(path)],
                       check=True)
    return path


# --- one measured run, in a child process -----------------------------------------------------------


def child(kind: str, film: str, out: str) -> None:
    """Run one job and print {"seconds", "self_kb", "children_kb"} as JSON."""
    out_dir = Path(out)
    flags = set(kind.split("-")[1:])  # gray: the reference film's setting (one-channel frames); noshots, dedupe
    kind, gray = kind.split("-")[0], "gray" in flags
    if kind == "ffmpeg":
        sar = "scale=iw*sar:ih,setsar=1," if "sar" in Path(film).name else ""
        graph = (f"fps=12,{sar}scale={SIZE}:{SIZE}:force_original_aspect_ratio=decrease:flags=lanczos,"
                 f"pad={SIZE}:{SIZE}:(ow-iw)/2:(oh-ih)/2:color=black,setsar=1" + (",format=gray" if gray else ""))
        out_dir.mkdir(parents=True)
        start = time.perf_counter()
        subprocess.run([FFMPEG, "-hide_banner", "-loglevel", "error", "-nostdin", "-i", film, "-an",
                        "-vf", graph, "-q:v", "2", str(out_dir / "%06d.jpg")], check=True)
        seconds = time.perf_counter() - start
    else:
        from cineml import Preprocessor
        from cineml.testing import make_context
        from cineml_plugins.extract_fps import FpsExtractor
        from cineml_plugins.letterbox import Letterbox

        class PythonLetterbox(Letterbox):  # same geometry, forced through the Python fallback
            def ffmpeg_filter(self, *args: object) -> None:
                return None

        step: Preprocessor = Letterbox() if kind == "cineml" else PythonLetterbox()
        ex = FpsExtractor()
        options = {"fps": 12, "format": "jpg", "quality": 90, "shots": "noshots" not in flags,
                   "dedupe": 2.0 if "dedupe" in flags else 0.0}
        ctx = make_context(out_dir.parent, ex, options=options, inputs={"source": Path(film)}, output=out_dir)
        ctx.log = ctx.warn = lambda msg: None
        opts = {"size": SIZE, "fill": "black", "resample": "lanczos", "grayscale": gray}
        start = time.perf_counter()
        ex.extract(ctx, [(step, opts)])
        seconds = time.perf_counter() - start
    index = out_dir / "index.json"
    frames = json.loads(index.read_text())["count"] if index.exists() else len(list(out_dir.glob("*.jpg")))
    print(json.dumps({"seconds": seconds, "frames": frames,
                      "self_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                      "children_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))


def measure(kind: str, film: Path, work: Path) -> dict:
    out = work / f"out-{kind}"
    shutil.rmtree(out, ignore_errors=True)
    result = subprocess.run([sys.executable, __file__, "--child", kind, str(film), str(out)],
                            check=True, capture_output=True, text=True)
    shutil.rmtree(out, ignore_errors=True)
    return json.loads(result.stdout.strip().splitlines()[-1])


# --- the benchmark ----------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=120, help="length of the timed films")
    parser.add_argument("--long-seconds", type=float, default=600, help="length of the long RSS film")
    parser.add_argument("--repeat", type=int, default=2, help="alternating runs per side (best kept)")
    parser.add_argument("--no-rss", action="store_true", help="only time, skip the memory runs")
    parser.add_argument("--workdir", type=Path, default=None, help="keep films here between runs")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "FILM", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    work = args.workdir or Path(tempfile.mkdtemp(prefix="cineml-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    s, long_s = args.seconds, args.long_seconds
    print(f"ffmpeg {FFMPEG}\nmaking films in {work} ...", flush=True)
    films = {
        "768x576 square": make_film(work / f"square-{s:g}s.mp4", s, "768x576", "1"),
        "720x576 SAR 16:15": make_film(work / f"pal-sar-{s:g}s.mp4", s, "720x576", "16/15"),
    }
    # grayscale = true, as for a black-and-white film: ffmpeg's JPEG encoder has no one-channel mode (the
    # CLI writes 3-channel JPEGs of grey pixels), so CineML encodes true greyscale JPEGs with Pillow.
    cases = [(name, film, "") for name, film in films.items()] + [("768x576 -> grey", films["768x576 square"], "-gray")]
    long_film = None if args.no_rss else make_film(work / f"square-{long_s:g}s.mp4", long_s, "768x576", "1")

    print(f"\nTime: fps=12, letterbox {SIZE}, JPEG q90 (-q:v 2); best of {args.repeat}")
    print(f"{'film':<20}{'frames':>7}{'ffmpeg CLI':>12}{'CineML':>10}{'ratio':>8}")
    for name, film, suffix in cases:
        best: dict[str, dict] = {}
        for _ in range(args.repeat):
            for kind in ("ffmpeg", "cineml"):
                run = measure(kind + suffix, film, work)
                if kind not in best or run["seconds"] < best[kind]["seconds"]:
                    best[kind] = run
        base, ours = best["ffmpeg"], best["cineml"]
        assert base["frames"] == ours["frames"], (base, ours)
        print(f"{name:<20}{ours['frames']:>7}{base['seconds']:>11.2f}s{ours['seconds']:>9.2f}s"
              f"{ours['seconds'] / base['seconds']:>8.3f}", flush=True)

    print(f"\nShots and dedupe: CineML with shot detection (the default), and with dedupe = 2 too, against CineML "
          f"with shots = false; best of {args.repeat}")
    print(f"{'film':<20}{'frames':>7}{'no shots':>10}{'shots':>9}{'ratio':>8}{'+dedupe':>9}{'ratio':>8}")
    for name, film, suffix in cases[::2]:
        best = {}
        for _ in range(args.repeat):
            for kind in ("cineml-noshots", "cineml", "cineml-dedupe"):
                run = measure(kind + suffix, film, work)
                if kind not in best or run["seconds"] < best[kind]["seconds"]:
                    best[kind] = run
        base = best["cineml-noshots"]["seconds"]
        shots, dedupe = best["cineml"]["seconds"], best["cineml-dedupe"]["seconds"]
        print(f"{name:<20}{best['cineml']['frames']:>7}{base:>9.2f}s{shots:>8.2f}s{shots / base:>8.3f}"
              f"{dedupe:>8.2f}s{dedupe / base:>8.3f}", flush=True)

    if long_film is None:
        return
    print("\nPeak RSS (MiB): CineML process + its largest ffmpeg child")
    print(f"{'path':<18}{'film':>8}{'frames':>8}{'python':>9}{'ffmpeg':>9}{'sum':>8}{'seconds':>9}")
    for kind in ("cineml", "python"):
        for film, seconds in ((films["768x576 square"], s), (long_film, long_s)):
            run = measure(kind, film, work)
            py, ff = run["self_kb"] / 1024, run["children_kb"] / 1024
            label = "ffmpeg path" if kind == "cineml" else "python fallback"
            print(f"{label:<18}{seconds:>7g}s{run['frames']:>8}{py:>9.1f}{ff:>9.1f}{py + ff:>8.1f}"
                  f"{run['seconds']:>9.2f}", flush=True)
    base = measure("ffmpeg", long_film, work)
    print(f"{'ffmpeg CLI alone':<18}{long_s:>7g}s{base['frames']:>8}{'':>9}{base['children_kb'] / 1024:>9.1f}")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
