"""Retrieval metrics: dense == streaming == a brute-force definition, ties pessimistic."""
from __future__ import annotations

import numpy as np
import pytest

from models.metrics import (
    METRIC_KEYS, RankAccumulator, format_metrics, retrieval_metrics, retrieval_ranks,
    summarize_ranks,
)


def brute_force_ranks(s: np.ndarray, cap2vid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The definition, one pair at a time (pessimistic ties, own captions don't compete)."""
    n_v, n_c = s.shape
    t2v = np.zeros(n_c, dtype=np.int64)
    for c in range(n_c):
        true = s[cap2vid[c], c]
        t2v[c] = 1 + sum(1 for v in range(n_v) if v != cap2vid[c] and s[v, c] >= true)
    v2t = np.zeros(n_v, dtype=np.int64)
    for v in range(n_v):
        best_rank = None
        for c in range(n_c):
            if cap2vid[c] != v:
                continue
            r = 1 + sum(1 for c2 in range(n_c) if cap2vid[c2] != v and s[v, c2] >= s[v, c])
            best_rank = r if best_rank is None else min(best_rank, r)
        v2t[v] = best_rank
    return t2v, v2t


def random_case(seed: int, n_v: int = 13, per_video=(1, 4), ties: bool = False, shuffle: bool = True):
    rng = np.random.default_rng(seed)
    counts = rng.integers(per_video[0], per_video[1] + 1, size=n_v)
    cap2vid = np.repeat(np.arange(n_v), counts)
    if shuffle:
        cap2vid = rng.permutation(cap2vid)
    s = rng.standard_normal((n_v, cap2vid.size)).astype(np.float32)
    if ties:  # coarse quantisation: many exact ties, including with the true item
        s = np.round(s * 2) / 2
    return s, cap2vid


def test_perfect_and_known_ranks():
    cap2vid = np.array([0, 0, 1, 2])
    s = np.array([[0.9, 0.1, 0.5, 0.0],
                  [0.2, 0.3, 0.8, 0.7],
                  [0.1, 0.2, 0.1, 0.9]], dtype=np.float32)
    t2v, v2t = retrieval_ranks(s, cap2vid)
    # caption 1 (video 0, score .1): videos 1 (.3) and 2 (.2) above -> rank 3
    assert t2v.tolist() == [1, 3, 1, 1]
    # video 1: own caption 2 (.8); wrong captions >= .8: none -> 1; video 2: own .9 -> 1
    # video 0: best own .9 -> 1
    assert v2t.tolist() == [1, 1, 1]
    m = retrieval_metrics(s, cap2vid)
    assert m["t2v_r1"] == 75.0 and m["t2v_r5"] == 100.0 and m["v2t_r1"] == 100.0
    assert m["t2v_medr"] == 1.0 and m["t2v_meanr"] == pytest.approx(1.5)
    assert m["rsum"] == pytest.approx(75 + 100 + 100 + 300)
    assert set(m) == set(METRIC_KEYS)
    assert "rsum" in format_metrics(m)
    table = format_metrics(m, table=True).splitlines()
    assert table[0].split() == ["R@1", "R@5", "R@10", "MedR", "MeanR"]
    assert table[1].split() == ["t2v", "75.00", "100.00", "100.00", "1.00", "1.50"]
    assert table[3].split() == ["rsum", f"{m['rsum']:.2f}"]


def test_ties_are_pessimistic():
    cap2vid = np.array([0, 1, 2])
    s = np.zeros((3, 3), dtype=np.float32)  # a collapsed model: every pair equal
    t2v, v2t = retrieval_ranks(s, cap2vid)
    assert t2v.tolist() == [3, 3, 3] and v2t.tolist() == [3, 3, 3]
    m = retrieval_metrics(s, cap2vid)
    assert m["t2v_r1"] == 0.0 and m["v2t_r1"] == 0.0
    # a single tie with a wrong video pushes the true one to rank 2
    s = np.eye(3, dtype=np.float32)
    s[1, 0] = 1.0
    t2v, _ = retrieval_ranks(s, cap2vid)
    assert t2v.tolist() == [2, 1, 1]


def test_own_captions_do_not_compete_in_v2t():
    cap2vid = np.array([0, 0, 0, 1])
    s = np.array([[0.9, 0.9, 0.8, 0.85],
                  [0.0, 0.0, 0.0, 1.0]], dtype=np.float32)
    _, v2t = retrieval_ranks(s, cap2vid)
    assert v2t.tolist() == [1, 1]  # two own captions tied at the top: still rank 1


def test_duplicate_captions_are_separate_queries():
    # the same caption text under two videos is two rows; each has one correct video
    cap2vid = np.array([0, 1])
    s = np.array([[0.5, 0.5], [0.5, 0.5]], dtype=np.float32)  # identical rows = duplicate texts
    t2v, _ = retrieval_ranks(s, cap2vid)
    assert t2v.tolist() == [2, 2]


def test_medr_reference_convention_and_validation():
    # the reference: np.median(0-based ranks) + 1, not floored (an even count gives x.5)
    m = summarize_ranks([1, 2, 3, 4], [1, 2])
    assert m["t2v_medr"] == 2.5 and m["v2t_medr"] == 1.5
    assert m["t2v_medr"] == float(np.median(np.array([1, 2, 3, 4]) - 1) + 1)
    assert summarize_ranks([1, 2, 9], [1])["t2v_medr"] == 2.0
    with pytest.raises(ValueError):
        retrieval_metrics(np.array([[np.nan]], dtype=np.float32), np.array([0]))
    with pytest.raises(ValueError):
        retrieval_metrics(np.zeros((2, 1), dtype=np.float32), np.array([0]))  # video 1 has no caption


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("ties", [False, True])
def test_dense_equals_brute_force(seed, ties):
    s, cap2vid = random_case(seed, ties=ties)
    t2v, v2t = retrieval_ranks(s, cap2vid)
    bt, bv = brute_force_ranks(s, cap2vid)
    np.testing.assert_array_equal(t2v, bt)
    np.testing.assert_array_equal(v2t, bv)


@pytest.mark.parametrize("chunk", [1, 3, 7, 16, 1000])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("grouped", [False, True])
def test_chunked_equals_dense(chunk, ties, grouped):
    for seed in range(3):
        s, cap2vid = random_case(100 + seed, n_v=17, ties=ties, shuffle=not grouped)
        bt, bv = brute_force_ranks(s, cap2vid)
        rng = np.random.default_rng(seed)
        order = np.argsort(cap2vid, kind="stable") if grouped else rng.permutation(cap2vid.size)
        acc = RankAccumulator(cap2vid, s.shape[0])
        for i in range(0, order.size, chunk):
            ids = order[i:i + chunk]
            acc.add(ids, s[:, ids])
        t2v, v2t = acc.ranks()
        np.testing.assert_array_equal(t2v, bt)
        np.testing.assert_array_equal(v2t, bv)
        assert acc.metrics() == retrieval_metrics(s, cap2vid)


def test_accumulator_holds_little_when_grouped():
    s, cap2vid = random_case(7, n_v=60, per_video=(5, 5), shuffle=False)
    acc = RankAccumulator(cap2vid, 60)
    for i in range(0, cap2vid.size, 20):
        acc.add(np.arange(i, min(i + 20, cap2vid.size)), s[:, i:i + 20])
    # grouped captions: at most ~half the rows x half the columns are ever held
    assert acc.peak_held_bytes <= 0.3 * s.nbytes
    assert acc.held_bytes == 0


def test_accumulator_rejects_misuse():
    s, cap2vid = random_case(3)
    acc = RankAccumulator(cap2vid, s.shape[0])
    acc.add([0, 1], s[:, [0, 1]])
    with pytest.raises(ValueError):
        acc.add([1], s[:, [1]])
    with pytest.raises(RuntimeError):
        acc.ranks()
    with pytest.raises(ValueError):
        acc.add([2], s[:3, [2]])
