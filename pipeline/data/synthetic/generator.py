"""A small synthetic referring-segmentation dataset, written in the standard refer layout.

It is the project's embedded default dataset (nothing to download) and the fixture for the
trainer's learning tests. `generate_synthetic(root, cfg)` writes, under `root` (the --data-root):

    synthetic/refs(unc).p        refer-toolkit refs: a list of plain dicts
    synthetic/instances.json     COCO images / annotations (polygons) / categories
    synthetic/README.txt         how it was generated
    synthetic/config.json        config and counts; it arrives last and marks the dataset complete
    images/synthetic/*.png       the rendered scenes

Every expression is a predicate over the scene's objects (`Expression.holds`) and is written only
when the referent is the one object satisfying it, so no sentence is ambiguous.
"""

from __future__ import annotations

import json
import logging
import pickle
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np

from pipeline.core.errors import ConfigError, DatasetError
from pipeline.data.synthetic.expressions import Expression, describe
from pipeline.data.synthetic.scenes import SHAPES, Scene, make_scene, render_scene

log = logging.getLogger(__name__)

NAME = "synthetic"  # the dataset's folder under --data-root and under images/
GENERATOR_VERSION = 1  # bump when the output changes for an unchanged config: old copies regenerate
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class SyntheticConfig:
    """Parameters of the synthetic dataset; the `synthetic` section of params.yaml."""

    n_images: int = 120  # scenes to generate, one image each
    min_size: int = 224  # smallest image width/height in pixels
    max_size: int = 320  # largest; width and height are each drawn uniformly in [min, max]
    min_objects: int = 2  # fewest shapes asked for per scene (a crowded scene may fit fewer)
    max_objects: int = 5  # most shapes per scene
    train_frac: float = 0.7  # share of images in "train"; splits are by image, never by ref
    val_frac: float = 0.15  # share of images in "val"
    test_frac: float = 0.15  # share of images in "test"
    sentences_per_ref: int = 2  # expressions per referent (fewer where the scene allows fewer)
    share_prob: float = 0.6  # chance a shape copies the class or colour of an earlier one
    seed: int = 0  # everything, images included, is a function of the config and this seed

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            ok = isinstance(v, int) if f.type == "int" else isinstance(v, int | float)
            if not ok or isinstance(v, bool):
                raise ConfigError(f"synthetic.{f.name} must be a {f.type}, got {v!r}")
        if self.n_images < 1 or self.sentences_per_ref < 1 or self.seed < 0:
            raise ConfigError("synthetic.n_images and sentences_per_ref must be >= 1, seed >= 0")
        if not 64 <= self.min_size <= self.max_size:
            raise ConfigError("synthetic.min_size must be >= 64 and <= synthetic.max_size")
        if not 1 <= self.min_objects <= self.max_objects <= 8:
            raise ConfigError("need 1 <= synthetic.min_objects <= synthetic.max_objects <= 8")
        fracs = (self.train_frac, self.val_frac, self.test_frac)
        if min(fracs) < 0 or abs(sum(fracs) - 1.0) > 1e-6:
            raise ConfigError(
                f"synthetic train/val/test_frac must be >= 0 and sum to 1, got {fracs}"
            )
        if not 0.0 <= self.share_prob <= 1.0:
            raise ConfigError(f"synthetic.share_prob must be in [0, 1], got {self.share_prob}")


@dataclass(frozen=True)
class SyntheticSummary:
    """What `generate_synthetic` produced (or found already complete)."""

    root: Path  # the --data-root written to
    n_images: int
    n_annotations: int  # shapes; every one has a COCO annotation
    n_refs: int  # shapes that got at least one unambiguous expression
    n_sentences: int
    refs_per_split: dict[str, int]
    reused: bool = False  # True when a complete dataset with this config was already there


def from_params(d: Mapping[str, object]) -> SyntheticConfig:
    """Build a config from the `synthetic` section of params.yaml, refusing unknown keys."""
    known = [f.name for f in fields(SyntheticConfig)]
    for key in d:
        if key not in known:
            raise ConfigError(
                f"params.yaml [synthetic]: unknown key {key!r}; known keys: {', '.join(known)}"
            )
    return SyntheticConfig(**d)  # type: ignore[arg-type]  # __post_init__ checks the types


# --- dataset --------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlannedImage:
    """One image of the dataset before rendering: its scene and the sentences of its referents."""

    image_id: int
    file_name: str  # under images/synthetic/
    split: str
    scene: Scene
    # Object index -> its sentences; objects that nothing singles out are not refs.
    refs: dict[int, list[tuple[Expression, str]]]


