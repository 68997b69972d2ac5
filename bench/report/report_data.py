"""The data both report templates render (``templates/report.html.j2`` for ``bench report``,
``templates/report.md.j2`` for ``bench compare --report``): one structure, so the page and the Markdown cannot
disagree.

Everything numeric comes from the comparison table's own preparation (``compare._display``: means, 95 %
intervals, best groups, published rows) and its row order from the terminal table (``compact.row_order``); this
module only regroups it per dataset, splits each cell into value, interval and sort key, and attaches each row's
provenance (the records it was built from, or the published source and its tag).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Iterable, Sequence

from tvr_bench.bench.errors import BenchError
from tvr_bench.bench.report import compact as K
from tvr_bench.bench.report import compare as C
from tvr_bench.bench.report.published import TAG_MEANING, published_for

__all__ = ["REPORT_COLUMNS", "report_data", "read_not_applicable", "load_report_records"]

#: the per-dataset table: accuracy both ways (with intervals) and the query-time cost. Cost headers carry their
#: unit, so they are matched by how they start ("Head params (M)", "Peak mem (MiB, CPU peak RSS)").
REPORT_COLUMNS = ("T2V R@1", "T2V R@5", "T2V R@10", "T2V MdR", "V2T R@1", "V2T R@5", "V2T R@10",
                  "Head params", "FLOPs/query", "Latency (ms)", "Peak mem", "Memory kind")
_LEADING_NUMBER = re.compile(r"^\s*\**(-?\d+(?:\.\d+)?(?:e[+-]?\d+)?)")


def load_report_records(paths: Sequence[str | os.PathLike]) -> list[dict]:
    """Records of every path; a path that is not there, or a folder without records, is one clear error."""
    from tvr_bench.bench.records import load_records

    records = []
    for p in paths:
        got = load_records(p)  # a missing path raises RecordError naming it
        if not got:
            raise BenchError(f"{p}: no run records (*.json) in this folder")
        records += got
    return records


def read_not_applicable(paths: Iterable[str | os.PathLike]) -> dict[str, str]:
    """``bench efficiency`` lists the methods that refuse a dataset's shapes in ``_not_applicable.json`` beside
    its records ("method/dataset" -> reason); the reports list them so no gap is silent."""
    out: dict[str, str] = {}
    for p in map(Path, paths):
        f = p / "_not_applicable.json"
        if p.is_dir() and f.is_file():
            try:
                out.update(json.loads(f.read_text(encoding="utf-8")))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise BenchError(f"{f}: not valid JSON: {exc}") from None
    return out


def _columns(headers: list[str]) -> list[str]:
    chosen = []
    for want in REPORT_COLUMNS:
        for h in headers:
            if h == want or h.startswith(want) or (want.startswith("FLOPs/") and h.endswith(want)):
                if h not in chosen:
                    chosen.append(h)
                break
    return chosen


def _sort_key(mean: float | None, text: str) -> float | None:
    """A cell's number for sorting: the table's mean, or (published rows carry none) the printed value."""
    if mean is not None:
        return float(mean)
    m = _LEADING_NUMBER.match(text)
    return float(m[1]) if m else None


def _cell(text: str, mean: float | None, best: bool) -> dict:
    m = K._INTERVAL.match(text)
    value, interval = (m[1], f"{m[2]}, {m[3]}") if m else (text, None)
    return {"text": text, "value": value, "interval": interval, "sort": _sort_key(mean, text), "best": best}


def _record_provenance(rec: dict) -> dict:
    prov = rec.get("provenance") or {}
    run = (rec.get("config") or {}).get("run") or {}
    command = prov.get("command")
    return {
        "kind": rec["kind"], "seed": rec.get("seed"),
        "git_sha": prov.get("git_sha"), "git_dirty": prov.get("git_dirty"),
        "command": " ".join(map(str, command)) if isinstance(command, list) else command,
        "preset": run.get("preset"), "device": prov.get("device") or (rec.get("cost") or {}).get("device"),
        "started_at": prov.get("started_at"), "finished_at": prov.get("finished_at"),
        "packages": ", ".join(f"{k} {v}" for k, v in (prov.get("packages") or {}).items()),
        "config": json.dumps(rec.get("config"), indent=1, sort_keys=True, default=str),
    }


def _published_provenance(method: str, dataset: str, source: str) -> tuple[str, dict]:
    """The published result behind a published row's label (tag, source, variant, note)."""
    for pub in published_for(method, dataset):
        label = pub.source + (f"; {pub.variant}" if pub.variant else "")
        if label == source:
            return pub.tag, {"tag": pub.tag, "meaning": TAG_MEANING[pub.tag], "source": pub.source,
                             "variant": pub.variant, "note": pub.note, "backbone": pub.backbone}
    raise AssertionError(f"no published result {method}/{dataset} {source!r}")  # _display made the label


