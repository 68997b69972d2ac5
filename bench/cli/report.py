"""``bench report``: one self-contained HTML page (tables, figures, provenance) of the records in RUNS."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(name="report")
@click.argument("runs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for index.html, report.md and the figures (SVG and PDF).")
@click.option("--published/--no-published", default=True, show_default=True,
              help="Show published results (tags V/S/P, never [R]) beside the measured rows, marked.")
@click.option("--per-seed", is_flag=True, help="One row per seed instead of the mean over seeds.")
def report(runs, out_dir, published, per_seed):
    """Write a self-contained HTML report of the records in RUNS (files or folders): per dataset a sortable table
    of accuracy (95 % intervals) and cost with each row's provenance, the accuracy-cost, latency-gallery and
    memory-gallery figures (also as SVG and PDF), and the measurement conventions; report.md beside it is the
    same content in Markdown."""
    from tvr_bench.bench.report.render import command_line, write_html_report
    from tvr_bench.bench.report.report_data import load_report_records, read_not_applicable, report_data

    records = load_report_records(runs)
    data = report_data(records, published=published, aggregate_seeds=not per_seed, command=command_line(),
                       not_applicable=read_not_applicable(runs))
    written = write_html_report(data, records, out_dir)
    click.echo(f"wrote {len(written)} files to {out_dir}: open {out_dir / 'index.html'}", err=True)