def _splits(cfg: SyntheticConfig) -> list[str]:
    """A split per image, shuffled; every split with a share > 0 gets an image when n >= 3."""
    n = cfg.n_images
    enough = n >= len(SPLITS)  # enough images to give every used split at least one
    n_val = max(round(n * cfg.val_frac), int(enough and cfg.val_frac > 0))
    n_test = max(round(n * cfg.test_frac), int(enough and cfg.test_frac > 0))
    n_test = min(n_test, n - n_val)  # rounding up both shares may overshoot n
    names = ["train"] * (n - n_val - n_test) + ["val"] * n_val + ["test"] * n_test
    return [names[j] for j in np.random.default_rng(cfg.seed).permutation(n)]


def plan_dataset(cfg: SyntheticConfig) -> list[PlannedImage]:
    """Scenes and sentences of every image; a pure function of the config."""
    plans = []
    for idx, split in enumerate(_splits(cfg)):
        # One stream per image: image i does not change when n_images does.
        rng = np.random.default_rng([cfg.seed, idx])
        w, h = (int(v) for v in rng.integers(cfg.min_size, cfg.max_size + 1, size=2))
        n_obj = int(rng.integers(cfg.min_objects, cfg.max_objects + 1))
        scene = make_scene(rng, w, h, n_obj, cfg.share_prob)
        refs = {
            j: describe(scene, j, rng, cfg.sentences_per_ref) for j in range(len(scene.objects))
        }
        plans.append(
            PlannedImage(
                idx + 1,
                f"{NAME}_{idx + 1:06d}.png",
                split,
                scene,
                {j: r for j, r in refs.items() if r},
            )
        )
    return plans


def _tables(plans: list[PlannedImage]) -> tuple[list[dict], dict]:
    """The refs list and the COCO instances dict, with dataset-wide unique ann/ref/sent ids."""
    refs: list[dict] = []
    coco: dict = {"images": [], "annotations": [], "categories": []}
    coco["categories"] = [
        {"id": k + 1, "name": s, "supercategory": "shape"} for k, s in enumerate(SHAPES)
    ]
    ann_id = sent_id = 0
    for p in plans:
        coco["images"].append(
            {
                "id": p.image_id,
                "file_name": p.file_name,
                "height": p.scene.height,
                "width": p.scene.width,
            }
        )
        for j, o in enumerate(p.scene.objects):
            ann_id += 1
            category_id = SHAPES.index(o.shape) + 1
            coco["annotations"].append(
                {"id": ann_id, "image_id": p.image_id, "category_id": category_id,
                 "segmentation": [list(o.polygon)], "bbox": list(o.bbox), "iscrowd": 0,
                 "area": round(o.area, 2)}
            )  # fmt: skip
            if j not in p.refs:
                continue
            sentences = []
            for _, text in p.refs[j]:
                sent_id += 1
                sentences.append(
                    {"tokens": text.split(), "raw": text, "sent": text, "sent_id": sent_id}
                )
            refs.append(
                {"sent_ids": [s["sent_id"] for s in sentences],
                 # refer names a ref "<image stem>_<ann_id>"; readers take the image from COCO.
                 "file_name": f"{Path(p.file_name).stem}_{ann_id}.png",
                 "ann_id": ann_id, "ref_id": len(refs) + 1, "image_id": p.image_id,
                 "split": p.split, "sentences": sentences, "category_id": category_id}
            )  # fmt: skip
    return refs, coco


def _summary(root: Path, refs: list[dict], coco: dict) -> SyntheticSummary:
    return SyntheticSummary(
        root=root,
        n_images=len(coco["images"]),
        n_annotations=len(coco["annotations"]),
        n_refs=len(refs),
        n_sentences=sum(len(r["sentences"]) for r in refs),
        refs_per_split={s: sum(r["split"] == s for r in refs) for s in SPLITS},
    )


def _marker(cfg: SyntheticConfig, summary: SyntheticSummary) -> dict:
    counts = {k: v for k, v in asdict(summary).items() if k not in ("root", "reused")}
    return {
        "generator": f"ppt-labels {NAME}",
        "version": GENERATOR_VERSION,
        "config": asdict(cfg),
        "summary": counts,
    }


