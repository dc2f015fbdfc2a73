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

#: Layout helpers live in cineml.imaging (which imports PIL); they are re-exported here lazily so that
#: ``import cineml`` stays instant for ``cineml --help``.
_IMAGING = ("fit", "draw_text", "even_size", "parse_color", "color_problem", "load_images", "load_image", "label_text", "noise")


def __getattr__(name: str):
    if name in _IMAGING:
        from . import imaging

        return getattr(imaging, name)
    raise AttributeError(f"module 'cineml' has no attribute {name!r}")


__all__ = [*_IMAGING, 
    "REQUIRED", "CinemlError", "Composer", "Extractor", "Generator", "Implementation", "Layout",
    "Option", "Preprocessor", "Source", "StageContext", "Trainer", "atomic_path", "hookimpl", "layout",
    "__version__",
]
