"""Training threads from the CPU cores other processes leave free.

torch runs each operation on all its threads and waits for the slowest. On a laptop where other
programs keep cores busy, one of our threads is often descheduled, and the others spin at the
barrier: measured on 2 cores with busy neighbours, a 32 px training step took 15-23x longer with
2 threads than with 1, and burnt most of its CPU time waiting. So every two seconds the trainer
looks at how much CPU the rest of the machine used (``/proc/stat`` minus our own share) and runs on
the cores that are left, never more than the threads it started with (``OMP_NUM_THREADS`` or
torch's default), never fewer than one. Linux only; elsewhere the thread count is left alone.
"""

from __future__ import annotations

import os
import time

import torch

ENV_OFF = "CINEML_FIXED_THREADS"  # "1": keep torch's thread count (benchmarks/learns.py's baseline)


def _busy_seconds(cpus: set[int]) -> float | None:
    """CPU-seconds the given cores spent busy since boot (all processes), from ``/proc/stat``."""
    try:
        with open("/proc/stat") as f:
            lines = [line.split() for line in f if line.startswith("cpu") and line[3].isdigit()]
    except OSError:
        return None
    ticks = 0
    for fields in lines:
        if int(fields[0][3:]) in cpus:
            user, nice, system, idle, iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
            ticks += user + nice + system + irq + softirq + steal
    return ticks / os.sysconf("SC_CLK_TCK")


class CpuShare:
    """Call :meth:`poll` often (each training step); it re-sizes torch's thread pool every ``every`` s."""

    def __init__(self, every: float = 2.0) -> None:
        self.most = torch.get_num_threads()
        self.every = every
        try:
            self.cpus = os.sched_getaffinity(0)
        except AttributeError:  # not Linux
            self.cpus = set(range(os.cpu_count() or 1))
        busy = _busy_seconds(self.cpus)
        self.enabled = busy is not None and self.most > 1 and os.environ.get(ENV_OFF) != "1"
        self._last = (time.monotonic(), busy or 0.0, time.process_time())
        self._wait = min(0.5, every)  # the first look comes soon: spinning threads waste most at the start
        self.others = 0.0  # cores the rest of the machine kept busy over the last interval

    @property
    def threads(self) -> int:
        return torch.get_num_threads()

    def poll(self) -> bool:
        """Re-size the thread pool when due; True when the thread count changed."""
        if not self.enabled:
            return False
        now = time.monotonic()
        if now - self._last[0] < self._wait:
            return False
        self._wait = self.every
        busy, own = _busy_seconds(self.cpus) or 0.0, time.process_time()
        wall, busy0, own0 = self._last
        self._last = (now, busy, own)
        self.others = max(0.0, (busy - busy0) - (own - own0)) / (now - wall)
        want = max(1, min(self.most, round(len(self.cpus) - self.others)))
        if want == torch.get_num_threads():
            return False
        torch.set_num_threads(want)
        return True

    def note(self) -> str:
        """For the progress line: empty while training has the cores it started with."""
        if self.threads >= self.most:
            return ""
        return f"  busy CPU: {self.threads} of {self.most} threads"
