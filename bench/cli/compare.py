"""``bench compare``: the comparison table of run records (Markdown, CSV, LaTeX, report)."""

from __future__ import annotations

import sys
from pathlib import Path

import click

@click.command(name="compare")
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write CSV here.")
@click.option("--latex", "latex_path", type=click.Path(dir_okay=False, path_type=Path), help="Also write LaTeX here.")
@click.option("--per-seed", is_flag=True, help="One row per seed instead of mean ± std.")
@click.option("--published", is_flag=True,
              help="Add published results (tags V/S/P, never [R]) beside the measured rows, labelled.")
@click.option("--vs", "versus", metavar="METHOD",
              help="Also test every method against METHOD on the same queries (paired tests, Holm-adjusted).")
@click.option("--report", "report_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a Markdown report here and its R@1-vs-FLOPs figure beside it (same name, .png).")
@click.option("--columns", default="compact", show_default=True,
              help="compact (T2V R@1/5/10 with intervals, MdR, FLOPs/query, latency), all, or a comma list of "
                   "column headers.")
@click.option("--sort", "sort_by", default="T2V R@1", show_default=True,
              help="Column to sort each dataset's rows by, best first.")
def compare(paths, csv_path, latex_path, per_seed, published, versus, report_path, columns, sort_by):
    """Print a methods x (metrics, cost) table of the run records in PATHS (files or folders), sorted by the
    main metric; the full table with --columns all, --csv or --latex."""
    from tvr_bench.bench.report.compare import comparison_table
    from tvr_bench.bench.report.report import write_report
    from tvr_bench.bench.atomic import atomic_write_text
    from tvr_bench.bench.records import load_records

    records = [r for p in paths for r in load_records(p)]
    agg = not per_seed
    from tvr_bench.bench.report.compact import compact_table

    md = compact_table(records, columns=columns, sort=sort_by, aggregate_seeds=agg, published=published)
    if versus:
        from tvr_bench.bench.report import uncertainty as U

        groups = U.rank_arrays(records)
        md += "\n" + f"### vs {versus}\n\n" + U.versus_table(U.versus(groups, versus), versus)
    outputs = []
    if csv_path:
        outputs.append((csv_path, comparison_table(records, fmt="csv", aggregate_seeds=agg, published=published)))
    if latex_path:
        outputs.append((latex_path, comparison_table(records, fmt="latex", aggregate_seeds=agg, published=published)))
    for path, text in outputs:
        atomic_write_text(path, text)
    if report_path:
        from tvr_bench.bench.report.report_data import read_not_applicable

        not_applicable = read_not_applicable(paths)
        md_file, png_file = write_report(records, report_path, published=published, aggregate_seeds=agg,
                                         command=" ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
                                         not_applicable=not_applicable)
        click.echo(f"wrote {md_file} and {png_file}", err=True)
    click.echo(md)
