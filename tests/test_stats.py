"""Tests for tvr_bench.bench.report.stats: plain-Python loop oracles, scipy cross-checks, coverage, separation."""

from __future__ import annotations

import math
import statistics

import numpy as np
import pytest
import scipy.stats

from tvr_bench.bench.report import stats as S

METRICS = ("R@1", "R@5", "R@10", "R@3", "MdR", "MnR", "RSum")


def _ranks(n: int, seed: int, high: int = 30) -> np.ndarray:
    return np.random.default_rng(seed).integers(1, high + 1, size=n)


# ---------------------------------------------------------------------------------------------------------------
# plain-Python oracles (one query / one replicate at a time, no numpy aggregation)


def _loop_metric(ranks, metric: str) -> float:
    ranks = [float(r) for r in ranks]
    if metric == "MdR":
        return statistics.median(ranks)
    if metric == "MnR":
        return sum(ranks) / len(ranks)
    if metric == "RSum":  # R@1 + R@5 + R@10, summed as hit counts first (the same number, one rounding)
        return 100.0 * sum(float(r <= k) for r in ranks for k in (1, 5, 10)) / len(ranks)
    k = int(metric[2:])
    hits = 0
    for r in ranks:
        if r <= k:
            hits += 1
    return 100.0 * hits / len(ranks)


