"""Training batches of a split: which captions go together each epoch (seeded; at most one caption per video
by default) and the batches built from them, prefetched by a DataLoader."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from models.batch import ConceptLabels, TextBatch, VideoBatch
from pipeline.learn.dataset import SplitData


def epoch_batches(cap2vid: np.ndarray, batch_size: int, seed: int, epoch: int, unique_videos: bool = True,
                  min_batch: int = 2) -> list[np.ndarray]:
    """Caption-index batches of one epoch; every caption once; deterministic in (seed, epoch).

    With ``unique_videos`` a caption whose video is already in the forming batch waits
    for the next batch (greedy, FIFO), so no batch holds one video twice. Only the last
    few batches can be short (when few videos are left); batches below ``min_batch``
    items are dropped (a hinge loss needs a negative).
    """
    rng = np.random.default_rng([int(seed), int(epoch)])
    order = rng.permutation(cap2vid.size)
    if not unique_videos:
        batches = [order[i:i + batch_size] for i in range(0, order.size, batch_size)]
        return [b for b in batches if b.size >= min_batch]
    batches: list[np.ndarray] = []
    waiting: list[int] = []      # captions deferred because their video was taken
    cur: list[int] = []
    used: set[int] = set()
    it = iter(order.tolist())

    def close_batch():
        nonlocal cur, used
        batches.append(np.asarray(cur, dtype=np.int64))
        cur, used = [], set()

    exhausted = False
    while True:
        # first the deferred captions, then fresh ones
        still: list[int] = []
        for c in waiting:
            v = int(cap2vid[c])
            if len(cur) < batch_size and v not in used:
                cur.append(c)
                used.add(v)
            else:
                still.append(c)
        waiting = still
        while len(cur) < batch_size and not exhausted:
            c = next(it, None)
            if c is None:
                exhausted = True
                break
            v = int(cap2vid[c])
            if v in used:
                waiting.append(c)
            else:
                cur.append(c)
                used.add(v)
        if not cur:
            break
        close_batch()
        if exhausted and not waiting:
            break
    return [b for b in batches if b.size >= min_batch]


class TrainBatches:
    """An iterable of (VideoBatch, TextBatch, ConceptLabels) for one epoch."""

    def __init__(self, data: SplitData, batch_size: int, seed: int, epoch: int, unique_videos: bool = True,
                 max_steps: int = 0, num_workers: int = 0):
        self.data = data
        self.batches = epoch_batches(data.cap2vid, batch_size, seed, epoch, unique_videos)
        if max_steps:
            self.batches = self.batches[:max_steps]
        self.num_workers = num_workers

    def __len__(self) -> int:
        return len(self.batches)

    def _make(self, idx: np.ndarray):
        d = self.data
        return d.video_batch(d.cap2vid[idx]), d.text_batch(idx), d.labels(idx)

    def __iter__(self) -> Iterator[tuple[VideoBatch, TextBatch, ConceptLabels]]:
        if self.num_workers <= 0:
            for b in self.batches:
                yield self._make(b)
            return
        # own generator: creating worker seeds must not consume the global torch RNG (dropout),
        # so num_workers does not change the training trajectory. forkserver, not fork: the
        # parent runs threads (Prefect, decode pools) and forked workers inherited broken state
        # (seen as workers exiting with code 1 in the full test session).
        loader = torch.utils.data.DataLoader(
            _BatchList(self.batches, self._make), batch_size=None, shuffle=False,
            num_workers=self.num_workers, persistent_workers=False, generator=torch.Generator().manual_seed(0),
            multiprocessing_context="forkserver")
        yield from loader


class _BatchList(torch.utils.data.Dataset):
    def __init__(self, batches, make):
        self.batches, self.make = batches, make

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, i):
        return self.make(self.batches[i])
