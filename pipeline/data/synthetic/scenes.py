"""Scenes of the synthetic referring dataset: shapes, their parts, placement and visible masks.

A scene is plain data (class, colour, centre, size, polygon and optional inner part of every
shape). Shapes are drawn in list order, so a later shape covers an earlier one where they overlap
(`SceneConfig.overlap_prob`); an object's ground truth is its *visible* area, `visible_masks`.
A part (`SceneConfig.part_prob`) is a smaller shape of another colour inside its object's
polygon: it belongs to the object's ground truth, and it is what SAM returns when it is prompted
inside it, the part-versus-whole ambiguity that CLIP's salient responses lead SAM into.

`make_object_scene` makes the object-centric images (the D_sem analogue of ImageNet): one large
shape near the centre, with a part and a textured background like any scene.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from pycocotools import mask as mask_utils

# Category ids are positions in this tuple plus one; changing it changes every written dataset.
SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "hexagon", "cross")
PART_SHAPES: tuple[str, ...] = ("circle", "square", "triangle")  # compact: they fit inside

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
OBJECT_RADIUS = (0.36, 0.44)  # object-centric images: the one shape's radius, same units
EDGE = 4.0  # pixels kept free between a shape and the image border
PLACE_TRIES = 60  # placement attempts per shape before a crowded scene settles for fewer
CIRCLE_SIDES = 40  # circles are 40-gons: smooth to the eye, exact as a COCO polygon
MIN_VISIBLE = 0.6  # an occluded shape keeps at least this share of its area visible
PART_SCALE = (0.32, 0.48)  # part circumradius / object circumradius


@dataclass(frozen=True)
class SceneConfig:
    """How hard scenes are (the `synthetic` section of params.yaml holds these keys)."""

    share_prob: float = 0.6  # chance a shape copies the class or colour of an earlier one
    part_prob: float = 0.4  # chance a shape carries an inner part of another colour
    overlap_prob: float = 0.15  # chance a shape may overlap (and cover) one placed before it
    textured: bool = True  # stripes, checks and noise backgrounds besides smooth gradients


@dataclass(frozen=True)
class Part:
    """An inner part of a shape: its own class and colour, inside the shape's polygon."""

    shape: str  # one of PART_SHAPES
    colour: str  # a key of COLOURS, never the object's own
    polygon: tuple[float, ...]  # flat COCO polygon, pixels of the image


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
    part: Part | None = None

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        """COCO xywh box of the polygon."""
        xs, ys = self.polygon[0::2], self.polygon[1::2]
        return (min(xs), min(ys), round(max(xs) - min(xs), 2), round(max(ys) - min(ys), 2))

    @property
    def colours(self) -> tuple[str, ...]:
        """Every colour word that describes a pixel of the object (its own, then its part's)."""
        return (self.colour,) if self.part is None else (self.colour, self.part.colour)


@dataclass(frozen=True)
class Scene:
    """The shapes of one image and its size; later shapes cover earlier ones."""

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


def polygon_mask(flat: tuple[float, ...], width: int, height: int) -> np.ndarray:
    """(H, W) bool: the pixels COCO's rasteriser (what annToMask uses) gives the polygon."""
    with warnings.catch_warnings():
        # pycocotools' decode passes copy=False to numpy 2's __array__: a harmless warning.
        warnings.simplefilter("ignore", DeprecationWarning)
        rles = mask_utils.frPyObjects([list(flat)], height, width)
        return mask_utils.decode(rles)[..., 0].astype(bool)


def visible_masks(scene: Scene) -> list[np.ndarray]:
    """(H, W) bool per object: its polygon minus every later object's (what the image shows)."""
    full = [polygon_mask(o.polygon, scene.width, scene.height) for o in scene.objects]
    covered = np.zeros((scene.height, scene.width), dtype=bool)
    out = []
    for mask in reversed(full):
        out.append(mask & ~covered)
        covered |= mask
    return out[::-1]


def part_masks(scene: Scene, visible: list[np.ndarray]) -> list[np.ndarray | None]:
    """(H, W) bool per object: the visible pixels of its part, None for objects without one."""
    return [
        None if o.part is None else polygon_mask(o.part.polygon, scene.width, scene.height) & vis
        for o, vis in zip(scene.objects, visible, strict=True)
    ]


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


