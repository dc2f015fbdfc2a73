"""The ``synthetic`` source: a demo film CineML renders itself, so a new project needs no download.

An homage to "The Perfect Human" (Jørgen Leth, 1967): a black-and-white figure performing everyday
rituals (walking, raising its arms, turning its head, dancing, lying down, jumping) in a white,
boundless room, observed like a specimen. Everything is procedural and deterministic for a seed:
shapes are drawn with numpy (anti-aliased capsules and a pseudo-3D head), film grain and flicker
give the period look, the soundtrack is a numpy-synthesised melody and a murmuring "narrator".
Raw grey frames are piped into the bundled ffmpeg (libx264 yuv420p + AAC).
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import wave
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from cineml import CinemlError, Option, Source, StageContext, atomic_path, hookimpl

from .ffmpeg import die_with_parent

# --- The figure -----------------------------------------------------------------------------------
# World units are metres; x to the right, y up, the floor at y = 0. Limb angles are absolute:
# 0 hangs straight down, +pi/2 points to +x, pi points up.

TORSO, NECK, HEAD_RX, HEAD_RY = 0.52, 0.07, 0.10, 0.125
UPPER_ARM, FOREARM, THIGH, SHIN = 0.30, 0.28, 0.45, 0.44
SHOULDER_W, HIP_W = 0.17, 0.085

INK, SUIT, FAR, SKIN, HAIR, FEATURE = 0.05, 0.10, 0.24, 0.80, 0.12, 0.18


@dataclass(frozen=True)
class Pose:
    """One instant of a figure: hip position, torso lean, limb angles and head orientation."""

    x: float = 0.0
    y: float = 0.0  # hip height; see grounded()
    facing: float = 0.0  # 0: profile looking to +x, 1: facing the camera
    torso: float = 0.0  # lean from vertical, + towards +x
    bow: float = 0.0  # front-view bow towards the camera (foreshortens the torso)
    arms: tuple[tuple[float, float], tuple[float, float]] = ((0.0, 0.0), (0.0, 0.0))  # (upper, fore)
    legs: tuple[tuple[float, float], tuple[float, float]] = ((0.0, 0.0), (0.0, 0.0))  # (thigh, shin)
    yaw: float = 0.0  # head turn: 0 looks at the camera, +pi/2 looks to +x
    pitch: float = 0.0  # head nod, + looks down
    tilt: float = 0.0  # head roll relative to the torso
    blink: float = 0.0  # 1: eyes shut
    woman: bool = False


def grounded(pose: Pose, lift: float = 0.0) -> Pose:
    """Put the lower foot on the floor (plus ``lift`` for jumps)."""
    reach = max(THIGH * math.cos(t) + SHIN * math.cos(s) for t, s in pose.legs)
    return replace(pose, y=reach + 0.05 + lift)


def _dir(angle: float) -> np.ndarray:
    return np.array([math.sin(angle), -math.cos(angle)])


def _smooth(a: float, b: float, t: float) -> float:
    """Smoothstep from 0 at ``a`` to 1 at ``b``."""
    u = min(max((t - a) / (b - a), 0.0), 1.0)
    return u * u * (3 - 2 * u)


@dataclass(frozen=True)
class Camera:
    """Maps world metres to pixels: ``scale`` is pixels per metre as a fraction of frame height."""

    cx: float
    cy: float
    scale: float
    horizon: float | None  # wall/floor seam as a fraction of frame height (None: off screen)

    def px(self, width: int, height: int, p: np.ndarray,
           jitter: tuple[float, float] = (0, 0)) -> tuple[float, float]:
        s = self.scale * height
        return (width / 2 + (p[0] - self.cx) * s + jitter[0], height / 2 - (p[1] - self.cy) * s + jitter[1])


# --- Rasterising ----------------------------------------------------------------------------------


def _box(img: np.ndarray, x0: float, y0: float, x1: float, y1: float):
    """Integer pixel box clipped to the image, with broadcastable pixel-centre coordinates."""
    h, w = img.shape
    i0, i1 = max(int(math.floor(y0)), 0), min(int(math.ceil(y1)) + 1, h)
    j0, j1 = max(int(math.floor(x0)), 0), min(int(math.ceil(x1)) + 1, w)
    if i0 >= i1 or j0 >= j1:
        return None
    ys = np.arange(i0, i1, dtype=np.float32)[:, None] + 0.5
    xs = np.arange(j0, j1, dtype=np.float32)[None, :] + 0.5
    return (slice(i0, i1), slice(j0, j1)), xs, ys


def capsule(img: np.ndarray, a: tuple[float, float], b: tuple[float, float], r0: float, r1: float,
            value: float) -> None:
    """Paint an anti-aliased tapered capsule (radius r0 at ``a``, r1 at ``b``) in place."""
    rmax = max(r0, r1) + 1.5
    box = _box(img, min(a[0], b[0]) - rmax, min(a[1], b[1]) - rmax, max(a[0], b[0]) + rmax,
               max(a[1], b[1]) + rmax)
    if box is None:
        return
    sl, xs, ys = box
    dx, dy = b[0] - a[0], b[1] - a[1]
    px, py = xs - a[0], ys - a[1]
    h = np.clip((px * dx + py * dy) / max(dx * dx + dy * dy, 1e-9), 0.0, 1.0)
    d = np.hypot(px - dx * h, py - dy * h)
    alpha = np.clip(r0 + (r1 - r0) * h - d + 0.5, 0.0, 1.0)
    region = img[sl]
    region += (value - region) * alpha


def shadow(img: np.ndarray, cx: float, cy: float, rx: float, ry: float, strength: float) -> None:
    """Darken a soft elliptical floor shadow in place."""
    if strength <= 0 or rx < 0.5:
        return
    box = _box(img, cx - 2.5 * rx, cy - 2.5 * ry, cx + 2.5 * rx, cy + 2.5 * ry)
    if box is None:
        return
    sl, xs, ys = box
    q = ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2
    img[sl] *= 1.0 - strength * np.exp(-q)


def head(img: np.ndarray, c: tuple[float, float], rx: float, ry: float, roll: float, pose: Pose) -> None:
    """Paint the head as a lit ellipsoid seen from the front, turned by yaw/pitch, rolled by ``roll``.

    Each pixel of the ellipse is lifted onto the front of a unit sphere and rotated into the head's
    own frame, so hairline, eyes, brows and mouth foreshorten and hide naturally as it turns.
    """
    r = max(rx, ry) + 2.0
    box = _box(img, c[0] - r * 1.25, c[1] - r * 1.25, c[0] + r * 1.25, c[1] + r * 1.25)
    if box is None:
        return
    sl, xs, ys = box
    cr, sr = math.cos(roll), math.sin(roll)
    dx, dy = xs - c[0], c[1] - ys  # y up
    u = (dx * cr + dy * sr) / rx  # head-local, unit ellipse
    v = (-dx * sr + dy * cr) / ry
    q2 = u * u + v * v
    alpha = np.clip((1.0 - np.sqrt(q2)) * min(rx, ry) + 0.5, 0.0, 1.0)
    z = np.sqrt(np.clip(1.0 - q2, 0.0, 1.0))
    # Undo the head's yaw (about the vertical axis) then its pitch (about the horizontal one).
    cy_, sy_ = math.cos(pose.yaw), math.sin(pose.yaw)
    hu = u * cy_ - z * sy_
    hz = u * sy_ + z * cy_
    cp, sp = math.cos(pose.pitch), math.sin(pose.pitch)
    hv, hz = v * cp + hz * sp, hz * cp - v * sp
    aa = 1.5 / max(min(rx, ry), 1.0)  # one pixel, in head units

    def soft(d: np.ndarray) -> np.ndarray:  # inside where d < 0, anti-aliased over ~1 px
        return np.clip(0.5 - d / aa, 0.0, 1.0)

    top = 0.5 - 0.12 * hu  # swept to one side
    hairline = np.clip(top - 1.4 * (0.3 - hz), -0.5 if not pose.woman else -0.95, top)
    if pose.woman:
        hairline = np.minimum(hairline, np.where((np.abs(hu) > 0.75) & (hz < 0.25), -0.6, 1.0))  # long hair
    color = SKIN - 0.10 * np.clip(-hz, 0.0, 1.0) + 0.08 * np.clip(z - 0.6, 0.0, 1.0)  # soft shading
    color = color + (HAIR - color) * soft(hairline - hv)
    if min(rx, ry) >= 6:  # features only when the head is big enough to read
        back = 0.12 - hz  # features show on the front of the head only (crisp cut, no ghosting)
        eye_h = 0.075 * (1.0 - 0.9 * pose.blink) + 0.01
        for side in (-1, 1):
            eye = np.hypot((hu - side * 0.36) / 0.10, (hv - 0.08) / eye_h) - 1.0
            brow = np.hypot((hu - side * 0.36) / 0.16, (hv - 0.27) / 0.035) - 1.0
            color = color + (FEATURE - color) * soft(np.maximum(eye * 0.08, back))
            color = color + (HAIR - color) * soft(np.maximum(brow * 0.05, back))
        mouth = np.hypot(hu / 0.24, (hv + 0.45 + 0.05 * hu * hu) / 0.03) - 1.0
        color = color + (0.42 - color) * soft(np.maximum(mouth * 0.04, back))
    region = img[sl]
    region += (color - region) * alpha
    if min(rx, ry) >= 3:  # nose and ears: small pills that stick out of the silhouette when turned
        def project(x: float, y: float, z: float) -> tuple[tuple[float, float], float]:
            v = y * cp - z * sp
            z1 = y * sp + z * cp
            u = x * cy_ + z1 * sy_
            return (c[0] + u * rx * cr - v * ry * sr, c[1] - (u * rx * sr + v * ry * cr)), -x * sy_ + z1 * cy_
        for side in ((-1, 1) if not pose.woman else ()):  # his ears, where turned to us (hers: under her hair)
            top, depth = project(side * 0.97, 0.08, -0.08)
            low, _ = project(side * 0.97, -0.12, -0.08)
            if depth > -0.2:
                capsule(img, top, low, 0.1 * rx, 0.07 * rx, SKIN - 0.12)
        bridge, _ = project(0.0, 0.02, 0.98)
        tip, depth = project(0.0, -0.2, 1.16)
        if depth > -0.1:
            capsule(img, bridge, tip, 0.07 * rx, 0.085 * rx, SKIN - 0.1)


def figure(img: np.ndarray, pose: Pose, cam: Camera, jitter: tuple[float, float] = (0, 0)) -> None:
    """Paint a whole figure (and its floor shadow) in back-to-front order."""
    h, w = img.shape
    s = cam.scale * h
    P = lambda p: cam.px(w, h, p, jitter)
    hip = np.array([pose.x, pose.y])
    up = np.array([math.sin(pose.torso), math.cos(pose.torso)])
    side = np.array([up[1], -up[0]])  # perpendicular, towards +x when upright
    neck = hip + up * TORSO * math.cos(pose.bow)
    shoulders = [neck - 0.05 * up + side * k * SHOULDER_W * pose.facing for k in (-1, 1)]
    hips = [hip + side * k * HIP_W * pose.facing for k in (-1, 1)]

    # Floor shadow: under the figure, fainter and smaller as it leaves the floor.
    knees = [hips[i] + THIGH * _dir(t) for i, (t, _) in enumerate(pose.legs)]
    ankles = [knees[i] + SHIN * _dir(sh) for i, (_, sh) in enumerate(pose.legs)]
    pts = np.array([hip, neck, *knees, *ankles])
    low = max(float(pts[:, 1].min()), 0.0)
    span = float(pts[:, 0].max() - pts[:, 0].min())
    fx, fy = cam.px(w, h, np.array([float(pts[:, 0].mean()), 0.0]))
    fade = 1.0 / (1.0 + 3.0 * low)
    shadow(img, fx, fy, (0.28 + 0.5 * span) * s * (1 + 0.5 * low), 0.045 * s * (1 + low), 0.45 * fade)

    far = FAR + (SUIT - FAR) * pose.facing
    dress = 0.34 if pose.woman else SUIT
    far_dress = far + (dress - SUIT) if pose.woman else far
    limb_r = 0.052 * s

    def leg(i: int, tone: float) -> None:
        capsule(img, P(hips[i]), P(knees[i]), 0.068 * s, 0.058 * s, tone)
        capsule(img, P(knees[i]), P(ankles[i]), 0.058 * s, 0.048 * s, tone)
        toe = ankles[i] + np.array([0.12 * (1 - pose.facing) * (1 if math.cos(pose.torso) > 0 else -1), -0.03])
        capsule(img, P(ankles[i]), P(toe), 0.045 * s, 0.04 * s, INK)

    def arm(i: int, tone: float) -> None:
        u, f = pose.arms[i]
        elbow = shoulders[i] + UPPER_ARM * _dir(u)
        hand = elbow + FOREARM * _dir(f)
        capsule(img, P(shoulders[i]), P(elbow), limb_r, 0.046 * s, tone)
        capsule(img, P(elbow), P(hand), 0.046 * s, 0.040 * s, tone)
        capsule(img, P(hand), P(hand + 0.03 * _dir(f)), 0.045 * s, 0.045 * s, SKIN - 0.08)

    if pose.facing < 0.5:
        arm(0, far_dress)
        leg(0, far if not pose.woman else 0.3)
    else:
        leg(0, SUIT if not pose.woman else 0.22)
    leg(1, SUIT if not pose.woman else 0.22)
    if pose.woman:  # a bell-shaped skirt over the hips
        mid = np.mean(knees, axis=0)
        flare = 0.13 + 0.11 * max(0.0, math.cos(sum(t for t, _ in pose.legs) / 2))  # drapes when lying
        capsule(img, P(hip + 0.06 * up), P(hip + (mid - hip) * 1.05), 0.13 * s, flare * s, dress)
    r_hip, r_chest = 0.11 + 0.04 * pose.facing, 0.11 + 0.08 * pose.facing
    chest = neck - up * max(r_chest - 0.05, 0.0) * math.cos(pose.bow)  # shoulders end at the neck
    capsule(img, P(hip), P(chest), r_hip * s, r_chest * s, dress)
    if pose.facing >= 0.5:
        arm(0, dress)
    if pose.facing > 0.3 and not pose.woman:  # white shirt and dark tie in the jacket's V
        a = P(neck - 0.01 * up)
        capsule(img, a, P(neck - 0.16 * up), 0.045 * s * pose.facing, 0.005 * s, 0.93)
        capsule(img, P(neck - 0.03 * up), P(neck - 0.2 * up), 0.012 * s, 0.018 * s, INK)
    head_up = np.array([math.sin(pose.torso + pose.tilt), math.cos(pose.torso + pose.tilt)])
    neck_top = neck + head_up * NECK * math.cos(pose.bow)
    capsule(img, P(neck - 0.02 * up), P(neck_top), 0.045 * s, 0.045 * s, SKIN - 0.1)
    centre = neck_top + head_up * HEAD_RY * 0.85 * (0.6 + 0.4 * math.cos(pose.bow))
    roll = -(pose.torso + pose.tilt)
    head(img, P(centre), HEAD_RX * s, HEAD_RY * s, roll, replace(pose, pitch=pose.pitch + pose.bow))
    arm(1, dress)


# --- Choreography ---------------------------------------------------------------------------------
# Each shot maps (seconds since the cut, shot length in seconds) to a camera and its figures.

Scene = tuple[Camera, list[Pose]]


def walk_pose(x: float, phase: float, woman: bool = False) -> Pose:
    """A profile walking to +x; ``phase`` advances 2*pi per stride pair."""
    swing = 0.42 * math.sin(phase)
    legs: list[tuple[float, float]] = []
    arms: list[tuple[float, float]] = []
    for k in (1, -1):
        thigh = k * swing
        bend = 0.75 * max(0.0, math.cos(phase + (0 if k > 0 else math.pi))) ** 1.5
        legs.append((thigh, thigh - bend))
        upper = -0.55 * k * swing
        arms.append((upper, upper + 0.25))
    pose = Pose(x=x, facing=0.0, torso=0.06, arms=(arms[0], arms[1]), legs=(legs[0], legs[1]), yaw=math.pi / 2,
                woman=woman)
    return grounded(pose, lift=0.015 * abs(math.cos(phase)))


def shot_walk(t: float, d: float) -> Scene:
    x = -3.0 + 6.0 * t / d
    cam = Camera(cx=0.0, cy=1.45, scale=0.19, horizon=0.5)
    return cam, [walk_pose(x, x / 0.72 * math.pi)]


def shot_arms(t: float, d: float) -> Scene:
    """Front medium shot: arms rise sideways overhead and fall, then a slow bow."""
    u = t / d
    lift = _smooth(0.05, 0.3, u) - _smooth(0.38, 0.6, u)
    a = 0.12 + 2.9 * lift
    bow = 0.85 * (_smooth(0.62, 0.78, u) - _smooth(0.86, 0.99, u))
    elbow = 0.15 * math.sin(math.pi * lift)
    pose = Pose(facing=1.0, bow=bow, arms=((-a, -a - elbow), (a, a + elbow)),
                legs=((-0.05, -0.04), (0.05, 0.04)), pitch=0.15 * lift - 0.1 * bow)
    cam = Camera(cx=0.0, cy=1.18, scale=0.35, horizon=0.6)
    return cam, [grounded(pose)]


def shot_face(t: float, d: float) -> Scene:
    """Close-up of the head turning slowly from one side to the other, blinking."""
    u = t / d
    yaw = 1.25 * math.sin(math.pi * (2 * u - 0.5)) * (0.6 + 0.4 * u)
    blink = max(0.0, 1.0 - abs(t - 0.55 * d) / 0.09) + max(0.0, 1.0 - abs(t - 0.9 * d) / 0.08)
    pose = grounded(Pose(facing=1.0, yaw=yaw, pitch=-0.05 + 0.08 * math.sin(3 * u), blink=min(blink, 1.0),
                         tilt=0.04 * math.sin(2 * math.pi * u)))
    head_y = pose.y + TORSO + NECK + HEAD_RY
    return Camera(cx=0.0, cy=head_y - 0.055, scale=2.0, horizon=None), [pose]


def dance_pose(t: float, x0: float, k: int, woman: bool) -> Pose:
    """A gentle sway: hips step side to side, arms wave, the head tilts."""
    w = 2 * math.pi * 0.9
    s = math.sin(w * t + (0 if k > 0 else math.pi))
    c = math.cos(w * t + (0 if k > 0 else math.pi))
    arm_l = -1.5 - 0.6 * s
    arm_r = 1.5 - 0.6 * s
    lift_l = 0.35 * max(0.0, s)
    lift_r = 0.35 * max(0.0, -s)
    pose = Pose(x=x0 + 0.18 * c, facing=1.0, torso=0.12 * s, tilt=-0.15 * s,
                arms=((arm_l, arm_l - 0.7 - 0.3 * c), (arm_r, arm_r + 0.7 - 0.3 * c)),
                legs=((-0.12 - lift_l, -0.12 + 0.4 * lift_l), (0.12 + lift_r, 0.12 - 0.4 * lift_r)),
                yaw=0.4 * k, woman=woman)
    return grounded(pose)


def shot_dance(t: float, d: float) -> Scene:
    """The man and the woman dance apart, mirrored, in a wide shot."""
    cam = Camera(cx=0.0, cy=1.2, scale=0.24, horizon=0.52)
    return cam, [dance_pose(t, -0.9, 1, False), dance_pose(t, 0.9, -1, True)]


def shot_lie(t: float, d: float) -> Scene:
    """The woman sits on the floor and lies back, her arms sweeping over her to rest; in profile."""
    u = _smooth(0.08, 0.55, t / d)  # torso going down
    ua = _smooth(0.45, 0.92, t / d)  # arms: behind (propping), up over the chest, along the body
    torso = -0.12 + (-math.pi / 2 + 0.1 + 0.12) * u
    breath = 0.012 * math.sin(2 * math.pi * 0.4 * t) * u
    thigh = math.pi / 2 - 0.5 * (1 - u) + 0.03
    shin = math.pi / 2 + 0.35 * (1 - u)
    follow = -0.45 + (torso + 0.12)  # arms keep their angle to the torso as it goes down
    far = follow - (2 * math.pi - 3.05) * ua
    near = follow - (2 * math.pi - 2.95) * _smooth(0.4, 1.0, t / d)
    pose = Pose(x=0.0, y=0.12 + breath, facing=0.0, torso=torso, arms=((far, far + 0.1), (near, near + 0.15)),
                legs=((thigh - 0.04, shin - 0.04), (thigh, shin)), yaw=math.pi / 2,
                pitch=-0.15 * u, woman=True)
    return Camera(cx=-0.15, cy=0.44, scale=0.5, horizon=0.42), [pose]


def shot_jump(t: float, d: float) -> Scene:
    """The man crouches, leaps, tucks in the air and lands: the famous jump."""
    u = t / d
    crouch = _smooth(0.05, 0.28, u) - _smooth(0.28, 0.34, u) + _smooth(0.6, 0.66, u) - _smooth(0.7, 0.95, u)
    air = u > 0.34 and u < 0.62
    height = 0.75 * math.sin(math.pi * (u - 0.34) / 0.28) if air else 0.0
    tuck = math.sin(math.pi * (u - 0.34) / 0.28) if air else 0.0
    thigh = 0.95 * crouch + 1.0 * tuck
    shin = -0.75 * crouch - 0.55 * tuck
    reach = _smooth(0.26, 0.38, u) - _smooth(0.55, 0.7, u)
    arm = -0.9 * crouch * (1 - reach) + 2.9 * reach
    pose = Pose(facing=0.0, torso=0.45 * crouch + 0.2 * tuck, arms=((arm, arm + 0.2), (arm - 0.1, arm + 0.1)),
                legs=((thigh + 0.05, shin + 0.05), (thigh - 0.05, shin - 0.05)), yaw=math.pi / 2,
                pitch=0.2 * crouch)
    return Camera(cx=0.0, cy=1.3, scale=0.3, horizon=0.8), [grounded(pose, lift=height)]  # low angle


SHOTS: list[tuple[str, float, Callable[[float, float], Scene]]] = [
    ("walk", 0.20, shot_walk), ("arms", 0.18, shot_arms), ("face", 0.15, shot_face),
    ("dance", 0.17, shot_dance), ("lie", 0.15, shot_lie), ("jump", 0.15, shot_jump),
]


@dataclass(frozen=True)
class Shot:
    name: str
    start: int  # first frame
    stop: int  # one past the last frame


def shot_plan(n_frames: int) -> list[Shot]:
    """Cut ``n_frames`` into the shot list in its fixed proportions (cuts fall on these frames)."""
    edges = np.round(np.cumsum([0.0] + [w for _, w, _ in SHOTS]) * n_frames).astype(int)
    return [Shot(name, int(edges[i]), int(edges[i + 1])) for i, (name, _, _) in enumerate(SHOTS)]


# --- The room and the film look -------------------------------------------------------------------


def room(width: int, height: int, horizon: float | None) -> np.ndarray:
    """The white boundless room: a faint seam between wall and floor, and a vignette."""
    y = (np.arange(height, dtype=np.float32)[:, None] + 0.5) / height
    x = (np.arange(width, dtype=np.float32)[None, :] + 0.5) / width
    wall = 0.965 - 0.02 * y
    if horizon is None:
        img = np.broadcast_to(wall, (height, width)).astype(np.float32)
    else:
        below = np.clip((y - horizon) / 0.03, 0.0, 1.0)  # soft seam
        floor = 0.955 - 0.045 * np.exp(-np.maximum(y - horizon, 0) / 0.08) + 0.02 * (y - horizon)
        img = (wall * (1 - below) + floor * below).astype(np.float32)
        img = np.broadcast_to(img, (height, width)).copy()
    aspect = width / height
    r2 = ((x - 0.5) * aspect) ** 2 + (y - 0.5) ** 2
    r2 /= (0.5 * aspect) ** 2 + 0.25
    return (img * (1.0 - 0.32 * r2 ** 1.6)).astype(np.float32)


def film_look(img: np.ndarray, rng: np.random.Generator, flicker: float) -> np.ndarray:
    """Grain (at half resolution, like coarse stock), flicker, dust and the odd scratch -> uint8."""
    h, w = img.shape
    grain = rng.standard_normal((h // 2, w // 2), dtype=np.float32) * np.float32(0.03)
    out: np.ndarray = img.reshape(h // 2, 2, w // 2, 2)
    out += grain[:, None, :, None]
    out = out.reshape(h, w)
    if rng.random() < 0.3:  # dust: a few dark specks
        for _ in range(int(rng.integers(1, 4))):
            x, y = float(rng.uniform(0, w)), float(rng.uniform(0, h))
            r = float(rng.uniform(0.6, 2.2)) * h / 480
            capsule(out, (x, y), (x + rng.uniform(-3, 3), y + rng.uniform(-3, 3)), r, r * 0.6, 0.2)
    if rng.random() < 0.08:  # a fine vertical scratch
        x = float(rng.uniform(0.05, 0.95)) * w
        y0 = float(rng.uniform(0, 0.5)) * h
        capsule(out, (x, y0), (x + rng.uniform(-2, 2), y0 + rng.uniform(0.3, 1.0) * h), 0.35, 0.35, 0.55)
    out *= np.float32(flicker * 255.0)
    np.clip(out, 0, 255, out=out)
    return out.astype(np.uint8)


def iter_frames(seconds: float = 20.0, fps: int = 24, width: int = 640, height: int = 480,
                seed: int = 0) -> Iterator[np.ndarray]:
    """Yield the film's frames as ``(height, width)`` uint8 arrays; identical for the same arguments."""
    _check(seconds, fps, width, height, seed)
    n = round(seconds * fps)
    rooms: dict[float | None, np.ndarray] = {}
    slow = np.random.default_rng([seed, 1]).uniform(0, 2 * math.pi, 3)
    for shot, (_, _, fn) in zip(shot_plan(n), SHOTS):
        d = (shot.stop - shot.start) / fps
        for i in range(shot.start, shot.stop):
            rng = np.random.default_rng([seed, 0, i])
            cam, poses = fn((i - shot.start) / fps, d)
            if cam.horizon not in rooms:
                rooms[cam.horizon] = room(width, height, cam.horizon)
            img = rooms[cam.horizon].copy()
            jitter = (float(rng.normal(0, 0.35)), float(rng.normal(0, 0.5)))  # gate weave
            for pose in poses:
                figure(img, pose, cam, jitter)
            t = i / fps
            flicker = 1.0 + 0.012 * float(rng.standard_normal()) + 0.008 * math.sin(11.0 * t + slow[0])
            yield film_look(img, rng, flicker)


