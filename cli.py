"""The ``bench`` command: a thin click layer over ``tvr_bench.bench``.

Examples:
  bench run --method glccl,meanp --dataset synthetic
  bench run --method glccl --dataset synthetic --preset smoke --seed 0 --seed 1 --set train.epochs=3
  bench compare runs/ --csv runs/table.csv --latex runs/table.tex
  bench check runs/ --baseline reports/baselines/smoke.json
"""

from __future__ import annotations

import sys
from pathlib import Path

import click

from tvr_bench.bench.errors import BenchError


class _Group(click.Group):
    """Turns BenchError into a one-line message and its exit code (2 for bad input)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BenchError as exc:
            click.secho(f"error: {exc}", fg="red", err=True)
            ctx.exit(exc.exit_code)


_EPILOG = "\b\nExamples:" + __doc__.split("Examples:")[1] + "\nREADME.md documents the run-record schema."


@click.group(cls=_Group, epilog=_EPILOG)
@click.version_option(package_name="tvr-bench")
def main() -> None:
    """tvr-bench: text-video retrieval methods compared on accuracy and query-time cost."""


@main.command()
@click.option("--method", "methods", required=True, help="Method name(s), comma-separated, or 'all'.")
@click.option("--dataset", "datasets_", required=True, help="Dataset name(s), comma-separated, or 'all'.")
@click.option("--seed", "seeds", type=int, multiple=True, help="Seed (repeatable). Default: 0.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a resolved config key, e.g. train.epochs=3 (repeatable; recorded).")
@click.option("--preset", default="default", show_default=True, help="'default' (the shared recipe), 'smoke' (tiny, < 1 min) or 'official' (the method's own recipe for the dataset).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"),
              show_default=True, help="Folder for run records and checkpoints.")
@click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto.")
@click.option("--overwrite", is_flag=True, help="Rerun even when a record exists.")
@click.option("--table/--no-table", default=True, show_default=True,
              help="Print the comparison table of the records in --out at the end.")
@click.option("--quiet", is_flag=True, help="Only the summary lines.")
def run(methods, datasets_, seeds, overrides, preset, out_dir, device, overwrite, table, quiet):
    """Train and evaluate every (method, dataset, seed) combination; one JSON record each."""
    from tvr_bench.bench.registry import DATASETS, METHODS
    from tvr_bench.bench.runner import run_one

    method_names = METHODS.parse_list(methods)
    dataset_names = DATASETS.parse_list(datasets_)
    seeds = list(seeds) or [0]
    plan = [(m, d, s) for d in dataset_names for m in method_names for s in seeds]
    # resolve every config first: a bad --set key fails before any work starts
    from tvr_bench.bench.config import resolve_config
    from tvr_bench.bench.runner import resolve_device

    device = str(resolve_device(device))
    for m, d, s in plan:
        resolve_config(method_cls=METHODS.get(m), dataset_cls=DATASETS.get(d), preset=preset,
                       overrides=list(overrides), seed=s, device=device)

    def log(msg: str) -> None:
        if not quiet or msg.startswith(("->", "==", "skip")):
            click.echo(msg, err=msg.startswith("  "))

    written = []
    for i, (m, d, s) in enumerate(plan, 1):
        click.echo(f"[{i}/{len(plan)}] {m} / {d} / seed {s}")
        path = run_one(m, d, s, out_dir=out_dir, preset=preset, overrides=list(overrides), device=device,
                       overwrite=overwrite, log=log, command=[Path(sys.argv[0]).name, *sys.argv[1:]])
        if path:
            written.append(path)
    if table:
        from tvr_bench.bench.compare import comparison_table
        from tvr_bench.bench.records import load_record, record_filename

        recs = [load_record(out_dir / record_filename(m, d, s)) for m, d, s in plan]
        click.echo("")
        click.echo(comparison_table(recs, fmt="markdown"))


@main.command(name="list")
@click.argument("what", type=click.Choice(["methods", "datasets"]))
def list_(what):
    """List registered methods or datasets with their metadata."""
    from tvr_bench.bench.registry import DATASETS, METHODS

    if what == "methods":
        for name in METHODS.names():
            info = METHODS.get(name).info
            kind = "query-dependent (per pair)" if info.query_dependent else "two-tower"
            click.echo(f"{name:12s} {kind:27s} {info.description}")
            click.echo(f"{'':12s} paper: {info.paper}")
            click.echo(f"{'':12s} code:  {info.official_repo}")
    else:
        for name in DATASETS.names():
            info = DATASETS.get(name).info
            click.echo(f"{name:12s} {info.protocol:14s} {info.description}")


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write CSV here.")
@click.option("--latex", "latex_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write LaTeX here.")
@click.option("--per-seed", is_flag=True, help="One row per seed instead of mean ± std.")
def compare(paths, csv_path, latex_path, per_seed):
    """Print a methods x (metrics, cost) table of the run records in PATHS (files or folders)."""
    from tvr_bench.bench.compare import comparison_table
    from tvr_bench.bench.records import atomic_write_text, load_records

    records = [r for p in paths for r in load_records(p)]
    agg = not per_seed
    md = comparison_table(records, fmt="markdown", aggregate_seeds=agg)
    outputs = []
    if csv_path:
        outputs.append((csv_path, comparison_table(records, fmt="csv", aggregate_seeds=agg)))
    if latex_path:
        outputs.append((latex_path, comparison_table(records, fmt="latex", aggregate_seeds=agg)))
    for path, text in outputs:
        atomic_write_text(path, text)
    click.echo(md)


@main.command()
@click.argument("current", type=click.Path(exists=True, path_type=Path))
@click.option("--baseline", required=True, type=click.Path(exists=True, path_type=Path),
              help="Baseline file (record, list of records, or {records, tolerances}) or a folder of records.")
@click.option("--tol", "tols", multiple=True, metavar="METRIC=TOL",
              help="Override a tolerance, e.g. R@1=1.5 or MnR=10%% (repeatable).")
def check(current, baseline, tols):
    """Compare run records with a baseline; exit 1 naming every metric that regressed beyond tolerance."""
    from tvr_bench.bench.check import check_records, load_baseline, parse_tolerance_overrides
    from tvr_bench.bench.records import load_records

    base_records, base_tol = load_baseline(baseline)
    tolerances = dict(base_tol or {})
    tolerances.update(parse_tolerance_overrides(list(tols)))
    report = check_records(load_records(current), base_records, tolerances or None)
    click.echo(report.render())
    if not report.ok:
        sys.exit(1)


if __name__ == "__main__":  # pragma: no cover
    main()
