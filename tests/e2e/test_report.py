"""`ppt-labels report` on the session's tiny run: every section, a gallery that shows what eval
predicts, and the page rendered by a real headless browser (Debian's chromium) when installed."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from cli.main import app
from pipeline.core.errors import ConfigError, StoreError
from pipeline.reports.run_report import SECTION_IDS
from pipeline.store.reader import LabelStore
from tests.helpers import REPO, SAM_VIT_T, TEST_MODELS
from trainer.inference.held_out import held_out_gallery, run_stores
from trainer.inference.predict import load_for_inference, predict_store
from trainer.loop.checkpoint import load_checkpoint

pytestmark = pytest.mark.skipif(not SAM_VIT_T.is_file(), reason=f"{SAM_VIT_T} not present")

ABLATION = REPO / "bench" / "results" / "ablation-world0" / "ablation.json"
BROWSER = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def report(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    args = ["report", str(tiny_run), "--out", str(out), "--ablation", str(ABLATION), "--n", "3",
            "--device", "cpu", "--sam-checkpoint", str(SAM_VIT_T),
            "--allow-random-weights"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return out


def test_report_has_every_section_of_the_run(report: Path, tiny_run: Path) -> None:
    page = report.read_text()
    for ident in SECTION_IDS:
        assert f'<section id="{ident}">' in page, ident
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert f"<td>{metrics['eval']['mIoU']:.4g}</td>" in page
    assert page.count('<figure class="sample">') == 3 and "right: ground truth" in page
    assert "no Select round" in page  # the tiny run is the semantic stage only
    assert 'src="data:image/png;base64,' in page and 'src="http' not in page  # self-contained


def test_gallery_is_what_eval_predicts(tiny_run: Path, synthetic_store: Path,
                                       synthetic_root: Path) -> None:  # fmt: skip
    items, facts = held_out_gallery(tiny_run, TEST_MODELS, n=2, seed=1)
    store = LabelStore(synthetic_store)
    val = {r["sample_id"] for r in store.samples().to_pylist() if r["split"] == "val"}
    assert len(items) == 2 and {i.sample_id for i in items} <= val  # held out: eval split only
    assert all(i.reference_kind == "ground truth" and i.reference is not None for i in items)
    model, clip, sam, cfg = load_for_inference(tiny_run / "last.pt", TEST_MODELS)
    ids = [i.sample_id for i in items]
    cache = tiny_run / "feature_cache"
    direct = predict_store(model, clip, sam, cfg, store, synthetic_root, cache, sample_ids=ids)
    for item in items:
        assert np.array_equal(item.mask, direct[item.sample_id]), item.sample_id
        assert item.image.shape[:2] == item.mask.shape == item.reference.shape
    assert dict(facts)["stores"] == f"{synthetic_store} ({synthetic_root})"

    # A checkpoint that predates recorded data roots, or a moved store: one-line errors that
    # name the flag, and the flags mend them.
    state = load_checkpoint(tiny_run / "last.pt")
    old = {**state, "stores": [{k: v for k, v in s.items() if k != "data_root"}
                               for s in state["stores"]]}  # fmt: skip
    with pytest.raises(ConfigError, match="pass --data-root"):
        run_stores(old)
    assert run_stores(old, data_roots=[synthetic_root])[0][1] == synthetic_root
    with pytest.raises(StoreError, match="pass --labels"):
        run_stores(state, stores=[synthetic_root / "moved"])


@pytest.mark.slow
@pytest.mark.skipif(BROWSER is None, reason="no chromium or chromium-browser on PATH "
                    "(Debian: apt-get install chromium) to render the report in")  # fmt: skip
def test_report_renders_in_a_headless_browser(report: Path, tmp_path: Path) -> None:
    flags = [BROWSER, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
             f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    url = report.resolve().as_uri()
    dom = subprocess.run([*flags, "--dump-dom", url], capture_output=True, text=True,
                         timeout=120, check=True).stdout  # fmt: skip
    for ident in SECTION_IDS:
        assert f'id="{ident}"' in dom, ident
    shot = tmp_path / "report.png"
    subprocess.run([*flags, f"--screenshot={shot}", "--window-size=1200,2400", url],
                   capture_output=True, timeout=120, check=True)  # fmt: skip
    pixels = np.asarray(Image.open(io.BytesIO(shot.read_bytes())).convert("L"), dtype=float)
    assert pixels.shape == (2400, 1200)
    # Not blank: the curves, tables and gallery pictures leave many non-white pixels.
    assert (pixels < 200).mean() > 0.02 and pixels.std() > 20
