"""The ImageNet adapter: flat layout on the real samples, folder-per-class layout in tmp_path."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from pipeline.core.errors import ConfigError, DatasetError
from pipeline.data.imagenet import ImageNetDataset, class_expression
from pipeline.data.registry import open_dataset
from tests.helpers import IMAGENET_SAMPLES, REPO


def classes() -> list[dict]:
    return json.loads((IMAGENET_SAMPLES / "classes.json").read_text())


def test_flat_layout_on_real_samples() -> None:
    dataset = open_dataset("imagenet-mini", IMAGENET_SAMPLES)
    assert isinstance(dataset, ImageNetDataset)
    records, rejects = dataset.records()
    assert len(records) == 1000 and rejects == []
    by_wnid = {c["wnid"]: c for c in classes()}
    ids = [r.image_id for r in records]
    assert ids == sorted(ids) and set(ids) == set(by_wnid)
    for record in records:
        entry = by_wnid[record.image_id]
        assert record.sample_id == f"imagenet-mini/{entry['wnid']}"
        assert record.expression == f"the {entry['openclip_name']} in the middle"
        assert record.category == entry["openclip_name"]
        assert (record.split, record.source, record.ref_id, record.ann_id) == (
            "train", "imagenet", -1, -1,
        )  # fmt: skip
        assert record.image_path == entry["file"]
        assert dataset.ground_truth(record) is None
    assert dataset.input_files() == [IMAGENET_SAMPLES / "classes.json"]
    assert dataset.records(["train"])[0] == records


def test_unknown_split_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"val.*available: train"):
        open_dataset("imagenet-mini", IMAGENET_SAMPLES).records(["val"])


def test_class_expression_takes_the_first_synonym() -> None:
    assert class_expression("tench, Tinca tinca") == "the tench in the middle"
    assert class_expression("  great   white shark ") == "the great white shark in the middle"


def flat_copy(tmp_path: Path, n: int = 3) -> Path:
    root = tmp_path / "flat"
    root.mkdir()
    entries = classes()[:n]
    for entry in entries:
        shutil.copy(IMAGENET_SAMPLES / entry["file"], root / entry["file"])
    (root / "classes.json").write_text(json.dumps(entries))
    return root


def test_flat_layout_rejects_missing_files(tmp_path: Path) -> None:
    root = flat_copy(tmp_path)
    missing = classes()[1]
    (root / missing["file"]).unlink()
    records, rejects = open_dataset("imagenet-mini", root).records()
    assert len(records) == 2 and len(rejects) == 1
    assert rejects[0].record == f"imagenet-mini/{missing['wnid']}"
    assert missing["file"] in rejects[0].reason and rejects[0].file == "classes.json"


def test_flat_layout_broken_json_is_a_dataset_error(tmp_path: Path) -> None:
    root = flat_copy(tmp_path)
    (root / "classes.json").write_text("[{")
    with pytest.raises(DatasetError, match=r"classes.json"):
        open_dataset("imagenet-mini", root).records()
    (root / "classes.json").unlink()
    with pytest.raises(DatasetError, match=r"classes.json.*--data-root"):
        open_dataset("imagenet-mini", root)


def folders_manifest(tmp_path: Path, classes_file: str) -> Path:
    """A manifests dir holding a folder-layout variant of imagenet-mini."""
    directory = tmp_path / "manifests"
    directory.mkdir(exist_ok=True)
    text = ((REPO / "data_manifests") / "imagenet-mini.yaml").read_text()
    text = text.replace("layout: flat", "layout: folders")
    text = text.replace("classes: classes.json", f"classes: {classes_file}")
    text = text.replace("images: .", "images: train")
    (directory / "imagenet-mini.yaml").write_text(text)
    return directory


def folder_tree(tmp_path: Path) -> tuple[Path, list[dict]]:
    """Three class folders with two images each, plus one folder no name map lists."""
    root = tmp_path / "folders"
    entries = classes()[:4]
    for entry in entries:
        folder = root / "train" / entry["wnid"]
        folder.mkdir(parents=True)
        for stem in ("img_b", "img_a"):
            shutil.copy(IMAGENET_SAMPLES / entry["file"], folder / f"{stem}.JPEG")
        (folder / "notes.txt").write_text("not an image")
    return root, entries


@pytest.mark.parametrize("map_format", ["json", "txt"])
def test_folder_layout(tmp_path: Path, map_format: str) -> None:
    root, entries = folder_tree(tmp_path)
    named = entries[:3]  # the fourth folder has no name: its images are rejected
    if map_format == "json":
        (root / "names.json").write_text(json.dumps({e["wnid"]: e["openclip_name"] for e in named}))
    else:
        lines = [f"{e['wnid']} {e['openclip_name']}, some synonym" for e in named]
        (root / "names.txt").write_text("\n".join(["# wnid name", *lines]) + "\n")
    manifests = folders_manifest(tmp_path, f"names.{map_format}")

    dataset = open_dataset("imagenet-mini", root, specs_dir=manifests)
    records, rejects = dataset.records()
    assert len(records) == 6 and len(rejects) == 2
    assert [r.image_id for r in records[:2]] == [
        f"{named[0]['wnid']}/img_a",
        f"{named[0]['wnid']}/img_b",
    ]
    for record in records:
        wnid = record.image_id.split("/")[0]
        name = next(e["openclip_name"] for e in named if e["wnid"] == wnid)
        assert record.expression == f"the {name} in the middle" and record.category == name
        assert record.sample_id == f"imagenet-mini/{record.image_id}"
        assert record.image_path == f"train/{record.image_id}.JPEG"
        assert (root / record.image_path).is_file()
    assert all(entries[3]["wnid"] in r.reason for r in rejects)
    assert dataset.input_files() == [root / f"names.{map_format}"]
