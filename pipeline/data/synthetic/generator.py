"""The synthetic world, written in the standard refer layout: scenes and object-centric images.

It is the project's embedded default dataset (nothing to download), the method's test bed
(DESIGN §9) and the fixture of the trainer's tests. `generate_synthetic(root, cfg)` writes, under
`root` (the --data-root), two datasets from one seed:

    synthetic/refs(unc).p            refer-toolkit refs of the scenes: a list of plain dicts
    synthetic/instances.json         COCO images / annotations (visible area) / categories
    synthetic/phrases_<split>.json   phrase ground truth: every noun phrase's span and denotation
    synthetic/README.txt             how it was generated
    synthetic/config.json            config and counts; it arrives last and marks completion
    images/synthetic/*.png           the rendered scenes
    synthetic-objects/...            the object-centric set (D_sem's analogue of ImageNet): one
    images/synthetic-objects/*.png   large shape per image, "the {class} in the middle"

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
from pipeline.data.synthetic.render import render_scene
from pipeline.data.synthetic.scenes import SHAPES, SceneConfig, make_object_scene, make_scene
from pipeline.data.synthetic.tables import PlannedImage, refer_tables

log = logging.getLogger(__name__)

NAME = "synthetic"  # the scenes' folder under --data-root and under images/
OBJECTS = "synthetic-objects"  # the object-centric set's folder
GENERATOR_VERSION = 2  # bump when the output changes for an unchanged config: old copies regenerate
OBJECT_ANN_IDS = 1_000_000  # object-centric annotation ids count on from here
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
    part_prob: float = 0.4  # chance a shape carries an inner part of another colour
    overlap_prob: float = 0.15  # chance a shape may overlap (cover part of) an earlier one
    textured: bool = True  # stripes, checks and noise backgrounds besides gradients
    n_object_images: int = 60  # object-centric images (synthetic-objects, D_sem); 0 = none
    seed: int = 0  # everything, images included, is a function of the config and this seed

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if f.type == "bool":
                ok = isinstance(v, bool)
            else:
                ok = isinstance(v, int) if f.type == "int" else isinstance(v, int | float)
                ok = ok and not isinstance(v, bool)
            if not ok:
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
        for name in ("share_prob", "part_prob", "overlap_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"synthetic.{name} must be in [0, 1], got {getattr(self, name)}")
        if self.n_object_images < 0:
            raise ConfigError("synthetic.n_object_images must be >= 0")

    @property
    def scene(self) -> SceneConfig:
        """How hard the scenes are (parts, overlap, textures, distractors)."""
        return SceneConfig(self.share_prob, self.part_prob, self.overlap_prob, self.textured)


@dataclass(frozen=True)
class SyntheticSummary:
    """What `generate_synthetic` produced (or found already complete)."""

    root: Path  # the --data-root written to
    n_images: int
    n_annotations: int  # shapes; every one has a COCO annotation
    n_refs: int  # shapes that got at least one unambiguous expression
    n_sentences: int
    refs_per_split: dict[str, int]
    n_object_images: int = 0  # object-centric images written to synthetic-objects
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
        scene = make_scene(rng, w, h, n_obj, cfg.scene)
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


def plan_objects(cfg: SyntheticConfig) -> list[PlannedImage]:
    """The object-centric images: one large shape each, "the {class} in the middle" (train)."""
    plans = []
    for idx in range(cfg.n_object_images):
        rng = np.random.default_rng([cfg.seed, idx, 2])  # a stream apart from the scenes'
        w, h = (int(v) for v in rng.integers(cfg.min_size, cfg.max_size + 1, size=2))
        scene = make_object_scene(rng, w, h, cfg.scene)
        expr = Expression(scene.objects[0].shape, None, "region", "middle")
        plans.append(
            PlannedImage(idx + 1, f"{OBJECTS}_{idx + 1:06d}.png", "train", scene,
                         {0: [(expr, expr.text(0))]})
        )  # fmt: skip
    return plans


def _summary(root: Path, refs: list[dict], coco: dict, n_objects: int) -> SyntheticSummary:
    return SyntheticSummary(
        root=root,
        n_images=len(coco["images"]),
        n_annotations=len(coco["annotations"]),
        n_refs=len(refs),
        n_sentences=sum(len(r["sentences"]) for r in refs),
        refs_per_split={s: sum(r["split"] == s for r in refs) for s in SPLITS},
        n_object_images=n_objects,
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
    files_ok = all(
        (root / name / f).is_file()
        for name in (NAME, OBJECTS)
        for f in ("refs(unc).p", "instances.json")
    )
    try:
        counts = dict(marker["summary"])
        counts["refs_per_split"] = {s: counts["refs_per_split"][s] for s in SPLITS}  # unsorted
        found = SyntheticSummary(root=root, reused=True, **counts)
    except (KeyError, TypeError):
        return None
    return found if files_ok and n_png == found.n_images else None


def _write_dataset(
    tmp: Path, name: str, plans: list[PlannedImage], cfg: SyntheticConfig, first_ids: tuple
) -> tuple[list[dict], dict]:
    """Render and write one dataset of the world into `tmp` (images, refs, instances, truth)."""
    (tmp / "images" / name).mkdir(parents=True)
    (tmp / name).mkdir()
    stream = 1 if name == NAME else 3  # the scenes keep version 1's render stream
    for p in plans:
        rng = np.random.default_rng([cfg.seed, p.image_id - 1, stream])
        image = render_scene(p.scene, rng, cfg.textured)
        # Grainy backgrounds barely compress at any level: the fastest one costs few bytes.
        image.save(tmp / "images" / name / p.file_name, format="PNG", compress_level=1)
    refs, coco, truth = refer_tables(plans, first_ids)
    with (tmp / name / "refs(unc).p").open("wb") as f:
        pickle.dump(refs, f, protocol=2)
    (tmp / name / "instances.json").write_text(
        json.dumps(coco, sort_keys=True, separators=(",", ":"))
    )
    for split in SPLITS if name == NAME else ("train",):
        rows = truth.get(split, [])
        (tmp / name / f"phrases_{split}.json").write_text(
            json.dumps(rows, sort_keys=True, separators=(",", ":"))
        )
    return refs, coco


def generate_synthetic(root: Path, cfg: SyntheticConfig) -> SyntheticSummary:
    """Write the synthetic world under `root` (the --data-root) in refer layout.

    Returns at once when a complete world made from the same config is already there. Files are
    built in a temporary folder inside `root` and renamed into place, the scenes' annotations
    (holding the config.json completion marker) last, so an interrupted run never leaves a world
    that looks complete. A different config replaces the old world.
    """
    root = Path(root)
    found = _existing(root, cfg)
    if found is not None:
        log.info("synthetic dataset in %s is complete for this config; not regenerating", root)
        return found
    ann_dir = root / NAME
    if ann_dir.exists() and not (ann_dir / "config.json").exists():
        raise DatasetError(
            f"{ann_dir} exists but was not written by the synthetic generator (no config.json); "
            "delete it or choose another --data-root"
        )
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{NAME}-", dir=root))
    try:
        refs, coco = _write_dataset(tmp, NAME, plan_dataset(cfg), cfg, (0, 0, 0))
        objects = plan_objects(cfg)
        first = (OBJECT_ANN_IDS, OBJECT_ANN_IDS, OBJECT_ANN_IDS)
        _write_dataset(tmp, OBJECTS, objects, cfg, first)
        summary = _summary(root, refs, coco, len(objects))
        (tmp / NAME / "README.txt").write_text(_readme(cfg, summary))
        (tmp / NAME / "config.json").write_text(
            json.dumps(_marker(cfg, summary), sort_keys=True, indent=1) + "\n"
        )
        # Retire the old copy marker-first, then move the new one in marker-last.
        trash = tmp / "old"
        trash.mkdir()
        if ann_dir.exists():
            log.warning("replacing the synthetic dataset in %s (other config, or incomplete)", root)
            ann_dir.rename(trash / "ann")
        for k, name in enumerate((OBJECTS,)):
            if (root / name).exists():
                (root / name).rename(trash / f"ann-{k}")
        for k, name in enumerate((NAME, OBJECTS)):
            if (root / "images" / name).exists():
                (root / "images" / name).rename(trash / f"images-{k}")
        (root / "images").mkdir(parents=True, exist_ok=True)
        for name in (OBJECTS, NAME):
            (tmp / "images" / name).rename(root / "images" / name)
        (tmp / OBJECTS).rename(root / OBJECTS)
        (tmp / NAME).rename(ann_dir)  # the marker: last
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info(
        "wrote %d scenes (%d refs, %d sentences) and %d object-centric images to %s",
        summary.n_images,
        summary.n_refs,
        summary.n_sentences,
        summary.n_object_images,
        root,
    )
    return summary


def _readme(cfg: SyntheticConfig, summary: SyntheticSummary) -> str:
    params = ", ".join(f"{k}={v}" for k, v in asdict(cfg).items())
    return (
        "Synthetic referring-segmentation world made by ppt-labels "
        f"(pipeline/data/synthetic, generator version {GENERATOR_VERSION}) with {params}. "
        f"{summary.n_images} scenes of coloured shapes ({', '.join(SHAPES)}), some with an inner "
        "part of another colour, some covering part of another, on textured backgrounds; "
        f"{summary.n_annotations} COCO annotations of what each shape shows (its polygon, or the "
        f"RLE of its visible area), {summary.n_refs} refs with {summary.n_sentences} sentences, "
        "and phrases_<split>.json: every noun phrase's span and the annotations it denotes. "
        "Every sentence names the referent's class and is checked to be satisfied by exactly one "
        f"object of its image. ../{OBJECTS}/ holds {summary.n_object_images} object-centric images "
        '(one large shape, "the {class} in the middle"). The same config and seed give '
        "byte-identical files.\n"
    )
