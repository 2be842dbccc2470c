"""Scenes of the synthetic referring dataset and the expressions that refer into them.

A scene is plain data (class, colour, centre, size and polygon of every shape). `render_scene`
paints each shape over the COCO mask of the very polygon that becomes its ground truth, so
annToMask and the pixels agree exactly. Shapes never overlap, so every polygon is also the
object's visible area.

An `Expression` is a predicate over a scene's objects (a noun phrase plus at most one position,
size or relation constraint) that also knows its wordings; `describe` keeps only expressions that
exactly one object satisfies, so no sentence written from them is ambiguous.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image
from pycocotools import mask as mask_utils

# Category ids are positions in this tuple plus one; changing it changes every written dataset.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon", "cross")

# Every colour has a channel outside the background's [BG_LOW, BG_HIGH] range, so no background
# pixel can ever equal an object colour (the format tests find objects by exact colour).
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 40),
    "green": (30, 170, 60),
    "blue": (30, 70, 220),
    "yellow": (240, 210, 30),
    "purple": (140, 50, 200),
    "orange": (250, 140, 20),
}
BG_LOW, BG_HIGH = 70, 190

MIN_RADIUS, MAX_RADIUS = 0.08, 0.17  # circumradius as a share of the image's shorter side
EDGE = 4.0  # pixels kept free between a shape and the image border
PLACE_TRIES = 60  # placement attempts per shape before a crowded scene settles for fewer
CIRCLE_SIDES = 40  # circles are 40-gons: smooth to the eye, exact as a COCO polygon
POS_GAP = 0.10  # positions must differ by this share of the shorter side to be told apart
SIZE_RATIO = 1.6  # "largest" needs this area ratio over the runner-up
REGION_MARGIN = 0.04  # share of width/height an object must sit inside a grid cell to be "in" it


@dataclass(frozen=True)
class SceneObject:
    """One shape of a scene, in pixel coordinates of its image."""

    shape: str  # one of SHAPES
    colour: str  # a key of COLOURS
    cx: float  # centre x
    cy: float  # centre y
    radius: float  # circumradius
    polygon: tuple[float, ...]  # x1, y1, x2, y2, ... (COCO order), rounded to 0.01 px
    area: float  # polygon area (shoelace), the size the "largest/smallest" predicates compare

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """COCO xywh box of the polygon."""
        xs, ys = self.polygon[0::2], self.polygon[1::2]
        return (min(xs), min(ys), round(max(xs) - min(xs), 2), round(max(ys) - min(ys), 2))


@dataclass(frozen=True)
class Scene:
    """The shapes of one image and its size."""

    width: int
    height: int
    objects: tuple[SceneObject, ...]


# Regular outlines as data: (vertices, radii cycled over the vertices, angle of the first one).
_REGULAR: dict[str, tuple[int, tuple[float, ...], float]] = {
    "circle": (CIRCLE_SIDES, (1.0,), 0.0),
    "square": (4, (1.0,), math.pi / 4),
    "triangle": (3, (1.0,), -math.pi / 2),
    "star": (10, (1.0, 0.45), -math.pi / 2),
    "hexagon": (6, (1.0,), 0.0),
}


def _unit_outline(shape: str) -> list[tuple[float, float]]:
    """Vertices of a shape with circumradius 1, pointing up (y grows downwards as in images)."""
    if shape == "cross":
        a = 1.0 / math.sqrt(1.0 + 0.33**2)  # arm tips sit on the unit circle
        b = 0.33 * a
        return [(-b, -a), (b, -a), (b, -b), (a, -b), (a, b), (b, b),
                (b, a), (-b, a), (-b, b), (-a, b), (-a, -b), (-b, -b)]  # fmt: skip
    if shape not in _REGULAR:
        raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")
    n, radii, start = _REGULAR[shape]
    return [
        (radii[k % len(radii)] * math.cos(start + 2 * math.pi * k / n),
         radii[k % len(radii)] * math.sin(start + 2 * math.pi * k / n))
        for k in range(n)
    ]  # fmt: skip


def shape_polygon(
    shape: str, cx: float, cy: float, radius: float, angle: float
) -> tuple[float, ...]:
    """The flat COCO polygon of a shape, rotated by `angle` radians about its centre."""
    c, s = math.cos(angle), math.sin(angle)
    flat: list[float] = []
    for x, y in _unit_outline(shape):
        flat += [round(cx + radius * (c * x - s * y), 2), round(cy + radius * (s * x + c * y), 2)]
    return tuple(flat)


def polygon_area(flat: tuple[float, ...]) -> float:
    """Shoelace area of a flat polygon."""
    xs, ys = np.asarray(flat[0::2]), np.asarray(flat[1::2])
    return float(0.5 * abs(np.dot(xs, np.roll(ys, -1)) - np.dot(ys, np.roll(xs, -1))))


def _attributes(
    rng: np.random.Generator, placed: list[SceneObject], share_prob: float
) -> tuple[str, str]:
    """Class and colour of the next shape; often one is copied so scenes hold distractors."""
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    if placed and rng.random() < share_prob:
        model = placed[int(rng.integers(len(placed)))]
        if rng.random() < 0.5:
            shape = model.shape
        else:
            colour = model.colour
    return shape, colour


def make_scene(
    rng: np.random.Generator, width: int, height: int, n_objects: int, share_prob: float
) -> Scene:
    """Place up to `n_objects` non-overlapping shapes; a crowded scene may hold fewer (>= 1)."""
    side = min(width, height)
    gap = 0.04 * side  # free space between shapes, so "same colour" neighbours never touch
    placed: list[SceneObject] = []
    for _ in range(n_objects):
        shape, colour = _attributes(rng, placed, share_prob)
        for attempt in range(PLACE_TRIES):
            # Later attempts draw smaller shapes, so a crowded scene still fits most of them.
            top = MAX_RADIUS - (MAX_RADIUS - MIN_RADIUS) * attempt / PLACE_TRIES
            r = float(rng.uniform(MIN_RADIUS, top)) * side
            cx = float(rng.uniform(r + EDGE, width - r - EDGE))
            cy = float(rng.uniform(r + EDGE, height - r - EDGE))
            if all(math.hypot(cx - o.cx, cy - o.cy) >= r + o.radius + gap for o in placed):
                break
        else:
            continue
        # Small tilts only: a square stays a square, not a diamond; a triangle keeps pointing up.
        angle = float(rng.uniform(-0.3, 0.3)) if shape != "circle" else 0.0
        poly = shape_polygon(shape, cx, cy, r, angle)
        placed.append(
            SceneObject(
                shape, colour, round(cx, 2), round(cy, 2), round(r, 2), poly, polygon_area(poly)
            )
        )
    return Scene(width, height, tuple(placed))


def _background(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A muted gradient with blotches and grain, never flat, inside [BG_LOW, BG_HIGH]."""
    a, b = rng.uniform(95, 165, size=(2, 3))
    theta = rng.uniform(0, 2 * math.pi)
    xx = np.arange(width, dtype=np.float32)[None, :]
    yy = np.arange(height, dtype=np.float32)[:, None]
    t = (xx * math.cos(theta) + yy * math.sin(theta)) / (width + height) + 0.5  # (H, W)
    img = (a + (b - a) * t[..., None]).astype(np.float32)  # (H, W, 3)
    # Low-frequency blotches: a coarse random grid upsampled bicubically.
    coarse = rng.integers(98, 158, size=(6, 6, 3), dtype=np.uint8)
    blotch = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), np.float32)
    img += blotch - 128.0
    img += 6.0 * rng.standard_normal(size=(height, width, 3), dtype=np.float32)  # grain
    return np.clip(img, BG_LOW, BG_HIGH).astype(np.uint8)


