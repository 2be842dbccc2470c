"""Samples as tensors: cached features and the E pseudo-label targets, read a batch at a time.

`PromptDataset.__getitems__` (what the loader calls with one batch's sample indices) returns
the batch itself, read with one gather per array (shapes with B samples):

    stages         N × (B, G*G, C_n) float16  cached CLIP stage features of each image
    words          (B, T, C_t) float16        cached word features, padded to the batch's longest
    text_pad       (B, T) bool                True = padding
    sam_embedding  (B, 256, 64, 64) float16   cached SAM image embedding (only where SAM
                                              decodes: eval, Select, mask losses)
    sam_tokens     (B, S*S, 256) float16      the embedding pooled to the generator's SAM stage
    relevance      (B, R, R) float16          whole-expression relevance, where cached
                   (B, 1+P, R, R)             and its first P phrases' maps (`phrase_maps`)
    size           (B, 2) int64               original (H, W)
    targets        B dicts: masks (E, 256, 256) float16 soft low-res targets in SAM's frame
                   (`trainer.data.target_cache`), points (E, M_t, 2) normalised (x, y),
                   point_labels (E, M_t), referent (E,), grid (E, S, S) with point maps
    sample_id, key B ids and (store index, sample_id)

Features stay float16 on the host (half the bytes through the workers' shared memory and the
pinned copy); `trainer.loop.engine.to_device` makes them float32 on the device. Targets come from
the target cache when one is given, else are computed from the RLE (the same numbers).
`__getitem__` gives one sample in the same layout without the batch dimension (`collate` in
`trainer.data.items` batches such items).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from pipeline.core.errors import StoreError
from pipeline.core.rle import decode_rle
from trainer.data.feature_cache import ClipCache
from trainer.data.items import empty_target, grid_target
from trainer.data.sam_embeddings import SamEmbeddings
from trainer.data.sample_index import SampleIndex
from trainer.data.target_cache import TargetCache, lowres_target


def _take(array: Any, rows: np.ndarray) -> np.ndarray:
    """array[rows] for a numpy array or a lazy Zarr one (each distinct row read once)."""
    if isinstance(array, np.ndarray):
        return array[rows]
    unique, inverse = np.unique(rows, return_inverse=True)
    return np.asarray(array.oindex[unique])[inverse]


def _empty(shape: tuple[int, ...], dtype: np.dtype) -> torch.Tensor:
    """An uninitialised output tensor; in a loader worker, in shared memory from the start (as
    torch's default_collate does), so that handing the batch to the main process copies none."""
    proto = torch.from_numpy(np.empty(0, dtype))
    if get_worker_info() is None:
        return proto.new_empty(shape)
    numel = int(np.prod(shape))
    return proto.new(proto._typed_storage()._new_shared(numel)).resize_(shape)


def _gather(reads: list[tuple[Any, np.ndarray, np.ndarray]], n: int) -> torch.Tensor:
    """(n, ...) rows of several arrays: each (array, rows, slots) puts array[rows] at
    out[slots]. Every row is copied once, straight into the output; a Zarr row read once."""
    first = reads[0][0]
    out = _empty((n, *first.shape[1:]), first.dtype)
    view = out.numpy()
    for array, rows, slots in reads:
        if len(reads) == 1 and isinstance(array, np.ndarray):
            np.take(array, rows, axis=0, out=view, mode="clip")  # one source, in batch order
        elif isinstance(array, np.ndarray):
            for row, slot in zip(rows.tolist(), slots.tolist(), strict=True):
                view[slot] = array[row]
        else:
            view[slots] = _take(array, rows)
    return out


class PromptDataset(Dataset):
    """Samples with their cached features and targets (module docstring).

    Args:
        samples: from `collect_samples`.
        clip_caches: per store, its `ClipCache`.
        sam_embeddings: per store, its `SamEmbeddings`.
        with_targets: build the targets (training); eval needs none.
        target_masks: include the targets' low-res masks (losses that read them).
        embeddings: include the full SAM embeddings (whenever SAM decodes the points).
        grid_side: add the targets' masks pooled to this grid (point_mode "map"); 0: none.
        targets: per store, its `TargetCache` (with `grid_side` when one is asked); None:
            targets are computed from the RLEs on every read.
    """

    def __init__(
        self,
        samples: SampleIndex,
        clip_caches: Sequence[ClipCache],
        sam_embeddings: Sequence[SamEmbeddings],
        with_targets: bool = True,
        target_masks: bool = True,
        embeddings: bool = True,
        grid_side: int = 0,
        targets: Sequence[TargetCache] | None = None,
    ) -> None:
        self.index = samples
        self.target_masks, self.embeddings, self.grid_side = target_masks, embeddings, grid_side
        self.clip_caches, self.sam_embeddings = list(clip_caches), list(sam_embeddings)
        self.with_targets = with_targets
        self.targets = None if targets is None else list(targets)
        # Every lookup by string is done here, once: workers then read integer columns only.
        n = len(samples)
        shas = samples.image_sha256.to_pylist()
        ids = samples.sample_id.to_pylist()
        stores = samples.store
        self.image_row = np.zeros(n, np.int64)  # row in its store's CLIP cache
        self.sample_row = np.zeros(n, np.int64)
        self.sam_part = np.full(n, -1, np.int64)  # which array in self.sam_arrays (-1: none)
        self.sam_row = np.zeros(n, np.int64)
        self.sam_arrays: list[Any] = []
        seen: dict[int, int] = {}
        for i, (store, sha, sid) in enumerate(zip(stores.tolist(), shas, ids, strict=True)):
            cache = self.clip_caches[store]
            self.image_row[i], self.sample_row[i] = cache.image_row[sha], cache.sample_row[sid]
            where = self.sam_embeddings[store].where.get(sha)
            if where is None:
                continue  # without an embedding: only a batch that asks for it fails
            array, self.sam_row[i] = where
            if id(array) not in seen:
                seen[id(array)] = len(self.sam_arrays)
                self.sam_arrays.append(array)
            self.sam_part[i] = seen[id(array)]
        self.target_row = None
        if self.targets is not None and with_targets:
            self.target_row = np.full(len(samples.cand_idx), -1, np.int64)
            owner = np.repeat(np.arange(n), np.diff(samples.cand_start))  # (m,) its sample
            cand_ids = samples.sample_id.take(owner)
            for s, cache in enumerate(self.targets):
                mine = np.flatnonzero(stores[owner] == s)
                self.target_row[mine] = cache.rows(cand_ids.take(mine), samples.cand_idx[mine])
            if (self.target_row < 0).any():
                raise StoreError(
                    f"{self.targets[0].path.parent}: the target cache lacks candidates of these "
                    "samples; delete the cache directory to rebuild it"
                )

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, Any]:
        """One sample (module docstring), without the batch dimension."""
        batch = self.__getitems__([i])
        item = {k: v[0] for k, v in batch.items() if k not in ("stages", "words", "text_pad")}
        item["stages"] = [s[0] for s in batch["stages"]]
        item["words"] = batch["words"][0]
        if "targets" in item:
            item["target"] = item.pop("targets")
        return item

    def __getitems__(self, indices: Sequence[int]) -> dict[str, Any]:
        """The batch of `indices` (module docstring): what the loader's collate receives."""
        pos = np.asarray(indices, np.int64)
        ix, stores = self.index, self.index.store[pos]
        parts = [(s, np.flatnonzero(stores == s)) for s in np.unique(stores).tolist()]
        batch: dict[str, Any] = {"stages": self._stages(pos, parts)}
        batch["words"], batch["text_pad"] = self._words(pos, stores)
        sizes = np.stack([ix.height[pos], ix.width[pos]], axis=1).astype(np.int64)
        batch["size"] = torch.from_numpy(sizes)  # (B, 2)
        batch["sample_id"] = ix.sample_id.take(pos).to_pylist()
        batch["key"] = list(zip(stores.tolist(), batch["sample_id"], strict=True))
        tokens = self._per_store(pos, parts, lambda c: c.sam_tokens, self.image_row)
        if tokens is not None:
            batch["sam_tokens"] = tokens  # (B, S*S, 256)
        relevance = self._per_store(pos, parts, lambda c: c.relevance, self.sample_row)
        if relevance is not None:
            batch["relevance"] = relevance  # (B, R, R), or (B, 1+P, R, R) with phrase maps
        if self.embeddings or tokens is None:
            batch["sam_embedding"] = self._embeddings(pos)  # (B, 256, 64, 64)
        if self.with_targets:
            batch["targets"] = self._targets(pos)
        return batch

    def _targets(self, pos: np.ndarray) -> list[dict[str, torch.Tensor]]:
        """Each sample's target; their masks are views of one (ΣE, 256, 256) float16 block."""
        starts, ends = self.index.cand_start[pos], self.index.cand_start[pos + 1]
        at = np.concatenate([[0], np.cumsum(ends - starts)]).tolist()
        targets = [self._target(int(i)) for i in pos]
        if self.target_masks:
            masks = _empty((at[-1], 256, 256), np.dtype(np.float16))
            view = masks.numpy()
            for b, i in enumerate(pos.tolist()):
                for k, c in enumerate(range(int(starts[b]), int(ends[b]))):
                    view[at[b] + k] = self._mask(c, i)
            for b, target in enumerate(targets):
                target["masks"] = masks[at[b] : at[b + 1]]  # (E, 256, 256)
        return targets

    def _stages(self, pos: np.ndarray, parts: list) -> list[torch.Tensor]:
        arrays = [self.clip_caches[store].stages for store, _ in parts]
        rows = [self.image_row[pos[sel]] for _, sel in parts]
        if all(isinstance(a, np.ndarray) for a in arrays):  # each stage gathered contiguous
            n_stages = arrays[0].shape[1]
            return [
                _gather([(a[:, k], r, sel) for a, r, (_, sel)
                         in zip(arrays, rows, parts, strict=True)], len(pos))
                for k in range(n_stages)
            ]  # fmt: skip
        reads = [(a, r, sel) for a, r, (_, sel) in zip(arrays, rows, parts, strict=True)]
        block = _gather(reads, len(pos))  # (B, N, G*G, C_n)
        return [block[:, k].contiguous() for k in range(block.shape[1])]

    def _words(self, pos: np.ndarray, stores: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        at = zip(stores.tolist(), self.sample_row[pos].tolist(), strict=True)
        rows = [self.clip_caches[s].words[r] for s, r in at]
        t = max(len(r) for r in rows)
        words = np.zeros((len(rows), t, rows[0].shape[-1]), rows[0].dtype)  # (B, T, C_t)
        pad = np.ones((len(rows), t), bool)  # (B, T)
        for b, r in enumerate(rows):
            words[b, : len(r)], pad[b, : len(r)] = r, False
        return torch.from_numpy(words), torch.from_numpy(pad)

    def _per_store(self, pos: np.ndarray, parts: list, array: Any, rows: np.ndarray) -> Any:
        """(B, ...) of a per-store cache array read at `rows`, None where it is not cached."""
        sources = [array(self.clip_caches[store]) for store, _ in parts]
        if any(source is None for source in sources):
            return None
        reads = [(a, rows[pos[sel]], sel) for a, (_, sel) in zip(sources, parts, strict=True)]
        return _gather(reads, len(pos))

    def _embeddings(self, pos: np.ndarray) -> torch.Tensor:
        parts = self.sam_part[pos]
        if (parts < 0).any():
            missing = self.index.image_sha256[int(pos[np.argmax(parts < 0)])].as_py()
            raise StoreError(f"no SAM embedding of image {missing}: build the encode stage")
        reads = []
        for part in np.unique(parts).tolist():
            sel = np.flatnonzero(parts == part)
            reads.append((self.sam_arrays[part], self.sam_row[pos[sel]], sel))
        return _gather(reads, len(pos))  # (B, 256, 64, 64) float16

    def _target(self, i: int) -> dict[str, torch.Tensor]:
        """Sample i's target but its masks (`_targets`); E = its candidates."""
        ix = self.index
        first, last = int(ix.cand_start[i]), int(ix.cand_start[i + 1])
        if first == last:
            return empty_target(256, self.grid_side)
        counts = np.diff(ix.point_start[first : last + 1])
        m = int(counts.min())
        if m == 0:  # no points stored: the mask still trains, one dummy point at its centre
            points = torch.full((last - first, 1, 2), 0.5)
            labels = torch.ones(last - first, 1)
        else:
            take = (ix.point_start[first:last, None] + np.arange(m)[None]).reshape(-1)
            points = torch.from_numpy(ix.point_xy[take].reshape(last - first, m, 2))
            labels = torch.from_numpy(ix.point_label[take].astype(np.float32).reshape(-1, m))
        target = {
            "points": points,  # (E, M_t, 2)
            "point_labels": labels,  # (E, M_t)
            "referent": torch.from_numpy(ix.referent[first:last].astype(np.int64)),  # (E,)
        }
        if self.grid_side:
            target["grid"] = torch.from_numpy(
                np.stack([self._grid(c, i) for c in range(first, last)])
            )  # (E, S, S) float32
        return target

    def _mask(self, c: int, i: int) -> np.ndarray:
        if self.target_row is not None:
            return self.targets[self.index.store[i]].mask(self.target_row[c])  # type: ignore[index]
        mask = decode_rle(self.index.mask_rle[c].as_py(), self.index.height[i], self.index.width[i])
        return lowres_target(mask).astype(np.float16)

    def _grid(self, c: int, i: int) -> np.ndarray:
        if self.target_row is not None:
            return self.targets[self.index.store[i]].grid(self.target_row[c])  # type: ignore[index]
        ix = self.index
        rle, h, w = ix.mask_rle[c].as_py(), int(ix.height[i]), int(ix.width[i])
        return grid_target(rle, h, w, self.grid_side).numpy()


def pass_batch(batch: dict[str, Any]) -> dict[str, Any]:
    """The loader's collate: `PromptDataset.__getitems__` already returns the batch."""
    return batch
