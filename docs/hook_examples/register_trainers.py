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
