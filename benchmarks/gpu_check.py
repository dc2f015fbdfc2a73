"""Check and measure the CUDA path on one GPU in one command (issue 22): tests, a real run, generation, training speed.

    python benchmarks/gpu_check.py                         # on a machine with an NVIDIA GPU; at most --budget-s
    python benchmarks/gpu_check.py --dry-run-cpu --budget-s 120   # every part at its tiniest on the CPU

GPU time is scarce, so everything runs under one budget (``--budget-s``, default 480 s) in this order:

1. tests: ``pytest -m cuda tests/test_cuda.py`` (CUDA against the CPU at 32x32); pass/fail counts.
2. run: a real ``cineml run`` of a 256x256 project in a temporary folder (the synthetic film, ``auto``,
   2 kimg, device cuda); each stage's wall time from run.json, sec/kimg and memory from stats.jsonl.
   Without ffmpeg (imageio-ffmpeg not installed) the film's frames are rendered here and the run
   starts at the train stage.
3. generate: images/s of a config-F generator at 512x512 (benchmarks/generate.py's code), in batches
   and through the whole generate stage (PNG writing included).
4. train_step: benchmarks/train_step.py's measurement at 256 and 512, ``auto`` and ``stylegan2``, in
   fp32 (TF32, as training runs), bf16 and bf16 + compile: sec/kimg and peak memory. Last, because it
   is the part that can stop early: cases run in a worker process that is killed when a case passes its
   own time cap, and the cases left when the budget is spent are reported as skipped.

Parts 3 and 4 run in that worker process and part 1 and 2 as subprocesses, so a hang, a crash or an
out-of-memory in one case costs only that case. It prints one table and writes one JSON (the table
included): benchmarks/results/gpu_check-<card>.json, or into ``--out``.

``--dry-run-cpu`` runs every part at its tiniest on the CPU (the CUDA tests with the CPU standing in
for the GPU, see tests/test_cuda.py), so that this script itself is tested without a GPU; its figures
mean nothing. Without a CUDA GPU and without it, the script stops with a one-line message.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import IO, Any

import torch

ROOT = Path(__file__).resolve().parent.parent
MARK = "@@gpu_check "  # prefix of the worker's messages on its stdout
SKIPPED = "skipped: the budget was spent"
EXTRACT_FPS = 12  # frames per second of film kept for training (the demo's rate)


@dataclass(frozen=True)
class Sizes:
    """What each part runs and how long it may take: the real check on a GPU, or its tiniest CPU stand-in."""

    device: str
    tests_cap: float
    run_cap: float
    run_size: int
    run_train: dict[str, Any]
    run_film: dict[str, Any]
    run_seeds: str
    gen_cap: float
    gen_res: int
    gen_count: int
    gen_batches: tuple[int, ...]
    gen_stage: tuple[int, int]  # (images, batch) through the whole generate stage
    bench_res: dict[int, int]  # the resolution reported -> the resolution run
    bench_net: dict[str, Any]  # options added to every train_step case
    bench_repeats: int
    case_cap: float
    compile_cap: float
    min_case: float  # a case is not started with less time left than this
    env: dict[str, str] = field(default_factory=dict)


GPU = Sizes(device="cuda", tests_cap=150, run_cap=150, run_size=256,
            run_train={"config": "auto", "kimg": 2, "snapshot_kimg": 1},
            run_film={"seconds": 10, "fps": 24}, run_seeds="0-31",
            gen_cap=60, gen_res=512, gen_count=256, gen_batches=(8, 32), gen_stage=(64, 8),
            bench_res={256: 256, 512: 512}, bench_net={}, bench_repeats=3,
            case_cap=60, compile_cap=150, min_case=10)
DRY = Sizes(device="cpu", tests_cap=90, run_cap=60, run_size=32,
            run_train={"config": "tiny", "channel_base": 256, "channel_max": 32, "batch": 8, "grid": [4, 2],
                       "kimg": 0.016, "snapshot_kimg": 0.008},
            run_film={"seconds": 2, "fps": 12, "width": 128, "height": 96, "audio": False}, run_seeds="0-3",
            gen_cap=30, gen_res=32, gen_count=4, gen_batches=(1, 4), gen_stage=(4, 1),
            bench_res={256: 16, 512: 32}, bench_net={"channel_base": 256, "channel_max": 32, "map_layers": 2,
                                                       "batch": 4},
            bench_repeats=1, case_cap=20, compile_cap=10, min_case=3,
            env={"CINEML_CUDA_TESTS_ON_CPU": "1"})

VARIANTS = (("fp32", {"precision": "fp32"}), ("bf16", {"precision": "bf16"}),
            ("bf16+compile", {"precision": "bf16", "compile": True}))
# Most wanted first (the issue's goals are about `auto`; stylegan2's compiled cases come last).
BENCH_ORDER = [(256, "auto", v) for v in VARIANTS] + [(512, "auto", v) for v in VARIANTS] + \
    [(res, "stylegan2", v) for res in (256, 512) for v in VARIANTS[:2]] + \
    [(res, "stylegan2", VARIANTS[2]) for res in (256, 512)]


# --- Subprocesses under a time cap -----------------------------------------------------------------


def run_capped(cmd: list[str], cap: float, log: Path, env: dict[str, str],
               echo: bool = False) -> tuple[int | None, float]:
    """Run ``cmd`` (output to ``log``, and to the console with ``echo``) for at most ``cap`` seconds.

    Returns (exit code or None when it was stopped, seconds). A stopped command first gets Ctrl-C, so a
    ``cineml run`` still writes its run.json, then is killed with its whole process group."""
    t0 = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE if echo else out,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        pump = None
        if echo:
            pump = threading.Thread(target=_tee, args=(proc.stdout, out), daemon=True)
            pump.start()
        try:
            rc: int | None = proc.wait(timeout=max(cap, 1))
        except subprocess.TimeoutExpired:
            rc = None
            _stop_group(proc, grace=5)
        if pump is not None:
            pump.join(timeout=5)
    return rc, time.monotonic() - t0


def _tee(stream: IO[str], out: IO[str]) -> None:
    for line in stream:
        sys.stdout.write(line)
        out.write(line)


def _stop_group(proc: subprocess.Popen, grace: float) -> None:
    """SIGINT, then SIGKILL after ``grace`` seconds (at once when 0), to the process group ``proc`` leads."""
    for sig, wait in ((signal.SIGINT, grace), (signal.SIGKILL, 10))[0 if grace else 1:]:
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=wait)
            return
        except subprocess.TimeoutExpired:
            continue


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- The worker: cases of parts 3 and 4, timed by the parent ---------------------------------------


def emit(**message: Any) -> None:
    print(MARK + json.dumps(message), flush=True)


def bench_case(case: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """One train_step case: benchmarks/train_step.py's own measurement."""
    import train_step

    return train_step.run_case(case["res"], case["options"], case["repeats"], case["warmup"], device)