# --- The soundtrack -------------------------------------------------------------------------------

RATE = 48000
SCALE = [0, 2, 4, 7, 9, 12, 14, 16]  # major pentatonic, semitones above C4


def render_audio(seconds: float, seed: int = 0, rate: int = RATE, cuts: list[float] | None = None) -> np.ndarray:
    """A soft celesta-like melody, a low drone, and a murmuring narrator at each cut (float32, -1..1)."""
    rng = np.random.default_rng([seed, 2])
    n = int(round(seconds * rate))
    t = np.arange(n, dtype=np.float64) / rate
    out = np.zeros(n)
    # Drone: a soft open fifth, breathing slowly.
    drone = np.sin(2 * np.pi * 65.41 * t) + 0.6 * np.sin(2 * np.pi * 98.0 * t)
    out += 0.05 * drone * (0.7 + 0.3 * np.sin(0.7 * t))
    # Melody: a gentle random walk on the pentatonic scale, one note every half second.
    step, degree = 0.5, 3
    for k in range(int(seconds / step)):
        if rng.random() < 0.25:
            continue  # rests
        degree = int(np.clip(degree + rng.integers(-2, 3), 0, len(SCALE) - 1))
        f = 261.63 * 2 ** (SCALE[degree] / 12)
        i0 = int(k * step * rate)
        i1 = min(n, i0 + int(2.5 * rate))
        tt = t[: i1 - i0]
        env = (1 - np.exp(-tt / 0.01)) * np.exp(-tt / 0.45)
        out[i0:i1] += 0.16 * env * (np.sin(2 * np.pi * f * tt) + 0.25 * np.sin(4 * np.pi * f * tt)
                                    + 0.06 * np.sin(6 * np.pi * f * tt))
    # Narrator: voiced syllables (additive harmonics shaped by vowel formants) after each cut.
    vowels = [(730, 1090), (270, 2290), (530, 1840), (570, 840), (300, 870), (660, 1720)]
    for c in cuts or [0.0]:
        pos = c + 0.35
        for s in range(int(rng.integers(4, 9))):
            dur = float(rng.uniform(0.12, 0.24))
            i0, i1 = int(pos * rate), min(n, int((pos + dur) * rate))
            if i1 <= i0:
                break
            tt = t[: i1 - i0]
            f0 = 118.0 - 9.0 * s + 6.0 * float(rng.standard_normal())
            f1, f2 = vowels[int(rng.integers(len(vowels)))]
            phase = 2 * np.pi * f0 * (tt - 0.15 * tt * tt)
            voice = np.zeros_like(tt)
            for h in range(1, 30):
                fh = f0 * h
                amp = np.exp(-((fh - f1) / 120) ** 2) + 0.6 * np.exp(-((fh - f2) / 180) ** 2) + 0.15 / h
                voice += amp * np.sin(h * phase)
            env = np.sin(np.pi * tt / dur) ** 1.5
            out[i0:i1] += 0.05 * env * voice
            pos += dur + float(rng.uniform(0.02, 0.08))
    # Projector hiss, faintly flickering at 24 Hz.
    out += 0.006 * rng.standard_normal(n) * (1 + 0.3 * np.sin(2 * np.pi * 24 * t))
    fade = np.minimum(1.0, np.minimum(t / 0.3, (seconds - t) / 0.6))
    out *= np.clip(fade, 0.0, 1.0)
    peak = float(np.abs(out).max()) or 1.0
    return (out * (0.8 / peak)).astype(np.float32)


