"""The trivial baselines (centre click, random candidate) and `score_masks`, on the session's
small synthetic store (real vit_t SAM, gt-mask relevance; conftest.synthetic_store)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
from PIL import Image
from segment_anything import SamPredictor

from pipeline.core.errors import StoreError
from pipeline.core.rle import decode_rle
from pipeline.data.records import SourceRecord
from pipeline.data.registry import open_dataset
from pipeline.models.frozen import FrozenSam, build_sam
from pipeline.scoring.label_eval import evaluate_labels
from pipeline.scoring.metrics import SUMMARY_KEYS
from pipeline.store.reader import LabelStore
from tests.helpers import SAM_VIT_T
from trainer.inference.baselines import centre_prompt_masks, random_candidate_masks, score_masks

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not SAM_VIT_T.is_file(), reason=f"{SAM_VIT_T} not present"),
]


@pytest.fixture(scope="module")
def store(synthetic_store: Path) -> LabelStore:
    return LabelStore(synthetic_store)


@pytest.fixture(scope="module")
def sam() -> FrozenSam:
    return build_sam("vit_t", checkpoint=SAM_VIT_T)


@pytest.fixture(scope="module")
def centre(store: LabelStore, sam: FrozenSam) -> dict[str, np.ndarray]:
    return centre_prompt_masks(store, sam)


@pytest.fixture(scope="module")
def samples(store: LabelStore) -> dict[str, dict]:
    return {s["sample_id"]: s for s in store.samples().to_pylist()}


@pytest.fixture(scope="module")
def ground_truth(synthetic_root: Path, samples: dict[str, dict]) -> dict[str, np.ndarray]:
    """Read straight from the dataset adapter, not through the helper under test."""
    dataset = open_dataset("synthetic", synthetic_root)
    names = [f.name for f in dataclasses.fields(SourceRecord)]
    return {
        sid: dataset.ground_truth(SourceRecord(**{n: s[n] for n in names})).mask
        for sid, s in samples.items()
    }


def check_shapes(masks: dict[str, np.ndarray], samples: dict[str, dict]) -> None:
    for sid, mask in masks.items():
        assert mask.dtype == bool and mask.shape == (samples[sid]["height"], samples[sid]["width"])


def test_centre_click_masks(
    store: LabelStore, sam: FrozenSam, centre: dict[str, np.ndarray], samples: dict[str, dict]
) -> None:
    masks = centre
    assert set(masks) == set(samples)
    check_shapes(masks, samples)
    by_image: dict[str, np.ndarray] = {}
    for sid, mask in masks.items():  # text-blind: one mask per image
        first = by_image.setdefault(samples[sid]["image_sha256"], mask)
        assert np.array_equal(first, mask)
    inside = [bool(m[m.shape[0] // 2, m.shape[1] // 2]) for m in by_image.values()]
    assert sum(inside) >= 0.9 * len(inside)  # SAM's best mask for a click holds the click
    subset = sorted(samples)[:3]
    assert all(np.array_equal(centre_prompt_masks(store, sam, subset)[s], masks[s]) for s in subset)


def test_centre_click_on_the_cache_equals_set_image(
    store: LabelStore, sam: FrozenSam, samples: dict[str, dict], synthetic_root: Path
) -> None:
    """The cached-embedding path against SamPredictor.set_image on the image itself."""
    sample = samples[sorted(samples)[0]]
    with Image.open(synthetic_root / sample["image_path"]) as image:
        rgb = np.asarray(image.convert("RGB"))
    predictor = SamPredictor(sam.model)
    predictor.set_image(rgb)
    h, w = rgb.shape[:2]
    ref, scores, _ = predictor.predict(np.array([[w // 2, h // 2]]), np.array([1]))
    expected = ref[int(np.argmax(scores))]
    got = centre_prompt_masks(store, sam, [sample["sample_id"]])[sample["sample_id"]]
    iou = (got & expected).sum() / max((got | expected).sum(), 1)
    assert iou > 0.95  # the cache is float16
    single = centre_prompt_masks(store, sam, [sample["sample_id"]], multimask=False)
    check_shapes(single, samples)


def test_random_candidate_is_seeded_and_one_of_the_candidates(
    store: LabelStore, samples: dict[str, dict]
) -> None:
    cands: dict[str, list[str]] = {}
    for c in store.candidates().to_pylist():
        cands.setdefault(c["sample_id"], []).append(c["mask_rle"])
    first = random_candidate_masks(store, seed=0)
    assert set(first) == set(samples)
    check_shapes(first, samples)
    again = random_candidate_masks(store, seed=0)
    assert all(np.array_equal(first[s], again[s]) for s in samples)
    for sid, mask in first.items():
        s = samples[sid]
        options = [decode_rle(r, s["height"], s["width"]) for r in cands[sid] if r is not None]
        assert any(np.array_equal(mask, o) for o in options)
    # A sample's draw depends on (seed, sample) only, not on the others asked for.
    some = sorted(samples)[5:8]
    assert all(np.array_equal(random_candidate_masks(store, some)[s], first[s]) for s in some)
    # The image pool holds several objects per scene: other seeds draw other masks.
    pools = [random_candidate_masks(store, seed=k, pool="image") for k in range(3)]
    assert any(not np.array_equal(pools[0][s], pools[1][s]) for s in samples)
    subset_pool = random_candidate_masks(store, some, pool="image")
    assert all(np.array_equal(pools[0][s], subset_pool[s]) for s in some)
    with pytest.raises(ValueError, match="pool"):
        random_candidate_masks(store, pool="dataset")


def test_random_candidate_skips_candidates_without_a_mask(
    store: LabelStore, samples: dict[str, dict], monkeypatch: pytest.MonkeyPatch
) -> None:
    table = store.candidates()
    counts = pc.value_counts(table.column("sample_id")).to_pylist()
    multi = sorted(c["values"] for c in counts if c["counts"] > 1)[0]  # a sample with 2+ cands
    single = sorted(c["values"] for c in counts if c["counts"] == 1)[0]
    rows = table.to_pylist()
    kept = next(r["mask_rle"] for r in rows if r["sample_id"] == multi and r["cand_idx"] == 0)
    for r in rows:
        if (r["sample_id"] == multi and r["cand_idx"] > 0) or r["sample_id"] == single:
            r["mask_rle"] = None  # as a candidate whose mask was gated out
    monkeypatch.setattr(store, "candidates", lambda: pa.Table.from_pylist(rows, table.schema))
    for seed in range(4):
        masks = random_candidate_masks(store, [multi, single], seed=seed)
        s = samples[multi]
        assert np.array_equal(masks[multi], decode_rle(kept, s["height"], s["width"]))
        assert not masks[single].any()
        check_shapes(masks, samples)


def test_scores(
    store: LabelStore,
    centre: dict[str, np.ndarray],
    samples: dict[str, dict],
    ground_truth: dict[str, np.ndarray],
    synthetic_root: Path,
) -> None:
    perfect = score_masks(ground_truth, store, synthetic_root, "synthetic")
    assert set(perfect) == {*SUMMARY_KEYS, "failures"} and perfect["n"] == len(samples)
    assert all(perfect[k] == 100.0 for k in SUMMARY_KEYS if k != "n")
    assert perfect["failures"]["hit"] == 100.0 and perfect["failures"]["n"] == len(samples)
    empty = {sid: np.zeros_like(m) for sid, m in ground_truth.items()}
    nothing = score_masks(empty, store, synthetic_root)
    assert nothing["mIoU"] == 0.0 and nothing["failures"]["empty"] == 100.0
    for masks in (centre, random_candidate_masks(store, pool="image")):
        row = score_masks(masks, store, synthetic_root)
        assert all(0.0 <= row[k] <= 100.0 for k in SUMMARY_KEYS if k != "n")
        assert row["n"] == len(samples)
    sid = sorted(samples)[0]
    with pytest.raises(ValueError, match="original size"):
        score_masks({sid: ground_truth[sid][1:]}, store, synthetic_root)
    with pytest.raises(StoreError, match="not in this store"):
        score_masks({"nope/1/1": ground_truth[sid]}, store, synthetic_root)


def test_scores_agree_with_eval_labels(
    store: LabelStore, samples: dict[str, dict], synthetic_root: Path
) -> None:
    """The H_sem referents scored as predictions give eval-labels' H_sem_referent row."""
    referents = {}
    for c in store.candidates().to_pylist():
        s = samples[c["sample_id"]]
        if s["subset"] == "H_sem" and c["referent"] == 1 and c["mask_rle"] is not None:
            referents[c["sample_id"]] = decode_rle(c["mask_rle"], s["height"], s["width"])
    expected = evaluate_labels(store.root, synthetic_root)["H_sem_referent"]
    scored = score_masks(referents, store, synthetic_root)
    assert {k: scored[k] for k in SUMMARY_KEYS} == pytest.approx(expected)
