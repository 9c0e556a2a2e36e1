"""Procedural scenes and COCO-style captions: the stimuli of nsd-sim.

A scene is one or two flat-coloured objects on a background. Everything about it is an entry of
an attribute table (a dict of equal-length arrays, one row per scene), so that the brain model,
the captions and the evaluation all read the same facts:

==============  =======  ====================================================================
key             dtype    meaning
==============  =======  ====================================================================
n_objects       int8     1 or 2
shapeK          int8     index into :data:`SHAPES` (K = 1, 2; -1 when object 2 is absent)
colourK         int8     index into :data:`COLOURS`
sizeK           int8     index into :data:`SIZES` (small / medium / large)
radiusK         float32  circumradius as a fraction of the image side, continuous in its class
xK, yK          float32  centre, fractions of the image side; x to the right, y downwards
angleK          float32  rotation in degrees (irrelevant for circle and ring)
background      int8     index into :data:`BACKGROUNDS`
bg_seed         uint32   seed of the background's jitter and texture
==============  =======  ====================================================================

Continuous fields of an absent second object are NaN. The categorical position of an object is
``HPOS[x // (1/3)]`` × ``VPOS[y // (1/3)]`` (:func:`position_words`). Object 2 is drawn over
object 1 and placed so that they overlap little. Some colour/background pairs that would hide
the object (green on grass, blue on water, white on sky, black at night) are never drawn.

Images are 425×425 RGB uint8: a smooth gradient background with mild low-frequency texture
(upsampled from a coarse grid, so it compresses well) and objects drawn with PIL at full size.
"""

from __future__ import annotations

import random

import numpy as np
from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle", "diamond", "star", "cross", "hexagon", "ring")
COLOURS = ("red", "green", "blue", "yellow", "orange", "purple", "white", "black")
SIZES = ("small", "medium", "large")
BACKGROUNDS = ("sky", "grass", "sand", "water", "indoor", "night")
HPOS = ("left", "centre", "right")
VPOS = ("top", "middle", "bottom")

IMAGE_SIZE = 425

#: fill colour of each named colour (RGB)
COLOUR_RGB = np.array(
    [
        (220, 30, 30),  # red
        (30, 170, 50),  # green
        (30, 60, 220),  # blue
        (245, 215, 30),  # yellow
        (245, 140, 20),  # orange
        (140, 50, 180),  # purple
        (245, 245, 245),  # white
        (20, 20, 20),  # black
    ],
    dtype=np.uint8,
)
#: circumradius range (fraction of the image side) of each size class
SIZE_RADIUS = ((0.06, 0.10), (0.11, 0.16), (0.18, 0.24))
#: (top colour, bottom colour) of each background kind before per-image jitter
_BG_COLOURS = {
    "sky": ((70, 130, 215), (185, 215, 240)),
    "grass": ((70, 150, 55), (45, 115, 35)),
    "sand": ((230, 205, 155), (200, 170, 120)),
    "water": ((25, 95, 150), (10, 50, 105)),
    "indoor": ((175, 175, 170), (140, 140, 138)),
    "night": ((5, 8, 30), (25, 30, 70)),
}
_FORBIDDEN = {("green", "grass"), ("blue", "water"), ("white", "sky"), ("black", "night")}

_INT_KEYS = ("shape", "colour", "size")
_FLOAT_KEYS = ("radius", "x", "y", "angle")


def sample_scenes(rng: np.random.Generator, n: int) -> dict[str, np.ndarray]:
    """Draw the attribute table of ``n`` scenes (see the module docstring for the keys)."""
    n = int(n)
    bg = rng.integers(0, len(BACKGROUNDS), n)
    n_obj = np.where(rng.random(n) < 0.5, 1, 2)
    attrs: dict[str, np.ndarray] = {"n_objects": n_obj.astype(np.int8)}
    forbidden = np.zeros((len(COLOURS), len(BACKGROUNDS)), bool)
    for c, b in _FORBIDDEN:
        forbidden[COLOURS.index(c), BACKGROUNDS.index(b)] = True
    placed = []
    for k in (1, 2):
        shape = rng.integers(0, len(SHAPES), n)
        colour = rng.integers(0, len(COLOURS), n)
        for _ in range(50):
            bad = forbidden[colour, bg]
            if not bad.any():
                break
            colour[bad] = rng.integers(0, len(COLOURS), int(bad.sum()))
        size = rng.integers(0, len(SIZES), n)
        lo = np.array([r[0] for r in SIZE_RADIUS])[size]
        hi = np.array([r[1] for r in SIZE_RADIUS])[size]
        radius = lo + (hi - lo) * rng.random(n)
        angle = rng.random(n) * 360.0
        x, y = _positions(rng, radius)
        if k == 2:  # keep object 2 apart from object 1 (a few redraws; the rest may overlap)
            r1, x1, y1 = placed[0]
            for _ in range(20):
                close = np.hypot(x - x1, y - y1) < 0.9 * (radius + r1)
                if not close.any():
                    break
                x[close], y[close] = _positions(rng, radius[close])
        placed.append((radius, x, y))
        absent = n_obj < k
        for name, v in (("shape", shape), ("colour", colour), ("size", size)):
            attrs[f"{name}{k}"] = np.where(absent, -1, v).astype(np.int8)
        for name, v in (("radius", radius), ("x", x), ("y", y), ("angle", angle)):
            attrs[f"{name}{k}"] = np.where(absent, np.nan, v).astype(np.float32)
    attrs["background"] = bg.astype(np.int8)
    attrs["bg_seed"] = rng.integers(0, 2**32, n, dtype=np.uint32)
    return attrs


