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

Default tolerances (:data:`DEFAULT_TOLERANCES`; the allowed move is ``max(abs, rel * |baseline|)``)
=====================  ==========  =====================  ===========================================
metric                 better      tolerance              why
=====================  ==========  =====================  ===========================================
R@1, R@5, R@10         higher      2.0 points             seed-to-seed noise of small test sets
RSum                   higher      5.0 points             sum of three recalls: noise adds up
MdR                    lower       1.0 rank               median rank moves in whole ranks
MnR                    lower       max(1.0, 15 %)         mean rank scales with the gallery size
params_total,          exact       0                      deterministic: any change is a different
params_trainable,                                         model
params_head
flops_text_per_query,  exact       rel 1e-6               deterministic (FlopCounterMode); the
flops_score_per_pair,                                     relative slack only absorbs float printing
flops_per_query,
flops_video_per_video
gallery_size           exact       0                      a different gallery changes every metric
memory_peak_bytes      lower       off                    machine-dependent; enable with ``--tol``
latency_ms             lower       off                    machine-dependent; enable with ``--tol``
=====================  ==========  =====================  ===========================================

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

import json
import math
import os
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

from tvr_bench.bench.errors import ConfigError, RecordError, RegressionError
from tvr_bench.bench.records import (
    DIRECTIONS,
    RANK_METRICS,
    flatten_record,
    load_records,
    record_key,
    record_label,
    validate_record,
)

__all__ = [
    "Tolerance",
    "METRIC_DIRECTIONS",
    "DEFAULT_TOLERANCES",
    "CheckRow",
    "CheckReport",
    "check_records",
    "load_baseline",
    "parse_tolerance_overrides",
    "parse_tolerance_value",
    "coerce_tolerances",
]

HIGHER, LOWER, EQUAL = "higher", "lower", "equal"

COST_METRICS = (
    "params_total",
    "params_trainable",
    "params_head",
    "flops_text_per_query",
    "flops_score_per_pair",
    "flops_per_query",
    "flops_video_per_video",
    "gallery_size",
    "memory_peak_bytes",
    "latency_ms",
)

#: Which way is better, for every metric a tolerance can be given for.
METRIC_DIRECTIONS: dict[str, str] = {
    "R@1": HIGHER,
    "R@5": HIGHER,
    "R@10": HIGHER,
    "RSum": HIGHER,
    "MdR": LOWER,
    "MnR": LOWER,
    **{k: EQUAL for k in COST_METRICS if k.startswith(("params_", "flops_")) or k == "gallery_size"},
    "memory_peak_bytes": LOWER,
    "latency_ms": LOWER,
}


@dataclass(frozen=True)
class Tolerance:
    """Allowed move of one metric: ``max(abs, rel * |baseline|)`` in the bad direction.

    ``direction`` is ``"higher"`` / ``"lower"`` (which way is better) or ``"equal"`` (must not move).
    """

    direction: str
    abs: float = 0.0
    rel: float = 0.0

    def __post_init__(self) -> None:
        if self.direction not in (HIGHER, LOWER, EQUAL):
            raise ConfigError(f"tolerance direction {self.direction!r} not one of higher, lower, equal")
        for name in ("abs", "rel"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"tolerance {name}={v!r} must be a finite number >= 0")

    def allowed(self, baseline: float) -> float:
        return max(float(self.abs), float(self.rel) * abs(float(baseline)))

    def describe(self) -> str:
        parts = []
        if self.abs:
            parts.append(f"{self.abs:g}")
        if self.rel:
            parts.append(f"{self.rel * 100:g}%")
        if not parts:
            return "exact"
        return parts[0] if len(parts) == 1 else f"max({', '.join(parts)})"


#: Defaults; ``None`` = not checked unless enabled by an override. See the module docstring.
DEFAULT_TOLERANCES: dict[str, Tolerance | None] = {
    "R@1": Tolerance(HIGHER, abs=2.0),
    "R@5": Tolerance(HIGHER, abs=2.0),
    "R@10": Tolerance(HIGHER, abs=2.0),
    "RSum": Tolerance(HIGHER, abs=5.0),
    "MdR": Tolerance(LOWER, abs=1.0),
    "MnR": Tolerance(LOWER, abs=1.0, rel=0.15),
    "params_total": Tolerance(EQUAL),
    "params_trainable": Tolerance(EQUAL),
    "params_head": Tolerance(EQUAL),
    "flops_text_per_query": Tolerance(EQUAL, rel=1e-6),
    "flops_score_per_pair": Tolerance(EQUAL, rel=1e-6),
    "flops_per_query": Tolerance(EQUAL, rel=1e-6),
    "flops_video_per_video": Tolerance(EQUAL, rel=1e-6),
    "gallery_size": Tolerance(EQUAL),
    "memory_peak_bytes": None,
    "latency_ms": None,
}

