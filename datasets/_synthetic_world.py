"""The world of the embedded benchmark: its vocabulary (shapes, colours, motions, backgrounds), how one event
is drawn as frames, and how captions phrase events. ``datasets/synthetic.py`` samples videos from it.

Changing anything here changes the benchmark: bump ``GENERATOR_VERSION`` in ``datasets/synthetic.py``.
"""

from __future__ import annotations

import math

import numpy as np

SHAPES = ("circle", "square", "triangle", "cross", "ring", "bar")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (230, 30, 30),
    "green": (40, 205, 40),
    "blue": (45, 85, 255),
    "yellow": (245, 230, 40),
    "magenta": (230, 40, 230),
    "cyan": (40, 230, 230),
    "white": (250, 250, 250),
    "orange": (255, 140, 0),
}
MOTIONS = ("left", "right", "up", "down", "still")
BACKGROUNDS: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "gray": (100, 100, 100),
    "dark blue": (15, 20, 105),
    "dark green": (15, 85, 25),
}
# Colour/background pairs that read badly (same hue): never generated.
_CLASHES = {("blue", "dark blue"), ("green", "dark green")}

# Caption phrasing, kept compact: at coverage 0.5 with 4 events the longest caption stays well under
# the synthetic benchmark's 32-token text context (checked by the tests with the CLIP tokenizer).
_MOTION_WORDS = (
    {"left": "left", "right": "right", "up": "up", "down": "down", "still": "pulsing"},
    {"left": "moving left", "right": "moving right", "up": "moving up", "down": "moving down", "still": "pulsing"},
    {"left": "going left", "right": "going right", "up": "going up", "down": "going down", "still": "pulsing"},
)
_EVENT_TEMPLATES = (
    "{colour} {shape} {motion} on {background}",
    "{colour} {shape} on {background} {motion}",
)
_CONNECTORS = (", then ", " then ", ", later ", ", next ")

Event = tuple[str, str, str, str]  # (shape, colour, motion, background)


def _event_pool() -> list[Event]:
    return [
        (shape, colour, motion, background)
        for shape in SHAPES
        for colour in COLOURS
        for motion in MOTIONS
        for background in BACKGROUNDS
        if (colour, background) not in _CLASHES
    ]


_POOL = _event_pool()




def _shape_mask(shape: str, dx: np.ndarray, dy: np.ndarray, r: float) -> np.ndarray:
    ax, ay = np.abs(dx), np.abs(dy)
    if shape == "circle":
        return dx * dx + dy * dy <= r * r
    if shape == "square":
        return np.maximum(ax, ay) <= 0.85 * r
    if shape == "triangle":  # apex up
        return (dy >= -r) & (dy <= 0.8 * r) & (ax <= (dy + r) * 0.6)
    if shape == "cross":
        return ((ax <= 0.3 * r) & (ay <= r)) | ((ay <= 0.3 * r) & (ax <= r))
    if shape == "ring":
        d2 = dx * dx + dy * dy
        return (d2 <= r * r) & (d2 >= (0.55 * r) ** 2)
    if shape == "bar":  # horizontal
        return (ax <= 1.1 * r) & (ay <= 0.35 * r)
    raise ValueError(f"unknown shape {shape!r}")


def render_event_frames(
    event: Event, n_frames: int, size: int, rng: np.random.Generator
) -> np.ndarray:
    """Draw one event as ``n_frames`` uint8 RGB frames ``[n_frames, size, size, 3]``.

    Moving shapes cross the frame in the named direction over the event (image "up" = towards row
    0); a ``still`` shape stays put and pulses (one grow-and-shrink cycle per event). ``rng`` jitters
    the size and the off-axis position, so two videos holding the same event do not look identical.
    """
    shape, colour, motion, background = event
    radius = size * rng.uniform(0.13, 0.17)
    offset = size * rng.uniform(-0.12, 0.12, size=2)
    frames = np.empty((n_frames, size, size, 3), dtype=np.uint8)
    frames[...] = np.asarray(BACKGROUNDS[background], dtype=np.uint8)
    grid = np.arange(size, dtype=np.float32) + 0.5
    yy, xx = grid[:, None], grid[None, :]
    fg = np.asarray(COLOURS[colour], dtype=np.uint8)
    centre = size / 2.0
    lo, hi = 0.22 * size, 0.78 * size
    for f in range(n_frames):
        t = (f + 0.5) / n_frames
        cx, cy, r = centre + offset[0], centre + offset[1], radius
        if motion == "left":
            cx = hi - (hi - lo) * t
        elif motion == "right":
            cx = lo + (hi - lo) * t
        elif motion == "up":
            cy = hi - (hi - lo) * t
        elif motion == "down":
            cy = lo + (hi - lo) * t
        elif motion == "still":
            r = radius * (1.0 + 0.35 * math.sin(2.0 * math.pi * t))
        else:
            raise ValueError(f"unknown motion {motion!r}")
        frames[f][_shape_mask(shape, xx - cx, yy - cy, r)] = fg
    return frames


def _event_dict(event: Event) -> dict[str, str]:
    shape, colour, motion, background = event
    return {"shape": shape, "colour": colour, "motion": motion, "background": background}


def _caption_text(events: list[Event], template: int, words: int, connector: int) -> str:
    phrases = [
        _EVENT_TEMPLATES[template].format(
            colour=c, shape=s, motion=_MOTION_WORDS[words][m], background=b
        )
        for s, c, m, b in events
    ]
    return _CONNECTORS[connector].join(phrases)
