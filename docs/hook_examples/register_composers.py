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