def polygon_mask(flat: tuple[float, ...], width: int, height: int) -> np.ndarray:
    """(H, W) bool: the pixels COCO's rasteriser (what annToMask uses) gives the polygon."""
    with warnings.catch_warnings():
        # pycocotools' decode passes copy=False to numpy 2's __array__: a harmless warning.
        warnings.simplefilter("ignore", DeprecationWarning)
        rles = mask_utils.frPyObjects([list(flat)], height, width)
        return mask_utils.decode(rles)[..., 0].astype(bool)


def render_scene(scene: Scene, rng: np.random.Generator) -> Image.Image:
    """Draw the scene: background from `rng`, each shape filled flat over its polygon's mask.

    Shapes are painted through COCO's own rasteriser rather than ImageDraw: PIL also fills the
    outline, about half a pixel all round (a 25 px square gains 5% area), so its pixels would not
    match annToMask of the written polygon. This way ground truth and pixels are the same set.
    """
    pixels = _background(rng, scene.width, scene.height)
    for obj in scene.objects:
        pixels[polygon_mask(obj.polygon, scene.width, scene.height)] = COLOURS[obj.colour]
    return Image.fromarray(pixels, "RGB")


# --- expressions: predicates over a scene ------------------------------------------------------

# Wordings per (kind, arg); "{n}" is the referent's noun phrase, "{m}" the landmark's.
WORDINGS: dict[tuple[str, str], tuple[str, ...]] = {
    ("plain", ""): ("the {n}", "{n}"),
    ("extreme", "left"): ("the {n} on the left", "the leftmost {n}", "left {n}"),
    ("extreme", "right"): ("the {n} on the right", "the rightmost {n}", "right {n}"),
    ("extreme", "top"): ("the {n} at the top", "the topmost {n}", "top {n}"),
    ("extreme", "bottom"): ("the {n} at the bottom", "the lowest {n}", "bottom {n}"),
    ("size", "largest"): ("the largest {n}", "the biggest {n}", "big {n}"),
    ("size", "smallest"): ("the smallest {n}", "the tiny {n}", "small {n}"),
    ("region", "top left"): ("the {n} in the top left corner", "{n} in the top left"),
    ("region", "top right"): ("the {n} in the top right corner", "{n} in the top right"),
    ("region", "bottom left"): ("the {n} in the bottom left corner", "{n} in the bottom left"),
    ("region", "bottom right"): ("the {n} in the bottom right corner", "{n} in the bottom right"),
    ("region", "middle"): ("the {n} in the middle", "the {n} in the center"),
    ("relation", "left of"): ("the {n} left of the {m}", "the {n} to the left of the {m}"),
    ("relation", "right of"): ("the {n} right of the {m}", "the {n} to the right of the {m}"),
    ("relation", "above"): ("the {n} above the {m}", "{n} above the {m}"),
    ("relation", "below"): ("the {n} below the {m}", "the {n} under the {m}"),
}
# Grid cells as (x_lo, x_hi, y_lo, y_hi) shares of the image; open edges reach past the border.
REGIONS = {
    "top left": (-1.0, 1 / 3, -1.0, 1 / 3),
    "top right": (2 / 3, 2.0, -1.0, 1 / 3),
    "bottom left": (-1.0, 1 / 3, 2 / 3, 2.0),
    "bottom right": (2 / 3, 2.0, 2 / 3, 2.0),
    "middle": (1 / 3, 2 / 3, 1 / 3, 2 / 3),
}
Noun = tuple[str, str | None]  # (shape, colour or None)


