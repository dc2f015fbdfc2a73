"""Does the GAN learn the film within the artist's budget? SWD and diversity per snapshot, today vs new.

    .venv/bin/python benchmarks/learns.py                     # demo + real clip, 2/5/10 kimg, 32 px (+64 px clip)
    .venv/bin/python benchmarks/learns.py --cases demo --budgets 2,5,10
    .venv/bin/python benchmarks/learns.py --try 'fast={"lr": 0.004}'   # add a setting of your own
    .venv/bin/python benchmarks/learns.py --contention 4      # CPU time of the demo's training, idle vs 4 busy loops

Cases (frames made by CineML's own source/extract/letterbox stages, greyscale, cached in ``--work``):

- ``demo``: the README demo's film (20 s, 12 fps -> 240 frames) at 32 px, ``config = "tiny"``;
- ``clip``: a real handheld clip, ``cockatoo.mp4`` (14 s, 1280x720, 20 fps -> 280 frames) from Debian's
  ``python3-imageio`` package (``apt-get download`` + ``dpkg -x``; skipped with a message when the package
  cannot be had), at 32 px; ``clip64``: the same at 64 px.

Settings, each trained from the same seed in its own process (one torch thread; ``--jobs`` at once;
``--seeds N`` trains each from N seeds and averages, with the spread of the SWD; ``--first-seed K`` starts
the seeds at K, to add seeds to a close call):

- ``today``: the ``tiny`` preset's values before the small-budget changes, written out as options
  (batch 8, channel_base 1024, lr 0.0025 for G and D, R1 gamma from the auto formula, ADA at the paper's pace
  ``ada_kimg = 500``, style mixing 0.9, path length 2, logistic loss), so it stays the baseline after the
  preset changed;
- ``new``: ``config = "tiny"`` as it is now (the defaults the README demo runs).
- more with ``--try NAME={options}`` (over ``config = "tiny"``; a key starting with ``_`` sets a field of the
  resolved settings that no option reaches, e.g. ``'{"_ema_rampup": 0.02}'``); docs/training.md#short-runs
  lists what was tried.

At each budget the EMA generator makes as many images as there are frames (fixed latents, random
noise, as the trainer's own metrics do) and the benchmark prints the project's SWD (x1e3, Laplacian
pyramid patches; ``cineml_plugins.stylegan2.metrics``) against all frames, the diversity ratio (per-pixel
standard deviation across the generated images over the same across the frames), the coverage (share of
frames some generated image comes close to, on 16 px thumbnails; Naeem et al. 2020) and the training
seconds so far (metrics excluded), and saves the first 32 images as ``<work>/samples/<case>-<setting>/<kimg>.png``
(look at them: the diversity ratio also counts brightness and grain, so a grid of one pose can score 0.8).
Then, per case, the ratios to ``today`` at each budget and at equal time (the setting's last snapshot
reached within the seconds ``today`` took for its largest budget). 64 px costs about 4x per kimg, so its
budgets stop at 5 kimg.

Reference points printed with every case: SWD of one half of the frames against the other (a network
that had learned the film perfectly) and of uniform noise (one that learned nothing).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLIP_PACKAGE = "python3-imageio"
CLIP_PATH = "usr/lib/python3/dist-packages/imageio/resources/images/cockatoo.mp4"

# The tiny preset as it was before the small-budget work (commit 0c8e880), written out as options.
TODAY = {"config": "tiny", "batch": 8, "channel_base": 1024, "channel_max": 128, "map_layers": 2, "lr": 0.0025,
         "dlr": 0.0025, "ema_kimg": 2.5, "style_mixing": 0.9, "pl_weight": 2.0, "augment": "ada", "augment_p": 0.0,
         "ada_kimg": 500.0, "ada_target": 0.6, "mirror": False, "mode_seeking": 0.0, "loss": "logistic"}
SETTINGS = {"today": TODAY, "new": {"config": "tiny"}}

CASES = {  # name: (film, extract fps, letterbox size)
    "demo": ("demo", 12, 32),
    "clip": ("clip", 20, 32),
    "clip64": ("clip", 20, 64),
}


# --- frames -------------------------------------------------------------------------------------------


def fetch_clip(work: Path) -> Path | None:
    """The real clip, from a Debian package (downloaded once into ``work``); None when it cannot be had."""
    film = work / "debs" / CLIP_PATH
    if film.exists():
        return film
    debs = work / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    try:
        subprocess.run(["apt-get", "download", CLIP_PACKAGE], cwd=debs, check=True, capture_output=True, timeout=300)
        deb = next(debs.glob(f"{CLIP_PACKAGE}_*.deb"))
        subprocess.run(["dpkg", "-x", str(deb), str(debs)], check=True, capture_output=True, timeout=300)
    except (OSError, subprocess.SubprocessError, StopIteration) as exc:
        detail = exc.stderr.decode(errors="replace").strip() if getattr(exc, "stderr", None) else str(exc)
        print(f"skipping the real clip: could not fetch Debian's {CLIP_PACKAGE} ({detail or type(exc).__name__}); "
              "run `apt-get update` first, or pass --cases demo.")
        return None
    return film if film.exists() else None


def frames_for(case: str, work: Path) -> Path | None:
    """Extract a case's frames with CineML's own stages (cached); returns the frames folder."""
    film, fps, size = CASES[case]
    folder = work / f"{film}-{fps}fps-{size}"
    if (folder / "frames").is_dir():
        return folder / "frames"
    folder.mkdir(parents=True, exist_ok=True)
    if film == "demo":
        source = 'source = "footage/demo.mp4"\n\n[source]\nuse = "synthetic"\nseconds = 20\n'
    else:
        clip = fetch_clip(work)
        if clip is None:
            return None
        source = f'source = "{clip}"\n'
    (folder / "project.toml").write_text(
        f'[project]\nname = "{case}"\n{source}\n[extract]\nuse = "fps"\nfps = {fps}\n\n'
        f'[[preprocess]]\nuse = "letterbox"\nsize = {size}\ngrayscale = true\n')
    subprocess.run([sys.executable, "-m", "cineml", "-q", "run", str(folder / "project.toml"), "--to", "extract"],
                   check=True)
    return folder / "frames"


# --- one training run, in a child process ----------------------------------------------------------


def child(job: dict) -> None:
    """Train one setting on one case; print one JSON line per budget."""
    import numpy as np
    import torch

    from cineml_plugins.stylegan2.dataset import open_frames
    from cineml_plugins.stylegan2.loop import TrainingLoop
    from cineml_plugins.stylegan2.metrics import PatchSet, coverage, diversity, patches_per_image, swd
    from cineml_plugins.stylegan2.pictures import to_uint8_grid
    from cineml_plugins.stylegan2.presets import resolve

    torch.set_num_threads(1)
    mirror = bool(job["options"].get("mirror"))
    dataset = open_frames(Path(job["frames"]), Path(job["cache"]), mirror=mirror, log=lambda msg: None)
    options = {**job["options"], "kimg": max(job["budgets"]), "device": "cpu"}
    fields = {k[1:]: options.pop(k) for k in list(options) if k.startswith("_")}  # Settings fields, e.g. _betas
    settings = resolve(options, dataset.resolution, dataset.channels, project_seed=0, device="cpu")
    settings = dataclasses.replace(settings, **{k: tuple(v) if isinstance(v, list) else v for k, v in fields.items()})
    loop = TrainingLoop(settings, dataset, "cpu")
    count = dataset.num_frames
    per_image = patches_per_image(count)
    everything = np.arange(count)
    reals = torch.from_numpy(dataset.get(everything)).float() / 127.5 - 1

    def describe(images: torch.Tensor) -> list[torch.Tensor]:
        patches = PatchSet(per_image, seed=0)
        patches.add(images)
        return patches.descriptors()

    real_patches = describe(reals)

    def measure(images: torch.Tensor) -> dict:
        levels = swd(real_patches, describe(images), dataset.resolution, dataset.channels)
        return {**{k: round(v, 1) for k, v in levels.items()}, "diversity": diversity(reals, images),
                "coverage": coverage(reals, images)}

    if job.get("references"):
        halves = describe(reals[::2]), describe(reals[1::2])
        half = swd(halves[0], halves[1], dataset.resolution, dataset.channels)["swd"]
        noise = torch.rand(reals.shape, generator=torch.Generator().manual_seed(1)) * 2 - 1
        print(json.dumps({"reference": True, "halves_swd": half, "noise": measure(noise)}), flush=True)

    def sample() -> torch.Tensor:
        with torch.random.fork_rng(), torch.no_grad():
            torch.manual_seed(4)
            z = torch.randn(count, settings.z_dim)
            return torch.cat([loop.G_ema(zc, noise_mode="random").clamp(-1, 1) for zc in z.split(64)])

    print(json.dumps({"kimg": 0, "seconds": 0.0, **measure(sample())}), flush=True)
    trained = 0.0
    for budget in sorted(job["budgets"]):
        start = time.perf_counter()
        while loop.nimg < budget * 1000:
            loop.step()
        trained += time.perf_counter() - start
        p = loop.augment.p if loop.augment is not None else 0.0
        images = sample()
        if job.get("samples"):  # the first 32 images as a grid, to look at
            to_uint8_grid(images[:32], (8, 4)).save(Path(job["samples"]) / f"{loop.nimg / 1000:g}kimg.png")
        print(json.dumps({"kimg": loop.nimg / 1000, "seconds": round(trained, 1), "augment_p": round(p, 3),
                          **measure(images)}), flush=True)


def run_job(case: str, name: str, options: dict, frames: Path, budgets: list[float], work: Path,
            references: bool) -> list[dict]:
    samples = work / "samples" / f"{case}-{name}"
    samples.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    job = {"frames": str(frames), "cache": str(work / "cache" / f"{case}"), "options": options,
           "budgets": budgets, "references": references, "samples": str(samples)}
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps(job)], capture_output=True, text=True,
                         env=env)
    if out.returncode:
        raise SystemExit(f"{case}/{name} failed:\n{out.stderr[-3000:]}")
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    done = "  ".join(f"{r['kimg']:g} kimg {r['seconds']:.0f} s SWD {r['swd']:.0f} "
                     f"({'/'.join(f'{v:.0f}' for k, v in r.items() if k.startswith('swd_'))}) div {r['diversity']:.2f} "
                     f"cov {r['coverage']:.2f}" for r in rows if "kimg" in r)
    print(f"[{case}/{name} done] {done}", flush=True)
    return rows


# --- contention ------------------------------------------------------------------------------------


def contention(work: Path, busy: int, kimg: float) -> None:
    """CPU and wall seconds of the demo's training (``cineml run --only train``, torch's default threads):
    idle, then beside ``busy`` CPU-bound loops (each a plain Python ``while True``: the kind of neighbour a
    shared laptop has). "today's threads": the thread count fixed at start (``CINEML_FIXED_THREADS=1``) and
    GNU OpenMP's default spin-wait (``GOMP_SPINCOUNT=300000``), the baseline; without them, the trainer's
    defaults (threads follow the free cores, waiting threads spin 10000 rounds then sleep)."""
    frames = frames_for("demo", work)
    assert frames is not None
    manifest = frames.parent / "project.toml"
    text = manifest.read_text()
    if "[train]" not in text:
        manifest.write_text(text + '\n[train]\nuse = "stylegan2"\nconfig = "tiny"\n')
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "CINEML_FIXED_THREADS",
                                                            "OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    rows = {}
    today = {"CINEML_FIXED_THREADS": "1", "GOMP_SPINCOUNT": "300000"}  # GNU OpenMP's own spin count
    runs = (("idle", 0, {}), ("idle, today's threads", 0, today), ("busy, today's threads", busy, today),
            ("busy", busy, {}))
    for name, loops, extra in runs:
        hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(loops)]
        try:
            t0, before = time.perf_counter(), os.times()
            subprocess.run([sys.executable, "-m", "cineml", "-q", "run", str(manifest), "--only", "train", "--force",
                            "train", "-S", f"train.kimg={kimg}", "-S", f"train.snapshot_kimg={kimg}"], check=True,
                           env={**env, **extra})
            after, wall = os.times(), time.perf_counter() - t0
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()
        cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
        rows[name] = (wall, cpu)
        print(f"{name:<34} {wall:7.1f} s wall {cpu:7.1f} s CPU  ({kimg:g} kimg, {loops} busy loops)", flush=True)
    for busy_name, idle_name in (("busy, today's threads", "idle, today's threads"), ("busy", "idle")):
        (wall, cpu), (wall0, cpu0) = rows[busy_name], rows[idle_name]
        print(f"{busy_name} / {idle_name}: wall x{wall / wall0:.2f}, CPU time x{cpu / cpu0:.2f} "
              "(goal: CPU time <= x1.5)")
    (wall, cpu), (wall0, cpu0) = rows["idle"], rows["idle, today's threads"]
    print(f"idle / idle, today's threads: wall x{wall / wall0:.2f}, CPU time x{cpu / cpu0:.2f}")


# --- report ----------------------------------------------------------------------------------------


def mean_rows(runs: list[list[dict]]) -> list[dict]:
    """The runs of one setting from several seeds, averaged budget by budget (``swd_sd``: their spread)."""
    if len(runs) == 1:
        return runs[0]
    out = [r for r in runs[0] if r.get("reference")]
    snapshots = [[r for r in rows if not r.get("reference")] for rows in runs]
    for same in zip(*snapshots):
        row = {k: sum(r[k] for r in same) / len(same) for k in ("kimg", "seconds", "swd", "diversity", "coverage")}
        row["augment_p"] = sum(r.get("augment_p", 0) for r in same) / len(same)
        row["swd_sd"] = (sum((r["swd"] - row["swd"]) ** 2 for r in same) / (len(same) - 1)) ** 0.5
        out.append(row)
    return out


def report(case: str, results: dict[str, list[dict]]) -> None:
    ref = next((r for rows in results.values() for r in rows if r.get("reference")), None)
    if ref:
        print(f"  references: frames half vs half SWD {ref['halves_swd']:.0f}; uniform noise SWD "
              f"{ref['noise']['swd']:.0f}, diversity {ref['noise']['diversity']:.2f}, coverage "
              f"{ref['noise']['coverage']:.2f}")
    snaps = {name: [r for r in rows if not r.get("reference")] for name, rows in results.items()}
    print(f"  {'setting':<10} {'kimg':>6} {'seconds':>8} {'SWD':>7} {'(sd)':>5} {'diversity':>9} {'coverage':>8} "
          f"{'ADA p':>6}")
    for name, rows in snaps.items():
        for r in rows:
            sd = f"{r['swd_sd']:5.0f}" if "swd_sd" in r else f"{'':5}"
            print(f"  {name:<10} {r['kimg']:6.2f} {r['seconds']:8.1f} {r['swd']:7.0f} {sd} {r['diversity']:9.2f} "
                  f"{r['coverage']:8.2f} {r.get('augment_p', 0):6.3f}")
    base = snaps.get("today")
    if not base:
        return
    for name, rows in snaps.items():
        if name == "today":
            continue
        pairs = [(b, r) for b, r in zip(base, rows) if b["kimg"]]  # the same budget (a batch may overshoot it)
        for b, r in pairs:
            print(f"  {name}/today at {b['kimg']:g} kimg: SWD x{r['swd'] / b['swd']:.2f}, diversity "
                  f"{r['diversity']:.2f} vs {b['diversity']:.2f}, coverage {r['coverage']:.2f} vs "
                  f"{b['coverage']:.2f}, seconds x{r['seconds'] / max(b['seconds'], 1e-9):.2f}")
        limit = base[-1]["seconds"]
        within = [r for r in rows if r["kimg"] and r["seconds"] <= limit * 1.02]
        if within:
            r = within[-1]
            print(f"  {name}/today at equal time ({limit:.0f} s): SWD x{r['swd'] / base[-1]['swd']:.2f} "
                  f"({r['kimg']:g} vs {base[-1]['kimg']:g} kimg)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cases", default="demo,clip,clip64")
    ap.add_argument("--budgets", default="2,5,10", help="kimg at which to measure (comma-separated)")
    ap.add_argument("--settings", default="today,new")
    ap.add_argument("--try", dest="extra", action="append", default=[], metavar='NAME={"option": value}',
                    help="another setting: options over config = tiny")
    ap.add_argument("--jobs", type=int, default=2, help="trainings at once (one thread each)")
    ap.add_argument("--seeds", type=int, default=1, help="train every setting from this many seeds and average "
                    "(one snapshot's SWD swings by 1.5x in short runs)")
    ap.add_argument("--first-seed", type=int, default=0, help="seeds start here (more seeds for a close call)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "cineml-learns")
    ap.add_argument("--contention", type=int, default=0, metavar="N", help="only the contention check, N busy loops")
    ap.add_argument("--contention-kimg", type=float, default=1.0)
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(json.loads(args.child))
        return
    args.work.mkdir(parents=True, exist_ok=True)
    if args.contention:
        contention(args.work, args.contention, args.contention_kimg)
        return
    settings = {name: SETTINGS[name] for name in args.settings.split(",") if name}
    for spec in args.extra:
        name, _, text = spec.partition("=")
        settings[name] = {"config": "tiny", **json.loads(text)}
    budgets = [float(b) for b in args.budgets.split(",")]
    cases = {}
    for case in args.cases.split(","):
        frames = frames_for(case, args.work)
        if frames is not None:
            cases[case] = frames
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    jobs = [(case, name, seed) for case in cases for name in settings for seed in seeds]
    started = time.perf_counter()

    def case_budgets(case: str) -> list[float]:  # 64 px costs about 4x per kimg: its budgets stop at 5 kimg
        return [b for b in budgets if CASES[case][2] <= 32 or b <= 5] or budgets[:1]

    first = next(iter(settings))
    with ThreadPoolExecutor(args.jobs) as pool:
        futures = {(case, name, seed): pool.submit(
            run_job, case, name if seeds == range(1) else f"{name}-seed{seed}", {**settings[name], "seed": seed},
            cases[case], case_budgets(case), args.work, name == first and seed == seeds[0])
            for case, name, seed in jobs}
        for case in cases:
            results = {name: mean_rows([futures[(case, name, seed)].result() for seed in seeds]) for name in settings}
            print(f"\n{case} ({CASES[case][2]} px, {len(list(cases[case].glob('*.jpg')))} frames)")
            report(case, results)
    print(f"\nbenchmark: {time.perf_counter() - started:.0f} s")
    shutil.rmtree(args.work / "cache", ignore_errors=True)


if __name__ == "__main__":
    main()