def _positions(rng, radius):
    """Centres uniform over the positions that keep the object inside the image."""
    margin = radius + 0.02
    x = margin + (1 - 2 * margin) * rng.random(radius.shape)
    y = margin + (1 - 2 * margin) * rng.random(radius.shape)
    return x, y


def shape_twins(attrs: dict[str, np.ndarray], rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The same scenes with only the objects' shapes changed: hard negatives that differ in shape.

    Everything else (background and its seed, colours, sizes, radii, positions, angles) is kept,
    so a twin's render and captions differ from the original's by shape alone. A one-object scene
    gets another shape. A two-object scene with two different shapes has them swapped half of
    the time (the same shapes, bound to the other colours and places); otherwise each object gets
    another shape.
    """
    twin = {k: v.copy() for k, v in attrs.items()}
    n = len(attrs["background"])
    s1, s2 = attrs["shape1"].astype(np.int64), attrs["shape2"].astype(np.int64)
    k = len(SHAPES)
    # another shape: add 1..k-1 (mod k), never the same one
    new1 = (s1 + rng.integers(1, k, n)) % k
    new2 = (s2 + rng.integers(1, k, n)) % k
    swap = (attrs["n_objects"] == 2) & (s1 != s2) & (rng.random(n) < 0.5)
    two = attrs["n_objects"] == 2
    twin["shape1"] = np.where(swap, s2, new1).astype(np.int8)
    twin["shape2"] = np.where(swap, s1, np.where(two, new2, -1)).astype(np.int8)
    return twin


def subset(attrs: dict[str, np.ndarray], idx) -> dict[str, np.ndarray]:
    """The rows ``idx`` of an attribute table."""
    return {k: v[idx] for k, v in attrs.items()}


def position_words(x: float, y: float) -> tuple[str, str]:
    """Categorical position (horizontal, vertical) of a centre in [0, 1]²."""
    h = HPOS[min(2, max(0, int(x * 3)))]
    v = VPOS[min(2, max(0, int(y * 3)))]
    return h, v


# --------------------------------------------------------------------------------------------
# rendering


def _background(kind: str, seed: int) -> np.ndarray:
    """Smooth RGB background (float, 0..255) on a coarse 24×24 grid."""
    g = np.random.default_rng(seed)
    top, bot = (np.asarray(c, float) for c in _BG_COLOURS[kind])
    jitter = g.normal(0, 10, 3)
    top, bot = top + jitter, bot + jitter + g.normal(0, 6, 3)
    n = 24
    yy, xx = np.mgrid[0:n, 0:n] / (n - 1.0)
    tilt = g.uniform(-0.25, 0.25)
    t = np.clip(yy + tilt * (xx - 0.5), 0, 1)[..., None]
    img = top * (1 - t) + bot * t
    coarse = g.normal(0, 1, (5, 5))
    tex = np.asarray(Image.fromarray(coarse.astype(np.float32), "F").resize((n, n), Image.BICUBIC))
    amp = {"sky": 4, "grass": 9, "sand": 6, "water": 5, "indoor": 2, "night": 3}[kind]
    img = img + amp * tex[..., None]
    if kind == "sky":  # soft clouds
        for _ in range(g.integers(1, 4)):
            cx, cy, s = g.uniform(0, 1), g.uniform(0, 0.6), g.uniform(0.08, 0.18)
            w = np.exp(-((xx - cx) ** 2 / (2 * (1.8 * s) ** 2) + (yy - cy) ** 2 / (2 * s**2)))
            img = img + (245 - img) * 0.7 * w[..., None]
    elif kind == "water":  # horizontal waves
        img = img + 8 * np.sin(2 * np.pi * (yy * g.uniform(3, 6) + g.uniform(0, 1)))[..., None]
    elif kind == "sand":  # dunes
        phase = g.uniform(0, 1)
        img = img + 10 * np.sin(2 * np.pi * (yy * 2 + 0.3 * np.sin(2 * np.pi * (xx + phase))))[..., None]
    elif kind == "indoor":  # floor
        floor = np.clip((yy - g.uniform(0.65, 0.8)) * 40, 0, 1)[..., None]
        img = img * (1 - floor) + np.array([110, 98, 85]) * floor
    return np.clip(img, 0, 255)


def _polygon(cx, cy, radii, angles_deg):
    a = np.deg2rad(angles_deg)
    return [(float(cx + r * np.cos(t)), float(cy + r * np.sin(t))) for r, t in zip(radii, a)]


def _regular(cx, cy, r, n, rot):
    return _polygon(cx, cy, [r] * n, rot + np.arange(n) * 360.0 / n)


def _draw_object(draw: ImageDraw.ImageDraw, shape: str, colour, cx, cy, r, angle):
    fill = tuple(int(c) for c in colour)
    edge = tuple(int(c * 0.6) for c in colour)
    w = max(1, int(round(r * 0.04)))
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=edge, width=w)
        return
    if shape == "ring":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), outline=fill, width=max(2, int(round(0.4 * r))))
        return
    if shape == "square":
        pts = _regular(cx, cy, r, 4, angle + 45)
    elif shape == "triangle":
        pts = _regular(cx, cy, r, 3, angle - 90)
    elif shape == "hexagon":
        pts = _regular(cx, cy, r, 6, angle)
    elif shape == "diamond":
        pts = _polygon(cx, cy, [r, 0.6 * r, r, 0.6 * r], angle + np.array([-90, 0, 90, 180]))
    elif shape == "star":
        pts = _polygon(cx, cy, [r, 0.45 * r] * 5, angle - 90 + np.arange(10) * 36.0)
    elif shape == "cross":
        h = 0.3
        base = [(h, 1), (h, h), (1, h), (1, -h), (h, -h), (h, -1),
                (-h, -1), (-h, -h), (-1, -h), (-1, h), (-h, h), (-h, 1)]
        t = np.deg2rad(angle)
        c, s = np.cos(t), np.sin(t)
        pts = [(float(cx + r * (u * c - v * s)), float(cy + r * (u * s + v * c))) for u, v in base]
    else:  # pragma: no cover - SHAPES is closed
        raise ValueError(shape)
    draw.polygon(pts, fill=fill, outline=edge, width=w)


def render_scene(attrs: dict[str, np.ndarray], i: int, pil: bool = False):
    """Render row ``i`` of an attribute table: (425, 425, 3) uint8 RGB (a PIL image if ``pil``)."""
    s = IMAGE_SIZE
    bg = _background(BACKGROUNDS[int(attrs["background"][i])], int(attrs["bg_seed"][i]))
    # smooth at 85 px, then 5×5 blocks (invisible on a gradient; cheap and compressible)
    im = Image.fromarray(np.round(bg).astype(np.uint8), "RGB").resize((s // 5, s // 5), Image.BILINEAR)
    im = im.resize((s, s), Image.NEAREST)
    draw = ImageDraw.Draw(im)
    if BACKGROUNDS[int(attrs["background"][i])] == "night":  # a few stars
        g = np.random.default_rng(int(attrs["bg_seed"][i]) ^ 0x5EED)
        for _ in range(int(g.integers(5, 15))):
            px, py = g.uniform(0, s, 2)
            draw.point((float(px), float(py)), fill=(230, 230, 210))
    for k in range(1, int(attrs["n_objects"][i]) + 1):
        _draw_object(
            draw,
            SHAPES[int(attrs[f"shape{k}"][i])],
            COLOUR_RGB[int(attrs[f"colour{k}"][i])],
            float(attrs[f"x{k}"][i]) * s,
            float(attrs[f"y{k}"][i]) * s,
            float(attrs[f"radius{k}"][i]) * s,
            float(attrs[f"angle{k}"][i]),
        )
    return im if pil else np.asarray(im)


# --------------------------------------------------------------------------------------------
# captions

_SIZE_WORDS = (("small", "little", "tiny"), ("medium-sized", "mid-sized", "medium"), ("large", "big", "huge"))
_BG_WORDS = {
    "sky": ("the sky", "a blue sky", "a cloudy sky"),
    "grass": ("a grassy field", "green grass", "a lawn"),
    "sand": ("sandy ground", "a beach", "the sand"),
    "water": ("water", "the sea", "a lake"),
    "indoor": ("a grey wall", "a plain room", "an indoor wall"),
    "night": ("a night sky", "a dark night sky", "the night"),
}
_POS_WORDS = {
    ("centre", "middle"): ("in the centre", "in the middle"),
    ("left", "middle"): ("on the left", "at the left side"),
    ("right", "middle"): ("on the right", "at the right side"),
    ("centre", "top"): ("at the top", "near the top"),
    ("centre", "bottom"): ("at the bottom", "near the bottom"),
}


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _pos_phrase(h: str, v: str, rng) -> str:
    if (h, v) in _POS_WORDS:
        return rng.choice(_POS_WORDS[(h, v)])
    v2 = {"top": ("top", "upper"), "bottom": ("bottom", "lower")}[v]
    return f"{rng.choice(('in the', 'at the'))} {rng.choice(v2)} {h}"


def _object(attrs, i, k, rng, with_size=True) -> dict[str, str]:
    shape = SHAPES[int(attrs[f"shape{k}"][i])]
    colour = COLOURS[int(attrs[f"colour{k}"][i])]
    size = rng.choice(_SIZE_WORDS[int(attrs[f"size{k}"][i])])
    h, v = position_words(float(attrs[f"x{k}"][i]), float(attrs[f"y{k}"][i]))
    words = f"{size} {colour} {shape}" if with_size and rng.random() < 0.8 else f"{colour} {shape}"
    return {"np": f"{_article(words)} {words}", "shape": shape, "colour": colour,
            "pos": _pos_phrase(h, v, rng)}


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def make_captions(attrs: dict[str, np.ndarray], i: int, rng: np.random.Generator, n: int = 5) -> list[str]:
    """``n`` COCO-style captions of scene ``i``; each names every object's shape and colour.

    Deterministic given the state of ``rng`` (one integer is drawn from it).
    """
    rng = random.Random(int(rng.integers(0, 2**63)))
    bg = BACKGROUNDS[int(attrs["background"][i])]
    n_obj = int(attrs["n_objects"][i])
    if n_obj == 1:
        templates = [
            lambda o, b: f"{_cap(o['np'])} {o['pos']} of {b}.",
            lambda o, b: f"{_cap(o['np'])} against {b}.",
            lambda o, b: f"There is {o['np']} {o['pos']}, with {b} behind it.",
            lambda o, b: f"{_cap(b)} with {o['np']} {o['pos']}.",
            lambda o, b: f"A picture of {o['np']} over {b}.",
            lambda o, b: f"{_cap(o['np'])} floating {o['pos']} in front of {b}.",
            lambda o, b: f"A simple image of one {o['colour']} {o['shape']} on {b}.",
        ]
    else:
        x1, x2 = float(attrs["x1"][i]), float(attrs["x2"][i])

        def rel(o1, o2):
            if x1 < x2 - 0.15:
                return f"{o1['np']} to the left of {o2['np']}"
            if x1 > x2 + 0.15:
                return f"{o1['np']} to the right of {o2['np']}"
            return f"{o1['np']} next to {o2['np']}"

        templates = [
            lambda o1, o2, b: f"Two objects: {o1['np']} and {o2['np']} on {b}.",
            lambda o1, o2, b: f"{_cap(o1['np'])} {o1['pos']} and {o2['np']} {o2['pos']}, {b} in the background.",
            lambda o1, o2, b: f"{_cap(rel(o1, o2))} against {b}.",
            lambda o1, o2, b: f"{_cap(b)} with two shapes, {o1['np']} and {o2['np']}.",
            lambda o1, o2, b: f"{_cap(_article(o1['colour']))} {o1['colour']} {o1['shape']} and "
            f"{_article(o2['colour'])} {o2['colour']} {o2['shape']} over {b}.",
            lambda o1, o2, b: f"There are two shapes, {o2['np']} {o2['pos']} and {o1['np']} {o1['pos']}.",
        ]
    order = list(range(len(templates)))
    rng.shuffle(order)
    out = []
    for j in range(n):
        t = templates[order[j % len(templates)]]
        b = rng.choice(_BG_WORDS[bg])
        objs = [_object(attrs, i, k, rng) for k in range(1, n_obj + 1)]
        out.append(t(*objs, b))
    return out


def readable(attrs: dict[str, np.ndarray]) -> dict[str, list]:
    """The attribute table with words instead of codes (for ``stimuli.tsv``)."""
    n = len(attrs["background"])
    out: dict[str, list] = {"n_objects": [int(v) for v in attrs["n_objects"]]}
    for k in (1, 2):
        for name, table in (("shape", SHAPES), ("colour", COLOURS), ("size", SIZES)):
            out[f"{name}{k}"] = [table[int(c)] if c >= 0 else "" for c in attrs[f"{name}{k}"]]
        for name in ("radius", "x", "y"):
            out[f"{name}{k}"] = [float(v) for v in attrs[f"{name}{k}"]]
        out[f"position{k}"] = [
            " ".join(position_words(float(x), float(y))[::-1]) if np.isfinite(x) else ""
            for x, y in zip(attrs[f"x{k}"], attrs[f"y{k}"])
        ]
    out["background"] = [BACKGROUNDS[int(c)] for c in attrs["background"]]
    assert all(len(v) == n for v in out.values())
    return out