def _is(noun: Noun, o: SceneObject) -> bool:
    return o.shape == noun[0] and noun[1] in (None, o.colour)


def _lead(value: float, rivals: list[float], margin: float, strict: bool) -> bool:
    """Is `value` the maximum: clearly (strict, for the referent) or arguably (for the others)?"""
    lead = value - max(rivals)
    return lead >= margin if strict else lead > -margin


@dataclass(frozen=True)
class Expression:
    """A referring expression as a predicate: a noun phrase plus at most one constraint."""

    shape: str
    colour: str | None = None  # None: the noun is the bare class word
    kind: str = "plain"  # plain | extreme | size | region | relation
    arg: str = ""  # the constraint, a key of WORDINGS together with kind
    landmark: Noun | None = None  # relation only: the second noun phrase, naming one object

    def holds(self, scene: Scene, i: int, strict: bool) -> bool:
        """Whether object i satisfies the expression; strict = clearly, else = arguably."""
        o, objs = scene.objects[i], scene.objects
        if not _is((self.shape, self.colour), o):
            return False
        group = [q for q in objs if _is((self.shape, self.colour), q) and q is not o]
        gap = POS_GAP * min(scene.width, scene.height)
        if self.kind == "plain":
            return True
        if self.kind == "extreme":
            across = self.arg in ("left", "right")
            sign = -1 if self.arg in ("left", "top") else 1

            def key(q: SceneObject) -> float:
                return sign * (q.cx if across else q.cy)

            # Alone in its group, "on the left" must still be true of the image: rival = centre.
            centre = sign * (scene.width if across else scene.height) / 2
            return _lead(key(o), [key(q) for q in group] or [centre], gap, strict)
        if self.kind == "size":
            sign = 1 if self.arg == "largest" else -1
            rivals = [sign * math.log(q.area) for q in group]
            return bool(rivals) and _lead(
                sign * math.log(o.area), rivals, math.log(SIZE_RATIO), strict
            )
        if self.kind == "region":
            x0, x1, y0, y1 = REGIONS[self.arg]
            m = REGION_MARGIN if strict else -REGION_MARGIN
            x, y = o.cx / scene.width, o.cy / scene.height
            return x0 + m <= x <= x1 - m and y0 + m <= y <= y1 - m
        if self.kind == "relation" and self.landmark is not None:
            marks = [q for q in objs if _is(self.landmark, q)]
            if len(marks) != 1 or marks[0] is o:
                return False
            dx, dy = marks[0].cx - o.cx, marks[0].cy - o.cy
            along, across = {"left of": (dx, dy), "right of": (-dx, dy),
                             "above": (dy, dx), "below": (-dy, dx)}[self.arg]  # fmt: skip
            if strict:
                return along >= gap and along >= abs(across)
            return along > 0 and along >= 0.5 * abs(across)
        raise ValueError(f"unknown expression kind {self.kind!r}")

    def refers_to(self, scene: Scene, i: int) -> bool:
        """True when object i clearly satisfies the expression and no other object arguably does."""
        return self.holds(scene, i, strict=True) and not any(
            self.holds(scene, j, strict=False) for j in range(len(scene.objects)) if j != i
        )

    def text(self, wording: int = 0) -> str:
        """The sentence, in the given wording variant (taken modulo the number of variants)."""
        variants = WORDINGS[(self.kind, self.arg)]
        lm = _noun_text(*self.landmark) if self.landmark else ""
        return variants[wording % len(variants)].format(n=_noun_text(self.shape, self.colour), m=lm)

    @property
    def n_noun_phrases(self) -> int:
        """2 for relations (referent and landmark), else 1."""
        return 2 if self.landmark is not None else 1

    @property
    def complexity(self) -> tuple[int, bool, bool, int]:
        """Sort key of the simplest description: fewer noun phrases, then no position or size
        constraint, then no colour, then fewer characters."""
        return (
            self.n_noun_phrases,
            self.kind != "plain",
            self.colour is not None,
            len(self.text()),
        )


