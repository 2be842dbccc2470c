"""The trivial baselines a trained model must beat (issue 6's learning target), and their scores.

- `centre_prompt_masks`: frozen SAM prompted with one positive click at the image centre, on the
  image embedding the encode stage cached. One click is SAM's textbook ambiguous prompt, so SAM
  is asked for its three masks (`multimask_output=True`) and the one with the highest predicted
  IoU is kept, as SAM's authors recommend for single clicks; with a single-mask output SAM
  returns its blend for a lone point, which is the weaker baseline. The prompt ignores the
  expression, so the mask is computed once per image and shared by its sentences.
- `random_candidate_masks`: the pseudo-label mask of a uniformly random candidate, seeded per
  sample (the choice for a sample does not depend on which others are asked for). Candidates
  without a mask are skipped; a sample with none gets an empty mask. The pool is the
  expression's own candidates (`pool="sample"`, the default), or every distinct candidate mask
  of the image (`pool="image"`). With an oracle relevance source (`--relevance gt-mask`) every
  candidate of an expression gets the referent's mask, so the sample pool scores as well as the
  pseudo-labels themselves; there the image pool (a random object of the scene) is the baseline
  that says whether a model reads the expression.
- `score_masks`: DESIGN §7 metrics of {sample_id: (H, W) mask} against the dataset's ground
  truth, through the same code as eval-labels (`pipeline.scoring.label_eval.ground_truth_rles`,
  `pipeline.scoring.metrics.RisMeter`).

All masks are bool (H, W) at the image's original size.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from segment_anything import SamPredictor

from pipeline.core.errors import StoreError
from pipeline.core.rle import decode_rle, encode_rle, to_rle
from pipeline.models.encoders import cached_predictor
from pipeline.models.frozen import FrozenSam
from pipeline.models.weights import check_weights
from pipeline.scoring.failures import breakdown, classify, object_truths
from pipeline.scoring.label_eval import ground_truth_rles
from pipeline.scoring.metrics import RisMeter
from pipeline.store.embeddings import store_embeddings
from pipeline.store.reader import LabelStore

log = logging.getLogger(__name__)


def _samples(store: LabelStore, sample_ids: Collection[str] | None) -> list[dict[str, Any]]:
    """The store's sample rows (all, or `sample_ids`, in store order); unknown ids are an error."""
    rows = store.samples().to_pylist()
    if sample_ids is None:
        return rows
    wanted = set(sample_ids)
    rows = [r for r in rows if r["sample_id"] in wanted]
    missing = wanted - {r["sample_id"] for r in rows}
    if missing:
        raise StoreError(
            f"{store.root}: {len(missing)} sample ids not in this store (e.g. "
            f"{sorted(missing)[0]!r}); pass ids from store.samples()"
        )
    return rows


def cached_embeddings(
    store: LabelStore, sam: FrozenSam, images: Collection[str]
) -> Iterator[tuple[dict[str, Any], np.ndarray]]:
    """(encode row, (256, 64, 64) f16 embedding) of each image in `images` (by sha256).

    Reads them from the embedding cache; refuses a `sam` whose weights differ from the encode
    stage's.
    """
    if "encode" not in store.tables:
        raise StoreError(f"{store.root}: no encode table; build the encode stage first")
    cache, keys = store_embeddings(store.root, store.manifest.get("provenance", {}))
    wanted, checked = set(images), False
    for row in store.table("encode").to_pylist():
        if row["image_sha256"] not in wanted:
            continue
        entry = cache.entry(keys["sam"], row["image_sha256"])
        if not checked:
            check_weights(dict(cache.group(entry).attrs)["sam"], sam, f"SAM {sam.variant}")
            checked = True
        yield row, cache.row(keys["sam"], row["image_sha256"])


