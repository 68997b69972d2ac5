"""``bench list methods|datasets``: the registries with their metadata."""

from __future__ import annotations


import click

@click.command(name="list")
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
