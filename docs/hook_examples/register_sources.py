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
