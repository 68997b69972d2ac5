"""``bench pretrain``: pre-train the tiny CLIP (tvr-tiny) on the embedded world's image-caption corpus
(bench/pretrain.py); writes a safetensors file and its JSON manifest."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from tvr_bench.bench.pretrain import PretrainSettings

_D = PretrainSettings()


@click.command(name="pretrain")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=Path("tvr-tiny-embedded.safetensors"),
              show_default=True, help="The weights file (.safetensors); the manifest goes beside it (.json).")
@click.option("--seed", type=int, default=_D.seed, show_default=True,
              help="Initial weights, corpus and batch order.")
@click.option("--steps", type=int, default=_D.steps, show_default=True)
@click.option("--batch-size", "batch_size", type=int, default=_D.batch_size, show_default=True)
@click.option("--lr", type=float, default=_D.lr, show_default=True, help="AdamW peak learning rate.")
@click.option("--weight-decay", "weight_decay", type=float, default=_D.weight_decay, show_default=True)
@click.option("--warmup", type=float, default=_D.warmup, show_default=True, help="Warm-up share of the steps.")
@click.option("--items", "n_items", type=int, default=_D.n_items, show_default=True, help="Corpus size.")
@click.option("--strip-rate", "strip_rate", type=float, default=_D.strip_rate, show_default=True,
              help="Share of two-event items (a strip of two images, a caption joining two events).")
@click.option("--threads", type=int, default=_D.threads, show_default=True,
              help="torch threads (fixed: the result depends on it).")
@click.option("--dtype", type=click.Choice(["fp16", "fp32"]), default=_D.dtype, show_default=True,
              help="Of the written weights (training is fp32).")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def pretrain(out, seed, steps, batch_size, lr, weight_decay, warmup, n_items, strip_rate, threads, dtype, quiet):
    """Contrastive pre-training of tvr-tiny on generated images and captions disjoint from the benchmark.

    The result loads with --set backbone.pretrained=PATH; the shipped one is backbone.pretrained=embedded.
    """
    from tvr_bench.bench import progress
    from tvr_bench.bench.pretrain import run_pretrain

    if quiet:
        progress.set_enabled(False)
    settings = PretrainSettings(seed=seed, steps=steps, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                                warmup=warmup, threads=threads, dtype=dtype, n_items=n_items,
                                strip_rate=strip_rate).check()  # bad input: one line, exit 2, nothing written
    manifest = run_pretrain(settings, out, command=[Path(sys.argv[0]).name, *sys.argv[1:]],
                            log=lambda msg: None if quiet else click.echo(msg))
    click.echo(f"wrote {out} ({manifest['bytes'] / 2**20:.1f} MiB, sha256 {manifest['sha256']}), final loss "
               f"{manifest['loss']['final_mean_last_50']:.3f} (mean of the last 50 steps), "
               f"{manifest['wall_seconds']['total']:.0f} s")
