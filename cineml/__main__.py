"""``python -m cineml`` (and ``torchrun -m cineml run project.toml``)."""

from .cli import main

main()
