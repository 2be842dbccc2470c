"""The model choices every command shares, as one typed value (`ModelOptions`).

`ppt-labels build`, `stage`, `eval`, `predict` and `train` take the same flags (cli/options.py
defines them once) and hand them to the libraries as a `ModelOptions`. Each field is None (or
False) when its flag is absent: params.yaml, the label store or the checkpoint decides then.

Relevance sources are named here because a relevance map is what a frozen model (CLIP) or a
stand-in for it says about where a phrase is; `pipeline.labelling.relevance` implements them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.errors import ConfigError

# Where relevance maps come from (DESIGN §4): the method, the object-centric prior, and the
# diagnostics, which are stamped as such and never pass for CLIP.
RELEVANCE_SOURCES: tuple[str, ...] = (
    "clip",
    "centre",
    "gt-box",
    "gt-mask",
    "gt-phrase",
    "simulated",
)
ORACLE_SOURCES: tuple[str, ...] = ("gt-box", "gt-mask")  # the referent's ground truth
# Stand-ins that read ground truth: diagnostics, stamped as such, never results.
DIAGNOSTIC_SOURCES: tuple[str, ...] = ("gt-box", "gt-mask", "gt-phrase", "simulated")
SAM_VARIANTS: tuple[str, ...] = ("vit_b", "vit_l", "vit_h", "vit_t")
DEVICES: tuple[str, ...] = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class ModelOptions:
    """Command-line model choices (None / False: not given on the command line)."""

    sam: str | None = None  # --sam: SAM variant, one of SAM_VARIANTS
    sam_checkpoint: Path | None = None  # --sam-checkpoint: SAM state dict
    clip_model: str | None = None  # --clip-model: open_clip architecture
    clip_checkpoint: Path | None = None  # --clip-checkpoint: open_clip state dict
    clip_pretrained: str | None = None  # --clip-pretrained: open_clip tag (online only)
    relevance: str | None = None  # --relevance: one of RELEVANCE_SOURCES
    device: str | None = None  # --device: auto | cpu | cuda
    allow_random_weights: bool = False  # --allow-random-weights: tests and demos only

    def __post_init__(self) -> None:
        for flag, value, allowed in (
            ("--sam", self.sam, SAM_VARIANTS),
            ("--relevance", self.relevance, RELEVANCE_SOURCES),
            ("--device", self.device, DEVICES),
        ):
            if value is not None and value not in allowed:
                raise ConfigError(f"{flag} {value!r}: choose one of {', '.join(allowed)}")

    def encode_overrides(self) -> dict[str, Any]:
        """The params.yaml [encode] keys these options set (only those given).

        `--relevance clip` turns on the CLIP features the clip source scores against; any other
        source turns them off.
        """
        given = {
            "sam_variant": self.sam,
            "sam_checkpoint": str(self.sam_checkpoint) if self.sam_checkpoint else None,
            "clip_model": self.clip_model,
            "clip_checkpoint": str(self.clip_checkpoint) if self.clip_checkpoint else None,
            "clip_pretrained": self.clip_pretrained,
            "allow_random_weights": True if self.allow_random_weights else None,
            "device": self.device,
            "clip": None if self.relevance is None else self.relevance == "clip",
        }
        return {key: value for key, value in given.items() if value is not None}
