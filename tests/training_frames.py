"""Small synthetic training sets for the stylegan2 tests (imported like tests/films.py)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image


def make_frames(folder: Path, count: int = 32, res: int = 16, mode: str = "RGB") -> Path:
    """Film-like frames with a fixed layout: bright left half, dark right half, plus grain."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(count):
        a = rng.integers(0, 40, (res, res, 3), dtype=np.uint8)
        a[:, : res // 2] += 200
        im = Image.fromarray(a)
        (im.convert("L") if mode == "L" else im).save(folder / f"{i + 1:06d}.png")
    return folder


class Recorder:
    """Stands in for the engine's hook relay: records snapshot_written calls."""

    def __init__(self) -> None:
        self.snapshots: list[dict] = []

    def snapshot_written(self, **kwargs) -> None:
        self.snapshots.append(kwargs)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Fail with TimeoutError instead of hanging forever (for tests of code that used to loop endlessly)."""

    def expire(signum, frame):  # noqa: ANN001
        raise TimeoutError(f"still running after {seconds:g} s")

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def truncate(path: Path, keep: float = 0.5) -> None:
    """Cut a file short, as a full disk or an unfinished copy leaves it."""
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
