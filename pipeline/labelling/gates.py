"""Quality gates on pseudo-labels: drop masks that cannot be a training target, saying why.

A D_sem sample has one candidate that is its referent (c=1) and no Select round ever revisits it,
so a bad mask there is a bad target for the whole curriculum, and ImageNet images are plentiful:
dropping one costs nothing. Three gates, each a threshold of the masks section of params.yaml:

- nearly empty: mask area under `min_area_frac` of the image (SAM latched onto a speck);
- nearly the whole image: area over `max_area_frac` (SAM took the background or the frame);
- far from the relevance map: agreement (soft IoU of mask and map, `prompting.agreement`) under
  `min_relevance` (SAM segmented something the map does not point at).

Gates apply only to the subsets in `gated_subsets` (default D_sem). H_sem / H_ref candidates are
not gated: a referent in a scene can legitimately be tiny or huge, in H_ref dropping a candidate
would change the candidate set that the trainer's Select matches against, and the curriculum
already filters H_ref pairs by confidence. A gated candidate keeps its phrases / split rows and has
no masks row (so no points row); readers see a null mask_rle and skip it, the rejects table says
why.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Gates:
    """Thresholds of the quality gates (the masks section's gate keys)."""

    min_area_frac: float  # below: nearly empty
    max_area_frac: float  # above: nearly the whole image
    min_relevance: float  # below: far from the relevance map
    subsets: tuple[str, ...]  # subsets the gates apply to

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_area_frac < self.max_area_frac <= 1.0:
            raise ValueError(
                f"min_area_frac {self.min_area_frac} / max_area_frac {self.max_area_frac}: "
                "need 0 <= min_area_frac < max_area_frac <= 1"
            )
        if not 0.0 <= self.min_relevance <= 1.0:
            raise ValueError(f"min_relevance {self.min_relevance}: give a value in [0, 1]")


def gate_reason(gates: Gates, subset: str, area_frac: float, agreement: float) -> str | None:
    """Why a mask fails the gates (one line naming the gate and the key to change), else None.

    area_frac: mask pixels / image pixels; agreement: the mask's soft IoU with its map.
    """
    if subset not in gates.subsets:
        return None
    if area_frac < gates.min_area_frac:
        return (
            f"gate min_area_frac: nearly empty mask ({area_frac:.2%} of the image < "
            f"{gates.min_area_frac:.2%}); lower masks.min_area_frac to keep such masks"
        )
    if area_frac > gates.max_area_frac:
        return (
            f"gate max_area_frac: mask covers nearly the whole image ({area_frac:.2%} > "
            f"{gates.max_area_frac:.2%}); raise masks.max_area_frac to keep such masks"
        )
    if agreement < gates.min_relevance:
        return (
            f"gate min_relevance: mask far from the relevance map (agreement {agreement:.3f} < "
            f"{gates.min_relevance:.3f}); lower masks.min_relevance to keep such masks"
        )
    return None
