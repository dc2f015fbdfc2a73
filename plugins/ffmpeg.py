"""The bundled ffmpeg: find it, probe films, and run it with errors an artist can act on.

CineML uses the ffmpeg binary shipped with ``imageio-ffmpeg`` (there is no ffprobe in it), so
probing parses the stream summary that ``ffmpeg -hide_banner -i FILM`` prints on stderr.
"""

from __future__ import annotations

import math
import os
import re
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import IO, Any

from cineml import CinemlError

# Demuxers that read one still picture, not a film.
_STILL_FORMATS = re.compile(r"(_pipe$|^image2$|^tty$)")
_STILL_CODECS = {"ansi"}


@lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with imageio-ffmpeg (or named by IMAGEIO_FFMPEG_EXE)."""
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except Exception as exc:  # not installed, or no binary for this platform
        raise CinemlError(
            f"CineML could not find its ffmpeg binary ({exc}). Reinstall it with "
            "`pip install --force-reinstall imageio-ffmpeg`, or point the IMAGEIO_FFMPEG_EXE "
            "environment variable at an ffmpeg executable.") from exc


@dataclass
class VideoInfo:
    """What CineML needs to know about a film before extracting frames from it."""

    path: str
    format: str  # demuxer name(s), e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    duration: float | None  # seconds (container duration, 10 ms resolution)
    start: float
    codec: str
    pix_fmt: str
    width: int  # stored size, as frames reach ffmpeg's filters (after any display rotation)
    height: int
    sar: tuple[int, int]  # sample (pixel) aspect ratio
    display_width: int  # the size it is meant to be seen at (square pixels)
    display_height: int
    fps: float | None  # nominal frame rate
    bitrate_kbps: int | None = None
    audio: list[str] = field(default_factory=list)  # one short description per audio stream
    size_bytes: int = 0
    rotation: int = 0  # display rotation in degrees (phone footage); ffmpeg applies it on decode
    interlaced: bool = False  # fields ("top first", "bottom first"): a PAL/NTSC DVD, a broadcast recording

    @property
    def expected_frames(self) -> int | None:
        """Coded frames the header promises (duration x fps), for progress and damage checks."""
        if self.duration is None or not self.fps:
            return None
        return round_half_away(self.duration * self.fps)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def round_half_away(x: float) -> int:
    """Round half away from zero, as ffmpeg's ``AV_ROUND_NEAR_INF`` does (397.5 -> 398)."""
    return int(math.floor(abs(x) + 0.5)) * (1 if x >= 0 else -1)


def fps_frame_count(seconds: float, fps: float) -> int:
    """Frames ffmpeg's ``fps`` filter makes from ``seconds`` of video: round-to-nearest per slot.

    784 s at 12 fps -> 9408; 10.2 s at 12 -> 122. (The ``-r`` output option differs: it emits
    about two more, with a burst of source frames at the start.)
    """
    return round_half_away(seconds * fps)


def display_size(width: int, height: int, sar: tuple[int, int]) -> tuple[int, int]:
    """The square-pixel size a stored ``width`` x ``height`` frame with ``sar`` is shown at.

    720x576 at SAR 16:15 -> 768x576. Width is stretched (rounded to the nearest pixel), the height
    kept, like ``scale=iw*sar:ih``. Every CineML path uses this one function, so the ffmpeg and
    Python paths agree to the pixel.
    """
    num, den = sar
    if num <= 0 or den <= 0 or num == den:
        return width, height
    return max(1, round_half_away(width * num / den)), height


# --- probing --------------------------------------------------------------------------------------


def _check_file(path: Path) -> None:
    """Raise a clear error for paths ffmpeg would only answer with a cryptic message."""
    try:
        path.stat()
    except PermissionError:  # a folder on the way cannot be entered
        raise CinemlError(f"Cannot reach the film {path}: permission denied on a folder in its path. Make the "
                          "folders readable (chmod u+rx) or copy the film somewhere you own.") from None
    except OSError:
        raise CinemlError(f"Film not found: {path}. Check the path (project.source in project.toml) "
                          "and that the file has not been moved or renamed.") from None
    if path.is_dir():
        raise CinemlError(f"{path} is a folder, not a film. Point CineML at a video file inside it.")
    if not os.access(path, os.R_OK):
        raise CinemlError(f"Cannot read the film {path}: permission denied. Make the file readable "
                          f"(e.g. `chmod u+r '{path}'`) or copy it somewhere you own.")
    if path.stat().st_size == 0:
        raise CinemlError(f"The film {path} is empty (0 bytes): it was probably not copied or "
                          "downloaded completely. Copy it again.")


