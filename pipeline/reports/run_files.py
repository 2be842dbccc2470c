"""What `ppt-labels report` reads from a training run directory, as tables ready to render.

A run directory (`ppt-labels train --out RUN_DIR`, trainer/loop/runner.py) holds

    metrics.json   final evaluation ("eval": DESIGN §7 keys), run facts, "select" reports
    curves.json    one row per epoch: phase, lr, loss terms, mIoU where evaluated
    last.pt        the checkpoint (read by the trainer side of the report, not here)

and, optionally, `ablation.json` (`bench/ablation.py`: row → metric mean/std over seeds), which
can also be given from elsewhere (`--ablation`). Reading is kept apart from rendering so a
report is one pure function of these files and the gallery.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.core.errors import ConfigError

METRICS_FILE = "metrics.json"
CURVES_FILE = "curves.json"
ABLATION_FILE = "ablation.json"
LOSS_PREFIX = "loss"  # curve columns "loss" (the weighted sum) and "loss_<term>"


@dataclass(frozen=True)
class RunFiles:
    """A run directory's metrics, curves and (optional) ablation table."""

    root: Path
    metrics: dict[str, Any]
    curves: list[dict[str, Any]]  # one row per epoch, ascending
    ablation: dict[str, Any] | None  # bench/ablation.py's ablation.json, if any
    ablation_path: Path | None


def _json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(
            f"{path}: no {what}; `ppt-labels train --out {path.parent}` writes it when the run "
            "ends (a killed run: resume it first)"
        ) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: not a readable {what} ({exc})") from None


def read_run(run_dir: Path, ablation: Path | None = None) -> RunFiles:
    """Read `run_dir`'s files; `ablation` (default: RUN_DIR/ablation.json when present).

    Raises:
        ConfigError: a missing or unreadable metrics.json / curves.json / --ablation file.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: no such run directory (`ppt-labels train --out` makes one)")
    metrics = _json(run_dir / METRICS_FILE, "metrics.json")
    curves = _json(run_dir / CURVES_FILE, "curves.json (per-epoch rows)")
    if ablation is None and (run_dir / ABLATION_FILE).is_file():
        ablation = run_dir / ABLATION_FILE
    table = None if ablation is None else _json(Path(ablation), "ablation table (--ablation)")
    if table is not None and not all(isinstance(r, dict) and "name" in r for r in table.values()):
        raise ConfigError(f"{ablation}: not an ablation.json of bench/ablation.py (row → metrics)")
    return RunFiles(run_dir, metrics, sorted(curves, key=lambda r: r["epoch"]), table, ablation)


def loss_terms(curves: Sequence[dict[str, Any]]) -> list[str]:
    """The loss columns the run logged with some non-zero value, the weighted sum first."""
    keys = [k for k in dict.fromkeys(k for row in curves for k in row) if k.startswith(LOSS_PREFIX)]
    keys = [k for k in keys if any(row.get(k) for row in curves)]
    return sorted(keys, key=lambda k: (k != LOSS_PREFIX, k))


def phase_spans(curves: Sequence[dict[str, Any]]) -> list[tuple[str, int, int]]:
    """(phase, first epoch, last epoch) of each run of consecutive epochs in one phase."""
    spans: list[tuple[str, int, int]] = []
    for row in curves:
        phase, epoch = str(row.get("phase", "")), int(row["epoch"])
        if spans and spans[-1][0] == phase:
            spans[-1] = (phase, spans[-1][1], epoch)
        else:
            spans.append((phase, epoch, epoch))
    return spans


def metrics_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """(name, value) rows of the final evaluation and the run's facts."""
    # metrics.json's "eval" holds DESIGN §7's keys in their order (mIoU, oIoU, P@X…, n)
    rows = []
    for key, value in (metrics.get("eval") or {}).items():
        if isinstance(value, dict):  # failures: the share of each class, % of samples
            rows += [(f"{key}: {k} (%)", _number(v)) for k, v in value.items() if k != "n"]
        else:
            rows.append((key, _number(value)))
    splits = ", ".join(metrics.get("eval_splits") or [])
    for name, value in (
        ("eval splits", splits),
        ("epochs", metrics.get("epochs")),
        ("trainable parameters", metrics.get("trainable_params")),
        ("wall time (s)", metrics.get("wall_s")),
    ):
        if value not in (None, ""):
            rows.append((name, _number(value)))
    return rows


def select_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per (store, Select round) of metrics.json's "select": pairs, kept, kept share,
    accuracy on kept pairs and a random pick's (the last two only where truth exists)."""
    rows = []
    for store, rounds in sorted((metrics.get("select") or {}).items()):
        for index, report in sorted(rounds.items(), key=lambda kv: int(kv[0])):
            rows.append({"store": store, "round": int(index), **report})
    return rows


def ablation_metrics(table: dict[str, Any]) -> list[str]:
    """The metric columns of an ablation table, in its rows' order (mIoU, oIoU, P@X…, n)."""
    keys = dict.fromkeys(k for r in table.values() for k, v in r.items() if isinstance(v, dict))
    return [k for k in keys if k not in ("seeds", "failures")]  # failures: a table of its own


def ablation_rows(table: dict[str, Any]) -> list[dict[str, str]]:
    """Rows of the ablation table: row, variant, each metric as "mean ± std" ("mean" where one
    seed ran: its spread is unknown, not zero), seeds."""
    out = []
    for row, result in sorted(table.items(), key=lambda kv: int(kv[0])):
        cells = {"row": str(row), "variant": str(result["name"])}
        for key in ablation_metrics(table):
            stat = result.get(key) or {}
            cells[key] = _number(stat.get("mean")) if key == "n" else mean_std(stat)
        cells["seeds"] = str(len(result.get("seeds") or {}))
        out.append(cells)
    return out


def mean_std(stat: dict[str, Any]) -> str:
    """An ablation cell: "33.0 ± 0.5" over several seeds, "33.1" for one (its spread is unknown,
    not zero), "–" without a value."""
    mean, std = stat.get("mean"), stat.get("std")
    if mean is None:
        return "–"
    one_seed = std is None or len(stat.get("per_seed") or ()) == 1
    return f"{mean:.1f}" if one_seed else f"{mean:.1f} ± {std:.1f}"


def _number(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.0f}" if value.is_integer() and abs(value) >= 100 else f"{value:.4g}"
    return str(value)
