"""Colour words read from pixels: the basic colour term of a pseudo-labelled object, if it has one.

D_ref's expressions say where the referent is ("the dog on the left"); with
`augment.colour_words` they also say what colour it is ("the white dog on the left") when the
pixels inside its pseudo-label say so clearly. The word comes from the image, never from a
dataset's annotation: every pixel in the mask gets one of the basic colour terms below by its
hue, saturation and value, and the object gets the term that most of its pixels share, when that
share reaches `min_share` (else no word: a striped, patterned or multi-coloured object is named
by its class alone). A pseudo-label that covers only a part names the part's colour, as a reader
shown that mask would.

Terms and bins (hue in degrees on HSV's circle; saturation and value in [0, 1]):
achromatic pixels (saturation under 0.25 or value under 0.2) are black (value < 0.2), white
(value > 0.8 and saturation < 0.15) or gray; chromatic pixels are red (hue < 15 or ≥ 345; pink
when light: value > 0.7 and saturation < 0.5), orange (15-45; brown when value < 0.55), yellow
(45-70), green (70-170), cyan (170-200), blue (200-260), purple (260-320) or pink (320-345).
These are the usual hue names of the eleven basic colour terms (Berlin and Kay) plus cyan; they
are fixed here, not fitted to any dataset.
"""

from __future__ import annotations

import numpy as np

# (term, lower hue bound in degrees): a chromatic pixel takes the last term whose bound its hue
# reaches; hues from 345 wrap round to red.
HUES: tuple[tuple[str, float], ...] = (
    ("red", 0.0),
    ("orange", 15.0),
    ("yellow", 45.0),
    ("green", 70.0),
    ("cyan", 170.0),
    ("blue", 200.0),
    ("purple", 260.0),
    ("pink", 320.0),
    ("red", 345.0),
)
TERMS: tuple[str, ...] = ("black", "white", "gray", "brown", *dict.fromkeys(t for t, _ in HUES))
MIN_SATURATION = 0.25  # below: achromatic
DARK, LIGHT = 0.2, 0.8  # value bounds of black and white
WHITE_SATURATION = 0.15  # white also needs saturation under this
BROWN_VALUE = 0.55  # a dark orange is brown
PINK_VALUE, PINK_SATURATION = 0.7, 0.5  # a light red is pink


def pixel_terms(pixels: np.ndarray) -> np.ndarray:
    """(N, 3) uint8 RGB → (N,) indices into TERMS."""
    rgb = pixels.reshape(-1, 3).astype(np.float64) / 255.0
    high, low = rgb.max(axis=1), rgb.min(axis=1)
    chroma = high - low
    saturation = np.where(high > 0, chroma / np.where(high > 0, high, 1.0), 0.0)
    r, g, b = rgb.T
    safe = np.where(chroma > 0, chroma, 1.0)
    hue = (
        np.select(
            [high == r, high == g],
            [((g - b) / safe) % 6.0, (b - r) / safe + 2.0],
            (r - g) / safe + 4.0,
        )
        * 60.0
    )
    bounds = np.array([bound for _, bound in HUES])
    chromatic = np.array([TERMS.index(term) for term, _ in HUES])[
        np.searchsorted(bounds, hue, side="right") - 1
    ]
    orange, red = TERMS.index("orange"), TERMS.index("red")
    chromatic = np.where((chromatic == orange) & (high < BROWN_VALUE), TERMS.index("brown"),
                         chromatic)  # fmt: skip
    light = (high > PINK_VALUE) & (saturation < PINK_SATURATION)
    chromatic = np.where((chromatic == red) & light, TERMS.index("pink"), chromatic)
    achromatic = np.where(
        high < DARK,
        TERMS.index("black"),
        np.where((high > LIGHT) & (saturation < WHITE_SATURATION), TERMS.index("white"),
                 TERMS.index("gray")),
    )  # fmt: skip
    return np.where((saturation < MIN_SATURATION) | (high < DARK), achromatic, chromatic)


def colour_term(image: np.ndarray, mask: np.ndarray, min_share: float) -> str | None:
    """The basic colour term most pixels of `image` (H, W, 3) uint8 inside `mask` (H, W) bool
    share, if at least `min_share` of them do; None for an empty mask or no clear majority."""
    if not 0.0 < min_share <= 1.0:
        raise ValueError(f"min_share {min_share}: give a share in (0, 1]")
    pixels = image[mask]
    if pixels.size == 0:
        return None
    counts = np.bincount(pixel_terms(pixels), minlength=len(TERMS))
    best = int(counts.argmax())
    return TERMS[best] if counts[best] >= min_share * counts.sum() else None
