"""``cineml new``: a commented project.toml that runs as it is (on a film CineML renders itself)."""

from __future__ import annotations

import shlex
from pathlib import Path

from .api import CinemlError, atomic_path

TEMPLATE = '''\
# CineML project "{name}".  Run it with:  cineml run {path}
# A stage whose settings and inputs did not change since the last run is skipped;
# `cineml run --dry-run` says what would run and why.

# Python files beside this manifest with your own layouts or plugins (loaded in this order).
# plugins = ["my_layouts.py"]

[project]
name = "{name}"
# Your film, relative to this folder. Put it in footage/ and delete the [source] table below.
source = "footage/{name}.mp4"
seed = 0

# Until you have footage, CineML renders a short black-and-white film to the path above.
[source]
use = "synthetic"
seconds = 12

[extract]
use = "fps"
fps = 12             # frames kept per second of film (784 s at 12 fps -> 9408 frames)

[[preprocess]]
use = "letterbox"    # pad every frame to a power-of-two square with black bars; never crops
size = 32            # 256, 512 or 1024 for real work (on a GPU)
grayscale = true     # black-and-white film: train on one channel

[train]
use = "stylegan2"
config = "tiny"      # "auto", "paper256" or "stylegan2" (config-f) on a GPU
kimg = 0.5           # thousands of images shown to the discriminator
snapshot_kimg = 0.05 # a fakes grid and a checkpoint this often

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
count = 16
output = "frames-grid.png"

[[compose]]
use = "windows"      # each generated image a lit window of a facade at night
input = "generated"
window_width = 96
output = "windows.png"
'''


def write_project(folder: Path, name: str) -> Path:
    """Write ``folder/project.toml``; refuse to overwrite an existing one."""
    bad = sorted({c for c in name if c in '/\\"' or ord(c) < 32})
    if not name.strip() or bad:
        raise CinemlError(f"Project name {name!r}: use a plain name such as \"the-perfect-human\" or \"Det perfekte "
                          f"menneske\" (no {' '.join(bad) if bad else 'empty name'}; it becomes a folder and a file "
                          "name).")
    path = folder / "project.toml"
    if path.exists():
        raise CinemlError(f"{path} already exists; choose another name or edit that project.")
    with atomic_path(path) as tmp:
        tmp.write_text(TEMPLATE.format(name=name, path=shlex.quote(str(path))))
    return path
