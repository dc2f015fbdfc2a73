"""Snapshot names and checkpoint files (safetensors + JSON; nothing is ever unpickled).

Names. A snapshot is named by its nominal image count ``nimg`` (a multiple of the snapshot interval,
or the end of training), written as a *tag*:

* ``000120`` when ``nimg`` is a whole number of kimg (120 kimg);
* ``000000_200`` otherwise: whole kimg, underscore, the remaining images as three digits (0.2 kimg).

Files: ``fakes<tag>.png`` (e.g. ``fakes000120.png``, ``fakes000001_200.png``) and
``network-snapshot-<tag>.safetensors``. Plain byte-wise sorting gives training order ('_' sorts after
'.', so ``fakes000001.png`` < ``fakes000001_200.png`` < ``fakes000002.png``), and ``parse_kimg``
reads the kimg back (regex ``(\\d{6,})(?:_(\\d{3}))?``). ``fakes000000.png`` is the untrained network.

Checkpoint layout (one ``.safetensors`` file):

* tensors ``G.<name>``, ``D.<name>``, ``G_ema.<name>``: the networks' ``state_dict()`` (names as in
  the StyleGAN2 reference implementation, see networks.py);
* ``G_opt.<param name>.{exp_avg,exp_avg_sq,step}`` and ``D_opt.…``: Adam state by parameter name;
* ``loss.pl_mean``; ``rng.torch`` (CPU generator state), ``rng.cuda<i>`` (per CUDA device);
* ``augment.p`` (the ADA probability, float64) and ``augment.acc`` (ADA sign statistics since the
  last p update: sum, steps) unless ``augment = "none"``;
* with several processes, every rank's RNG states: ``rng.torch.rank<r>``, ``rng.cuda.rank<r>``;
* metadata ``{"format": "cineml-stylegan2", "version": "1", "state": <JSON>}`` where the JSON holds
  ``settings`` (presets.Settings), ``G_kwargs``/``D_kwargs`` (constructor arguments), ``nimg`` (images
  actually shown), ``snapshot_nimg``/``kimg`` (nominal), ``step``, ``data`` (sampler ``epoch``,
  ``cursor`` and ``size``, and the ``frames`` count), ``world`` (processes that trained), ``created``
  (unix time).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cineml import CinemlError, atomic_path

if TYPE_CHECKING:
    import torch

    from .networks import Generator

FORMAT = "cineml-stylegan2"
VERSION = "1"
CHECKPOINT_PREFIX = "network-snapshot-"
CHECKPOINT_SUFFIX = ".safetensors"
_TAG = re.compile(r"(\d{6,})(?:_(\d{3}))?")
_CHECKPOINT = re.compile(re.escape(CHECKPOINT_PREFIX) + _TAG.pattern + re.escape(CHECKPOINT_SUFFIX) + "$")


def snapshot_tag(nimg: int) -> str:
    """``120000 -> '000120'``, ``200 -> '000000_200'`` (see the module docstring)."""
    whole, rest = divmod(int(nimg), 1000)
    return f"{whole:06d}" if rest == 0 else f"{whole:06d}_{rest:03d}"


def parse_kimg(name: str) -> float | None:
    """The kimg in a fakes or checkpoint file name (``fakes000001_200.png -> 1.2``), or None."""
    m = re.search(r"(?:fakes|" + re.escape(CHECKPOINT_PREFIX) + r")" + _TAG.pattern + r"\.", name)
    if not m:
        return None
    return int(m.group(1)) + (int(m.group(2)) / 1000 if m.group(2) else 0.0)


def fakes_name(nimg: int) -> str:
    return f"fakes{snapshot_tag(nimg)}.png"


def checkpoint_name(nimg: int) -> str:
    return f"{CHECKPOINT_PREFIX}{snapshot_tag(nimg)}{CHECKPOINT_SUFFIX}"


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoints in ``folder``, oldest first."""
    if not folder.is_dir():
        return []
    found = [p for p in folder.iterdir() if _CHECKPOINT.match(p.name)]
    return sorted(found, key=lambda p: parse_kimg(p.name) or 0.0)


