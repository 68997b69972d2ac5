"""Uncertainty for comparison tables: bootstrap CIs, paired tests, Holm adjustment, seed intervals, best groups.

Every function starts from per-query ranks: a 1-D array with one entry per query, the 1-based rank of the correct
item (as produced by :mod:`tvr_bench.bench.metrics`; x.5 ranks of the ``"mean"`` tie policy are accepted), or a
2-D ``[seeds, queries]`` array of several training seeds evaluated on the same queries. Metrics follow that
module's conventions: ``R@k = 100 * mean(rank <= k)``, ``MdR = numpy.median(rank)``, ``MnR = mean(rank)``; with
several seeds, the metric is the mean over seeds of the per-seed metric (what a table's mean row shows). All randomness comes from ``numpy.random.default_rng(seed)``, so equal inputs and seed give
equal outputs. Resampling draws its index (or sign) matrix a bounded number of elements at a time
(``_CHUNK_ELEMS``); because numpy's generator stream does not depend on how a draw is split into calls, the chunk
size changes memory only, never the result.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Callable, Hashable, Iterator, Mapping, TypeVar

import numpy as np
import scipy.stats

__all__ = [
    "metric_from_ranks",
    "bootstrap_ci",
    "paired_test",
    "holm",
    "seed_interval",
    "Separation",
    "separable",
    "best_group",
]

K = TypeVar("K", bound=Hashable)

# Upper bound on elements of one resampling matrix (int64 indices plus the gathered values: ~16 MiB).
_CHUNK_ELEMS = 1 << 20

_RECALL_RE = re.compile(r"R@([1-9][0-9]*)")


def _parse_metric(metric: str) -> tuple[str, int]:
    """("recall", k), ("median", 0) or ("mean", 0); anything else is a ValueError naming the accepted forms."""
    if metric == "MdR":
        return "median", 0
    if metric == "MnR":
        return "mean", 0
    if metric == "RSum":
        return "rsum", 0
    m = _RECALL_RE.fullmatch(metric) if isinstance(metric, str) else None
    if m is None:
        raise ValueError(f"unknown metric {metric!r}; expected 'R@<k>' (k >= 1), 'RSum', 'MdR' or 'MnR'")
    return "recall", int(m.group(1))


def _higher_is_better(metric: str) -> bool:
    return _parse_metric(metric)[0] in ("recall", "rsum")


def _as_ranks(ranks, name: str = "ranks") -> np.ndarray:
    """Validated float64 ``[seeds, queries]`` copy (a 1-D array is one seed): a silently wrong rank (0, NaN, a 3-D
    array) would give a plausible wrong CI."""
    arr = np.asarray(ranks)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array of per-query ranks or a 2-D [seeds, queries] "
                         f"array, got shape {np.asarray(ranks).shape}")
    if arr.dtype.kind not in "iuf":
        raise ValueError(f"{name} must be numeric, got dtype {arr.dtype}")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr < 1):
        raise ValueError(f"{name} must hold finite 1-based ranks (>= 1)")
    return arr


def _per_query(ranks: np.ndarray, kind: str, k: int) -> np.ndarray:
    """The per-query quantity the metric aggregates: a 0/1 hit for R@k, the hit count at 1, 5 and 10 for RSum
    (R@1 + R@5 + R@10), the rank itself for MdR/MnR."""
    if kind == "recall":
        return (ranks <= k).astype(np.float64)
    if kind == "rsum":
        return (ranks <= 1).astype(np.float64) + (ranks <= 5) + (ranks <= 10)
    return ranks


def _aggregate(values: np.ndarray, kind: str) -> np.ndarray:
    """Metric of each row of ``values`` (per-query quantities); 100 * hits / n keeps R@k exact for counts."""
    n = values.shape[-1]
    if kind in ("recall", "rsum"):
        return 100.0 * values.sum(axis=-1) / n
    if kind == "median":
        return np.median(values, axis=-1)
    return values.mean(axis=-1)


def _row_chunks(total: int, width: int) -> Iterator[int]:
    """Row counts of successive chunks so that rows * width stays <= _CHUNK_ELEMS (at least one row)."""
    step = max(1, _CHUNK_ELEMS // max(1, width))
    done = 0
    while done < total:
        rows = min(step, total - done)
        yield rows
        done += rows


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}")


def _check_count(value: int, name: str) -> None:
    if int(value) != value or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}")


def metric_from_ranks(ranks, metric: str) -> float:
    """``R@<k>`` (percent of queries with rank <= k), ``MdR`` (numpy median rank) or ``MnR`` (mean rank); the
    mean over seeds of that for a ``[seeds, queries]`` array."""
    kind, k = _parse_metric(metric)
    arr = _as_ranks(ranks)
    return float(_aggregate(_per_query(arr, kind, k), kind).mean())


def bootstrap_ci(ranks, metric: str, *, level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap CI of ``metric``: resample queries with replacement ``n_boot`` times.

    Replicate ``b`` uses row ``b`` of ``default_rng(seed).integers(0, n, size=(n_boot, n))`` (drawn in chunks);
    the bounds are ``numpy.quantile`` (linear interpolation) of the replicates at ``(1 -/+ level) / 2``.
    With one seed the interval describes query sampling only (the test set), not training seeds. With a
    ``[seeds, queries]`` array it is a two-stage bootstrap: each replicate also draws S seeds with replacement
    (row ``b`` of ``default_rng([seed, 1]).integers(0, S, size=(n_boot, S))``) and averages the drawn seeds'
    metrics on the drawn queries (the same queries for every seed: they share the test set), so it covers both
    the test set and training noise. With few seeds the seed stage is coarse (3 seeds give 10 distinct draws).
    """
    kind, k = _parse_metric(metric)
    _check_level(level)
    _check_count(n_boot, "n_boot")
    values = _per_query(_as_ranks(ranks), kind, k)
    n_seeds, n = values.shape
    rng = np.random.default_rng(seed)
    # the seed draws have their own stream, so chunking never interleaves the two draws
    seed_rng = np.random.default_rng([seed, 1]) if n_seeds > 1 else None
    reps = np.empty(n_boot, dtype=np.float64)
    start = 0
    for rows in _row_chunks(n_boot, n * n_seeds):
        idx = rng.integers(0, n, size=(rows, n))
        per_seed = _aggregate(values[:, idx], kind)  # [S, rows]
        if n_seeds > 1:
            pick = seed_rng.integers(0, n_seeds, size=(rows, n_seeds))
            reps[start : start + rows] = np.take_along_axis(per_seed.T, pick, axis=1).mean(axis=1)
        else:
            reps[start : start + rows] = per_seed[0]
        start += rows
    low, high = np.quantile(reps, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(low), float(high)


def _sign_flip_p(diff: np.ndarray, n_resamples: int, rng: np.random.Generator) -> float:
    """Two-sided Monte-Carlo sign-flip p-value of |sum(diff)|, counting the observed arrangement once."""
    # Zero differences contribute nothing under any sign, so only the non-zero ones are flipped: for R@k these are
    # exactly McNemar's discordant pairs, which makes the test a Monte-Carlo exact McNemar test.
    d = diff[diff != 0]
    if d.size == 0:
        return 1.0
    observed = abs(d.sum())
    # Sums of integer or half-integer values are exact in float64; the tolerance only guards non-lattice ranks
    # against a resample equal to the observation being counted as smaller through rounding.
    threshold = observed - 1e-9 * max(1.0, observed)
    extreme = 0
    for rows in _row_chunks(n_resamples, d.size):
        signs = 1.0 - 2.0 * rng.integers(0, 2, size=(rows, d.size))
        extreme += int(np.count_nonzero(np.abs(signs @ d) >= threshold))
    return (1 + extreme) / (1 + n_resamples)


def _median_bootstrap_p(a: np.ndarray, b: np.ndarray, n_resamples: int, rng: np.random.Generator) -> float:
    """Two-sided paired-bootstrap p-value of median(a) - median(b) = 0 (percentile-interval inversion); ``a`` and
    ``b`` are ``[seeds, queries]``, each side's statistic the mean over its seeds of the median."""
    n = a.shape[1]
    at_most_zero = 0
    at_least_zero = 0
    for rows in _row_chunks(n_resamples, (a.shape[0] + b.shape[0]) * n):
        idx = rng.integers(0, n, size=(rows, n))  # the same queries for both methods: the pairing
        delta = np.median(a[:, idx], axis=2).mean(axis=0) - np.median(b[:, idx], axis=2).mean(axis=0)
        at_most_zero += int(np.count_nonzero(delta <= 0))
        at_least_zero += int(np.count_nonzero(delta >= 0))
    # +1 in numerator and denominator (as in the permutation test) so a finite resample never claims p = 0.
    share = min(at_most_zero + 1, at_least_zero + 1) / (n_resamples + 1)
    return min(1.0, 2.0 * share)


def paired_test(ranks_a, ranks_b, metric: str, *, n_resamples: int = 10000, seed: int = 0) -> float:
    """Two-sided p-value of "A and B have the same ``metric`` on these queries" (query ``i`` paired with ``i``).

    * ``R@k`` and ``MnR``: paired sign-flip permutation test on the per-query differences (hit indicator
      ``rank <= k`` for R@k, the rank for MnR). Under the null each difference is equally likely to have either sign;
      the statistic is ``|sum(d)|`` and ``p = (1 + #{resample >= observed}) / (1 + n_resamples)``. Queries with
      ``d = 0`` are dropped before flipping, so for R@k this is a Monte-Carlo version of the exact McNemar test.
    * ``MdR``: a median is not a sum of per-query terms, so sign flips do not apply; instead a paired bootstrap
      (resample queries, keep pairs together) of ``median(A) - median(B)`` with
      ``p = 2 * min(share <= 0, share >= 0)`` (each share with +1 smoothing), capped at 1.

    With ``[seeds, queries]`` arrays (the seed counts of A and B may differ) query ``i``'s quantity is its mean
    over seeds (the hit rate for R@k) and the MdR statistic the mean over seeds of the median: the test is still
    over queries, conditional on the seeds run. Identical inputs give exactly 1.0. Different query counts are a
    ValueError naming both.
    """
    kind, k = _parse_metric(metric)
    _check_count(n_resamples, "n_resamples")
    a = _as_ranks(ranks_a, "ranks_a")
    b = _as_ranks(ranks_b, "ranks_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"paired test needs one rank per query for both methods: ranks_a has {a.shape[1]}, "
                         f"ranks_b has {b.shape[1]}")
    rng = np.random.default_rng(seed)
    if kind == "median":
        return _median_bootstrap_p(a, b, n_resamples, rng)
    diff = _per_query(a, kind, k).mean(axis=0) - _per_query(b, kind, k).mean(axis=0)
    return _sign_flip_p(diff, n_resamples, rng)


def holm(pvalues: Mapping[K, float]) -> dict[K, float]:
    """Holm-Bonferroni adjusted p-values (same keys): ``max_{j <= i} min(1, (m - j + 1) * p_(j))`` in sorted order.

    The running maximum keeps the adjustment monotone in the raw p-values; tied raw p-values get equal results.
    """
    keys = list(pvalues)
    raw = np.array([float(pvalues[key]) for key in keys], dtype=np.float64)
    if np.any(~np.isfinite(raw)) or np.any((raw < 0) | (raw > 1)):
        raise ValueError("p-values must be finite and within [0, 1]")
    m = raw.size
    order = np.argsort(raw, kind="stable")
    scaled = np.minimum(1.0, (m - np.arange(m)) * raw[order])
    adjusted = np.maximum.accumulate(scaled)
    out = np.empty(m, dtype=np.float64)
    out[order] = adjusted
    return {key: float(out[i]) for i, key in enumerate(keys)}


def seed_interval(values, *, level: float = 0.95) -> tuple[float, float]:
    """(mean, half_width) of a Student-t interval over per-seed metric values: ``t_{(1+level)/2, n-1} * s / sqrt(n)``.

    One seed has no seed interval: the half-width is then ``nan`` (there is no spread to estimate), never 0.
    """
    _check_level(level)
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
        raise ValueError(f"values must be a non-empty 1-D array of finite per-seed values, got shape {arr.shape}")
    mean = float(arr.mean())
    n = arr.size
    if n == 1:
        return mean, math.nan
    half = scipy.stats.t.ppf((1.0 + level) / 2.0, n - 1) * arr.std(ddof=1) / math.sqrt(n)
    return mean, float(half)


@dataclass(frozen=True)
class Separation:
    """Pairwise paired tests of one metric, Holm-adjusted over all pairs; pairs are (earlier, later) in input order."""

    metric: str
    alpha: float
    estimates: dict[str, float]
    p_raw: dict[tuple[str, str], float]
    p_adjusted: dict[tuple[str, str], float]
    separated: dict[tuple[str, str], bool]

    def is_separated(self, a: str, b: str) -> bool:
        """Symmetric look-up; a method is never separated from itself."""
        if a == b:
            return False
        return self.separated[(a, b)] if (a, b) in self.separated else self.separated[(b, a)]

    def best_group(self) -> frozenset[str]:
        """Methods a table should mark jointly as best: the best point estimate(s) plus every method not separated
        from at least one of them (refusing to rank what the test cannot tell apart)."""
        pick: Callable[..., float] = max if _higher_is_better(self.metric) else min
        top = pick(self.estimates.values())
        leaders = [m for m, v in self.estimates.items() if v == top]
        return frozenset(m for m in self.estimates if any(not self.is_separated(lead, m) for lead in leaders))


def separable(ranks_by_method: Mapping[str, np.ndarray], metric: str, *, alpha: float = 0.05, seed: int = 0,
              n_resamples: int = 10000) -> Separation:
    """All pairwise :func:`paired_test` p-values, Holm-adjusted; a pair is separated only when adjusted p < alpha.

    Every pair uses the same ``seed``; Holm's procedure is valid under any dependence between the tests.
    """
    _parse_metric(metric)
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie strictly between 0 and 1, got {alpha}")
    names = list(ranks_by_method)
    if not names:
        raise ValueError("separable needs at least one method")
    estimates = {name: metric_from_ranks(ranks_by_method[name], metric) for name in names}
    p_raw = {
        (a, b): paired_test(ranks_by_method[a], ranks_by_method[b], metric, n_resamples=n_resamples, seed=seed)
        for i, a in enumerate(names)
        for b in names[i + 1 :]
    }
    p_adj = holm(p_raw)
    return Separation(metric=metric, alpha=alpha, estimates=estimates, p_raw=p_raw, p_adjusted=p_adj,
                      separated={pair: p < alpha for pair, p in p_adj.items()})


def best_group(ranks_by_method: Mapping[str, np.ndarray], metric: str, *, alpha: float = 0.05, seed: int = 0,
               n_resamples: int = 10000) -> frozenset[str]:
    """The methods not separable from the best by point estimate (see :meth:`Separation.best_group`)."""
    return separable(ranks_by_method, metric, alpha=alpha, seed=seed, n_resamples=n_resamples).best_group()
