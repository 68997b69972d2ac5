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
    click.option("--method", "methods", default=None,
                 help="Method name(s), comma-separated, or 'all' (required unless --from-record)."),
    click.option("--dataset", "datasets_", default=None,
                 help="Dataset name(s), comma-separated, or 'all' (required unless --from-record)."),
    click.option("--seed", "seeds", type=int, multiple=True, help="Seed (repeatable). Default: 0 (or the record's)."),
    click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                 help="Override a resolved config key, e.g. train.epochs=3 (repeatable; recorded)."),
    click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                 help="A YAML/JSON file of config sections (train:, data:, method:, ...), applied after the preset "
                      "and before --set (recorded as overrides)."),
    click.option("--from-record", "from_record", type=click.Path(dir_okay=False, path_type=Path), default=None,
                 help="Repeat the run of this record: its method, dataset, seed, preset and settings (--seed, "
                      "--config and --set apply on top)."),
    click.option("--preset", default=None,
                 help="'default' (the shared recipe, the default), 'smoke' (tiny, < 1 min) or 'official' (the "
                      "method's own recipe for the dataset)."),
    click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("runs"),
                 show_default=True, help="Folder for run records and checkpoints."),
    click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N, or auto (CUDA when available)."),
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
def run(methods, datasets_, seeds, overrides, config_file, from_record, preset, out_dir, device, root, overwrite,
        table, quiet):
    """Train and evaluate every (method, dataset, seed) combination; one JSON record each."""
    methods, datasets_, seeds, preset, overrides = settings(methods, datasets_, seeds, preset, overrides,
                                                            config_file, from_record)
    execute(methods, datasets_, seeds, overrides, preset, out_dir, device, root, overwrite, table, quiet)


@click.command(name="eval")
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="A checkpoint to evaluate: a tvr-bench best.pt / last.pt, or a state dict saved by the method's "
                   "official code (GLCCL, X-CLIP, CLIP4Clip meanP/seqTransf/tightTransf); without it the "
                   "backbone's weights and the method's initialisation are evaluated (zero-shot).")
@click.option("--checkpoint-format", "checkpoint_format", type=click.Choice(["auto", "tvr-bench", "official"]),
              default=None, help="How to read --checkpoint (default auto: a tvr-bench checkpoint when it has "
                                 "tvr-bench's entries, else an official state dict).")
@_common
def evaluate(checkpoint, checkpoint_format, methods, datasets_, seeds, overrides, config_file, from_record, preset,
             out_dir, device, root, overwrite, table, quiet):
    """Evaluate without training (train.epochs=0): zero-shot, or a trained checkpoint; one normal record each."""
    import json

    methods, datasets_, seeds, preset, overrides = settings(methods, datasets_, seeds, preset, overrides,
                                                            config_file, from_record)
    extra = ["train.epochs=0"]
    if checkpoint is not None:
        extra.append(f"eval.checkpoint={json.dumps(str(checkpoint.expanduser().absolute()))}")
    if checkpoint_format is not None:
        if checkpoint is None:
            raise click.UsageError("--checkpoint-format needs --checkpoint.")
        extra.append(f"eval.checkpoint_format={checkpoint_format}")
    execute(methods, datasets_, seeds, (*overrides, *extra), preset, out_dir, device, root, overwrite, table, quiet)


def settings(methods, datasets_, seeds, preset, overrides, config_file, from_record):
    """Merge --from-record and --config into the command line's (method, dataset, seeds, preset, overrides).
    Overrides keep their origin so an unknown key names the file it came from."""
    from tvr_bench.bench.config_sources import config_file_overrides, record_rerun
    from tvr_bench.bench.errors import ConfigError

    merged: list = []
    if from_record is not None:
        rec = record_rerun(from_record)
        for flag, given, recorded in (("--method", methods, rec.method), ("--dataset", datasets_, rec.dataset),
                                      ("--preset", preset, rec.preset)):
            if given is not None and given != recorded:
                raise ConfigError(f"{flag} {given} contradicts --from-record {from_record} ({recorded}); drop "
                                  f"{flag}, or use --set to change a setting")
        methods, datasets_, preset = rec.method, rec.dataset, rec.preset
        seeds = seeds or (rec.seed,)
        merged += rec.overrides
        if rec.new_keys:
            click.echo(f"warning: --from-record {from_record}: keys new since the record take today's defaults: "
                       f"{', '.join(rec.new_keys)}", err=True)
    for flag, value in (("--method", methods), ("--dataset", datasets_)):
        if value is None:
            raise click.UsageError(f"Missing option '{flag}' (or give --from-record).")
    if config_file is not None:
        merged += config_file_overrides(config_file)
    return methods, datasets_, seeds, preset or "default", (*merged, *overrides)


