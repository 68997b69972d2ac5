"""Tests for tvr_bench.bench.metrics: ranks against plain-Python and scipy oracles, ties, chunking, conventions."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import scipy.stats
import torch

from tvr_bench.bench import metrics as M
from tvr_bench.bench.errors import DataError

POLICIES = ("pessimistic", "optimistic", "mean")


# ---------------------------------------------------------------------------------------------------------------
# brute-force oracles: plain Python loops over queries, no numpy/torch in the ranking itself


def _oracle_rank(row: list[float], gt_pos: int, policy: str) -> float:
    """Rank of row[gt_pos] by sorting the row with Python's sorted and counting; NaN never beats anything."""
    gt = row[gt_pos]
    assert not math.isnan(gt)
    others = [v for i, v in enumerate(row) if i != gt_pos and not math.isnan(v)]
    ordered = sorted(others, reverse=True)
    ge = 0
    gt_count = 0
    for v in ordered:
        if v >= gt:
            ge += 1
        if v > gt:
            gt_count += 1
    pess = 1 + ge
    opt = 1 + gt_count
    return {"pessimistic": pess, "optimistic": opt, "mean": (pess + opt) / 2}[policy]


def oracle_t2v(sim: np.ndarray, t2v: list[int], policy: str) -> list[float]:
    rows = sim.tolist()
    return [_oracle_rank(rows[i], t2v[i], policy) for i in range(len(rows))]


def oracle_v2t(sim: np.ndarray, t2v: list[int], policy: str) -> list[float]:
    rows = sim.tolist()
    n_video = len(rows[0])
    out = []
    for j in range(n_video):
        group_scores = []
        for g in range(n_video):
            vals = [rows[c][j] for c in range(len(rows)) if t2v[c] == g and not math.isnan(rows[c][j])]
            group_scores.append(max(vals) if vals else float("nan"))
        out.append(_oracle_rank(group_scores, j, policy))
    return out


def oracle_summary(ranks: list[float]) -> dict[str, float]:
    n = len(ranks)
    r = {f"R@{k}": 100.0 * sum(1 for x in ranks if x <= k) / n for k in (1, 5, 10)}
    r["MdR"] = float(statistics.median(ranks))  # averages the middle pair, like numpy
    r["MnR"] = sum(ranks) / n
    r["RSum"] = r["R@1"] + r["R@5"] + r["R@10"]
    return r


def _multi_caption(seed: int, n_video: int = 30, max_caps: int = 5, integer: bool = False):
    rng = np.random.default_rng(seed)
    caps = rng.integers(1, max_caps + 1, size=n_video)
    t2v = np.repeat(np.arange(n_video), caps)
    rng.shuffle(t2v)
    if integer:
        sim = rng.integers(-3, 4, size=(t2v.size, n_video)).astype(np.float32)
    else:
        sim = rng.standard_normal((t2v.size, n_video))
        sim[np.arange(t2v.size), t2v] += 1.0  # make the metrics non-trivial
    return sim, t2v


def _assert_summary_close(got: dict, want: dict):
    assert list(got) == ["R@1", "R@5", "R@10", "MdR", "MnR", "RSum"]
    for k in want:
        assert isinstance(got[k], float)
        assert got[k] == pytest.approx(want[k], abs=1e-9), k


# ---------------------------------------------------------------------------------------------------------------
# oracle agreement


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_square_matches_oracle(seed):
    rng = np.random.default_rng(seed)
    sim = rng.standard_normal((50, 50)) + 0.8 * np.eye(50)
    t2v = list(range(50))
    for policy in POLICIES:
        r_t2v = M.compute_ranks_t2v(sim, t2v, tie_policy=policy)
        r_v2t = M.compute_ranks_v2t(sim, t2v, tie_policy=policy)
        assert r_t2v.tolist() == oracle_t2v(sim, t2v, policy)
        assert r_v2t.tolist() == oracle_v2t(sim, t2v, policy)
        # 1 caption per video: V2T is T2V on the transpose
        assert r_v2t.tolist() == M.compute_ranks_t2v(sim.T, t2v, tie_policy=policy).tolist()
    res = M.retrieval_metrics(torch.from_numpy(sim), None)
    _assert_summary_close(res["t2v"], oracle_summary(oracle_t2v(sim, t2v, "pessimistic")))
    _assert_summary_close(res["v2t"], oracle_summary(oracle_v2t(sim, t2v, "pessimistic")))
    assert not (res["t2v"]["R@1"] in (0.0, 100.0))  # non-trivial case


