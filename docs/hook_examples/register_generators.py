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
