"""``cineml new``: a commented project.toml that runs as it is, on the artist's film (``--film``, with
settings the plugins suggest for it) or on a film CineML renders itself."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path
from typing import Any

from .api import CinemlError, atomic_path
from .files import link_or_copy

#: The settings the scaffold writes, as dotted manifest keys; plugins' ``suggest_settings`` may change them.
DEFAULTS: dict[str, Any] = {"extract.fps": 12, "preprocess.0.size": 32, "preprocess.0.grayscale": True,
                            "train.config": "tiny", "train.kimg": 0.5, "train.snapshot_kimg": 0.05}

DEMO_SOURCE = """\
# Your film, relative to this folder. Put it in footage/ and delete the [source] table below.
source = "footage/{name}.mp4"
seed = 0

# Until you have footage, CineML renders a short black-and-white film to the path above.
[source]
use = "synthetic"
seconds = 12
"""

FILM_SOURCE = """\
source = {source}   # your film, relative to this folder
seed = 0
"""

TEMPLATE = '''\
# CineML project "{name}".  Run it with:  cineml run {path}
# A stage whose settings and inputs did not change since the last run is skipped;
# `cineml run --dry-run` says what would run and why.

# Python files beside this manifest with your own layouts or plugins (loaded in this order).
# plugins = ["my_layouts.py"]

[project]
name = "{name}"
{source_part}
[extract]
use = "fps"
fps = <<extract.fps>>             # frames kept per second of film (784 s at 12 fps -> 9408 frames)
# dedupe = 3         # drop near copies inside a shot (long still takes); frames/shots.json lists the shots

[[preprocess]]
use = "letterbox"    # pad every frame to a power-of-two square with black bars; never crops
size = <<preprocess.0.size>>            # 256, 512 or 1024 for real work (on a GPU)
grayscale = <<preprocess.0.grayscale>>     # true for a black-and-white film: train on one channel

[train]
use = "stylegan2"
config = <<train.config>>      # "auto", "paper256" or "stylegan2" (config-f) on a GPU
kimg = <<train.kimg>>           # thousands of images shown to the discriminator
snapshot_kimg = <<train.snapshot_kimg>> # a fakes grid and a checkpoint this often
# balance = "shot"   # every shot as often as any other, however long it is

[generate]
use = "stylegan2"    # sample the trained network (the last snapshot)
seeds = "0-15"       # one image per seed; the same seed always gives the same image
truncation = 1.0     # below 1 (e.g. 0.7): closer to the average frame, less variety
# walk = {{ keyframes = "0-7", seconds = 8, fps = 12 }}   # a looping latent walk, for an animation

[[compose]]
use = "animation"    # every training fakes grid in order, as a video
input = "fakes"
fps = 6
output = "fakes.mp4"

[[compose]]
use = "grid"         # a contact sheet of the film's frames
input = "frames"
count = 16           # or one_per_shot = true and labels = "shot": a shot contact sheet
output = "frames-grid.png"

[[compose]]
use = "windows"      # each generated image a lit window of a facade at night
input = "generated"
window_width = 96
output = "windows.png"
'''


def write_project(folder: Path, name: str, film: Path | None = None, settings: dict[str, Any] | None = None) -> Path:
    """Write ``folder/project.toml`` (refusing to overwrite one); with ``film``, put the film in
    ``footage/`` (a hard link where the disk allows, else a copy) and point ``source`` at it.
    ``settings`` (dotted keys, see DEFAULTS) replace the scaffold's values."""
    bad = sorted({c for c in name if c in '/\\"' or ord(c) < 32})
    if not name.strip() or bad:
        raise CinemlError(f"Project name {name!r}: use a plain name such as \"the-perfect-human\" or \"Det perfekte "
                          f"menneske\" (no {' '.join(bad) if bad else 'empty name'}; it becomes a folder and a file "
                          "name).")
    path = folder / "project.toml"
    if path.exists():
        raise CinemlError(f"{path} already exists; choose another name or edit that project.")
    if film is not None and not film.is_file():
        raise CinemlError(f"--film {film}: no such file. Give the path to your film (a video file).")
    source_part = DEMO_SOURCE.format(name=name)
    if film is not None:
        footage = folder / "footage" / film.name
        footage.parent.mkdir(parents=True, exist_ok=True)
        if not footage.exists():
            with atomic_path(footage) as tmp:
                link_or_copy(film, tmp)
        source_part = FILM_SOURCE.format(source=json.dumps(f"footage/{film.name}", ensure_ascii=False))
    values = {**DEFAULTS, **(settings or {})}
    text = TEMPLATE.format(name=name, path=shlex.quote(str(path)), source_part=source_part)
    text = re.sub(r"<<([\w.]+)>>", lambda m: _toml(values[m.group(1)]), text)
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return json.dumps(value, ensure_ascii=False) if isinstance(value, str) else f"{value:g}"
