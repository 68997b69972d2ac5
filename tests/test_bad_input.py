"""Bad command lines fail at start: exit 2, one line on stderr naming the culprit, no traceback, no record."""

import os
from pathlib import Path

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
    # per-method choices and ranges, some against the backbone's model config (checked before data is read)
    ("seqtransf", "method.temporal_layers=99", "method.temporal_layers=99: the blocks are copied from the text tower"),
    ("seqtransf", "method.temporal_layers=0", "method.temporal_layers"),
    ("seqtransf", "data.max_frames=40", "40 tokens to a position table of 32 rows"),
    ("drl", "method.interaction=ti", "method.cdcr=3"),
    ("drl", "method.cdcr=1", "method.cdcr"),
    ("xpool", "method.num_heads=3", "method.num_heads=3 must divide the embed dim 64"),
    ("xpool", "method.dropout=1.5", "method.dropout"),
    ("xpool", "method.padding=zero", "method.padding='zero'"),
    ("textpool", "method.mask_mode=bogus", "method.mask_mode"),
    ("ts2net", "method.shift_layers=5", "method.shift_layers=5: the vision tower of tvr-tiny has 2 blocks"),
    ("ts2net", "method.topk=9", "method.topk"),
    ("tighttransf", "method.cross_layers=7", "method.cross_layers"),
    ("tighttransf", "method.pair_chunk=0", "method.pair_chunk"),
    ("meanp", "backbone.name=tvr-tiy", "Did you mean: tvr-tiny"),
]


def test_misspelt_bool_gets_did_you_mean():
    from tvr_bench.bench.config import resolve_config
    from tvr_bench.bench.errors import ConfigError
    from tvr_bench.bench.registry import DATASETS, METHODS

    with pytest.raises(ConfigError, match=r"method\.text_guided='Flase'.*Did you mean: false\?"):
        resolve_config(method_cls=METHODS.get("glccl"), dataset_cls=DATASETS.get("synthetic"),
                       overrides=["method.text_guided=Flase"])
    cfg, _ = resolve_config(method_cls=METHODS.get("glccl"), dataset_cls=DATASETS.get("synthetic"),
                            overrides=["method.csc_weight=1", "method.text_guided=false"])
    assert cfg["method"]["csc_weight"] == 1.0 and isinstance(cfg["method"]["csc_weight"], float)
    assert cfg["method"]["text_guided"] is False


@pytest.mark.parametrize("method,override,culprit", BAD)
def test_bad_set_fails_before_work(tmp_path, method, override, culprit):
    out, cache = tmp_path / "out", tmp_path / "cache"
    res = CliRunner().invoke(main, ["run", "--method", method, "--dataset", "synthetic", "--preset", "smoke",
                                    "--set", override, "--set", f"data.cache_dir={cache}", "--out", str(out),
                                    "--no-table"])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1 and culprit in lines[0]
    assert not out.exists() and not cache.exists()  # nothing written: failed before any data or training


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


def test_quoted_string_override_loses_its_quotes():
    # Scripts often pass json.dumps(value); a quoted string is that string, an unquoted "no" stays the text "no".
    from tvr_bench.bench.config import resolve_config
    from tvr_bench.bench.registry import DATASETS, METHODS

    cfg, _ = resolve_config(method_cls=METHODS.get("meanp"), dataset_cls=DATASETS.get("synthetic"),
                            preset="smoke", overrides=['backbone.name="tvr-tiny"', "train.optimizer='adamw'"])
    assert cfg["backbone"]["name"] == "tvr-tiny" and cfg["train"]["optimizer"] == "adamw"


def _run(args, out):
    return CliRunner().invoke(main, ["run", "--method", "meanp", "--dataset", "synthetic", "--preset", "smoke",
                                     *args, "--out", str(out), "--no-table"])


def _one_error_line(res, *needles):
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert len(lines) == 1, res.output
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_out_under_a_file_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("x")
    _one_error_line(_run([], tmp_path / "afile" / "sub"), "--out", "is under the file", "afile")


def test_out_in_an_unwritable_place_is_one_line(tmp_path):
    # /proc refuses new entries even to root (a chmod'ed folder would not stop root, who runs CI)
    _one_error_line(_run([], Path("/proc") / "tvr-bench-out"), "--out", "cannot write in /proc")


def test_out_that_is_not_utf8_is_one_line(tmp_path):
    bad = os.fsdecode(os.fsencode(str(tmp_path)) + b"/x\xffy")  # what Python makes of a non-UTF-8 argv byte
    _one_error_line(_run([], bad), "--out", "not valid UTF-8")
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("content,needle", [
    (b"", "is empty"),
    (os.urandom(4096), "not a PyTorch, TorchScript or safetensors checkpoint"),
    (None, "refused: loading it would run its code"),
])
def test_unreadable_pretrained_file_is_one_line_before_any_data(tmp_path, content, needle):
    f = tmp_path / "weights.pt"
    if content is None:  # a real torch.save of an object outside the weights-only allow-list
        import fractions

        import torch

        torch.save({"x": fractions.Fraction(1, 3)}, f)
    else:
        f.write_bytes(content)
    out = tmp_path / "out"
    res = _run(["--set", f"backbone.pretrained={f}"], out)
    _one_error_line(res, "backbone.pretrained", str(f), needle)
    assert "[1/1]" not in res.output and not out.exists()  # refused before the run started


@pytest.mark.parametrize("damage", ["truncated", "random", "empty"])
def test_damaged_checkpoint_is_named_with_what_to_do(tmp_path, damage):
    import torch

    out = tmp_path / "out"
    ckpt = out / "checkpoints" / "meanp__synthetic__seed0" / "last.pt"
    ckpt.parent.mkdir(parents=True)
    torch.save({"model": {"w": torch.zeros(1000)}, "config_hash": "x"}, ckpt)
    data = ckpt.read_bytes()
    ckpt.write_bytes({"truncated": data[: len(data) // 2], "random": os.urandom(len(data)), "empty": b""}[damage])
    line = _one_error_line(_run([], out), str(ckpt), "--overwrite")
    assert "cannot be read" in line
    assert not list(out.glob("*.json"))


def test_compare_to_an_unwritable_csv_is_one_line(tmp_path):
    record = Path(__file__).parents[1] / "reports" / "embedded" / "glccl__synthetic__seed0.json"
    (tmp_path / "afile").write_text("x")
    res = CliRunner().invoke(main, ["compare", str(record), "--csv", str(tmp_path / "afile" / "t.csv")])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "cannot write" in res.output and "afile is a file" in res.output