def probe(path: str | os.PathLike[str]) -> VideoInfo:
    """Describe a film: duration, fps, stored and display size, codec, audio streams.

    Raises :class:`CinemlError` naming the file when it is missing, unreadable, empty, not a
    video (text, a still image, a truncated mp4 without its moov atom) or has no video stream.
    """
    path = Path(path)
    _check_file(path)
    result = subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path.resolve())],
                            capture_output=True, text=True, errors="replace")
    info = parse_probe(result.stderr, path)
    info.size_bytes = path.stat().st_size
    return info


_INPUT = re.compile(r"^Input #0, (?P<fmt>.+?), from '")
_DURATION = re.compile(r"^\s*Duration: (?P<d>[\d:.]+|N/A)(?:, start: (?P<s>-?[\d.]+))?"
                       r"(?:, bitrate: (?P<b>\d+) kb/s)?")
_STREAM = re.compile(r"^\s*Stream #0:(?P<idx>\d+)[^:]*: (?P<kind>Video|Audio|Subtitle|Data|Attachment): "
                     r"(?P<rest>.*)$")
_SIZE = re.compile(r"(?:^|[ ,])(?P<w>\d+)x(?P<h>\d+)(?=[ ,\[]|$)")
_SAR = re.compile(r"SAR (?P<n>\d+):(?P<d>\d+)")
_FPS = re.compile(r"(?P<v>[\d.]+)(?P<k>k?) fps")
_TBR = re.compile(r"(?P<v>[\d.]+)(?P<k>k?) tbr")
_ROTATION = re.compile(r"(?i)display ?matrix: rotation of (?P<deg>-?[\d.]+) degrees")


def _parse_duration(text: str) -> float | None:
    if text == "N/A":
        return None
    h, m, s = text.split(":")
    return int(h) * 3600 + int(m) * 60 + float(s)


def _parse_rate(match: re.Match[str] | None) -> float | None:
    """ffmpeg prints rates to 2 decimals (23.98); snap NTSC-style rates back to n*1000/1001."""
    if match is None:
        return None
    value = float(match["v"]) * (1000 if match["k"] else 1)
    for base in (24, 30, 48, 60, 120):
        ntsc = base * 1000 / 1001
        if abs(value - ntsc) < 0.006:
            return ntsc
    return value


