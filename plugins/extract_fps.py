"""The ``fps`` extractor: a film becomes numbered training frames at a steady rate, in one pass.

Frame selection follows ffmpeg's ``fps`` *filter* (round-to-nearest per output slot): D seconds
at F fps give round(D x F) frames (784 s at 12 fps -> 9408, 10.2 s -> 122), and slot k shows the
source at k / F seconds (+ start). ffmpeg's ``-r`` output option differs (about two more frames,
with a burst at the start); CineML deliberately follows the filter.

Two paths, same geometry (both use the chain's content boxes):

* fast: every preprocess step has an ffmpeg filter, so ONE ffmpeg process decodes, filters
  (fps + chain) and writes the images itself (image2 muxer, atomic writes);
* fallback: ffmpeg decodes with the fps filter and square-pixel correction to raw frames on a
  pipe; Python applies the transforms and encodes in a small thread pool.

Resume: frames are only ever complete files (atomic renames). A re-run keeps the contiguous run
000001..N of complete frames, deletes anything after a gap, and restarts the same graph with
``trim=start_frame=N`` right after the fps filter: decoding the done part again is ~10x cheaper
than encoding it, and the selection is then identical to a clean run by construction.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path
from typing import Any

from PIL import Image

from cineml import CinemlError, Extractor, Option, Preprocessor, StageContext, atomic_path, hookimpl

from .ffmpeg import (
    GREY_CHROMA,
    DecodeStats,
    Ffmpeg,
    VideoInfo,
    audio_end,
    chroma_level,
    decode_stats,
    display_size,
    fps_frame_count,
    padded_slots,
    probe,
    slot_sources,
)
from .shots import (
    THUMB_FILTER,
    dedupe,
    film_shots,
    find_shots,
    read_thumbs,
    remove_thumbs,
    resume_thumbs,
    shot_list,
    shot_of,
    thumb_segment,
)

Chain = Sequence[tuple[Preprocessor, dict[str, Any]]]
RENUMBERING = ".renumbering"  # marker: frames are being renumbered; if found on resume, redo
PREROLL = 10.0  # seconds decoded before ``start`` and trimmed off, so inexact seeks still land before it


def parse_rate(value: float | str) -> Fraction | None:
    """12, 23.976, "24000/1001" -> an exact rate; None for "source" or anything that is not a rate."""
    try:
        rate = Fraction(str(value).strip()).limit_denominator(1_000_000)
    except (ValueError, ZeroDivisionError):
        return None
    return rate if rate > 0 else None


def check_fps(value: float | str) -> str | None:
    if value == "source" or parse_rate(value) is not None:
        return None
    if isinstance(value, str):
        return f"{value!r}: use frames per second (12, 23.976 or \"24000/1001\") or \"source\""
    return f"{value} must be more than 0 frames per second"


def jpeg_qscale(quality: int) -> int:
    """Map a Pillow-style JPEG quality (1-100) to ffmpeg's mjpeg ``-q:v`` (1-31).

    Measured on testsrc2 at 512²: ``-q:v 2`` is about Pillow quality 88 in file size, ``-q:v 1``
    about 95, ``-q:v 3`` about 80: roughly (100 - quality) / 6.
    """
    return max(1, min(31, int((100 - quality) / 6 + 0.5)))


class FpsExtractor(Extractor):
    """Extract frames at a steady rate (ffmpeg fps-filter semantics) through the preprocess chain.

    D seconds at F fps give round(D x F) frames, frame k showing the film at start + k / F, as
    ffmpeg's ``fps`` filter does (not the ``-r`` output option, which adds ~2 frames in a burst at
    the start). ``fps = "source"`` keeps every coded frame with its real timestamp. Python-only
    preprocess steps run in a small thread pool, so their ``transform`` must be thread-safe.
    """

    name = "fps"
    options = (
        Option("fps", (float, str), 12, 'frames per second to keep, or "source" for every coded frame',
               check=check_fps),
        Option("start", float, None, "first second of the film to use (default: its start)", min=0),
        Option("end", float, None, "last second of the film to use (default: its end)", min=0),
        Option("format", str, "jpg", "image format of the frames", choices=("jpg", "png", "webp")),
        Option("quality", int, 90, "JPEG/WebP quality (90 is ffmpeg -q:v 2)", min=1, max=100),
        Option("shots", bool, True, "find the film's shots in the same pass: frames/shots.json lists them, index.json "
               "gives each frame its shot (see docs/manifest.md, Shots)"),
        Option("dedupe", float, 0.0, "drop a frame that differs from the last kept frame of its shot by less than this "
               "many grey levels (mean over a 32x32 thumbnail, 0-255); 0 keeps every frame, 2-4 thins still takes",
               min=0, max=255),
        Option("deinterlace", str, "auto", "join the two fields of interlaced video (DVD, broadcast) with "
               "bwdif: auto when ffmpeg reports a field order, on, or off", choices=("auto", "on", "off")),
    )

    def resume_point(self, partial: Path) -> str | None:
        done = sum(1 for p in partial.glob("[0-9]*.*") if p.suffix.lower() in (".jpg", ".png", ".webp"))
        return f"frame {done + 1}" if done else None

    def extract(self, ctx: StageContext, chain: Chain) -> None:
        if "source" not in ctx.inputs:
            raise ctx.error(None, "the stage got no film: set source in [project] of project.toml.")
        film = Path(ctx.inputs["source"]).resolve()
        info = probe(film)
        job = Job(ctx, film, info, list(chain))
        job.run()


class Job:
    """One extraction: settings resolved against the film, then run (or resumed) and indexed."""

    def __init__(self, ctx: StageContext, film: Path, info: VideoInfo, chain: list) -> None:
        self.ctx, self.film, self.info, self.chain = ctx, film, info, chain
        opts = ctx.options
        self.fps: float | str = opts.get("fps", 12)
        self.source_rate = self.fps == "source"
        self.rate = None if self.source_rate else parse_rate(self.fps)  # exact: "24000/1001" works
        self.start = float(opts.get("start") or 0.0)
        self.end = opts.get("end")
        self.ext = opts.get("format", "jpg")
        self.quality = int(opts.get("quality", 90))
        self.out = Path(ctx.output)
        self.shots = bool(opts.get("shots", True))
        self.dedupe = float(opts.get("dedupe") or 0.0)
        self.thumbs = self.shots or self.dedupe > 0  # a 32x32 grey thumbnail of every frame, made in the same pass
        self._check_range()
        # Seek a little before start, then trim to it inside the graph: MPEG-TS seeks land on the next
        # keyframe *after* the target, which would lose up to a GOP of frames.
        self.preroll = min(self.start, PREROLL)
        self.input_args = (["-ss", f"{self.start - self.preroll:.6f}"] if self.start else []) + \
                          (["-to", f"{float(self.end):.6f}"] if self.end is not None else [])
        mode = opts.get("deinterlace", "auto")  # bwdif's deint: every frame, or those flagged interlaced
        self.deinterlace = "all" if mode == "on" else "interlaced" if mode == "auto" and info.interlaced else None
        self.filters, self.out_size, self.out_mode = plan_chain(self.chain, info)
        if self.expected == 0:
            raise ctx.error("fps", f"{self.seconds:g} s of {film.name} at fps = {self.fps} gives no frame. Use a "
                                   "higher fps, fps = \"source\", or an earlier start.")

    # --- settings -------------------------------------------------------------------------------

    def _check_range(self) -> None:
        dur = self.info.duration
        if self.end is not None and self.end <= self.start:
            raise self.ctx.error("end", f"{self.end:g} s must be after start ({self.start:g} s) for {self.film}.")
        if dur is not None and self.start >= dur:
            raise self.ctx.error("start", f"{self.start:g} s is at or past the end of {self.film}, which lasts "
                                        f"{dur:g} s. Use a smaller start.")

    @property
    def steady_rate(self) -> float:
        """The rate of fps = N as a float (asked for only when fps is not "source")."""
        assert self.rate is not None, 'fps = "source" has no steady rate'
        return float(self.rate)

    @property
    def frame_rate(self) -> float:
        """The rate of the extracted frames: fps = N, or the film's own for "source" (25 when it gives none)."""
        return float(self.info.fps or 25) if self.source_rate else self.steady_rate

    @property
    def seconds(self) -> float | None:
        dur = self.info.duration
        stop = dur if self.end is None or (dur is not None and self.end > dur) else float(self.end)
        return None if stop is None else stop - self.start

    @property
    def expected(self) -> int | None:
        """Frames a healthy film gives: fps-filter count, or coded frames for fps="source"."""
        rate = self.info.fps if self.source_rate else self.steady_rate
        if self.seconds is None or not rate:
            return None
        return fps_frame_count(self.seconds, rate)

    # --- run ------------------------------------------------------------------------------------

    def run(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        if (self.out / "index.json").exists():  # complete already (perhaps killed while tidying up)
            self._tidy()
            return
        done = resume_point(self.out, self.ext)
        if self.thumbs:  # resume where frames and thumbnails are both complete
            complete = resume_thumbs(self.out, done)
            for k in range(complete + 1, done + 1):
                (self.out / f"{k:06d}.{self.ext}").unlink()
            done = complete
        else:
            remove_thumbs(self.out)
        if done:
            self.ctx.log(f"Resuming frame extraction after {done} complete frames.")
        with self.ctx.progress("Extracting frames", total=self.expected, unit="frames") as bar:
            bar.update(completed=done)
            fast = self.filters is not None and not (self.ext == "jpg" and self.out_mode == "L")
            stats = self._run_fast(done, bar) if fast else self._run_pipe(done, bar)
        count = resume_point(self.out, self.ext)
        if count == 0:
            raise CinemlError(f"No frames could be decoded from {self.film} (between {self.start:g} s and "
                              f"{'the end' if self.end is None else f'{self.end:g} s'}). Check that the "
                              "film plays, or re-encode it (e.g. to H.264 mp4).")
        slots = self._check_damage(stats, count)
        starts, kept = self._shots(slots, count)
        self._write_index(stats, slots, count, starts, kept)
        self._tidy()

    def _shots(self, slots: list[int], written: int) -> tuple[list[int] | None, list[bool] | None]:
        """First frame (0-based) of each shot, and which frames dedupe keeps; None where they are off."""
        if not self.thumbs:
            return None, None
        thumbs = read_thumbs(self.out)
        if len(thumbs) != written:
            raise CinemlError(f"{self.out}: ffmpeg wrote {len(thumbs)} thumbnails for {written} frames, so shots "
                              "cannot be told. Delete the frames folder and run again; if it happens again, set "
                              "[extract] shots = false and dedupe = 0 and report it.")
        thumbs = thumbs[slots]
        rate = self.frame_rate
        starts = find_shots(thumbs, rate) if self.shots else [0]
        keep = dedupe(thumbs, starts, self.dedupe)
        return (starts if self.shots else None), ([bool(k) for k in keep] if self.dedupe > 0 else None)

    def _tidy(self) -> None:
        """After index.json (the mark of a complete set): delete the frames dedupe dropped and the thumbnails.
        Safe to repeat, so a kill in the middle is finished by the next run."""
        (self.out / RENUMBERING).unlink(missing_ok=True)
        if self.dedupe > 0:
            for entry in json.loads((self.out / "index.json").read_text())["frames"]:
                if entry.get("kept") is False:
                    (self.out / entry["file"]).unlink(missing_ok=True)
        remove_thumbs(self.out)

    def _graph(self, done: int) -> list[str]:
        graph = []
        if self.start or self.end is not None:  # exactly [start, end): the pre-roll off, end exclusive
            span = f":end={self.preroll + float(self.end) - self.start:.6f}" if self.end is not None else ""
            graph += [f"trim=start={self.preroll:.6f}{span}", f"setpts=PTS-{self.preroll:.6f}/TB"]
        if self.deinterlace:
            graph.append(f"bwdif=mode=send_frame:deint={self.deinterlace}")
        # showinfo logs every decoded frame's timestamp (before fps picks from them): the index records
        # the source time each extracted frame really shows, and damage checks need no second pass.
        graph.append("showinfo=checksum=0")
        if self.rate is not None:
            graph.append(f"fps={self.rate}")
        if done:
            graph.append(f"trim=start_frame={done}")
        return graph

    def _run_fast(self, done: int, bar: Any) -> DecodeStats:
        """Everything inside one ffmpeg process, writing the images itself."""
        assert self.filters is not None
        # PNG keeps full colour resolution: scale in 4:4:4 (or planar RGB), not the film's 4:2:0,
        # which would leave the chroma at half the output size (visibly softer than Pillow).
        full_chroma = ["format=yuv444p|gbrp"] if self.ext == "png" else []
        video, thumbs = self._video_args(done, full_chroma + self.filters)
        pattern = str(self.out).replace("%", "%%") + f"/%06d.{self.ext}"
        args = [*self.input_args, "-i", str(self.film), *video, "-an", "-sn", "-dn",
                "-fps_mode", "passthrough", *self._codec_args(),
                "-f", "image2", "-atomic_writing", "1", "-start_number", str(done + 1),
                "-progress", "pipe:1", "-nostats", pattern, *thumbs]
        with Ffmpeg(args) as run:
            for line in run.stdout:
                if line.startswith(b"frame="):
                    bar.update(completed=done + int(line[6:]))
            if run.wait() != 0:
                raise run.fail(self.film, "extracting frames")
            return decode_stats(run.log_lines())

    def _video_args(self, done: int, after: list[str]) -> tuple[list[str], list[str]]:
        """The frames' filters (the decode graph, then ``after``), and the output arguments of the thumbnails:
        with shots or dedupe on, the graph splits after frame selection and a second output writes a 32x32
        grey thumbnail of every frame to a file beside them (one decode, two outputs)."""
        if not self.thumbs:
            return ["-map", "0:V:0", "-vf", ",".join(self._graph(done) + after)], []
        graph = (f"[0:V:0]{','.join(self._graph(done))},split=2[big][small];[big]{','.join(after) or 'null'}[frames];"
                 f"[small]{THUMB_FILTER}[thumbs]")
        return (["-filter_complex", graph, "-map", "[frames]"],
                ["-map", "[thumbs]", "-fps_mode", "passthrough", "-f", "rawvideo",
                 str(thumb_segment(self.out, done + 1))])

    def _codec_args(self) -> list[str]:
        if self.ext == "jpg":
            return ["-c:v", "mjpeg", "-qmin", "1", "-q:v", str(jpeg_qscale(self.quality))]
        if self.ext == "png":
            return ["-c:v", "png", "-compression_level", "1"]
        return ["-c:v", "libwebp", "-quality", str(self.quality)]

    def _run_pipe(self, done: int, bar: Any) -> DecodeStats:
        """ffmpeg decodes to raw frames on a pipe; Python transforms and encodes them."""
        if self.filters is not None:  # all-ffmpeg chain whose output the encoder can't take (gray JPEG)
            assert self.out_size is not None  # its mode (L) was measured on a frame, and so was its size
            graph, size, mode, steps = self.filters, self.out_size, self.out_mode, []
        else:
            w, h = display_size(self.info.width, self.info.height, self.info.sar)
            graph = [f"scale={w}:{h},setsar=1"] if (w, h) != (self.info.width, self.info.height) else []
            size, mode, steps = (w, h), "RGB", self.chain
        pix_fmt = "gray" if mode == "L" else "rgb24"
        video, thumbs = self._video_args(done, graph)
        args = [*self.input_args, "-i", str(self.film), *video, "-an", "-sn", "-dn", "-fps_mode", "passthrough",
                "-f", "rawvideo", "-pix_fmt", pix_fmt, "pipe:1", *thumbs]
        save = image_saver(self.ext, self.quality)
        nbytes = size[0] * size[1] * (1 if mode == "L" else 3)
        workers = max(1, min(4, os.cpu_count() or 2))
        index = done
        with Ffmpeg(args) as run, ThreadPoolExecutor(workers) as pool:
            pending: deque[Future[None]] = deque()
            try:
                while len(data := run.stdout.read(nbytes)) == nbytes:
                    index += 1
                    path = self.out / f"{index:06d}.{self.ext}"
                    pending.append(pool.submit(write_frame, data, size, mode, steps, path, save))
                    while len(pending) >= 2 * workers:
                        pending.popleft().result()
                        bar.advance()
                while pending:
                    pending.popleft().result()
                    bar.advance()
            except BaseException:
                for f in pending:
                    f.cancel()
                raise
            if run.wait() != 0:
                raise run.fail(self.film, "decoding frames")
            return decode_stats(run.log_lines())

    # --- damage and index -----------------------------------------------------------------------

    def _check_damage(self, stats: DecodeStats, count: int) -> list[int]:
        """Warn about damaged films; drop frames the fps filter only repeated to fill holes.

        Returns the source slot of each frame written (0-based, in order).
        """
        slots = list(range(count))
        # Short means the decoded frames cover less *time* than the film declares (a frame count times the
        # nominal rate would call every variable-frame-rate film short).
        picture = None
        if stats.pts:
            last = stats.last_duration or (1 / self.info.fps if self.info.fps else 0.0)
            picture = max(stats.pts) + last - min(stats.pts)
        short = (picture is not None and self.seconds is not None
                 and picture < self.seconds - max(2 / (self.info.fps or 25), 0.02 * self.seconds))
        if short and not stats.decode_errors:
            assert picture is not None  # short needs it
            sound = audio_end(self.film, self.input_args)
            if sound is not None and sound > picture + 1:  # the soundtrack just runs longer: not damage
                self.ctx.log(f"{self.film.name}: the picture ends at {picture:.1f} s while the sound runs to "
                             f"{sound:.1f} s; extracted the {count} frames the picture has.")
                return slots
        if not short and not stats.decode_errors:
            return slots
        covered = f"{picture:.2f} s" if picture is not None else "an unknown part"
        declared = f"{self.seconds:.2f} s" if self.seconds is not None else "the length"
        message = (f"{self.film} looks damaged: its {len(stats.pts)} decodable frames cover {covered} of the "
                   f"{declared} it declares ({stats.decode_errors} decode errors), so {count} frames were "
                   f"extracted where {self.expected} were expected.")
        if stats.decode_errors and stats.fps_dup and not self.source_rate:  # holes in the film, not a slow stretch
            total, padded = padded_slots(stats.pts, self.steady_rate, stats.last_duration)
            if padded and total == count:
                slots = self._drop_padding(count, set(padded))
                message += (f" {len(padded)} frames that would only repeat the last good frame across "
                            f"damaged stretches were left out ({len(slots)} frames kept).")
            elif padded:
                message += " Some frames around the damaged stretches may repeat."
        self.ctx.warn(message + " Re-encode or re-copy the film for a clean set.")
        return slots

    def _drop_padding(self, count: int, padded: set[int]) -> list[int]:
        """Delete padded frames and renumber the rest (marker makes an interruption redo cleanly)."""
        (self.out / RENUMBERING).touch()
        for k in padded:
            (self.out / f"{k + 1:06d}.{self.ext}").unlink()
        kept = [k for k in range(count) if k not in padded]
        for new, k in enumerate(kept, 1):
            if new != k + 1:
                os.replace(self.out / f"{k + 1:06d}.{self.ext}", self.out / f"{new:06d}.{self.ext}")
        return kept

    def _write_index(self, stats: DecodeStats, slots: list[int], written: int, starts: list[int] | None,
                     kept: list[bool] | None) -> None:
        """index.json, written last and atomically: its presence means the set is complete.

        Frames are streamed into the file one line each, so a feature film's index never sits
        in memory as one big JSON string.
        """
        if self.source_rate:
            rate = self.info.fps or 1.0
            exact = len(stats.pts) == len(slots)
            times = [self.start + (stats.pts[k] if exact else k / rate) for k in slots]
        else:  # the source frame each slot shows; nominal slot times if the log does not add up
            shown = slot_sources(stats.pts, self.steady_rate, stats.last_duration)
            if len(shown) != written:
                pictures = len(stats.pts)
                repeats = (f" The film holds only {pictures} distinct pictures for these {written} frames: each is "
                           "shown for longer than 1/fps (a slide show, or a codec such as cinepak that stores "
                           "a frame only when the picture changes), so many frames repeat the one before."
                           if pictures < written else "")
                self.ctx.warn(f"{self.film.name}: {written} frames extracted, but the film's timing did not show "
                              f"which of its pictures each one is.{repeats} index.json gives every frame its "
                              "nominal time, start + k / fps.")
                shown = [k / self.steady_rate for k in range(written)]
            times = [self.start + shown[k] for k in slots]
        header = {
            "count": len(slots),
            "fps": self.fps,
            "format": self.ext,
            "width": self.out_size[0] if self.out_size else None,
            "height": self.out_size[1] if self.out_size else None,
            "start": self.start,
            "end": self.end,
            "expected": self.expected,
            "source": self.info.to_dict(),
            "decoded_source_frames": len(stats.pts) if self.source_rate else stats.fps_in,
            "decode_errors": stats.decode_errors,
            "chain": [{"use": step.name, "options": opts} for step, opts in self.chain],
            "shots": None if starts is None else len(starts),
            "kept": len(slots) if kept is None else sum(kept),
            "dedupe": self.dedupe,
        }
        shot = shot_of(starts, len(times)) if starts is not None else None
        if starts is not None:  # before index.json, whose presence means "complete"
            step = 1 / self.frame_rate
            with atomic_path(self.out / "shots.json") as tmp:
                shots = shot_list(starts, times, step, self.info.fps, kept)
                tmp.write_text(json.dumps({"film": self.film.name, "rate": self.info.fps, "shots": shots}, indent=1))
        with atomic_path(self.out / "index.json") as tmp, open(tmp, "w") as f:
            f.write(json.dumps(header, indent=1, default=str)[:-2] + ',\n "frames": [')
            for i, t in enumerate(times, 1):
                entry: dict[str, Any] = {"index": i, "file": f"{i:06d}.{self.ext}", "time": round(t, 6)}
                if shot is not None:
                    entry["shot"] = int(shot[i - 1])
                if kept is not None:
                    entry["kept"] = kept[i - 1]
                f.write(("\n  " if i == 1 else ",\n  ") + json.dumps(entry))
            f.write("\n ]\n}\n")
        parts = [f"{len(times)} frames"] + ([f"{len(starts)} shot{'s' * (len(starts) != 1)}"] if starts else [])
        if kept is not None:
            parts.append(f"kept {sum(kept)} (dropped {len(kept) - sum(kept)} near copies)")
        self.ctx.log(", ".join(parts))


# --- helpers shared by both paths -------------------------------------------------------------------


def plan_chain(chain: Chain, info: VideoInfo) -> tuple[list[str] | None, tuple[int, int] | None, str]:
    """Each step's ffmpeg filter (None if any step is Python-only), the output size and mode.

    Size and mode come from running the transforms on a blank frame of the display size: cheap,
    and it tells each next step what it receives, exactly as the Python path would.
    """
    width, height, sar = info.width, info.height, info.sar
    image = Image.new("RGB", display_size(width, height, sar))
    if not chain and image.size != (width, height):  # no step to take the pixel aspect into account
        return [f"scale={image.width}:{image.height},setsar=1"], image.size, "RGB"
    filters: list[str] | None = []
    for step, opts in chain:
        fragment = step.ffmpeg_filter(opts, width, height, sar)
        if fragment is None:
            filters = None
        elif filters is not None:
            filters.append(fragment)
        try:
            image = step.transform(image, opts)
        except NotImplementedError:
            if fragment is None:
                raise CinemlError(f"Preprocess step {step.name!r} implements neither transform() nor "
                                  "ffmpeg_filter(); its plugin is incomplete.") from None
            return filters, None, "RGB"  # ffmpeg-only step: size unknown, but ffmpeg knows
        width, height, sar = image.width, image.height, (1, 1)
    return filters, image.size, image.mode


def resume_point(folder: Path, ext: str) -> int:
    """Number of complete frames 000001..N in ``folder``; removes temp files and frames after a gap.

    An interrupted renumbering (see ``_drop_padding``) cannot be trusted: redo from scratch.
    """
    if (folder / RENUMBERING).exists():
        shutil.rmtree(folder)
        folder.mkdir(parents=True)
        return 0
    frame = re.compile(rf"^(\d{{6}})\.{re.escape(ext)}$")
    numbers = set()
    for entry in folder.iterdir():
        if entry.name.endswith(".tmp"):
            entry.unlink()
        elif m := frame.match(entry.name):
            numbers.add(int(m[1]))
    n = 0
    while n + 1 in numbers:
        n += 1
    for k in numbers - set(range(1, n + 1)):
        (folder / f"{k:06d}.{ext}").unlink()
    return n


def image_saver(ext: str, quality: int) -> Callable[[Image.Image, Path], None]:
    """Pillow encoder for the fallback path (PNG at a fast level: Pillow's default is ~4x slower)."""
    if ext == "jpg":  # JPEG has no alpha: flatten anything that is not RGB or L
        return lambda img, path: (img if img.mode in ("RGB", "L") else img.convert("RGB")).save(
            path, "JPEG", quality=quality)
    if ext == "png":
        return lambda img, path: img.save(path, "PNG", compress_level=1)
    return lambda img, path: img.save(path, "WEBP", quality=quality, method=4)


def write_frame(data: bytes, size: tuple[int, int], mode: str, steps: Chain, path: Path,
                save: Callable[[Image.Image, Path], None]) -> None:
    """Transform one raw frame and write it atomically (runs in the encoder pool)."""
    image = Image.frombuffer(mode, size, data, "raw", mode, 0, 1)
    for step, opts in steps:
        try:
            image = step.transform(image, opts)
        except Exception as exc:
            raise CinemlError(f"Preprocess step {step.name!r} failed on frame {path.name} "
                              f"({type(exc).__name__}: {exc}). Fix its options or its plugin, then "
                              "run again: the frames already written are kept.") from exc
    tmp = path.with_name(f".{path.name}.tmp")
    save(image, tmp)
    os.replace(tmp, path)


# --- hooks ----------------------------------------------------------------------------------------


def aspect_name(info: VideoInfo) -> str:
    """The display aspect ratio as people say it: 4:3, 16:9, 1.85:1."""
    ratio = info.display_width / info.display_height
    for name, value in (("4:3", 4 / 3), ("16:9", 16 / 9), ("1:1", 1.0), ("3:2", 1.5), ("5:4", 1.25),
                        ("9:16", 9 / 16), ("3:4", 0.75)):
        if abs(ratio - value) < 0.01:
            return name
    return f"{ratio:.2f}:1"


@hookimpl
def register_extractors(register: Any) -> None:
    register(FpsExtractor())


@hookimpl
def suggest_settings(film: Path) -> dict[str, tuple[Any, str]]:
    """``cineml new --film``: train on one channel when the film is black and white."""
    info = probe(film)
    level = chroma_level(film, info)
    grey = level <= GREY_CHROMA
    why = (f"the film is black and white (colour level {level:.1f})" if grey else
           f"the film is in colour (colour level {level:.1f}; black and white is below {GREY_CHROMA:g})")
    return {"preprocess.0.grayscale": (grey, why)}


@hookimpl
def register_commands(cli: Any) -> None:
    import click

    @cli.command("probe")
    @click.argument("film", type=click.Path(path_type=Path))
    @click.option("--shots", is_flag=True, help="Also find the film's shots (one decode pass) and list them.")
    @click.option("--fps", type=float, default=12.0, show_default=True,
                  help="With --shots: the frame rate to look at, as [extract] fps.")
    def probe_command(film: Path, shots: bool, fps: float) -> None:
        """Show what CineML sees in FILM: size, aspect ratio, frame rate, field order, duration, audio;
        with --shots, every shot with its first and last frame (at --fps), times and timecode."""
        from rich.console import Console
        from rich.markup import escape
        from rich.table import Table

        try:
            info = probe(film)
            found = _probe_shots(film, info, fps) if shots else None
        except CinemlError as exc:
            raise click.ClickException(str(exc)) from exc
        console = Console()
        console.print(str(film), markup=False, soft_wrap=True)  # a path, whole: no markup, never wrapped mid-word
        table = Table(show_header=False)
        dur = "unknown" if info.duration is None else f"{info.duration:.2f} s"
        rows = [("container", info.format), ("duration", dur),
                ("video", f"{info.codec} {info.pix_fmt}".strip()),
                ("stored size", f"{info.width}x{info.height} (SAR {info.sar[0]}:{info.sar[1]})"),
                ("display size", f"{info.display_width}x{info.display_height} ({aspect_name(info)})"),
                ("frame rate", "unknown" if info.fps is None else f"{info.fps:.3f} fps"),
                ("scan", "interlaced (deinterlaced on extraction)" if info.interlaced else "progressive"),
                ("frames", str(info.expected_frames or "unknown")),
                ("at 12 fps", "unknown" if info.duration is None
                 else f"{fps_frame_count(info.duration, 12)} frames (fps = 12 in [extract])"),
                ("audio", "; ".join(info.audio) or "none")]
        for key, value in rows:
            table.add_row(key, escape(value))  # "[extract]" is text, not markup
        console.print(table)
        if found is not None:
            listing = Table("shot", "frames", "start", "end", "timecode", title=f"{len(found)} shots at {fps:g} fps")
            for shot in found:
                listing.add_row(str(shot["shot"] + 1), f"{shot['first']}-{shot['last']}", f"{shot['start']:.2f} s",
                                f"{shot['end']:.2f} s", shot["timecode"])
            console.print(listing)


def _probe_shots(film: Path, info: VideoInfo, fps: float) -> list[dict[str, Any]]:
    from cineml import Progress

    total = None if info.duration is None else fps_frame_count(info.duration, fps)
    with Progress()("Finding shots", total=total, unit="frames") as bar:
        return film_shots(film, fps, bar)
