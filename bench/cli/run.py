"""``bench run``: train and evaluate every (method, dataset, seed) of the command line; one record each.
``bench eval``: the same harness with no training, on the backbone's weights (zero-shot) or a checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

import click


def _common(f):
    """The options ``bench run`` and ``bench eval`` share (applied bottom-up, as click decorators are)."""
    for option in reversed(_OPTIONS):
        f = option(f)
    return f


_OPTIONS = [
    click.option("--method", "methods", required=True, help="Method name(s), comma-separated, or 'all'."),
    click.option("--dataset", "datasets_", required=True, help="Dataset name(s), comma-separated, or 'all'."),
    click.option("--seed", "seeds", type=int, multiple=True, help="Seed (repeatable). Default: 0."),
    click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                 help="Override a resolved config key, e.g. train.epochs=3 (repeatable; recorded)."),
    click.option("--preset", default="default", show_default=True,
                 help="'default' (the shared recipe), 'smoke' (tiny, < 1 min) or 'official' (the method's own "
                      "recipe for the dataset)."),
    click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"),
                 show_default=True, help="Folder for run records and checkpoints."),
    click.option("--device", default="cpu", show_default=True, help="cpu, cuda, cuda:N or auto."),
    click.option("--root", type=click.Path(path_type=Path), default=None,
                 help="Folder holding the dataset's annotation files and videos (sets data.root; one dataset)."),
    click.option("--overwrite", is_flag=True,
                 help="Rerun even when a record exists (needed to replace a record made with other settings)."),
    click.option("--table/--no-table", default=True, show_default=True,
                 help="Print the comparison table of the records in --out at the end."),
    click.option("--quiet", is_flag=True, help="Only the summary lines."),
]


@click.command(name="run")
@_common
def run(methods, datasets_, seeds, overrides, preset, out_dir, device, root, overwrite, table, quiet):
    """Train and evaluate every (method, dataset, seed) combination; one JSON record each."""
    execute(methods, datasets_, seeds, overrides, preset, out_dir, device, root, overwrite, table, quiet)


@click.command(name="eval")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A tvr-bench checkpoint (best.pt / last.pt of a run) to evaluate; without it the backbone's "
                   "weights and the method's initialisation are evaluated (zero-shot).")
@_common
def evaluate(checkpoint, methods, datasets_, seeds, overrides, preset, out_dir, device, root, overwrite, table,
             quiet):
    """Evaluate without training (train.epochs=0): zero-shot, or a trained checkpoint; one normal record each."""
    import json

    extra = ["train.epochs=0"]
    if checkpoint is not None:
        extra.append(f"eval.checkpoint={json.dumps(str(checkpoint.expanduser().absolute()))}")
    execute(methods, datasets_, seeds, (*overrides, *extra), preset, out_dir, device, root, overwrite, table, quiet)


def execute(methods, datasets_, seeds, overrides, preset, out_dir, device, root, overwrite, table, quiet):
    from tvr_bench.bench.registry import DATASETS, METHODS
    from tvr_bench.bench.runner import run_one

    method_names = METHODS.parse_list(methods)
    dataset_names = DATASETS.parse_list(datasets_)
    if root is not None:
        from tvr_bench.bench.cli.data import root_override

        overrides = (*overrides, root_override(root, dataset_names))
    seeds = list(seeds) or [0]
    plan = [(m, d, s) for d in dataset_names for m in method_names for s in seeds]
    # resolve every config first: a bad --set key fails before any work starts
    from tvr_bench.bench.config import resolve_config
    from tvr_bench.bench.runner import preflight, resolve_device

    device = str(resolve_device(device))
    for m, d, s in plan:  # ... and a stale record, an unwritable --out or a damaged checkpoint too
        cfg, _ = resolve_config(method_cls=METHODS.get(m), dataset_cls=DATASETS.get(d), preset=preset,
                                overrides=list(overrides), seed=s, device=device)
        preflight(out_dir, cfg, overwrite=overwrite)

    def log(msg: str) -> None:
        if not quiet or msg.startswith(("->", "==", "skip", "warning")):
            click.echo(msg, err=msg.startswith(("  ", "warning")))

    from tvr_bench.bench.data.pipeline import DecodedClips

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
        from tvr_bench.bench.report.compare import comparison_table
        from tvr_bench.bench.records import load_record, record_filename

        recs = [load_record(out_dir / record_filename(m, d, s)) for m, d, s in plan]
        click.echo("")
        click.echo(comparison_table(recs, fmt="markdown"))
