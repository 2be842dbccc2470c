"""Property-based fuzz (hypothesis) of the files people hand us: refs pickles, instances.json and
params.yaml. Each input is either accepted (records and rejects rows) or refused with one
`PptError` (a one-line message at the CLI); never another exception, never code execution.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.core.config import load_params
from pipeline.core.errors import PptError, UnsafePickleError
from pipeline.data.registry import open_dataset
from pipeline.data.safe_pickle import load_refs_pickle
from pipeline.stages.registry import STAGES
from tests.helpers import REFER_SAMPLE
from trainer.config import SECTIONS, config_from_dict

FUZZ = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", 60)),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
REFS = REFER_SAMPLE / "refcoco" / "refs(unc).p"
INSTANCES = REFER_SAMPLE / "refcoco" / "instances.json"

scalars = (
    st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | st.text(max_size=8)
)
plain = st.recursive(
    scalars | st.binary(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(max_size=6) | st.integers(), inner, max_size=4)
    ),
    max_leaves=20,
)
json_values = st.recursive(
    scalars.filter(lambda v: not isinstance(v, float) or v == v),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


def _mutate(data: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    out = bytearray(data)
    for pos, value in edits:
        out[pos % len(out)] = value
    return bytes(out[:cut] if cut else out)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 1 << 30), st.integers(0, 255)), max_size=6),
       st.one_of(st.none(), st.integers(1, 5000)))  # fmt: skip
def test_mutated_refs_pickles_load_or_are_refused(scratch: Path, edits, cut) -> None:
    path = scratch / "refs(unc).p"
    path.write_bytes(_mutate(REFS.read_bytes(), edits, cut))
    try:
        refs = load_refs_pickle(path)
    except PptError as exc:
        assert "\n" not in str(exc)
    else:
        assert isinstance(refs, list)


@FUZZ
@given(plain, st.integers(0, 5))
def test_pickles_of_plain_values_load_or_are_refused(
    scratch: Path, value: Any, protocol: int
) -> None:
    path = scratch / "refs(plain).p"
    path.write_bytes(pickle.dumps(value, protocol=protocol))
    try:
        refs = load_refs_pickle(path)
    except PptError:
        return
    assert isinstance(refs, list) and all(isinstance(r, dict) for r in refs)


class _Call:
    """Pickles as a call of any importable function: what a malicious refs file does."""

    def __init__(self, fn: Any, args: tuple) -> None:
        self.fn, self.args = fn, args

    def __reduce__(self) -> tuple:
        return (self.fn, self.args)


CALLABLES = [os.system, eval, exec, shutil.rmtree, open, getattr, __import__, pickle.loads]


@FUZZ
@given(st.sampled_from(CALLABLES), plain, st.integers(2, 5))
def test_pickles_that_call_functions_never_run_them(scratch: Path, fn, inner, protocol) -> None:
    sentinel = scratch / "ran"
    payload = _Call(fn, (f"touch {sentinel}",)) if fn is os.system else _Call(fn, ("x",))
    path = scratch / "refs(evil).p"
    path.write_bytes(pickle.dumps([{"ref_id": 1, "junk": inner, "x": payload}], protocol=protocol))
    with pytest.raises(UnsafePickleError):
        load_refs_pickle(path)
    assert not sentinel.exists()


@pytest.fixture(scope="module")
def refer_root(scratch: Path) -> Path:
    """A refcoco copy without images (missing images become rejects rows, as they should)."""
    root = scratch / "refer"
    (root / "refcoco").mkdir(parents=True)
    shutil.copy(REFS, root / "refcoco" / REFS.name)
    return root


def _records(root: Path) -> None:
    dataset = open_dataset("refcoco", root)
    records, rejects = dataset.records()
    for record in records[:3]:
        dataset.ground_truth(record)
    assert all(r.reason for r in rejects)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 1 << 30), st.integers(0, 255)), max_size=6),
       st.one_of(st.none(), st.integers(1, 20000)))  # fmt: skip
def test_mutated_instances_json_reads_or_is_refused(refer_root: Path, edits, cut) -> None:
    (refer_root / "refcoco" / "instances.json").write_bytes(
        _mutate(INSTANCES.read_bytes(), edits, cut)
    )
    try:
        _records(refer_root)
    except PptError as exc:
        assert "\n" not in str(exc)


def _edit_instances(draw: st.DrawFn) -> dict:
    data = json.loads(INSTANCES.read_text())
    for _ in range(draw(st.integers(1, 4))):
        section = draw(st.sampled_from(["images", "annotations", "categories"]))
        if not data[section]:
            continue
        entry = data[section][draw(st.integers(0, len(data[section]) - 1))]
        key = draw(st.sampled_from([*sorted(entry), "id", "file_name", "segmentation"]))
        entry[key] = draw(json_values)
    return data


@FUZZ
@given(st.composite(_edit_instances)())
def test_instances_with_wrong_values_read_or_are_refused(refer_root: Path, data: dict) -> None:
    (refer_root / "refcoco" / "instances.json").write_text(json.dumps(data))
    try:
        _records(refer_root)
    except PptError as exc:
        assert "\n" not in str(exc)


def _stage_keys() -> dict[str, list[str]]:
    return {name: ["shard_size", "seed", "source", "grid", "rule", "model", "bogus"]
            for name in STAGES}  # fmt: skip


@st.composite
def _params(draw: st.DrawFn) -> dict:
    sections = draw(st.lists(st.sampled_from([*sorted(STAGES), "synthetic", "train"]),
                             min_size=1, max_size=3, unique=True))  # fmt: skip
    out = {}
    for name in sections:
        keys = _stage_keys().get(name, ["n_images", "seed", "bogus"])
        section = st.dictionaries(st.sampled_from(keys), json_values, max_size=3)
        out[name] = draw(section | json_values)
    return out


@FUZZ
@given(_params())
def test_params_yaml_with_wrong_keys_or_types_is_refused_in_one_line(
    scratch: Path, params: dict
) -> None:
    path = scratch / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    try:
        loaded = load_params(path)
        for name, spec in STAGES.items():
            section = loaded.get(name)
            spec.read_config(section if section is not None else {})
    except PptError as exc:
        assert "\n" not in str(exc)


@FUZZ
@given(st.dictionaries(st.sampled_from(sorted(SECTIONS)),
                       st.dictionaries(st.sampled_from(["epochs", "batch_size", "lr", "seed", "amp",
                                                        "num_queries", "model", "bogus"]),
                                       json_values, max_size=3) | json_values,
                       max_size=3))  # fmt: skip
def test_training_configs_with_wrong_keys_or_types_are_refused(config: dict) -> None:
    try:
        config_from_dict(config)
    except PptError as exc:
        assert "\n" not in str(exc)


@FUZZ
@given(st.binary(max_size=200))
def test_params_yaml_of_random_bytes_is_refused_in_one_line(scratch: Path, data: bytes) -> None:
    path = scratch / "params.yaml"
    path.write_bytes(data)
    try:
        load_params(path)
    except PptError as exc:
        assert "\n" not in str(exc)