@pytest.mark.parametrize("seed", [0, 1])
def test_multi_caption_matches_oracle(seed):
    sim, t2v = _multi_caption(seed)
    t2v_l = t2v.tolist()
    res = M.retrieval_metrics(sim, t2v)
    want_t2v = oracle_t2v(sim, t2v_l, "pessimistic")
    want_v2t = oracle_v2t(sim, t2v_l, "pessimistic")
    assert res["ranks"]["t2v"].tolist() == want_t2v
    assert res["ranks"]["v2t"].tolist() == want_v2t
    _assert_summary_close(res["t2v"], oracle_summary(want_t2v))
    _assert_summary_close(res["v2t"], oracle_summary(want_v2t))
    assert res["n_queries_t2v"] == len(t2v) and res["n_queries_v2t"] == 30
    assert res["gallery_t2v"] == 30 and res["gallery_v2t"] == 30
    assert res["conventions"] == {
        "tie_policy": "pessimistic",
        "median": "numpy",
        "v2t_rank": "best_positive",
        "v2t_gallery": "caption_groups",
        "rank_base": 1,
    }
    assert res["ranks"]["t2v"].dtype == np.int64


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("seed", [3, 4])
def test_ties_integer_scores_match_oracle(seed, policy):
    sim, t2v = _multi_caption(seed, n_video=25, integer=True)
    t2v_l = t2v.tolist()
    got_t2v = M.compute_ranks_t2v(sim, t2v, tie_policy=policy).tolist()
    got_v2t = M.compute_ranks_v2t(sim, t2v, tie_policy=policy).tolist()
    assert got_t2v == oracle_t2v(sim, t2v_l, policy)
    assert got_v2t == oracle_v2t(sim, t2v_l, policy)
    # integer dtype input gives the same ranks as float
    assert M.compute_ranks_t2v(sim.astype(np.int64), t2v, tie_policy=policy).tolist() == got_t2v
    assert M.compute_ranks_v2t(sim.astype(np.int32), t2v, tie_policy=policy).tolist() == got_v2t


def test_ties_actually_separate_policies():
    sim, t2v = _multi_caption(3, n_video=25, integer=True)
    pess = M.compute_ranks_t2v(sim, t2v)
    opt = M.compute_ranks_t2v(sim, t2v, tie_policy="optimistic")
    mean = M.compute_ranks_t2v(sim, t2v, tie_policy="mean")
    assert (pess >= opt).all() and (pess > opt).any()
    assert np.array_equal(mean, (pess + opt) / 2) and mean.dtype == np.float64


def test_toy_tie_optimistic_4_pessimistic_5():
    # gallery of 6 videos; caption 0's video (index 2) ties with video 4, and 3 videos score higher
    row = [0.9, 0.8, 0.5, 0.7, 0.5, 0.1]
    sim = np.vstack([row, np.eye(6)[[0, 1, 3, 4, 5]]])  # the other captions only make the gallery valid
    t2v = [2, 0, 1, 3, 4, 5]
    assert M.compute_ranks_t2v(sim, t2v, tie_policy="optimistic").tolist()[0] == 4
    assert M.compute_ranks_t2v(sim, t2v, tie_policy="pessimistic").tolist()[0] == 5
    assert M.compute_ranks_t2v(sim, t2v).tolist()[0] == 5  # default is pessimistic
    assert M.compute_ranks_t2v(sim, t2v, tie_policy="mean").tolist()[0] == 4.5
    assert M.TIE_POLICY == "pessimistic" and M.MEDIAN_CONVENTION == "numpy"


def test_scipy_rankdata_cross_check():
    rng = np.random.default_rng(7)
    sim = rng.integers(0, 6, size=(40, 40)).astype(np.float64)  # many ties
    ranks = M.compute_ranks_t2v(sim, None)
    # pessimistic rank = max-rank of the ground truth among negated scores (largest score -> rank 1)
    want = [int(scipy.stats.rankdata(-sim[i], method="max")[i]) for i in range(40)]
    assert ranks.tolist() == want
    opt = M.compute_ranks_t2v(sim, None, tie_policy="optimistic")
    assert opt.tolist() == [int(scipy.stats.rankdata(-sim[i], method="min")[i]) for i in range(40)]
    mean = M.compute_ranks_t2v(sim, None, tie_policy="mean")
    # mean policy = average of min and max ranks (not scipy's 'average', which averages all tied positions)
    assert mean.tolist() == [(a + b) / 2 for a, b in zip(opt.tolist(), want)]


# ---------------------------------------------------------------------------------------------------------------
# chunking and the callable form


