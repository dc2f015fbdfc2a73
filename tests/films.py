"""Make real test films with the bundled ffmpeg (lavfi testsrc2), and damaged copies of them.

Import from any test: ``from films import make_film`` (tests/ is on sys.path under pytest's
default rootdir-relative import mode), e.g. ``make_film(tmp_path / "a.mp4", frames=48, fps=24)``.
"""

from __future__ import annotations

import random
import subprocess
from fractions import Fraction
from pathlib import Path

import imageio_ffmpeg

FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def ffmpeg(*args: str) -> None:
    """Run the bundled ffmpeg quietly; raise with its stderr on failure."""
    result = subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args],
                            capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"ffmpeg {' '.join(args)} failed:\n{result.stderr}")


def make_film(path: Path, *, seconds: float | None = None, frames: int | None = None,
              fps: str | float = 25, size: tuple[int, int] = (160, 120), sar: str | None = None,
              audio: bool = False, codec: str = "libx264", faststart: bool = True,
              gop: int | None = None, rotation: int | None = None) -> Path:
    """Write a testsrc2 film. Give ``frames`` (exact) or ``seconds`` (rounded to whole frames).

    ``fps`` may be a rational string ("24000/1001"); ``sar`` like "16/15" is stored in the
    stream; odd sizes use yuv444p (x264 needs even sizes for 4:2:0). ``faststart`` puts the moov
    atom first, so a truncated copy still opens (mid-stream damage) - without it, truncation
    loses the moov atom. ``rotation`` stores a display rotation (degrees), like phone footage.
    """
    rate = Fraction(str(fps))
    if frames is None:
        assert seconds is not None, "give seconds or frames"
        frames = round(seconds * rate)
    w, h = size
    odd = w % 2 or h % 2
    src = f"testsrc2=size={w + w % 2}x{h + h % 2}:rate={fps}"
    vf = [f"format=yuv444p,crop={w}:{h}:0:0"] if odd else []
    if sar:
        vf.append(f"setsar={sar}")
    args = ["-f", "lavfi", "-i", src]
    if audio:
        args += ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100"]
    args += ["-frames:v", str(frames), "-map", "0:v"]
    if vf:
        args += ["-vf", ",".join(vf)]
    args += ["-c:v", codec]
    args += ["-pix_fmt", "yuv444p" if odd else "yuv420p"]
    if codec == "libx264":
        args += ["-preset", "ultrafast"]
    if gop:
        args += ["-g", str(gop)]
    if audio:
        args += ["-map", "1:a", "-c:a", "aac", "-t", f"{float(frames / rate):.6f}"]
    if faststart and path.suffix in (".mp4", ".mov"):
        args += ["-movflags", "+faststart"]
    if rotation is None:
        ffmpeg(*args, str(path))
        return path
    plain = path.with_name(f"unrotated-{path.name}")
    ffmpeg(*args, str(plain))
    ffmpeg("-display_rotation", str(rotation), "-i", str(plain), "-c", "copy", str(path))
    plain.unlink()
    return path


def truncate(src: Path, dst: Path, fraction: float = 0.5) -> Path:
    """Copy the first ``fraction`` of the bytes (an interrupted copy or download)."""
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * fraction)])
    return dst


def garble(src: Path, dst: Path, at: float = 0.4, fraction: float = 0.15, seed: int = 1) -> Path:
    """Overwrite ``fraction`` of the file with random bytes starting at ``at`` (disk/transfer damage)."""
    data = bytearray(src.read_bytes())
    start, n = int(len(data) * at), int(len(data) * fraction)
    rng = random.Random(seed)
    data[start:start + n] = bytes(rng.getrandbits(8) for _ in range(n))
    dst.write_bytes(bytes(data))
    return dst


def make_image(path: Path, size: tuple[int, int] = (64, 48)) -> Path:
    """A still image (PNG/JPEG by suffix): something that is not a film."""
    ffmpeg("-f", "lavfi", "-i", f"testsrc2=size={size[0]}x{size[1]}", "-frames:v", "1", str(path))
    return path


def make_audio(path: Path, seconds: float = 1.0) -> Path:
    """An audio-only file: a valid container with no video stream."""
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440", "-t", str(seconds), str(path))
    return path


