"""The input of batch prediction: a CSV of (image, text) rows over a folder of images.

    image,text                      an optional header row, exactly these two names
    kitchen/0001.jpg,the red mug    the image relative to --images, the referring expression
    kitchen/0001.jpg,"the cup, left"   quoted as CSV quotes (a comma inside the text)

Every row is checked before any model loads, and the first bad one stops the run with a
one-line error naming the file and line: a missing image, an empty text, a row without two
columns, a path that leaves the images folder. Failing over skipping: a prediction file with
silently missing rows would be mistaken for a complete one.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from pipeline.core.errors import DatasetError

HEADER = ["image", "text"]


@dataclass(frozen=True)
class Query:
    """One row of the CSV: which image, what text, and where it came from."""

    row: int  # 1-based data row (the header not counted): names its mask file and annotation
    line: int  # the CSV line it was read from, for errors
    image: str  # POSIX path relative to the images folder, as written
    text: str


def read_queries(texts_csv: Path, images_dir: Path) -> list[Query]:
    """The rows of `texts_csv` (module docstring), each image checked to exist in `images_dir`.

    Raises:
        DatasetError: the first bad row, named by file and line (or a missing file or folder).
    """
    texts_csv, images_dir = Path(texts_csv), Path(images_dir)
    if not images_dir.is_dir():
        raise DatasetError(f"--images {images_dir}: no such folder")
    try:
        with texts_csv.open(newline="", encoding="utf-8-sig") as handle:
            lines = list(enumerate(csv.reader(handle), start=1))
    except FileNotFoundError:
        raise DatasetError(f"--texts {texts_csv}: no such file") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DatasetError(f"--texts {texts_csv}: not a UTF-8 CSV file ({exc})") from None
    root = images_dir.resolve()
    queries: list[Query] = []
    for line, cells in lines:
        if not any(c.strip() for c in cells):
            continue  # blank lines
        if not queries and [c.strip().lower() for c in cells] == HEADER:
            continue
        where = f"{texts_csv} line {line}"
        if len(cells) != 2:
            raise DatasetError(
                f"{where}: {len(cells)} columns, expected 2 (image,text); quote a text that "
                'holds a comma ("the cup, left")'
            )
        image, text = cells[0].strip(), cells[1].strip()
        if not text:
            raise DatasetError(f"{where}: empty text for image {image!r}")
        path = (images_dir / image).resolve()
        if not path.is_relative_to(root):
            raise DatasetError(f"{where}: image {image!r} is outside --images {images_dir}")
        if not path.is_file():
            raise DatasetError(f"{where}: image {image!r} not found under --images {images_dir}")
        queries.append(Query(len(queries) + 1, line, Path(image).as_posix(), text))
    if not queries:
        raise DatasetError(f"--texts {texts_csv}: no (image, text) rows")
    return queries