@pytest.mark.parametrize("policy", POLICIES)
def test_chunking_and_callable_identical(policy):
    sim, t2v = _multi_caption(11, n_video=23, integer=True)
    ref_t2v = M.compute_ranks_t2v(sim, t2v, chunk_size=1000, tie_policy=policy)
    ref_v2t = M.compute_ranks_v2t(sim, t2v, chunk_size=1000, tie_policy=policy)
    simt = torch.from_numpy(sim)
    calls = []

    def score_block(idx: slice) -> torch.Tensor:
        calls.append(idx)
        return simt[idx]

    for chunk in (1, 7, 1000):
        assert np.array_equal(M.compute_ranks_t2v(simt, t2v, chunk_size=chunk, tie_policy=policy), ref_t2v)
        assert np.array_equal(M.compute_ranks_v2t(simt, t2v, chunk_size=chunk, tie_policy=policy), ref_v2t)
        assert np.array_equal(M.compute_ranks_t2v(score_block, t2v, chunk_size=chunk, tie_policy=policy), ref_t2v)
        assert np.array_equal(M.compute_ranks_v2t(score_block, t2v, chunk_size=chunk, tie_policy=policy), ref_v2t)
        calls.clear()
        res = M.retrieval_metrics(score_block, t2v, chunk_size=chunk, tie_policy=policy)
        assert np.array_equal(res["ranks"]["t2v"], ref_t2v)
        assert np.array_equal(res["ranks"]["v2t"], ref_v2t)
        # one pass: each row requested exactly once, in blocks of at most `chunk` rows
        assert sum(s.stop - s.start for s in calls) == len(t2v)
        assert max(s.stop - s.start for s in calls) <= chunk
    res_mat = M.retrieval_metrics(sim, t2v, chunk_size=7, tie_policy=policy)
    res_fn = M.retrieval_metrics(score_block, t2v, chunk_size=7, tie_policy=policy)
    assert {k: v for k, v in res_mat.items() if k != "ranks"} == {k: v for k, v in res_fn.items() if k != "ranks"}


def test_callable_with_nan_groups_across_blocks():
    sim, t2v = _multi_caption(5, n_video=12)
    rng = np.random.default_rng(5)
    mask = rng.random(sim.shape) < 0.3
    mask[np.arange(len(t2v)), t2v] = False  # ground truth stays valid
    sim[mask] = np.nan
    t2v_l = t2v.tolist()
    for chunk in (1, 3, 100):
        fn = lambda idx: sim[idx]  # noqa: E731 (numpy blocks are accepted too)
        for policy in POLICIES:
            assert M.compute_ranks_v2t(fn, t2v, chunk_size=chunk, tie_policy=policy).tolist() == oracle_v2t(
                sim, t2v_l, policy
            )
            assert M.compute_ranks_v2t(sim, t2v, chunk_size=chunk, tie_policy=policy).tolist() == oracle_v2t(
                sim, t2v_l, policy
            )
            assert M.compute_ranks_t2v(fn, t2v, chunk_size=chunk, tie_policy=policy).tolist() == oracle_t2v(
                sim, t2v_l, policy
            )


# ---------------------------------------------------------------------------------------------------------------
# conventions


def test_mdr_numpy_median_even_count():
    s = M.summarize_ranks([1, 2, 5, 9])
    assert s["MdR"] == 3.5  # numpy averages the middle pair (torch.median would say 2)
    assert s["MnR"] == 4.25
    assert s["R@1"] == 25.0 and s["R@5"] == 75.0 and s["R@10"] == 100.0
    assert s["RSum"] == 200.0
    assert M.summarize_ranks(np.array([3]))["MdR"] == 3.0
    assert M.summarize_ranks(torch.tensor([1, 2, 3]))["MdR"] == 2.0


