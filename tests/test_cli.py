"""End to end through the `bench` CLI on the embedded benchmark (smoke preset), and bad-input behaviour."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tvr_bench.cli import main

REPO = Path(__file__).resolve().parent.parent
BASELINE = REPO / "reports" / "baselines" / "smoke.json"


def invoke(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture(scope="session")
def smoke_dir(cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("smoke")
    # every registered method in one command: the smoke run CI checks against the committed baseline
    res = invoke("run", "--method", "all", "--dataset", "synthetic", "--preset", "smoke",
                 "--out", str(out), "--quiet")
    assert res.exit_code == 0, res.output
    return out, res.output


def test_smoke_run_writes_valid_records_and_prints_the_table(smoke_dir):
    from tvr_bench.bench.records import load_records

    out, output = smoke_dir
    from tvr_bench.bench.registry import METHODS

    records = {r["method"]: r for r in load_records(out)}
    assert set(records) == set(METHODS.names())
    for name, rec in records.items():
        assert rec["schema_version"] == 2 and rec["dataset"] == "synthetic" and rec["seed"] == 0
        for d in ("t2v", "v2t"):
            assert set(rec["metrics"][d]) == {"R@1", "R@5", "R@10", "MdR", "MnR", "RSum"}
        if name == "meanp":  # the embedded default's frozen backbone leaves meanP nothing to train
            assert "nothing to train with the backbone frozen" in rec["metrics"]["selection"]
        else:
            assert rec["metrics"]["selection"].startswith("best t2v/R@1 on split 'val'")
        assert rec["training"]["backbone"] == "frozen"
        assert rec["cost"]["memory"]["kind"] == "cpu_peak_rss" and rec["cost"]["memory"]["peak_bytes"] > 0
        assert rec["cost"]["flops"]["gallery_size"] == 256
        assert rec["config"]["run"]["preset"] == "smoke"
        assert rec["provenance"]["git_sha"] is None or len(rec["provenance"]["git_sha"]) == 40
        assert rec["protocol"]["test"]["n_videos"] == 256
    assert records["meanp"]["cost"]["params"]["head"] == 0
    assert all(rec["cost"]["params"]["head"] > 0 for name, rec in records.items() if name != "meanp")
    assert all(f"| synthetic | {name}" in output for name in records)  # one comparison table of all methods
    assert not list(out.glob("**/*.tmp*"))  # atomic writes leave nothing behind


def test_rerun_skips_finished_records(smoke_dir):
    out, _ = smoke_dir
    before = {p: p.stat().st_mtime_ns for p in out.glob("*.json")}
    res = invoke("run", "--method", "meanp", "--dataset", "synthetic", "--preset", "smoke", "--out", str(out))
    assert res.exit_code == 0 and "exists with these settings" in res.output
    assert {p: p.stat().st_mtime_ns for p in out.glob("*.json")} == before


def test_overwrite_retrains_instead_of_resuming_the_finished_checkpoint(smoke_dir, tmp_path):
    out, _ = smoke_dir
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)  # leave the session's records alone
    res = invoke("run", "--method", "seqtransf", "--dataset", "synthetic", "--preset", "smoke", "--out", str(copy),
                 "--overwrite", "--no-table")
    assert res.exit_code == 0, res.output
    rec = json.loads((copy / "seqtransf__synthetic__seed0.json").read_text())
    assert len(rec["training"]["history"]) == rec["config"]["train"]["epochs"]
    assert "resum" not in res.output.lower()


def test_smoke_run_matches_committed_baseline(smoke_dir):
    """The CI regression check: the pinned smoke run against reports/baselines/smoke.json."""
    from tvr_bench.bench.report.baseline import load_baseline
    from tvr_bench.bench.registry import METHODS

    out, _ = smoke_dir
    base = load_baseline(BASELINE)
    # coverage: every registered method has a pinned smoke record and a seed-spread tolerance
    assert {r["method"] for r in base.records} == set(METHODS.names()) == set(base.method_tolerances)
    res = invoke("check", str(out), "--baseline", str(BASELINE))
    assert res.exit_code == 0, res.output


def test_check_fails_on_lowered_r1_and_passes_on_identical(smoke_dir, tmp_path):
    out, _ = smoke_dir
    same = invoke("check", str(out), "--baseline", str(out))
    assert same.exit_code == 0, same.output
    worse = tmp_path / "worse"
    shutil.copytree(out, worse, ignore=shutil.ignore_patterns("checkpoints"))
    path = worse / "glccl__synthetic__seed0.json"
    rec = json.loads(path.read_text())
    t2v = rec["metrics"]["t2v"]
    if t2v["R@1"] < 3.0:
        pytest.skip("smoke R@1 below 3 points: nothing to lower")
    t2v["R@1"] -= 3.0  # beyond the default 2-point tolerance
    t2v["RSum"] = t2v["R@1"] + t2v["R@5"] + t2v["R@10"]
    del rec["metrics"]["ranks"]  # the tolerance path (a record that keeps ranks is judged by a paired test)
    path.write_text(json.dumps(rec))
    res = CliRunner().invoke(main, ["check", str(worse), "--baseline", str(out)])
    assert res.exit_code == 1, res.output
    assert "R@1" in res.output and "glccl" in res.output
    ok = CliRunner().invoke(main, ["check", str(worse), "--baseline", str(out), "--tol", "R@1=5"])
    assert ok.exit_code == 0, ok.output


def test_compare_writes_csv_and_latex(smoke_dir, tmp_path):
    import pandas as pd

    out, _ = smoke_dir
    res = invoke("compare", str(out), "--csv", str(tmp_path / "t.csv"), "--latex", str(tmp_path / "t.tex"))
    assert res.exit_code == 0 and "glccl" in res.output
    df = pd.read_csv(tmp_path / "t.csv")
    from tvr_bench.bench.registry import METHODS

    assert set(df["method"]) == set(METHODS.names())
    assert "\\begin{tabular}" in (tmp_path / "t.tex").read_text()


@pytest.mark.parametrize("args,needle", [
    (["--method", "glcl"], "Did you mean: glccl"),
    (["--dataset", "synthetc"], "Did you mean: synthetic"),
    (["--set", "train.epoch=3"], "train.epoch"),
    (["--set", "data.max_words=8"], "max_words=8"),
    (["--preset", "smok"], "Did you mean: smoke"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(cache_dir, tmp_path, args, needle):
    base = {"--method": "glccl", "--dataset": "synthetic"}
    for flag, value in zip(args[::2], args[1::2]):
        base.pop(flag, None)
    cmd = ["run", "--preset", "smoke", "--out", str(tmp_path / "out"), *args]
    for flag, value in base.items():
        cmd += [flag, value]
    res = CliRunner().invoke(main, cmd)
    assert res.exit_code == 2, res.output
    assert needle in res.output
    assert not list((tmp_path / "out").glob("*.json")) if (tmp_path / "out").exists() else True


def test_caption_longer_than_context_names_the_caption(cache_dir, tmp_path):
    res = CliRunner().invoke(main, ["run", "--method", "meanp", "--dataset", "synthetic", "--preset", "smoke",
                                    "--out", str(tmp_path), "--set", "data.max_words=8"])
    assert res.exit_code == 2
    assert "caption 'train-" in res.output and "max_words=8" in res.output
    assert not list(tmp_path.glob("*.json"))


@pytest.mark.parametrize("damage", ["empty", "garbage"])
def test_corrupt_video_stops_the_run_naming_the_file(cache_dir, tmp_path, damage):
    from tvr_bench.bench.config import PRESETS
    from tvr_bench.datasets.synthetic import SyntheticBenchmark, ensure_synthetic

    params = dict(SyntheticBenchmark.info.defaults["data"]["synthetic"])
    params.update(PRESETS["smoke"]["data"]["synthetic"])
    own_cache = tmp_path / "cache"
    ann = ensure_synthetic(own_cache, **params)
    victim = next((ann.parent / "videos" / "test").glob("*.mp4"))
    victim.write_bytes(b"" if damage == "empty" else os.urandom(2048))
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["run", "--method", "meanp", "--dataset", "synthetic", "--preset", "smoke",
                                    "--out", str(out), "--set", f"data.cache_dir={own_cache}"])
    assert res.exit_code == 2, res.output
    assert victim.name in res.output
    assert not out.exists() or not list(out.glob("*.json"))


def test_import_datasets_still_gives_the_hugging_face_library():
    """The design's folder datasets/ installs as tvr_bench.datasets and never shadows `datasets` (checked where the
    Hugging Face library is installed; it is not a dependency of tvr-bench)."""
    import importlib.metadata
    try:  # the distribution, not the import: from the repository root `import datasets` finds our folder
        importlib.metadata.distribution("datasets")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("the Hugging Face datasets library is not installed")
    code = "import datasets, tvr_bench.datasets as ours; print(datasets.__file__); print(hasattr(datasets, 'load_dataset'))"
    for cwd in (REPO, REPO.parent):  # also from the repository root, where '' is on sys.path
        out = subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, check=True).stdout
        path, has_loader = out.split()
        assert "site-packages" in path and has_loader == "True"
    for name in ("methods", "reports", "cli", "bench"):
        res = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=REPO.parent, capture_output=True)
        assert res.returncode != 0, f"generic top-level module {name!r} is importable"


def test_list_commands():
    res = invoke("list", "methods")
    assert "glccl" in res.output and "query-dependent" in res.output and "two-tower" in res.output
    assert "synthetic" in invoke("list", "datasets").output


def test_config_layers_and_recorded_overrides():
    from tvr_bench.bench.config import resolve_config
    from tvr_bench.bench.registry import DATASETS, METHODS

    cfg, applied = resolve_config(method_cls=METHODS.get("glccl"), dataset_cls=DATASETS.get("synthetic"),
                                  preset="smoke", overrides=["train.epochs=3", "method.csc_weight=0"], seed=7)
    assert cfg["train"]["epochs"] == 3 and cfg["method"]["csc_weight"] == 0
    assert cfg["train"]["batch_size"] == 32  # preset over dataset default
    assert cfg["data"]["max_frames"] == 8  # dataset default over harness default
    assert cfg["run"]["overrides"] == applied == {"train.epochs": 3, "method.csc_weight": 0}
    assert cfg["run"]["seed"] == 7
    # official recipes are keyed by dataset name and reference only existing keys
    for name in METHODS.names():
        for ds, section in METHODS.get(name).info.official.items():
            from tvr_bench.bench.config import HARNESS_DEFAULTS, deep_merge

            deep_merge({**HARNESS_DEFAULTS, "method": METHODS.get(name).default_options()}, section, strict=True)


# ---- bench eval: the same harness, no training -----------------------------------------------------------

def test_eval_of_a_runs_best_checkpoint_reproduces_its_record(smoke_dir, tmp_path):
    """`bench eval --checkpoint best.pt` on the run's own settings gives the metrics (and per-query ranks) the
    run reported, in a normal record that names the file it evaluated."""
    from tvr_bench.bench.records import load_record

    out, _ = smoke_dir
    trained = load_record(out / "seqtransf__synthetic__seed0.json")
    best = out / "checkpoints" / "seqtransf__synthetic__seed0" / "best.pt"
    res = invoke("eval", "--method", "seqtransf", "--dataset", "synthetic", "--preset", "smoke", "--checkpoint",
                 str(best), "--out", str(tmp_path / "e"), "--quiet", "--no-table")
    assert res.exit_code == 0, res.output
    rec = load_record(tmp_path / "e" / "seqtransf__synthetic__seed0.json")
    assert rec["metrics"]["t2v"] == trained["metrics"]["t2v"] and rec["metrics"]["v2t"] == trained["metrics"]["v2t"]
    assert rec["metrics"]["ranks"] == trained["metrics"]["ranks"]
    assert rec["training"]["history"] == [] and rec["config"]["train"]["epochs"] == 0
    ev = rec["training"]["evaluated_checkpoint"]
    assert ev["path"] == str(best) and len(ev["sha256"]) == 64 and rec["metrics"]["selection"].startswith("checkpoint")
    # the same path holding other weights later: the record no longer answers for it
    stale = tmp_path / "best.pt"
    shutil.copy(best, stale)
    assert invoke("eval", "--method", "seqtransf", "--dataset", "synthetic", "--preset", "smoke", "--checkpoint",
                  str(stale), "--out", str(tmp_path / "s"), "--quiet", "--no-table").exit_code == 0
    shutil.copy(out / "checkpoints" / "seqtransf__synthetic__seed0" / "last.pt", stale)
    again = CliRunner().invoke(main, ["eval", "--method", "seqtransf", "--dataset", "synthetic", "--preset", "smoke",
                                      "--checkpoint", str(stale), "--out", str(tmp_path / "s")])
    assert again.exit_code == 2 and "evaluated another file" in again.output


def test_zero_shot_eval_and_bad_checkpoints(smoke_dir, tmp_path):
    from tvr_bench.bench.records import load_record

    out, _ = smoke_dir
    res = invoke("eval", "--method", "meanp", "--dataset", "synthetic", "--preset", "smoke",
                 "--out", str(tmp_path / "z"), "--quiet", "--no-table")
    assert res.exit_code == 0, res.output
    rec = load_record(tmp_path / "z" / "meanp__synthetic__seed0.json")
    assert "zero-shot" in rec["metrics"]["selection"] and "evaluated_checkpoint" not in rec["training"]

    def bad(*args):
        r = CliRunner().invoke(main, ["eval", "--dataset", "synthetic", "--preset", "smoke", "--out",
                                      str(tmp_path / "bad"), *args])
        assert r.exit_code == 2 and "Traceback" not in r.output, r.output
        return r.output

    glccl_best = str(out / "checkpoints" / "glccl__synthetic__seed0" / "best.pt")
    assert "was not written for this method" in bad("--method", "meanp", "--checkpoint", glccl_best)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(os.urandom(512))
    assert "a best.pt or last.pt that tvr-bench wrote" in bad("--method", "meanp", "--checkpoint", str(junk))
    assert "not found" in bad("--method", "meanp", "--checkpoint", str(tmp_path / "nope.pt"))
    r = CliRunner().invoke(main, ["run", "--method", "meanp", "--dataset", "synthetic", "--preset", "smoke",
                                  "--set", f"eval.checkpoint={glccl_best}", "--out", str(tmp_path / "bad")])
    assert r.exit_code == 2 and "set train.epochs=0" in r.output
    assert not (tmp_path / "bad").exists()
