"""Rendering synthetic scenes: textured backgrounds, then every shape and its part, in order.

Shapes are painted through COCO's own rasteriser rather than ImageDraw: PIL also fills the
outline, about half a pixel all round (a 25 px square gains 5% area), so its pixels would not
match annToMask of the written polygon. This way ground truth and pixels are the same set.
Backgrounds stay inside [BG_LOW, BG_HIGH] on every channel, which no object colour does.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

from pipeline.data.synthetic.scenes import BG_HIGH, BG_LOW, COLOURS, Scene, polygon_mask

TEXTURES = ("gradient", "stripes", "checks", "noise")


def _gradient(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A muted gradient with low-frequency blotches, (H, W, 3) float32."""
    a, b = rng.uniform(95, 165, size=(2, 3))
    theta = rng.uniform(0, 2 * math.pi)
    xx = np.arange(width, dtype=np.float32)[None, :]
    yy = np.arange(height, dtype=np.float32)[:, None]
    t = (xx * math.cos(theta) + yy * math.sin(theta)) / (width + height) + 0.5  # (H, W)
    img = (a + (b - a) * t[..., None]).astype(np.float32)  # (H, W, 3)
    coarse = rng.integers(98, 158, size=(6, 6, 3), dtype=np.uint8)
    blotch = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), np.float32)
    return img + blotch - 128.0


def _stripes(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Sine stripes at a random angle and period between two muted colours."""
    a, b = rng.uniform(90, 170, size=(2, 3))
    theta, period = rng.uniform(0, math.pi), rng.uniform(8, 28)
    xx = np.arange(width, dtype=np.float32)[None, :]
    yy = np.arange(height, dtype=np.float32)[:, None]
    t = 0.5 + 0.5 * np.sin(2 * math.pi * (xx * math.cos(theta) + yy * math.sin(theta)) / period)
    return (a + (b - a) * t[..., None]).astype(np.float32)


def _checks(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A checkerboard of two muted colours with a random cell size."""
    a, b = rng.uniform(90, 170, size=(2, 3))
    cell = int(rng.integers(10, 30))
    yy, xx = np.mgrid[0:height, 0:width]
    t = ((xx // cell + yy // cell) % 2).astype(np.float32)
    return (a + (b - a) * t[..., None]).astype(np.float32)


def _noise(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """Mid-frequency coloured noise: a random 24 x 24 grid upsampled bilinearly."""
    coarse = rng.integers(90, 170, size=(24, 24, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(coarse).resize((width, height), Image.BILINEAR), np.float32)


_MAKERS = {"gradient": _gradient, "stripes": _stripes, "checks": _checks, "noise": _noise}


def background(rng: np.random.Generator, width: int, height: int, textured: bool) -> np.ndarray:
    """(H, W, 3) uint8 inside [BG_LOW, BG_HIGH]: a gradient, or (textured) any of TEXTURES."""
    kind = TEXTURES[int(rng.integers(len(TEXTURES)))] if textured else "gradient"
    img = _MAKERS[kind](rng, width, height)
    img += 6.0 * rng.standard_normal(size=(height, width, 3), dtype=np.float32)  # grain
    return np.clip(img, BG_LOW, BG_HIGH).astype(np.uint8)


def render_scene(scene: Scene, rng: np.random.Generator, textured: bool = False) -> Image.Image:
    """Draw the scene: background from `rng`, then each shape and its part, flat, in order."""
    pixels = background(rng, scene.width, scene.height, textured)
    for obj in scene.objects:
        pixels[polygon_mask(obj.polygon, scene.width, scene.height)] = COLOURS[obj.colour]
        if obj.part is not None:
            part = polygon_mask(obj.part.polygon, scene.width, scene.height)
            pixels[part] = COLOURS[obj.part.colour]
    return Image.fromarray(pixels, "RGB")