# verdicts
OK, REGRESSED, IMPROVED, CHANGED = "ok", "regressed", "improved", "changed"
MISSING_METRIC, MISSING_RUN, EXTRA_RUN = "missing metric", "missing run", "extra run"
FAILING = (REGRESSED, CHANGED, MISSING_METRIC, MISSING_RUN)


# --------------------------------------------------------------------------------------------------
# tolerance parsing
# --------------------------------------------------------------------------------------------------

_CANON = {k.lower(): k for k in METRIC_DIRECTIONS}


def _canonical_key(key: str) -> str:
    """``"t2v.r@1"`` -> ``"t2v.R@1"``; ConfigError on an unknown metric."""
    raw = str(key).strip()
    prefix, _, name = raw.rpartition(".")
    if prefix and prefix.lower() not in DIRECTIONS:
        raise ConfigError(f"tolerance key {key!r}: unknown direction {prefix!r} (use t2v or v2t)")
    canon = _CANON.get(name.lower())
    if canon is None:
        raise ConfigError(f"tolerance key {key!r}: unknown metric; known: {', '.join(METRIC_DIRECTIONS)}")
    if prefix and canon not in RANK_METRICS:
        raise ConfigError(f"tolerance key {key!r}: only rank metrics take a t2v./v2t. prefix")
    return f"{prefix.lower()}.{canon}" if prefix else canon


def _base_name(key: str) -> str:
    return key.rpartition(".")[2]


def parse_tolerance_value(key: str, value: Any) -> Tolerance | None:
    """Turn a tolerance spec into a :class:`Tolerance` (or ``None`` = off) for metric ``key``.

    Accepted: a :class:`Tolerance`; ``None``; a number (absolute); a string ``"1.5"``, ``"10%"``,
    ``"1+15%"``, ``"exact"``, ``"off"``; a dict with ``abs`` / ``rel`` (and optional ``direction``).
    """
    key = _canonical_key(key)
    direction = METRIC_DIRECTIONS[_base_name(key)]
    if value is None or isinstance(value, Tolerance):
        return value
    if isinstance(value, bool):
        raise ConfigError(f"tolerance {key}: {value!r} is not a tolerance")
    if isinstance(value, (int, float)):
        return Tolerance(direction, abs=float(value))
    if isinstance(value, Mapping):
        unknown = set(value) - {"abs", "rel", "direction"}
        if unknown:
            raise ConfigError(f"tolerance {key}: unknown field(s) {', '.join(sorted(unknown))}")
        try:
            return Tolerance(
                str(value.get("direction", direction)),
                abs=float(value.get("abs", 0.0)),
                rel=float(value.get("rel", 0.0)),
            )
        except (TypeError, ValueError) as e:
            raise ConfigError(f"tolerance {key}: {e}") from e
    if isinstance(value, str):
        s = value.strip().lower()
        if s in ("off", "none", "skip", "ignore"):
            return None
        if s in ("exact", "0"):
            return Tolerance(direction)
        a = r = 0.0
        try:
            for part in s.split("+"):
                part = part.strip()
                if part.endswith("%"):
                    r = float(part[:-1]) / 100.0
                else:
                    a = float(part)
        except ValueError:
            raise ConfigError(
                f"tolerance {key}={value!r}: expected a number (1.5), a percentage (10%), both (1+15%), "
                "'exact' or 'off'"
            ) from None
        return Tolerance(direction, abs=a, rel=r)
    raise ConfigError(f"tolerance {key}: unsupported value {value!r}")


def coerce_tolerances(spec: Mapping[str, Any] | None) -> dict[str, Tolerance | None]:
    """Normalise a ``{metric: spec}`` mapping (see :func:`parse_tolerance_value`)."""
    if spec is None:
        return {}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"tolerances must be an object mapping metric names to tolerances, got {type(spec).__name__}")
    return {_canonical_key(k): parse_tolerance_value(k, v) for k, v in spec.items()}


