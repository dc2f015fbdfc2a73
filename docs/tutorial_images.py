"""Refresh the tutorial's pictures from a demo run: `cineml run projects/demo/project.toml`, then
`python docs/tutorial_images.py`. Pictures are re-encoded small so the repository stays light."""

from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "projects" / "demo"
OUT = ROOT / "docs" / "images"

PICTURES = {  # source in the demo folder -> (picture name, width)
    "frames/000013.jpg": ("frame.png", 128),
    "train/reals.png": ("reals.jpg", 512),
    "train/fakes000000.png": ("fakes-untrained.jpg", 512),
    "train/fakes000005.png": ("fakes-5kimg.jpg", 512),
    "train/fakes000016.png": ("fakes-16kimg.jpg", 512),
    "art/filmstrip.png": ("filmstrip.jpg", 800),
    "art/shots.png": ("shots.jpg", 528),
    "art/generated-grid.png": ("generated-grid.jpg", 480),
    "art/windows.png": ("windows.jpg", 600),
}

def film_and_gan(numbers: tuple[int, ...] = (1, 13, 25, 37)) -> Image.Image:
    """Frames of the film beside what its GAN re-made of them, as the side-by-side layout draws them."""
    from cineml_plugins.layouts import side_by_side

    film = [Image.open(DEMO / "frames" / f"{n:06d}.jpg") for n in numbers]
    gan = [Image.open(DEMO / "generated" / "projection" / f"{n:06d}.png") for n in numbers]
    pairs = [side_by_side([a, b], captions=["film", "GAN"] if k == 0 else [], tile_width=160)
             for k, (a, b) in enumerate(zip(film, gan))]
    sheet = Image.new("L", (sum(p.width for p in pairs) + 12 * (len(pairs) - 1), max(p.height for p in pairs)))
    x = 0
    for pair in pairs:
        sheet.paste(pair, (x, sheet.height - pair.height))
        x += pair.width + 12
    return sheet


if __name__ == "__main__":
    OUT.mkdir(exist_ok=True)
    film_and_gan().convert("RGB").save(OUT / "film-and-gan.jpg", quality=82)
    print(f"docs/images/film-and-gan.jpg: {(OUT / 'film-and-gan.jpg').stat().st_size // 1024} KiB")
    for source, (name, width) in PICTURES.items():
        image = Image.open(DEMO / source)
        image = image.convert("RGB") if name.endswith(".jpg") else image
        if image.width > width:
            image = image.resize((width, round(image.height * width / image.width)), Image.LANCZOS)
        elif image.width < width:
            image = image.resize((width, round(image.height * width / image.width)), Image.NEAREST)
        image.save(OUT / name, quality=82)
        print(f"docs/images/{name}: {(OUT / name).stat().st_size // 1024} KiB")
