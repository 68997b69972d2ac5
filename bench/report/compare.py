"""Comparison tables of run records: accuracy and query-time cost side by side.

One row per (dataset, method); with several seeds every number is the mean over seeds. A metric cell is
``value [95 % CI]`` when the records keep per-query ranks (else ``mean ± std``, sample std, ``ddof=1``); cost
cells are ``mean ± std``; CSV has separate ``*_mean`` / ``*_std`` / ``*_ci_low`` / ``*_ci_high`` columns.
Columns:

* T2V R@1, R@5, R@10, MdR, MnR; V2T R@1, R@5, R@10, MdR, MnR; T2V RSum
* head parameters, FLOPs per query (text encoding + gallery x per-pair scoring), FLOPs per
  (text, video) pair, peak memory in MiB (its kind, CPU peak RSS or CUDA allocated peak, in the header
  or in a column when rows differ), latency in ms.

Units of the parameter and FLOPs columns are chosen per column so numbers stay readable (``M``,
``k``; ``GFLOPs``, ``MFLOPs``, ``kFLOPs``) and are stated in the header; CSV carries raw numbers
(parameters, FLOPs, bytes, ms).

Records of one dataset evaluated under different protocols (both carry ``protocol.fingerprint`` and
the fingerprints differ) are refused: their numbers are not comparable. A row whose records carry a truthy
``protocol.reduced`` (a test set reduced by opt-in) is marked with a dagger and a footnote.

``published=True`` adds, under each measured (dataset, method) row, the published results of that method on
that dataset (``bench/report/published.py``; tags V, S and P only, never the unverified [R]), marked as published
with tag and source; they take no part in "best" marking. The Markdown report around this table (efficiency
tables, FLOP comparison, figure) is ``bench/report/report.py``; the intervals and best groups come from
``bench/report/uncertainty.py``.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

from tvr_bench.bench.errors import BenchError
from tvr_bench.bench.report import uncertainty as U
from tvr_bench.bench.report.formatting import (FLOP_UNITS, PARAM_UNITS, cell, fmt_fixed, fmt_sig, isnan,
                                               latex_escape, pick_unit)
from tvr_bench.bench.records import (
    record_key,
    record_label,
    records_to_frame,
    validate_record,
)

__all__ = ["comparison_table", "check_same_protocol", "FLOPS_CONVENTION", "REDUCED_MARK"]

REDUCED_MARK = "†"

FLOPS_CONVENTION = (
    "FLOPs counted with torch.utils.flop_counter.FlopCounterMode, FLOPs = 2·MAC, matmul-only; "
    "per query = text encoding + gallery × per-pair scoring"
)

_MEMORY_KIND_NAMES = {"cpu_peak_rss": "CPU peak RSS", "cuda_allocated_peak": "CUDA allocated peak"}

# (raw column, display name, kind) -- kind drives formatting and the "best" direction
_METRIC_COLS = [(f"{d}_{m}", f"{d.upper()} {m}", m) for d in ("t2v", "v2t") for m in ("R@1", "R@5", "R@10", "MdR", "MnR")]
_METRIC_COLS.append(("t2v_RSum", "T2V RSum", "RSum"))
_COST_COLS = ["params_head", "flops_per_query", "flops_score_per_pair", "memory_peak_bytes", "latency_ms"]
_CSV_EXTRA = ["v2t_RSum"]  # CSV only
_HIGHER_BETTER = {"R@1", "R@5", "R@10", "RSum"}


_FORMATS = {"markdown": "markdown", "md": "markdown", "csv": "csv", "latex": "latex", "tex": "latex"}


# --------------------------------------------------------------------------------------------------
# checks
# --------------------------------------------------------------------------------------------------


def check_same_protocol(records: Sequence[dict]) -> None:
    """Raise :class:`BenchError` if two records of the same dataset carry different protocol fingerprints."""
    first: dict[str, dict] = {}
    for rec in records:
        proto = rec.get("protocol")
        if not isinstance(proto, dict) or "fingerprint" not in proto:
            continue
        ds = rec["dataset"]
        if ds not in first:
            first[ds] = rec
            continue
        ref = first[ds]
        if ref["protocol"]["fingerprint"] != proto["fingerprint"]:
            raise BenchError(
                f"records {record_label(ref)} (protocol fingerprint {ref['protocol']['fingerprint']}) and "
                f"{record_label(rec)} (protocol fingerprint {proto['fingerprint']}) were evaluated under "
                f"different protocols on dataset {ds!r}; refusing to put them in one table"
            )


def _prepare(records: Iterable[dict]) -> list[dict]:
    records = list(records)
    if not records:
        raise BenchError("no run records to compare")
    seen: dict[tuple, dict] = {}
    for rec in records:
        validate_record(rec)
        key = record_key(rec)
        if key in seen:
            raise BenchError(f"duplicate run record {record_label(rec)}: each (method, dataset, seed, kind) may appear once")
        seen[key] = rec
    check_same_protocol(records)
    return records


# --------------------------------------------------------------------------------------------------
# aggregation
# --------------------------------------------------------------------------------------------------


def _per_seed_frame(records: list[dict]):
    """One row per (dataset, method, seed): a run record's values, completed by a cost record's."""
    df = records_to_frame(records)
    df["_kind_order"] = (df["kind"] != "run").astype(int)  # run records first, so .first() prefers them
    df = df.sort_values(["dataset", "method", "seed", "_kind_order"], kind="stable")
    value_cols = [c for c, _, _ in _METRIC_COLS] + _CSV_EXTRA + _COST_COLS + ["gallery_size", "memory_kind"]
    per_seed = df.groupby(["dataset", "method", "seed"], sort=True, dropna=False)[value_cols].first().reset_index()
    for c in value_cols:
        if c != "memory_kind":
            per_seed[c] = per_seed[c].astype("float64")
    return per_seed


def _aggregate(per_seed):
    """Mean / std (ddof=1; NaN for one seed) / count per (dataset, method) and numeric column."""
    import pandas as pd

    num_cols = [c for c, _, _ in _METRIC_COLS] + _CSV_EXTRA + _COST_COLS + ["gallery_size"]
    g = per_seed.groupby(["dataset", "method"], sort=True)
    out = pd.DataFrame({"n_seeds": g["seed"].nunique()})
    for c in num_cols:
        out[f"{c}_mean"] = g[c].mean()
        out[f"{c}_std"] = g[c].std(ddof=1)
        out[f"{c}_n"] = g[c].count()
    out["memory_kind"] = g["memory_kind"].agg(lambda s: ", ".join(sorted({k for k in s if isinstance(k, str)})) or None)
    return out.reset_index()


# --------------------------------------------------------------------------------------------------
# table building
# --------------------------------------------------------------------------------------------------


def _cost_specs(values_of):
    """Display specs for the cost columns: (raw column, header, scale, formatter, lower-is-better)."""
    p_scale, p_unit = pick_unit(values_of("params_head"), PARAM_UNITS)
    q_scale, q_unit = pick_unit(values_of("flops_per_query"), FLOP_UNITS)
    s_scale, s_unit = pick_unit(values_of("flops_score_per_pair"), FLOP_UNITS)
    return [
        ("params_head", f"Head params ({p_unit})" if p_unit else "Head params", p_scale),
        ("flops_per_query", f"{q_unit}/query", q_scale),
        ("flops_score_per_pair", f"{s_unit}/pair", s_scale),
        ("memory_peak_bytes", "Peak mem (MiB)", float(1 << 20)),
        ("latency_ms", "Latency (ms)", 1.0),
    ]


def _memory_header(kinds: list) -> tuple[str, bool]:
    """Header for the memory column, and whether a separate memory-kind column is needed."""
    uniq = sorted({k for k in kinds if isinstance(k, str) and k})
    if len(uniq) == 1 and "," not in uniq[0]:
        return f"Peak mem (MiB, {_MEMORY_KIND_NAMES.get(uniq[0], uniq[0])})", False
    if not uniq:
        return "Peak mem (MiB)", False
    return "Peak mem (MiB)", True


def _reduced(records: list[dict]) -> dict[tuple[str, str], list[str]]:
    """(dataset, method) -> descriptions of the opt-in test-set reductions of its records."""
    out: dict[tuple[str, str], list[str]] = {}
    for r in records:
        red = (r.get("protocol") or {}).get("reduced") if isinstance(r.get("protocol"), dict) else None
        if not red:
            continue
        if isinstance(red, dict):
            desc = ", ".join(f"{k}={v}" for k, v in list(red.items())[:6])
        else:
            desc = "" if red is True else str(red)
        lst = out.setdefault((r["dataset"], r["method"]), [])
        if desc and desc not in lst:
            lst.append(desc)
    return out


def _published_display_rows(dataset: str, method: str, headers: list[str], na: str) -> list[dict]:
    from tvr_bench.bench.report.published import published_for

    rows = []
    for pub in published_for(method, dataset):  # V / S / P only
        label = f"{method} (published [{pub.tag}] {pub.source}" + (f"; {pub.variant}" if pub.variant else "") + ")"
        row = {h: na for h in headers}
        row.update({"Dataset": dataset, "Method": label})
        for col, header, _kind in _METRIC_COLS:
            d, m = col.split("_", 1)
            v = (pub.t2v if d == "t2v" else pub.v2t).get(m)
            if v is not None:
                row[header] = fmt_fixed(v)
        rows.append(row)
    return rows


def _display(records: list[dict], aggregate_seeds: bool, latex: bool, published: bool = False):
    """Return (string DataFrame for display, per-row numeric means for 'best' marking, metadata)."""
    import pandas as pd

    pm = r"$\pm$" if latex else "±"
    na = "--" if latex else "–"
    per_seed = _per_seed_frame(records)
    if aggregate_seeds:
        agg = _aggregate(per_seed)
        rows = agg
        mean = lambda r, c: r[f"{c}_mean"]  # noqa: E731
        std = lambda r, c: r[f"{c}_std"]  # noqa: E731
        cnt = lambda r, c: r[f"{c}_n"]  # noqa: E731
        values_of = lambda c: list(agg[f"{c}_mean"])  # noqa: E731
    else:
        rows = per_seed
        mean = lambda r, c: r[c]  # noqa: E731
        std = lambda r, c: float("nan")  # noqa: E731
        cnt = lambda r, c: 1  # noqa: E731
        values_of = lambda c: list(per_seed[c])  # noqa: E731

    cost_specs = _cost_specs(values_of)
    mem_header, mem_kind_col = _memory_header(list(rows["memory_kind"]))
    groups = U.rank_arrays(records, per_seed=not aggregate_seeds)
    cis = U.intervals(groups)
    best = U.best_groups(groups) if aggregate_seeds else {}
    metric_header = {col: header for col, header, _ in _METRIC_COLS}

    reduced = _reduced(records)
    out_rows, means_rows, best_cells = [], [], set()
    for _, r in rows.iterrows():
        mark = f" {REDUCED_MARK}" if (r["dataset"], r["method"]) in reduced else ""
        row = {"Dataset": r["dataset"], "Method": r["method"] + mark}
        if aggregate_seeds:
            row["n_seeds"] = str(int(r["n_seeds"]))
        else:
            row["Seed"] = str(int(r["seed"]))
        means = {}
        key = (r["dataset"], r["method"]) + (() if aggregate_seeds else (int(r["seed"]),))
        for col, header, _kind in _METRIC_COLS:
            m = mean(r, col)
            if key in cis and not isnan(m):
                lo, hi = cis[key][col]
                row[header] = f"{fmt_fixed(m)} [{fmt_fixed(lo)}, {fmt_fixed(hi)}]"
            else:
                row[header] = cell(m, std(r, col), cnt(r, col), fmt_fixed, pm=pm, na=na, force_pm=True)
            means[header] = None if isnan(m) else round(float(m), 1)
            if r["method"] in best.get((r["dataset"], col), ()):
                best_cells.add((len(out_rows), header))
        for col, header, scale in cost_specs:
            if col == "memory_peak_bytes":
                header = mem_header
            m, s = mean(r, col), std(r, col)
            m_s = None if isnan(m) else float(m) / scale
            s_s = None if isnan(s) else float(s) / scale
            row[header] = cell(
                float("nan") if m_s is None else m_s,
                float("nan") if s_s is None else s_s,
                cnt(r, col),
                fmt_sig,
                pm=pm,
                na=na,
                force_pm=False,
            )
            means[header] = m_s
            if col == "memory_peak_bytes" and mem_kind_col:
                kind = r["memory_kind"]
                row["Memory kind"] = (
                    ", ".join(_MEMORY_KIND_NAMES.get(k.strip(), k.strip()) for k in kind.split(","))
                    if isinstance(kind, str)
                    else na
                )
        out_rows.append(row)
        means_rows.append(means)
        if published:
            for pub_row in _published_display_rows(r["dataset"], r["method"], list(row), na):
                out_rows.append(pub_row)
                means_rows.append({h: None for h in means})  # published numbers are never "best"
    table = pd.DataFrame(out_rows)
    meta = {
        "mem_kinds": sorted({k.strip() for k in rows["memory_kind"] if isinstance(k, str) for k in k.split(",")}),
        "galleries": _galleries(per_seed),
        "conventions": sorted(
            {
                r["cost"]["flops"]["convention"]
                for r in records
                if isinstance(r.get("cost"), dict) and isinstance(r["cost"].get("flops", {}).get("convention"), str)
            }
        ),
        "latency_dict": any(isinstance((r.get("cost") or {}).get("latency_ms"), dict) for r in records),
        "reduced": reduced,
        "published": published,
        "intervals": bool(cis),
        "without_ranks": sorted({f"{k[1]}/{k[0]}" for k, g in groups.items() if g.by_direction is None}),
        "multi_seed": aggregate_seeds and any(len(g.seeds) > 1 for g in groups.values()),
        # {(dataset, header): methods}: best and not separable from it (metric columns of ranked datasets)
        "best": {(ds, metric_header[col]): ms for (ds, col), ms in best.items() if col in metric_header},
        "best_cells": best_cells,  # {(row index, header)} to bold
    }
    return table, means_rows, meta


def _galleries(per_seed) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for ds, g in per_seed.groupby("dataset", sort=True):
        sizes = sorted({int(v) for v in g["gallery_size"] if not isnan(v)})
        if sizes:
            out[str(ds)] = sizes
    return out


def _footer(meta: dict, aggregate_seeds: bool) -> list[str]:
    lines = []
    gal = meta["galleries"]
    gal_txt = ""
    if gal:
        gal_txt = " (gallery: " + "; ".join(f"{ds} {'/'.join(map(str, s))} videos" for ds, s in gal.items()) + ")"
    kinds = meta["mem_kinds"]
    kind_txt = ", ".join(f"{_MEMORY_KIND_NAMES.get(k, k)} (`{k}`)" for k in kinds) if kinds else "n/a"
    lines.append(f"Conventions: {FLOPS_CONVENTION}{gal_txt}; memory kind: {kind_txt}; MiB = 2^20 bytes.")
    if meta["conventions"]:
        lines.append("Recorded FLOPs convention: " + " | ".join(meta["conventions"]) + ".")
    lat = "latency in ms"
    if meta["latency_dict"]:
        lat += " (median when several statistics are recorded)"
    lines.append(f"R@K in percent (higher is better); MdR / MnR are 1-based ranks (lower is better); {lat}.")
    if meta.get("intervals"):
        over = ("test queries and, where n_seeds > 1, seeds (two-stage)" if meta.get("multi_seed")
                else "test queries")
        lines.append(f"Metric cells: value [95 % CI], percentile bootstrap over {over}, from the per-query "
                     "ranks in the records. Cost cells with ± are mean ± std over seeds.")
    if meta.get("best"):
        lines.append("**Bold**: the best value of a dataset's column and every method a paired test on the same "
                     "queries cannot separate from it (Holm-adjusted, alpha = 0.05): bold values are not ranked "
                     "against each other.")
    if meta.get("without_ranks"):
        lines.append("No interval and no best marking for: " + ", ".join(meta["without_ranks"]) + " (records "
                     "written before schema 2 keep no per-query ranks; rerun them); their cells are mean ± std "
                     "over seeds (sample std, ddof=1), a single value meaning one seed.")
    elif aggregate_seeds and not meta.get("intervals"):
        lines.append("Values are mean ± std over seeds (sample std, ddof=1); a single value means one seed.")
    if meta.get("reduced"):
        parts = [f"{ds}/{m}" + (f" ({'; '.join(d)})" if d else "") for (ds, m), d in sorted(meta["reduced"].items())]
        lines.append(f"{REDUCED_MARK} Test set reduced by opt-in (protocol.reduced): not the full protocol, not "
                     "comparable with published numbers: " + ", ".join(parts) + ".")
    if meta.get("published"):
        lines.append("Rows 'published [T] source' are published numbers (bench/report/published.py, "
                     "docs/published.md), not measured here: [V] official repository, [S] another "
                     "paper's table, [P] the method's own paper text; unverified [R] recollections are never shown.")
    return lines


def _best_mask(table, means_rows) -> dict[tuple[int, str], bool]:
    """(row index, header) -> True where the value is the best of its dataset block (direction-aware)."""
    best: dict[tuple[int, str], bool] = {}
    metric_kind = {h: k for _, h, k in _METRIC_COLS}
    datasets = list(table["Dataset"])
    headers = list(means_rows[0].keys()) if means_rows else []
    for ds in dict.fromkeys(datasets):
        idx = [i for i, d in enumerate(datasets) if d == ds]
        if len(idx) < 2:
            continue
        for h in headers:
            vals = [(i, means_rows[i][h]) for i in idx if means_rows[i][h] is not None]
            if len(vals) < 2:
                continue
            higher = metric_kind.get(h) in _HIGHER_BETTER
            target = max(v for _, v in vals) if higher else min(v for _, v in vals)
            if all(math.isclose(v, target, rel_tol=1e-12, abs_tol=1e-12) for _, v in vals):
                continue  # everyone ties: nothing to highlight
            for i, v in vals:
                if math.isclose(v, target, rel_tol=1e-12, abs_tol=1e-12):
                    best[(i, h)] = True
    return best


def _markdown(records, aggregate_seeds: bool, published: bool = False) -> str:
    table, means_rows, meta = _display(records, aggregate_seeds, latex=False, published=published)
    for i, header in meta["best_cells"]:
        table.at[i, header] = f"**{table.at[i, header]}**"
    text_cols = {"Dataset", "Method", "Memory kind"}
    colalign = tuple("left" if c in text_cols else "right" for c in table.columns)
    md = table.to_markdown(index=False, disable_numparse=True, colalign=colalign)
    return md + "\n\n" + "\n\n".join(_footer(meta, aggregate_seeds)) + "\n"


def _latex(records, aggregate_seeds: bool, published: bool = False) -> str:
    table, means_rows, meta = _display(records, aggregate_seeds, latex=True, published=published)
    # metric columns: the tested best groups only (never the bare point maximum); cost columns: the lowest value
    metric_headers = {h for _, h, _ in _METRIC_COLS}
    best = {cell: True for cell in meta["best_cells"]}
    best.update({cell: v for cell, v in _best_mask(table, means_rows).items() if cell[1] not in metric_headers})
    esc = table.copy()
    for j, h in enumerate(esc.columns):
        for i in range(len(esc)):
            v = esc.iat[i, j]
            if h in ("Dataset", "Method", "Memory kind"):
                v = latex_escape(v)
            if best.get((i, h)):
                v = rf"\textbf{{{v}}}"
            esc.iat[i, j] = v
    esc.columns = [latex_escape(c) for c in esc.columns]
    n_left = 2
    col_format = "l" * n_left + "r" * (len(esc.columns) - n_left)
    body = esc.to_latex(index=False, escape=False, column_format=col_format)
    comments = [f"% {latex_escape(line).replace('±', '+/-')}" for line in _footer(meta, aggregate_seeds)]
    comments.append("% Bold: metric columns, the best and every value a paired test cannot separate from it; cost "
                    "columns, the lowest per dataset. Needs booktabs.")
    return "\n".join(comments) + "\n" + body


def _csv(records, aggregate_seeds: bool, published: bool = False) -> str:
    import pandas as pd

    raw_cols = [c for c, _, _ in _METRIC_COLS] + _CSV_EXTRA + _COST_COLS + ["gallery_size"]
    per_seed = _per_seed_frame(records)
    if aggregate_seeds:
        agg = _aggregate(per_seed)
        cols = ["dataset", "method", "n_seeds"]
        for c in raw_cols:
            cols += [f"{c}_mean", f"{c}_std"]
        cols.append("memory_kind")
        out = agg[cols].copy()
        suffix = "_mean"
    else:
        cols = ["dataset", "method", "seed"] + raw_cols + ["memory_kind"]
        out = per_seed[cols].copy()
        out["seed"] = out["seed"].astype(int)
        suffix = ""
    cis = U.intervals(U.rank_arrays(records, per_seed=not aggregate_seeds))
    if cis:  # 95 % bootstrap bounds next to each metric (empty where a record keeps no per-query ranks)
        keys = [(d, m) + (() if aggregate_seeds else (int(s),))
                for d, m, s in zip(out["dataset"], out["method"], out["seed"] if not aggregate_seeds else out["method"])]
        for col, _, _ in _METRIC_COLS:
            at = list(out.columns).index(f"{col}{suffix}") + (2 if aggregate_seeds else 1)
            out.insert(at, f"{col}_ci_high", [cis[k][col][1] if k in cis else float("nan") for k in keys])
            out.insert(at, f"{col}_ci_low", [cis[k][col][0] if k in cis else float("nan") for k in keys])
    reduced = _reduced(records)
    if reduced:
        out["reduced"] = [(d, m) in reduced for d, m in zip(out["dataset"], out["method"])]
    if published:
        from tvr_bench.bench.report.published import published_for

        out["source"] = "measured"
        extra = []
        for ds, m in dict.fromkeys(zip(out["dataset"], out["method"])):
            for pub in published_for(m, ds):
                row = {"dataset": ds, "method": m, "source": f"published [{pub.tag}] {pub.source}"
                       + (f"; {pub.variant}" if pub.variant else "")}
                for d, block in (("t2v", pub.t2v), ("v2t", pub.v2t)):
                    for k, v in block.items():
                        row[f"{d}_{k}{suffix}"] = v
                extra.append(row)
        if extra:
            out = pd.concat([out, pd.DataFrame(extra)], ignore_index=True)
    return out.to_csv(index=False, lineterminator="\n")


def comparison_table(records: Iterable[dict], *, fmt: str = "markdown", aggregate_seeds: bool = True,
                     published: bool = False) -> str:
    """Render records as a comparison table.

    ``fmt``: ``"markdown"`` (or ``"md"``; pipe table plus a conventions footer), ``"csv"`` (raw numbers,
    ``*_mean`` / ``*_std`` columns when aggregating) or ``"latex"`` (or ``"tex"``; a ``tabular`` with the
    best value of each dataset block in bold). ``aggregate_seeds=False`` gives one row per seed.
    ``published=True`` adds the published results (tags V/S/P) of each measured (dataset, method), labelled.
    Raises :class:`BenchError` on no records, duplicates, or mixed protocol fingerprints of a dataset.
    """
    kind = _FORMATS.get(str(fmt).lower())
    if kind is None:
        raise BenchError(f"unknown table format {fmt!r}; choose one of markdown, csv, latex")
    recs = _prepare(records)
    if kind == "markdown":
        return _markdown(recs, aggregate_seeds, published)
    if kind == "csv":
        return _csv(recs, aggregate_seeds, published)
    return _latex(recs, aggregate_seeds, published)
