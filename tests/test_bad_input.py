"""Bad command lines fail at start: exit 2, one line on stderr naming the culprit, no traceback, no record."""

import pytest
from click.testing import CliRunner

from tvr_bench.cli import main

BAD = [
    ("meanp", "train.optimizer=sgd", "train.optimizer"),
    ("meanp", "eval.chunk_size=0", "eval.chunk_size"),
    ("meanp", "train.batch_size=0", "train.batch_size"),
    ("meanp", "train.lr=-1", "train.lr"),
    ("meanp", "train.max_steps=-1", "train.max_steps"),
    ("meanp", "train.lr=abc", "train.lr"),
    ("meanp", "train.precision=amp", "train.precision"),
    ("meanp", "train.select_metric=t2v/R@2", "train.select_metric"),
    ("meanp", "data.sample_fps=0", "data.sample_fps"),
    ("meanp", "train.num_workers=-1", "train.num_workers"),
    ("glccl", "method.csc_weight=abc", "method.csc_weight"),
    ("glccl", "method.text_guided=Flase", "method.text_guided"),
    ("seqtransf", "method.temporal_layers=-1", "method.temporal_layers"),
    ("xpool", "method.num_heads=1.5", "method.num_heads"),
]


def test_misspelt_bool_gets_did_you_mean():
    from tvr_bench.bench.config import resolve_config
    from tvr_bench.bench.errors import ConfigError
    from tvr_bench.bench.registry import DATASETS, METHODS

    with pytest.raises(ConfigError, match=r"method\.text_guided='Flase'.*Did you mean false\?"):
        resolve_config(method_cls=METHODS.get("glccl"), dataset_cls=DATASETS.get("synthetic"),
                       overrides=["method.text_guided=Flase"])
    cfg, _ = resolve_config(method_cls=METHODS.get("glccl"), dataset_cls=DATASETS.get("synthetic"),
                            overrides=["method.csc_weight=1", "method.text_guided=false"])
    assert cfg["method"]["csc_weight"] == 1.0 and isinstance(cfg["method"]["csc_weight"], float)
    assert cfg["method"]["text_guided"] is False


@pytest.mark.parametrize("method,override,culprit", BAD)
def test_bad_set_fails_before_work(tmp_path, method, override, culprit):
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["run", "--method", method, "--dataset", "synthetic", "--preset", "smoke",
                                    "--set", override, "--out", str(out), "--no-table"])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and culprit in lines[0]
    assert not out.exists()  # nothing written: failed before any data or training


def test_bad_device(tmp_path):
    res = CliRunner().invoke(main, ["run", "--method", "meanp", "--dataset", "synthetic", "--device", "gpu",
                                    "--out", str(tmp_path / "o"), "--no-table"])
    assert res.exit_code == 2 and "--device" in res.output and "Traceback" not in res.output


def test_float_override_recorded_as_float():
    from tvr_bench.bench.config import resolve_config
    from tvr_bench.bench.registry import DATASETS, METHODS

    cfg, applied = resolve_config(method_cls=METHODS.get("meanp"), dataset_cls=DATASETS.get("synthetic"),
                                  preset="smoke", overrides=["train.lr=1e-4", "cost.enabled=false"])
    assert cfg["train"]["lr"] == 1e-4 and isinstance(cfg["train"]["lr"], float)
    assert applied == {"train.lr": 1e-4, "cost.enabled": False}