def _existing(root: Path, cfg: SyntheticConfig) -> SyntheticSummary | None:
    """The summary of a complete dataset under root made from cfg, else None."""
    try:
        marker = json.loads((root / NAME / "config.json").read_text())
    except (OSError, ValueError):
        return None
    wanted = json.loads(json.dumps(asdict(cfg)))  # as it reads back from the marker
    if not isinstance(marker, dict) or marker.get("version") != GENERATOR_VERSION:
        return None
    if marker.get("config") != wanted:
        return None
    images = root / "images" / NAME
    n_png = sum(1 for _ in images.glob("*.png")) if images.is_dir() else -1
    files_ok = all((root / NAME / f).is_file() for f in ("refs(unc).p", "instances.json"))
    try:
        counts = dict(marker["summary"])
        counts["refs_per_split"] = {s: counts["refs_per_split"][s] for s in SPLITS}  # unsorted
        found = SyntheticSummary(root=root, reused=True, **counts)
    except (KeyError, TypeError):
        return None
    return found if files_ok and n_png == found.n_images else None


def generate_synthetic(root: Path, cfg: SyntheticConfig) -> SyntheticSummary:
    """Write the synthetic dataset under `root` (the --data-root) in refer layout.

    Returns at once when a complete dataset made from the same config is already there. Files are
    built in a temporary folder inside `root` and renamed into place, annotations (holding the
    config.json completion marker) last, so an interrupted run never leaves a dataset that looks
    complete. A different config replaces the old dataset.
    """
    root = Path(root)
    found = _existing(root, cfg)
    if found is not None:
        log.info("synthetic dataset in %s is complete for this config; not regenerating", root)
        return found
    ann_dir, img_dir = root / NAME, root / "images" / NAME
    if ann_dir.exists() and not (ann_dir / "config.json").exists():
        raise DatasetError(
            f"{ann_dir} exists but was not written by the synthetic generator (no config.json); "
            "delete it or choose another --data-root"
        )
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{NAME}-", dir=root))
    try:
        plans = plan_dataset(cfg)
        (tmp / "images" / NAME).mkdir(parents=True)
        (tmp / NAME).mkdir()
        for p in plans:
            image = render_scene(p.scene, np.random.default_rng([cfg.seed, p.image_id - 1, 1]))
            # Grainy backgrounds barely compress at any level: the fastest one costs few bytes.
            image.save(tmp / "images" / NAME / p.file_name, format="PNG", compress_level=1)
        refs, coco = _tables(plans)
        summary = _summary(root, refs, coco)
        with (tmp / NAME / "refs(unc).p").open("wb") as f:
            pickle.dump(refs, f, protocol=2)
        (tmp / NAME / "instances.json").write_text(
            json.dumps(coco, sort_keys=True, separators=(",", ":"))
        )
        (tmp / NAME / "README.txt").write_text(_readme(cfg, summary))
        (tmp / NAME / "config.json").write_text(
            json.dumps(_marker(cfg, summary), sort_keys=True, indent=1) + "\n"
        )
        # Retire the old copy marker-first, then move the new one in marker-last.
        trash = tmp / "old"
        trash.mkdir()
        if ann_dir.exists():
            log.warning(
                "replacing the synthetic dataset in %s (other config, or incomplete)", ann_dir
            )
            ann_dir.rename(trash / "ann")
        if img_dir.exists():
            img_dir.rename(trash / "images")
        img_dir.parent.mkdir(parents=True, exist_ok=True)
        (tmp / "images" / NAME).rename(img_dir)
        (tmp / NAME).rename(ann_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info(
        "wrote %d images, %d refs, %d sentences to %s",
        summary.n_images,
        summary.n_refs,
        summary.n_sentences,
        root,
    )
    return summary


def _readme(cfg: SyntheticConfig, summary: SyntheticSummary) -> str:
    params = ", ".join(f"{k}={v}" for k, v in asdict(cfg).items())
    return (
        "Synthetic referring-segmentation dataset made by ppt-labels (pipeline/synthetic.py, "
        f"generator version {GENERATOR_VERSION}) with {params}. {summary.n_images} images of "
        f"non-overlapping coloured shapes ({', '.join(SHAPES)}) on textured backgrounds; "
        f"{summary.n_annotations} COCO polygon annotations (the exact polygons drawn), "
        f"{summary.n_refs} refs with {summary.n_sentences} sentences. Every sentence names the "
        "referent's class and is checked to be satisfied by exactly one object of its image. The "
        "same config and seed give byte-identical files.\n"
    )
