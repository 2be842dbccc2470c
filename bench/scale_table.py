"""The issue-12 table (bench/scale.py --table): a full RefCOCO store and the four stores of the
team's run (RefCOCO + RefCOCO+ + RefCOCOg + D_sem), today's code against this checkout, each
cell a per-unit cost measured in this run times a count (the formula is printed beside it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scale_units
from scale_project import project_store

EPOCHS, WORKERS = 50, 4  # the paper's schedule; the loader's workers


def _count(n: float) -> str:
    return f"{n / 1e3:.1f}k" if n >= 1e3 else f"{n:.0f}"


def _size(n: float) -> str:
    return f"{n / 1e9:.2f} GB" if n >= 1e8 else f"{n / 1e6:.1f} MB"


def _time(s: float) -> str:
    return f"{s / 3600:.1f} h" if s >= 5400 else f"{s / 60:.1f} min" if s >= 90 else f"{s:.1f} s"


def projections(
    results: dict[str, dict[str, Any]], counts: dict[str, dict[str, Any]],
    unique: dict[str, Any], dvc: dict[str, Any] | None,
) -> dict[str, dict[str, Any]]:  # fmt: skip
    """Per tree: each row's value for RefCOCO and for the four stores (None: not measured)."""
    out = {}
    for label, r in results.items():
        stores = {n: project_store(r["layout"], r["shard_size"], c) for n, c in counts.items()}
        sam = {n: s["stages"]["encode"]["arrays"]["sam_embedding"] for n, s in stores.items()}
        per_image = sam["RefCOCO"]["disk_bytes"] / sam["RefCOCO"]["rows"]
        shared = label == "new"  # the lead's cross-dataset cache (item 2): each image once
        apparent = sam["RefCOCO"]["bytes"] / sam["RefCOCO"]["rows"]
        duplicates = (unique["sum"] - unique["unique"]) * apparent if shared else 0.0
        row: dict[str, Any] = {
            "files": [stores["RefCOCO"]["files"], sum(s["files"] for s in stores.values())],
            "sam_bytes": [sam["RefCOCO"]["disk_bytes"],
                          unique["unique"] * per_image if shared
                          else sum(a["disk_bytes"] for a in sam.values())],
            "attention_bytes": [stores["RefCOCO"]["stages"]["attention"]["disk_bytes"],
                                sum(s["stages"]["attention"]["disk_bytes"]
                                    for s in stores.values())],
            "sam_bytes_per_image": per_image,
        }  # fmt: skip
        if dvc:
            four_bytes = sum(s["bytes"] for s in stores.values()) - duplicates
            row["dvc"] = [
                scale_units.dvc_seconds(
                    dvc, stores["RefCOCO"]["files"], stores["RefCOCO"]["bytes"]
                ),
                scale_units.dvc_seconds(dvc, row["files"][1], four_bytes),
            ]
        if "masks" in r:
            per = r["masks"]["cpu_s_per_prompt"]
            row["masks_s"] = {
                kind: [per * counts["RefCOCO"][key], per * sum(c[key] for c in counts.values())]
                for kind, key in (("gt-mask", "objects"), ("clip", "candidates"))
            }
        if "loader" in r:
            rate = r["loader"]["steady_1"]  # samples/s of one worker, start-up not counted
            epoch = counts["RefCOCO"]["train"] / (rate * WORKERS)
            row["loader_s"] = [epoch, epoch * EPOCHS]
        out[label] = row
    return out


def _cells(rows: dict[str, dict[str, Any]], fmt: Any) -> list[str]:
    """old RefCOCO, new RefCOCO, old four, new four."""
    labels = list(rows)
    return [fmt(rows[label], i) for i in (0, 1) for label in labels]