def generate_case(case: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """Generation throughput the way benchmarks/generate.py measures it: passes of ``count`` images (mapping,
    synthesis with the modconv form the stage picks on this device, uint8), best of two after a warm-up
    batch; then the whole generate stage, checkpoint loading and PNG writing included."""
    import generate as bench

    G = bench.config_f(case["res"]).to(device)
    fused = device.type == "cuda"  # the stage's choice: fused without autograd on a GPU, non-fused on the CPU
    speeds = {}
    for batch in case["batches"]:
        bench.timed_pass(G, device, batch, fused, batch)  # warm-up: CUDA context, cuDNN kernel choice
        seconds = min(bench.timed_pass(G, device, batch, fused, case["count"]) for _ in range(2))
        speeds[f"batch {batch}"] = case["count"] / seconds
    count, batch = case["stage"]
    stage = bench.stage_images_per_second(G.cpu(), device.type, count, batch)
    return {"params_m": sum(p.numel() for p in G.parameters()) / 1e6, "images_per_s": speeds,
            "stage_images_per_s": stage, "stage_batch": batch, "count": case["count"]}


def worker(spec: dict[str, Any]) -> None:
    """Run ``spec['cases']`` in order, announcing each start and result for the parent's clock."""
    device = torch.device(spec["device"])
    kinds = {"train_step": bench_case, "generate": generate_case}
    for case in spec["cases"]:
        emit(event="start", id=case["id"])
        try:
            result = {"status": "ok", **kinds[case["kind"]](case, device)}
        except torch.cuda.OutOfMemoryError:
            result = {"status": "out of GPU memory"}
        except Exception as exc:  # noqa: BLE001 (reported per case; the other cases still run)
            traceback.print_exc()
            result = {"status": f"error: {type(exc).__name__}: {exc}"[:400]}
        emit(event="result", id=case["id"], result=result)


class Worker:
    """The worker process seen from the parent: its messages arrive on a queue (None when it exits)."""

    def __init__(self, cases: list[dict[str, Any]], device: str, log: Path) -> None:
        spec = json.dumps({"device": device, "cases": cases})
        self.log = log
        with open(log, "a") as err:
            self.proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--worker", spec],
                                         cwd=ROOT, stdout=subprocess.PIPE, stderr=err, text=True,
                                         start_new_session=True)
        self.messages: queue.Queue[dict[str, Any] | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if line.startswith(MARK):
                self.messages.put(json.loads(line[len(MARK):]))
            else:
                with open(self.log, "a") as err:
                    err.write(line)
        self.messages.put(None)

    def next(self, timeout: float) -> dict[str, Any] | None | str:
        """The next message, None when the worker exited, or "timeout"."""
        try:
            return self.messages.get(timeout=max(timeout, 0.01))
        except queue.Empty:
            return "timeout"

    def stop(self, wait: float = 0) -> int | None:
        """End the worker: after ``wait`` seconds for it to exit by itself, Ctrl-C, then kill."""
        try:
            self.proc.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            _stop_group(self.proc, grace=0)  # nothing of a stopped case is worth waiting for
        return self.proc.returncode


def run_cases(cases: list[dict[str, Any]], device: str, deadline: float, min_case: float,
              log: Path) -> dict[str, dict[str, Any]]:
    """Results by case id. Each case may take ``case['cap']`` seconds; one that overruns, or runs into the
    deadline, is killed with its worker and the next worker starts with the cases after it. Cases not
    started when less than ``min_case`` seconds are left are skipped."""
    results: dict[str, dict[str, Any]] = {}
    todo = list(cases)
    while todo and deadline - time.monotonic() >= min_case:
        worker_ = Worker(todo, device, log)
        running: tuple[dict[str, Any], float] | None = None
        while todo:
            now = time.monotonic()
            if running is None:
                wait = deadline - min_case - now
            else:
                wait = min(running[1] + running[0]["cap"], deadline) - now
            message = worker_.next(wait)
            now = time.monotonic()
            if isinstance(message, dict) and message["event"] == "start":
                running = (next(c for c in todo if c["id"] == message["id"]), now)
                print(f"  {message['id']} ...", flush=True)
            elif isinstance(message, dict):  # a result
                case = next(c for c in todo if c["id"] == message["id"])
                results[case["id"]] = {**message["result"], "seconds": round(now - running[1], 1) if running else None}
                todo.remove(case)
                running = None
            else:  # the worker exited, or the clock ran out
                rc = worker_.stop()
                if running is None:
                    if message is None:  # it died before starting a case: give up on these cases
                        for case in todo:
                            results[case["id"]] = {"status": f"worker failed to start (exit {rc}): "
                                                             f"{tail(log, 3)}"[:400]}
                        todo = []
                    break
                case, started = running
                if message is None:
                    status = f"worker exited (code {rc}) during this case: {tail(log, 3)}"[:400]
                elif now - started >= case["cap"] - 0.5:
                    status = f"timed out: stopped at its {case['cap']:.0f} s cap"
                else:
                    status = "stopped: the budget ran out"
                results[case["id"]] = {"status": status, "seconds": round(now - started, 1)}
                todo.remove(case)
                break
        else:  # every case of this worker reported: it exits by itself
            worker_.stop(wait=10)
    for case in todo:
        results[case["id"]] = {"status": SKIPPED}
    return results


# --- The four parts -------------------------------------------------------------------------------


def part_tests(sizes: Sizes, deadline: float, tmp: Path, env: dict[str, str]) -> dict[str, Any]:
    """``pytest -m cuda tests/test_cuda.py``; counts read from its JUnit XML report."""
    xml = tmp / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-rfEs", "--tb=short", "-p", "no:cacheprovider",
           f"--junitxml={xml}", "tests/test_cuda.py"]
    result: dict[str, Any] = {"command": "pytest -m cuda tests/test_cuda.py", "seconds": 0.0}
    cap = min(sizes.tests_cap, deadline - time.monotonic())
    if cap < sizes.min_case:
        return {**result, "status": SKIPPED}
    rc, seconds = run_capped(cmd, cap, tmp / "tests.log", {**env, **sizes.env}, echo=True)
    result.update(exit_code=rc, seconds=round(seconds, 1))
    if not xml.exists():  # (pytest stopped by Ctrl-C still writes the report of the tests that ran)
        result["status"] = f"timed out after {seconds:.0f} s" if rc is None else f"pytest exited {rc} without a report"
        return result
    suite = ET.parse(xml).getroot()
    suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    result.update(passed=counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"],
                  failed=counts["failures"], errors=counts["errors"], skipped=counts["skipped"])
    problems, reasons = [], set()
    for case in suite.iter("testcase"):
        for child in case:
            message = (child.get("message") or "").strip()
            if child.tag in ("failure", "error"):
                problems.append(f"{case.get('name')}: {message.splitlines()[0][:300] if message else child.tag}")
            elif child.tag == "skipped":
                reasons.add(message)
    result.update(problems=problems, skip_reasons=sorted(reasons))
    result["status"] = "ok" if rc == 0 else f"timed out after {seconds:.0f} s" if rc is None else f"pytest exited {rc}"
    return result


