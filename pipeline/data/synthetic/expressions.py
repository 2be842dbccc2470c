"""The expressions that refer into synthetic scenes, as predicates over the scene's objects.

An `Expression` is a predicate over a scene's objects (a noun phrase plus at most one position,
size or relation constraint) that also knows its wordings; `describe` keeps only expressions that
exactly one object satisfies, so no sentence written from them is ambiguous.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pipeline.data.synthetic.scenes import Scene, SceneObject

POS_GAP = 0.10  # positions must differ by this share of the shorter side to be told apart
SIZE_RATIO = 1.6  # "largest" needs this area ratio over the runner-up
REGION_MARGIN = 0.04  # share of width/height an object must sit inside a grid cell to be "in" it

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


@dataclass(frozen=True)
class NounPhrase:
    """A noun phrase of a generated sentence and the objects it denotes (phrase ground truth)."""

    role: str  # "referent" (the subject's noun phrase) | "landmark" | "sentence" (the whole)
    start: int  # character span in the sentence (the article "the" included where written)
    end: int
    head_start: int  # span of the shape word, what a parser's chunk must contain to match
    head_end: int
    objects: tuple[int, ...]  # indices into the scene's objects


def denotation(scene: Scene, noun: Noun) -> tuple[int, ...]:
    """Every object a bare noun phrase ("the red circle", "the circle") applies to."""
    return tuple(j for j, o in enumerate(scene.objects) if _is(noun, o))


def noun_phrases(scene: Scene, expr: Expression, text: str, referent: int) -> list[NounPhrase]:
    """The noun phrases of `text` (a wording of `expr` for object `referent`), then the sentence.

    The referent's noun phrase alone denotes every object of its noun ("the circle" of "the
    circle on the left" is every circle); the landmark's denotes its one object; the sentence
    denotes the referent only.
    """

    def locate(noun: Noun, role: str, after: int) -> NounPhrase:
        words = _noun_text(*noun)
        start = text.index(words, after)
        head = start + len(words) - len(noun[0])
        if text[max(0, start - 4) : start] == "the ":
            start -= 4
        end = head + len(noun[0])
        return NounPhrase(role, start, end, head, end, denotation(scene, noun))

    subject = locate((expr.shape, expr.colour), "referent", 0)
    out = [subject]
    if expr.landmark is not None:
        out.append(locate(expr.landmark, "landmark", subject.end))
    out.append(NounPhrase("sentence", 0, len(text), subject.head_start, subject.head_end,
                          (referent,)))  # fmt: skip
    return out


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
