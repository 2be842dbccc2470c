"""Pseudo-labels out of a store (`labels export`) and back in, and `labels diff`.

The refer export is built back as a dataset by this project's own adapter (the ppt-export spec)
and must give the exported masks exactly (IoU 1.0) and the same sentences; the COCO export must
load in pycocotools' COCO API. A Select round is written by the trainer's own writer.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from typer.testing import CliRunner

from cli.main import app
from pipeline.core.rle import decode_rle
from pipeline.data.registry import open_dataset
from pipeline.data.safe_pickle import load_refs_pickle
from pipeline.scoring.metrics import mask_iou
from pipeline.stages.build import build
from pipeline.stages.executor import InProcessExecutor
from pipeline.store.diff import diff_paths
from pipeline.store.reader import LabelStore
from pipeline.store.rounds import write_round
from trainer.loop.select import selection_table

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _round(store: Path, k: int, choice: int, kept_every: int) -> dict[str, tuple[int, bool]]:
    """Write Select round k choosing candidate `choice` of every train H_ref pair, keeping every
    `kept_every`-th; returns sample_id → (cand_idx, kept)."""
    samples = LabelStore(store).samples().to_pylist()
    pairs = [s for s in samples if s["subset"] == "H_ref" and s["split"] == "train"]
    rows = [
        {"sample_id": s["sample_id"], "cand_idx": min(choice, s["n_candidates"] - 1),
         "confidence": 0.9, "overlap": 0.8, "kept": i % kept_every == 0, "threshold": 0.5,
         "round": k}
        for i, s in enumerate(pairs)
    ]  # fmt: skip
    write_round(store, k, selection_table(rows), {"round": k})
    return {r["sample_id"]: (r["cand_idx"], r["kept"]) for r in rows}


def _expected(store: Path, chosen: dict[str, tuple[int, bool]]) -> dict[str, tuple[str, str]]:
    """sample_id → (expression, mask counts) that an export following `chosen` must hold."""
    samples = {s["sample_id"]: s for s in LabelStore(store).samples().to_pylist()}
    out = {}
    for c in LabelStore(store).candidates().to_pylist():
        s = samples[c["sample_id"]]
        pick = chosen.get(c["sample_id"])
        wanted = (pick == (c["cand_idx"], True)) if s["subset"] == "H_ref" else c["referent"] == 1
        if wanted:
            out[c["sample_id"]] = (s["expression"], c["mask_rle"])
    return out


def test_refer_export_builds_back_to_the_same_masks_and_texts(
    tmp_path: Path, store_copy: Path, synthetic_root: Path
) -> None:
    chosen = _round(store_copy, 1, choice=1, kept_every=2)
    _round(store_copy, 2, choice=0, kept_every=1)  # the latest round, not the one asked for
    assert any(kept for _, kept in chosen.values()) and not all(k for _, k in chosen.values())
    out = tmp_path / "export"
    args = ["labels", "export", str(store_copy), "--format", "refer", "--out", str(out),
            "--round", "1", "--data-root", str(synthetic_root)]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    expected = _expected(store_copy, chosen)

    # The pickle holds plain containers only: the restricted loader admits it.
    refs = load_refs_pickle(out / "refs(ppt).p")
    assert sorted(r["sample_id"] for r in refs) == sorted(expected)
    rebuilt = tmp_path / "rebuilt"
    build("ppt-export", out, rebuilt, {"ingest": {"shard_size": 16}}, InProcessExecutor(),
          stages=("ingest",))  # fmt: skip
    dataset = open_dataset("ppt-export", out)
    records, rejects = dataset.records()
    assert not rejects and len(records) == len(expected) == LabelStore(rebuilt).samples().num_rows
    original = {f"ppt-export/{r['ref_id']}/{r['sent_ids'][0]}": r["sample_id"] for r in refs}
    sizes = {s["sample_id"]: s for s in LabelStore(store_copy).samples().to_pylist()}
    for record in records:
        sid = original[record.sample_id]
        expression, counts = expected[sid]
        assert record.expression == expression
        mask = decode_rle(counts, sizes[sid]["height"], sizes[sid]["width"])
        assert mask_iou(dataset.ground_truth(record).mask, mask) == 1.0
        assert record.image_path.endswith(Path(sizes[sid]["image_path"]).name)

    # The refer toolkit's getMask (REFER.getMask): a list whose first item is not a polygon
    # goes to pycocotools as RLEs, summed over axis 2.
    instances = json.loads((out / "instances.json").read_text())
    ann = instances["annotations"][0]
    assert not isinstance(ann["segmentation"][0], list)
    toolkit = np.sum(mask_utils.decode(ann["segmentation"]), axis=2).astype(bool)
    sid = refs[0]["sample_id"]
    assert np.array_equal(toolkit, decode_rle(expected[sid][1], *toolkit.shape))


def test_refer_pickle_is_plain_and_h_ref_waits_for_a_round(
    tmp_path: Path, synthetic_store: Path
) -> None:
    out = tmp_path / "export"
    result = CliRunner().invoke(app, ["labels", "export", str(synthetic_store), "--format",
                                      "refer", "--out", str(out), "--images", "none"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "left out" in result.output  # H_ref: no round in this store
    refs = pickle.loads((out / "refs(ppt).p").read_bytes())  # our own file, written just now
    assert {r["subset"] for r in refs} == {"H_sem"}

    def plain(v: object) -> bool:
        if isinstance(v, dict):
            return all(plain(k) and plain(x) for k, x in v.items())
        if isinstance(v, list):
            return all(map(plain, v))
        return isinstance(v, str | int | float)

    assert plain(refs)
    bad = CliRunner().invoke(app, ["labels", "export", str(synthetic_store), "--format", "refer",
                                   "--out", str(out), "--round", "4"])  # fmt: skip
    assert bad.exit_code == 2 and "no Select round 4" in bad.output


def test_coco_export_loads_in_pycocotools(tmp_path: Path, store_copy: Path) -> None:
    chosen = _round(store_copy, 1, choice=0, kept_every=1)
    path = tmp_path / "labels.json"
    result = CliRunner().invoke(app, ["labels", "export", str(store_copy), "--format", "coco",
                                      "--out", str(path)])  # fmt: skip
    assert result.exit_code == 0, result.output
    coco = COCO(str(path))
    expected = _expected(store_copy, chosen)
    assert len(coco.getAnnIds()) == len(expected)
    for ann in coco.loadAnns(coco.getAnnIds()):
        expression, counts = expected[ann["sample_id"]]
        image = coco.loadImgs(ann["image_id"])[0]
        truth = decode_rle(counts, image["height"], image["width"])
        assert np.array_equal(coco.annToMask(ann).astype(bool), truth)
        assert ann["expression"] == expression and ann["phrase"] in expression
        assert ann["area"] == int(truth.sum()) and isinstance(
            ann["score"], float
        )  # SAM's IoU guess
        assert coco.loadCats(ann["category_id"])[0]["name"]
    subsets = {a["subset"] for a in coco.dataset["annotations"]}
    assert subsets == {"H_sem", "H_ref"}


def test_diff_of_stores_and_rounds(tmp_path: Path, store_copy: Path, synthetic_store: Path) -> None:
    assert all(d.same for d in diff_paths(synthetic_store, store_copy))
    first = _round(store_copy, 1, choice=0, kept_every=1)
    second = _round(store_copy, 2, choice=1, kept_every=2)
    rounds = store_copy / "rounds"
    (d,) = diff_paths(rounds / "1", rounds / "2")
    moved = {s for s in first if first[s] != second[s]}
    assert moved and set(d.changed) == moved and not d.added and not d.removed
    result = CliRunner().invoke(app, ["labels", "diff", str(rounds / "1"), str(rounds / "2")])
    assert result.exit_code == 1 and str(len(moved)) in result.output

    masks = next(store_copy.glob("masks/part-*.parquet"))
    table = pq.read_table(masks)
    column = table.schema.get_field_index("sam_score")
    scores = [0.0, *table.column(column).to_pylist()[1:]]
    table = table.set_column(column, "sam_score", pa.array(scores, pa.float32()))
    pq.write_table(table, masks)  # one changed score in one row
    by_table = {d.name: d for d in diff_paths(synthetic_store, store_copy)}
    assert list(by_table["masks"].changed.values()) == [["sam_score"]]
    assert all(d.same for name, d in by_table.items() if name != "masks")