def have_ffmpeg() -> bool:
    try:
        import imageio_ffmpeg

        imageio_ffmpeg.get_ffmpeg_exe()
        return True
    except Exception:  # noqa: BLE001 (not installed, or no binary for this platform)
        return False


def toml_value(value: Any) -> str:
    """A Python value as TOML (json's spelling of strings, numbers, booleans and lists is TOML's too)."""
    return json.dumps(value)


def write_project(root: Path, sizes: Sizes) -> Path:
    """A project like projects/demo, at ``run_size`` on ``sizes.device``, with one compose step."""
    train = {"use": "stylegan2", **sizes.run_train, "device": sizes.device}
    tables = {
        "project": {"name": "gpu-check", "source": "footage/film.mp4", "seed": 0},
        "source": {"use": "synthetic", **sizes.run_film},
        "extract": {"use": "fps", "fps": EXTRACT_FPS},
        "train": train,
        "generate": {"use": "stylegan2", "seeds": sizes.run_seeds, "device": sizes.device},
    }
    lines = []
    for name, values in tables.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {toml_value(v)}" for k, v in values.items()]
        lines.append("")
        if name == "extract":
            lines += ["[[preprocess]]", 'use = "letterbox"', f"size = {sizes.run_size}", ""]
    lines += ["[[compose]]", 'use = "grid"', 'input = "generated"', "columns = 8", 'output = "generated-grid.png"']
    root.mkdir(parents=True, exist_ok=True)
    manifest = root / "project.toml"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def render_frames(root: Path, sizes: Sizes) -> int:
    """The synthetic film's frames, square at ``run_size``, straight into frames/ (for a machine without
    ffmpeg, where the source and extract stages cannot run)."""
    from PIL import Image

    from cineml_plugins.synthetic import iter_frames

    folder = root / "frames"
    folder.mkdir(parents=True, exist_ok=True)
    side = max(sizes.run_size, 64)  # the renderer's smallest frame
    n = 0
    for n, gray in enumerate(iter_frames(sizes.run_film["seconds"], EXTRACT_FPS, side, side), 1):
        Image.fromarray(gray).resize((sizes.run_size,) * 2).convert("RGB").save(folder / f"{n:06d}.png")
    return n


