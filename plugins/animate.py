"""The animation composer: a sequence of images (e.g. every fakes grid in kimg order) -> MP4/GIF/WebP.

Frames are built as numpy arrays in a frame function and encoded by MoviePy (about 4x faster than
CompositeVideoClip). MoviePy 2.2.1 traps handled here: an image sequence loses its last frame to
floating-point duration, ``pixel_format`` is ignored and odd sizes silently become yuv444p, and
RGB input is converted to full-range video unless told otherwise. So the frame count is planned
exactly, frames are padded to even sizes, and the colour conversion is spelled out for ffmpeg.
MoviePy is imported only through :func:`import_moviepy` (``import moviepy`` is slow, and it reads the
first ``.env`` found above its install folder: with a venv inside the project, the project's own).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

import cineml
from cineml import (
    CinemlError,
    Option,
    atomic_path,
    color_problem,
    draw_text,
    even_size,
    fit,
    hookimpl,
    label_text,
    load_image,
    parse_color,
    validate_options,
)


def import_moviepy() -> Any:
    """Import MoviePy pinned to the bundled ffmpeg, with a clear error when it cannot start.

    ``import moviepy`` loads a ``.env`` file found above its install folder and, if that sets
    ``FFMPEG_BINARY``, runs that program (a wrong path fails the import with a bare OSError).
    ``load_dotenv`` never overrides variables already set, so setting ours first wins.
    """
    import os

    from .ffmpeg import ffmpeg_exe

    os.environ.setdefault("FFMPEG_BINARY", ffmpeg_exe())
    try:
        import moviepy
    except OSError as exc:
        raise CinemlError(f"MoviePy could not start ffmpeg: {exc}. FFMPEG_BINARY is set to "
                          f"{os.environ.get('FFMPEG_BINARY')!r} in your environment; unset it (CineML then uses "
                          "the ffmpeg bundled with imageio-ffmpeg) or point it at a working ffmpeg.") from None
    _children_die_with_us()
    return moviepy


def _children_die_with_us() -> None:
    """MoviePy starts its ffmpeg processes itself: give them CineML's own rule, dying with their parent, so a
    ``kill -9`` of ``cineml run`` during an encode leaves no ffmpeg finishing a file nobody will use. MoviePy's
    writers and readers pass their ``subprocess.Popen`` arguments through ``cross_platform_popen_params``;
    each module's reference to it is wrapped once (Linux only)."""
    import importlib
    import sys

    from .ffmpeg import die_with_parent

    if not sys.platform.startswith("linux"):
        return
    for name in ("moviepy.video.io.ffmpeg_writer", "moviepy.video.io.ffmpeg_reader", "moviepy.audio.io.readers",
                 "moviepy.audio.io.ffmpeg_audiowriter"):
        module = importlib.import_module(name)
        original = getattr(module, "cross_platform_popen_params", None)
        if original is None or getattr(original, "dies_with_parent", False):
            continue

        def params(popen_params: dict[str, Any], original: Callable[..., dict[str, Any]] = original) -> dict[str, Any]:
            return {"preexec_fn": die_with_parent, **original(popen_params)}

        params.dies_with_parent = True  # type: ignore[attr-defined]
        module.cross_platform_popen_params = params  # type: ignore[attr-defined]


LABELS = ("none", "index", "kimg", "seed", "time")
PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
# RGB -> limited-range BT.709 yuv420p, tagged as such, whatever pixel format MoviePy asks for.
X264_PARAMS = ["-vf", "scale=out_color_matrix=bt709:out_range=tv,format=yuv420p,"
               "setparams=range=tv:colorspace=bt709:color_primaries=bt709:color_trc=bt709",
               "-movflags", "+faststart"]


def _fps_error(value: float) -> str | None:
    if abs(round(value, 2) - value) > 1e-9:
        return (f"fps = {value} has more than two decimals; MoviePy hands ffmpeg the rate rounded "
                f"to two, which would drift. Use e.g. 6, 12, 23.98 or 29.97.")
    return None


def film_plan(times: list[float], fps: float) -> list[tuple[int, int, float]]:
    """The still each output frame shows when stills keep their film times: frame i (at ``times[0] + i / fps``)
    shows the last still due by then (to the nearest frame), so a gap in the stills holds the one before."""
    import bisect

    count = max(1, round((times[-1] - times[0]) * fps) + 1)
    return [(a, a, 0.0) for a in (bisect.bisect_right(times, times[0] + (i + 0.5) / fps) - 1 for i in range(count))]