def _dataset_table(records: list[dict], ds: str, *, aggregate_seeds: bool, published: bool, sort: str):
    """One dataset's table (units chosen for its own numbers), and its conventions lines."""
    table, means_rows, meta = C._display(records, aggregate_seeds, latex=False, published=published)
    headers = [h for h in table.columns if h not in ("Dataset", "Method", "n_seeds", "Seed")]
    columns = _columns(headers)
    _, order = K.row_order(table, means_rows, K._resolve(sort, headers, "--sort"))
    by_method: dict[str, list[dict]] = {}
    for r in records:
        by_method.setdefault(r["method"], []).append(r)
    rows = []
    for i in order:
        label = table.at[i, "Method"]
        m = K._PUBLISHED.match(label)
        cells = [_cell(str(table.at[i, h]), means_rows[i].get(h), (i, h) in meta["best_cells"]) for h in columns]
        if m:
            method, source = m[1], m[3]
            tag, prov = _published_provenance(method, ds, source)
            rows.append({"method": method, "label": f"{method} published", "published": prov, "tag": tag,
                         "records": [], "reduced": False, "cells": cells})
            continue
        method = label.removesuffix(f" {C.REDUCED_MARK}")
        recs = sorted(by_method.get(method, []), key=lambda r: (r["kind"], r.get("seed", 0)))
        rows.append({"method": method, "label": label, "published": None, "tag": None,
                     "reduced": (ds, method) in meta["reduced"],
                     "n_seeds": table.at[i, "n_seeds"] if "n_seeds" in table.columns else None,
                     "records": [_record_provenance(r) for r in recs], "cells": cells})
    cols = [{"header": h, "better": None if h == "Memory kind" else ("low" if K.lower_is_better(h) else "high")}
            for h in columns]
    block = {"name": ds, "anchor": f"ds-{ds}", "columns": cols, "rows": rows,
             "gallery": meta["galleries"].get(ds, []), "notes": []}
    return block, C._footer(meta, aggregate_seeds)


def dataset_tables(records: list[dict], *, aggregate_seeds: bool, published: bool,
                   sort: str = K.DEFAULT_SORT) -> tuple[list[dict], list[str]]:
    """Per dataset (the embedded benchmark first, then the papers' order): its table's columns and rows, best
    first by ``sort``, and the notes that concern it alone; and the conventions lines every table shares."""
    from tvr_bench.bench.report.figures import sorted_datasets

    blocks, footers = [], []
    for ds in sorted_datasets(r["dataset"] for r in records):
        block, footer = _dataset_table([r for r in records if r["dataset"] == ds], ds,
                                       aggregate_seeds=aggregate_seeds, published=published, sort=sort)
        blocks.append(block)
        footers.append(footer)
    common = [line for line in footers[0] if all(line in f for f in footers)] if footers else []
    for block, footer in zip(blocks, footers):
        block["notes"] = [line for line in footer if line not in common]
    return blocks, common


def report_data(records: Iterable[dict], *, published: bool = False, aggregate_seeds: bool = True,
                command: str | None = None, not_applicable: dict[str, str] | None = None,
                sort: str = K.DEFAULT_SORT) -> dict:
    """Everything the templates show except the figures' pictures (``figures`` is filled by the caller)."""
    from tvr_bench.bench.report.efficiency_table import efficiency_table
    from tvr_bench.bench.report.report import flops_comparison, other_published_costs, plot_points

    recs = C._prepare(records)
    datasets, conventions = dataset_tables(recs, aggregate_seeds=aggregate_seeds, published=published, sort=sort)
    eff = [r for r in recs if r["kind"] == "efficiency"]
    return {
        "command": command,
        "n_records": len(recs),
        "published": published,
        "datasets": datasets,
        "conventions": conventions,
        "flops_convention": C.FLOPS_CONVENTION,
        "tags": {t: TAG_MEANING[t] for t in ("V", "S", "P")},
        # the paper-shape tables and the FLOP cross-check keep their own Markdown (tables with notes); both
        # templates place them
        "efficiency_md": efficiency_table(eff, not_applicable) if eff else "",
        "flops_md": flops_comparison(recs),
        "other_costs_md": other_published_costs(),
        "not_applicable": dict(sorted((not_applicable or {}).items())),
        "points": plot_points(recs, published=published),
        "figures": [],
    }