def markdown(
    results: dict[str, dict[str, Any]], rows: dict[str, dict[str, Any]],
    counts: dict[str, dict[str, Any]], unique: dict[str, Any], dvc: dict[str, Any] | None,
) -> str:  # fmt: skip
    """The table with its formulas and notes."""
    labels = list(rows)
    four = "RefCOCO + RefCOCO+ + RefCOCOg + D_sem"
    head = ["(projected)", *[f"full RefCOCO: {t}" for t in labels],
            *[f"{four}: {t}" for t in labels], "formula"]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def add(name: str, fmt: Any, formula: str) -> None:
        lines.append(f"| {name} | " + " | ".join(_cells(rows, fmt)) + f" | {formula} |")

    add("files", lambda r, i: _count(r["files"][i]),
        "Σ stages: shards (sentences / shard_size) × non-array files a shard + array objects "
        "(one a shard when sharded, else one a row)")  # fmt: skip
    add(
        "SAM embeddings (bytes)",
        lambda r, i: _size(r["sam_bytes"][i]),
        "images × disk bytes an embedding ("
        + ", ".join(f"{t}: {_size(rows[t]['sam_bytes_per_image'])}" for t in labels)
        + f"); new, four stores: {unique['unique']:,} unique images (old: {unique['sum']:,})",
    )
    add("attention on disk", lambda r, i: _size(r["attention_bytes"][i]),
        "candidates × bytes a map + sentences × bytes a sentence map + Parquet bytes a "
        "sentence × sentences + each stored object's block slack")  # fmt: skip
    if dvc:
        fit = dvc["fit"]
        add("`dvc add` / `dvc status`, local remote",
            lambda r, i: f"{_time(r['dvc'][i]['add'])} / {_time(r['dvc'][i]['status'])}",
            "start-up + files × s a file + GB × s a GB, fitted to runs on both trees' stores: "
            + "; ".join(f"{c}: {f['startup_s']:.2f} s + {f['file_s'] * 1e3:.3f} ms a file + "
                        f"{f['gb_s']:.2f} s a GB" for c, f in fit.items()))  # fmt: skip
        add("`dvc push` / `dvc status -c`, local remote",
            lambda r, i: f"{_time(r['dvc'][i]['push'])} / {_time(r['dvc'][i]['status_c'])}",
            "the same model")  # fmt: skip
    if all("masks_s" in r for r in rows.values()):
        add("masks stage, CPU post-processing",
            lambda r, i: f"{_time(r['masks_s']['gt-mask'][i])} (gt-mask) – "
                         f"{_time(r['masks_s']['clip'][i])} (clip)",
            "CPU s a prompt (" + ", ".join(
                f"{t}: {results[t]['masks']['cpu_s_per_prompt'] * 1e3:.0f} ms" for t in labels)
            + ") × prompts: gt-mask one a referent (objects), clip one a candidate")  # fmt: skip
    if all("loader_s" in r for r in rows.values()):
        lines.append(
            f"| trainer data loading, {WORKERS} workers, per epoch / {EPOCHS} epochs | "
            + " | ".join(f"{_time(rows[t]['loader_s'][0])} / {_time(rows[t]['loader_s'][1])}"
                         for t in labels)
            + " | " * len(labels) + f" | {counts['RefCOCO']['train']:,} train sentences / "
            f"(samples/s of one worker × {WORKERS}): "
            + ", ".join(f"{t}: {results[t]['loader']['steady_1']:.1f} samples/s" for t in labels)
            + " |")  # fmt: skip
    ingest = [results[t].get("stages", {}).get("ingest") for t in labels]
    if all(ingest):
        rows_at = ingest[0]["rows"]
        for key, name in (("peak_rss_mb", "ingest peak RSS MB"), ("wall_s", "ingest s")):
            lines.append(f"| {name} (measured, {rows_at:,} records) | "
                         + " | ".join(str(i[key]) for i in ingest)
                         + " | " * len(labels) + " | measured, not projected |")  # fmt: skip
        noop = [results[t]["noop"]["ingest"]["wall_s"] for t in labels]
        lines.append(f"| ingest no-op re-run s (measured, {rows_at:,} records) | "
                     + " | ".join(map(str, noop)) + " | " * len(labels)
                     + " | measured, not projected |")  # fmt: skip
    notes = [
        "Counts: "
        + ", ".join(
            f"{n} {c['sentences']:,} sentences / {c['images']:,} images / "
            f"{c['objects']:,} objects / {c['candidates']:,} candidates"
            for n, c in counts.items()
        )
        + " (candidates: sentences × "
        "candidates a sentence of real val expressions, phrases stage rules; D_sem: one).",
        f"Unique images: {unique['unique']:,} ({unique['how']}).",
        "SAM embeddings (and the bytes DVC hashes), new, four stores: the shared embedding cache "
        "(schema 4: each distinct image once, bench/shared_embeddings.py measures it); files: a "
        "store's partition of the cache is counted with its encode stage as if every store "
        "encoded all its images (an upper bound: RefCOCO+ after RefCOCO adds no pack).",
        "D_sem: projected with the RefCOCO store's files a shard and bytes a row.",
    ]
    if "masks_s" in rows[labels[-1]]:
        notes.append(
            "masks: each tree's masks stage on its own refer_sample store (new: prompts on SAM's "
            "low-res frame, one decoder batch an image); the time inside SAM's prompt encoder and "
            "mask decoder is left out (a GPU's work: bench/gpu_check.py; on this CPU see "
            "bench/masks_speed.py)."
        )
    if "loader_s" in rows[labels[-1]]:
        notes.append(
            "Loader: refer_sample's store (real COCO images, all its splits); samples/s of one "
            "worker × 4 assumes 4 free cores; every train sentence an epoch (the curriculum's "
            "stages train on subsets of them)."
            + (f" Same batches old and new: {rows_same}." if (rows_same := _same(results)) else "")
        )
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def _same(results: dict[str, dict[str, Any]]) -> str:
    """The loader's same-batches check, in words ("" where not made)."""
    same = results.get("new", {}).get("loader", {}).get("same_batches")
    if not same:
        return ""
    return (
        f"sample ids {same['ids']}; epoch 0 features max |diff| {same['feature_max_diff']:.3g}, "
        f"target masks min IoU {same['target_min_iou']:.4f}"
    )


