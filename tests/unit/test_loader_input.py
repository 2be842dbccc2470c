"""The trainer's input pipeline on small inputs: the low-res target operator against the torch
resize it replaces, the batch sampler against a plain shuffled loader, the columnar sample index
against its objects, packed word rows."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import BatchSampler, RandomSampler

from tests.formats.test_trainer_train import StubStore
from trainer.data.batches import Batches
from trainer.data.ragged import RaggedRows
from trainer.data.samples import collect_samples
from trainer.data.target_cache import lowres_target
from trainer.network.soft_sam import lowres_targets


@pytest.mark.parametrize("size", [(20, 30), (480, 640), (1500, 900), (333, 1)])
def test_lowres_target_is_the_resize_it_replaces(size: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(size))
    h, w = size
    mask = np.zeros(size, bool)
    mask[h // 4 : h // 4 + h // 3 + 1, w // 5 : w // 5 + w // 2 + 1] = True
    mask |= rng.random(size) < 0.02  # speckles: every cell boundary case
    ours = lowres_target(mask)
    ref = lowres_targets(torch.from_numpy(mask)[None])[0].numpy()
    assert ours.shape == ref.shape == (256, 256)
    np.testing.assert_allclose(ours, ref, atol=2e-5)


def test_batches_are_a_shuffled_loaders_and_grouping_keeps_images_together() -> None:
    n, size = 37, 8
    for seed in (0, 5):
        plain = BatchSampler(
            RandomSampler(range(n), generator=torch.Generator().manual_seed(seed)), size, False
        )
        assert list(Batches(n, size, seed)) == list(plain)
    assert [i for b in Batches(n, size) for i in b] == list(range(n))
    groups = np.arange(n) // 4  # images of 4 expressions (the last of 1)
    sampler = Batches(n, size, 3, groups)
    order = [i for b in sampler for i in b]
    assert sorted(order) == list(range(n)) and len(sampler) == 5
    runs = [g for i, g in enumerate(groups[order]) if i == 0 or g != groups[order][i - 1]]
    assert len(runs) == len(set(runs))  # each image's expressions in one run
    assert order == [i for b in Batches(n, size, 3, groups) for i in b]  # seeded
    sampler.set_seed(4)
    assert order != [i for b in sampler for i in b]


def test_sample_index_matches_its_objects() -> None:
    store = StubStore()
    one = collect_samples([store], ("H_sem", "H_ref", "D_sem"))
    two = collect_samples([store, store], ("H_sem", "H_ref", "D_sem"))
    assert len(two) == 2 * len(one) and two.keys()[len(one)] == (1, one[0].sample_id)
    for a, b in zip(list(one), list(two)[len(one) :], strict=True):
        assert (b.store, b.sample_id, b.candidates) == (1, a.sample_id, a.candidates)
    picked = two.take([4, 0])
    assert list(picked) == [two[4], two[0]]
    assert picked.cand_start.tolist() == [0, len(two[4].candidates), len(two[4].candidates) + 1]
    assert two[1].candidates[1].points == (
        (0.5, 0.5, 1),
        (0.10000000149011612, 0.10000000149011612, 0),
    )
    groups = two.image_groups()  # one image per store in the stub
    assert groups.tolist() == [0] * len(one) + [1] * len(one)


def test_ragged_rows_keep_the_real_tokens_only() -> None:
    padded = np.arange(5 * 4 * 3, dtype=np.float16).reshape(5, 4, 3)
    lengths = np.array([1, 4, 0, 2, 3])
    rows = RaggedRows.from_padded(padded, lengths, block=2)
    assert len(rows) == 5 and rows.data.shape == (10, 3)
    for i, n in enumerate(lengths):
        np.testing.assert_array_equal(rows[i], padded[i, :n])