def parse_tolerance_overrides(items: Iterable[str] | str | None) -> dict[str, Tolerance | None]:
    """Parse ``--tol`` options such as ``["R@1=1.5", "MnR=10%", "t2v.MdR=2", "latency_ms=50%"]``.

    Items may also be comma-separated in one string. Raises :class:`ConfigError` on bad input.
    """
    if items is None:
        return {}
    if isinstance(items, str):
        items = [items]
    out: dict[str, Tolerance | None] = {}
    for item in items:
        for piece in str(item).split(","):
            piece = piece.strip()
            if not piece:
                continue
            key, eq, value = piece.partition("=")
            if not eq or not key.strip() or not value.strip():
                raise ConfigError(f"--tol {piece!r}: expected METRIC=VALUE, e.g. R@1=1.5 or MnR=10%")
            out[_canonical_key(key)] = parse_tolerance_value(key, value)
    return out


def _resolve(tolerances: Mapping[str, Tolerance | None], direction: str | None, metric: str) -> Tolerance | None:
    if direction is not None and f"{direction}.{metric}" in tolerances:
        return tolerances[f"{direction}.{metric}"]
    return tolerances.get(metric)


# --------------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------------


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
    out: dict[tuple, dict] = {}
    for i, rec in enumerate(records):
        try:
            validate_record(rec)
        except RecordError as e:
            raise RecordError(f"{side} record #{i}: {e}") from None
        key = record_key(rec)
        if key in out:
            raise RecordError(f"{side} records: duplicate {record_label(rec)}")
        out[key] = rec
    return out


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
            tol = _resolve(tolerances, d, m)
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
        tol = _resolve(tolerances, None, m)
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


# --------------------------------------------------------------------------------------------------
# baseline files
# --------------------------------------------------------------------------------------------------


@dataclass
class Baseline:
    records: list[dict]
    tolerances: dict[str, Tolerance | None] = field(default_factory=dict)
    method_tolerances: dict[str, dict[str, Tolerance | None]] = field(default_factory=dict)
    paired: bool = True  # False: the file says "judge": "tolerance" (a seed-spread baseline)

    def __iter__(self):  # ``records, tolerances = load_baseline(...)`` keeps working
        return iter((self.records, self.tolerances))


def load_baseline(path: str | os.PathLike) -> Baseline:
    """Load a baseline: records, global tolerance overrides and per-method overrides.

    ``path`` is a folder of run records (no overrides), or a JSON file holding one record, a list of
    records, or ``{"records": [...], "tolerances": {...}, "method_tolerances": {method: {...}}}``.
    Errors name the file (and list index).
    """
    p = Path(path)
    if p.is_dir():
        return Baseline(load_records(p))
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RecordError(f"{p}: baseline not found") from None
    except json.JSONDecodeError as e:
        raise RecordError(f"{p}: baseline is not valid JSON: {e}") from e
    except (OSError, UnicodeDecodeError) as e:
        raise RecordError(f"{p}: cannot read baseline: {e}") from e

    tolerances: dict[str, Tolerance | None] = {}
    method_tolerances: dict[str, dict[str, Tolerance | None]] = {}
    if isinstance(data, dict) and "records" in data:
        extra = set(data) - {"records", "tolerances", "method_tolerances", "seed_spread", "description",
                             "created_at", "notes", "schema_version", "judge"}
        if extra:
            raise RecordError(f"{p}: unknown baseline key(s) {', '.join(sorted(extra))}")
        try:
            tolerances = coerce_tolerances(data.get("tolerances"))
        except ConfigError as e:
            raise RecordError(f"{p}: tolerances: {e}") from None
        per = data.get("method_tolerances") or {}
        if not isinstance(per, dict):
            raise RecordError(f"{p}: method_tolerances must map method names to tolerance objects")
        for m, spec in per.items():
            try:
                method_tolerances[m] = coerce_tolerances(spec)
            except ConfigError as e:
                raise RecordError(f"{p}: method_tolerances.{m}: {e}") from None
        judge = data.get("judge", "paired")
        if judge not in ("paired", "tolerance"):
            raise RecordError(f"{p}: judge must be 'paired' or 'tolerance', got {judge!r}")
        items = data["records"]
        if not isinstance(items, list):
            raise RecordError(f"{p}: 'records' must be a list, got {type(items).__name__}")
        where = "records"
    elif isinstance(data, list):
        items, where = data, ""
    elif isinstance(data, dict):
        items, where = [data], None
    else:
        raise RecordError(f"{p}: baseline must be a record, a list of records or {{'records': [...]}}")

    paired = not (isinstance(data, dict) and data.get("judge") == "tolerance")
    records: list[dict] = []
    seen: dict[tuple, int] = {}
    for i, rec in enumerate(items):
        loc = f"{p}" if where is None else f"{p}: {where}[{i}]"
        try:
            validate_record(rec)
        except RecordError as e:
            raise RecordError(f"{loc}: {e}") from None
        key = record_key(rec)
        if key in seen:
            raise RecordError(f"{loc}: duplicate record {record_label(rec)} (also at index {seen[key]})")
        seen[key] = i
        records.append(rec)
    return Baseline(records, tolerances, method_tolerances, paired)