def write_wav(path: Path, samples: np.ndarray, rate: int = RATE) -> None:
    """16-bit mono PCM WAV."""
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(pcm.tobytes())


# --- Encoding -------------------------------------------------------------------------------------


def _whole(v: object) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _check(seconds: float, fps: int, width: int, height: int, seed: int = 0) -> None:
    """Refuse bad settings up front, before anything is rendered or written."""
    where = "synthetic film (the [source] options in project.toml, or render_film's arguments)"
    number = isinstance(seconds, (int, float, np.number)) and not isinstance(seconds, bool)
    if not (number and 2 <= seconds <= 120):
        raise CinemlError(f"{where}: seconds = {seconds!r} is out of range; "
                          "give a length from 2 to 120 (default 20).")
    if not (_whole(fps) and 8 <= fps <= 60):
        raise CinemlError(f"{where}: fps = {fps!r} must be a whole number from 8 to 60; "
                          "24 is the period rate.")
    if not (_whole(seed) and seed >= 0):
        raise CinemlError(f"{where}: seed = {seed!r} must be a whole number >= 0 (default 0).")
    for key, v in (("width", width), ("height", height)):
        if not (_whole(v) and 64 <= v <= 4096 and v % 2 == 0):
            raise CinemlError(f"{where}: {key} = {v!r} must be an even whole number from 64 to 4096 "
                              "(yuv420p video needs even sizes); the default is 640x480.")


