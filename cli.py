"""The ``bench`` command: assembles the subcommands of ``tvr_bench.bench.cli`` (one file each).

Examples:
  bench run --method glccl,meanp --dataset synthetic
  bench run --method glccl --dataset synthetic --preset smoke --seed 0 --seed 1 --set train.epochs=3
  bench run --method glccl --dataset synthetic --config run.yaml
  bench run --from-record runs/glccl__synthetic__seed0.json --seed 1
  bench eval --method meanp --dataset synthetic            # zero-shot: no training
  bench eval --method glccl --dataset synthetic --checkpoint runs/checkpoints/glccl__synthetic__seed0/best.pt
  bench compare runs/ --csv runs/table.csv --latex runs/table.tex
  bench report runs/ --out runs/html          # self-contained HTML page + figures (SVG, PDF)
  bench check runs/ --baseline reports/baselines/smoke.json
  bench run --method meanp,glccl --dataset synthetic --set data.synthetic.caption_coverage=0.25,0.5,1.0 --out runs/cov
  bench sweep runs/cov --by data.synthetic.caption_coverage --out runs/cov/_report
  bench pretrain --out bench/weights/tvr-tiny-embedded.safetensors   # the shipped backbone.pretrained=embedded
"""

from __future__ import annotations

import click

from tvr_bench.bench.errors import BenchError


class _Group(click.Group):
    """Turns BenchError into a one-line message and its exit code (2 for bad input)."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except BenchError as exc:
            from tvr_bench.bench.distributed import speaks

            if speaks():  # under torchrun every rank fails alike: rank 0 says it once
                click.secho(f"error: {exc}", fg="red", err=True)
            ctx.exit(exc.exit_code)
        except OSError as exc:  # a path the user gave cannot be read or written: name it, no traceback
            if exc.filename is None:
                raise
            where = f"{exc.filename} -> {exc.filename2}" if exc.filename2 else exc.filename
            click.secho(f"error: {where}: {exc.strerror or exc}", fg="red", err=True)
            ctx.exit(2)


_EPILOG = "\b\nExamples:" + __doc__.split("Examples:")[1] + "\nREADME.md documents the run-record schema."


@click.group(cls=_Group, epilog=_EPILOG)
@click.version_option(package_name="tvr-bench")
def main() -> None:
    """tvr-bench: text-video retrieval methods compared on accuracy and query-time cost."""


from tvr_bench.bench.cli.check import baseline, check  # noqa: E402
from tvr_bench.bench.cli.compare import compare  # noqa: E402
from tvr_bench.bench.cli.data import data  # noqa: E402
from tvr_bench.bench.cli.efficiency import efficiency  # noqa: E402
from tvr_bench.bench.cli.listing import list_  # noqa: E402
from tvr_bench.bench.cli.pretrain import pretrain  # noqa: E402
from tvr_bench.bench.cli.report import report  # noqa: E402
from tvr_bench.bench.cli.run import evaluate, run  # noqa: E402
from tvr_bench.bench.cli.schema import schema  # noqa: E402
from tvr_bench.bench.cli.sweep import sweep  # noqa: E402

for _command in (run, evaluate, list_, compare, report, check, baseline, data, efficiency, schema, sweep,
                 pretrain):
    main.add_command(_command)

if __name__ == "__main__":  # pragma: no cover
    main()