def build_baseline(records: Sequence[dict], *, reference_seed: int = 0, k: float = 4.0, min_seeds: int = 3,
                   borrow: bool = False, description: str = "") -> dict:
    """A baseline file from a multi-seed run: the ``reference_seed`` records, with per-method tolerances.

    Training from scratch is chaotic: a different CPU, thread count or codec build perturbs the first float
    and the run ends elsewhere. The seed-to-seed spread measures that noise, so each rank metric of each
    method gets ``max(default, k x sample std over seeds, k x median std over methods)`` (MdR rounded up to
    whole ranks; the median floor guards against a spread that a few seeds underestimate). CI runs the
    reference seed and fails only on moves beyond that spread (e.g. a method that stops learning).

    A method with fewer than ``min_seeds`` seeds is an error, unless ``borrow``: it then gets, per metric, the
    largest spread measured on the methods that have enough seeds, and ``seed_spread`` says so.
    """
    import statistics

    from tvr_bench.bench.records import flatten_record

    by_method: dict[str, list[dict]] = {}
    for r in records:
        by_method.setdefault(r["method"], []).append(r)
    out_records, method_tol, spread = [], {}, {}
    stds: dict[str, dict[str, float]] = {}
    for method, recs in sorted(by_method.items()):
        seeds = sorted(r["seed"] for r in recs)
        if reference_seed not in seeds:
            raise ConfigError(f"build_baseline: {method} has no record for reference seed {reference_seed}")
        out_records.append(next(r for r in recs if r["seed"] == reference_seed))
        spread[method] = {"seeds": seeds}
        if len(seeds) < min_seeds:
            if not borrow:
                raise ConfigError(f"build_baseline: {method} has {len(seeds)} seed(s) {seeds}; need >= {min_seeds} "
                                  "for a spread (or borrow the largest measured spread)")
            continue
        flat = [flatten_record(r) for r in recs]
        stds[method] = {}
        for d in DIRECTIONS:
            for m in RANK_METRICS:
                vals = [f[f"{d}_{m}"] for f in flat if isinstance(f.get(f"{d}_{m}"), (int, float))]
                if len(vals) >= 2:
                    stds[method][f"{d}.{m}"] = statistics.stdev(vals)
                    spread[method][f"{d}.{m}"] = {"mean": round(statistics.fmean(vals), 3),
                                                  "std": round(stds[method][f"{d}.{m}"], 3), "n": len(vals)}
    if not stds:
        raise ConfigError(f"build_baseline: no method has >= {min_seeds} seeds; nothing to measure a spread on")
    pooled: dict[str, float] = {}
    typical: dict[str, float] = {}  # median std over methods: a floor, since 3 seeds can show a spread of ~0
    for key in {k_ for per in stds.values() for k_ in per}:
        values = [per[key] for per in stds.values() if key in per]
        pooled[key] = max(values)
        typical[key] = statistics.median(values)

    def tolerance(key: str, sd: float) -> dict:
        default = DEFAULT_TOLERANCES[key.rpartition(".")[2]]
        allowed = max(default.abs, k * sd, k * typical[key])
        if key.endswith("MdR"):
            allowed = float(math.ceil(allowed))
        return {"abs": round(allowed, 2), "rel": default.rel}

    for method in by_method:
        if method in stds:
            method_tol[method] = {key: tolerance(key, sd) for key, sd in stds[method].items()}
        else:
            method_tol[method] = {key: tolerance(key, sd) for key, sd in pooled.items()}
            spread[method]["borrowed"] = (f"fewer than {min_seeds} seeds: tolerances use the largest std measured on "
                                          f"{', '.join(sorted(stds))}")
    return {
        "schema_version": 1,
        "description": description,
        "notes": f"records: seed {reference_seed}; per-method tolerance = max(default, {k:g} x sample std over "
                 f"the seeds listed in seed_spread, {k:g} x the median of that std over methods)",
        "method_tolerances": dict(sorted(method_tol.items())),
        # the tolerances measure training noise across seeds / machines; a paired test over queries does not
        "judge": "tolerance",
        "seed_spread": spread,
        "records": out_records,
    }
