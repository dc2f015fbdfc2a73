"""CineML: train GANs on films and turn what they make into art.

The public API for plugin authors. Everything a plugin needs is importable from here; this module
stays light (no torch, no moviepy) so that ``cineml --help`` is instant.
"""

from importlib.metadata import PackageNotFoundError, version as _version

from .api import (REQUIRED, CinemlError, Composer, Extractor, Generator, Implementation, Layout,
                  Option, Preprocessor, Source, StageContext, Trainer, atomic_path, layout)
from .hookspecs import hookimpl

try:
    __version__ = _version("cineml")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0"

__all__ = [
    "REQUIRED", "CinemlError", "Composer", "Extractor", "Generator", "Implementation", "Layout",
    "Option", "Preprocessor", "Source", "StageContext", "Trainer", "atomic_path", "hookimpl", "layout",
    "__version__",
]
