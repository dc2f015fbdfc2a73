"""The cineml command-line tool (work in progress)."""

import click


@click.group()
def cli() -> None:
    """CineML: train GANs on films and turn what they make into art."""


def main() -> None:
    cli()