class UnreadableCheckpoint(CinemlError):
    """A checkpoint file that cannot be read (cut short, or not safetensors); ``reason`` says why."""

    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(f"Checkpoint {path.name} in {path.parent} is damaged or incomplete ({reason}); a full disk "
                         "or an unfinished copy can do this. Delete it (or move it away) and use an older "
                         "checkpoint.")
        self.path, self.reason = path, reason


T = TypeVar("T")


def newest_readable(found: list[Path], load: Callable[[Path], T],
                    damaged: Callable[[Path, UnreadableCheckpoint, Path | None], None]) -> tuple[Path, T]:
    """The newest of ``found`` (oldest first) that ``load`` reads, and what it returned. For each damaged
    one skipped, ``damaged(path, error, next_older)`` is called first (``next_older`` None: none is left,
    and it should raise)."""
    for i in reversed(range(len(found))):
        try:
            return found[i], load(found[i])
        except UnreadableCheckpoint as exc:
            damaged(found[i], exc, found[i - 1] if i else None)
    raise ValueError("newest_readable: nothing to load")


def find_checkpoint(path: Path, key: str = "resume") -> Path:
    """A checkpoint file, or the latest one in a folder (a finished or running training output).

    ``key`` is the setting or argument that named ``path``, for the error messages.
    """
    path = Path(path)
    if path.is_dir():
        found = list_checkpoints(path)
        if not found:
            raise CinemlError(f"No {CHECKPOINT_PREFIX}*.safetensors checkpoint in {path}; point {key} at a "
                              "training output folder or at a checkpoint file.")
        return found[-1]
    if not path.is_file():
        raise CinemlError(f"Checkpoint {path} does not exist; point {key} at a training output folder or at a "
                          f"{CHECKPOINT_PREFIX}*.safetensors file.")
    return path


def save_checkpoint(path: Path, tensors: dict[str, torch.Tensor], state: dict[str, Any]) -> None:
    """Write atomically: a killed process never leaves a file that looks complete."""
    from safetensors.torch import save_file

    state = dict(state, created=time.time())
    meta = {"format": FORMAT, "version": VERSION, "state": json.dumps(state)}
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)


def read_state(path: Path) -> dict[str, Any]:
    """The JSON state of a checkpoint without loading its tensors."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:
        raise UnreadableCheckpoint(Path(path), str(exc)) from None
    if meta.get("format") != FORMAT:
        raise CinemlError(f"{path} is not a CineML StyleGAN2 checkpoint (format {meta.get('format')!r}).")
    return json.loads(meta["state"])


def load_checkpoint(path: Path, prefixes: tuple[str, ...] | None = None,
                    device: str | torch.device = "cpu") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors (only those under ``prefixes`` when given, e.g. ``("G_ema.",)``) and the JSON state."""
    from safetensors import safe_open

    state = read_state(path)
    tensors = {}
    try:
        with safe_open(str(path), framework="pt", device=str(device)) as f:
            for key in f.keys():
                if prefixes is None or key.startswith(prefixes):
                    tensors[key] = f.get_tensor(key)
    except Exception as exc:  # the header read, the data did not
        raise UnreadableCheckpoint(Path(path), str(exc)) from None
    return tensors, state


def sub_state(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """``{'G.a': t} -> {'a': t}`` for ``prefix='G.'``."""
    return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}


def load_generator(path: Path, device: str | torch.device = "cpu", which: str = "G_ema") -> Generator:
    """Build the (EMA) generator of a checkpoint file or training folder, in eval mode, ready to sample."""
    from .networks import Generator

    path = find_checkpoint(Path(path))
    tensors, state = load_checkpoint(path, (which + ".",), device)
    G = Generator(**state["G_kwargs"])
    G.load_state_dict(sub_state(tensors, which + "."))
    return G.to(device).eval().requires_grad_(False)


def prune(folder: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` checkpoints (``keep <= 0``: keep all)."""
    if keep <= 0:
        return
    for old in list_checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
