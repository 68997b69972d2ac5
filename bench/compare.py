"""Comparison tables of run records: accuracy and query-time cost side by side.

One row per (dataset, method); with several seeds every number is the mean over seeds, shown as
``mean ± std`` (sample std, ``ddof=1``) in Markdown / LaTeX and as separate ``*_mean`` / ``*_std``
columns in CSV. Columns:

* T2V R@1, R@5, R@10, MdR, MnR; V2T R@1, R@5, R@10, MdR, MnR; T2V RSum
* head parameters, FLOPs per query (text encoding + gallery x per-pair scoring), FLOPs per
  (text, video) pair, peak memory in MiB (its kind, CPU peak RSS or CUDA allocated peak, in the header
  or in a column when rows differ), latency in ms.

Units of the parameter and FLOPs columns are chosen per column so numbers stay readable (``M``,
``k``; ``GFLOPs``, ``MFLOPs``, ``kFLOPs``) and are stated in the header; CSV carries raw numbers
(parameters, FLOPs, bytes, ms).

Records of one dataset evaluated under different protocols (both carry ``protocol.fingerprint`` and
the fingerprints differ) are refused: their numbers are not comparable.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable, Sequence

from .errors import BenchError
from .records import (
    atomic_write_text,
    record_key,
    record_label,
    records_to_frame,
    validate_record,
)

__all__ = ["comparison_table", "write_comparison", "check_same_protocol", "FLOPS_CONVENTION"]

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

_PARAM_UNITS = [(1e9, "B"), (1e6, "M"), (1e3, "k"), (1.0, "")]
_FLOP_UNITS = [(1e12, "TFLOPs"), (1e9, "GFLOPs"), (1e6, "MFLOPs"), (1e3, "kFLOPs"), (1.0, "FLOPs")]

_FORMATS = {"markdown": "markdown", "md": "markdown", "csv": "csv", "latex": "latex", "tex": "latex"}
_EXT = {"markdown": "md", "csv": "csv", "latex": "tex"}


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
# formatting helpers
# --------------------------------------------------------------------------------------------------


def _pick_unit(values, units):
    vals = [abs(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    top = max(vals) if vals else None
    if top is None or top == 0:
        return units[1] if len(units) > 1 else units[0]
    for scale, name in units:
        if top >= scale:
            return scale, name
    return units[-1]


def _isnan(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


def _fmt_fixed(v, decimals=1) -> str:
    return f"{v:.{decimals}f}"


def _fmt_sig(v) -> str:
    """Compact number with ~3 significant digits, no scientific notation in the usual range."""
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    if a >= 1e-3:
        return f"{v:.3g}"
    return f"{v:.2e}"


def _cell(mean, std, n, fmt, *, pm: str, na: str, force_pm: bool) -> str:
    if _isnan(mean):
        return na
    s = fmt(mean)
    if n is not None and n > 1 and not _isnan(std) and (force_pm or std > 0):
        s += f" {pm} {fmt(std)}"
    return s


def _latex_escape(s: str) -> str:
    repl = {
        "\\": r"\textbackslash{}",
        "&": r"\&",
        "%": r"\%",
        "$": r"\$",
        "#": r"\#",
        "_": r"\_",
        "{": r"\{",
        "}": r"\}",
        "~": r"\textasciitilde{}",
        "^": r"\textasciicircum{}",
    }
    return "".join(repl.get(ch, ch) for ch in str(s))


# --------------------------------------------------------------------------------------------------
# table building
# --------------------------------------------------------------------------------------------------


def _cost_specs(values_of):
    """Display specs for the cost columns: (raw column, header, scale, formatter, lower-is-better)."""
    p_scale, p_unit = _pick_unit(values_of("params_head"), _PARAM_UNITS)
    q_scale, q_unit = _pick_unit(values_of("flops_per_query"), _FLOP_UNITS)
    s_scale, s_unit = _pick_unit(values_of("flops_score_per_pair"), _FLOP_UNITS)
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


def _display(records: list[dict], aggregate_seeds: bool, latex: bool):
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

    out_rows, means_rows = [], []
    for _, r in rows.iterrows():
        row = {"Dataset": r["dataset"], "Method": r["method"]}
        if aggregate_seeds:
            row["n_seeds"] = str(int(r["n_seeds"]))
        else:
            row["Seed"] = str(int(r["seed"]))
        means = {}
        for col, header, _kind in _METRIC_COLS:
            m = mean(r, col)
            row[header] = _cell(m, std(r, col), cnt(r, col), _fmt_fixed, pm=pm, na=na, force_pm=True)
            means[header] = None if _isnan(m) else round(float(m), 1)
        for col, header, scale in cost_specs:
            if col == "memory_peak_bytes":
                header = mem_header
            m, s = mean(r, col), std(r, col)
            m_s = None if _isnan(m) else float(m) / scale
            s_s = None if _isnan(s) else float(s) / scale
            row[header] = _cell(
                float("nan") if m_s is None else m_s,
                float("nan") if s_s is None else s_s,
                cnt(r, col),
                _fmt_sig,
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
    }
    return table, means_rows, meta


def _galleries(per_seed) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for ds, g in per_seed.groupby("dataset", sort=True):
        sizes = sorted({int(v) for v in g["gallery_size"] if not _isnan(v)})
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
    if aggregate_seeds:
        lines.append("Values are mean ± std over seeds (sample std, ddof=1); a single value means one seed.")
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


def _markdown(records, aggregate_seeds: bool) -> str:
    table, means_rows, meta = _display(records, aggregate_seeds, latex=False)
    text_cols = {"Dataset", "Method", "Memory kind"}
    colalign = tuple("left" if c in text_cols else "right" for c in table.columns)
    md = table.to_markdown(index=False, disable_numparse=True, colalign=colalign)
    return md + "\n\n" + "\n\n".join(_footer(meta, aggregate_seeds)) + "\n"


def _latex(records, aggregate_seeds: bool) -> str:
    table, means_rows, meta = _display(records, aggregate_seeds, latex=True)
    best = _best_mask(table, means_rows)
    esc = table.copy()
    for j, h in enumerate(esc.columns):
        for i in range(len(esc)):
            v = esc.iat[i, j]
            if h in ("Dataset", "Method", "Memory kind"):
                v = _latex_escape(v)
            if best.get((i, h)):
                v = rf"\textbf{{{v}}}"
            esc.iat[i, j] = v
    esc.columns = [_latex_escape(c) for c in esc.columns]
    n_left = 2
    col_format = "l" * n_left + "r" * (len(esc.columns) - n_left)
    body = esc.to_latex(index=False, escape=False, column_format=col_format)
    comments = [f"% {_latex_escape(line).replace('±', '+/-')}" for line in _footer(meta, aggregate_seeds)]
    comments.append("% Bold: best per dataset and column (R@K / RSum higher, ranks and cost lower). Needs booktabs.")
    return "\n".join(comments) + "\n" + body


def _csv(records, aggregate_seeds: bool) -> str:
    raw_cols = [c for c, _, _ in _METRIC_COLS] + _CSV_EXTRA + _COST_COLS + ["gallery_size"]
    per_seed = _per_seed_frame(records)
    if aggregate_seeds:
        agg = _aggregate(per_seed)
        cols = ["dataset", "method", "n_seeds"]
        for c in raw_cols:
            cols += [f"{c}_mean", f"{c}_std"]
        cols.append("memory_kind")
        return agg[cols].to_csv(index=False, lineterminator="\n")
    cols = ["dataset", "method", "seed"] + raw_cols + ["memory_kind"]
    out = per_seed[cols].copy()
    out["seed"] = out["seed"].astype(int)
    return out.to_csv(index=False, lineterminator="\n")


def comparison_table(records: Iterable[dict], *, fmt: str = "markdown", aggregate_seeds: bool = True) -> str:
    """Render records as a comparison table.

    ``fmt``: ``"markdown"`` (or ``"md"``; pipe table plus a conventions footer), ``"csv"`` (raw numbers,
    ``*_mean`` / ``*_std`` columns when aggregating) or ``"latex"`` (or ``"tex"``; a ``tabular`` with the
    best value of each dataset block in bold). ``aggregate_seeds=False`` gives one row per seed.
    Raises :class:`BenchError` on no records, duplicates, or mixed protocol fingerprints of a dataset.
    """
    kind = _FORMATS.get(str(fmt).lower())
    if kind is None:
        raise BenchError(f"unknown table format {fmt!r}; choose one of markdown, csv, latex")
    recs = _prepare(records)
    if kind == "markdown":
        return _markdown(recs, aggregate_seeds)
    if kind == "csv":
        return _csv(recs, aggregate_seeds)
    return _latex(recs, aggregate_seeds)


def write_comparison(
    records: Iterable[dict],
    out_dir: str | os.PathLike,
    formats: Sequence[str] = ("md", "csv", "tex"),
    *,
    aggregate_seeds: bool = True,
    stem: str = "comparison",
) -> list[Path]:
    """Write ``<stem>.md`` / ``.csv`` / ``.tex`` into ``out_dir`` atomically; return the paths.

    Every table is rendered before anything is written, so an error leaves ``out_dir`` untouched.
    """
    recs = list(records)
    kinds = []
    for f in formats:
        k = _FORMATS.get(str(f).lower())
        if k is None:
            raise BenchError(f"unknown table format {f!r}; choose from md, csv, tex")
        if k not in kinds:
            kinds.append(k)
    texts = [(k, comparison_table(recs, fmt=k, aggregate_seeds=aggregate_seeds)) for k in kinds]
    out = Path(out_dir)
    return [atomic_write_text(out / f"{stem}.{_EXT[k]}", text) for k, text in texts]