def last_stats(root: Path) -> dict[str, Any]:
    """The training's last stats.jsonl record (published, or still in staging when the run was stopped)."""
    for path in [root / "train" / "stats.jsonl", *sorted((root / ".cineml" / "staging").glob("train-*/stats.jsonl"))]:
        if path.is_file():
            lines = [line for line in path.read_text().splitlines() if line.strip()]
            if lines:
                return json.loads(lines[-1])
    return {}


def part_run(sizes: Sizes, deadline: float, tmp: Path, env: dict[str, str], ffmpeg: bool) -> dict[str, Any]:
    """A real ``cineml run`` in a temporary project; each stage's seconds from run.json."""
    root = tmp / "project"
    result: dict[str, Any] = {"size": sizes.run_size, "train": sizes.run_train, "device": sizes.device}
    if deadline - time.monotonic() < sizes.min_case:
        return {**result, "status": SKIPPED}
    manifest = write_project(root, sizes)
    cmd = [sys.executable, "-m", "cineml", "-v", "run", str(manifest)]
    if not ffmpeg:
        result["frames_rendered_here"] = render_frames(root, sizes)
        result["note"] = "no ffmpeg (imageio-ffmpeg is not installed): frames rendered here, run --from train"
        cmd += ["--from", "train"]
    cap = min(sizes.run_cap, deadline - time.monotonic())
    rc, seconds = run_capped(cmd, cap, tmp / "run.log", env)
    result.update(exit_code=rc, seconds=round(seconds, 1))
    record = json.loads((root / "run.json").read_text()) if (root / "run.json").is_file() else {}
    result["stages"] = {s["stage"]: s.get("seconds") for s in record.get("stages", []) if s.get("ran")}
    stats = last_stats(root)
    result["train_stats"] = {k: stats[k] for k in ("kimg", "sec_per_kimg", "img_per_sec", "memory_mb") if k in stats}
    if rc == 0 and record.get("status") == "finished":
        result["status"] = "ok"
    else:
        why = "timed out" if rc is None else f"exit {rc}"
        result["status"] = f"{why}, run.json: {record.get('status', 'missing')} {record.get('error', '')}".strip()
        result["log_tail"] = tail(tmp / "run.log")
    return result