def _split_top(text: str) -> list[str]:
    """Split a stream description on commas that are not inside parentheses."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    parts.append(cur.strip())
    return parts


def parse_probe(stderr: str, path: Path) -> VideoInfo:
    """Turn ``ffmpeg -i`` stderr into a :class:`VideoInfo` (or a clear :class:`CinemlError`)."""
    fmt = duration = bitrate = None
    start = 0.0
    in_video = False
    video: str | None = None
    rotation = 0
    audio: list[str] = []
    for line in stderr.splitlines():
        if m := _INPUT.match(line):
            fmt = m["fmt"]
        elif m := _DURATION.match(line):
            duration = _parse_duration(m["d"])
            start = float(m["s"] or 0)
            bitrate = int(m["b"]) if m["b"] else None
        elif m := _STREAM.match(line):
            in_video = m["kind"] == "Video" and video is None and "(attached pic)" not in m["rest"]
            if in_video:
                video = m["rest"]
            elif m["kind"] == "Audio":
                parts = _split_top(m["rest"])
                audio.append(", ".join([parts[0].split(" ")[0], *parts[1:3]]))
        elif (m := _ROTATION.search(line)) and in_video:
            rotation = round(float(m["deg"])) % 360
    if fmt is None:
        reason = _error_reason(stderr)
        looks = _looks_like(path)
        hint = (" The mp4 has no moov atom: it is truncated (an interrupted copy or download, or a "
                "recording that was not stopped cleanly). Copy it again or re-export it."
                if "moov atom not found" in stderr and looks == "mp4" else
                f" It is {looks}, whatever its name says." if looks != "mp4" and looks else
                " Check that it really is a video (mp4, mov, mkv, avi, ...) and that it plays.")
        raise CinemlError(f"{path} is not a video ffmpeg can read ({reason}).{hint}")
    if video is None:
        raise CinemlError(f"{path} has no video stream (ffmpeg sees: {fmt}"
                          f"{', ' + str(len(audio)) + ' audio stream(s)' if audio else ''}). "
                          "Use a file that contains moving pictures.")
    parts = _split_top(video)
    codec = parts[0].split(" ")[0]
    if _STILL_FORMATS.search(fmt) or codec in _STILL_CODECS:
        raise CinemlError(f"{path} is a still image or text ({fmt}, {codec}), not a film. "
                          "Give CineML a video file; to use stills, make a video from them first.")
    size = next((m for p in parts[1:] if (m := _SIZE.search(p))), None)
    if size is None:
        raise CinemlError(f"{path}: could not read the picture size of its video stream "
                          f"({video.strip()}). Re-encode it (e.g. to H.264 mp4) and try again.")
    width, height = int(size["w"]), int(size["h"])
    pix_fmt = parts[1].split("(")[0].strip() if len(parts) > 1 and not _SIZE.search(parts[1]) else ""
    interlaced = bool(len(parts) > 1 and re.search(r"\b(top|bottom)( coded)? first", parts[1]))
    sar_m = _SAR.search(video)
    sar = (int(sar_m["n"]), int(sar_m["d"])) if sar_m else (1, 1)
    if sar[0] == 0 or sar[1] == 0:
        sar = (1, 1)
    else:
        f = Fraction(*sar)
        sar = (f.numerator, f.denominator)
    if rotation % 180 == 90:  # ffmpeg's autorotate turns the frames on their side before filtering
        width, height, sar = height, width, (sar[1], sar[0])
    dw, dh = display_size(width, height, sar)
    fps = _parse_rate(_FPS.search(video)) or _parse_rate(_TBR.search(video))
    return VideoInfo(path=str(path), format=fmt, duration=duration, start=start, codec=codec,
                     pix_fmt=pix_fmt, width=width, height=height, sar=sar, display_width=dw,
                     display_height=dh, fps=fps, bitrate_kbps=bitrate, audio=audio, rotation=rotation,
                     interlaced=interlaced)


def _looks_like(path: Path) -> str:
    """What a file's first bytes say it is: "mp4" (an ISO media box), "a text file", or "" (unknown)."""
    try:
        with open(path, "rb") as f:
            head = f.read(512)
    except OSError:
        return ""
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"free", b"wide", b"skip"):
        return "mp4"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return ""
    return "a text file" if text and all(c.isprintable() or c.isspace() for c in text) else ""


def _error_reason(stderr: str) -> str:
    """The most telling line of a failed ffmpeg run, without the [tag @ 0x...] prefix."""
    lines = [re.sub(r"^\[[^\]]*\]\s*", "", ln).strip() for ln in stderr.splitlines() if ln.strip()]
    for key in ("moov atom not found", "Invalid data found", "No such file", "Permission denied"):
        for ln in lines:
            if key in ln:
                return ln
    return lines[-1] if lines else "no output"


# --- running ffmpeg -------------------------------------------------------------------------------


