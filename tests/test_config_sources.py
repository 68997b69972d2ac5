"""--config FILE and --from-record RECORD: typed like --set, named in errors, recorded, and a record's run repeated
with exactly its settings (issue 10 item 4)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from tvr_bench.bench.cli.run import settings
from tvr_bench.bench.config import resolve_config
from tvr_bench.bench.config_sources import config_file_overrides, record_rerun
from tvr_bench.bench.errors import ConfigError
from tvr_bench.bench.registry import DATASETS, METHODS
from tvr_bench.cli import main

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "reports" / "embedded" / "glccl__synthetic__seed0.json"


def _resolve(method, overrides, preset="default", seed=0):
    return resolve_config(method_cls=METHODS.get(method), dataset_cls=DATASETS.get("synthetic"), preset=preset,
                          overrides=list(overrides), seed=seed)


def test_config_file_values_are_typed_and_recorded(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("train:\n  lr: 1e-4\n  optimizer: adamw\ntrain.epochs: 2\nmethod:\n  csc_weight: 1\n"
                 "backbone:\n  name: tvr-tiny\n")
    cfg, applied = _resolve("glccl", config_file_overrides(f))
    assert cfg["train"]["lr"] == 1e-4 and isinstance(cfg["train"]["lr"], float)
    assert cfg["train"]["epochs"] == 2 and cfg["train"]["optimizer"] == "adamw"
    assert cfg["method"]["csc_weight"] == 1.0 and cfg["backbone"]["name"] == "tvr-tiny"
    assert applied == {"train.lr": 1e-4, "train.optimizer": "adamw", "train.epochs": 2, "method.csc_weight": 1,
                       "backbone.name": "tvr-tiny"}
    assert cfg["run"]["overrides"]["method.csc_weight"] == 1.0


@pytest.mark.parametrize("text, needle", [
    ("train:\n  epochz: 3\n", "unknown config key 'train.epochz' in --config"),
    ("train: [1\n", "not valid YAML at line 2"),
    ("- 1\n- 2\n", "expected a mapping of config sections, got list"),
    ("run:\n  seed: 3\n", "'run' is set by the command line"),
    ("train: 3\n", "train: is a section"),
])
def test_a_bad_config_file_is_one_error_naming_it(tmp_path, text, needle):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=None) as info:
        _resolve("meanp", config_file_overrides(f))
    assert needle in str(info.value) and ("bad.yaml" in str(info.value))


def test_a_missing_config_file_is_named(tmp_path):
    with pytest.raises(ConfigError, match="--config .*nope.yaml: file not found"):
        config_file_overrides(tmp_path / "nope.yaml")


def test_record_rerun_resolves_to_the_recorded_config():
    rec = json.loads(RECORD.read_text())
    rerun = record_rerun(RECORD)
    assert (rerun.method, rerun.dataset, rerun.seed, rerun.preset) == ("glccl", "synthetic", 0, "default")
    cfg, _ = _resolve(rerun.method, rerun.overrides, rerun.preset, rerun.seed)
    recorded = {k: v for k, v in rec["config"].items() if k != "run"}
    resolved = json.loads(json.dumps({k: v for k, v in cfg.items() if k != "run"}))
    # keys added after some records were made: a record without them had their default behaviour
    for section, key, default in (("eval", "checkpoint", None), ("eval", "checkpoint_format", "auto"),
                                  ("train", "gather_backward", None)):
        assert resolved[section].pop(key) == recorded[section].pop(key, default)
    resolved["data"].pop("memory_cache_budget")  # changes no number (RESULT_NEUTRAL_KEYS)
    recorded["data"].pop("memory_cache_budget", None)
    assert resolved == recorded


def test_record_rerun_carries_settings_that_differ_from_todays_preset(tmp_path):
    rec = json.loads(RECORD.read_text())
    rec["config"]["train"]["lr"] = 0.002
    rec["config"]["method"]["csc_weight"] = 0.25
    path = tmp_path / "glccl__synthetic__seed0.json"
    path.write_text(json.dumps(rec))
    rerun = record_rerun(path)
    keys = {text.split("=", 1)[0] for text, origin in rerun.overrides}
    assert keys == {"train.lr", "method.csc_weight"}
    assert all(origin == f"--from-record {path}" for _, origin in rerun.overrides)
    # precedence: record < config file < --set
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  lr: 3e-3\n")
    m, d, seeds, preset, overrides = settings(None, None, (), None, ("method.csc_weight=0.75",), f, path)
    cfg, _ = _resolve(m, overrides, preset, seeds[0])
    assert (m, d, tuple(seeds), preset) == ("glccl", "synthetic", (0,), "default")
    assert cfg["train"]["lr"] == 3e-3 and cfg["method"]["csc_weight"] == 0.75


def test_record_with_a_key_this_version_lacks_is_refused(tmp_path):
    rec = json.loads(RECORD.read_text())
    rec["config"]["train"]["warp_drive"] = True
    path = tmp_path / "r.json"
    path.write_text(json.dumps(rec))
    with pytest.raises(ConfigError, match="train.warp_drive do not exist in this version"):
        record_rerun(path)


def test_cli_from_record_finds_the_same_settings_and_skips(tmp_path):
    shutil.copy(RECORD, tmp_path / RECORD.name)
    path = tmp_path / RECORD.name
    res = CliRunner().invoke(main, ["run", "--from-record", str(path), "--out", str(tmp_path), "--no-table"])
    assert res.exit_code == 0 and "exists with these settings" in res.output, res.output
    res = CliRunner().invoke(main, ["run", "--from-record", str(path), "--set", "train.lr=2e-3",
                                    "--out", str(tmp_path), "--no-table"])
    assert res.exit_code == 2 and "train.lr" in res.output and "Traceback" not in res.output
    res = CliRunner().invoke(main, ["run", "--from-record", str(path), "--method", "meanp", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "contradicts --from-record" in res.output
    res = CliRunner().invoke(main, ["run", "--dataset", "synthetic", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "--method" in res.output
