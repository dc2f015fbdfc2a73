"""Data-parallel training over several processes (GPUs, or CPU processes for testing) with torch.distributed.

Two ways in:

* ``torchrun --nproc-per-node 4 -m cineml run project.toml --only train`` (and the multi-node form with
  ``--nnodes/--node-rank/--rdzv-endpoint``): torchrun starts every process and sets ``RANK``,
  ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``/``MASTER_PORT``; :func:`from_env` reads them.
* ``gpus = 4`` in ``[train]`` of a plain ``cineml run``: the train stage starts ranks 1..3 itself
  (:func:`spawn`, "spawn" start method) and trains as rank 0 in the engine's own process.

Every rank holds the same networks: the global ``batch`` is split evenly across ranks, each rank
back-propagates its share and :meth:`Sync.grads` averages the gradients with one all-reduce per
phase (the lazy-regularisation schedule's four phases each step their own optimiser, which plain
all-reduce handles more simply than DDP wrappers). Running averages (``w_avg``, ``pl_mean``) and
the ADA sign statistics are averaged or summed over ranks too, so every rank stays bit-identical
apart from its own random draws. Only rank 0 writes files and calls ``ctx.snapshot_written``.
"""

from __future__ import annotations

import datetime
import os
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

TIMEOUT = datetime.timedelta(minutes=30)  # a collective waits this long (e.g. for rank 0's metrics)


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: rank, world size, local rank (its GPU) and who launched it."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    launcher: str = "none"  # "torchrun", "spawn" or "none"
    init_method: str = "env://"

    @property
    def main(self) -> bool:
        return self.rank == 0


def from_env() -> DistInfo | None:
    """The torchrun (or any ``env://``) launch this process belongs to, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1 or "RANK" not in os.environ:
        return None
    return DistInfo(rank=int(os.environ["RANK"]), world=world, local_rank=int(os.environ.get("LOCAL_RANK", "0")),
                    launcher="torchrun")


def init(info: DistInfo, device: torch.device) -> torch.device:
    """Join the process group (NCCL on CUDA, gloo on the CPU); returns this rank's device."""
    import torch.distributed as dist

    if device.type == "cuda":
        torch.cuda.set_device(info.local_rank)
        device = torch.device("cuda", info.local_rank)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend, init_method=info.init_method, rank=info.rank, world_size=info.world,
                                timeout=TIMEOUT, **kwargs)
    return device


def shutdown() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


