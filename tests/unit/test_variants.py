"""The ablation variants as data: config files that extend a base, curriculum variants, forced
positive points; the candidate ↔ phrase-truth matching; the Select report's arithmetic."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from pipeline.core.errors import ConfigError
from pipeline.data.dataset import PhraseTruth
from pipeline.stages.phrases import match_truth
from tests.helpers import REPO
from trainer.config import config_from_dict, load_config, read_config_file
from trainer.data.samples import Candidate, Sample
from trainer.loop.curriculum import curriculum_phases
from trainer.loop.select import select_report
from trainer.network.point_generator import PointGenerator, PointGeneratorConfig


def test_every_ablation_row_is_a_valid_config() -> None:
    rows = sorted((REPO / "configs" / "ablation").glob("row*.yaml"))
    assert [int(p.stem[3:]) for p in rows] == list(range(1, 11))
    for path in rows[1:]:  # row 1 trains nothing
        data = read_config_file(path)
        assert data.pop("ablation")["row"] == int(path.stem[3:])
        config_from_dict(data, str(path))
    full = read_config_file(REPO / "configs" / "ablation" / "row05.yaml")
    assert {k: v for k, v in full.items() if k != "ablation"} == read_config_file(
        REPO / "configs" / "world.yaml"
    )
    assert load_config(REPO / "configs" / "world.yaml").data.eval_splits == ("test",)


def test_extends_merges_sections_and_refuses_loops(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text("optim: {lr: 0.1, batch_size: 4}\n")
    (tmp_path / "variant.yaml").write_text("extends: base.yaml\noptim: {lr: 0.5}\n")
    assert read_config_file(tmp_path / "variant.yaml") == {"optim": {"lr": 0.5, "batch_size": 4}}
    (tmp_path / "a.yaml").write_text("extends: b.yaml\n")
    (tmp_path / "b.yaml").write_text("extends: a.yaml\n")
    with pytest.raises(ConfigError, match="loops"):
        read_config_file(tmp_path / "a.yaml")


def test_curriculum_variants() -> None:
    base = {"semantic_epochs": 2, "ris_epochs_before_select": 1, "ris_epochs": 3,
            "refinement_rounds": 2, "refinement_epochs": 1}  # fmt: skip
    full = curriculum_phases(config_from_dict({"curriculum": base}).curriculum)
    assert [p.name for p in full] == ["semantic", "ris_pre", "ris", "refine_1", "refine_2"]
    no_ref = curriculum_phases(
        config_from_dict({"curriculum": {**base, "exclude_subsets": ["D_ref"]}}).curriculum
    )
    assert all("D_ref" not in p.subsets for p in no_ref) and len(no_ref) == len(full)
    joint = curriculum_phases(
        config_from_dict(
            {"curriculum": {**base, "joint": True, "exclude_subsets": ["D_sem"]}}
        ).curriculum
    )
    assert len(joint) == 1 and joint[0].epochs == 2 + 1 + 3 + 2 * 1
    assert joint[0].subsets == ("H_sem", "H_ref", "D_ref") and joint[0].unselected
    assert joint[0].select_round == 0
    with pytest.raises(ConfigError, match="exclude_subsets"):
        config_from_dict({"curriculum": {"exclude_subsets": ["D_xyz"]}})


def test_positive_points_are_always_positive() -> None:
    gen = PointGenerator([8], 8, hidden_dim=16, num_queries=2, points_per_query=3, num_heads=2,
                         ffn_dim=16, positive_points=True)  # fmt: skip
    out = gen([torch.randn(2, 4, 8)], torch.randn(2, 3, 8), torch.zeros(2, 3, dtype=torch.bool))
    assert (out["pred_point_logits"].sigmoid() > 0.99).all()


def test_candidates_match_the_phrase_whose_head_they_hold() -> None:
    text = "the circle left of the green square"
    truths = [
        PhraseTruth("referent", "the circle", 0, 10, 4, 10, (1, 2)),
        PhraseTruth("landmark", "the green square", 19, 35, 29, 35, (3,)),
        PhraseTruth("sentence", text, 0, 35, 4, 10, (1,)),
    ]
    assert match_truth(("circle", 4, 10, "circle", False), text, truths) == ("referent", [1, 2])
    assert match_truth(("green square", 23, 35, "square", False), text, truths) == ("landmark", [3])
    assert match_truth((text, 0, 35, "", True), text, truths) == ("sentence", [1])
    assert match_truth(("left", 11, 15, "left", False), text, truths) == (None, None)
    assert match_truth(("circle", 4, 10, "circle", False), text, None) == (None, None)


def test_select_report_counts_hits_and_chance() -> None:
    def sample(sid: str, n: int) -> Sample:
        cands = tuple(Candidate(i, "x", (), 0) for i in range(n))
        return Sample(0, sid, "h", 8, 8, "H_ref", "train", cands)

    samples = {(0, "a"): sample("a", 2), (0, "b"): sample("b", 2), (0, "c"): sample("c", 3)}
    roles = {(0, "a", 0): "referent", (0, "a", 1): "landmark", (0, "b", 1): "referent",
             (0, "c", 2): "referent", (0, "c", 0): "landmark"}  # fmt: skip
    rows = [
        {"sample_id": "a", "cand_idx": 0, "kept": True},  # right
        {"sample_id": "b", "cand_idx": 0, "kept": True},  # wrong
        {"sample_id": "c", "cand_idx": 2, "kept": False},  # right, dropped
    ]
    report = select_report(rows, samples, roles, 0)
    assert report["pairs"] == 3 and report["kept"] == 2
    assert report["kept_share"] == pytest.approx(2 / 3)
    assert report["accuracy"] == 0.5 and report["random_accuracy"] == 0.5
    assert report["first_accuracy"] == 0.5  # a's first candidate is its referent, b's is not
    assert report["accuracy_all"] == pytest.approx(2 / 3)
    assert report["random_accuracy_all"] == pytest.approx((0.5 + 0.5 + 1 / 3) / 3)
    assert "accuracy" not in select_report(rows, samples, {}, 0)  # no truth: counts only


def test_map_mode_predicts_a_point_map_and_trains_on_pooled_masks() -> None:
    from pipeline.core.rle import encode_rle
    from trainer.data.dataset import grid_target
    from trainer.loss.criterion import LossConfig, build_criterion

    gen = PointGenerator([8], 8, hidden_dim=16, num_queries=3, points_per_query=4, num_heads=2,
                         ffn_dim=16, sam_stage=4, point_mode="map")  # fmt: skip
    sam_tokens = torch.randn(2, 16, 256)  # (B, S*S, 256): the SAM stage, 4 x 4
    out = gen([torch.randn(2, 9, 8)], torch.randn(2, 3, 8), torch.zeros(2, 3, dtype=torch.bool),
              sam_tokens=sam_tokens)  # fmt: skip
    assert out["pred_maps"].shape == (2, 3, 4, 4)
    assert out["pred_points"].shape == (2, 3, 4, 2) and out["pred_scores"].shape == (2, 3)
    # the points are the map's peaks, at cell centres
    flat = out["pred_maps"][0, 0].flatten()
    peak = int(flat.argmax())
    centre = torch.tensor([(peak % 4 + 0.5) / 4, (peak // 4 + 0.5) / 4])
    assert torch.allclose(out["pred_points"][0, 0, 0], centre)

    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[:4, :4] = True  # the top-left quarter → the top-left 2 x 2 cells of a 4 x 4 grid
    grid = grid_target(encode_rle(mask.numpy())[0], 8, 8, 4)
    assert grid[:2, :2].eq(1).all() and grid.sum() == 4
    targets = [{"grid": grid[None], "referent": torch.tensor([1])}] * 2
    criterion = build_criterion(LossConfig(mask_dice=0, mask_bce=0, point_l1=0, point_bce=0,
                                           map_dice=1, map_bce=1))  # fmt: skip
    assert criterion.losses == ("maps", "score")
    losses = criterion(out, targets)
    assert set(losses) == {"loss_map_dice", "loss_map_bce", "loss_score"}
    criterion.weighted(losses).backward()
    assert gen.map_cells[0].weight.grad is not None


def test_relevance_input_is_where_an_untrained_point_map_starts() -> None:
    # CLIP's response to the expression is an input: scaled to peak 1 (sources differ in range),
    # embedded into every stage and, in map mode, the residual the point map starts from.
    torch.manual_seed(0)
    gen = PointGenerator([8], 8, hidden_dim=16, num_queries=2, points_per_query=3, num_heads=2,
                         ffn_dim=16, sam_stage=4, point_mode="map",
                         relevance_input=True)  # fmt: skip
    relevance = torch.zeros(2, 14, 14)
    relevance[0, :7, :7] = 0.3  # sample 0 lit top-left (a weak source) ...
    relevance[1, 7:, 7:] = 9.0  # ... sample 1 bottom-right (a strong one)
    args = ([torch.randn(2, 9, 8)], torch.randn(2, 3, 8), torch.zeros(2, 3, dtype=torch.bool))
    sam_tokens = torch.randn(2, 16, 256)
    out = gen(*args, sam_tokens=sam_tokens, relevance=relevance)
    for b, (rows, cols) in enumerate([(slice(0, 2), slice(0, 2)), (slice(2, 4), slice(2, 4))]):
        maps = out["pred_maps"][b]  # (K, 4, 4)
        inside = maps[:, rows, cols].flatten(1).amin(dim=1)
        outside = maps.clone()
        outside[:, rows, cols] = -torch.inf
        assert (inside > outside.flatten(1).amax(dim=1)).all()  # every query starts on the light
    moved = gen(*args, sam_tokens=sam_tokens, relevance=relevance.flip(-1))["pred_maps"]
    assert not torch.allclose(moved, out["pred_maps"])
    out["pred_maps"].sum().backward()
    assert gen.relevance_embed.weight.grad is not None  # the embedding trains
    with pytest.raises(ValueError, match="relevance"):
        gen(*args, sam_tokens=sam_tokens)


def test_phrase_priors_start_each_query_on_its_phrase() -> None:
    # phrase_priors: query k < P starts from phrase k's map, a phrase the expression lacks (an
    # all-zero channel) and queries ≥ P from the sentence's map; a wrong channel count is named.
    torch.manual_seed(0)
    gen = PointGenerator([8], 8, hidden_dim=16, num_queries=3, points_per_query=3, num_heads=2,
                         ffn_dim=16, sam_stage=4, point_mode="map", relevance_input=True,
                         phrase_priors=2)  # fmt: skip
    relevance = torch.zeros(1, 3, 8, 8)  # the sentence's, phrase 0's, phrase 1's (absent)
    relevance[0, 0, :4, 4:] = 1.0  # the sentence lights the top-right quarter ...
    relevance[0, 1, 4:, :4] = 0.2  # ... phrase 0 the bottom-left one (a weak source)
    args = ([torch.randn(1, 9, 8)], torch.randn(1, 3, 8), torch.zeros(1, 3, dtype=torch.bool))
    maps = gen(*args, sam_tokens=torch.randn(1, 16, 256), relevance=relevance)["pred_maps"][0]
    top = [divmod(int(m.flatten().argmax()), 4) for m in maps]  # (row, col) of each query's peak
    assert top[0][0] >= 2 and top[0][1] < 2  # phrase 0: bottom-left
    assert all(r < 2 and c >= 2 for r, c in top[1:])  # no phrase 1, and query 2: the sentence's
    with pytest.raises(ValueError, match="channels"):
        gen(*args, sam_tokens=torch.randn(1, 16, 256), relevance=relevance[:, :2])
    with pytest.raises(ValueError, match="phrase_priors"):
        PointGeneratorConfig(phrase_priors=2)  # needs relevance_input and map mode


def test_relevance_dropout_withholds_whole_samples_maps_in_training_only() -> None:
    # relevance_dropout: in training, each sample sees all its maps or none (every channel zero);
    # in evaluation it always sees them.
    torch.manual_seed(0)
    gen = PointGenerator([8], 8, hidden_dim=16, num_queries=2, points_per_query=3, num_heads=2,
                         ffn_dim=16, dropout=0.0, sam_stage=4, point_mode="map",
                         relevance_input=True, phrase_priors=1, relevance_dropout=0.5)  # fmt: skip
    b = 64
    stages = [torch.randn(1, 9, 8).expand(b, -1, -1)]
    words, pad = torch.randn(1, 3, 8).expand(b, -1, -1), torch.zeros(b, 3, dtype=torch.bool)
    sam_tokens = torch.randn(1, 16, 256).expand(b, -1, -1)
    relevance = torch.rand(1, 2, 8, 8).expand(b, -1, -1, -1)

    def maps(rel: torch.Tensor) -> torch.Tensor:
        return gen(stages, words, pad, sam_tokens=sam_tokens, relevance=rel)["pred_maps"]

    gen.eval()
    full, none = maps(relevance), maps(torch.zeros_like(relevance))
    assert not torch.allclose(full[0], none[0])
    gen.train()
    out = maps(relevance)
    saw = torch.isclose(out, full, atol=1e-5).flatten(1).all(1)
    withheld = torch.isclose(out, none, atol=1e-5).flatten(1).all(1)
    assert (saw ^ withheld).all()  # every sample: all of its maps, or none of them
    assert 16 < int(withheld.sum()) < 48  # about half of 64
    gen.eval()
    assert torch.allclose(maps(relevance), full)
    with pytest.raises(ValueError, match="relevance_dropout needs relevance_input"):
        PointGeneratorConfig(relevance_dropout=0.5)
    with pytest.raises(ValueError, match=r"relevance_dropout must be in \[0, 1\)"):
        PointGeneratorConfig(point_mode="map", sam_stage=4, relevance_input=True,
                             relevance_dropout=1.0)  # fmt: skip
