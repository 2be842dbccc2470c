"""The restricted refs unpickler: plain data loads, code never runs, bad files say which file."""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
from pathlib import Path

import pytest

from pipeline.core.errors import DatasetError, UnsafePickleError
from pipeline.data.safe_pickle import load_refs_pickle
from tests.helpers import REFER_SAMPLE

REAL_PICKLES = ["refcoco/refs(unc).p", "refcoco+/refs(unc).p", "refcocog/refs(umd).p",
                "refcocog/refs(google).p"]  # fmt: skip


def plain_ref(ref_id: int = 1, sent: str = "the man on the left") -> dict:
    return {
        "ref_id": ref_id, "ann_id": 10 + ref_id, "image_id": 100, "split": "val",
        "category_id": 1, "sent_ids": [ref_id * 10], "file_name": "x.jpg",
        "sentences": [{"sent_id": ref_id * 10, "sent": sent, "raw": sent, "tokens": sent.split()}],
    }  # fmt: skip


class SystemCall:
    """Unpickling this runs a shell command (the classic pickle exploit)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class SubprocessCall(SystemCall):
    def __reduce__(self):
        return (subprocess.check_call, (["touch", str(self.marker)],))


def write(path: Path, obj: object, protocol: int = 2) -> Path:
    path.write_bytes(pickle.dumps(obj, protocol=protocol))
    return path


@pytest.mark.parametrize("payload", [SystemCall, SubprocessCall])
@pytest.mark.parametrize("protocol", [0, 2, 5])
def test_code_execution_is_refused_and_never_runs(tmp_path: Path, payload, protocol: int) -> None:
    marker = tmp_path / "pwned"
    ref = plain_ref()
    ref["sentences"][0]["sent"] = payload(marker)  # hidden deep inside an otherwise valid ref
    path = write(tmp_path / "refs(unc).p", [ref], protocol)

    with pytest.raises(UnsafePickleError) as info:
        load_refs_pickle(path)
    message = str(info.value)
    assert str(path) in message and "refusing" in message and "\n" not in message
    assert ("system" in message) if payload is SystemCall else ("check_call" in message)
    assert not marker.exists()


def test_the_payload_is_real(tmp_path: Path) -> None:
    """Guard against a vacuous test above: an unrestricted pickle.load does run the command."""
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(SystemCall(marker), protocol=2))  # deliberate
    assert marker.exists()


def test_persistent_ids_and_bytearrays_are_refused(tmp_path: Path) -> None:
    class Persisting(pickle.Pickler):
        def persistent_id(self, obj):
            return "ext-1" if obj == "secret" else None

    path = tmp_path / "refs.p"
    with path.open("wb") as f:
        Persisting(f, protocol=2).dump(["secret"])
    with pytest.raises(UnsafePickleError, match=r"persistent"):
        load_refs_pickle(path)

    # Protocol 5 builds bytearrays from an opcode without naming any global.
    with pytest.raises(UnsafePickleError, match=r"bytearray"):
        load_refs_pickle(write(tmp_path / "b.p", [bytearray(b"xy")], protocol=5))


def test_plain_refs_load(tmp_path: Path) -> None:
    refs = [plain_ref(1), plain_ref(2, "zebra in the middle")]
    assert load_refs_pickle(write(tmp_path / "refs(unc).p", refs)) == refs


def test_sets_are_allowed(tmp_path: Path) -> None:
    ref = plain_ref()
    ref["tags"] = {"a", "b"}  # protocol 2 pickles a set as a call of builtins.set
    assert load_refs_pickle(write(tmp_path / "refs.p", [ref]))[0]["tags"] == {"a", "b"}


def _py2_str(data: bytes) -> bytes:
    return b"U" + bytes([len(data)]) + data  # SHORT_BINSTRING: a Python 2 `str`


def test_python2_byte_strings_become_text(tmp_path: Path) -> None:
    """Python 2 `str` values (bytes) decode as UTF-8, or as Latin-1 when they are not UTF-8."""
    sentence = (b"}(" + _py2_str(b"sent") + _py2_str("café".encode()) + _py2_str(b"sent_id")
                + b"K\x09u")  # fmt: skip
    ref = (b"}(" + _py2_str(b"ref_id") + b"K\x05" + _py2_str(b"ann_id") + b"K\x06"
           + _py2_str(b"image_id") + b"J" + struct.pack("<i", 70000) + _py2_str(b"split")
           + _py2_str(b"val") + _py2_str(b"note") + _py2_str(b"na\xefve")
           + _py2_str(b"sentences") + b"](" + sentence + b"eu")  # fmt: skip
    path = tmp_path / "refs(unc).p"
    path.write_bytes(b"\x80\x02](" + ref + b"e.")
    [loaded] = load_refs_pickle(path)
    assert loaded["sentences"] == [{"sent": "café", "sent_id": 9}]
    assert loaded["note"] == "naïve"
    assert (loaded["ref_id"], loaded["image_id"], loaded["split"]) == (5, 70000, "val")


@pytest.mark.parametrize("relative", REAL_PICKLES)
def test_real_refer_pickles_equal_plain_pickle(relative: str) -> None:
    path = REFER_SAMPLE / relative
    with path.open("rb") as f:
        expected = pickle.load(f)  # the shared sample data is trusted
    assert load_refs_pickle(path) == expected
    assert expected  # the sample files are not empty


def test_truncated_pickle_is_a_dataset_error(tmp_path: Path) -> None:
    data = (REFER_SAMPLE / REAL_PICKLES[0]).read_bytes()
    path = tmp_path / "refs(unc).p"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"refs\(unc\)\.p.*truncated or corrupt"):
        load_refs_pickle(path)
    path.write_bytes(b"not a pickle at all")
    with pytest.raises(DatasetError, match=r"truncated or corrupt"):
        load_refs_pickle(path)


def test_missing_file_is_a_dataset_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"nothere.p"):
        load_refs_pickle(tmp_path / "nothere.p")


def test_structure_errors_name_the_ref(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match=r"expected a list"):
        load_refs_pickle(write(tmp_path / "a.p", {"ref_id": 1}))
    broken = plain_ref(77)
    del broken["ann_id"]
    with pytest.raises(DatasetError, match=r"ref_id 77.*'ann_id'"):
        load_refs_pickle(write(tmp_path / "b.p", [plain_ref(1), broken]))
    broken = plain_ref(78)
    broken["sentences"][0]["sent_id"] = "x"
    with pytest.raises(DatasetError, match=r"ref_id 78, sentence 0.*'sent_id'"):
        load_refs_pickle(write(tmp_path / "c.p", [broken]))
