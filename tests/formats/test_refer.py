"""The refer adapter and dataset manifests on the real RefCOCO-family sample, and broken copies."""

from __future__ import annotations

import json
import os
import pickle
import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipeline.core.errors import ConfigError, DatasetError, UnsafePickleError
from pipeline.data.refer import ReferDataset
from pipeline.data.registry import open_dataset
from pipeline.data.specs import available_specs, check_expected_files, load_spec
from tests.helpers import REFER_SAMPLE

REFER = {
    "refcoco": "refcoco/refs(unc).p",
    "refcoco+": "refcoco+/refs(unc).p",
    "refcocog": "refcocog/refs(umd).p",
    "refcocog-google": "refcocog/refs(google).p",
}


def plain_refs(relative: str) -> list[dict]:
    with (REFER_SAMPLE / relative).open("rb") as f:
        return pickle.load(f)  # the shared sample data is trusted


def polygon_area(segmentation: list[list[float]]) -> float:
    """Shoelace area of COCO polygons: an estimate independent of pycocotools."""
    total = 0.0
    for poly in segmentation:
        x, y = np.asarray(poly[0::2]), np.asarray(poly[1::2])
        total += 0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))
    return total


def test_manifests_load() -> None:
    names = available_specs()
    for name in [*REFER, "synthetic", "imagenet-mini"]:
        assert name in names
        manifest = load_spec(name)
        assert manifest.name == name and manifest.splits and manifest.files
    assert load_spec("refcocog").splits == ("train", "val", "test")
    assert load_spec("imagenet-mini").kind == "imagenet"


def test_unknown_dataset_lists_available_names() -> None:
    with pytest.raises(ConfigError, match=r"refcocox.*available: .*refcoco\+, refcocog"):
        open_dataset("refcocox", REFER_SAMPLE)


@pytest.mark.parametrize("name", list(REFER))
def test_real_refer_datasets_load(name: str) -> None:
    dataset = open_dataset(name, REFER_SAMPLE)
    assert isinstance(dataset, ReferDataset)
    records, rejects = dataset.records()
    assert rejects == []

    refs = plain_refs(REFER[name])
    expected = Counter()
    for ref in refs:
        expected[ref["split"]] += len(ref["sentences"])
    assert Counter(r.split for r in records) == expected
    for split, count in expected.items():
        assert len(dataset.records([split])[0]) == count

    ids = [r.sample_id for r in records]
    assert len(set(ids)) == len(ids) and all(i.startswith(f"{name}/") for i in ids)
    keys = [(int(r.image_id), r.ref_id, int(r.sample_id.rsplit("/", 1)[1])) for r in records]
    assert keys == sorted(keys)
    for record in records:
        assert not Path(record.image_path).is_absolute() and "\\" not in record.image_path
        assert (REFER_SAMPLE / record.image_path).is_file()
        assert record.expression == " ".join(record.expression.split()) and record.category
    assert [p.relative_to(REFER_SAMPLE).as_posix() for p in dataset.input_files()] == [
        REFER[name],
        f"{REFER[name].split('/')[0]}/instances.json",
    ]


@pytest.mark.parametrize("name", ["refcoco", "refcocog"])
def test_ground_truth_masks(name: str) -> None:
    dataset = open_dataset(name, REFER_SAMPLE)
    instances = json.loads((REFER_SAMPLE / name / "instances.json").read_text())
    annotations = {a["id"]: a for a in instances["annotations"]}
    records, _ = dataset.records()
    for record in records:
        gt = dataset.ground_truth(record)
        with Image.open(REFER_SAMPLE / record.image_path) as image:
            width, height = image.size
        assert gt.mask.shape == (height, width) and gt.mask.dtype == bool
        annotation = annotations[record.ann_id]
        # The sample's "area" field holds the box's w*h, so compare with the polygon's own area.
        assert gt.mask.sum() == pytest.approx(polygon_area(annotation["segmentation"]), rel=0.02)
        assert gt.bbox == tuple(annotation["bbox"])
        ys, xs = np.nonzero(gt.mask)
        x, y, w, h = gt.bbox
        assert xs.min() >= x - 2 and xs.max() <= x + w + 2
        assert ys.min() >= y - 2 and ys.max() <= y + h + 2


def test_unknown_split_names_the_available_ones() -> None:
    dataset = open_dataset("refcocog", REFER_SAMPLE)
    with pytest.raises(ConfigError, match=r"testA.*available: train, val, test"):
        dataset.records(["testA"])
    assert dataset.records(["train"]) == ([], [])  # the sample has no train refs


# --- broken copies --------------------------------------------------------------------------------