def test_nan_in_gallery_never_beats_anything():
    sim = np.array([[np.nan, 0.2, np.nan], [0.3, np.nan, 0.1], [np.nan, np.nan, 0.0]])
    assert M.compute_ranks_t2v(sim, [1, 0, 2]).tolist() == [1, 1, 1]
    # not even a -inf ground truth is beaten or tied by NaN (a real -inf ties it)
    sim2 = np.array([[np.nan, -np.inf, np.nan], [np.nan, -np.inf, -np.inf], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert M.compute_ranks_t2v(sim2, [1, 1, 2, 0]).tolist()[:2] == [1, 2]
    assert M.compute_ranks_t2v(sim2, [1, 1, 2, 0], tie_policy="optimistic").tolist()[:2] == [1, 1]


def test_v2t_best_positive_second_caption():
    # 3 videos; video 0 has captions 0 and 1 (caption 1 is its best one for video 0), videos 1, 2 one caption each
    t2v = [0, 0, 1, 2]
    sim = np.array(
        [
            # v0   v1   v2
            [0.10, 0.50, 0.20],  # caption 0 -> video 0 (weak)
            [0.90, 0.10, 0.30],  # caption 1 -> video 0 (best for video 0)
            [0.60, 0.70, 0.10],  # caption 2 -> video 1
            [0.50, 0.20, 0.80],  # caption 3 -> video 2
        ]
    )
    # video 0: groups score max(0.1, 0.9)=0.9, 0.6, 0.5 -> rank 1 (only 2 with the first caption alone)
    # video 1: groups score max(0.5,0.1)=0.5, 0.7, 0.2 -> rank 1
    # video 2: groups score max(0.2,0.3)=0.3, 0.1, 0.8 -> rank 1
    assert M.compute_ranks_v2t(sim, t2v).tolist() == [1, 1, 1]
    sim[1, 0] = 0.55  # now group 1 (0.6) beats video 0's best caption
    assert M.compute_ranks_v2t(sim, t2v).tolist() == [2, 1, 1]
    sim[1, 1] = 0.75  # video 0's group now scores 0.75 for video 1 and beats caption 2 (0.7)
    assert M.compute_ranks_v2t(sim, t2v).tolist() == [2, 2, 1]
    # T2V: caption 0 ranks video 0 last (0.1 < 0.5, 0.2); caption 1 now prefers video 1 (0.75 > 0.55)
    assert M.compute_ranks_t2v(sim, t2v).tolist() == [3, 2, 1, 1]


# ---------------------------------------------------------------------------------------------------------------
# bad input


def test_nan_ground_truth_is_an_error():
    sim = np.random.default_rng(0).standard_normal((6, 3))
    t2v = [0, 1, 2, 0, 1, 2]
    sim[4, 1] = np.nan
    with pytest.raises(DataError, match=r"query 4\b.*|sim\[4, 1\]"):
        M.compute_ranks_t2v(sim, t2v, chunk_size=2)
    with pytest.raises(DataError, match=r"sim\[4, 1\]"):
        M.compute_ranks_t2v(sim, t2v)
    with pytest.raises(DataError, match=r"sim\[4, 1\].*video 1"):
        M.compute_ranks_v2t(sim, t2v, chunk_size=1)
    with pytest.raises(DataError, match=r"sim\[4, 1\]"):
        M.compute_ranks_v2t(lambda i: sim[i], t2v, chunk_size=5)
    with pytest.raises(DataError, match=r"sim\[4, 1\]"):
        M.retrieval_metrics(lambda i: sim[i], t2v)


def test_out_of_range_video_index():
    sim = np.zeros((4, 3))
    with pytest.raises(DataError, match=r"text_to_video\[2\] = 3 .*3 videos"):
        M.compute_ranks_t2v(sim, [0, 1, 3, 2])
    with pytest.raises(DataError, match=r"text_to_video\[0\] = -1"):
        M.compute_ranks_v2t(sim, [-1, 1, 0, 2])
    with pytest.raises(DataError, match=r"text_to_video\[1\] = 7"):
        M.retrieval_metrics(lambda i: sim[i], [0, 7, 1, 2])


def test_video_without_captions():
    sim = np.zeros((4, 4))
    with pytest.raises(DataError, match=r"video 2 has no caption"):
        M.compute_ranks_t2v(sim, [0, 1, 3, 3])
    with pytest.raises(DataError, match=r"video 3 has no caption"):
        M.retrieval_metrics(sim, [0, 1, 2, 2])
    with pytest.raises(DataError, match=r"video 1 has no caption"):
        M.compute_ranks_v2t(lambda i: sim[i], [0, 0, 2, 3])


def test_empty_and_shape_errors():
    with pytest.raises(DataError, match="empty"):
        M.compute_ranks_t2v(np.zeros((0, 5)), [])
    with pytest.raises(DataError, match="empty"):
        M.compute_ranks_v2t(torch.zeros(3, 0), [0, 0, 0])
    with pytest.raises(DataError, match="empty"):
        M.retrieval_metrics(lambda i: np.zeros((0, 0)), [])
    with pytest.raises(DataError, match="empty"):
        M.summarize_ranks([])
    with pytest.raises(DataError, match="3 text rows.*2 entries"):
        M.compute_ranks_t2v(np.zeros((3, 2)), [0, 1])
    with pytest.raises(DataError, match="2-D"):
        M.compute_ranks_t2v(np.zeros(3), [0, 1, 2])
    with pytest.raises(DataError, match="square"):
        M.compute_ranks_t2v(np.zeros((3, 2)), None)
    with pytest.raises(DataError, match=r"score_block\(slice\(0, 2\)\) returned shape"):
        M.compute_ranks_t2v(lambda i: np.zeros((1, 2)), [0, 1], chunk_size=2)
    with pytest.raises(DataError, match="not an integer"):
        M.compute_ranks_t2v(np.zeros((2, 2)), [0.0, 1.5])


def test_bad_options():
    from tvr_bench.bench.errors import ConfigError

    with pytest.raises(ConfigError, match="tie_policy"):
        M.compute_ranks_t2v(np.eye(2), None, tie_policy="random")
    with pytest.raises(ConfigError, match="chunk_size"):
        M.compute_ranks_v2t(np.eye(2), None, chunk_size=0)
