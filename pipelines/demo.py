"""Procedurally rendered demo dataset, named and grouped like UCF101.

Each clip shows an articulated figure (capsule limbs) doing one action:

- ``PullUps``: hanging from a bar, the body rises towards it while the arms bend overhead;
- ``Punch``: a standing figure throws alternating straight punches forwards;
- ``PushUps``: a straight body lowers towards the floor and rises while the arms bend.

Classes differ only in motion (and the pose it implies). A group ``gNN`` fixes the actor
(colours, limb proportions and thickness) and the scene (textured background, clutter) for every
class, so neither colour nor background tells the classes apart. Each clip draws its own position,
scale, speed, phase, mirror, camera shake, noise and moving occluders; the difficulty scales these
nuisances and how often a clip is ambiguous (weak or brief motion), heavily occluded or only
partly in view.

Every clip is rendered from its own random stream seeded by ``(seed, class, group, clip)``, so any
single file can be regenerated on its own, identically.
"""

from __future__ import annotations

import math
import os
import zlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from core.console import progress_bar
from core.runfiles import atomic_write_json, read_json, remove_stale_temporaries
from pipelines.video.codecs import CODECS, codec_extension, write_video

DEFAULT_CLASSES = ("PullUps", "Punch", "PushUps")
DIFFICULTIES = ("easy", "normal", "hard")
CONFIG_FILE = "demo.json"


@dataclass(frozen=True)
class DemoConfig:
    """What to generate. ``size`` is (width, height) in pixels; ``seconds`` the clip length range."""

    classes: tuple[str, ...] = DEFAULT_CLASSES
    groups: int = 25
    clips_per_group: int = 4
    seed: int = 0
    codec: str = "vp9"
    size: tuple[int, int] = (160, 120)
    fps: float = 25.0
    seconds: tuple[float, float] = (2.0, 4.0)
    difficulty: str = "normal"

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(self.classes))
        object.__setattr__(self, "size", tuple(int(v) for v in self.size))
        object.__setattr__(self, "seconds", tuple(float(v) for v in self.seconds))
        unknown = [name for name in self.classes if name not in ACTIONS]
        if unknown or not self.classes:
            raise ValueError(
                f"unknown demo class(es) {', '.join(unknown) or '(none given)'}; choose from {', '.join(ACTIONS)}"
            )
        if len(set(self.classes)) != len(self.classes):
            raise ValueError(f"demo classes repeat: {', '.join(self.classes)}")
        if self.groups < 1 or self.clips_per_group < 1:
            raise ValueError("groups and clips per group must be at least 1")
        if self.codec not in CODECS:
            raise ValueError(f"unknown codec {self.codec!r}; choose one of {', '.join(CODECS)}")
        width, height = self.size
        if len(self.size) != 2 or width < 32 or height < 24 or width % 2 or height % 2:
            raise ValueError(f"size must be even and at least 32x24, got {width}x{height}")
        if not self.fps > 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        low, high = self.seconds
        if len(self.seconds) != 2 or not 0 < low <= high:
            raise ValueError(f"seconds must be a range LOW-HIGH with 0 < LOW <= HIGH, got {low}-{high}")
        if self.difficulty not in DIFFICULTIES:
            raise ValueError(f"difficulty must be one of {', '.join(DIFFICULTIES)}, got {self.difficulty!r}")

    def rendering_settings(self) -> dict[str, object]:
        """Settings that change the pixels of a clip (classes, groups and clip counts do not)."""
        settings = asdict(self)
        for name in ("classes", "groups", "clips_per_group"):
            settings.pop(name)
        settings["size"] = list(self.size)
        settings["seconds"] = list(self.seconds)
        return settings


@dataclass(frozen=True)
class Nuisance:
    """How strongly a difficulty level disturbs the clips (probabilities are per clip)."""

    shake_px: float  # camera shake amplitude
    noise_sigma: float  # pixel noise standard deviation (0..255 scale)
    roll_deg: float  # camera roll range
    occluders: tuple[int, int]  # moving occluders per clip (min, max)
    heavy_occlusion: float  # a large, slow occluder over the figure
    ambiguous: float  # weak or brief motion
    partial_view: float  # figure zoomed so that parts leave the frame
    low_contrast: float  # actor colours close to the background
    distractor_bar: float  # a pull-up bar in a clip of another class
    flicker: float  # per-frame brightness change
    max_hard_events: int  # at most this many of: ambiguous, partial view, heavy occlusion, low contrast

    def hard_events(self, rng: np.random.Generator) -> set[str]:
        """Which hard cases hit one clip (capped, so that a clip stays recognisable)."""
        chances = {
            "ambiguous": self.ambiguous,
            "partial_view": self.partial_view,
            "heavy_occlusion": self.heavy_occlusion,
            "low_contrast": self.low_contrast,
        }
        events = [name for name, chance in chances.items() if rng.random() < chance]
        if len(events) > self.max_hard_events:
            events = list(rng.choice(events, self.max_hard_events, replace=False))
        return set(events)


