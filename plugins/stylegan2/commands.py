"""CLI commands of the stylegan2 plugin: ``cineml generate``, ``cineml import``, ``cineml export``.

Added by :func:`add_commands` from the plugin's ``register_commands`` hook. torch is imported inside
the command bodies only, so ``cineml --help`` stays instant.
"""

from __future__ import annotations

import json
from pathlib import Path

import click

from cineml import CinemlError


def add_commands(cli: click.Group) -> None:
    """Attach the commands to the top-level ``cineml`` group."""

    @cli.command("generate")
    @click.argument("manifest", type=click.Path(dir_okay=True, path_type=str))
    @click.option("-S", "--set", "overrides", multiple=True, metavar="KEY=VALUE",
                  help="Override a manifest value, e.g. -S generate.seeds=0-15 -S generate.truncation=0.7.")
    @click.option("--name", help="Folder name under one-offs/ (default: the time and the -S values).")
    @click.option("--step", help="Which [[generate]] step to run, by its name, when there are several "
                                 "(then -S generate.N.KEY=VALUE sets its values).")
    @click.pass_context
    def generate(ctx: click.Context, manifest: str, overrides: tuple[str, ...], name: str | None,
                 step: str | None) -> None:
        """Sample a project's network again, e.g. other seeds, into one-offs/<name>/ of the project.

        The project's own generated/ (and the art made from it) is left as it is, and `cineml run` never
        touches one-offs/: each keeps what it made."""
        import datetime
        import re

        root = Path(manifest).resolve()
        root = root if root.is_dir() else root.parent
        label = name or "_".join([datetime.datetime.now().strftime("%Y-%m-%d_%H%M%S"), *(
            re.sub(r"[^\w.-]+", "-", text.removeprefix("generate.")) for text in overrides)])
        # `cineml run MANIFEST --only generate --force generate --into one-offs/<label>`: one way to run a stage.
        stage = f"generate:{step}" if step else "generate"
        ctx.invoke(cli.commands["run"], manifest=manifest, overrides=overrides, force=(stage,),
                   only=(stage,), start=None, stop=None, dry_run=False, into=root / "one-offs" / label)

    @cli.command("import")
    @click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
    @click.option("-o", "--output", "output", type=click.Path(dir_okay=False, path_type=Path),
                  help="Checkpoint to write (default: FILE with the suffix .safetensors).")
    @click.option("--no-d", "no_d", is_flag=True, help="Import the generators only (skip the discriminator).")
    @click.option("--force", is_flag=True, help="Overwrite the output file if it exists.")
    def import_(file: Path, output: Path | None, no_d: bool, force: bool) -> None:
        """Convert a StyleGAN2-ADA .pkl or rosinality .pt into a CineML checkpoint, running nothing from it."""
        from .legacy import import_network, write_checkpoint

        output = output or file.with_suffix(".safetensors")
        if output.resolve() == file.resolve():
            raise CinemlError(f"-o {output} would overwrite the file being imported; choose another name.")
        if output.exists() and not force:
            raise CinemlError(f"{output} already exists; choose another name with -o, or add --force to "
                              "overwrite it.")
        imported = import_network(file, with_d=not no_d)
        write_checkpoint(imported, output)
        g = imported.G_ema
        nets = ", ".join(n for n in ("G", "D", "G_ema") if getattr(imported, n) is not None)
        click.echo(f"Imported {file.name} ({imported.format}: {g.img_resolution}x{g.img_resolution}, "
                   f"{g.img_channels} channel(s), {nets}) -> {output}\n"
                   f"Sample it with [generate] snapshot = \"{output}\", or fine-tune from it with "
                   f"[train] resume = \"{output}\".")

    @cli.command("export")
    @click.argument("checkpoint", type=click.Path(exists=True, path_type=Path))
    @click.option("-o", "--output", "output", required=True, type=click.Path(dir_okay=False, path_type=Path),
                  help="Where to write (OUT.safetensors, plus OUT.json with the settings).")
    def export(checkpoint: Path, output: Path) -> None:
        """Write the networks of a checkpoint (or training folder, or an imported .pkl/.pt) as safetensors + JSON.

        The safetensors file holds only G, D and G_ema (no optimiser or RNG state) and is itself a CineML
        checkpoint; the JSON beside it spells out the settings for people and other tools.
        """
        from cineml import atomic_path

        from . import checkpoints as ckpt
        from .legacy import import_network, is_foreign

        if output.suffix.lower() != ".safetensors":
            output = output.with_name(output.name + ".safetensors")
        if checkpoint.is_file() and is_foreign(checkpoint):
            tensors, state = import_network(checkpoint).checkpoint()
        else:
            source = ckpt.find_checkpoint(checkpoint, "CHECKPOINT")
            if output.resolve() == source.resolve():
                raise CinemlError(f"-o {output} would overwrite the checkpoint being exported (and drop its "
                                  "training state); choose another name.")
            tensors, state = ckpt.load_checkpoint(source, ("G.", "D.", "G_ema."))
            state = {k: v for k, v in state.items() if k in ("settings", "G_kwargs", "D_kwargs", "nimg",
                                                                 "snapshot_nimg", "kimg", "imported")}
            state["exported_from"] = str(source)
        ckpt.save_checkpoint(output, tensors, state)
        with atomic_path(output.with_suffix(".json")) as tmp:
            tmp.write_text(json.dumps(state, indent=2))
        click.echo(f"Exported {len(tensors)} tensors to {output} (settings in {output.with_suffix('.json')}).")
