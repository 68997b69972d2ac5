"""From run records to the uncertainty a table shows: intervals, "cannot be told apart" groups, paired tests.

Every number starts from the per-query ranks a schema-2 record keeps (``metrics.ranks``). The runs of one
(dataset, method) form a ``[seeds, queries]`` array (every seed ranks the same test queries: ``bench compare``
refuses mixed protocols), and :mod:`tvr_bench.bench.report.stats` does the statistics:

- interval: 95 % percentile bootstrap over queries, two-stage over seeds and queries with several seeds;
- best group: the best point estimate and every method a paired test (leader vs. each other method,
  Holm-adjusted over those tests) does not separate from it at alpha = 0.05;
- ``--vs``: each method against a reference on the same queries, Holm-adjusted over the table's tests.

A record without ranks (schema 1) gets no interval and keeps its dataset out of the best-group marking: the
table says so instead of ranking what it cannot test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Mapping

import numpy as np

from tvr_bench.bench.errors import BenchError
from tvr_bench.bench.rank_codec import decode_ranks
from tvr_bench.bench.report import stats as S

DIRECTIONS = ("t2v", "v2t")
METRICS = ("R@1", "R@5", "R@10", "MdR", "MnR", "RSum")
LEVEL = 0.95
ALPHA = 0.05
N_BOOT = 2000
# the median's paired bootstrap sorts every resample (2 s for 10 000 resamples of 3 x 1000 queries); 2000 still
# resolves p down to 5e-4, below any Holm threshold of a table
N_RESAMPLES = {"MdR": 2000}
N_RESAMPLES_DEFAULT = 10000

Key = tuple[str, str]  # (dataset, method)


@dataclass(frozen=True)
class Ranks:
    """The runs of one (dataset, method): seeds and their ``[seeds, queries]`` rank arrays (None: no ranks)."""

    seeds: tuple[int, ...]
    by_direction: Mapping[str, np.ndarray] | None

    def of(self, direction: str) -> np.ndarray | None:
        return None if self.by_direction is None else self.by_direction[direction]


def n_resamples_for(metric: str) -> int:
    """Resamples of the paired test of ``metric`` (fewer for the median: see N_RESAMPLES)."""
    return N_RESAMPLES.get(metric, N_RESAMPLES_DEFAULT)


def rank_arrays(records: Iterable[dict], *, per_seed: bool = False) -> dict[tuple, Ranks]:
    """Run records grouped by (dataset, method) (``per_seed``: by (dataset, method, seed))."""
    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        if rec.get("kind") != "run":
            continue
        key = (rec["dataset"], rec["method"]) + ((int(rec["seed"]),) if per_seed else ())
        groups.setdefault(key, []).append(rec)
    out = {}
    for key, recs in groups.items():
        recs.sort(key=lambda r: int(r["seed"]))
        seeds = tuple(int(r["seed"]) for r in recs)
        if any(not isinstance(r["metrics"].get("ranks"), dict) for r in recs):
            out[key] = Ranks(seeds, None)
            continue
        by_dir = {}
        for d in DIRECTIONS:
            vectors = [decode_ranks(r["metrics"]["ranks"][d]) for r in recs]
            if len({v.size for v in vectors}) != 1:
                raise BenchError(f"{key[1]} on {key[0]}: seeds {seeds} ranked different numbers of {d} queries "
                                 f"({sorted({v.size for v in vectors})}); they are not the same test set")
            by_dir[d] = np.stack(vectors)
        out[key] = Ranks(seeds, by_dir)
    return out


def intervals(groups: Mapping[tuple, Ranks], *, level: float = LEVEL, n_boot: int = N_BOOT) -> dict[tuple, dict]:
    """``{group: {"t2v_R@1": (low, high), ...}}`` for the groups that have ranks."""
    out = {}
    for key, ranks in groups.items():
        if ranks.by_direction is None:
            continue
        out[key] = {f"{d}_{m}": S.bootstrap_ci(ranks.of(d), m, level=level, n_boot=n_boot)
                    for d in DIRECTIONS for m in METRICS}
    return out


def best_groups(groups: Mapping[Key, Ranks], *, alpha: float = ALPHA) -> dict[tuple[str, str], frozenset[str]]:
    """``{(dataset, "t2v_R@1"): methods marked best}`` for every dataset whose methods (>= 2) all have ranks."""
    out = {}
    for dataset in sorted({ds for ds, _ in groups}):
        members = {m: r for (ds, m), r in groups.items() if ds == dataset}
        if len(members) < 2 or any(r.by_direction is None for r in members.values()):
            continue
        for d in DIRECTIONS:
            for metric in METRICS:
                arrays = {m: r.of(d) for m, r in members.items()}
                out[(dataset, f"{d}_{metric}")] = _best_group(arrays, metric, alpha)
    return out


def _best_group(arrays: Mapping[str, np.ndarray], metric: str, alpha: float) -> frozenset[str]:
    estimates = {m: S.metric_from_ranks(a, metric) for m, a in arrays.items()}
    pick = max if metric.startswith("R") else min  # R@K and RSum: higher is better
    top = pick(estimates.values())
    leaders = [m for m, v in estimates.items() if v == top]
    others = [m for m in arrays if m not in leaders]
    if not others:
        return frozenset(arrays)
    # only leader-vs-other tests (k - 1, not all k(k-1)/2 pairs as stats.separable): the question is "which
    # cannot be told apart from the best", and fewer tests make Holm less conservative; with tied leaders a
    # method joins when it is not separated from at least one of them
    p = S.holm({m: max(S.paired_test(arrays[lead], arrays[m], metric, n_resamples=n_resamples_for(metric))
                       for lead in leaders) for m in others})
    return frozenset(leaders) | {m for m in others if p[m] >= alpha}


@dataclass(frozen=True)
class Versus:
    dataset: str
    method: str
    direction: str
    metric: str
    value: float
    reference_value: float
    p: float
    p_holm: float

    @property
    def difference(self) -> float:
        return self.value - self.reference_value

    def significant(self, alpha: float = ALPHA) -> bool:
        return self.p_holm < alpha


VERSUS_METRICS = ("R@1", "R@5", "R@10", "MdR", "MnR")


def versus(groups: Mapping[Key, Ranks], reference: str, *, metrics: Iterable[str] = VERSUS_METRICS) -> list[Versus]:
    """Every other method against ``reference`` on the same queries; Holm over each dataset's tests."""
    metrics = list(metrics)
    datasets = sorted({ds for ds, m in groups if m == reference})
    if not datasets:
        known = sorted({m for _, m in groups})
        raise BenchError(f"--vs {reference}: no run records of that method (methods here: {', '.join(known)})")
    rows: list[Versus] = []
    for ds in datasets:
        ref = groups[(ds, reference)]
        missing = sorted(m for (d, m), r in groups.items() if d == ds and r.by_direction is None)
        if missing:
            raise BenchError(f"--vs needs per-query ranks; records of {', '.join(missing)} on {ds} have none "
                             "(written before record schema 2): rerun them")
        raw = {}
        for (d_s, method), ranks in sorted(groups.items()):
            if d_s != ds or method == reference:
                continue
            for d in DIRECTIONS:
                for metric in metrics:
                    raw[(method, d, metric)] = S.paired_test(ranks.of(d), ref.of(d), metric,
                                                             n_resamples=n_resamples_for(metric))
        adjusted = S.holm(raw) if raw else {}
        for (method, d, metric), p in raw.items():
            rows.append(Versus(ds, method, d, metric, S.metric_from_ranks(groups[(ds, method)].of(d), metric),
                               S.metric_from_ranks(ref.of(d), metric), p, adjusted[(method, d, metric)]))
    return rows