def copy_refcoco(tmp_path: Path, edit_refs=None, edit_instances=None) -> Path:
    """A private copy of the refcoco sample; `edit_*` may change the refs / instances in place."""
    root = tmp_path / "data"
    (root / "refcoco").mkdir(parents=True)
    shutil.copytree(REFER_SAMPLE / "images", root / "images")
    refs = plain_refs(REFER["refcoco"])
    instances = json.loads((REFER_SAMPLE / "refcoco" / "instances.json").read_text())
    if edit_refs:
        edit_refs(refs)
    if edit_instances:
        edit_instances(instances)
    (root / "refcoco" / "refs(unc).p").write_bytes(pickle.dumps(refs, protocol=2))
    (root / "refcoco" / "instances.json").write_text(json.dumps(instances))
    return root


def n_sentences() -> int:
    return sum(len(r["sentences"]) for r in plain_refs(REFER["refcoco"]))


def test_annotation_id_mismatch_is_rejected(tmp_path: Path) -> None:
    def edit(refs):
        refs[0]["ann_id"] = 999_999_999

    root = copy_refcoco(tmp_path, edit_refs=edit)
    records, rejects = open_dataset("refcoco", root).records()
    bad = plain_refs(REFER["refcoco"])[0]
    assert len(rejects) == len(bad["sentences"]) and len(records) + len(rejects) == n_sentences()
    assert {r.record for r in rejects} == {
        f"refcoco/{bad['ref_id']}/{s['sent_id']}" for s in bad["sentences"]
    }
    assert all(
        r.stage == "ingest" and r.file == "refcoco/refs(unc).p" and "999999999" in r.reason
        for r in rejects
    )


def test_bad_expressions_are_rejected(tmp_path: Path) -> None:
    def edit(refs):
        sentences = refs[0]["sentences"]
        sentences[0]["sent"] = "   \t "
        sentences[1]["sent"] = "zebra\x07 left"
        sentences[2]["sent"] = "12 !!"

    records, rejects = open_dataset("refcoco", copy_refcoco(tmp_path, edit_refs=edit)).records()
    reasons = " | ".join(r.reason for r in rejects)
    assert len(rejects) == 3 and len(records) + 3 == n_sentences()
    assert "empty" in reasons and "control characters" in reasons and "no letter" in reasons


def test_non_ascii_expressions_are_kept(tmp_path: Path) -> None:
    def edit(refs):
        refs[0]["sentences"][0]["sent"] = "the  café\tchair ＬＥＦＴ"  # full-width: NFKC folds it
        refs[0]["sentences"][1]["sent"] = "左边的斑马"

    records, rejects = open_dataset("refcoco", copy_refcoco(tmp_path, edit_refs=edit)).records()
    assert rejects == []
    expressions = {r.expression for r in records}
    assert "the café chair LEFT" in expressions and "左边的斑马" in expressions


def test_missing_image_rejects_all_its_records(tmp_path: Path) -> None:
    root = copy_refcoco(tmp_path)
    image = "images/mscoco/images/train2014/COCO_train2014_000000000154.jpg"
    (root / image).unlink()
    records, rejects = open_dataset("refcoco", root).records()
    expected = sum(
        len(r["sentences"]) for r in plain_refs(REFER["refcoco"]) if r["image_id"] == 154
    )
    assert expected and len(rejects) == expected
    assert all(image in r.reason for r in rejects)
    assert all(r.image_id != "154" for r in records)


def test_image_without_entry_is_rejected(tmp_path: Path) -> None:
    def edit(instances):
        instances["images"] = [i for i in instances["images"] if i["id"] != 154]

    records, rejects = open_dataset(
        "refcoco", copy_refcoco(tmp_path, edit_instances=edit)
    ).records()
    assert rejects and all("154" in r.reason for r in rejects)
    assert len(records) + len(rejects) == n_sentences()


def test_missing_refs_file_is_a_dataset_error(tmp_path: Path) -> None:
    root = copy_refcoco(tmp_path)
    (root / "refcoco" / "refs(unc).p").unlink()
    with pytest.raises(DatasetError, match=r"refs\(unc\)\.p.*--data-root"):
        open_dataset("refcoco", root)
    with pytest.raises(DatasetError, match=r"refs\(unc\)\.p.*--data-root"):
        check_expected_files(load_spec("refcoco"), root)


def test_duplicate_sample_ids_are_a_dataset_error(tmp_path: Path) -> None:
    def edit(refs):
        refs.append(refs[0])

    with pytest.raises(DatasetError, match=r"occurs twice"):
        open_dataset("refcoco", copy_refcoco(tmp_path, edit_refs=edit)).records()


def test_malicious_refs_file_is_refused(tmp_path: Path) -> None:
    class Exploit:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    root = copy_refcoco(tmp_path)
    (root / "refcoco" / "refs(unc).p").write_bytes(pickle.dumps([Exploit()], protocol=2))
    with pytest.raises(UnsafePickleError, match=r"system"):
        open_dataset("refcoco", root).records()
    assert not (tmp_path / "pwned").exists()


def test_corrupt_instances_is_a_dataset_error(tmp_path: Path) -> None:
    root = copy_refcoco(tmp_path)
    (root / "refcoco" / "instances.json").write_text('{"images": [')
    with pytest.raises(DatasetError, match=r"instances.json"):
        open_dataset("refcoco", root).records()
