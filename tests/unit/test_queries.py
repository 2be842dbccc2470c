"""`predict --texts` input: CSV rows over an images folder, every bad row named by its line."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.core.errors import DatasetError
from pipeline.data.queries import Query, read_queries


@pytest.fixture
def images(tmp_path: Path) -> Path:
    root = tmp_path / "images"
    (root / "kitchen").mkdir(parents=True)
    for name in ("a.png", "kitchen/b.png"):
        (root / name).write_bytes(b"not read here")
    return root


def _csv(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "texts.csv"
    path.write_text(text)
    return path


def test_rows_header_quoting_and_blank_lines(tmp_path: Path, images: Path) -> None:
    csv = _csv(tmp_path, 'image,text\na.png,the red circle\n\nkitchen/b.png,"the cup, left"\n')
    assert read_queries(csv, images) == [
        Query(1, 2, "a.png", "the red circle"),
        Query(2, 4, "kitchen/b.png", "the cup, left"),
    ]
    no_header = _csv(tmp_path, "a.png,the square\n")
    assert read_queries(no_header, images) == [Query(1, 1, "a.png", "the square")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a.png,ok\nmissing.png,the dog\n", "line 2: image 'missing.png' not found under --images"),
        ("a.png,the cup, left\n", "line 1: 3 columns, expected 2"),
        ("a.png,  \n", "line 1: empty text for image 'a.png'"),
        ("../texts.csv,escape\n", "line 1: image '../texts.csv' is outside --images"),
        ("image,text\n", "no (image, text) rows"),
    ],
)
def test_a_bad_row_is_named_by_its_line(
    tmp_path: Path, images: Path, text: str, message: str
) -> None:
    with pytest.raises(DatasetError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_queries(_csv(tmp_path, text), images)


def test_missing_inputs_name_their_flag(tmp_path: Path, images: Path) -> None:
    with pytest.raises(DatasetError, match=r"--texts .*: no such file"):
        read_queries(tmp_path / "none.csv", images)
    with pytest.raises(DatasetError, match=r"--images .*: no such folder"):
        read_queries(_csv(tmp_path, "a.png,x\n"), tmp_path / "nowhere")