def die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: kill ffmpeg if CineML dies (kill -9), so no orphan keeps writing frames."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class Ffmpeg:
    """One ffmpeg process: stdout is a pipe for the caller, stderr goes to a temporary file.

    Writing stderr to a file (not a pipe) means a chatty ffmpeg can never block on a full pipe,
    and the whole log is there to parse afterwards. Use as a context manager: leaving the block
    early (an error, Ctrl-C) kills ffmpeg.
    """

    def __init__(self, args: Sequence[str], *, loglevel: str = "verbose") -> None:
        self.args = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", loglevel, *args]
        self._log: IO[bytes] = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            self.args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._log,
            preexec_fn=die_with_parent if sys.platform.startswith("linux") else None)
        self.stdout: IO[bytes] = self.proc.stdout  # type: ignore[assignment]

    def __enter__(self) -> Ffmpeg:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.stdout.close()

    def wait(self) -> int:
        self.stdout.close()
        return self.proc.wait()

    def log_lines(self) -> Iterator[str]:
        """ffmpeg's log, line by line (streamed: a per-frame log of a long film stays on disk)."""
        self._log.seek(0)
        for raw in self._log:
            yield raw.decode("utf-8", "replace")

    def fail(self, film: Path, what: str) -> CinemlError:
        """An error for a failed run, quoting ffmpeg's most telling line."""
        self._log.seek(0, os.SEEK_END)
        self._log.seek(max(0, self._log.tell() - 20_000))
        tail = self._log.read().decode("utf-8", "replace")
        return CinemlError(f"ffmpeg failed while {what} from {film} (exit {self.proc.returncode}: "
                           f"{_error_reason(tail)}). Check that the film plays; if it does, "
                           "re-encode it (e.g. to H.264 mp4) and run again.")


@dataclass
class DecodeStats:
    """What ffmpeg's verbose log says about a finished run."""

    decoded: int | None = None  # source frames decoded
    decode_errors: int = 0
    fps_in: int | None = None  # frames into / out of the fps filter, and its duplicates
    fps_out: int | None = None
    fps_dup: int = 0
    pts: list[float] = field(default_factory=list)  # showinfo pts_time of each decoded frame
    last_duration: float | None = None  # how long the last one is shown (where the film ends), as ffmpeg reckons it


_DECODED = re.compile(r"Input stream #\d+:\d+ \(video\):.*?(\d+) frames decoded; (\d+) decode errors")
_FPS_STATS = re.compile(r"Parsed_fps_\d+ @ [^\]]*\] (\d+) frames in, (\d+) frames out; "
                        r"\d+ frames dropped, (\d+) frames duplicated")
_SHOWINFO = re.compile(r"Parsed_showinfo_\d+ @ [^\]]*\] n:\s*\d+ pts:\s*(-?\d+) pts_time:(-?[\d.e+-]+)"
                       r"(?:\s+duration:\s*(-?\d+)\s+duration_time:(-?[\d.e+-]+))?")


def decode_stats(lines: Iterable[str]) -> DecodeStats:
    """Parse the end-of-run statistics (``-loglevel verbose``) and any showinfo lines."""
    stats = DecodeStats()
    ticks = None  # the previous frame's pts in time-base ticks
    for line in lines:
        if m := _SHOWINFO.search(line):
            pts, seconds = int(m[1]), float(m[2])
            stats.last_duration = float(m[4]) if m[4] else None
            if m[3] == "1" and ticks is not None and pts - ticks > 2 and stats.pts:
                # ffmpeg's own rule: a 1-tick duration after a longer gap is one the demuxer made up (an AVI
                # slide show, cinepak storing only changed pictures), so the frame lasts as long as that gap
                stats.last_duration = seconds - stats.pts[-1]
            ticks = pts
            stats.pts.append(seconds)
        elif m := _DECODED.search(line):
            stats.decoded, stats.decode_errors = int(m[1]), int(m[2])
        elif (m := _FPS_STATS.search(line)) and (int(m[1]) or stats.fps_in is None):
            # (ffmpeg also logs an empty graph it built while probing: 0 frames in)
            stats.fps_in, stats.fps_out, stats.fps_dup = int(m[1]), int(m[2]), int(m[3])
    return stats


def audio_end(film: Path, input_args: Sequence[str]) -> float | None:
    """Seconds until the first audio stream's last packet (relative to ``-ss``), without decoding;
    None when there is no audio. A container's duration is its longest stream's, so a film whose
    sound outlasts its picture declares more seconds than it has frames for."""
    with Ffmpeg([*input_args, "-i", str(film), "-map", "0:a:0?", "-c", "copy", "-f", "null", "-",
                 "-progress", "pipe:1", "-nostats"], loglevel="error") as run:
        end = None
        for line in run.stdout:
            if line.startswith(b"out_time_us=") and line[12:].strip().isdigit():
                end = int(line[12:]) / 1e6
        run.wait()
    return end or None


