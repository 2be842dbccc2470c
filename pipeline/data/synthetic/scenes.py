"""Scenes of the synthetic referring dataset: shapes, their placement and their rendering.

A scene is plain data (class, colour, centre, size and polygon of every shape). `render_scene`
paints each shape over the COCO mask of the very polygon that becomes its ground truth, so
annToMask and the pixels agree exactly. Shapes never overlap, so every polygon is also the
object's visible area.
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