def render_film(path: str | os.PathLike[str], seconds: float = 20.0, fps: int = 24, width: int = 640,
                height: int = 480, seed: int = 0, audio: bool = True,
                on_frame: Callable[[int], None] | None = None) -> Path:
    """Render the demo film to ``path`` (MP4, h264 yuv420p, AAC when ``audio``), atomically.

    ``on_frame(n)`` is called after every ``n`` frames handed to the encoder (for progress bars).
    """
    import imageio_ffmpeg

    _check(seconds, fps, width, height, seed)
    path = Path(path)
    n = round(seconds * fps)
    ffmpeg = imageio_ffmpeg.get_ffmpeg_exe()
    with atomic_path(path) as tmp, tempfile.TemporaryDirectory(prefix=".synthetic-", dir=path.parent) as work:
        cmd = [ffmpeg, "-hide_banner", "-loglevel", "error", "-y",
               "-f", "rawvideo", "-pix_fmt", "gray", "-s", f"{width}x{height}", "-r", str(fps), "-i", "-"]
        if audio:
            wav = Path(work) / "sound.wav"
            cuts = [s.start / fps for s in shot_plan(n)]
            write_wav(wav, render_audio(n / fps, seed, cuts=cuts))
            cmd += ["-i", str(wav), "-map", "0:v", "-map", "1:a", "-c:a", "aac", "-b:a", "128k"]
        cmd += ["-c:v", "libx264", "-preset", "superfast", "-crf", "24", "-pix_fmt", "yuv420p",
                "-color_range", "tv", "-movflags", "+faststart", "-f", "mp4", str(tmp)]
        log = Path(work) / "ffmpeg.log"
        with open(log, "wb") as err:
            proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err,
                                    preexec_fn=die_with_parent if sys.platform.startswith("linux") else None)
            assert proc.stdin is not None  # stdin=PIPE
            try:
                for frame in iter_frames(seconds, fps, width, height, seed):
                    proc.stdin.write(frame.tobytes())
                    if on_frame is not None:
                        on_frame(1)
                proc.stdin.close()
                code = proc.wait()
            except BrokenPipeError:
                code = proc.wait()
            except BaseException:
                proc.kill()
                proc.wait()
                raise
        if code != 0:
            raise CinemlError(f"synthetic film: ffmpeg failed (exit {code}) while encoding {path}: "
                              f"{log.read_text(errors='replace').strip()[-800:]} "
                              "Check the disk has space and the folder is writable, then run again.")
    return path


