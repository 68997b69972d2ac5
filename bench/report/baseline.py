"""Baseline files of ``bench check``: loading one (records + tolerance overrides) and building one from the
seed-to-seed spread of a multi-seed run (``bench baseline``)."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from tvr_bench.bench.errors import ConfigError, RecordError, read_user_text
from tvr_bench.bench.records import DIRECTIONS, RANK_METRICS, index_records, load_records
from tvr_bench.bench.report.tolerance import DEFAULT_TOLERANCES, Tolerance, coerce_tolerances

__all__ = ["Baseline", "load_baseline", "build_baseline"]



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
    text = read_user_text(p, RecordError, str(p), "baseline")
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise RecordError(f"{p}: baseline is not valid JSON: {e}") from e

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
    records = list(index_records(items, lambda i: f"{p}" if where is None else f"{p}: {where}[{i}]").values())
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