def gen_cases(sizes: Sizes) -> list[dict[str, Any]]:
    return [{"id": f"generate {sizes.gen_res}", "kind": "generate", "res": sizes.gen_res, "count": sizes.gen_count,
             "batches": list(sizes.gen_batches), "stage": list(sizes.gen_stage), "cap": sizes.gen_cap}]


def bench_cases(sizes: Sizes) -> list[dict[str, Any]]:
    cases = []
    for res, config, (label, variant) in BENCH_ORDER:
        compiled = bool(variant.get("compile"))
        cases.append({"id": f"{res} {config} {label}", "kind": "train_step", "res": sizes.bench_res[res],
                      "reported_res": res, "config": config, "variant": label,
                      "options": {"config": config, **variant, **sizes.bench_net}, "repeats": sizes.bench_repeats,
                      "warmup": 3 if compiled else 1, "cap": sizes.compile_cap if compiled else sizes.case_cap})
    return cases


# --- Report ---------------------------------------------------------------------------------------


def table_rows(report: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(part, case, result, seconds) rows of the whole report."""
    rows = []
    t = report["tests"]
    if "passed" in t:
        text = f"{t['passed']} passed, {t['failed']} failed, {t['errors']} errors, {t['skipped']} skipped"
    else:
        text = t["status"]
    rows.append(("tests", t["command"], text, f"{t['seconds']:.1f}"))
    r = report["run"]
    rows.append(("run", f"cineml run, {r['size']}px {r['train']['config']} {r['train']['kimg']} kimg", r["status"],
                 f"{r.get('seconds', 0):.1f}"))
    if "note" in r:
        rows.append(("run", "  (no ffmpeg here)", "frames rendered by this script; the run starts at train", ""))
    for stage, seconds in r.get("stages", {}).items():
        rows.append(("run", f"  stage {stage}", "", f"{seconds:.1f}" if seconds is not None else "-"))
    st = r.get("train_stats", {})
    if "sec_per_kimg" in st:
        rows.append(("run", "  train, last snapshot interval",
                     f"{st['sec_per_kimg']:.2f} s/kimg, {st.get('memory_mb', 0):,.0f} MiB peak", ""))
    g = report["generate"]
    gid = f"{g.get('res')}px config F"
    if g.get("status") == "ok":
        for batch, ips in g["images_per_s"].items():
            rows.append(("generate", f"{gid}, {batch}", f"{ips:.1f} images/s", ""))
        rows.append(("generate", f"{gid}, whole stage, batch {g['stage_batch']}",
                     f"{g['stage_images_per_s']:.1f} images/s (PNG writing included)", f"{g.get('seconds', 0):.1f}"))
    else:
        rows.append(("generate", gid, g.get("status", "?"), f"{g.get('seconds') or 0:.1f}"))
    for case in report["train_step"]:
        ran_at = f" (ran at {case['ran_at']})" if "ran_at" in case else ""
        name = f"{case['res']}{ran_at} {case['config']} {case['variant']}"
        if case["status"] == "ok":
            mem = f", {case['peak_mib']:,.0f} MiB peak" if case.get("peak_mib") is not None else ""
            text = f"{case['sec_per_kimg']:.2f} s/kimg (batch {case['batch']}){mem}"
        else:
            text = case["status"]
        rows.append(("train_step", name, text, f"{case['seconds']:.1f}" if case.get("seconds") is not None else "-"))
    return rows


def estimates(cases: list[dict[str, Any]]) -> dict[str, Any]:
    """The issue's goals worked out from the train_step figures. Iterations only: snapshots, fakes grids and
    metrics come on top (part 2's sec/kimg includes them)."""
    spk = {(c["res"], c["config"], c["variant"]): c["sec_per_kimg"] for c in cases if c["status"] == "ok"}
    out: dict[str, Any] = {}
    best = spk.get((256, "auto", "bf16+compile"))
    if best is not None:
        out["256 auto bf16+compile: sec/kimg (goal: at most 5 on one H100)"] = round(best, 2)
    for label, _ in VARIANTS:  # the reference film's job is 512x512 config-f (projects/the-perfect-human)
        if (512, "stylegan2", label) in spk:
            out[f"512 stylegan2 {label}: hours for 1000 kimg / for 300 kimg (goal: 300 kimg in at most 2 h)"] = [
                round(spk[512, "stylegan2", label] * k / 3600, 2) for k in (1000, 300)]
    return out


def format_table(rows: list[tuple[str, str, str, str]]) -> str:
    header = ("part", "case", "result", "seconds")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    line = lambda r: f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]:>7}"  # noqa: E731
    return "\n".join([line(header), line(tuple("-" * w for w in widths) + ("-" * 7,)), *map(line, rows)])


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


