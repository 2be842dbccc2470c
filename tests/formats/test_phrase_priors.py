"""Phrase relevance for the point generator: the store's candidate maps, in candidate order, as
cached channels after the sentence's map (`model.phrase_priors`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pipeline.store import shards
from pipeline.store.reader import LabelStore
from trainer.data.feature_cache import CacheSpec, ClipCache, build_clip_cache


def test_phrase_maps_are_the_candidates_maps_after_the_sentences(
    tmp_path: Path, synthetic_store: Path, synthetic_root: Path, tiny_clip
) -> None:
    store = LabelStore(synthetic_store)
    spec = CacheSpec((1, 3), 112, 8, relevance=True, phrase_maps=2)
    cache = ClipCache(build_clip_cache(store, synthetic_root, tiny_clip, spec, tmp_path))
    # the reference: each attention shard's rows and arrays, read here directly
    maps: dict[tuple[str, int], np.ndarray] = {}
    for path in sorted((synthetic_store / "attention").glob("part-*.parquet")):
        table = shards.read_parquet(path).to_pylist()
        arrays = store.arrays("attention", path.stem)["relevance"][...]  # (n, G, G)
        maps.update({(r["sample_id"], r["cand_idx"]): arrays[r["array_row"]] for r in table})
    sentences = store.sentence_relevance()
    counts = {r["sample_id"]: r["n_candidates"] for r in store.samples().to_pylist()}
    assert max(counts.values()) > 1 and min(counts.values()) < 2  # both kinds of sample
    for sample_id, n in counts.items():
        got = cache.sample_relevance(sample_id).numpy()  # (3, G, G) float32
        assert got.shape == (3, *sentences[sample_id].shape)
        np.testing.assert_array_equal(got[0], sentences[sample_id].astype(np.float32))
        for k in range(2):
            want = maps.get((sample_id, k), np.zeros_like(got[0])) if k < n else 0 * got[0]
            np.testing.assert_array_equal(got[1 + k], np.asarray(want, np.float32))
    key = cache.key
    assert key["phrase_maps"] == 2 and key["relevance"] is True