def centre_prompt_masks(
    store: LabelStore,
    sam: FrozenSam,
    sample_ids: Collection[str] | None = None,
    multimask: bool = True,
) -> dict[str, np.ndarray]:
    """sample_id → SAM's mask for one positive click at the image centre (module docstring).

    Args:
        store: a label store with the encode stage (cached SAM embeddings).
        sam: the frozen SAM the store was encoded with (its prompt encoder and decoder run).
        sample_ids: the samples to predict (default: all of the store's).
        multimask: keep the best of SAM's three masks by predicted IoU (default), else SAM's
            single-mask output.

    Returns:
        sample_id → (H, W) bool mask at the image's original size.
    """
    samples = _samples(store, sample_ids)
    predictor = SamPredictor(sam.model)
    by_image: dict[str, np.ndarray] = {}
    for image, embedding in cached_embeddings(store, sam, {s["image_sha256"] for s in samples}):
        h, w = image["height"], image["width"]
        resized = (image["input_height"], image["input_width"])
        cached_predictor(predictor, embedding, (h, w), resized)
        masks, scores, _ = predictor.predict(
            point_coords=np.array([[w // 2, h // 2]], dtype=np.float32),  # (1, 2) x, y pixels
            point_labels=np.array([1]),
            multimask_output=multimask,
        )  # (C, H, W) bool, (C,)
        by_image[image["image_sha256"]] = masks[int(np.argmax(scores))]
    missing = {s["image_sha256"] for s in samples} - set(by_image)
    if missing:
        raise StoreError(f"{store.root}: {len(missing)} images have no cached embedding; re-build")
    return {s["sample_id"]: by_image[s["image_sha256"]] for s in samples}


def _sample_rng(seed: int, sample_id: str) -> np.random.Generator:
    """A generator that depends only on (seed, sample_id)."""
    digest = hashlib.sha256(sample_id.encode()).digest()
    return np.random.default_rng([seed, int.from_bytes(digest[:8], "little")])


POOLS = ("sample", "image")


def random_candidate_masks(
    store: LabelStore,
    sample_ids: Collection[str] | None = None,
    seed: int = 0,
    pool: str = "sample",
) -> dict[str, np.ndarray]:
    """sample_id → the mask of a uniformly random candidate with a mask (module docstring).

    Args:
        store: a label store with the masks stage.
        sample_ids: the samples to predict (default: all of the store's).
        seed: the draw of sample s depends on (seed, s) only.
        pool: "sample" (the expression's candidates) or "image" (every distinct candidate mask
            of the store's samples on the same image).
    """
    if pool not in POOLS:
        raise ValueError(f"pool {pool!r}: choose one of {', '.join(POOLS)}")
    if "masks" not in store.tables:
        raise StoreError(f"{store.root}: no masks table; build the masks stage first")
    samples = _samples(store, sample_ids)
    image_of = {
        r["sample_id"]: r["image_sha256"]
        for r in store.samples().select(["sample_id", "image_sha256"]).to_pylist()
    }
    key = (lambda sid: sid) if pool == "sample" else image_of.__getitem__
    masked: dict[str, list[str]] = {}  # pool key → distinct RLE counts, (sample, cand) order
    for cand in store.candidates().select(["sample_id", "cand_idx", "mask_rle"]).to_pylist():
        if cand["mask_rle"] is None:
            continue
        choices = masked.setdefault(key(cand["sample_id"]), [])
        if pool == "sample" or cand["mask_rle"] not in choices:
            choices.append(cand["mask_rle"])
    out: dict[str, np.ndarray] = {}
    for s in samples:
        h, w, choices = s["height"], s["width"], masked.get(key(s["sample_id"]), [])
        if not choices:
            out[s["sample_id"]] = np.zeros((h, w), dtype=bool)
            continue
        pick = int(_sample_rng(seed, s["sample_id"]).integers(len(choices)))
        out[s["sample_id"]] = decode_rle(choices[pick], h, w)
    return out


def score_masks(
    predictions: dict[str, np.ndarray],
    store: LabelStore,
    data_root: Path,
    dataset: str | None = None,
) -> dict[str, Any]:
    """DESIGN §7 metrics of `predictions` against ground truth, keys as eval-labels'.

    Args:
        predictions: sample_id → (H, W) mask at the image's original size.
        store: the label store the samples come from.
        data_root: the dataset's --data-root (ground truth is read there).
        dataset: dataset manifest name (default: the store's).

    Returns:
        {"mIoU", "oIoU", "P@0.3", "P@0.5", "P@0.7", "n"}, percentages in 0-100; samples without
        ground truth are left out of n (and logged). Where the dataset knows every object of an
        image (the synthetic world), also "failures": the share of each failure class.
    """
    _samples(store, predictions)  # every id must belong to the store
    truths = ground_truth_rles(store, Path(data_root), dataset, sample_ids=predictions)
    meter = RisMeter()
    for sample_id, mask in predictions.items():
        gt = truths.get(sample_id)
        if gt is not None:
            meter.add_rle(to_rle(encode_rle(np.asarray(mask, dtype=bool))[0], *mask.shape), gt)
    if meter.n < len(predictions):
        left_out = len(predictions) - meter.n
        log.info("score_masks: %d samples without ground truth left out", left_out)
    metrics: dict[str, Any] = meter.summarize()
    objects = object_truths(dataset or store.manifest["dataset"], Path(data_root), predictions)
    if objects:  # the synthetic world: what each miss hit instead (pipeline.scoring.failures)
        metrics["failures"] = breakdown(classify(predictions[s], t) for s, t in objects.items())
    return metrics