class SyntheticFilm(Source):
    """Render a short black-and-white homage to "The Perfect Human" (no download needed)."""

    name = "synthetic"
    options = (
        Option("seconds", float, 20.0, "length of the film in seconds", min=2, max=120),
        Option("fps", int, 24, "frames per second", min=8, max=60),
        Option("width", int, 640, "frame width in pixels (even; 640x480 is 4:3 like the original)",
               min=64, max=4096, check=lambda v: None if v % 2 == 0 else "must be even for yuv420p video"),
        Option("height", int, 480, "frame height in pixels (even)", min=64, max=4096,
               check=lambda v: None if v % 2 == 0 else "must be even for yuv420p video"),
        Option("seed", int, 0, "seed for grain, flicker and the melody: same seed, same film", min=0),
        Option("audio", bool, True, "add the synthesised soundtrack (AAC)"),
    )

    def make(self, ctx: StageContext) -> None:
        o = ctx.options
        n = round(float(o["seconds"]) * int(o["fps"]))
        with ctx.progress("Rendering film", total=n, unit="frames") as bar:
            render_film(ctx.output, seconds=float(o["seconds"]), fps=int(o["fps"]), width=int(o["width"]),
                        height=int(o["height"]), seed=int(o["seed"]), audio=bool(o["audio"]),
                        on_frame=bar.advance)


@hookimpl
def register_sources(register: Callable[[Source], None]) -> None:
    register(SyntheticFilm())