NUISANCE = {
    "easy": Nuisance(0.5, 2.0, 0.0, (0, 0), 0.0, 0.0, 0.0, 0.0, 0.2, 0.0, 0),
    "normal": Nuisance(1.5, 5.0, 6.0, (0, 1), 0.1, 0.1, 0.08, 0.12, 0.4, 0.03, 1),
    "hard": Nuisance(4.0, 12.0, 15.0, (1, 3), 0.3, 0.3, 0.25, 0.35, 0.5, 0.06, 2),
}

_SCENE_PAD = 8  # background margin in pixels, so camera shake never shows an edge

# Joint indices of the figure; "front"/"back" are the limbs nearer/farther from the camera.
HEAD, NECK, PELVIS = 0, 1, 2
SH_F, EL_F, HA_F, SH_B, EL_B, HA_B = 3, 4, 5, 6, 7, 8
HIP_F, KN_F, FT_F, HIP_B, KN_B, FT_B = 9, 10, 11, 12, 13, 14
N_JOINTS = 15


@dataclass(frozen=True)
class Actor:
    """One person of a group: limb lengths and radii in body units (standing height ~1), colours."""

    torso: float
    upper_arm: float
    forearm: float
    thigh: float
    shin: float
    shoulder_half: float
    hip_half: float
    head_radius: float
    radius: dict[str, float] = field(default_factory=dict)  # torso, upper_arm, forearm, thigh, shin
    colour: dict[str, np.ndarray] = field(default_factory=dict)  # shirt, sleeve, skin, pants

    @property
    def arm(self) -> float:
        return self.upper_arm + self.forearm


@dataclass
class Motion:
    """Per-frame drive signals of one clip: cycle phase, amplitude envelope, and clip options."""

    phase: np.ndarray  # (T,) radians
    envelope: np.ndarray  # (T,) 0..1, scales the movement
    rng: np.random.Generator

    @property
    def progress(self) -> np.ndarray:
        """0 at rest, 1 at the far end of a repetition."""
        return self.envelope * (0.5 - 0.5 * np.cos(self.phase))


# --------------------------------------------------------------------------- random streams


def _rng(*parts: int | str) -> np.random.Generator:
    words = [zlib.crc32(p.encode()) if isinstance(p, str) else int(p) for p in parts]
    return np.random.default_rng(words)


def _random_colour(rng: np.random.Generator, saturation: float = 0.6) -> np.ndarray:
    """A random colour, pulled towards its own grey level by ``1 - saturation``."""
    colour = rng.uniform(25, 235, 3)
    grey = colour.mean()
    return (grey + (colour - grey) * saturation).astype(np.float32)


def make_actor(rng: np.random.Generator) -> Actor:
    skin_tones = np.array([[236, 188, 150], [198, 134, 96], [141, 85, 54], [90, 56, 37], [224, 172, 105]], np.float32)
    skin = skin_tones[rng.integers(len(skin_tones))] + rng.normal(0, 10, 3).astype(np.float32)
    shirt = _random_colour(rng)
    long_sleeves = rng.random() < 0.5
    return Actor(
        torso=rng.uniform(0.30, 0.36),
        upper_arm=rng.uniform(0.16, 0.20),
        forearm=rng.uniform(0.14, 0.18),
        thigh=rng.uniform(0.22, 0.27),
        shin=rng.uniform(0.21, 0.26),
        shoulder_half=rng.uniform(0.09, 0.12),
        hip_half=rng.uniform(0.05, 0.07),
        head_radius=rng.uniform(0.06, 0.075),
        radius={
            "torso": rng.uniform(0.055, 0.08),
            "upper_arm": rng.uniform(0.026, 0.038),
            "forearm": rng.uniform(0.022, 0.032),
            "thigh": rng.uniform(0.036, 0.05),
            "shin": rng.uniform(0.028, 0.04),
        },
        colour={
            "shirt": shirt,
            "sleeve": shirt if long_sleeves else skin,
            "skin": np.clip(skin, 0, 255),
            "pants": _random_colour(rng),
        },
    )


