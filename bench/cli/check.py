"""``bench check`` (regression check against a baseline) and ``bench baseline`` (build one from seeds)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

@click.command(name="check")
@click.argument("current", type=click.Path(exists=True, path_type=Path))
@click.option("--baseline", required=True, type=click.Path(exists=True, path_type=Path),
              help="Baseline file (record, list of records, or {records, tolerances}) or a folder of records.")
@click.option("--tol", "tols", multiple=True, metavar="METRIC=TOL",
              help="Override a tolerance, e.g. R@1=1.5 or MnR=10%% (repeatable).")
@click.option("--tolerance-only", is_flag=True,
              help="Judge rank metrics by the tolerances even where both records keep per-query ranks "
                   "(default: a paired test on the same queries, Holm-adjusted, alpha 0.05).")
def check(current, baseline, tols, tolerance_only):
    """Compare run records with a baseline; exit 1 naming every metric that regressed beyond tolerance."""
    from tvr_bench.bench.report.baseline import load_baseline
    from tvr_bench.bench.report.check import check_records
    from tvr_bench.bench.report.tolerance import parse_tolerance_overrides
    from tvr_bench.bench.records import load_records

    base = load_baseline(baseline)
    tolerances = dict(base.tolerances or {})
    overrides = parse_tolerance_overrides(list(tols))
    tolerances.update(overrides)
    # command-line overrides win over the baseline's per-method tolerances too
    per_method = {m: {**t, **overrides} for m, t in base.method_tolerances.items()}
    report = check_records(load_records(current), base.records, tolerances or None, per_method,
                           paired=base.paired and not tolerance_only)
    click.echo(report.render())
    if not report.ok:
        sys.exit(1)


@click.command(name="baseline")
@click.argument("runs", type=click.Path(exists=True, path_type=Path))
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Baseline file to write (atomically).")
@click.option("--reference-seed", default=0, show_default=True, help="Seed whose records become the baseline.")
@click.option("-k", "k", default=4.0, show_default=True,
              help="Tolerance = max(default, k x seed-to-seed sample std) per method and metric.")
@click.option("--borrow-spread", is_flag=True,
              help="Methods with < 3 seeds get the largest spread measured on the others (recorded as such).")
@click.option("--description", default="", help="Stored in the baseline file.")
def baseline(runs, out_path, reference_seed, k, borrow_spread, description):
    """Build a regression baseline from a multi-seed run (>= 3 seeds per method) in RUNS."""
    import json

    from tvr_bench.bench.report.baseline import build_baseline
    from tvr_bench.bench.atomic import atomic_write_text
    from tvr_bench.bench.records import load_records

    data = build_baseline(load_records(runs), reference_seed=reference_seed, k=k, borrow=borrow_spread,
                          description=description)
    atomic_write_text(out_path, json.dumps(data, indent=1, sort_keys=False) + "\n")
    for m, tol in data["method_tolerances"].items():
        click.echo(f"{m:12s} " + "  ".join(f"{key} ±{v['abs']:g}" for key, v in tol.items() if "R@1" in key or "MdR" in key))
    click.echo(f"wrote {out_path}")