class Sync:
    """The collectives the training loop needs; every method is a no-op in a single process."""

    def __init__(self, info: DistInfo | None = None) -> None:
        self.info = info or DistInfo()

    @property
    def active(self) -> bool:
        return self.info.world > 1

    def grads(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Average gradients over ranks with one flat all-reduce (a missing grad counts as zeros)."""
        if not self.active:
            return
        import torch.distributed as dist

        params = [p for p in params if p.requires_grad]
        if not params:
            return
        flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in params])
        dist.all_reduce(flat)
        flat /= self.info.world
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset:offset + n].view_as(p).clone()
            offset += n

    def mean_(self, tensors: Iterable[torch.Tensor]) -> None:
        """Replace each tensor by its average over ranks (in place)."""
        if not self.active:
            return
        import torch.distributed as dist

        for t in tensors:
            dist.all_reduce(t)
            t /= self.info.world

    def sum(self, t: torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
        """Sum of ``t`` over ranks (a new tensor, on ``t``'s device)."""
        if not self.active:
            return t.clone()
        import torch.distributed as dist

        work = t.to(device or t.device, copy=True)
        dist.all_reduce(work)
        return work.to(t.device)

    def broadcast_(self, tensors: Iterable[torch.Tensor]) -> None:
        """Make every rank's tensors equal to rank 0's."""
        if not self.active:
            return
        import torch.distributed as dist

        for t in tensors:
            dist.broadcast(t, src=0)

    def broadcast_object(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (pickled between our own processes; never read from a file)."""
        if not self.active:
            return obj
        import torch.distributed as dist

        box = [obj if self.info.main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (on every rank)."""
        if not self.active:
            return [obj]
        import torch.distributed as dist

        out: list[Any] = [None] * self.info.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist

            dist.barrier()


# --- Starting ranks 1..N-1 from the engine's process ---------------------------------------------


def _entry(index: int, world: int, init_method: str, fn: Callable[[DistInfo, Any], None], payload: Any) -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is rank 0's to handle; it then stops the workers
    rank = index + 1
    fn(DistInfo(rank=rank, world=world, local_rank=rank, launcher="spawn", init_method=init_method), payload)


class Workers:
    """Ranks 1..N-1 started with the "spawn" method; ``watch`` stops this process if one of them dies.

    A rank that dies leaves the others blocked in a collective (NCCL waits for its timeout), so a
    watcher thread reports the failure and interrupts the main thread, then exits the process if it
    is still stuck a minute later. The training folder keeps its last checkpoint: re-running resumes.
    """

    def __init__(self, world: int, fn: Callable[[DistInfo, Any], None], payload: Any) -> None:
        import torch.multiprocessing as mp

        self.world = world
        # A file rendezvous: unlike a TCP port picked in advance, nothing else on the machine can take it.
        self._store_dir = tempfile.mkdtemp(prefix="cineml-dist-")
        self.init_method = "file://" + os.path.join(self._store_dir, "store")
        self.context = mp.start_processes(_entry, args=(world, self.init_method, fn, payload), nprocs=world - 1,
                                          join=False, start_method="spawn")
        self.failed: str | None = None
        self._claimed = False  # rank 0 took over failure handling: the watcher must not interrupt it any more
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()

    @property
    def rank0(self) -> DistInfo:
        return DistInfo(rank=0, world=self.world, local_rank=0, launcher="spawn", init_method=self.init_method)

    def _watch(self) -> None:
        import _thread

        while not self._done.is_set():
            time.sleep(0.5)
            failure = self._failure()
            with self._lock:
                if failure is None or self._claimed:
                    continue
                self.failed = failure
                print(f"cineml: a training worker failed ({failure}); stopping.", file=sys.stderr)
                _thread.interrupt_main()  # rank 0 may be blocked in a collective that would wait for its timeout
            for _ in range(60):
                if self._done.wait(1.0):
                    return
            os._exit(1)

    def _failure(self) -> str | None:
        dead = [p for p in self.context.processes if not p.is_alive() and p.exitcode not in (0, None)]
        return f"worker process {dead[0].pid} exited with code {dead[0].exitcode}" if dead else None

    def claim_failure(self, wait: float = 5.0) -> str | None:
        """After rank 0 failed: stop the watcher and say whether a worker died (waiting up to ``wait`` s)."""
        with self._lock:
            self._claimed = True
        self._done.set()
        deadline = time.time() + wait
        while self.failed is None and time.time() < deadline:
            self.failed = self._failure()
            if self.failed is None and all(not p.is_alive() for p in self.context.processes):
                break
            time.sleep(0.1)
        return self.failed

    def join(self) -> None:
        """Wait for the workers to finish (after rank 0 finished training); raises if one failed."""
        with self._lock:
            self._claimed = True
        self._done.set()
        self._thread.join()
        while not self.context.join(timeout=1.0):
            pass

    def stop(self) -> None:
        """Terminate the workers (rank 0 failed or was interrupted)."""
        with self._lock:
            self._claimed = True
        self._done.set()
        for proc in self.context.processes:
            if proc.is_alive():
                proc.terminate()
        deadline = time.time() + 10
        for proc in self.context.processes:
            proc.join(max(deadline - time.time(), 0.1))
            if proc.is_alive():
                proc.kill()
        shutil.rmtree(self._store_dir, ignore_errors=True)