def execute(methods, datasets_, seeds, overrides, preset, out_dir, device, root, overwrite, table, quiet):
    from tvr_bench.bench import distributed as D

    # under torchrun: one process group for the whole invocation; without its environment, nothing changes
    D.init_from_env(device)
    try:
        _execute(methods, datasets_, seeds, overrides, preset, out_dir, device, root, overwrite,
                 table and D.is_main(), quiet or not D.is_main())
        # rank 0 tests and writes the records after training; the others wait for it. Only on success: a rank
        # that failed alone must exit (torchrun then stops the others), not wait in a barrier they never reach
        D.barrier()
    finally:
        D.cleanup()


def _execute(methods, datasets_, seeds, overrides, preset, out_dir, device, root, overwrite, table, quiet):
    from tvr_bench.bench import distributed as D
    from tvr_bench.bench.registry import DATASETS, METHODS
    from tvr_bench.bench.runner import run_one

    method_names = METHODS.parse_list(methods)
    dataset_names = DATASETS.parse_list(datasets_)
    if root is not None:
        from tvr_bench.bench.cli.data import root_override

        overrides = (*overrides, root_override(root, dataset_names))
    seeds = list(seeds) or [0]
    from tvr_bench.bench.sweep import expand

    points = expand(overrides)  # --set k=a,b,c: one point per value (the product over swept keys)
    plan = [(pt, m, d, s) for pt in points for d in dataset_names for m in method_names for s in seeds]
    # resolve every config first: a bad --set key fails before any work starts
    from tvr_bench.bench.config import resolve_config
    from tvr_bench.bench.runner import preflight, resolve_device

    from tvr_bench.bench import progress

    progress.set_enabled(False if quiet else None)  # bars only on a terminal, never with --quiet
    device = str(resolve_device(device))
    for pt, m, d, s in plan:  # ... and a stale record, an unwritable --out or a damaged checkpoint too
        cfg, _ = resolve_config(method_cls=METHODS.get(m), dataset_cls=DATASETS.get(d), preset=preset,
                                overrides=list(pt.overrides), seed=s, device=device)
        preflight(pt.out_dir(out_dir), cfg, overwrite=overwrite)
        D.check_global_batch(cfg["train"]["batch_size"], "train.batch_size")

    def log(msg: str) -> None:
        if not quiet or msg.startswith(("->", "==", "skip", "warning")):
            click.echo(msg, err=msg.startswith(("  ", "warning")))

    from tvr_bench.bench.data.pipeline import DecodedClips

    decoded = DecodedClips()  # every run of this invocation decodes each video once (plan is dataset-major)
    written = []
    for i, (pt, m, d, s) in enumerate(plan, 1):
        if not quiet or D.is_main():
            click.echo(f"[{i}/{len(plan)}] {m} / {d} / seed {s}" + (f" / {pt.label}" if pt.settings else ""))
        path = run_one(m, d, s, out_dir=pt.out_dir(out_dir), preset=preset, overrides=list(pt.overrides),
                       device=device,
                       overwrite=overwrite, log=log, command=[Path(sys.argv[0]).name, *sys.argv[1:]],
                       decoded=decoded)
        if path:
            written.append(path)
    if table:
        from tvr_bench.bench.report.compare import comparison_table
        from tvr_bench.bench.records import load_record, record_filename

        recs = [load_record(pt.out_dir(out_dir) / record_filename(m, d, s)) for pt, m, d, s in plan]
        click.echo("")
        if len(points) > 1:
            from tvr_bench.bench.report.sweep import sweep_table

            click.echo(sweep_table(recs, [k for k, _ in points[0].settings]))
        else:
            click.echo(comparison_table(recs, fmt="markdown"))