def versus_table(rows: list[Versus], reference: str, *, alpha: float = ALPHA) -> str:
    """Markdown, one row per (dataset, method, direction): each metric's difference from ``reference`` with its
    Holm-adjusted p-value; significant differences in bold."""
    import pandas as pd

    if not rows:
        return f"(no other method to compare with {reference})\n"
    metrics = list(dict.fromkeys(r.metric for r in rows))
    table: dict[tuple, dict] = {}
    for r in rows:
        row = table.setdefault((r.dataset, r.method, r.direction),
                               {"Dataset": r.dataset, "Method": r.method, "Dir": r.direction})
        cell = f"{r.difference:+.1f} (p {r.p_holm:.2g})"
        row[r.metric] = f"**{cell}**" if r.significant(alpha) else cell
    md = pd.DataFrame(list(table.values()), columns=["Dataset", "Method", "Dir", *metrics]).to_markdown(
        index=False, disable_numparse=True)
    n_sig = sum(r.significant(alpha) for r in rows)
    note = (f"Cells: method - {reference} (R@K in points, higher is better; MdR/MnR in ranks, lower is better) "
            f"and the Holm-adjusted p-value over the {len(rows)} tests of this table; **bold**: significant at "
            f"alpha = {alpha} ({n_sig} of {len(rows)}). Paired tests on the same test queries, per-query values "
            "averaged over seeds: R@K sign-flip permutation (a Monte-Carlo exact McNemar test), MnR sign-flip on "
            "ranks, MdR paired bootstrap.")
    return md + "\n\n" + note + "\n"
