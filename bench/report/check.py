"""Regression check of run records against a baseline (``bench check``).

Records are matched by (method, dataset, seed, kind). For every matched pair each metric is compared
with a direction-aware tolerance:

* **regressed** -- moved in the bad direction by more than the tolerance: a failure;
* **improved** -- moved in the good direction by more than the tolerance: reported, not a failure
  (refresh the baseline so the gain is locked in);
* **changed** -- a quantity that must not move (parameter counts, FLOPs, gallery size, protocol
  fingerprint) differs beyond its tolerance: a failure;
* **missing metric** -- the baseline has a value the current record lacks: a failure;
* **missing run** -- a baseline record has no current counterpart: a failure;
* **extra run** -- a current record has no baseline counterpart: information only.

Default tolerances and their syntax: ``bench/report/tolerance.py``.

**Paired tests.** When both records of a pair keep their per-query ranks (record schema 2), the rank metrics
are judged by a paired test on the same queries instead of the tolerance: *regressed* / *improved* means the
move is in the bad / good direction **and** the test (``bench/report/stats.py``: sign-flip for R@K, RSum and
MnR, paired bootstrap for MdR), Holm-adjusted over every test of the check, gives p < alpha (0.05). A
difference the test cannot separate from query noise never fails, however large; a small one it can, does.
``--tolerance-only`` (``paired=False``) restores the tolerances. A baseline built by ``bench baseline`` from
the seed-to-seed spread says ``"judge": "tolerance"``: its purpose is training noise across machines (a
chaotic from-scratch run ends elsewhere on another CPU), which a test over queries does not cover.

The rank metrics apply to both directions (t2v, v2t); a key such as ``t2v.R@1`` overrides one
direction only. Cost metrics are compared only when both records carry them. Overrides come from
``--tol KEY=VALUE`` (:func:`parse_tolerance_overrides`) or the ``"tolerances"`` object of a baseline
file (:func:`load_baseline`); a VALUE is ``1.5`` (absolute), ``10%`` (relative), ``1+15%`` (the larger
of both), ``exact`` (0) or ``off`` (not checked).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from tvr_bench.bench.errors import RegressionError
from tvr_bench.bench.records import (
    DIRECTIONS,
    RANK_METRICS,
    flatten_record,
    index_records,
    record_key,
)
from tvr_bench.bench.report.tolerance import (
    COST_METRICS,
    DEFAULT_TOLERANCES,
    EQUAL,
    HIGHER,
    METRIC_DIRECTIONS,
    Tolerance,
    resolve_tolerance,
    coerce_tolerances,
)

__all__ = ["CheckRow", "CheckReport", "check_records"]

# verdicts
OK, REGRESSED, IMPROVED, CHANGED = "ok", "regressed", "improved", "changed"
MISSING_METRIC, MISSING_RUN, EXTRA_RUN = "missing metric", "missing run", "extra run"
FAILING = (REGRESSED, CHANGED, MISSING_METRIC, MISSING_RUN)


def _fmt_num(v: Any, *, counts: bool = False) -> str:
    """Readable number; ``counts=True`` prints whole numbers without decimals (params, FLOPs, bytes)."""
    if v is None:
        return "–"
    if isinstance(v, str):
        return v
    v = float(v)
    if v.is_integer() and (counts or abs(v) >= 1000):
        return f"{int(v)}"
    return f"{v:.6g}" if abs(v) >= 1e4 or 0 < abs(v) < 1e-2 else f"{v:.2f}"


@dataclass
class CheckRow:
    """One comparison: a metric of a matched record pair, or a whole missing / extra run."""

    method: str
    dataset: str
    seed: int
    kind: str
    direction: str  # "t2v", "v2t", "cost", or "" for whole-run rows
    metric: str
    baseline: Any
    current: Any
    delta: float | None
    tolerance: str
    verdict: str
    p: float | None = None  # raw paired-test p-value (rows judged by a paired test)

    @property
    def failed(self) -> bool:
        return self.verdict in FAILING


@dataclass
class CheckReport:
    """Result of :func:`check_records`; ``ok`` is False when anything regressed or went missing."""

    rows: list[CheckRow] = field(default_factory=list)
    tolerances: dict[str, Tolerance | None] = field(default_factory=dict)
    n_baseline: int = 0
    n_current: int = 0

    @property
    def failures(self) -> list[CheckRow]:
        return [r for r in self.rows if r.failed]

    @property
    def improvements(self) -> list[CheckRow]:
        return [r for r in self.rows if r.verdict == IMPROVED]

    @property
    def extras(self) -> list[CheckRow]:
        return [r for r in self.rows if r.verdict == EXTRA_RUN]

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for r in self.rows:
            counts[r.verdict] = counts.get(r.verdict, 0) + 1
        order = [REGRESSED, CHANGED, MISSING_METRIC, MISSING_RUN, IMPROVED, EXTRA_RUN, OK]
        parts = [f"{counts[v]} {v if v != OK else 'within tolerance'}" for v in order if counts.get(v)]
        status = "PASSED" if self.ok else "FAILED"
        return (
            f"bench check {status}: {self.n_current} current vs {self.n_baseline} baseline record(s); "
            + (", ".join(parts) if parts else "nothing compared")
        )

    def render(self, *, all_rows: bool = False) -> str:
        """Summary line plus a table of every row that is not ``ok`` (all rows with ``all_rows=True``)."""
        from tabulate import tabulate

        shown = self.rows if all_rows else [r for r in self.rows if r.verdict != OK]
        rank = {v: i for i, v in enumerate([REGRESSED, CHANGED, MISSING_METRIC, MISSING_RUN, IMPROVED, EXTRA_RUN, OK])}
        shown = sorted(shown, key=lambda r: (rank.get(r.verdict, 99), r.dataset, r.method, r.seed, r.direction, r.metric))
        lines = [self.summary()]
        if shown:
            headers = ["method", "dataset", "seed", "dir", "metric", "baseline", "current", "delta", "tolerance", "verdict"]
            body = [
                [
                    r.method + (" (cost)" if r.kind == "cost" else ""),
                    r.dataset,
                    r.seed,
                    r.direction or "–",
                    r.metric,
                    _fmt_num(r.baseline, counts=r.direction == "cost"),
                    _fmt_num(r.current, counts=r.direction == "cost"),
                    "–" if r.delta is None else ("+" if r.delta > 0 else "") + _fmt_num(r.delta, counts=r.direction == "cost"),
                    r.tolerance,
                    r.verdict.upper() if r.failed else r.verdict,
                ]
                for r in shown
            ]
            lines += ["", tabulate(body, headers=headers, tablefmt="github", disable_numparse=True)]
        if self.improvements:
            lines += ["", "Improvements beyond tolerance do not fail the check; refresh the baseline to keep them."]
        return "\n".join(lines)

    def raise_for_failures(self) -> None:
        """Raise :class:`RegressionError` with the rendered report when the check failed."""
        if not self.ok:
            raise RegressionError(self.render())

    def __str__(self) -> str:  # pragma: no cover - convenience
        return self.render()


# --------------------------------------------------------------------------------------------------
# checking
# --------------------------------------------------------------------------------------------------


def _index(records: Sequence[dict], side: str) -> dict[tuple, dict]:
    return index_records(records, lambda i: f"{side} record #{i}")


def _verdict(tol: Tolerance, base: float, cur: float) -> str:
    delta = cur - base
    allowed = tol.allowed(base) + 1e-9 * max(1.0, abs(base))  # absorb float round-off at the boundary
    if tol.direction == EQUAL:
        return CHANGED if abs(delta) > allowed else OK
    bad = -delta if tol.direction == HIGHER else delta
    if bad > allowed:
        return REGRESSED
    if -bad > allowed:
        return IMPROVED
    return OK


def _is_missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


PENDING = "pending paired test"


def _ranks_of(rec: dict) -> dict | None:
    ranks = (rec.get("metrics") or {}).get("ranks")
    if not isinstance(ranks, dict):
        return None
    from tvr_bench.bench.rank_codec import decode_ranks

    return {d: decode_ranks(ranks[d]) for d in DIRECTIONS}


def _compare_pair(base: dict, cur: dict, tolerances: Mapping[str, Tolerance | None], *,
                  paired: bool = True) -> list[CheckRow]:
    method, dataset, seed, kind = record_key(base)
    fb, fc = flatten_record(base), flatten_record(cur)
    rows: list[CheckRow] = []
    rb, rc = (_ranks_of(base), _ranks_of(cur)) if paired else (None, None)
    if rb is not None and rc is not None and any(rb[d].size != rc[d].size for d in DIRECTIONS):
        rb = rc = None  # another query count: the protocol row below fails the pair anyway

    def add(direction, metric, b, c, tol, verdict=None, p=None):
        delta = None if _is_missing(b) or _is_missing(c) or isinstance(b, str) else float(c) - float(b)
        if verdict is None:
            verdict = _verdict(tol, float(b), float(c))
        tol_txt = tol.describe() if isinstance(tol, Tolerance) else str(tol)
        rows.append(CheckRow(method, dataset, seed, kind, direction, metric, b, c, delta, tol_txt, verdict, p))

    # protocol: a different evaluation protocol makes every number incomparable
    pb, pc = base.get("protocol"), cur.get("protocol")
    if isinstance(pb, dict) and isinstance(pc, dict) and "fingerprint" in pb and "fingerprint" in pc:
        if pb["fingerprint"] != pc["fingerprint"]:
            add("", "protocol fingerprint", pb["fingerprint"], pc["fingerprint"], "exact", CHANGED)

    for d in DIRECTIONS:
        for m in RANK_METRICS:
            tol = resolve_tolerance(tolerances, d, m)
            if tol is None:
                continue
            b, c = fb[f"{d}_{m}"], fc[f"{d}_{m}"]
            if _is_missing(b):
                continue
            if _is_missing(c):
                add(d, m, b, None, tol, MISSING_METRIC)
                continue
            if rb is not None and rc is not None:
                from tvr_bench.bench.report.stats import paired_test
                from tvr_bench.bench.report.uncertainty import n_resamples_for

                add(d, m, b, c, tol, PENDING, paired_test(rc[d], rb[d], m, n_resamples=n_resamples_for(m)))
                continue
            add(d, m, b, c, tol)
    for m in COST_METRICS:
        tol = resolve_tolerance(tolerances, None, m)
        if tol is None:
            continue
        col = m
        b, c = fb.get(col), fc.get(col)
        if _is_missing(b) or _is_missing(c):
            continue  # cost metrics are compared only when both records carry them
        if m == "memory_peak_bytes" and fb.get("memory_kind") != fc.get("memory_kind"):
            add("cost", m, b, c, tol, CHANGED)  # CPU RSS vs CUDA allocator peak: not comparable
            continue
        add("cost", m, b, c, tol)
    return rows


def check_records(
    current: Sequence[dict],
    baseline: Sequence[dict],
    tolerances: Mapping[str, Any] | None = None,
    method_tolerances: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    paired: bool = True,
    alpha: float = 0.05,
) -> CheckReport:
    """Compare ``current`` records with ``baseline`` records; see the module docstring for verdicts.

    ``tolerances`` overrides :data:`DEFAULT_TOLERANCES` key by key (values as accepted by
    :func:`parse_tolerance_value`; ``None`` disables a metric). ``method_tolerances`` maps a method name to
    further overrides for that method only (a baseline built from a multi-seed run carries one set per
    method, from that method's seed-to-seed spread: :func:`build_baseline`).
    """
    merged: dict[str, Tolerance | None] = dict(DEFAULT_TOLERANCES)
    merged.update(coerce_tolerances(tolerances))
    per_method = {m: {**merged, **coerce_tolerances(t)} for m, t in (method_tolerances or {}).items()}
    cur_idx, base_idx = _index(list(current), "current"), _index(list(baseline), "baseline")
    report = CheckReport(tolerances=merged, n_baseline=len(base_idx), n_current=len(cur_idx))
    for key in sorted(base_idx, key=lambda k: (k[1], k[0], k[2], k[3])):
        method, dataset, seed, kind = key
        if key not in cur_idx:
            report.rows.append(CheckRow(method, dataset, seed, kind, "", "(run)", "present", None, None, "–", MISSING_RUN))
            continue
        report.rows.extend(_compare_pair(base_idx[key], cur_idx[key], per_method.get(method, merged),
                                         paired=paired))
    for key in sorted(set(cur_idx) - set(base_idx), key=lambda k: (k[1], k[0], k[2], k[3])):
        method, dataset, seed, kind = key
        report.rows.append(CheckRow(method, dataset, seed, kind, "", "(run)", None, "present", None, "–", EXTRA_RUN))
    _settle_paired(report.rows, alpha)
    return report


def _settle_paired(rows: list[CheckRow], alpha: float) -> None:
    """Verdicts of the rows judged by a paired test: Holm over all of them, then direction and p < alpha."""
    from tvr_bench.bench.report.stats import holm

    pending = [i for i, r in enumerate(rows) if r.verdict == PENDING]
    adjusted = holm({i: rows[i].p for i in pending})
    for i in pending:
        r = rows[i]
        worse = (r.delta < 0) if METRIC_DIRECTIONS[r.metric] == HIGHER else (r.delta > 0)
        verdict = OK
        if adjusted[i] < alpha and r.delta != 0:
            verdict = REGRESSED if worse else IMPROVED
        rows[i] = dataclasses.replace(r, verdict=verdict,
                                      tolerance=f"paired p={adjusted[i]:.2g} (Holm, {len(pending)} tests)")