def add_sound(film: Path, dst: Path, seconds: float, broken: bool = False, seed: int = 2) -> Path:
    """``film``'s picture with a 440 Hz AAC soundtrack of ``seconds`` (longer than the picture: the
    container then declares the sound's length). ``broken`` fills every other AAC frame's payload with
    random bytes, keeping the ADTS headers, so the audio decoder errors while the file stays muxable."""
    aac = dst.with_suffix(".aac")
    ffmpeg("-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-c:a", "aac", "-f", "adts", str(aac))
    data, rng, pos, n = bytearray(aac.read_bytes()), random.Random(seed), 0, 0
    while broken and pos + 7 <= len(data):
        length = ((data[pos + 3] & 3) << 11) | (data[pos + 4] << 3) | (data[pos + 5] >> 5)
        if n % 2:
            data[pos + 7:pos + length] = bytes(rng.randrange(256) for _ in range(length - 7))
        pos, n = pos + length, n + 1
    aac.write_bytes(data)
    ffmpeg("-i", str(film), "-i", str(aac), "-map", "0:v", "-map", "1:a", "-c", "copy", str(dst))
    aac.unlink()
    return dst


def coded_film(path: Path, frames: int = 50, rate: float = 25, size: int = 16, vf: str | None = None,
               extra: tuple[str, ...] = (), codec: tuple[str, ...] = ("-c:v", "libx264", "-qp", "0",
                                                                      "-preset", "ultrafast")) -> Path:
    """A film whose frame i is grey level 5 i (mod 256), lossless: an extracted frame's level says which
    source frame it shows. ``vf`` can retime it (``setpts`` for variable frame rates)."""
    raw = b"".join(bytes([5 * i % 256]) * (size * size) for i in range(frames))
    args = ["-f", "rawvideo", "-pix_fmt", "gray", "-s", f"{size}x{size}", "-r", str(rate), "-i", "-"]
    subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-v", "error", "-y", *args, *(["-vf", vf] if vf else []),
                    *codec, *extra, str(path)], input=raw, check=True)
    return path


def source_times(film: Path) -> list[float]:
    """Every decoded frame's timestamp, as ffmpeg's showinfo reports it."""
    proc = subprocess.run([FFMPEG, "-hide_banner", "-nostdin", "-i", str(film), "-map", "0:V:0", "-vf", "showinfo",
                           "-f", "null", "-"], capture_output=True, text=True)
    import re

    return [float(t) for t in re.findall(r"pts_time:(\S+)", proc.stderr)]


#: Where the shots of :func:`cut_film` start (seconds): hard cut, hard cut, out of a dip to black, hard cut, hard
#: cut. Inside them: a 2-frame white flash (5.5 s), a slow pan (5-9 s), a frozen still (11.5-16.5 s).
CUT_FILM_CUTS = (2.0, 5.0, 9.5, 11.5, 16.5)


def cut_film(path: Path, size: tuple[int, int] = (160, 120)) -> Path:
    """An 18.5 s film at 25 fps whose shots start at ``CUT_FILM_CUTS``, with everything a cut detector
    must not call a cut: a flash, a slow pan, fades to and from black, a frozen still (identical frames)."""
    w, h = size
    shots = [
        f"testsrc2=size={w}x{h}:rate=25:duration=2",
        f"smptehdbars=size={w}x{h}:rate=25:duration=3,noise=alls=12:allf=t,"
        "lutyuv=y=250:enable='between(t,0.5,0.579)'",  # a 2-frame flash at 5.5 s
        f"nullsrc=size={3 * w}x{h}:rate=25:duration=4,geq=lum='128+60*sin(X/11)+50*cos(Y/5+X/23)':cb=128:cr=128,"
        f"crop={w}:{h}:x='t*{2 * w / 4}':y=0,fade=out:st=3.5:d=0.5",  # a pan across, fading out
        f"color=black:size={w}x{h}:rate=25:duration=0.5",
        f"testsrc=size={w}x{h}:rate=25:duration=2,hue=s=0,fade=in:st=0:d=0.5",
        f"rgbtestsrc=size={w}x{h}:rate=25:duration=5",  # a frozen still
        f"mandelbrot=size={w}x{h}:rate=25,trim=duration=2",
    ]
    chains = ";".join(f"{src},format=yuv420p,setsar=1,settb=1/25[s{i}]" for i, src in enumerate(shots))
    joined = "".join(f"[s{i}]" for i in range(len(shots)))
    ffmpeg("-filter_complex", f"{chains};{joined}concat=n={len(shots)}:v=1:a=0[v]", "-map", "[v]",
           "-c:v", "libx264", "-preset", "ultrafast", "-crf", "18", "-pix_fmt", "yuv420p", str(path))
    return path
