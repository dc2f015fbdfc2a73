"""Every hook CineML calls, with its exact signature.

Two kinds of hooks:

* **Registry hooks** (``register_*``): called once when the plugin manager starts. A plugin calls
  ``register(obj)`` for each implementation it provides; the manifest then picks implementations by
  name (``use = "letterbox"``). Names must be unique across all plugins.
* **Lifecycle hooks**: called while ``cineml run`` works, for observers (logging, notifications,
  posting every fakes grid somewhere). Their return values are ignored.

Plugins implement any subset of these, decorated with :data:`cineml.hookimpl`, and may accept a
subset of the arguments (pluggy passes only what a function asks for).

Each hook's docstring ends with an ``Example::`` plugin (rendered into docs/hooks.md by
docs/gen_docs.py, and compiled and registered by tests/test_docs.py); the docstrings use ``'''``
because the examples contain docstrings.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pluggy

if TYPE_CHECKING:
    import click

    from .api import Composer, Extractor, Generator, Layout, Preprocessor, Project, Source, Trainer

hookspec = pluggy.HookspecMarker("cineml")
hookimpl = pluggy.HookimplMarker("cineml")


# --- Registry hooks -------------------------------------------------------------------------------


@hookspec
def register_sources(register: Callable[[Source], None]) -> None:
    '''Register film sources: objects subclassing :class:`cineml.Source`.

    Called once at start-up. A source makes the project's film when the artist does not supply
    one (``[source] use = "synthetic"`` renders the demo film).

    Example::

        import subprocess

        from cineml import Option, Source, hookimpl

        class TestPattern(Source):
            """ffmpeg's moving test pattern: a quick film for trying out a pipeline."""

            name = "testpattern"
            options = (Option("seconds", float, 10.0, "Length of the film.", min=1),)

            def make(self, ctx):
                import imageio_ffmpeg  # the bundled ffmpeg

                pattern = f"testsrc2=size=640x360:rate=24:duration={ctx.options['seconds']}"
                subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", "-f", "lavfi",
                                "-i", pattern, "-pix_fmt", "yuv420p", str(ctx.output)], check=True)

        @hookimpl
        def register_sources(register):
            register(TestPattern())
    '''


@hookspec
def register_extractors(register: Callable[[Extractor], None]) -> None:
    '''Register frame extractors: objects subclassing :class:`cineml.Extractor`.

    Called once at start-up. An extractor turns the project's film into numbered frames, streaming
    them through the preprocess chain (``[extract] use = "fps"``).

    Example::

        import json

        from cineml import Extractor, Option, atomic_path, hookimpl

        class EverySeconds(Extractor):
            """One frame every few seconds, decoded with MoviePy (square-pixel films only)."""

            name = "every"
            options = (Option("seconds", float, 5.0, "Time between kept frames.", min=0.01),)

            def extract(self, ctx, chain):
                from moviepy import VideoFileClip
                from PIL import Image

                ctx.output.mkdir(parents=True, exist_ok=True)
                frames = []
                with VideoFileClip(str(ctx.inputs["source"])) as clip:
                    for t, array in clip.iter_frames(fps=1 / ctx.options["seconds"], with_times=True):
                        image = Image.fromarray(array)
                        for step, options in chain:  # the [[preprocess]] steps, in order
                            image = step.transform(image, options)
                        frames.append({"index": len(frames) + 1, "file": f"{len(frames) + 1:06d}.png", "time": t})
                        image.save(ctx.output / frames[-1]["file"])
                with atomic_path(ctx.output / "index.json") as tmp:  # last: marks the set complete
                    tmp.write_text(json.dumps({"count": len(frames), "format": "png", "frames": frames}))

        @hookimpl
        def register_extractors(register):
            register(EverySeconds())
    '''


@hookspec
def register_preprocessors(register: Callable[[Preprocessor], None]) -> None:
    '''Register per-frame transforms: objects subclassing :class:`cineml.Preprocessor`.

    Called once at start-up. Chained in manifest order by ``[[preprocess]]`` tables
    (``use = "letterbox"``).

    Example::

        from cineml import Option, Preprocessor, hookimpl

        class Posterize(Preprocessor):
            """Keeps a few levels per colour channel, for a screen-print look."""

            name = "posterize"
            options = (Option("bits", int, 3, "Bits kept per channel.", min=1, max=8),)

            def transform(self, image, options):
                from PIL import ImageOps

                return ImageOps.posterize(image.convert("RGB"), options["bits"])

        @hookimpl
        def register_preprocessors(register):
            register(Posterize())
    '''


@hookspec
def register_trainers(register: Callable[[Trainer], None]) -> None:
    '''Register trainers: objects subclassing :class:`cineml.Trainer`.

    Called once at start-up. A trainer turns the frames folder into snapshots and fakes grids
    (``[train] use = "stylegan2"``).

    Example::

        from cineml import Option, Trainer, hookimpl

        class DcGan(Trainer):
            """A small DCGAN: quick 64x64 sketches of a film."""

            name = "dcgan"
            options = (Option("kimg", float, 100.0, "Training length, in thousands of images.", min=0.1),)

            def train(self, ctx):
                from .dcgan import Loop  # your torch code, imported only when training runs

                loop = Loop(ctx.inputs["frames"], ctx.output)  # resumes from a checkpoint in ctx.output
                with ctx.progress("Training", total=ctx.options["kimg"], unit="kimg") as bar:
                    while loop.kimg < ctx.options["kimg"]:
                        loop.step()
                        bar.update(completed=loop.kimg, info=f"loss {loop.loss:.3f}")
                        if loop.snapshot_due():
                            checkpoint, fakes = loop.snapshot()  # writes fakes<kimg:06d>.png too
                            ctx.snapshot_written(loop.kimg, checkpoint, fakes)

        @hookimpl
        def register_trainers(register):
            register(DcGan())
    '''


@hookspec
def register_generators(register: Callable[[Generator], None]) -> None:
    '''Register generators: objects subclassing :class:`cineml.Generator`.

    Called once at start-up. A generator samples a trained network into images
    (``[generate] use = "stylegan2"``).

    Example::

        from cineml import Generator, Option, hookimpl

        class DcGanStills(Generator):
            """One still per seed from the latest DCGAN snapshot."""

            name = "dcgan"
            options = (Option("seeds", list, [1, 2, 3, 4], "Seeds to render, one still each."),)

            def generate(self, ctx):
                from .dcgan import load_latest  # your torch code

                net = load_latest(ctx.inputs["train"])
                ctx.output.mkdir(parents=True, exist_ok=True)
                for seed in ctx.options["seeds"]:
                    net.sample(seed).save(ctx.output / f"seed{seed:04d}.png")

        @hookimpl
        def register_generators(register):
            register(DcGanStills())
    '''


@hookspec
def register_composers(register: Callable[[Composer], None]) -> None:
    '''Register composers: objects subclassing :class:`cineml.Composer`.

    Called once at start-up. A composer turns a sequence of images into one artwork file
    (``[[compose]] use = "animation"``). A compose step may also name a layout directly.

    Example::

        from cineml import Composer, Option, hookimpl

        class PdfBook(Composer):
            """Every image as one page of a PDF, for printing."""

            name = "pdf"
            suffixes = (".pdf",)
            options = (Option("dpi", float, 150.0, "Print resolution.", min=1),)

            def compose(self, ctx, images):
                from PIL import Image

                pages = [Image.open(path).convert("RGB") for path in images]
                pages[0].save(ctx.output, save_all=True, append_images=pages[1:], resolution=ctx.options["dpi"])

        @hookimpl
        def register_composers(register):
            register(PdfBook())
    '''


@hookspec
def register_layouts(register: Callable[[Layout], None]) -> None:
    '''Register layouts: :class:`cineml.Layout` objects, usually made with :func:`cineml.layout`.

    Called once at start-up. A layout is a function from a list of images (+ options) to one
    image; a ``[[compose]]`` step uses it by name (``use = "windows"``).

    Example::

        from PIL import Image

        from cineml import Option, hookimpl, layout

        @layout("diptych", options=(Option("gap", int, 16, "Pixels between the two images.", min=0),),
                capacity=lambda options: 2)
        def diptych(images, gap):
            """Two images side by side on black (a compose step with more gives its first and last)."""
            left, right = images[0], images[1 % len(images)]
            out = Image.new("RGB", (left.width + gap + right.width, max(left.height, right.height)))
            out.paste(left, (0, 0))
            out.paste(right, (left.width + gap, 0))
            return out

        @hookimpl
        def register_layouts(register):
            register(diptych)
    '''


@hookspec
def register_commands(cli: click.Group) -> None:
    '''Add commands to the ``cineml`` command-line tool.

    Called once when the CLI starts, with the top-level :class:`click.Group`; attach commands with
    ``@cli.command()``. Keep heavy imports (torch, moviepy) inside the command bodies.

    Example::

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
    '''


# --- Lifecycle hooks ------------------------------------------------------------------------------


@hookspec
def run_started(project: Project, plan: list[dict[str, Any]]) -> None:
    '''Called when ``cineml run`` starts, after planning and before the first stage.

    ``plan`` lists each stage as ``{"stage", "run": bool, "reason"}``.

    Example::

        from cineml import hookimpl

        @hookimpl
        def run_started(project, plan):
            todo = [step["stage"] for step in plan if step["run"]]
            print(f"{project.name}: running {', '.join(todo) or 'nothing, all up to date'}")
    '''


@hookspec
def run_finished(project: Project, record: dict[str, Any]) -> None:
    '''Called when ``cineml run`` ends successfully, with the run record written to ``run.json``.

    Example::

        from cineml import hookimpl

        @hookimpl
        def run_finished(project, record):
            ran = [f"{s['stage']} ({s['seconds']:.0f} s)" for s in record["stages"] if s["ran"]]
            print(f"{project.name} finished: {', '.join(ran) or 'nothing to do'}")
    '''


@hookspec
def run_failed(project: Project, record: dict[str, Any], error: BaseException) -> None:
    '''Called when ``cineml run`` stops on an error or Ctrl-C, after ``run.json`` records it
    (``record["status"]`` is ``"failed"`` or ``"interrupted"``); the error propagates afterwards.

    Example::

        from cineml import hookimpl

        @hookimpl
        def run_failed(project, record, error):
            if record["status"] == "failed":  # not Ctrl-C
                with open(project.root / "failures.log", "a") as log:
                    print(record["started"], f"{type(error).__name__}: {error}", file=log)
    '''


@hookspec
def stage_started(project: Project, stage: str, options: dict[str, Any]) -> None:
    '''Called before a stage runs (``stage`` is ``"extract"``, ``"train"``, ``"compose:fakes.mp4"``…).

    Example::

        from cineml import hookimpl

        @hookimpl
        def stage_started(project, stage, options):
            settings = ", ".join(f"{key}={value!r}" for key, value in options.items())
            print(f"{project.name}: {stage} ({settings})")
    '''


@hookspec
def stage_finished(project: Project, stage: str, output: Path, seconds: float) -> None:
    '''Called after a stage's output has been moved into place at ``output``.

    Example::

        from cineml import hookimpl

        @hookimpl
        def stage_finished(project, stage, output, seconds):
            with open(project.root / "timings.log", "a") as log:
                print(f"{stage}: {seconds:.1f} s -> {output}", file=log)
    '''


@hookspec
def stage_failed(project: Project, stage: str, error: BaseException) -> None:
    '''Called when a stage raises (including Ctrl-C) before the error propagates.

    Example::

        from cineml import hookimpl

        @hookimpl
        def stage_failed(project, stage, error):
            if not isinstance(error, KeyboardInterrupt):
                print(f"{project.name}: {stage} failed; run again after fixing it, finished work is kept")
    '''


@hookspec
def snapshot_written(project: Project, kimg: float, checkpoint: Path, fakes: Path | None) -> None:
    '''Called by trainers each time a training snapshot is complete on disk.

    ``checkpoint`` is the checkpoint just written, ``fakes`` the fakes grid image (or ``None``).

    Example::

        import json
        import os
        import urllib.request

        from cineml import hookimpl

        @hookimpl
        def snapshot_written(project, kimg, checkpoint, fakes):
            url = os.environ.get("FAKES_WEBHOOK")  # e.g. a chat channel's incoming webhook
            if url and fakes is not None:
                body = json.dumps({"text": f"{project.name} at {kimg:g} kimg: {fakes} ({checkpoint.name})"}).encode()
                request = urllib.request.Request(url, body, {"Content-Type": "application/json"})
                try:
                    urllib.request.urlopen(request, timeout=10).close()
                except OSError as error:  # a network hiccup must not stop training
                    print(f"could not post {fakes.name}: {error}")
    '''