def _usual_step(pts: Sequence[float], fps: float) -> float:
    """The film's usual frame interval (median gap), for a film without logged durations."""
    gaps = sorted(b - a for a, b in zip(pts, pts[1:]))
    return gaps[len(gaps) // 2] if gaps else 1 / fps


def _slot_range(pts: Sequence[float], fps: float, last: float | None) -> tuple[int, int]:
    """First and one-past-last output slot of the ``fps`` filter for sorted timestamps; the film ends
    ``last`` (the last frame's duration, else the usual interval) after its last timestamp."""
    end_time = pts[-1] + (last or _usual_step(pts, fps))
    return round_half_away(pts[0] * fps), round_half_away(end_time * fps)


def slot_sources(pts: Sequence[float], fps: float, last: float | None = None) -> list[float]:
    """The source timestamp each output slot of the ``fps`` filter shows, by the filter's own rule:
    slot n shows the last frame whose timestamp, rounded half away to the output rate, is <= n
    (so at 12 fps from 25 fps film, slot 3 at 0.25 s shows the frame of 0.24 s; ties go later).
    The film ends ``last`` (the last frame's duration) after its last timestamp."""
    if not pts:
        return []
    pts = sorted(pts)
    first, end = _slot_range(pts, fps, last)
    shown, j = [], 0
    for n in range(first, end):
        while j + 1 < len(pts) and round_half_away(pts[j + 1] * fps) <= n:
            j += 1
        shown.append(pts[j])
    return shown


def padded_slots(pts: Sequence[float], fps: float, last: float | None = None) -> tuple[int, list[int]]:
    """Simulate the ``fps`` filter on decoded timestamps; find slots filled only because of a gap.

    Returns (slot count, 0-based output slots that repeat the previous frame because the frames
    that belonged there were lost to damage). A slot that repeats a frame because the film is
    slower than ``fps`` is not padding. Slot count lets the caller check the simulation matches.
    """
    if len(pts) < 2:
        return len(pts), []
    pts = sorted(pts)
    step = _usual_step(pts, fps)
    first, end = _slot_range(pts, fps, last)
    padded: list[int] = []
    for a, b in zip(pts, pts[1:]):
        if b - a > 1.5 * step:
            lo = max(round_half_away(a * fps) + 1, round_half_away((a + step) * fps))
            padded.extend(k - first for k in range(lo, round_half_away(b * fps)))
    return end - first, padded


# --- colour ---------------------------------------------------------------------------------------


GREY_CHROMA = 4.0  # mean |U - 128| + |V - 128| at or below this: black and white (a print's faint tint and
# the encoder's noise stay below: the demo film measures 1.9; colour footage measures tens)


def chroma_level(film: Path, info: VideoInfo, samples: int = 8) -> float:
    """How coloured a film is: the mean distance of its chroma from grey (0 for black and white), over
    ``samples`` frames spread through it, decoded small. Films stored in a colour format are often black and
    white (a digitised 1960s print), so the pixel format alone cannot tell."""
    import numpy as np

    if info.pix_fmt.startswith(("gray", "mono")):
        return 0.0
    duration = info.duration or 0.0
    levels = []
    for k in range(samples):
        at = duration * (k + 0.5) / samples
        args = ["-ss", f"{at:.3f}", "-i", str(film), "-frames:v", "1", "-vf", "scale=64:-2,format=yuv444p",
                "-f", "rawvideo", "-"]
        with Ffmpeg(args, loglevel="error") as ff:
            data = ff.stdout.read()
        if not data:
            continue
        plane = len(data) // 3
        chroma = np.frombuffer(data[plane:], dtype=np.uint8).astype(np.float32)
        levels.append(float(np.abs(chroma - 128).mean()) * 2)
    if not levels:
        raise CinemlError(f"Could not decode a frame of {film} to tell whether it is in colour.")
    return float(np.mean(levels))
