"""Referring expressions for composites: templates as data, each one a predicate over objects.

A composite's expression is an `ExpressionSpec` (relation, subject noun, anchor noun). Its text
comes from the template tables below, its meaning from a predicate over the composite's objects.
A composite is emitted only when its spec is *unambiguous* (`unambiguous`): the referent
satisfies the predicate clearly (the strict reading) and no other object satisfies it even
loosely (the lenient reading). The two readings differ by a margin on each side of a boundary, so
an object whose centre sits near the middle of the composite (or next to the anchor's centre) can
neither be called "on the left" nor make another object's "on the left" ambiguous.

Colour (`CompositeConfig.colour_words`): the subject and anchor may carry their colour word, read
from their pixels (`composites.colour`); a coloured noun denotes only the objects of its class
that carry that word. "plain" ("the red dog") names the referent by its noun phrase alone, for a
colour that no other object of its class shares.

Geometry: an object's position is its mask box centre, normalised by the composite's width and
height, with y growing downwards. "in front of" / "behind" mean box containment: in a fusion the
inset is always pasted over the host, so an inset box inside the host's box is in front of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from pipeline.data.imagenet import class_noun

# Absolute position (Mosaic): the referent's place in the composite, one word per grid axis.
ABSOLUTE: dict[str, str] = {
    "plain": "the {subject}",  # colour words only: no position, the noun phrase is unique
    "left": "the {subject} on the left",
    "right": "the {subject} on the right",
    "top": "the {subject} at the top",
    "bottom": "the {subject} at the bottom",
    "top left": "the {subject} in the top left",
    "top right": "the {subject} in the top right",
    "bottom left": "the {subject} in the bottom left",
    "bottom right": "the {subject} in the bottom right",
}

# Relative position (fusion): the referent against one other object, the anchor.
RELATIVE: dict[str, str] = {
    "left of": "the {subject} left of the {anchor}",
    "right of": "the {subject} right of the {anchor}",
    "above": "the {subject} above the {anchor}",
    "below": "the {subject} below the {anchor}",
    "in front of": "the {subject} in front of the {anchor}",
    "behind": "the {subject} behind the {anchor}",
}


class Located(Protocol):
    """What the predicates read of an object (`composites.render.CompositeObject` has it)."""

    class_name: str
    colour: str | None  # its colour word (composites.colour), None: not named by colour
    bbox: tuple[float, float, float, float]  # xywh, pixels
    size: tuple[int, int]  # (H, W) of the composite


@dataclass(frozen=True)
class ExpressionSpec:
    """A referring expression as data: relation (a template key), subject and anchor nouns."""

    relation: str  # an ABSOLUTE or RELATIVE key
    subject: str  # the referent's class noun
    anchor: str | None = None  # the other object's class noun (RELATIVE only)
    subject_colour: str | None = None  # the referent's colour word, named before its noun
    anchor_colour: str | None = None  # the anchor's colour word (RELATIVE only)

    def __post_init__(self) -> None:
        if self.relation in ABSOLUTE and self.anchor is not None:
            raise ValueError(f"absolute relation {self.relation!r} takes no anchor")
        if self.relation in RELATIVE and self.anchor is None:
            raise ValueError(f"relative relation {self.relation!r} needs an anchor")
        if self.relation not in ABSOLUTE and self.relation not in RELATIVE:
            raise ValueError(f"unknown relation {self.relation!r}")

    @property
    def text(self) -> str:
        """The expression as written into the label store."""
        template = ABSOLUTE.get(self.relation) or RELATIVE[self.relation]
        return template.format(
            subject=_phrase(self.subject, self.subject_colour),
            anchor=_phrase(self.anchor, self.anchor_colour),
        )


def _phrase(noun: str | None, colour: str | None) -> str | None:
    return f"{colour} {noun}" if colour and noun else noun


def _named(obj: Located, obj_noun: str, noun: str, colour: str | None) -> bool:
    """Does the noun phrase (`colour` `noun`) describe `obj`, whose class noun is `obj_noun`?"""
    return obj_noun == noun and colour in (None, obj.colour)


def centre(obj: Located) -> tuple[float, float]:
    """An object's box centre (cx, cy), normalised to [0, 1] by the composite's width, height."""
    x, y, w, h = obj.bbox
    height, width = obj.size
    return (x + w / 2) / width, (y + h / 2) / height


def _absolute(obj: Located, relation: str, slack: float) -> bool:
    # slack < 0 asks for a clear side (strict), slack > 0 admits near-middle objects (lenient).
    if relation == "plain":
        return True
    cx, cy = centre(obj)
    sides = {
        "left": cx < 0.5 + slack,
        "right": cx > 0.5 - slack,
        "top": cy < 0.5 + slack,
        "bottom": cy > 0.5 - slack,
    }
    return all(sides[word] for word in relation.split())


def _contains(outer: Located, inner: Located, slack: float) -> bool:
    # Containment only loosens (never tightens) with slack: an inset flush with the host's box
    # edge is still in front of it.
    ox, oy, ow, oh = outer.bbox
    ix, iy, iw, ih = inner.bbox
    height, width = outer.size
    gx, gy = max(slack, 0.0) * width, max(slack, 0.0) * height
    return ix >= ox - gx and iy >= oy - gy and ix + iw <= ox + ow + gx and iy + ih <= oy + oh + gy


def _relative(obj: Located, anchor: Located, relation: str, slack: float) -> bool:
    (ax, ay), (bx, by) = centre(obj), centre(anchor)
    if relation == "left of":
        return ax < bx + slack
    if relation == "right of":
        return ax > bx - slack
    if relation == "above":
        return ay < by + slack
    if relation == "below":
        return ay > by - slack
    if relation == "in front of":
        return _contains(anchor, obj, slack)
    return _contains(obj, anchor, slack)  # behind


def satisfies(
    spec: ExpressionSpec, objects: Sequence[Located], margin: float, strict: bool = False
) -> list[int]:
    """Indices of the objects the expression can denote.

    margin: normalised distance that separates a clear reading from a loose one. Lenient
    (strict=False) counts any object a reader might take as meant; strict counts only the objects
    that clearly satisfy it.
    """
    slack = -margin if strict else margin
    nouns = [class_noun(o.class_name) for o in objects]
    hits = []
    for i, obj in enumerate(objects):
        if not _named(obj, nouns[i], spec.subject, spec.subject_colour):
            continue
        if spec.relation in ABSOLUTE:
            ok = _absolute(obj, spec.relation, slack)
        else:
            ok = any(
                _relative(obj, other, spec.relation, slack)
                for j, other in enumerate(objects)
                if j != i and _named(other, nouns[j], spec.anchor or "", spec.anchor_colour)
            )
        if ok:
            hits.append(i)
    return hits


def unambiguous(
    spec: ExpressionSpec, objects: Sequence[Located], referent: int, margin: float
) -> bool:
    """True when the referent clearly satisfies `spec` and no other object loosely does."""
    return satisfies(spec, objects, margin) == [referent] and referent in satisfies(
        spec, objects, margin, strict=True
    )


def choose_expression(
    options: Sequence[ExpressionSpec],
    objects: Sequence[Located],
    referent: int,
    margin: float,
    rng: np.random.Generator,
) -> ExpressionSpec | None:
    """One of the unambiguous options, drawn uniformly by `rng`; None when there is none."""
    valid = [spec for spec in options if unambiguous(spec, objects, referent, margin)]
    if not valid:
        return None
    return valid[int(rng.integers(len(valid)))]


def absolute_options(
    subject: str, row: int | None, col: int | None, colour: str | None = None
) -> list[ExpressionSpec]:
    """Position words for a grid tile; row/col are 0/1 on a split axis, None on an unsplit one.

    A 2x2 tile gets "top", "left" and "top left": the coarse words are kept because they are
    unambiguous whenever the other row (column) has no object of the same class. With a colour
    word every option names it, and "plain" ("the red dog") is one more.
    """
    vertical = None if row is None else ("top", "bottom")[row]
    horizontal = None if col is None else ("left", "right")[col]
    words = [w for w in (vertical, horizontal) if w is not None]
    if len(words) == 2:
        words.append(f"{vertical} {horizontal}")
    if colour is not None:
        words.append("plain")
    return [ExpressionSpec(word, subject, subject_colour=colour) for word in words]


def relative_options(
    subject: str,
    anchor: str,
    subject_colour: str | None = None,
    anchor_colour: str | None = None,
) -> list[ExpressionSpec]:
    """Every relative relation of the referent to one anchor; geometry filters them later."""
    return [ExpressionSpec(rel, subject, anchor, subject_colour, anchor_colour) for rel in RELATIVE]
