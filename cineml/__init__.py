"""CineML: train GANs on films and turn what they make into art.

The public API for plugin authors. Everything a plugin needs is importable from here; this module
stays light (no torch, no moviepy) so that ``cineml --help`` is instant.
"""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _version

from .api import (
    REQUIRED,
    CinemlError,
    Composer,
    Extractor,
    Generator,
    Implementation,
    Layout,
    Option,
    Preprocessor,
    Project,
    Source,
    StageContext,
    Step,
    Trainer,
    atomic_path,
    evenly_spaced,
    layout,
)
from .hookspecs import hookimpl

try:
    __version__ = _version("cineml")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

#: Helpers from heavier modules (PIL, rich), re-exported lazily so that ``import cineml`` stays instant
#: for ``cineml --help``: name -> module.
_LAZY = {
    **dict.fromkeys(("fit", "draw_text", "even_size", "parse_color", "color_problem", "load_images", "load_image",
                     "label_text", "noise", "grid_shape", "common_mode", "check_canvas", "flatten",
                     "smpte_timecode", "frame_facts", "metadata"), "imaging"),
    "validate_options": "manifest",  # check option values against declarations (e.g. a nested layout's)
    "Progress": "progress",  # the type of StageContext.progress; Progress(enabled=False) is silent
    "file_fingerprint": "files",  # a file's identity by content, as the engine fingerprints inputs
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'cineml' has no attribute {name!r}")


__all__ = [
    *_LAZY, "REQUIRED", "CinemlError", "Composer", "Extractor", "Generator", "Implementation", "Layout",
    "Option", "Preprocessor", "Project", "Source", "StageContext", "Step", "Trainer", "atomic_path", "evenly_spaced",
    "hookimpl",
    "layout",
    "__version__",
]