def frame_plan(stills: int, fps: float, seconds: float = 0.0,
               crossfade: float = 0.0) -> list[tuple[int, int, float]]:
    """Which still(s) each output frame shows: ``(a, b, t)`` blends still ``a`` into ``b`` by ``t``.

    Without ``seconds`` every still gets one frame, plus ``round(crossfade * fps)`` blended
    frames between neighbours. With ``seconds`` the total is ``round(seconds * fps)`` frames and
    the stills share it evenly (the difference spread one frame at a time, never drifting). When
    that is fewer frames than stills, crossfades shrink first, then stills are sampled evenly.
    """
    if stills < 1:
        raise CinemlError("Nothing to animate: the compose step's input matched no images.")
    blend = round(crossfade * fps)
    total = round(seconds * fps) if seconds > 0 else stills + (stills - 1) * blend
    if total < 1:
        raise CinemlError(f"seconds = {seconds} at fps = {fps} is less than one frame; give a longer "
                          f"duration or a higher fps.")
    if stills == 1:
        return [(0, 0, 0.0)] * total
    if total < stills:  # more stills than frames: an even sample from the first to the last (the final fakes)
        picks = [round(f * (stills - 1) / (total - 1)) for f in range(total)] if total > 1 else [stills - 1]
        return [(s, s, 0.0) for s in picks]
    blend = min(blend, (total - stills) // (stills - 1))
    holds = total - (stills - 1) * blend
    plan: list[tuple[int, int, float]] = []
    for i in range(stills):
        plan += [(i, i, 0.0)] * ((i + 1) * holds // stills - i * holds // stills)
        if i < stills - 1:
            plan += [(i, i + 1, j / (blend + 1)) for j in range(1, blend + 1)]
    return plan


class _Prefetch:
    """Renders stills in a worker thread a couple ahead of the encoder, so decoding and laying out
    overlap x264. ``order`` is the stills in the order the frames need them."""

    def __init__(self, render: Callable[[int], Any], order: Sequence[int], ahead: int = 2) -> None:
        self.render, self.order, self.ahead = render, list(order), ahead
        self.position = {still: k for k, still in enumerate(self.order)}
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="cineml-stills")
        self.futures: dict[int, Future[Any]] = {}

    def __call__(self, still: int) -> Any:
        here = self.position[still]
        for upcoming in self.order[here:here + self.ahead + 1]:
            if upcoming not in self.futures:
                self.futures[upcoming] = self.pool.submit(self.render, upcoming)
        for old in [s for s in self.futures if self.position[s] < here - 1]:
            del self.futures[old]
        return self.futures[still].result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _proglog_bridge(bar: Any) -> Any:
    """A proglog logger that forwards MoviePy's frame counter to a CineML progress bar."""
    import proglog

    class Bridge(proglog.ProgressBarLogger):
        def bars_callback(self, name: str, attr: str, value: Any, old_value: Any = None) -> None:
            if name == "frame_index" and attr == "index":
                bar.update(completed=value)

        def callback(self, **changes: Any) -> None:  # MoviePy's chatter stays quiet
            pass

    return Bridge()


class Animation(cineml.Composer):
    """Animate images in order into an MP4 (or GIF/WebP), optionally laid out per frame."""

    name = "animation"
    suffixes = (".mp4", ".gif", ".webp")
    options = (
        Option("fps", float, 6.0, "Frames per second of the video.", min=0.1, max=240, check=_fps_error),
        Option("seconds", float, 0.0, "Total duration; 0 gives one frame per image (plus crossfades).", min=0),
        Option("crossfade", float, 0.0, "Seconds of dissolve between consecutive images.", min=0),
        Option("timing", str, "even", "even: the images share the video evenly (see seconds, crossfade); film: "
               "each image is shown at its time in the film until the next one's (frames, and what was re-made of "
               "them), so frames left out by dedupe or every = N hold the one before and the sound stays in sync.",
               choices=("even", "film")),
        Option("label", str, "none", "A counter drawn on every frame.", choices=LABELS),
        Option("label_size", int, 0, "Counter height in pixels; 0 scales with the frame.", min=0),
        Option("audio", str, "none", "\"none\", \"source\" (the film's soundtrack, trimmed or looped "
               "to length) or an audio file relative to the project folder."),
        Option("layout", str, "", "A layout applied per frame; the input is split into one "
               "contiguous stretch per tile (e.g. each window plays its own part of a walk).", names="layouts"),
        Option("layout_options", dict, {}, "Options of that layout, as in a layout step."),
        Option("tiles", int, 0, "Images per laid-out frame; 0 asks the layout (its capacity for "
               "layout_options: columns x rows, bays x floors; for a filmstrip set its frames_per_strip).", min=0),
        Option("width", int, 0, "Scale frames to this width; 0 keeps the first frame's size.", min=0),
        Option("height", int, 0, "Scale frames to this height; 0 keeps the aspect.", min=0),
        Option("background", (str, list), "black", "Fills bars and padding.", check=color_problem),
        Option("crf", int, 18, "x264 quality: lower is better and bigger (18 is visually lossless).",
               min=0, max=51),
        Option("preset", str, "medium", "x264 speed/size trade-off.", choices=PRESETS),
    )

    def compose(self, ctx: cineml.StageContext, images: list[Path]) -> None:
        opts = {o.name: o.default for o in self.options}
        opts.update(ctx.options)
        suffix = ctx.output.suffix.lower()
        if suffix not in self.suffixes:
            raise ctx.error("output", f"the animation composer writes .mp4, .gif or .webp, not {ctx.output.name!r}. "
                            "Change the step's output name.")
        message = _fps_error(float(opts["fps"]))
        if message:
            raise ctx.error("fps", message)
        fps = float(opts["fps"])
        if suffix == ".gif" and fps > 50:
            raise ctx.error("fps", f"{fps:g} is too fast for a GIF, whose frame "
                              "times are whole hundredths of a second and which browsers slow to 10 fps below "
                              "2/100 s. Use fps <= 50, or write .mp4 or .webp.")
        groups, layout, layout_values = self._groups(ctx, images, opts)
        if opts["timing"] == "film":
            times = [_film_time(group[0][1]) for group in groups]
            if None in times:
                missing = groups[times.index(None)][0][1]
                raise ctx.error("timing", f"\"film\" shows each image at its time in the film, but {missing} has none "
                                          "(only frames, and images re-made from them, carry film times in the "
                                          "index.json beside them). Use timing = \"even\".")
            plan = film_plan([t for t in times if t is not None], fps)
        else:
            plan = frame_plan(len(groups), fps, float(opts["seconds"]), float(opts["crossfade"]))
        if len(plan) < len(groups):
            ctx.warn(f"{ctx.where or ctx.stage}: {len(groups)} stills in {len(plan)} frames; showing an even "
                     f"sample. Raise seconds or fps to show every one.")
        render = _StillRenderer(groups, layout, layout_values, opts, even=suffix == ".mp4")
        stills = _Prefetch(render, list(dict.fromkeys(s for a, b, _ in plan for s in (a, b))))

        def frame(index: int) -> np.ndarray:
            a, b, t = plan[index]
            if t == 0.0:
                return stills(a)[1]
            (first, _, text_a), (second, _, text_b) = stills(a), stills(b)
            mix = np.rint(first.astype(np.float32) * (1 - t) + second.astype(np.float32) * t)
            # The counter does not dissolve: it switches at the middle of the crossfade.
            return render.labelled(mix.astype(np.uint8), text_a if t < 0.5 else text_b)

        try:
            with atomic_path(ctx.output) as tmp:
                if suffix == ".mp4":
                    start = _film_time(groups[0][0][1]) if opts["audio"] == "source" else None
                    self._write_mp4(ctx, tmp, frame, len(plan), fps, opts, start or 0.0)
                else:
                    if opts["audio"] != "none":
                        ctx.warn(f"{ctx.where or ctx.stage}: {suffix} files carry no sound; audio is ignored.")
                    _write_pictures(ctx, tmp, frame, len(plan), fps)
        finally:
            stills.close()

    def _groups(self, ctx: cineml.StageContext, images: list[Path],
                opts: dict[str, Any]) -> tuple[list[list[tuple[int, Path]]], Any, dict[str, Any]]:
        """Stills as lists of (index, path): one image each, or one per tile for a layout."""
        if not images:
            raise ctx.error("input", "it matched no images. Check `input` "
                              "and the count/every/start/end sampling.")
        indexed = list(enumerate(images))
        name = opts["layout"]
        if not name:
            return [[item] for item in indexed], None, {}
        if name not in ctx.layouts:
            known = ", ".join(sorted(ctx.layouts)) or "none registered"
            raise ctx.error("layout", f"{name!r} is not a registered layout "
                              f"(known: {known}).")
        layout = ctx.layouts[name]
        values = validate_options(layout.options, dict(opts["layout_options"] or {}),
                                  f"{ctx.where or ctx.stage}.layout_options", ctx.project.root,
                                  ctx.project.manifest_path)
        tiles = int(opts["tiles"]) or layout.tiles(values)
        if not tiles:
            raise ctx.error("tiles", "cannot tell how many images each frame of "
                              f"layout {name!r} shows. Set tiles = N, or give the layout's size in "
                              f"layout_options (e.g. columns and rows for grid, bays and floors for windows).")
        # Tile j plays its own contiguous stretch of the input (a looping latent walk gives each
        # window a different, smooth part of it); a tile whose stretch is shorter holds its last image.
        # Even cuts: 17 images over 16 windows fill all 16 (ceil-sized pieces would fill only 9).
        cuts = [j * len(indexed) // tiles for j in range(tiles + 1)]
        sequences = [indexed[cuts[j]:cuts[j + 1]] for j in range(tiles) if cuts[j + 1] > cuts[j]]
        count = max(len(seq) for seq in sequences)
        return [[seq[min(t, len(seq) - 1)] for seq in sequences] for t in range(count)], layout, values

    def _write_mp4(self, ctx: cineml.StageContext, tmp: Path, frame: Callable[[int], np.ndarray],
                   total: int, fps: float, opts: dict[str, Any], start: float = 0.0) -> None:
        """Encode; the soundtrack starts ``start`` seconds in (the film time of the first frame shown, so that
        frames of the film, or what was re-made of them, play in sync with its sound)."""
        moviepy = import_moviepy()
        AudioFileClip, VideoClip, afx = moviepy.AudioFileClip, moviepy.VideoClip, moviepy.afx

        seconds = total / fps
        # Half a frame of slack: MoviePy writes int(duration * fps) frames, and 90 / 6 * 6 may
        # come out as 89.999...; frame times are rounded back to indices below.
        clip = VideoClip(lambda t: frame(min(total - 1, round(t * fps))), duration=(total + 0.5) / fps)
        audio_path = _audio_path(ctx, opts["audio"])
        sound = None
        if audio_path is not None:
            problem = _audio_problem(audio_path)
            try:
                sound = None if problem else AudioFileClip(str(audio_path))
            except Exception as error:  # MoviePy raises bare OSError/KeyError on odd files
                problem = f"{type(error).__name__}: {error}"
            if sound is None:
                raise ctx.error("audio", f"cannot read a soundtrack from {audio_path} "
                                  f"({problem}). Check that the file has an audio stream, or set "
                                  f"audio = \"none\".")
            start = start if start < sound.duration else 0.0
            if sound.duration < start + seconds:
                track = sound.subclipped(start).with_effects([afx.AudioLoop(duration=seconds)])
            else:
                track = sound.subclipped(start, start + seconds)
            track = track.with_effects([afx.AudioFadeOut(min(0.5, seconds / 20))])
            clip = clip.with_audio(track.with_duration(seconds))
        try:
            with ctx.progress("Encoding", total=total, unit="frames") as bar:
                clip.write_videofile(
                    str(tmp), fps=fps, codec="libx264", preset=opts["preset"],
                    audio=sound is not None, audio_codec="aac", audio_bitrate="192k",
                    temp_audiofile_path=str(tmp.parent),
                    ffmpeg_params=["-crf", str(opts["crf"])] + X264_PARAMS,
                    logger=_proglog_bridge(bar))
        except OSError as error:
            raise ctx.error(None, f"ffmpeg failed writing {ctx.output.name}: "
                              f"{str(error).strip()[-600:]}") from error
        finally:
            clip.close()
            if sound is not None:
                sound.close()


class _StillRenderer:
    """Builds still ``i``: load, lay out, fit, pad even (x264's 4:2:0 needs it; GIF and WebP do not);
    returns (plain, labelled, label text)."""

    def __init__(self, groups: list[list[tuple[int, Path]]], layout: Any, values: dict[str, Any],
                 opts: dict[str, Any], even: bool = True) -> None:
        self.groups, self.layout, self.values, self.even = groups, layout, values, even
        self.label, self.label_size = opts["label"], int(opts["label_size"])
        self.background = parse_color(opts["background"])
        self.width, self.height = int(opts["width"]), int(opts["height"])
        self.size: tuple[int, int] | None = None

    def __call__(self, index: int) -> tuple[np.ndarray, np.ndarray, str]:
        images = [load_image(path, i) for i, path in self.groups[index]]
        picture = self.layout(images, **self.values) if self.layout is not None else images[0]
        picture = picture.convert("RGB") if picture.mode != "RGB" else picture
        if self.size is None:  # the first still fixes the video's size
            self.size = self._target(picture.size)
        if picture.size != self.size:
            picture = fit(picture, self.size, fill=self.background)
        plain = np.asarray(even_size(picture, self.background) if self.even else picture)
        text = label_text(images[0], self.label)
        return plain, self.labelled(plain, text), text

    def labelled(self, frame: np.ndarray, text: str) -> np.ndarray:
        """``frame`` with the counter drawn in its lower-left corner (a copy; the input is kept)."""
        if not text:
            return frame
        picture = Image.fromarray(frame)
        size = self.label_size or max(10, picture.height // 22)
        pad = max(2, size // 3)
        draw_text(picture, (pad * 3, picture.height - pad * 3), text, size=size, fill="white",
                  anchor="ld", box=(0, 0, 0), padding=pad)
        return np.asarray(picture)

    def _target(self, size: tuple[int, int]) -> tuple[int, int]:
        width, height = size
        if self.width and self.height:
            return self.width, self.height
        if self.width:
            return self.width, max(1, round(self.width * height / width))
        if self.height:
            return max(1, round(self.height * width / height)), self.height
        return width, height


def _film_time(path: Path) -> float | None:
    """Seconds into the film of a frame (from the index.json beside it), or None for other images."""
    return cineml.frame_facts(path.parent).get(path.name, {}).get("time")


def _audio_path(ctx: cineml.StageContext, value: str) -> Path | None:
    if value == "none" or not value:
        return None
    if value == "source":
        source = ctx.inputs.get("source")
        if source is None or not Path(source).is_file():
            raise ctx.error("audio", "\"source\" but the project has no film "
                              "file to take the soundtrack from. Set [project] source, or give an "
                              "audio file path.")
        return Path(source)
    path = Path(value)
    path = path if path.is_absolute() else ctx.project.root / path
    if not path.is_file():
        raise ctx.error("audio", f"{value!r}: no such file {path}. Give a path "
                          f"relative to the project folder, \"source\" or \"none\".")
    return path


def _audio_problem(path: Path) -> str | None:
    """Why ``path`` has no readable audio stream, or None. Checked before MoviePy opens it,
    because MoviePy's reader crashes in its destructor on files without sound."""
    import subprocess

    from .ffmpeg import ffmpeg_exe

    result = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                            capture_output=True, text=True, errors="replace")
    if "Audio:" in result.stderr:
        return None
    lines = [line.strip() for line in result.stderr.splitlines() if line.strip()]
    reason = lines[-1] if lines and "At least one output" not in lines[-1] else "no audio stream"
    return reason if "Stream #" not in result.stderr else "no audio stream"


def _write_pictures(ctx: cineml.StageContext, tmp: Path, frame: Callable[[int], np.ndarray],
                    total: int, fps: float) -> None:
    """Animated GIF/WebP through Pillow. GIF counts time in centiseconds, so frame durations are
    rounded with the error carried forward: the total length stays right. Frames are handed to
    Pillow as they are rendered (WebP encodes them one by one; GIF keeps only palette frames)."""
    gif = tmp.suffix.lower() == ".gif"
    step = 10 if gif else 1
    durations, shown = [], 0
    for index in range(total):
        end = round((index + 1) * 1000 / fps / step) * step
        durations.append(max(step, end - shown))
        shown += durations[-1]
    with ctx.progress("Rendering", total=total, unit="frames") as bar:
        def rendered() -> Iterator[Image.Image]:
            for index in range(total):
                yield Image.fromarray(frame(index))
                bar.advance()

        frames = rendered()
        first = next(frames)
        if gif:
            first.save(tmp, "GIF", save_all=True, append_images=frames, duration=durations, loop=0,
                       optimize=False, disposal=1)
        else:
            first.save(tmp, "WEBP", save_all=True, append_images=frames, duration=durations, loop=0,
                       quality=90, method=4)


@hookimpl
def register_composers(register: Any) -> None:
    register(Animation())
