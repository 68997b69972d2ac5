"""``bench sweep``: the table and figure of a sweep run with ``bench run --set key=a,b,c``."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(name="sweep")
@click.argument("path", type=click.Path(exists=True, path_type=Path))
@click.option("--by", "keys", multiple=True, required=True, metavar="KEY",
              help="The swept config key(s), e.g. data.synthetic.caption_coverage (the figure's x is the first).")
@click.option("--metric", default="t2v/R@1", show_default=True, help="direction/metric, e.g. t2v/R@5, v2t/MnR.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write sweep.md, sweep.csv and the figure (sweep.svg, .pdf, .png) here.")
def sweep(path, keys, metric, out_dir):
    """The metric with its 95 % interval for every method at every swept value (records under PATH)."""
    from tvr_bench.bench.report.sweep import load_sweep, render_table, sweep_rows, write_sweep

    rows = sweep_rows(load_sweep(path, keys), keys, metric)  # intervals bootstrapped once for the table and files
    click.echo(render_table(rows, keys, metric))
    if out_dir is not None:
        for p in write_sweep(rows, keys, out_dir, metric=metric):
            click.echo(f"wrote {p}")
