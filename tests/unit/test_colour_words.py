"""Colour words read from pixels (pipeline.labelling.composites.colour)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.data.synthetic.scenes import COLOURS
from pipeline.labelling.composites.colour import TERMS, colour_term, pixel_terms

# Hand-picked pixels and the word an English speaker gives them.
NAMED = {
    (255, 0, 0): "red",
    (180, 20, 30): "red",
    (255, 165, 0): "orange",
    (139, 69, 19): "brown",
    (250, 230, 20): "yellow",
    (34, 139, 34): "green",
    (0, 200, 200): "cyan",
    (20, 40, 230): "blue",
    (128, 0, 128): "purple",
    (255, 20, 147): "pink",
    (255, 182, 193): "pink",
    (255, 255, 255): "white",
    (10, 10, 10): "black",
    (128, 128, 128): "gray",
    (114, 114, 114): "gray",
}


def test_pixels_get_their_basic_colour_term() -> None:
    pixels = np.array(list(NAMED), np.uint8)
    assert [TERMS[i] for i in pixel_terms(pixels)] == list(NAMED.values())


def test_the_synthetic_palette_is_named_as_its_own_words() -> None:
    # The world's colour words are not read by the namer: this checks it agrees with them.
    pixels = np.array(list(COLOURS.values()), np.uint8)
    assert [TERMS[i] for i in pixel_terms(pixels)] == list(COLOURS)


def test_an_object_needs_a_clear_majority() -> None:
    image = np.zeros((10, 10, 3), np.uint8)
    image[:, :6] = (220, 30, 40)  # 60 % red
    image[:, 6:] = (30, 70, 220)  # 40 % blue
    everything = np.ones((10, 10), bool)
    assert colour_term(image, everything, 0.6) == "red"
    assert colour_term(image, everything, 0.7) is None  # striped: no word
    right = np.zeros((10, 10), bool)
    right[:, 6:] = True
    assert colour_term(image, right, 0.6) == "blue"  # only the mask's pixels count
    assert colour_term(image, np.zeros((10, 10), bool), 0.6) is None
    with pytest.raises(ValueError, match="min_share"):
        colour_term(image, everything, 0.0)
