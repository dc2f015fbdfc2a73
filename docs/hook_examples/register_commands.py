from pathlib import Path

import click

from cineml import hookimpl


@hookimpl
def register_commands(cli):
    @cli.command()
    @click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
    def latest(folder):
        """Print the newest fakes grid in a training FOLDER."""
        grids = sorted(folder.glob("fakes*.png"))
        click.echo(grids[-1] if grids else "no fakes grid yet")