# --------------------------------------------------------------------------- poses (body units, y up)


def _two_link(
    root: np.ndarray, target: np.ndarray, first: float, second: float, side: float
) -> tuple[np.ndarray, np.ndarray]:
    """Middle joint of a two-segment limb reaching from ``root`` towards ``target``.

    ``side`` (+1/-1) picks the bend direction (left/right of root->target). Targets out of
    reach are pulled in along the same line. Returns (middle joint, reached end), both (T, 2).
    """
    delta = target - root
    distance = np.linalg.norm(delta, axis=-1, keepdims=True)
    direction = delta / np.maximum(distance, 1e-6)
    reach = np.clip(distance, abs(first - second) + 1e-3, (first + second) * 0.999)
    cos_a = np.clip((first**2 + reach**2 - second**2) / (2 * first * reach), -1.0, 1.0)
    sin_a = np.sqrt(1.0 - cos_a**2)
    normal = np.stack([-direction[:, 1], direction[:, 0]], axis=-1)
    middle = root + first * (direction * cos_a + side * normal * sin_a)
    return middle, root + direction * reach


def _column(x: np.ndarray | float, y: np.ndarray | float, frames: int) -> np.ndarray:
    return np.stack(np.broadcast_arrays(np.broadcast_to(x, (frames,)), np.broadcast_to(y, (frames,))), axis=-1).astype(
        np.float64
    )


def _head(neck: np.ndarray, direction: np.ndarray, actor: Actor) -> np.ndarray:
    return neck + direction * (actor.head_radius + 0.035)


def pull_ups_pose(actor: Actor, motion: Motion) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray, float]]]:
    """Front view, hands on a bar at y=0; the body rises until the head reaches the bar."""
    rng = motion.rng
    frames = motion.phase.shape[0]
    s = motion.progress
    joints = np.zeros((frames, N_JOINTS, 2))
    grip = actor.shoulder_half + rng.uniform(0.05, 0.4) * actor.arm
    offset = grip - actor.shoulder_half
    hang = -math.sqrt(max((0.97 * actor.arm) ** 2 - offset**2, 0.01))
    shoulder_y = hang + (-0.06 - hang) * s
    sway = rng.uniform(0.0, 0.04) * np.sin(motion.phase * 0.5 + rng.uniform(0, 2 * np.pi))
    neck = _column(sway, shoulder_y + 0.02, frames)
    joints[:, NECK] = neck
    joints[:, HEAD] = _head(neck, np.array([0.0, 1.0]), actor)
    joints[:, PELVIS] = neck - [0.0, actor.torso]
    kip = rng.uniform(0.1, 0.8)  # how much the knees bend on the way up
    for side, shoulder, elbow, hand, hip, knee, foot in (
        (1.0, SH_F, EL_F, HA_F, HIP_F, KN_F, FT_F),
        (-1.0, SH_B, EL_B, HA_B, HIP_B, KN_B, FT_B),
    ):
        joints[:, shoulder] = neck + [side * actor.shoulder_half, -0.02]
        bar_hand = _column(side * grip, 0.0, frames)
        # elbows bend outwards, away from the body
        joints[:, elbow], joints[:, hand] = _two_link(
            joints[:, shoulder], bar_hand, actor.upper_arm, actor.forearm, side
        )
        joints[:, hip] = joints[:, PELVIS] + [side * actor.hip_half, 0.0]
        joints[:, knee] = joints[:, hip] + [side * 0.03, -actor.thigh]
        shin_drop = actor.shin * np.cos(0.15 + kip * s)
        joints[:, foot] = joints[:, knee] + np.stack([np.full(frames, side * 0.01), -shin_drop], -1)
    bar_half = grip + rng.uniform(0.15, 0.4)
    bar = (_column(-bar_half, 0.0, frames), _column(bar_half, 0.0, frames), rng.uniform(0.012, 0.02))
    return joints, [bar]


