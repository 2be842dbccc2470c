"""`simulated` relevance: seeded, and failing exactly in the documented, knob-controlled ways."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.errors import ConfigError
from pipeline.data.dataset import ObjectTruth
from pipeline.labelling.simulated import (
    PhraseQuery,
    SimulatedConfig,
    query_words,
    simulated_map,
)
from pipeline.stages.attention import AttentionConfig, read_config

H, W = 140, 140
CLEAN = SimulatedConfig(blur=0.0, part_focus=0.0, class_spill=0.0, colour_spill=0.0,
                        mention_spill=0.0, n_blobs=0.0, noise=0.0)  # fmt: skip


def disc(cy: float, cx: float, r: float) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2


def objects() -> tuple[ObjectTruth, ...]:
    part = disc(35, 35, 5)
    return (
        ObjectTruth(1, "circle", "red", "yellow", disc(35, 35, 14), part),  # small, with a part
        ObjectTruth(2, "circle", "blue", None, disc(35, 105, 14), None),  # same class
        ObjectTruth(3, "square", "red", None, disc(105, 35, 14), None),  # same colour
        ObjectTruth(4, "star", "green", None, disc(105, 105, 14), None),  # nothing shared
    )


def mean_on(grid: np.ndarray, mask: np.ndarray) -> float:
    cells = np.kron(grid, np.ones((H // grid.shape[0], W // grid.shape[1])))  # back to pixels
    return float(cells[mask].mean())


def test_same_seed_same_map_other_seed_other_map() -> None:
    objs, query = objects(), PhraseQuery((1,), "circle", "red")
    a = simulated_map(objs, query, SimulatedConfig(seed=3), "img", "s#0")
    b = simulated_map(objs, query, SimulatedConfig(seed=3), "img", "s#0")
    c = simulated_map(objs, query, SimulatedConfig(seed=4), "img", "s#0")
    d = simulated_map(objs, query, SimulatedConfig(seed=3), "img", "s#1")
    assert a.shape == (14, 14) and a.dtype == np.float32
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c) and not np.array_equal(a, d)


def test_clean_map_is_the_denotation_on_clip_grid() -> None:
    objs = objects()
    grid = simulated_map(objs, PhraseQuery((1,), "circle", "red"), CLEAN, "img", "s#0")
    assert mean_on(grid, objs[0].mask) > 0.5
    for other in objs[1:]:
        assert mean_on(grid, other.mask) < 0.05


def test_spill_follows_the_words_and_the_sentence() -> None:
    objs = objects()
    spill = SimulatedConfig(**{**CLEAN.__dict__, "class_spill": 0.6, "colour_spill": 0.3,
                               "mention_spill": 0.9})  # fmt: skip
    grid = simulated_map(objs, PhraseQuery((1,), "circle", "red"), spill, "img", "s#0")
    same_class, same_colour, unrelated = (mean_on(grid, o.mask) for o in objs[1:])
    assert same_class > same_colour > unrelated + 0.05
    whole = PhraseQuery((1,), "circle", "red", mentions=(4,))  # the sentence names the star
    grid = simulated_map(objs, whole, spill, "img", "s#0")
    assert mean_on(grid, objs[3].mask) > same_class


def test_salient_part_focus_only_for_small_objects() -> None:
    objs = objects()
    focus = SimulatedConfig(**{**CLEAN.__dict__, "part_focus": 1.0, "part_focus_max_area": 0.5})
    grid = simulated_map(objs, PhraseQuery((1,), "circle", "red"), focus, "img", "s#0")
    ring = objs[0].mask & ~disc(35, 35, 9)
    assert mean_on(grid, objs[0].part_mask) > 2 * mean_on(grid, ring)  # the part, not the whole
    large = SimulatedConfig(**{**focus.__dict__, "part_focus_max_area": 0.001})
    grid = simulated_map(objs, PhraseQuery((1,), "circle", "red"), large, "img", "s#0")
    assert mean_on(grid, ring) > 0.5 * mean_on(grid, objs[0].part_mask)


def test_words_of_a_phrase() -> None:
    assert query_words("the red circle on the left", objects()) == ("circle", "red")
    assert query_words("the yellow one", objects()) == (None, "yellow")  # a part's colour
    assert query_words("that thing", objects()) == (None, None)


def test_knobs_are_validated_and_read_from_params() -> None:
    with pytest.raises(ValueError, match="part_focus"):
        SimulatedConfig(part_focus=1.5)
    config = read_config({"source": "simulated", "simulated": {"noise": 0.1}})
    assert config["simulated"]["noise"] == 0.1 and config["source"] == "simulated"
    with pytest.raises(ConfigError, match="nois"):
        AttentionConfig(simulated={"nois": 0.1})
