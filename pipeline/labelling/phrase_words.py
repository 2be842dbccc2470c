"""The vocabulary of candidate-phrase extraction: words and parts of speech that name no object.

Measured on the 67k RefCOCO/+/g val/test expressions (bench/phrase_stats.py); read by
`pipeline.labelling.phrases`, whose module docstring says how each list is used.
"""

from __future__ import annotations


def _words(text: str) -> frozenset[str]:
    """A word list written as text (reads better than 40 quoted strings)."""
    return frozenset(text.split())


# Lower-cased words that locate something but name nothing (measured on RefCOCO/+/g val/test:
# "the right", "front", "the back", "top", "the middle", "side", "center", "corner", "edge" are
# among the most frequent chunk roots; "in view", "out of focus", "in the air", "at 3 pm" (clock
# directions) follow). With the modifiers of such phrases ("far", "very"), so that a chunk made
# only of them is a position.
POSITION_WORDS = _words(
    """left right front back rear side sides top bottom middle center centre corner corners edge
    edges end ends half halves part background foreground distance row rows view focus air far
    very most extreme mid upper lower other leftmost rightmost topmost bottommost furthest farthest
    am pm north south east west"""
)
# Position words only as modifiers: "the right hand side" is a position, "his hand" an object.
POSITION_MODIFIERS = POSITION_WORDS | {"hand"}
# The photo itself and the one taking it: "in the picture", "right hand picture", "facing camera".
FRAME_WORDS = _words("picture pictures image images photo photos pic pics frame camera")
# Colour words; "orange" is left out because it is far more often the fruit in COCO.
COLOUR_WORDS = _words(
    """red yellow green blue purple pink brown black white gray grey tan beige maroon navy teal
    violet gold silver dark light bright color colors colour colours"""
)
# Tokens that do not decide what a chunk names: articles, possessives, "and" in "black and white",
# numerals ("at 3 pm", "the 2 others").
FUNCTION_POS = frozenset({"DET", "PRON", "PART", "CCONJ", "PUNCT", "SPACE", "ADP", "NUM"})
# Parts of speech of a noun phrase the parser left out of noun_chunks (see _chunks).
RUN_POS = frozenset({"DET", "ADJ", "NUM", "NOUN", "PROPN"})
# Leading words before the first chunk (see _with_leading_words): what may start a candidate, what
# ends one, and the speaker's own verbs ("I think", "you can see") that name nothing in the image.
CONTENT_POS = frozenset({"NOUN", "PROPN", "VERB", "ADJ"})
LEAD_STOP_POS = frozenset({"ADP", "ADV", "AUX", "PUNCT", "CCONJ", "SCONJ", "PRON", "PART", "INTJ"})
SPEAKER_LEMMAS = frozenset({"be", "have", "see", "think", "click"})
