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
