"""``bench efficiency``: the query-time cost of every method at the datasets' paper shapes (no training, no videos).

Registered on the ``bench`` group by ``cli.py``; the work is in :mod:`tvr_bench.bench.cost.efficiency`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import click


def _sizes(text: str) -> tuple[int, ...]:
    from tvr_bench.bench.errors import ConfigError

    try:
        sizes = tuple(int(float(s)) for s in text.split(",") if s.strip())
    except ValueError:
        raise ConfigError(f"--galleries: expected a comma list of gallery sizes, got {text!r}") from None
    if not sizes or min(sizes) <= 0:
        raise ConfigError(f"--galleries: expected positive gallery sizes, got {text!r}")
    return sizes


@click.command(name="efficiency")
@click.option("--method", "methods", required=True, help="Method name(s), comma-separated, or 'all'.")
@click.option("--dataset", "datasets_", required=True,
              help="Paper shapes: msrvtt, vatex, didemo (comma-separated) or 'all'.")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N, or auto (CUDA when available).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder for the records.  [default: reports/efficiency/<cpu|cuda>]")
@click.option("--max-seconds", type=float, default=8.0, show_default=True,
              help="Time budget of one measurement (one latency size, the score matrix); beyond it a size is "
                   "skipped and extrapolated (labelled).")
@click.option("--galleries", default="1000,10000,100000,1000000", show_default=True,
              help="Gallery sizes N of the latency curve (the protocol's own gallery is added).")
@click.option("--block-mb", type=float, default=256.0, show_default=True,
              help="Budget of one scored block's intermediates (sets the chunk sizes).")
@click.option("--pool-mb", type=float, default=1024.0, show_default=True,
              help="Resident gallery state for the latency curve; larger galleries cycle over it.")
@click.option("--backbone", default="ViT-B-32", show_default=True, help="open_clip model name (random init).")
@click.option("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice).")
@click.option("--quiet", is_flag=True, help="Only the summary table.")
def efficiency(methods, datasets_, device, out_dir, max_seconds, galleries, block_mb, pool_mb, backbone, threads,
               quiet):
    """Parameters, FLOPs, evaluation memory, latency vs gallery size and scoring throughput at paper shapes.

    One record (kind "efficiency") per (method, dataset), written atomically into --out, then a table.
    """
    # Set before torch loads OpenMP: on a shared, oversubscribed CPU, spinning worker threads make multi-thread
    # timings 10-20x worse; passive waiting keeps them meaningful. Recorded in every record's config.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from tvr_bench.bench.cost.efficiency import Settings, parse_datasets, run_study
    from tvr_bench.bench.report.efficiency_table import efficiency_table
    from tvr_bench.bench.errors import ConfigError
    from tvr_bench.bench.atomic import atomic_write_text
    from tvr_bench.bench.records import load_record, load_records
    from tvr_bench.bench.registry import METHODS
    from tvr_bench.bench.runner import resolve_device

    # every input is validated before any work starts: a typo costs nothing and writes nothing
    method_names = METHODS.parse_list(methods)
    dataset_names = parse_datasets(datasets_)
    sizes = _sizes(galleries)
    if max_seconds <= 0 or block_mb <= 0 or pool_mb <= 0:
        raise ConfigError("--max-seconds, --block-mb and --pool-mb must be positive")
    dev = resolve_device(device)
    import torch

    if threads:
        torch.set_num_threads(threads)
    out_dir = out_dir or Path("reports") / "efficiency" / dev.type
    settings = Settings(backbone=backbone, device=str(dev), max_seconds=max_seconds, block_mb=block_mb,
                        pool_mb=pool_mb, galleries=sizes)

    def log(msg: str) -> None:
        if not quiet:
            click.echo(msg)

    t0 = time.perf_counter()
    paths, failures, not_applicable = run_study(method_names, dataset_names, settings, out_dir, log=log,
                                command=[Path(sys.argv[0]).name, *sys.argv[1:]],
                                env={"OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY")})
    records = [load_record(p) for p in paths]
    na_now = {f"{m}/{d}": why for m, d, why in not_applicable}
    table = efficiency_table(records, na_now)
    if records or na_now:  # the folder's summary covers every efficiency record in it, earlier runs included
        na_file = Path(out_dir) / "_not_applicable.json"  # '_' files are not records (load_records skips them)
        na_all = json.loads(na_file.read_text()) if na_file.is_file() else {}
        na_all.update(na_now)
        for p in paths:  # measured now: no longer "not applicable"
            rec = load_record(p)
            na_all.pop(f"{rec['method']}/{rec['dataset']}", None)
        atomic_write_text(na_file, json.dumps(na_all, indent=1, sort_keys=True) + "\n")
        everything = [r for r in load_records(out_dir) if r["kind"] == "efficiency"]
        atomic_write_text(Path(out_dir) / "efficiency.md", efficiency_table(everything, na_all))
    click.echo("")
    click.echo(table)
    click.echo(f"{len(paths)} record(s) in {out_dir} ({time.perf_counter() - t0:.0f} s)")
    if failures:
        for m, d, why in failures:
            click.secho(f"error: {m} on {d}: {why}", fg="red", err=True)
        sys.exit(1)
