"""The result of a sweep (``--set key=a,b,c``): one metric with its 95 % interval per (method, swept value), as a
table and as a figure (the metric against the swept value, one line per method).

The records of a sweep live in one folder per point (``bench/sweep.py``); a record's point is read from its own
resolved config, never from the folder name, so a renamed or merged folder still reports the right value. The
intervals are those of ``bench compare``: bootstrap over queries, two-stage over seeds and queries when a point
has several seeds (``bench/report/stats.py``).
"""

from __future__ import annotations

import io
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from tvr_bench.bench.atomic import atomic_write_bytes, atomic_write_text
from tvr_bench.bench.errors import BenchError, RecordError
from tvr_bench.bench.records import load_record, record_label, skipped_in_folder
from tvr_bench.bench.report import stats as S
from tvr_bench.bench.report.uncertainty import DIRECTIONS, METRICS, rank_arrays

__all__ = ["SweepRow", "config_value", "load_sweep", "render_table", "sweep_rows", "sweep_table", "write_sweep"]

FIGURE_FORMATS = ("svg", "pdf", "png")


def config_value(rec: dict, key: str) -> Any:
    """The value of dotted ``key`` in a record's resolved config (RecordError naming the record if absent)."""
    node: Any = rec.get("config", {})
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise RecordError(f"{record_label(rec)}: its config has no key {key!r} (not a record of this sweep?)")
        node = node[part]
    return node


def load_sweep(path: str | os.PathLike, keys: Sequence[str]) -> list[dict]:
    """Every run record under ``path`` (recursively; ``_``/``.`` names skipped, as ``load_records`` does); two
    records of the same (method, dataset, seed, swept values) are an error naming both files."""
    root = Path(path)
    if not root.exists():
        raise RecordError(f"{root}: no such record file or folder")
    files = [root] if root.is_file() else sorted(f for f in root.rglob("*.json")
                                                 if f.is_file() and not skipped_in_folder(f.relative_to(root)))
    seen: dict[tuple, Path] = {}
    out = []
    for f in files:
        rec = load_record(f)
        if rec.get("kind") != "run":
            continue
        ident = (rec["method"], rec["dataset"], int(rec["seed"]), tuple(_hashable(config_value(rec, k)) for k in keys))
        if ident in seen:
            raise RecordError(f"{f}: the same run as {seen[ident]} ({record_label(rec)} at the same "
                              f"{', '.join(keys)})")
        seen[ident] = f
        out.append(rec)
    if not out:
        raise RecordError(f"{root}: no run records")
    return out