def punch_pose(actor: Actor, motion: Motion) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray, float]]]:
    """Side view facing +x, feet on y=0; straight punches, usually alternating arms."""
    rng = motion.rng
    frames = motion.phase.shape[0]
    joints = np.zeros((frames, N_JOINTS, 2))
    pulse = lambda p: np.maximum(np.sin(p), 0.0) ** 1.5  # noqa: E731 - one extension per cycle
    front = motion.envelope * pulse(motion.phase)
    back = motion.envelope * pulse(motion.phase + np.pi)
    if rng.random() < 0.25:  # jabs with the front hand only
        back = np.zeros_like(back)
    stance = rng.uniform(0.08, 0.16)
    knee_drop = rng.uniform(0.01, 0.05)
    bob = 0.015 * np.sin(2 * motion.phase)
    pelvis = _column(0.03 * (front - back), actor.thigh + actor.shin - knee_drop + bob * motion.envelope, frames)
    lean = rng.uniform(0.03, 0.15) + 0.08 * (front + back)
    up = np.stack([np.sin(lean), np.cos(lean)], -1)
    neck = pelvis + actor.torso * up
    joints[:, PELVIS], joints[:, NECK] = pelvis, neck
    joints[:, HEAD] = _head(neck, up, actor)
    elevation = rng.uniform(-0.05, 0.2)
    for depth, extension, shoulder, elbow, hand, hip, knee, foot, foot_x in (
        (1.0, front, SH_F, EL_F, HA_F, HIP_F, KN_F, FT_F, stance),
        (-1.0, back, SH_B, EL_B, HA_B, HIP_B, KN_B, FT_B, -stance),
    ):
        joints[:, shoulder] = neck + np.stack([depth * 0.02 + 0.05 * extension, np.full(frames, -0.03)], -1)
        guard = joints[:, shoulder] + [0.08 + 0.02 * depth, 0.09]
        reach = joints[:, shoulder] + 0.98 * actor.arm * np.array([np.cos(elevation), np.sin(elevation)])
        target = guard + (reach - guard) * extension[:, None]
        joints[:, elbow], joints[:, hand] = _two_link(joints[:, shoulder], target, actor.upper_arm, actor.forearm, -1.0)
        joints[:, hip] = pelvis + [depth * 0.015, 0.0]
        feet = _column(foot_x, 0.0, frames)
        joints[:, knee], joints[:, foot] = _two_link(joints[:, hip], feet, actor.thigh, actor.shin, -1.0)
    return joints, []


def push_ups_pose(actor: Actor, motion: Motion) -> tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray, float]]]:
    """Side view facing +x, toes and hands on y=0; a straight body pivots on the toes."""
    rng = motion.rng
    frames = motion.phase.shape[0]
    s = motion.progress
    joints = np.zeros((frames, N_JOINTS, 2))
    floor = actor.radius["shin"]
    body = actor.shin + actor.thigh + actor.torso
    top = 0.95 * actor.arm
    bottom = top * rng.uniform(0.3, 0.5)
    angle = np.arcsin(np.clip((top + (bottom - top) * s) / body, 0, 1))
    along = np.stack([np.cos(angle), np.sin(angle)], -1)
    across = np.stack([-along[:, 1], along[:, 0]], -1)
    sag = rng.uniform(-0.03, 0.02)  # hips dropping (negative) or piking (positive)
    toes = _column(0.0, floor, frames)
    knee = toes + actor.shin * along
    pelvis = knee + actor.thigh * along + sag * across
    neck = toes + body * along + [0.0, floor]
    joints[:, PELVIS], joints[:, NECK] = pelvis, neck
    head_dir = along + [0.2, 0.1]
    joints[:, HEAD] = _head(neck, head_dir / np.linalg.norm(head_dir, axis=-1, keepdims=True), actor)
    hand_x = body * math.cos(math.asin(min(top / body, 1.0))) + rng.uniform(-0.02, 0.05)
    for depth, shoulder, elbow, hand, hip, knee_j, foot in (
        (1.0, SH_F, EL_F, HA_F, HIP_F, KN_F, FT_F),
        (-1.0, SH_B, EL_B, HA_B, HIP_B, KN_B, FT_B),
    ):
        offset = np.array([depth * 0.012, 0.0])
        joints[:, shoulder] = neck - 0.03 * along + offset
        hands = _column(hand_x + depth * 0.012, floor * 0.5, frames)
        # elbows bend backwards, towards the feet
        joints[:, elbow], joints[:, hand] = _two_link(joints[:, shoulder], hands, actor.upper_arm, actor.forearm, -1.0)
        joints[:, hip], joints[:, knee_j], joints[:, foot] = pelvis + offset, knee + offset, toes + offset
    return joints, []


PoseFunction = Callable[[Actor, Motion], tuple[np.ndarray, list[tuple[np.ndarray, np.ndarray, float]]]]
ACTIONS: dict[str, PoseFunction] = {"PullUps": pull_ups_pose, "Punch": punch_pose, "PushUps": push_ups_pose}


