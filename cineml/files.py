"""File-system mechanics the engine relies on: content fingerprints, one run per project at a time,
folder copies that share big files, and swapping an output into place so that readers never see a mix.

Nothing here knows about stages; :mod:`cineml.pipeline` decides what to fingerprint, copy and move.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from glob import escape as glob_escape
from pathlib import Path

from .api import CinemlError

OWNED = ".cineml-output"  # in every output folder the engine publishes: "a stage wrote this, it may replace it"


def file_fingerprint(path: Path, samples: int = 16, block: int = 1 << 16) -> str:
    """Size plus a hash of the first and last MiB and ``samples`` blocks spread between them.

    Content, not mtime: touching or copying a film (``cp``, ``scp``, a git checkout) must not re-run a
    16-hour training. Cheap for films of many GB (about 3 MiB read), and any re-encode or trim shows.
    """
    size = path.stat().st_size
    h = hashlib.sha256(str(size).encode())
    with path.open("rb") as f:
        if size <= (2 << 20) + samples * block:
            h.update(f.read())
        else:
            h.update(f.read(1 << 20))
            for k in range(1, samples + 1):
                f.seek((1 << 20) + k * (size - (2 << 20)) // (samples + 1))
                h.update(f.read(block))
            f.seek(-(1 << 20), os.SEEK_END)
            h.update(f.read())
    return h.hexdigest()


def output_digest(path: Path) -> str:
    """A stage output's identity by content: a file's fingerprint, or a folder's file names, sizes and
    content fingerprints (the marker the engine writes aside). Cheap enough for 9408 frames or gigabytes of
    checkpoints (``file_fingerprint`` reads at most about 3 MiB of each file)."""
    path = path.resolve()
    if path.is_file():
        return file_fingerprint(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file() and p.name != OWNED):
        h.update(f"{f.relative_to(path)}\0{file_fingerprint(f)}\n".encode())
    return h.hexdigest()


def link_copy(src: Path, dst: Path, small: int = 1 << 20) -> None:
    """Copy a folder, hard-linking files over ``small`` bytes (checkpoints, caches: written once by
    rename, never changed in place) and copying the rest (logs that grow by appending). Built under a
    temporary name, so an interruption never leaves a half-copied folder that looks like work."""
    tmp = dst.with_name(dst.name + ".copying")
    shutil.rmtree(tmp, ignore_errors=True)

    def copy(a: str, b: str) -> None:
        if os.path.getsize(a) > small:
            link_or_copy(Path(a), Path(b))
        else:
            shutil.copy2(a, b)

    shutil.copytree(src, tmp, copy_function=copy, symlinks=True)
    os.replace(tmp, dst)


def link_or_copy(src: Path, dst: Path) -> None:
    """A hard link to ``src`` at ``dst`` (a film of many GB costs nothing), or a copy on another disk."""
    try:
        os.link(src, dst)
    except OSError:  # another disk, or no hard links there
        shutil.copy2(src, dst)


def foreign_files(folder: Path) -> list[str]:
    """Names of what a folder holds when CineML did not publish it (no ``OWNED`` marker); [] otherwise."""
    if not folder.is_dir() or (folder / OWNED).exists():
        return []
    return sorted(e.name for e in folder.iterdir())


@contextlib.contextmanager
def exclusive(lock: Path, root: Path) -> Iterator[None]:
    """One ``cineml run`` per project at a time: two would share staging folders and state."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; run one at a time by hand
        yield
        return
    lock.parent.mkdir(parents=True, exist_ok=True)
    with open(lock, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            who = f.read().strip() or "another process"
            raise CinemlError(f"Another cineml run is working on {root} ({who}). Wait for it to finish, or stop it "
                              "(Ctrl-C; it resumes later) before starting this one.") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} since {_dt.datetime.now().isoformat(timespec='seconds')}")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def move_into_place(out: Path, final: Path) -> None:
    """Replace ``final`` with ``out`` so that readers see the old or the new output, never a mix.

    A symlinked output (``frames -> /mnt/big/frames``) keeps its link: what it points to is replaced.
    Everything is renamed beside ``final`` (same disk), so the swap itself never copies.
    """
    if final.is_symlink():
        final = final.resolve()
    final.parent.mkdir(parents=True, exist_ok=True)
    for old in final.parent.glob(f".{glob_escape(final.name)}.cineml-*"):  # left by a kill mid-swap
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink(missing_ok=True)
    if out.stat().st_dev != final.parent.stat().st_dev:  # another disk: bring it over first, then swap
        incoming = final.parent / f".{final.name}.cineml-incoming"
        shutil.move(str(out), str(incoming))
        out = incoming
    if out.is_dir() and final.exists():
        trash = final.parent / f".{final.name}.cineml-old-{time.time_ns()}"
        os.replace(final, trash)
        os.replace(out, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(out, final)
