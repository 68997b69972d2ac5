"""``bench schema``: the JSON Schema of a run record, generated from the typed record model."""

from __future__ import annotations

from pathlib import Path

import click


@click.command(name="schema")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the schema here (atomically) instead of printing it.")
def schema(out_path):
    """Print (or write) the JSON Schema that every run record follows."""
    from tvr_bench.bench.record_model import json_schema_text
    from tvr_bench.bench.atomic import atomic_write_text

    text = json_schema_text()
    if out_path:
        atomic_write_text(out_path, text)
        click.echo(f"wrote {out_path}", err=True)
    else:
        click.echo(text, nl=False)