# --------------------------------------------------------------------------- scene


def render_scene(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Static textured background with clutter, (H + 2*pad, W + 2*pad, 3) float32."""
    h, w = height + 2 * _SCENE_PAD, width + 2 * _SCENE_PAD
    y = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    x = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    top, bottom = _random_colour(rng, 0.4), _random_colour(rng, 0.4)
    scene = top * (1 - y) + bottom * y + 0 * x
    # blotchy low-frequency texture: a coarse random grid (mostly brightness, a little colour),
    # upsampled smoothly by interpolation
    coarse = rng.normal(0, rng.uniform(6, 18), (7, 9, 1)) + rng.normal(0, 4, (7, 9, 3))
    gy = np.linspace(0, 6, h)
    gx = np.linspace(0, 8, w)
    rows = np.stack([np.interp(gy, np.arange(7), coarse[:, j, c]) for j in range(9) for c in range(3)], -1)
    rows = rows.reshape(h, 9, 3)
    texture = np.stack([np.stack([np.interp(gx, np.arange(9), rows[i, :, c]) for c in range(3)], -1) for i in range(h)])
    scene = scene + texture.astype(np.float32)
    for _ in range(rng.integers(1, 3)):  # wallpaper / tiles
        theta, freq = rng.uniform(0, np.pi), rng.uniform(4, 25)
        grating = np.sin(2 * np.pi * freq * (x[..., 0] * np.cos(theta) + y[..., 0] * np.sin(theta)) + rng.uniform(0, 6))
        scene = scene + rng.uniform(2, 8) * grating[..., None] * rng.uniform(0.8, 1.0, 3).astype(np.float32)
    if rng.random() < 0.8:  # floor
        horizon = int(h * rng.uniform(0.55, 0.9))
        scene[horizon:] = scene[horizon:] * 0.4 + _random_colour(rng, 0.4) * 0.6
    yy, xx = np.mgrid[0:h, 0:w]
    for _ in range(rng.integers(3, 9)):
        colour = _random_colour(rng, 0.7)
        kind = rng.integers(4)
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        if kind == 0:  # box
            rw, rh = rng.uniform(0.05, 0.25) * w, rng.uniform(0.05, 0.3) * h
            mask = (abs(xx - cx) < rw) & (abs(yy - cy) < rh)
        elif kind == 1:  # disc / ellipse
            rx, ry = rng.uniform(0.03, 0.12) * w, rng.uniform(0.03, 0.15) * h
            mask = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1
        elif kind == 2:  # horizontal bar (looks like a pull-up bar)
            mask = (abs(yy - cy) < rng.uniform(1, 3)) & (abs(xx - cx) < rng.uniform(0.1, 0.4) * w)
        else:  # vertical pole
            mask = (abs(xx - cx) < rng.uniform(1, 4)) & (abs(yy - cy) < rng.uniform(0.15, 0.5) * h)
        scene[mask] = colour * rng.uniform(0.7, 1.0) + scene[mask] * 0.1
    return np.clip(scene, 0, 255).astype(np.float32)


# --------------------------------------------------------------------------- rasterisation


def _draw_capsules(
    canvas: np.ndarray, starts: np.ndarray, ends: np.ndarray, radius: float, colour: np.ndarray, shade: bool = True
) -> None:
    """Blend a thick anti-aliased segment per frame into ``canvas`` (T, H, W, 3), in place.

    ``starts``/``ends`` are (T, 2) pixel coordinates (x, y). Work is limited to the box the
    segment sweeps over the whole clip, vectorised over frames.
    """
    _, height, width, _ = canvas.shape
    points = np.concatenate([starts, ends])
    x0 = max(int(np.floor(points[:, 0].min() - radius - 1)), 0)
    x1 = min(int(np.ceil(points[:, 0].max() + radius + 2)), width)
    y0 = max(int(np.floor(points[:, 1].min() - radius - 1)), 0)
    y1 = min(int(np.ceil(points[:, 1].max() + radius + 2)), height)
    if x0 >= x1 or y0 >= y1:
        return
    xs = np.arange(x0, x1, dtype=np.float32)[None, None, :]
    ys = np.arange(y0, y1, dtype=np.float32)[None, :, None]
    ax, ay = starts[:, 0, None, None].astype(np.float32), starts[:, 1, None, None].astype(np.float32)
    dx, dy = (ends - starts)[:, 0, None, None].astype(np.float32), (ends - starts)[:, 1, None, None].astype(np.float32)
    px, py = xs - ax, ys - ay
    t = np.clip((px * dx + py * dy) / np.maximum(dx * dx + dy * dy, 1e-6), 0.0, 1.0)
    distance = np.sqrt((px - t * dx) ** 2 + (py - t * dy) ** 2)
    alpha = np.clip(radius + 0.5 - distance, 0.0, 1.0)[..., None]
    if shade:  # rounder look: darker towards the outline
        paint = colour * (1.0 - 0.35 * np.clip(distance / max(radius, 0.5), 0, 1) ** 2)[..., None]
    else:
        paint = colour
    region = canvas[:, y0:y1, x0:x1]
    region += alpha * (paint - region)


def _draw_occluder(
    canvas: np.ndarray, centre: np.ndarray, half: tuple[float, float], colour: np.ndarray, opacity: float, box: bool
) -> None:
    """A moving box or ellipse, centre (T, 2) in pixels, soft 1-pixel edge; drawn per frame
    inside its own bounding box (a moving occluder sweeps most of the frame over a clip)."""
    _, height, width, _ = canvas.shape
    for frame, (cx, cy) in enumerate(centre):
        x0, x1 = max(int(cx - half[0] - 1), 0), min(int(cx + half[0] + 2), width)
        y0, y1 = max(int(cy - half[1] - 1), 0), min(int(cy + half[1] + 2), height)
        if x0 >= x1 or y0 >= y1:
            continue
        xs = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
        ys = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
        if box:
            alpha = np.clip(half[0] + 0.5 - np.abs(xs), 0, 1) * np.clip(half[1] + 0.5 - np.abs(ys), 0, 1)
        else:
            radial = np.sqrt((xs / half[0]) ** 2 + (ys / half[1]) ** 2)
            alpha = np.clip((1.0 - radial) * min(half) + 0.5, 0, 1)
        region = canvas[frame, y0:y1, x0:x1]
        region += (np.float32(opacity) * alpha)[..., None] * (colour - region)


def _smooth_wobble(rng: np.random.Generator, frames: int, fps: float, amplitude: float) -> np.ndarray:
    """Camera shake: two random sinusoids per axis plus jitter, (T, 2) pixels."""
    t = np.arange(frames) / fps
    wobble = np.zeros((frames, 2))
    for axis in range(2):
        for _ in range(2):
            wobble[:, axis] += np.sin(2 * np.pi * rng.uniform(0.5, 4.0) * t + rng.uniform(0, 2 * np.pi))
        wobble[:, axis] += rng.normal(0, 0.3, frames)
    return np.clip(wobble * amplitude * 0.5, -_SCENE_PAD, _SCENE_PAD)


# Draw order: far limbs, torso, head, near limbs. (joint a, joint b, radius key, colour key, far side)
_SEGMENTS = (
    (SH_B, EL_B, "upper_arm", "sleeve", True),
    (EL_B, HA_B, "forearm", "skin", True),
    (HIP_B, KN_B, "thigh", "pants", True),
    (KN_B, FT_B, "shin", "pants", True),
    (NECK, PELVIS, "torso", "shirt", False),
    (SH_B, SH_F, "upper_arm", "shirt", False),
    (HIP_B, HIP_F, "thigh", "pants", False),
    (HEAD, HEAD, "head", "skin", False),
    (HIP_F, KN_F, "thigh", "pants", False),
    (KN_F, FT_F, "shin", "pants", False),
    (SH_F, EL_F, "upper_arm", "sleeve", False),
    (EL_F, HA_F, "forearm", "skin", False),
)


# --------------------------------------------------------------------------- one clip


def clip_path(out_dir: str | os.PathLike[str], class_name: str, group: int, clip: int, codec: str) -> Path:
    """``OUT/Class/v_Class_gGG_cCC.ext``, as in UCF101."""
    return Path(out_dir) / class_name / f"v_{class_name}_g{group:02d}_c{clip:02d}{codec_extension(codec)}"


def render_clip(class_name: str, group: int, clip: int, config: DemoConfig) -> np.ndarray:
    """Render one clip, (T, H, W, 3) uint8 RGB; depends only on the config's rendering settings."""
    if class_name not in ACTIONS:
        raise ValueError(f"unknown demo class {class_name!r}; choose from {', '.join(ACTIONS)}")
    width, height = config.size
    nuisance = NUISANCE[config.difficulty]
    actor = make_actor(_rng(config.seed, "actor", group))
    scene = render_scene(_rng(config.seed, "scene", group), width, height)
    rng = _rng(config.seed, class_name, group, clip)

    frames = max(2, int(round(config.fps * rng.uniform(*config.seconds))))
    t = np.arange(frames) / config.fps
    frequency = rng.uniform(0.45, 1.2) * (1 + 0.12 * np.sin(2 * np.pi * t / rng.uniform(1.5, 4) + rng.uniform(0, 6)))
    phase = rng.uniform(0, 2 * np.pi) + 2 * np.pi * np.cumsum(frequency) / config.fps
    envelope = np.full(frames, rng.uniform(0.75, 1.0))
    events = nuisance.hard_events(rng)
    if "ambiguous" in events:
        if rng.random() < 0.5:  # half-hearted repetitions
            envelope *= rng.uniform(0.2, 0.45)
        else:  # moves only briefly, rests otherwise
            duration = rng.uniform(0.25, 0.4) * t[-1]
            start = rng.uniform(0, t[-1] - duration)
            envelope *= np.clip(np.minimum(t - start, start + duration - t) * 4, 0, 1)
    joints, props = ACTIONS[class_name](actor, Motion(phase, envelope, rng))
    if class_name != "PullUps" and rng.random() < nuisance.distractor_bar:
        bar_y = joints[..., 1].max() + rng.uniform(0.05, 0.3)
        bar_x = joints[..., 0].mean() + rng.uniform(-0.2, 0.2)
        half = rng.uniform(0.25, 0.5)
        props = props + [
            (_column(bar_x - half, bar_y, frames), _column(bar_x + half, bar_y, frames), rng.uniform(0.012, 0.02))
        ]

    # body units -> pixels: mirror, roll, scale, position, shake
    low, high = joints.reshape(-1, 2).min(0), joints.reshape(-1, 2).max(0)
    centre = (low + high) / 2
    scale = rng.uniform(0.5, 0.72) * height
    partial = "partial_view" in events
    if partial:
        scale *= rng.uniform(1.4, 2.0)
    mirror = -1.0 if rng.random() < 0.5 else 1.0
    roll = np.deg2rad(rng.uniform(-nuisance.roll_deg, nuisance.roll_deg))
    rotation = np.array([[np.cos(roll), -np.sin(roll)], [np.sin(roll), np.cos(roll)]])
    extent = (high - low) * scale / 2 + 3
    if partial:
        target = np.array([rng.uniform(0.2, 0.8) * width, rng.uniform(0.2, 0.8) * height])
    else:
        target = np.array(
            [
                rng.uniform(min(extent[0], width / 2), max(width - extent[0], width / 2)),
                rng.uniform(min(extent[1], height / 2), max(height - extent[1], height / 2)),
            ]
        )
    shake = np.round(_smooth_wobble(rng, frames, config.fps, nuisance.shake_px))

    def to_pixels(points: np.ndarray) -> np.ndarray:
        local = (points - centre) * [mirror, 1.0]
        local = local @ rotation.T
        return target + shake.reshape((frames,) + (1,) * (points.ndim - 2) + (2,)) + local * [scale, -scale]

    pixels = to_pixels(joints)
    # background: a shaken crop of the padded scene per frame
    rows = _SCENE_PAD + shake[:, 1].astype(int)
    cols = _SCENE_PAD + shake[:, 0].astype(int)
    canvas = np.stack([scene[r : r + height, c : c + width] for r, c in zip(rows, cols, strict=True)])

    colours = {name: value.copy() for name, value in actor.colour.items()}
    tint = rng.uniform(0.9, 1.1, 3).astype(np.float32)
    if "low_contrast" in events:
        mean = scene.reshape(-1, 3).mean(0)
        colours = {name: mean + (value - mean) * 0.4 for name, value in colours.items()}
    colours = {name: np.clip(value * tint, 0, 255).astype(np.float32) for name, value in colours.items()}
    for start, end, thickness in props:
        _draw_capsules(
            canvas, to_pixels(start), to_pixels(end), thickness * scale, rng.uniform(60, 200, 3).astype(np.float32)
        )
    radii = dict(actor.radius, head=actor.head_radius)
    for a, b, radius_key, colour_key, far in _SEGMENTS:
        colour = colours[colour_key] * (0.78 if far else 1.0)
        _draw_capsules(canvas, pixels[:, a], pixels[:, b], radii[radius_key] * scale, colour)

    occluders = int(rng.integers(nuisance.occluders[0], nuisance.occluders[1] + 1))
    heavy = "heavy_occlusion" in events
    figure_centre = pixels.reshape(-1, 2).mean(0)
    for index in range(occluders + int(heavy)):
        is_heavy = heavy and index == occluders
        size = rng.uniform(0.2, 0.32) if is_heavy else rng.uniform(0.08, 0.25)
        half = (size * height * rng.uniform(0.6, 1.4), size * height * rng.uniform(0.6, 1.4))
        if is_heavy:  # drifts slowly across the figure
            velocity = rng.normal(0, 6, 2)
            start = figure_centre - velocity * t[-1] / 2 + rng.normal(0, 0.1 * height, 2)
        else:
            velocity = rng.uniform(10, 50) * np.array([rng.choice([-1, 1]), rng.uniform(-0.5, 0.5)])
            start = np.array([rng.uniform(0, width), rng.uniform(0, height)]) - velocity * t[-1] / 2
        path = start + velocity * t[:, None]
        opacity = 1.0 if rng.random() < 0.6 else rng.uniform(0.5, 0.85)
        _draw_occluder(canvas, path, half, _random_colour(rng), opacity, box=rng.random() < 0.5)

    gain = rng.uniform(0.85, 1.15) * (1 + nuisance.flicker * rng.standard_normal(frames)).astype(np.float32)
    canvas *= gain[:, None, None, None]
    sigma = nuisance.noise_sigma * rng.uniform(0.5, 1.5)
    if sigma > 0:  # brightness noise only: a third of the cost of per-channel noise
        noise = rng.standard_normal((frames, height, width, 1), dtype=np.float32)
        noise *= np.float32(sigma)
        canvas += noise
    np.clip(canvas, 0, 255, out=canvas)
    return canvas.astype(np.uint8)


def _write_clip(job: tuple[str, int, int, DemoConfig, str]) -> str:
    class_name, group, clip, config, out_dir = job
    target = clip_path(out_dir, class_name, group, clip, config.codec)
    write_video(target, render_clip(class_name, group, clip, config), config.fps, config.codec)
    return str(target)


# --------------------------------------------------------------------------- the dataset


def _check_existing_settings(out_dir: Path, config: DemoConfig) -> None:
    settings_file = out_dir / CONFIG_FILE
    wanted = config.rendering_settings()
    if settings_file.exists():
        found = read_json(settings_file).get("rendering", {})
        if found != wanted:
            changed = sorted(key for key in wanted if found.get(key) != wanted[key])
            raise ValueError(
                f"{out_dir} holds demo clips rendered with other settings (differs: {', '.join(changed)}; "
                f"see {settings_file}); choose an empty folder or delete it first"
            )
    atomic_write_json(
        settings_file,
        {
            "rendering": wanted,
            "classes": list(config.classes),
            "groups": config.groups,
            "clips_per_group": config.clips_per_group,
        },
    )


def generate_demo_dataset(
    out_dir: str | os.PathLike[str], config: DemoConfig | None = None, progress: bool = True, workers: int | None = None
) -> list[Path]:
    """Render every clip of ``config`` into ``out_dir`` (UCF101 layout); returns all clip paths.

    Clips already present are kept (files are written atomically, so a present file is
    complete); rerunning after an interruption renders only what is missing (and removes the
    temporary files of writers that were killed). ``workers``
    processes render in parallel (default: up to 2).
    """
    config = config or DemoConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(out_dir)  # left by a killed run
    _check_existing_settings(out_dir, config)
    jobs = [
        (class_name, group, clip, config, str(out_dir))
        for class_name in config.classes
        for group in range(1, config.groups + 1)
        for clip in range(1, config.clips_per_group + 1)
    ]
    paths = [clip_path(out_dir, name, group, clip, config.codec) for name, group, clip, _, _ in jobs]
    todo = [job for job, path in zip(jobs, paths, strict=True) if not path.exists()]
    workers = min(workers or min(2, os.cpu_count() or 1), max(len(todo), 1))
    with progress_bar(
        total=len(jobs), initial=len(jobs) - len(todo), desc="demo-data", unit="clip", enabled=progress
    ) as bar:
        if workers <= 1:
            for job in todo:
                _write_clip(job)
                bar.update()
        else:
            # Not "fork": a process that already built DALI pipelines (the backend probe, tests) can
            # crash in a forked child when they are garbage-collected there.
            with get_context("forkserver" if os.name == "posix" else "spawn").Pool(workers) as pool:
                for _ in pool.imap_unordered(_write_clip, todo):
                    bar.update()
    return paths
