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
