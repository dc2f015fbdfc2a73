"""Training threads follow the cores other processes leave free (plugins/stylegan2/cpu_share.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

from cineml_plugins.stylegan2.cpu_share import CpuShare

pytestmark = pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="reads Linux's /proc/stat")


@pytest.fixture
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def test_busy_neighbours_take_threads_away_and_give_them_back(two_threads):
    cores = len(os.sched_getaffinity(0))
    share = CpuShare(every=0.5)
    assert share.enabled and share.most == 2
    hogs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(cores)]
    try:
        time.sleep(0.3)  # let them start
        share._last = (time.monotonic(), *share._last[1:])  # measure from here, over a busy second
        time.sleep(1.0)
        share.every = 0.0
        assert share.poll() and share.threads == 1, share.others
        assert share.others > cores - 0.8
        assert share.note() == "  busy CPU: 1 of 2 threads"
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    share.poll()  # start an interval without our neighbours
    time.sleep(1.0)
    share.poll()
    # Back to both threads on a quiet machine; on a shared one, to whatever the rest of it leaves free.
    assert share.threads == max(1, min(2, round(cores - share.others))), share.others
    assert (share.note() == "") == (share.threads == 2)


def test_never_more_threads_than_it_started_with(monkeypatch):
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        share = CpuShare(every=0.0)
        assert not share.enabled  # one thread: nothing to give back or take
        assert not share.poll() and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(torch_threads)
    monkeypatch.setenv("CINEML_FIXED_THREADS", "1")
    assert not CpuShare().enabled
