"""bench/label_signals.py's measures: the AUC and a map's shape against the label it prompted."""

from __future__ import annotations

import numpy as np
import pytest

from tests.helpers import bench_module

signals = bench_module("label_signals")


def test_auc_ranks_positives_over_negatives_with_ties_half() -> None:
    positive = np.array([True, True, False, False])
    assert signals.auc(np.array([0.9, 0.8, 0.1, 0.2]), positive) == 1.0
    assert signals.auc(np.array([0.1, 0.2, 0.9, 0.8]), positive) == 0.0
    assert signals.auc(np.array([0.5, 0.5, 0.5, 0.5]), positive) == 0.5
    # one positive above both negatives, one between them: 3 of 4 pairs ordered
    assert signals.auc(np.array([0.9, 0.3, 0.5, 0.1]), positive) == 0.75
    assert np.isnan(signals.auc(np.array([0.1, 0.2]), np.array([True, True])))


def test_map_shape_measures_the_main_region_and_the_labels_share() -> None:
    relevance = np.zeros((8, 8))
    relevance[1:3, 1:3] = 1.0  # a region of mass 4
    relevance[5:7, 5:6] = 1.0  # and one of mass 2
    label = np.zeros((80, 80), bool)
    label[10:30, 10:30] = True  # exactly the first region's cells (10 pixels a cell)
    dominance, share = signals.map_shape(relevance, label)
    assert dominance == pytest.approx(4 / 6)
    assert share == pytest.approx(4 / 6)
    one = np.zeros((8, 8))
    one[1:3, 1:3] = 1.0
    assert signals.map_shape(one, label) == pytest.approx((1.0, 1.0))
    assert signals.map_shape(one, ~label)[1] == pytest.approx(0.0)