def _loop_percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default) written out by hand."""
    pos = q * (len(sorted_values) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (pos - lo) * (sorted_values[hi] - sorted_values[lo])


def _loop_bootstrap_reps(ranks, metric: str, n_boot: int, seed: int) -> list[float]:
    # One row of indices per replicate: numpy's stream is split-invariant, so this equals the chunked matrix draw.
    rng = np.random.default_rng(seed)
    n = len(ranks)
    reps = []
    for _ in range(n_boot):
        idx = rng.integers(0, n, size=n)
        reps.append(_loop_metric([ranks[i] for i in idx], metric))
    return reps


def _loop_paired(a, b, metric: str, n_resamples: int, seed: int) -> float:
    rng = np.random.default_rng(seed)
    n = len(a)
    if metric == "MdR":
        le = ge = 0
        for _ in range(n_resamples):
            idx = rng.integers(0, n, size=n)
            delta = statistics.median([float(a[i]) for i in idx]) - statistics.median([float(b[i]) for i in idx])
            le += delta <= 0
            ge += delta >= 0
        return min(1.0, 2.0 * min(le + 1, ge + 1) / (n_resamples + 1))
    if metric == "MnR":
        diffs = [float(x) - float(y) for x, y in zip(a, b)]
    elif metric == "RSum":
        diffs = [sum(float(x <= k) - float(y <= k) for k in (1, 5, 10)) for x, y in zip(a, b)]
    else:
        k = int(metric[2:])
        diffs = [float(x <= k) - float(y <= k) for x, y in zip(a, b)]
    diffs = [d for d in diffs if d != 0]
    if not diffs:
        return 1.0
    observed = abs(sum(diffs))
    extreme = 0
    for _ in range(n_resamples):
        bits = rng.integers(0, 2, size=len(diffs))
        flipped = sum(d if bit == 0 else -d for d, bit in zip(diffs, bits))
        extreme += abs(flipped) >= observed
    return (1 + extreme) / (1 + n_resamples)


def _loop_holm(pvalues: dict) -> dict:
    items = sorted(pvalues.items(), key=lambda kv: kv[1])
    m = len(items)
    out = {}
    running = 0.0
    for j, (key, p) in enumerate(items):
        running = max(running, min(1.0, (m - j) * p))
        out[key] = running
    return out


# ---------------------------------------------------------------------------------------------------------------
# metric_from_ranks


@pytest.mark.parametrize("metric", METRICS)
def test_metric_matches_loop(metric):
    for seed, n in ((0, 1), (1, 10), (2, 257)):
        ranks = _ranks(n, seed)
        assert S.metric_from_ranks(ranks, metric) == _loop_metric(ranks, metric)


def test_metric_half_ranks_and_known_values():
    ranks = np.array([1, 2, 2.5, 7, 11])  # the "mean" tie policy may give x.5 ranks
    assert S.metric_from_ranks(ranks, "R@1") == 20.0
    assert S.metric_from_ranks(ranks, "R@5") == 60.0
    assert S.metric_from_ranks(ranks, "R@10") == 80.0
    assert S.metric_from_ranks(ranks, "MdR") == 2.5
    assert S.metric_from_ranks(ranks, "MnR") == pytest.approx(23.5 / 5)


@pytest.mark.parametrize("metric", ["R@0", "R@", "R5", "recall", "MedR", "r@1"])
def test_unknown_metric_rejected(metric):
    with pytest.raises(ValueError, match="unknown metric"):
        S.metric_from_ranks([1, 2], metric)


@pytest.mark.parametrize("bad", [[], [0, 1], [1, float("nan")], [[[1, 2]]], [[1, 0]], ["a"]])
def test_bad_ranks_rejected(bad):
    with pytest.raises(ValueError):
        S.metric_from_ranks(np.array(bad), "R@1")


# ---------------------------------------------------------------------------------------------------------------
# bootstrap_ci


@pytest.mark.parametrize("metric", METRICS)
def test_bootstrap_equals_loop_exactly(metric):
    ranks = _ranks(37, 3)
    reps = _loop_bootstrap_reps(ranks, metric, n_boot=300, seed=11)
    low, high = S.bootstrap_ci(ranks, metric, level=0.9, n_boot=300, seed=11)
    # Same indices and the same per-replicate metric: the interval equals numpy's quantile of the loop replicates
    # bit for bit, and the hand-written interpolation up to rounding of the interpolation itself.
    assert (low, high) == tuple(np.quantile(reps, [0.05, 0.95]))
    ordered = sorted(reps)
    assert low == pytest.approx(_loop_percentile(ordered, 0.05), rel=1e-12, abs=1e-12)
    assert high == pytest.approx(_loop_percentile(ordered, 0.95), rel=1e-12, abs=1e-12)


class _SpyRng:
    """Delegating generator that records the size of every draw."""

    def __init__(self, seed):
        self._rng = np.random.Generator(np.random.PCG64(seed))
        self.sizes: list[int] = []

    def integers(self, *args, size, **kwargs):
        self.sizes.append(int(np.prod(size)))
        return self._rng.integers(*args, size=size, **kwargs)


def test_chunking_bounds_memory_and_leaves_result_unchanged(monkeypatch):
    ranks = _ranks(50, 4)
    reference_ci = S.bootstrap_ci(ranks, "R@5", n_boot=500, seed=2)
    other = np.clip(ranks + np.random.default_rng(5).integers(-3, 4, size=50), 1, None)
    reference_p = {m: S.paired_test(ranks, other, m, n_resamples=500, seed=2) for m in ("R@5", "MdR")}

    spies = []

    def spy_factory(seed):
        spies.append(_SpyRng(seed))
        return spies[-1]

    monkeypatch.setattr(S, "_CHUNK_ELEMS", 200)
    monkeypatch.setattr(S.np.random, "default_rng", spy_factory)
    assert S.bootstrap_ci(ranks, "R@5", n_boot=500, seed=2) == reference_ci
    for m, p in reference_p.items():
        assert S.paired_test(ranks, other, m, n_resamples=500, seed=2) == p
    for spy in spies:
        assert len(spy.sizes) > 1  # it really was split
        assert max(spy.sizes) <= 200  # and no draw exceeded the chunk


def test_bootstrap_ci_contains_true_rate_on_large_sample():
    rng = np.random.default_rng(7)
    n, p = 20000, 0.3
    ranks = np.where(rng.random(n) < p, 1, rng.integers(2, 100, size=n))
    low, high = S.bootstrap_ci(ranks, "R@1", n_boot=1000, seed=0)
    assert low < 30.0 < high
    # The width should match the normal approximation 2 * 1.96 * sqrt(p(1-p)/n) of a proportion.
    expected = 2 * 1.959964 * 100 * math.sqrt(p * (1 - p) / n)
    assert (high - low) == pytest.approx(expected, rel=0.1)


def test_bootstrap_coverage_over_many_samples():
    rng = np.random.default_rng(8)
    p, n, trials = 0.4, 300, 200
    covered = 0
    for t in range(trials):
        ranks = np.where(rng.random(n) < p, 1, 5)
        low, high = S.bootstrap_ci(ranks, "R@1", n_boot=400, seed=t)
        covered += low <= 100 * p <= high
    # 95 % nominal; the binomial sd of the coverage over 200 trials is about 1.5 points.
    assert 0.89 <= covered / trials <= 0.99


def test_bootstrap_deterministic_and_seed_sensitive():
    ranks = _ranks(200, 9)
    assert S.bootstrap_ci(ranks, "MnR", seed=5) == S.bootstrap_ci(ranks, "MnR", seed=5)
    assert S.bootstrap_ci(ranks, "MnR", seed=5) != S.bootstrap_ci(ranks, "MnR", seed=6)
    narrow = S.bootstrap_ci(ranks, "MnR", level=0.5, seed=5)
    wide = S.bootstrap_ci(ranks, "MnR", level=0.99, seed=5)
    assert wide[0] < narrow[0] <= narrow[1] < wide[1]


def test_bootstrap_rejects_bad_arguments():
    with pytest.raises(ValueError, match="level"):
        S.bootstrap_ci([1, 2], "R@1", level=1.0)
    with pytest.raises(ValueError, match="n_boot"):
        S.bootstrap_ci([1, 2], "R@1", n_boot=0)


# ---------------------------------------------------------------------------------------------------------------
# paired_test


@pytest.mark.parametrize("metric", ["R@1", "R@5", "MnR", "MdR"])
def test_paired_equals_loop_exactly(metric):
    a = _ranks(40, 10, high=12)
    b = _ranks(40, 11, high=12)
    assert S.paired_test(a, b, metric, n_resamples=400, seed=3) == _loop_paired(a, b, metric, 400, 3)


def test_recall_permutation_close_to_exact_mcnemar():
    # 30 queries: 9 where only A hits at rank 1, 2 where only B does, 19 concordant.
    a = np.array([1] * 9 + [4] * 2 + [1] * 10 + [6] * 9)
    b = np.array([3] * 9 + [1] * 2 + [1] * 10 + [8] * 9)
    exact = scipy.stats.binomtest(2, n=11, p=0.5).pvalue
    n_res = 20000
    p = S.paired_test(a, b, "R@1", n_resamples=n_res, seed=0)
    se = math.sqrt(exact * (1 - exact) / n_res)
    assert abs(p - exact) < 4 * se + 1 / (n_res + 1)
    assert 0.02 < exact < 0.1  # a case where the decision at 0.05 actually depends on the value


def test_sign_flip_agrees_with_scipy_permutation_test():
    rng = np.random.default_rng(12)
    a = rng.integers(1, 20, size=12)
    b = np.clip(a + rng.integers(-2, 6, size=12), 1, None)

    def mean_diff(x, y, axis):
        return np.mean(x - y, axis=axis)

    # 2**12 = 4096 <= n_resamples, so scipy enumerates every sign pattern: its p-value is exact.
    ref = scipy.stats.permutation_test((a.astype(float), b.astype(float)), mean_diff, permutation_type="samples",
                                       alternative="two-sided", n_resamples=9999).pvalue
    n_res = 20000
    p = S.paired_test(a, b, "MnR", n_resamples=n_res, seed=1)
    se = math.sqrt(ref * (1 - ref) / n_res)
    assert abs(p - ref) < 4 * se + 1 / (n_res + 1)
    assert 0.005 < ref < 0.5


@pytest.mark.parametrize("metric", ["R@1", "R@10", "MdR", "MnR"])
def test_identical_inputs_p_one(metric):
    a = _ranks(100, 13)
    assert S.paired_test(a, a.copy(), metric, n_resamples=500) == 1.0


@pytest.mark.parametrize("metric", ["R@1", "R@10", "MdR", "MnR"])
def test_clearly_different_inputs_tiny_p(metric):
    rng = np.random.default_rng(14)
    good = rng.integers(1, 3, size=300)
    bad = rng.integers(20, 60, size=300)
    n_res = 2000
    assert S.paired_test(good, bad, metric, n_resamples=n_res) <= 2.0 / (n_res + 1)
    assert S.paired_test(bad, good, metric, n_resamples=n_res) <= 2.0 / (n_res + 1)  # two-sided


def test_paired_deterministic_under_seed():
    a, b = _ranks(80, 15, high=8), _ranks(80, 16, high=8)
    for metric in ("R@1", "MdR"):
        assert S.paired_test(a, b, metric, n_resamples=300, seed=4) == S.paired_test(a, b, metric, n_resamples=300,
                                                                                     seed=4)


def test_paired_length_mismatch_names_both_lengths():
    with pytest.raises(ValueError, match=r"ranks_a has 3.*ranks_b has 4"):
        S.paired_test([1, 2, 3], [1, 2, 3, 4], "R@1")


# ---------------------------------------------------------------------------------------------------------------
# holm


def test_holm_matches_loop_on_random_pvalues():
    rng = np.random.default_rng(17)
    for m in (1, 2, 5, 12):
        raw = {f"h{i}": float(v) for i, v in enumerate(rng.random(m) ** 3)}
        got = S.holm(raw)
        want = _loop_holm(raw)
        assert list(got) == list(raw)
        for key in raw:
            assert got[key] == pytest.approx(want[key], rel=1e-15)


def test_holm_known_values():
    # statsmodels multipletests(method="holm") values, worked by hand: sorted 0.005, 0.01, 0.03, 0.04 with
    # multipliers 4, 3, 2, 1 -> 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03, 0.06, 0.06.
    got = S.holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005})
    assert got == pytest.approx({"a": 0.03, "b": 0.06, "c": 0.06, "d": 0.02})
    # Capping: 3 * 0.2 = 0.6, 2 * 0.5 = 1.0, 1 * 0.6 = 0.6 -> running max 0.6, 1.0, 1.0.
    assert S.holm({"x": 0.5, "y": 0.2, "z": 0.6}) == pytest.approx({"x": 1.0, "y": 0.6, "z": 1.0})
    # Ties get equal adjusted values whatever order they are listed in.
    assert S.holm({"p": 0.01, "q": 0.01}) == {"p": 0.02, "q": 0.02}


def test_holm_monotone_and_capped():
    raw = {i: float(v) for i, v in enumerate(np.random.default_rng(18).random(20))}
    adj = S.holm(raw)
    keys = sorted(raw, key=raw.get)
    assert all(adj[k] >= raw[k] for k in keys)
    assert all(adj[x] <= adj[y] for x, y in zip(keys, keys[1:]))
    assert max(adj.values()) <= 1.0
    assert S.holm({}) == {}
    with pytest.raises(ValueError):
        S.holm({"a": 1.5})
    with pytest.raises(ValueError):
        S.holm({"a": float("nan")})


# ---------------------------------------------------------------------------------------------------------------
# seed_interval


def test_seed_interval_matches_loop():
    values = [41.2, 43.0, 42.1, 40.7, 42.9]
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    got_mean, half = S.seed_interval(values, level=0.9)
    assert got_mean == pytest.approx(mean, rel=1e-15)
    assert half == pytest.approx(scipy.stats.t.ppf(0.95, n - 1) * sd / math.sqrt(n), rel=1e-12)


def test_seed_interval_known_t_value():
    # Three seeds, sd 1: t_{0.975, 2} = 4.302653 (printed t tables), so half-width = 4.302653 / sqrt(3).
    mean, half = S.seed_interval([1.0, 2.0, 3.0])
    assert mean == 2.0
    assert half == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)


def test_one_seed_has_no_interval():
    mean, half = S.seed_interval([42.0])
    assert mean == 42.0 and math.isnan(half)
    assert S.seed_interval([5.0, 5.0]) == (5.0, 0.0)
    with pytest.raises(ValueError):
        S.seed_interval([])
    with pytest.raises(ValueError, match="level"):
        S.seed_interval([1.0, 2.0], level=0.0)


# ---------------------------------------------------------------------------------------------------------------
# separable / best_group


def _methods():
    rng = np.random.default_rng(19)
    strong = rng.integers(1, 4, size=400)
    # "twin" differs from "strong" on a few queries in both directions (8 swaps of rank 1 <-> 3) plus two queries
    # where it is slightly worse: a different point estimate, but the same quality within test resolution.
    twin = strong.copy()
    ones, threes = np.flatnonzero(strong == 1), np.flatnonzero(strong == 3)
    twin[ones[:8]], twin[threes[:8]] = 3, 1
    twin[ones[8:10]] = 2
    weak = rng.integers(3, 40, size=400)
    return {"strong": strong, "twin": twin, "weak": weak}


def test_separable_matches_loop_over_pairs():
    methods = _methods()
    res = S.separable(methods, "R@1", seed=2, n_resamples=1000)
    names = list(methods)
    raw = {}
    for i in range(len(names)):
        for j in range(i + 1, len(names)):
            raw[(names[i], names[j])] = S.paired_test(methods[names[i]], methods[names[j]], "R@1",
                                                      n_resamples=1000, seed=2)
    assert res.p_raw == raw
    adj = _loop_holm(raw)
    assert res.p_adjusted == pytest.approx(adj)
    assert res.separated == {pair: adj[pair] < 0.05 for pair in raw}
    assert res.estimates == {m: _loop_metric(r, "R@1") for m, r in methods.items()}


@pytest.mark.parametrize("metric", ["R@1", "R@5", "MnR", "MdR"])
def test_separation_and_best_group(metric):
    methods = _methods()
    res = S.separable(methods, metric, n_resamples=2000)
    assert not res.is_separated("strong", "twin")
    assert res.is_separated("strong", "weak") and res.is_separated("weak", "twin")
    assert not res.is_separated("weak", "weak")
    # Lower is better for MdR/MnR and higher for R@k; either way the twins are jointly best, never one winner.
    assert res.best_group() == frozenset({"strong", "twin"})
    assert S.best_group(methods, metric, n_resamples=2000) == frozenset({"strong", "twin"})


def test_identical_methods_never_separated():
    a = _ranks(300, 20)
    res = S.separable({"x": a, "y": a.copy(), "z": a.copy()}, "R@1", n_resamples=500)
    assert set(res.p_raw.values()) == {1.0} and set(res.p_adjusted.values()) == {1.0}
    assert not any(res.separated.values())
    assert res.best_group() == frozenset({"x", "y", "z"})


def test_best_group_edge_cases_and_determinism():
    a = _ranks(50, 21)
    assert S.best_group({"only": a}, "MnR") == frozenset({"only"})
    methods = _methods()
    assert S.separable(methods, "MdR", seed=3, n_resamples=500) == S.separable(methods, "MdR", seed=3,
                                                                               n_resamples=500)
    with pytest.raises(ValueError, match="ranks_a has 50"):
        S.separable({"a": a, "b": a[:40]}, "R@1")
    with pytest.raises(ValueError, match="alpha"):
        S.separable({"a": a}, "R@1", alpha=0.0)
    with pytest.raises(ValueError):
        S.separable({}, "R@1")


def test_best_group_rule_with_tied_leaders():
    # Hand-built result: L1 and L2 tie on the point estimate; M is inseparable from L1 but separated from L2.
    # The documented rule joins M (not separated from at least one leader); "far" is separated from both.
    def build(metric, estimates):
        separated = {("L1", "L2"): False, ("L1", "M"): False, ("L2", "M"): True, ("L1", "far"): True,
                     ("L2", "far"): True, ("M", "far"): True}
        return S.Separation(metric=metric, alpha=0.05, estimates=estimates, p_raw={}, p_adjusted={},
                            separated=separated)

    assert build("R@1", {"L1": 50.0, "L2": 50.0, "M": 49.0, "far": 10.0}).best_group() == {"L1", "L2", "M"}
    # Lower is better for MnR: the same estimates now make "far" the sole leader, separated from everyone.
    assert build("MnR", {"L1": 50.0, "L2": 50.0, "M": 49.0, "far": 10.0}).best_group() == {"far"}


# ---------------------------------------------------------------------------------------------------------------
# several seeds: [seeds, queries] arrays


def _seed_matrix(n_seeds: int, n: int, seed: int, high: int = 30) -> np.ndarray:
    return np.stack([_ranks(n, seed + s, high) for s in range(n_seeds)])


@pytest.mark.parametrize("metric", METRICS)
def test_one_seed_matrix_equals_the_vector(metric):
    r = _ranks(41, 8)
    assert S.metric_from_ranks(r[None, :], metric) == S.metric_from_ranks(r, metric)
    assert S.bootstrap_ci(r[None, :], metric, n_boot=200, seed=4) == S.bootstrap_ci(r, metric, n_boot=200, seed=4)
    o = _ranks(41, 9)
    assert S.paired_test(r[None, :], o[None, :], metric, n_resamples=300, seed=1) == \
        S.paired_test(r, o, metric, n_resamples=300, seed=1)


@pytest.mark.parametrize("metric", METRICS)
def test_seed_metric_is_the_mean_of_per_seed_metrics(metric):
    m = _seed_matrix(3, 29, 5)
    assert S.metric_from_ranks(m, metric) == pytest.approx(sum(_loop_metric(row, metric) for row in m) / 3,
                                                           rel=1e-12)


@pytest.mark.parametrize("metric", METRICS)
def test_two_stage_bootstrap_equals_loop(metric):
    """Replicate b: queries drawn from default_rng(seed), seeds from default_rng([seed, 1]), one row at a time."""
    m = _seed_matrix(3, 23, 2)
    n_boot, seed = 250, 6
    q_rng, s_rng = np.random.default_rng(seed), np.random.default_rng([seed, 1])
    reps = []
    for _ in range(n_boot):
        idx = q_rng.integers(0, 23, size=23)
        pick = s_rng.integers(0, 3, size=3)
        reps.append(sum(_loop_metric([m[s][i] for i in idx], metric) for s in pick) / 3)
    low, high = S.bootstrap_ci(m, metric, n_boot=n_boot, seed=seed)
    want = np.quantile(reps, [0.025, 0.975])
    assert low == pytest.approx(want[0], rel=1e-12) and high == pytest.approx(want[1], rel=1e-12)


def test_two_stage_bootstrap_is_chunk_invariant_and_wider_with_seed_noise(monkeypatch):
    rng = np.random.default_rng(0)
    base = rng.integers(1, 40, size=200)
    noisy = np.stack([np.clip(base + rng.integers(-15, 16, size=200), 1, None) for _ in range(4)])
    ref = S.bootstrap_ci(noisy, "R@5", n_boot=400, seed=3)
    monkeypatch.setattr(S, "_CHUNK_ELEMS", 1000)
    assert S.bootstrap_ci(noisy, "R@5", n_boot=400, seed=3) == ref
    monkeypatch.undo()
    same = np.stack([noisy[0]] * 4)  # four identical seeds: no seed noise, the query-only interval
    assert S.bootstrap_ci(same, "R@5", n_boot=400, seed=3) == pytest.approx(
        S.bootstrap_ci(noisy[0], "R@5", n_boot=400, seed=3), rel=1e-12)


@pytest.mark.parametrize("metric", METRICS)
def test_multi_seed_paired_test_equals_loop(metric):
    a, b = _seed_matrix(3, 30, 1, high=12), _seed_matrix(2, 30, 7, high=12)
    n_res, seed = 300, 5
    rng = np.random.default_rng(seed)
    if metric == "MdR":
        le = ge = 0
        for _ in range(n_res):
            idx = rng.integers(0, 30, size=30)
            da = sum(statistics.median([float(row[i]) for i in idx]) for row in a) / len(a)
            db = sum(statistics.median([float(row[i]) for i in idx]) for row in b) / len(b)
            le += da - db <= 0
            ge += da - db >= 0
        want = min(1.0, 2.0 * min(le + 1, ge + 1) / (n_res + 1))
    else:
        def q(row, i):
            if metric == "RSum":
                return sum(float(row[i] <= k) for k in (1, 5, 10))
            return float(row[i]) if metric == "MnR" else float(row[i] <= int(metric[2:]))
        diffs = [sum(q(r, i) for r in a) / len(a) - sum(q(r, i) for r in b) / len(b) for i in range(30)]
        diffs = [d for d in diffs if d != 0]
        observed = abs(sum(diffs))
        extreme = 0
        for _ in range(n_res):
            bits = rng.integers(0, 2, size=len(diffs))
            extreme += abs(sum(d if bit == 0 else -d for d, bit in zip(diffs, bits))) >= observed - 1e-9 * max(1, observed)
        want = (1 + extreme) / (1 + n_res)
    assert S.paired_test(a, b, metric, n_resamples=n_res, seed=seed) == want


def test_multi_seed_query_count_mismatch_is_named():
    with pytest.raises(ValueError, match="ranks_a has 5, ranks_b has 6"):
        S.paired_test(_seed_matrix(2, 5, 0), _seed_matrix(2, 6, 0), "R@1")