def _noun_text(shape: str, colour: str | None) -> str:
    return f"{colour} {shape}" if colour else shape


def describe(
    scene: Scene, i: int, rng: np.random.Generator, k: int
) -> list[tuple[Expression, str]]:
    """Up to k unambiguous (expression, sentence) pairs for object i: the simplest first, then
    varied kinds. Empty when nothing in the vocabulary singles the object out."""
    o = scene.objects[i]
    landmarks = sorted(
        {(q.shape, c) for q in scene.objects if q is not o for c in (None, q.colour)},
        key=lambda n: (n[0], n[1] or ""),
    )
    found = []
    for colour in (None, o.colour):
        for kind, arg in WORDINGS:
            for lm in landmarks if kind == "relation" else [None]:
                e = Expression(o.shape, colour, kind, arg, lm)
                if e.refers_to(scene, i):
                    found.append(e)
    if not found:
        return []
    simplest = min(e.complexity for e in found)
    tied = [e for e in found if e.complexity == simplest]
    out = [(first := tied[int(rng.integers(len(tied)))], first.text())]
    # The rest: round-robin over kinds in random order, a random expression and wording of each.
    by_kind: dict[str, list[Expression]] = {}
    for e in found:
        if e != first:
            by_kind.setdefault(e.kind, []).append(e)
    kinds = [list(by_kind)[j] for j in rng.permutation(len(by_kind))]
    for step in range(4 * k):
        if len(out) >= k or not kinds:
            break
        pool = by_kind[kinds[step % len(kinds)]]
        e = pool[int(rng.integers(len(pool)))]
        text = e.text(int(rng.integers(3)))
        if text not in {t for _, t in out}:
            out.append((e, text))
    return out
