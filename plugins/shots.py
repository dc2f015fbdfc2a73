"""Shots and near copies, found from a 32x32 grey thumbnail of every extracted frame.

ffmpeg makes the thumbnails in the extraction's own decode pass (a second output of the same filter
graph, written beside the frames), so a film is read once. From them:

* **Cuts** (facts from PySceneDetect's content and adaptive detectors, with our own rules on top): frame k
  starts a shot when the *layout* of the picture changed from frame k-1 (the mean absolute difference of
  the two thumbnails, each normalised to zero mean and unit spread, so that fades, flicker and exposure
  changes leave it alone) by at least ``LAYOUT_CHANGE`` and ``RATIO`` times the median of its neighbours'
  changes (camera motion changes every frame a little, a cut changes one frame a lot; the median, because
  a rate near the film's skips or repeats a frame now and then), when the plain grey levels changed by at
  least ``MIN_CHANGE`` on average (noise on a near-blank frame is no cut), and when no picture of the
  quarter second before it comes back in the quarter second after (a flash, a passing occluder).
  A dip to black between two different pictures is a cut where the picture starts to come back (after the
  last of the blackest frames, so a fade-in belongs to its shot). Shots last
  at least half a second: a cut closer than that to the previous one is dropped.
* **Near copies** (``dedupe``): within a shot, a frame whose mean absolute difference from the last kept
  frame is below the threshold (grey levels, 0-255, on the thumbnail) is dropped. Never across a cut.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

THUMB = 32  # thumbnail side in pixels
THUMB_FILTER = f"scale={THUMB}:{THUMB}:flags=area,format=gray"
THUMB_BYTES = THUMB * THUMB
MIN_CHANGE = 8.0  # grey levels a cut changes at least (on average over the thumbnail)
RATIO = 3.0  # a cut's layout change is this many times its neighbours' (measured: cuts >= 3.4, pans <= 2.7)
WINDOW = 2  # neighbours on each side
LAYOUT_CHANGE = 0.5  # normalised difference (units of the picture's own spread) a cut changes at least
DARK = 16.0  # mean grey level at or below which a frame is black
TRANSIENT_SECONDS = 0.25  # a picture that comes back within this is a flash, not a cut
MIN_SHOT_SECONDS = 0.5


# --- the thumbnail files ----------------------------------------------------------------------------


def thumb_segment(folder: Path, first: int) -> Path:
    """Where ffmpeg writes the thumbnails of frames ``first``, ``first + 1``, ... (1-based)."""
    return folder / f".thumbs-{first:06d}.u8"


def _segments(folder: Path) -> list[tuple[int, Path]]:
    return sorted((int(p.name[8:14]), p) for p in folder.glob(".thumbs-[0-9]*.u8") if p.name[8:14].isdigit())


def resume_thumbs(folder: Path, frames: int) -> int:
    """Keep the thumbnails of frames 1..n that are complete on disk, n <= ``frames``, as one segment; return n.

    ffmpeg buffers the thumbnail file, so after a kill it may hold fewer frames than the images written:
    extraction then resumes from n (the caller deletes frames after it), and a resumed run computes each
    thumbnail from the same decoded frame as a clean run would, so shots come out identical.
    """
    data, expected = bytearray(), 1
    for first, path in _segments(folder):
        if first != expected:  # a gap: nothing after it can be placed
            break
        chunk = path.read_bytes()
        data += chunk[:len(chunk) - len(chunk) % THUMB_BYTES]
        expected = 1 + len(data) // THUMB_BYTES
        if len(chunk) % THUMB_BYTES:
            break
    keep = min(frames, len(data) // THUMB_BYTES)
    remove_thumbs(folder)
    if keep:
        path = thumb_segment(folder, 1)
        tmp = path.with_name(path.name + ".part")
        tmp.write_bytes(bytes(data[:keep * THUMB_BYTES]))
        tmp.replace(path)
    return keep


def read_thumbs(folder: Path) -> np.ndarray:
    """Every thumbnail in frame order, uint8 [N, 32, 32]."""
    parts = [np.fromfile(path, dtype=np.uint8) for _, path in _segments(folder)]
    data = np.concatenate(parts) if parts else np.zeros(0, np.uint8)
    return data[:len(data) - len(data) % THUMB_BYTES].reshape(-1, THUMB, THUMB)


def remove_thumbs(folder: Path) -> None:
    for path in folder.glob(".thumbs-*"):
        path.unlink()


# --- cuts ----------------------------------------------------------------------------------------------


def _normalised(thumbs: np.ndarray) -> np.ndarray:
    """Each thumbnail at zero mean and unit spread (a flat frame stays all zeros)."""
    x = thumbs.reshape(len(thumbs), -1).astype(np.float32)
    x -= x.mean(1, keepdims=True)
    return x / np.maximum(x.std(1, keepdims=True), 1.0)


def find_shots(thumbs: np.ndarray, rate: float) -> list[int]:
    """The index (0-based) of the first frame of every shot: ``[0, ...]`` for thumbnails at ``rate`` fps."""
    n = len(thumbs)
    if n < 2:
        return [0] if n else []
    x = thumbs.reshape(n, -1).astype(np.float32)
    z = _normalised(thumbs)
    change = np.r_[0.0, np.abs(np.diff(x, axis=0)).mean(1)]
    moved = np.r_[0.0, np.abs(np.diff(z, axis=0)).mean(1)]  # layout change from the frame before
    level = x.mean(1)
    dark = level <= DARK
    ahead = max(1, round(TRANSIENT_SECONDS * rate))

    def layout(a: int, b: int) -> float:
        return float(np.abs(z[a] - z[b]).mean())

    def transient(k: int) -> bool:
        """Does a picture from just before frame k come back within a quarter second (a flash, an occluder)?"""
        return any(layout(i, j) < LAYOUT_CHANGE for i in range(max(0, k - ahead), k)
                   for j in range(k, min(n, k + ahead)) if (i, j) != (k - 1, k))

    cuts = set()
    for k in range(1, n):
        if dark[k] or change[k] < MIN_CHANGE or moved[k] < LAYOUT_CHANGE:
            continue
        near = [moved[j] for j in range(max(1, k - WINDOW), min(n, k + WINDOW + 1)) if j != k]
        if near and moved[k] < RATIO * float(np.median(near)) or transient(k):
            continue
        cuts.add(k)
    k = 0
    while k < n:  # dips to black: a cut where the picture starts to come back, if it is another picture
        if not dark[k]:
            k += 1
            continue
        end = k
        while end < n and dark[end]:
            end += 1
        cuts.difference_update(range(k, end + 1))
        if 0 < k and end < n and layout(k - 1, end) >= LAYOUT_CHANGE:
            bottom = max(j for j in range(k, end) if level[j] <= level[k:end].min() + 2)  # the last blackest frame
            cuts.add(bottom + 1)
        k = end
    starts = [0]
    shortest = max(1, round(MIN_SHOT_SECONDS * rate))
    for k in sorted(cuts):
        if k - starts[-1] >= shortest:
            starts.append(k)
    return starts


def shot_of(starts: Sequence[int], count: int) -> np.ndarray:
    """The shot number (0-based) of each of ``count`` frames."""
    shot = np.zeros(count, dtype=np.int64)
    for number, first in enumerate(starts[1:], 1):
        shot[first:] = number
    return shot


# --- near copies ---------------------------------------------------------------------------------------


def dedupe(thumbs: np.ndarray, starts: Sequence[int], threshold: float) -> np.ndarray:
    """Which frames to keep (bool [N]): the first of every shot, then every frame that differs from the last
    kept one of its shot by at least ``threshold`` grey levels on average. 0 keeps every frame."""
    n = len(thumbs)
    keep = np.ones(n, dtype=bool)
    if threshold <= 0 or n == 0:
        return keep
    x = thumbs.reshape(n, -1).astype(np.float32)
    first = set(starts)
    last = 0
    for k in range(1, n):
        if k in first or float(np.abs(x[k] - x[last]).mean()) >= threshold:
            last = k
        else:
            keep[k] = False
    return keep


# --- the shot list -------------------------------------------------------------------------------------


def shot_list(starts: Sequence[int], times: Sequence[float], step: float, film_rate: float | None,
              kept: Sequence[bool] | None) -> list[dict[str, Any]]:
    """``shots.json``'s entries: index, first and last frame (1-based, like the files), start and end time in
    the film, the start's timecode at the film's own rate, and how many of its frames were kept.

    ``step`` is how long the last frame lasts (1 / fps), so a shot ends where the next one starts."""
    from cineml import smpte_timecode

    shots = []
    for number, first in enumerate(starts):
        stop = starts[number + 1] if number + 1 < len(starts) else len(times)
        end = times[stop] if stop < len(times) else times[-1] + step
        shots.append({"shot": number, "first": first + 1, "last": stop, "start": round(times[first], 6),
                      "end": round(end, 6), "timecode": smpte_timecode(times[first], film_rate or 1 / step),
                      "frames": stop - first, "kept": stop - first if kept is None else sum(kept[first:stop])})
    return shots


def film_shots(film: Path, fps: float, bar: Any = None) -> list[dict[str, Any]]:
    """The shots of ``film`` as extraction at ``fps`` would find them (``cineml probe --shots``): one decode to
    thumbnails, nothing written. ``bar`` (a progress bar) advances by one per frame."""
    from .ffmpeg import Ffmpeg, decode_stats, probe, slot_sources

    info = probe(film)
    args = ["-i", str(film), "-map", "0:V:0", "-an", "-sn", "-dn",
            "-vf", f"showinfo=checksum=0,fps={fps},{THUMB_FILTER}", "-fps_mode", "passthrough",
            "-f", "rawvideo", "pipe:1"]
    chunks = []
    with Ffmpeg(args) as run:
        while chunk := run.stdout.read(THUMB_BYTES * 64):
            chunks.append(chunk)
            if bar is not None:
                bar.advance(len(chunk) / THUMB_BYTES)
        if run.wait() != 0:
            raise run.fail(film, "finding shots")
        stats = decode_stats(run.log_lines())
    data = b"".join(chunks)
    thumbs = np.frombuffer(data[:len(data) - len(data) % THUMB_BYTES], np.uint8).reshape(-1, THUMB, THUMB)
    times = slot_sources(stats.pts, fps, stats.last_duration)
    if len(times) != len(thumbs):
        times = [k / fps for k in range(len(thumbs))]
    starts = find_shots(thumbs, fps)
    return shot_list(starts, times, 1 / fps, info.fps, None)
