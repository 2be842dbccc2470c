"""Rows of different lengths packed flat, e.g. each expression's word features.

The feature cache stores words padded to the store's longest sentence (T = 30 on RefCOCO for a
mean of 5.7 tokens); held that way in memory they take 5 × their size. `RaggedRows` keeps only
the real tokens, row i being `data[offsets[i] : offsets[i + 1]]`, and batches pad to their own
longest row (`trainer.data.dataset`).
"""

from __future__ import annotations

from typing import Any

import numpy as np


class RaggedRows:
    """n rows of shape (L_i, *feature) in one (ΣL_i, *feature) array and (n + 1,) offsets."""

    def __init__(self, data: np.ndarray, offsets: np.ndarray) -> None:
        self.data, self.offsets = data, offsets

    @classmethod
    def from_padded(cls, padded: Any, lengths: np.ndarray, block: int = 4096) -> RaggedRows:
        """Pack a padded (n, T, *feature) array (numpy or Zarr, read `block` rows at a time)
        whose row i holds `lengths[i]` real entries."""
        lengths = np.asarray(lengths, np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        data = np.empty((int(offsets[-1]), *padded.shape[2:]), padded.dtype)
        for start in range(0, len(lengths), block):
            rows = np.asarray(padded[start : start + block])  # (b, T, *feature)
            lens = lengths[start : start + block]
            keep = np.arange(rows.shape[1])[None, :] < lens[:, None]  # (b, T)
            data[offsets[start] : offsets[start + len(lens)]] = rows[keep]
        return cls(data, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> np.ndarray:
        """(L_i, *feature) row i (a view)."""
        return self.data[self.offsets[i] : self.offsets[i + 1]]

    @property
    def nbytes(self) -> int:
        """Bytes held."""
        return int(self.data.nbytes + self.offsets.nbytes)