def _make_part(rng: np.random.Generator, obj: SceneObject, width: int, height: int) -> Part | None:
    """A part of another colour inside `obj`'s polygon, or None when none fits (thin shapes)."""
    shape = PART_SHAPES[int(rng.integers(len(PART_SHAPES)))]
    colour = [c for c in COLOURS if c != obj.colour][int(rng.integers(len(COLOURS) - 1))]
    scale = float(rng.uniform(*PART_SCALE))
    theta, shift = float(rng.uniform(0, 2 * math.pi)), float(rng.uniform(0.0, 0.25))
    outer = polygon_mask(obj.polygon, width, height)
    for _ in range(4):  # shrink towards the centre until the part lies inside the object
        r = scale * obj.radius
        cx = obj.cx + shift * obj.radius * math.cos(theta)
        cy = obj.cy + shift * obj.radius * math.sin(theta)
        poly = shape_polygon(shape, cx, cy, r, 0.0)
        inner = polygon_mask(poly, width, height)
        if inner.sum() >= 12 and not (inner & ~outer).any():
            return Part(shape, colour, poly)
        scale, shift = 0.75 * scale, 0.5 * shift
    return None


def _fits(
    obj: SceneObject, placed: list[SceneObject], gap: float, overlap: bool, width: int, height: int
) -> bool:
    """Whether `obj` may join `placed`: apart by `gap`, or (overlap) covering others partly."""
    close = [
        o for o in placed if math.hypot(obj.cx - o.cx, obj.cy - o.cy) < obj.radius + o.radius + gap
    ]
    if not close:
        return True
    if not overlap or len(close) > 1:
        return False
    other = close[0]
    if math.hypot(obj.cx - other.cx, obj.cy - other.cy) < 0.8 * max(obj.radius, other.radius):
        return False  # centres well apart: "the X" still names a shape one can point at
    under = polygon_mask(other.polygon, width, height)
    left = under & ~polygon_mask(obj.polygon, width, height)
    return left.sum() >= MIN_VISIBLE * under.sum()


def make_scene(
    rng: np.random.Generator,
    width: int,
    height: int,
    n_objects: int,
    cfg: SceneConfig | float = SceneConfig(),
) -> Scene:
    """Place up to `n_objects` shapes (a crowded scene may hold fewer, at least 1).

    `cfg` may be a bare share probability (the easy scenes of generator version 1: no parts,
    no overlap).
    """
    if not isinstance(cfg, SceneConfig):
        cfg = SceneConfig(share_prob=float(cfg), part_prob=0.0, overlap_prob=0.0, textured=False)
    side = min(width, height)
    gap = 0.04 * side  # free space between shapes, so "same colour" neighbours never touch
    placed: list[SceneObject] = []
    for _ in range(n_objects):
        shape, colour = _attributes(rng, placed, cfg.share_prob)
        overlap = cfg.overlap_prob > 0 and rng.random() < cfg.overlap_prob
        for attempt in range(PLACE_TRIES):
            # Later attempts draw smaller shapes, so a crowded scene still fits most of them.
            top = MAX_RADIUS - (MAX_RADIUS - MIN_RADIUS) * attempt / PLACE_TRIES
            r = float(rng.uniform(MIN_RADIUS, top)) * side
            cx = float(rng.uniform(r + EDGE, width - r - EDGE))
            cy = float(rng.uniform(r + EDGE, height - r - EDGE))
            # Small tilts only: a square stays a square, a triangle keeps pointing up.
            angle = float(rng.uniform(-0.3, 0.3)) if shape != "circle" else 0.0
            poly = shape_polygon(shape, cx, cy, r, angle)
            obj = SceneObject(
                shape, colour, round(cx, 2), round(cy, 2), round(r, 2), poly, polygon_area(poly)
            )
            if _fits(obj, placed, gap, overlap, width, height):
                break
        else:
            continue
        placed.append(_with_part(rng, obj, cfg, width, height))
    return Scene(width, height, tuple(placed))


def _with_part(
    rng: np.random.Generator, obj: SceneObject, cfg: SceneConfig, width: int, height: int
) -> SceneObject:
    if cfg.part_prob <= 0 or rng.random() >= cfg.part_prob:
        return obj
    part = _make_part(rng, obj, width, height)
    return obj if part is None else SceneObject(**{**obj.__dict__, "part": part})


def make_object_scene(
    rng: np.random.Generator, width: int, height: int, cfg: SceneConfig = SceneConfig()
) -> Scene:
    """An object-centric image: one large shape near the centre (ImageNet's role, D_sem)."""
    side = min(width, height)
    shape = SHAPES[int(rng.integers(len(SHAPES)))]
    colour = list(COLOURS)[int(rng.integers(len(COLOURS)))]
    r = float(rng.uniform(*OBJECT_RADIUS)) * side
    cx = width / 2 + float(rng.uniform(-0.04, 0.04)) * side
    cy = height / 2 + float(rng.uniform(-0.04, 0.04)) * side
    angle = float(rng.uniform(-0.3, 0.3)) if shape != "circle" else 0.0
    poly = shape_polygon(shape, cx, cy, r, angle)
    obj = SceneObject(
        shape, colour, round(cx, 2), round(cy, 2), round(r, 2), poly, polygon_area(poly)
    )
    return Scene(width, height, (_with_part(rng, obj, cfg, width, height),))