# --- Main -----------------------------------------------------------------------------------------


def preflight(parser: argparse.ArgumentParser, dry: bool) -> None:
    """Stop at once, in one line, when this machine cannot run the check (no time spent on a half check)."""
    if not dry and not torch.cuda.is_available():
        built = f"built for CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        parser.exit(2, f"gpu_check: PyTorch {torch.__version__} ({built}) sees no CUDA GPU here; run it on a machine "
                       "with an NVIDIA GPU, or use --dry-run-cpu to test the script on the CPU.\n")
    if "stylegan2" not in {ep.name for ep in entry_points(group="cineml")}:
        parser.exit(2, "gpu_check: CineML is not installed in this Python (its plugins are not registered); run "
                       f"`{sys.executable} -m pip install --no-deps --no-build-isolation -e .` in {ROOT} first.\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget-s", type=float, default=480, help="wall-clock seconds for everything (default 480)")
    parser.add_argument("--out", type=Path, help="the JSON file, or a folder for gpu_check-<card>.json (default "
                                                 "benchmarks/results; with --dry-run-cpu the temporary folder)")
    parser.add_argument("--dry-run-cpu", action="store_true",
                        help="every part at its tiniest on the CPU, to test this script without a GPU")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: the process that runs parts 3 and 4
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(args.worker))
        return
    dry = args.dry_run_cpu
    preflight(parser, dry)
    t0 = time.monotonic()
    deadline = t0 + args.budget_s - 5  # the report's own few seconds
    sizes = DRY if dry else GPU
    card = torch.cuda.get_device_name() if not dry else f"CPU dry run ({platform.machine()})"
    out_dir = args.out or (Path(tempfile.gettempdir()) if dry else ROOT / "benchmarks" / "results")
    out_path = out_dir if out_dir.suffix == ".json" else out_dir / f"gpu_check-{slug(card)}.json"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    ffmpeg = have_ffmpeg()
    report: dict[str, Any] = {
        "card": card, "dry_run": dry, "torch": torch.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(), "budget_s": args.budget_s, "ffmpeg": ffmpeg,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    print(f"gpu_check on {card}: torch {torch.__version__}, CUDA {torch.version.cuda}, budget {args.budget_s:.0f} s",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="gpu_check-") as tmp_name:
        tmp = Path(tmp_name)
        print("1/4 tests", flush=True)
        report["tests"] = part_tests(sizes, deadline, tmp, env)
        print(f"2/4 cineml run ({time.monotonic() - t0:.0f} s in)", flush=True)
        report["run"] = part_run(sizes, deadline, tmp, env, ffmpeg)
        print(f"3/4 generation throughput ({time.monotonic() - t0:.0f} s in)", flush=True)
        (case,) = gen_cases(sizes)
        report["generate"] = {"res": case["res"], **run_cases([case], sizes.device, deadline, sizes.min_case,
                                                              tmp / "worker.log")[case["id"]]}
        print(f"4/4 train_step ({time.monotonic() - t0:.0f} s in)", flush=True)
        cases = bench_cases(sizes)
        results = run_cases(cases, sizes.device, deadline, sizes.min_case, tmp / "worker.log")
        report["train_step"] = [{"res": c["reported_res"], "config": c["config"], "variant": c["variant"],
                                 **({"ran_at": c["res"]} if c["res"] != c["reported_res"] else {}),
                                 **results[c["id"]]} for c in cases]
        if any(not c["status"].startswith(("ok", "timed out", "skipped", "stopped")) for c in
               [report["generate"], *report["train_step"]]):
            report["worker_log_tail"] = tail(tmp / "worker.log", 30)
    report["seconds"] = round(time.monotonic() - t0, 1)
    report["estimates"] = estimates(report["train_step"])
    table = format_table(table_rows(report))
    report["table"] = table.splitlines()
    skipped = sum(c["status"] == SKIPPED for c in report["train_step"])
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(report, indent=1) + "\n")
    print()
    print(table)
    if skipped:
        print(f"{skipped} train_step case(s) skipped: the {args.budget_s:.0f} s budget was spent.")
    for goal, value in report["estimates"].items():
        print(f"{goal}: {value}")
    print(f"{report['seconds']:.0f} s in all; wrote {out_path}")


if __name__ == "__main__":
    main()
