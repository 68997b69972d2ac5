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
@click.option("--root", type=click.Path(path_type=Path), default=None,
              help="Folder holding the dataset's annotation files and videos (sets data.root; one dataset).")
@click.option("--overwrite", is_flag=True, help="Rerun even when a record exists.")
@click.option("--table/--no-table", default=True, show_default=True,
              help="Print the comparison table of the records in --out at the end.")
@click.option("--quiet", is_flag=True, help="Only the summary lines.")
def run(methods, datasets_, seeds, overrides, preset, out_dir, device, root, overwrite, table, quiet):
    """Train and evaluate every (method, dataset, seed) combination; one JSON record each."""
    from tvr_bench.bench.registry import DATASETS, METHODS
    from tvr_bench.bench.runner import run_one

    method_names = METHODS.parse_list(methods)
    dataset_names = DATASETS.parse_list(datasets_)
    if root is not None:
        from tvr_bench.bench.data_cli import root_override

        overrides = (*overrides, root_override(root, dataset_names))
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

    from tvr_bench.bench.data import DecodedClips

    decoded = DecodedClips()  # every run of this invocation decodes each video once (plan is dataset-major)
    written = []
    for i, (m, d, s) in enumerate(plan, 1):
        click.echo(f"[{i}/{len(plan)}] {m} / {d} / seed {s}")
        path = run_one(m, d, s, out_dir=out_dir, preset=preset, overrides=list(overrides), device=device,
                       overwrite=overwrite, log=log, command=[Path(sys.argv[0]).name, *sys.argv[1:]],
                       decoded=decoded)
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
            extra = "unknown" if info.extra_params is None else f"{info.extra_params:,}"
            recipes = ", ".join(sorted(info.official)) or "none"
            click.echo(f"{'':12s} params added at ViT-B/32 (analytic): {extra}; official recipes "
                       f"(--preset official): {recipes}")
            for r in info.published():
                what = f" ({r.variant})" if r.variant else ""
                r1 = r.t2v.get("R@1")
                shown = "-" if r1 is None else f"{r1:.1f}"
                click.echo(f"{'':12s} published {r.dataset}{what}: T2V R@1 {shown}  {r.label()}")
    else:
        for name in DATASETS.names():
            info = DATASETS.get(name).info
            click.echo(f"{name:12s} {info.protocol:14s} {info.description}")


@main.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write CSV here.")
@click.option("--latex", "latex_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write LaTeX here.")
@click.option("--per-seed", is_flag=True, help="One row per seed instead of mean ± std.")
@click.option("--published", is_flag=True,
              help="Add published results (tags V/S/P, never [R]) beside the measured rows, labelled.")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a Markdown report here and its R@1-vs-FLOPs figure beside it (same name, .png).")
def compare(paths, csv_path, latex_path, per_seed, published, report_path):
    """Print a methods x (metrics, cost) table of the run records in PATHS (files or folders)."""
    from tvr_bench.bench.compare import comparison_table, write_report
    from tvr_bench.bench.records import atomic_write_text, load_records

    records = [r for p in paths for r in load_records(p)]
    agg = not per_seed
    md = comparison_table(records, fmt="markdown", aggregate_seeds=agg, published=published)
    outputs = []
    if csv_path:
        outputs.append((csv_path, comparison_table(records, fmt="csv", aggregate_seeds=agg, published=published)))
    if latex_path:
        outputs.append((latex_path, comparison_table(records, fmt="latex", aggregate_seeds=agg, published=published)))
    for path, text in outputs:
        atomic_write_text(path, text)
    if report_path:
        import json

        not_applicable = {}  # `bench efficiency` lists methods that refuse a dataset's shapes beside its records
        for p in paths:
            na_file = p / "_not_applicable.json"
            if p.is_dir() and na_file.is_file():
                not_applicable.update(json.loads(na_file.read_text()))
        md_file, png_file = write_report(records, report_path, published=published, aggregate_seeds=agg,
                                         command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                                         not_applicable=not_applicable)
        click.echo(f"wrote {md_file} and {png_file}", err=True)
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

    base = load_baseline(baseline)
    tolerances = dict(base.tolerances or {})
    overrides = parse_tolerance_overrides(list(tols))
    tolerances.update(overrides)
    # command-line overrides win over the baseline's per-method tolerances too
    per_method = {m: {**t, **overrides} for m, t in base.method_tolerances.items()}
    report = check_records(load_records(current), base.records, tolerances or None, per_method)
    click.echo(report.render())
    if not report.ok:
        sys.exit(1)


@main.command()
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

    from tvr_bench.bench.check import build_baseline
    from tvr_bench.bench.records import atomic_write_text, load_records

    data = build_baseline(load_records(runs), reference_seed=reference_seed, k=k, borrow=borrow_spread,
                          description=description)
    atomic_write_text(out_path, json.dumps(data, indent=1, sort_keys=False) + "\n")
    for m, tol in data["method_tolerances"].items():
        click.echo(f"{m:12s} " + "  ".join(f"{key} ±{v['abs']:g}" for key, v in tol.items() if "R@1" in key or "MdR" in key))
    click.echo(f"wrote {out_path}")


from tvr_bench.bench.data_cli import data as _data_group  # noqa: E402 - `bench data verify|prepare`

main.add_command(_data_group)
from tvr_bench.bench.efficiency_cli import efficiency as _efficiency  # noqa: E402 - `bench efficiency`

main.add_command(_efficiency)

if __name__ == "__main__":  # pragma: no cover
    main()
