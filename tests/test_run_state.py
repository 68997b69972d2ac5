"""Run-state integrity without training: stale records, corrupt records, temp files, file modes, needed splits."""

from __future__ import annotations

import copy
import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tvr_bench.bench import atomic
from tvr_bench.bench.config import resolve_config
from tvr_bench.bench.errors import ConfigError
from tvr_bench.bench.registry import DATASETS, METHODS
from tvr_bench.bench.run_plan import config_differences, plan_run

RECORD = Path(__file__).parents[1] / "reports" / "embedded" / "meanp__synthetic__seed0.json"


def _cfg(*overrides: str) -> dict:
    cfg, _ = resolve_config(method_cls=METHODS.get("meanp"), dataset_cls=DATASETS.get("synthetic"),
                            overrides=list(overrides))
    return cfg


def _out_with_record(tmp_path: Path, cfg: dict) -> Path:
    rec = json.loads(RECORD.read_text())
    rec["config"] = json.loads(json.dumps(cfg))  # as it comes back from disk
    out = tmp_path / "out"
    out.mkdir()
    (out / RECORD.name).write_text(json.dumps(rec))
    return out


def test_same_settings_skip_and_other_settings_refuse_naming_the_keys(tmp_path):
    out = _out_with_record(tmp_path, _cfg("train.epochs=1"))
    assert plan_run(out, _cfg("train.epochs=1"), overwrite=False).action == "skip"
    lr = _cfg()["train"]["lr"]
    with pytest.raises(ConfigError, match=rf"other settings \(train\.lr: {lr} in the record, 0\.002 requested\)"
                                          r".*--overwrite"):
        plan_run(out, _cfg("train.epochs=1", "train.lr=2e-3"), overwrite=False)
    default_epochs = _cfg()["train"]["epochs"]
    with pytest.raises(ConfigError, match=rf"train\.epochs: 1 in the record, {default_epochs} requested"):
        plan_run(out, _cfg(), overwrite=False)  # the default epochs: a plain rerun is not the same question
    assert plan_run(out, _cfg("train.lr=2e-3"), overwrite=True).action == "run"


def test_a_record_made_with_other_backbone_weights_is_refused(tmp_path):
    """Same settings, but the file ``backbone.pretrained`` names holds other weights now: not the same run."""
    import shutil

    from tvr_bench.bench.backbone import WEIGHTS_DIR, pretrained_sha256

    weights = tmp_path / "w.safetensors"
    shutil.copy(WEIGHTS_DIR / "tvr-tiny-embedded.safetensors", weights)
    cfg = _cfg(f"backbone.pretrained={weights}")
    out = _out_with_record(tmp_path, cfg)
    rec_path = out / RECORD.name
    rec = json.loads(rec_path.read_text())
    rec["training"]["backbone_weights"] = {"pretrained": str(weights), "sha256": pretrained_sha256(str(weights))}
    rec_path.write_text(json.dumps(rec))
    assert plan_run(out, cfg, overwrite=False).action == "skip"
    with open(weights, "r+b") as fh:  # other weights under the same name
        fh.seek(-4, 2)
        fh.write(b"\x00\x01\x02\x03")
    with pytest.raises(ConfigError, match=r"other backbone weights .*sha256 differs now.*--overwrite"):
        plan_run(out, cfg, overwrite=False)
    assert pretrained_sha256("embedded") == json.loads((WEIGHTS_DIR / "tvr-tiny-embedded.json").read_text())["sha256"]
    assert pretrained_sha256(None) is None and pretrained_sha256("openai") is None


def test_only_result_neutral_keys_are_ignored():
    base = _cfg()
    neutral = copy.deepcopy(base)
    neutral["data"]["cache_dir"] = "/elsewhere"
    neutral["eval"]["chunk_size"] = 7
    neutral["train"]["num_workers"] = 3
    neutral["run"]["overrides"] = {"train.num_workers": 3}
    assert config_differences(base, neutral) == []
    changed = copy.deepcopy(base)
    changed["eval"]["tie_policy"] = "optimistic"
    changed["run"]["device"] = "cuda"
    assert [k for k, *_ in config_differences(base, changed)] == ["eval.tie_policy", "run.device"]


def test_a_corrupt_record_is_rerun_with_one_warning(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / RECORD.name).write_text("{not json")
    planned = plan_run(out, _cfg(), overwrite=False)
    assert planned.action == "run"
    assert planned.note.startswith("warning: not valid JSON") and "is rerun and replaced" in planned.note
    assert "\n" not in planned.note


def test_records_and_checkpoints_get_the_same_mode(tmp_path):
    a = atomic.atomic_write_text(tmp_path / "r.json", "{}")
    b = atomic.atomic_torch_save({"w": torch.zeros(2)}, tmp_path / "c.pt")
    mode = atomic.file_mode()
    assert (a.stat().st_mode & 0o777) == (b.stat().st_mode & 0o777) == mode


def test_temp_files_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(dead.stdout)  # exited: no process has this pid now (pids are not reused this quickly)
    stale = tmp_path / f".last.pt.{dead_pid}.0123abcd.tmp"
    live = atomic.temp_path(tmp_path / "best.pt")
    stale.write_bytes(b"x")
    live.write_bytes(b"y")
    other = tmp_path / ".notes.tmp"  # not ours: left alone
    other.write_text("z")
    assert atomic.remove_stale_temps(tmp_path) == [stale]
    assert live.exists() and other.exists() and not stale.exists()


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path):
    target = tmp_path / "r.json"
    target.write_text("old")

    def explode(tmp):
        tmp.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic.atomic_write(target, explode)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["r.json"]


def test_only_the_splits_a_run_reads_are_loaded():
    from tvr_bench.bench.runner import needed_splits

    class D:
        train_split, val_split, test_split = "train", "val", "test"

    assert needed_splits(_cfg(), D) == ["train", "val", "test"]
    assert needed_splits(_cfg("train.select_on=last"), D) == ["train", "test"]
    assert needed_splits(_cfg("train.epochs=0"), D) == ["test"]  # MSR-VTT 1k-A needs no 'validate' split


def test_checkpoints_load_weights_only(tmp_path):
    """What the trainer saves (model, optimiser, scheduler, RNG state) loads under weights_only=True."""
    from tvr_bench.bench.train import _rng_state, _set_rng_state, load_checkpoint

    state = _rng_state()
    atomic.atomic_torch_save({"rng": state, "model": {}, "config_hash": "h"}, tmp_path / "c.pt")
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    _set_rng_state(load_checkpoint(tmp_path / "c.pt", "cpu")["rng"])
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_msrvtt_by_default_reads_no_validation_split():
    """MSR-VTT selects the last epoch by default, so a caption set without a 'validate' split is enough."""
    from tvr_bench.bench.runner import needed_splits

    cfg, _ = resolve_config(method_cls=METHODS.get("glccl"), dataset_cls=DATASETS.get("msrvtt"))
    plugin = DATASETS.get("msrvtt")
    assert needed_splits(cfg, plugin) == [plugin.train_split, plugin.test_split]
