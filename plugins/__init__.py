"""CineML's built-in plugins (import name ``cineml_plugins``).

Each module is registered through the ``cineml`` entry-point group, exactly like a third-party
plugin, and uses only the public API in :mod:`cineml`.
"""