def write(out: Path, report: dict[str, Any], text: str) -> None:
    """out/table.json and out/table.md."""
    (out / "table.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    (out / "table.md").write_text(text)


def add_arguments(parser: Any) -> None:
    """scale.py's --table options."""
    parser.add_argument(
        "--table",
        action="store_true",
        help="measure the per-unit costs and print the projected issue table",
    )
    parser.add_argument(
        "--units", default="masks,dvc,loader", help="--table: the per-unit measurements to run"
    )
    parser.add_argument(
        "--phrase-sentences",
        type=int,
        default=2000,
        help="real val sentences a dataset for candidates a sentence",
    )
    parser.add_argument("--masks-repeats", type=int, default=1, help="timed passes a round")
    parser.add_argument("--masks-rounds", type=int, default=2, help="alternating, best kept")
    parser.add_argument(
        "--dvc-files",
        type=int,
        default=2000,
        help="copies of the built store up to this many files",
    )
    parser.add_argument("--dvc-big-mb", type=int, default=256)
    parser.add_argument("--loader-epochs", type=int, default=3)
    parser.add_argument("--loader-rounds", type=int, default=2)
    parser.add_argument("--loader-batch", type=int, default=4)  # fmt: skip


def run(args: Any, trees: dict[str, Path], results: dict[str, dict[str, Any]],
        loader_root: Path) -> str:  # fmt: skip
    """Measure the per-unit costs of each tree on its built label store (`results[t]["layout"]`),
    project them, write args.out/table.{json,md}; the markdown."""
    from scale_project import store_counts, unique_images

    units = set(args.units.split(","))
    stores = {label: Path(results[label]["layout"]["store"]) for label in trees}
    if "masks" in units:  # trees alternate, each keeps its best round (a shared machine)
        for _ in range(args.masks_rounds):
            for label, tree in trees.items():
                got = scale_units.masks_cost(tree, stores[label], args.masks_repeats)
                kept = results[label].get("masks")
                if kept is None or got["cpu_s_per_prompt"] < kept["cpu_s_per_prompt"]:
                    results[label]["masks"] = got
        for label in trees:
            print(f"  {label} masks: {results[label]['masks']}", flush=True)
    dvc = None
    if "dvc" in units:
        dvc = scale_units.dvc_costs(stores, args.out / "dvc", args.dvc_files, args.dvc_big_mb)
        print(f"  dvc: {dvc['fit']}", flush=True)
    if "loader" in units:
        # refer_sample holds val/test splits only: the loader reads all of them
        loader = scale_units.loader_rates(
            trees, stores, loader_root, args.out / "loader", ("val", "testA", "testB"),
            args.loader_epochs, args.loader_batch, args.loader_rounds)  # fmt: skip
        for label, report in loader.items():
            results[label]["loader"] = report
            print(f"  {label} loader: {report['steady_1']:.1f} samples/s a worker", flush=True)
    counts = store_counts(args.phrase_sentences)
    unique = unique_images()
    rows = projections(results, counts, unique, dvc)
    text = markdown(results, rows, counts, unique, dvc)
    report = {
        "counts": counts,
        "unique_images": unique,
        "dvc": dvc,
        "rows": rows,
        "units": {t: {k: results[t].get(k) for k in ("masks", "loader")} for t in trees},
    }
    write(args.out, report, text)
    return text
