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