def _hashable(value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


@dataclass(frozen=True)
class SweepRow:
    dataset: str
    method: str
    values: tuple  # the swept keys' values, in the order of ``keys``
    seeds: tuple[int, ...]
    value: float
    ci: tuple[float, float] | None  # None: the records keep no per-query ranks


def _check_metric(metric: str) -> tuple[str, str]:
    direction, _, name = metric.partition("/")
    if direction not in DIRECTIONS or name not in METRICS or name == "RSum":
        choices = ", ".join(f"{d}/{m}" for d in DIRECTIONS for m in METRICS if m != "RSum")
        raise BenchError(f"unknown sweep metric {metric!r}; choose from {choices}")
    return direction, name


def sweep_rows(records: Iterable[dict], keys: Sequence[str], metric: str = "t2v/R@1") -> list[SweepRow]:
    """One row per (dataset, method, swept values), sorted by dataset, method, then the values."""
    direction, name = _check_metric(metric)
    groups: dict[tuple, list[dict]] = {}
    for rec in records:
        vals = tuple(_hashable(config_value(rec, k)) for k in keys)
        groups.setdefault((rec["dataset"], rec["method"], vals), []).append(rec)
    rows = []
    for (ds, method, vals), recs in groups.items():
        ranks = rank_arrays(recs)[(ds, method)]
        arr = ranks.of(direction)
        if arr is None:
            value = sum(float(r["metrics"][direction][name]) for r in recs) / len(recs)
            ci = None
        else:
            value = S.metric_from_ranks(arr, name)
            ci = S.bootstrap_ci(arr, name)
        rows.append(SweepRow(ds, method, vals, ranks.seeds, value, ci))
    return sorted(rows, key=lambda r: (r.dataset, r.method, tuple(_sort_key(v) for v in r.values)))


def _sort_key(v: Any) -> tuple:
    return (0, float(v), "") if isinstance(v, (int, float)) and not isinstance(v, bool) else (1, 0.0, str(v))


def _fmt(x: float) -> str:
    return f"{x:.1f}" if math.isfinite(x) else "–"


def sweep_table(records: Iterable[dict], keys: Sequence[str], metric: str = "t2v/R@1", *,
                fmt: str = "github") -> str:
    """The sweep as a table (tabulate ``fmt``): dataset, method, each swept key, seeds, the metric [95 % CI]."""
    return render_table(sweep_rows(records, keys, metric), keys, metric, fmt=fmt)


def render_table(rows: list[SweepRow], keys: Sequence[str], metric: str, *, fmt: str = "github") -> str:
    """:func:`sweep_table` of rows already computed (their intervals are bootstrapped once)."""
    from tabulate import tabulate

    direction, name = _check_metric(metric)
    label = f"{direction.upper()} {name}"
    body = [[r.dataset, r.method, *r.values, ",".join(map(str, r.seeds)),
             _fmt(r.value) + (f" [{_fmt(r.ci[0])}, {_fmt(r.ci[1])}]" if r.ci else " (no ranks: no interval)")]
            for r in rows]
    short = [k.rsplit(".", 1)[-1] for k in keys]
    return tabulate(body, headers=["dataset", "method", *short, "seeds", f"{label} [95 % CI]"], tablefmt=fmt,
                    disable_numparse=True)


def _figure(rows: list[SweepRow], key: str, metric: str):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    matplotlib.rcParams["svg.hashsalt"] = "tvr-bench"  # stable element ids: a re-rendered SVG diffs empty
    datasets = list(dict.fromkeys(r.dataset for r in rows))
    fig, axes = plt.subplots(1, len(datasets), figsize=(6.4 * len(datasets), 4.4), squeeze=False)
    numeric = all(isinstance(r.values[0], (int, float)) and not isinstance(r.values[0], bool) for r in rows)
    ticks = sorted({r.values[0] for r in rows}, key=_sort_key)
    span = (float(ticks[-1]) - float(ticks[0])) or 1.0 if numeric else 1.0
    for ax, ds in zip(axes.flat, datasets):
        methods = list(dict.fromkeys(r.method for r in rows if r.dataset == ds))
        for i, method in enumerate(methods):
            sel = [r for r in rows if r.dataset == ds and r.method == method]
            # spread the methods a little around each x so their error bars do not hide each other
            dodge = (i - (len(methods) - 1) / 2) * 0.012
            xs = [float(r.values[0]) + dodge * span if numeric else ticks.index(r.values[0]) + dodge * len(ticks)
                  for r in sel]
            ys = [r.value for r in sel]
            err = [[r.value - r.ci[0] for r in sel], [r.ci[1] - r.value for r in sel]] if all(r.ci for r in sel) else None
            ax.errorbar(xs, ys, yerr=err, marker="o", ms=4, capsize=3, linewidth=1.3, label=method)
        if numeric:
            ax.set_xticks([float(t) for t in ticks])
            ax.set_xticklabels([str(t) for t in ticks])
        else:
            ax.set_xticks(range(len(ticks)))
            ax.set_xticklabels([str(t) for t in ticks])
        seeds = sorted({len(r.seeds) for r in rows if r.dataset == ds})
        ax.set_title(f"{ds} ({'/'.join(map(str, seeds))} seed{'s' if seeds != [1] else ''} per point)", fontsize=10)
        ax.set_xlabel(key)
        direction, name = _check_metric(metric)
        ax.set_ylabel(f"{direction.upper()} {name}" + (" (%, 95 % CI)" if "R@" in name else " (95 % CI)"))
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="best", frameon=False)
    fig.tight_layout()
    return fig, plt


def write_sweep(rows: list[SweepRow], keys: Sequence[str], out_dir: str | os.PathLike, *,
                metric: str = "t2v/R@1") -> list[Path]:
    """``sweep.md`` / ``sweep.csv`` and the figure (``sweep.svg``/``.pdf``/``.png``, against the first swept key)
    of :func:`sweep_rows` in ``out_dir``; everything is rendered before the first file is written."""
    table_md = render_table(rows, keys, metric) + "\n"
    csv_lines = ["dataset,method," + ",".join(keys) + ",seeds," + f"{metric},ci_low,ci_high"]
    for r in rows:
        lo, hi = r.ci if r.ci else ("", "")
        csv_lines.append(",".join(map(str, [r.dataset, r.method, *r.values, " ".join(map(str, r.seeds)),
                                            r.value, lo, hi])))
    fig, plt = _figure(rows, keys[0], metric)
    blobs = {}
    for ext in FIGURE_FORMATS:
        buf = io.BytesIO()
        # no dates in the files: a re-rendered figure of the same records is the same bytes
        fig.savefig(buf, format=ext, dpi=150, metadata={"svg": {"Date": None}, "pdf": {"CreationDate": None},
                                                        "png": {}}[ext])
        blobs[ext] = buf.getvalue()
    plt.close(fig)
    out = Path(out_dir)
    paths = [atomic_write_text(out / "sweep.md", table_md), atomic_write_text(out / "sweep.csv", "\n".join(csv_lines) + "\n")]
    paths += [atomic_write_bytes(out / f"sweep.{ext}", blob) for ext, blob in blobs.items()]
    return paths
