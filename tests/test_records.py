"""Run-record schema, validation, atomic writes and loading (tvr_bench.bench.records)."""

from __future__ import annotations

import copy
import json
import os

import numpy as np
import pandas as pd
import pytest

from tvr_bench.bench import records as R
from tvr_bench.bench.errors import BenchError, RecordError


def _block(r1: float, mdr: float = 2.0, mnr: float = 8.0) -> dict:
    r5, r10 = min(100.0, r1 + 20.0), min(100.0, r1 + 30.0)
    return {"R@1": r1, "R@5": r5, "R@10": r10, "MdR": mdr, "MnR": mnr, "RSum": r1 + r5 + r10}


def make_record(method="glccl", dataset="synthetic", seed=0, r1=40.0, *, kind="run", latency=1.5) -> dict:
    """A small valid run record; tests mutate copies of it."""
    return {
        "schema_version": R.SCHEMA_VERSION,
        "method": method,
        "dataset": dataset,
        "seed": seed,
        "kind": kind,
        "metrics": None
        if kind == "cost"
        else {"t2v": _block(r1), "v2t": _block(r1 - 1.0), "selection": "best_val", "n_queries": 100},
        "cost": {
            "params": {"total": 150_000_000, "trainable": 2_000_000, "head": 1_500_000},
            "flops": {
                "text_per_query": 3.0e9,
                "score_per_pair": 2.0e5,
                "per_query": 3.0e9 + 1000 * 2.0e5,
                "video_per_video": 5.0e10,
                "gallery_size": 1000,
                "convention": "FlopCounterMode, 2*MAC",
            },
            "memory": {"peak_bytes": 512 * 2**20, "kind": "cpu_peak_rss"},
            "latency_ms": latency,
            "device": "cpu",
        },
        "config": {"lr": 1e-4, "epochs": 1},
        "provenance": {
            "git_sha": "0123abc",
            "git_dirty": False,
            "packages": {"torch": "2.13.0"},
            "device": "cpu",
            "command": ["bench", "run"],
            "started_at": "2025-01-01T00:00:00+00:00",
            "finished_at": "2025-01-01T00:10:00+00:00",
        },
        "protocol": {"fingerprint": "p1"},
    }


def _set(rec: dict, dotted: str, value) -> dict:
    """Return a copy of rec with the dotted path set; the sentinel _DEL deletes the key."""
    rec = copy.deepcopy(rec)
    *parents, last = dotted.split(".")
    node = rec
    for p in parents:
        node = node[p]
    if value is _DEL:
        del node[last]
    else:
        node[last] = value
    return rec


_DEL = object()


def test_valid_record_passes_and_is_returned():
    rec = make_record()
    assert R.validate_record(rec) is rec
    assert R.record_problems(rec) == []
    cost = make_record(kind="cost")
    assert cost["metrics"] is None
    R.validate_record(cost)


def test_extras_allowed():
    rec = make_record()
    rec["timings"] = {"train_s": 1.0}
    rec["dataset_fingerprint"] = "abc"
    rec["metrics"]["conventions"] = {"ties": "optimistic"}
    rec["metrics"]["last_epoch"] = {"t2v": _block(30.0), "v2t": _block(29.0)}
    rec["cost"]["latency_ms"] = {"median": 1.0, "p90": 2.0, "n_repeats": 10}
    R.validate_record(rec)


@pytest.mark.parametrize(
    "path, value, expected",
    [
        ("metrics.t2v.R@1", 130, "metrics.t2v.R@1: Input should be less than or equal to 100"),
        ("metrics.v2t.R@10", -1.0, "metrics.v2t.R@10: Input should be greater than or equal to 0"),
        ("metrics.t2v.R@1", 65.0, "metrics.t2v: recalls not monotone: R@1=65, R@5=60, R@10=70 (need R@1 <= R@5 <= R@10)"),
        ("metrics.v2t.RSum", 1.0, "metrics.v2t: RSum 1 != R@1+R@5+R@10 = 167"),
        ("metrics.t2v.MdR", 0.5, "metrics.t2v.MdR: Input should be greater than or equal to 1"),
        ("metrics.v2t.MnR", _DEL, "metrics.v2t.MnR: missing"),
        ("metrics.t2v.R@5", float("nan"), "metrics.t2v.R@5: Input should be a finite number"),
        ("metrics.t2v.R@5", "60", "metrics.t2v.R@5: Input should be a valid number"),
        ("metrics.v2t", _DEL, "metrics.v2t: missing"),
        ("metrics", None, "metrics: null is only allowed when kind is \"cost\" or \"efficiency\""),
        ("kind", "train", "kind: Input should be 'run', 'cost' or 'efficiency'"),
        ("schema_version", 3, "schema_version: Input should be 1 or 2"),
        ("seed", "0", "seed: Input should be a valid integer"),
        ("seed", True, "seed: Input should be a valid integer"),
        ("method", "", "method: String should have at least 1 character"),
        ("dataset", _DEL, "dataset: missing"),
        ("cost.params.total", -1, "cost.params.total: Input should be greater than or equal to 0"),
        ("cost.params.trainable", 10**12, "cost.params: trainable 1000000000000 > total 150000000"),
        ("cost.params.head", 1.5, "cost.params.head: Input should be a valid integer"),
        ("cost.flops.per_query", "x", "cost.flops.per_query: Input should be a valid number"),
        ("cost.flops.gallery_size", _DEL, "cost.flops.gallery_size: missing"),
        ("cost.flops.convention", 3, "cost.flops.convention: Input should be a valid string"),
        ("cost.memory.kind", "gpu", "cost.memory.kind: Input should be 'cuda_allocated_peak' or 'cpu_peak_rss'"),
        ("cost.memory.peak_bytes", 1.5, "cost.memory.peak_bytes: Input should be a valid integer"),
        ("cost.latency_ms", -1.0, "cost.latency_ms: Input should be greater than or equal to 0"),
        ("cost.latency_ms", {"median": -2.0}, "cost.latency_ms: median: expected a number >= 0, got -2.0"),
        ("cost.device", _DEL, "cost.device: missing"),
        ("cost", None, "cost: Input should be a valid dictionary or instance of Cost"),
        ("config", [], "config: Input should be a valid dictionary"),
        ("provenance.git_sha", _DEL, "provenance.git_sha: missing"),
        ("provenance.git_dirty", "no", "provenance.git_dirty: Input should be a valid boolean"),
        ("provenance.started_at", "yesterday", "provenance.started_at: Input should be a valid datetime or date, input is too short"),
        ("provenance.command", 5, "provenance.command: Input should be a valid string"),
        ("protocol.fingerprint", 7, "protocol.fingerprint: Input should be a valid string"),
    ],
)
def test_validation_names_json_path(path, value, expected):
    bad = _set(make_record(), path, value)
    with pytest.raises(RecordError) as ei:
        R.validate_record(bad)
    assert expected in str(ei.value)
    assert isinstance(ei.value, BenchError)


def test_last_epoch_is_validated():
    rec = make_record()
    rec["metrics"]["last_epoch"] = {"t2v": _block(30.0), "v2t": {**_block(29.0), "R@1": 101.0}}
    with pytest.raises(RecordError, match=r"metrics\.last_epoch\.v2t\.R@1: Input should be less than or equal to 100"):
        R.validate_record(rec)


def test_every_problem_is_listed():
    bad = _set(_set(make_record(), "metrics.t2v.R@1", 130), "cost.memory.kind", "gpu")
    with pytest.raises(RecordError) as ei:
        R.validate_record(bad)
    msg = str(ei.value)
    assert "metrics.t2v.R@1" in msg and "cost.memory.kind" in msg and "2 problems" in msg
    assert len(ei.value.problems) == 2
    assert R.record_problems([1, 2]) and "expected a JSON object" in R.record_problems([1, 2])[0]


def test_record_filename_sanitises():
    assert R.record_filename("glccl", "synthetic", 0) == "glccl__synthetic__seed0.json"
    name = R.record_filename("my method/v2", "msr vtt:1k", 3)
    assert name == "my-method-v2__msr-vtt-1k__seed3.json"
    assert R.record_filename("a__b", "c", 1) == "a_b__c__seed1.json"  # '__' stays a separator
    assert R.record_filename("../etc", "x", 1).startswith("etc__")
    with pytest.raises(RecordError):
        R.record_filename("///", "x", 0)
    with pytest.raises(RecordError):
        R.record_filename("m", "d", "0")


def test_write_and_load_round_trip(tmp_path):
    rec = make_record()
    rec["cost"]["params"]["head"] = np.int64(1_500_000)  # numpy scalars serialise
    rec["metrics"]["t2v"]["MnR"] = np.float64(8.0)
    path = R.write_record(rec, tmp_path / "runs")
    assert path == tmp_path / "runs" / "glccl__synthetic__seed0.json"
    assert os.listdir(tmp_path / "runs") == [path.name]  # no temp files left behind
    back = R.load_record(path)
    assert back["cost"]["params"]["head"] == 1_500_000
    assert back["metrics"]["t2v"] == make_record()["metrics"]["t2v"]
    assert R.record_exists(tmp_path / "runs", "glccl", "synthetic", 0)
    assert not R.record_exists(tmp_path / "runs", "glccl", "synthetic", 1)


def test_invalid_record_writes_nothing(tmp_path):
    out = tmp_path / "runs"
    with pytest.raises(RecordError):
        R.write_record(_set(make_record(), "metrics.t2v.R@1", 130), out)
    assert not out.exists() or list(out.iterdir()) == []
    # an existing good record is untouched by a failed overwrite
    good = R.write_record(make_record(), out)
    before = good.read_bytes()
    with pytest.raises(RecordError):
        R.write_record(_set(make_record(), "cost.device", _DEL), out)
    assert good.read_bytes() == before
    assert sorted(p.name for p in out.iterdir()) == [good.name]


def test_unserialisable_record_writes_nothing(tmp_path):
    rec = make_record()
    rec["config"]["bad"] = object()
    with pytest.raises(RecordError, match="cannot be written as JSON"):
        R.write_record(rec, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_write_is_atomic_when_replace_fails(tmp_path, monkeypatch):
    good = R.write_record(make_record(r1=10.0), tmp_path)
    before = good.read_bytes()

    def boom(src, dst):
        raise OSError("disk full")

    from tvr_bench.bench import atomic
    from tvr_bench.bench.errors import OutputError

    monkeypatch.setattr(atomic.os, "replace", boom)
    with pytest.raises(OutputError, match=r"cannot write .*glccl__synthetic__seed0\.json: disk full"):
        R.write_record(make_record(r1=20.0), tmp_path)
    assert good.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [good.name]


def test_load_record_errors_name_the_file(tmp_path):
    bad_json = tmp_path / "broken.json"
    bad_json.write_text("{not json")
    with pytest.raises(RecordError, match=r"broken\.json: not valid JSON"):
        R.load_record(bad_json)
    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps(_set(make_record(), "metrics.t2v.R@1", 130)))
    with pytest.raises(RecordError) as ei:
        R.load_record(invalid)
    assert "invalid.json" in str(ei.value) and "metrics.t2v.R@1: Input should be less than or equal to 100 (got 130)" in str(ei.value)
    with pytest.raises(RecordError, match="not found"):
        R.load_record(tmp_path / "nope.json")


def test_load_records_folder(tmp_path):
    R.write_record(make_record("a", seed=0), tmp_path)
    R.write_record(make_record("b", seed=1), tmp_path / "sub" / "deeper")
    (tmp_path / "_notes.json").write_text("[1, 2, 3]")  # skipped: leading underscore
    (tmp_path / ".tmp.json").write_text("{partial")  # skipped: leading dot
    (tmp_path / "_archive").mkdir()
    (tmp_path / "_archive" / "old.json").write_text("{}")  # skipped: folder with leading underscore
    (tmp_path / "readme.txt").write_text("not json")  # not *.json
    recs = R.load_records(tmp_path)
    assert sorted((r["method"], r["seed"]) for r in recs) == [("a", 0), ("b", 1)]
    single = R.load_records(tmp_path / "a__synthetic__seed0.json")
    assert len(single) == 1 and single[0]["method"] == "a"
    assert R.load_records(tmp_path / "_archive" / ".." / "sub" / "deeper")[0]["method"] == "b"

    (tmp_path / "stray.json").write_text('{"hello": 1}')
    with pytest.raises(RecordError, match=r"stray\.json"):
        R.load_records(tmp_path)


def test_load_records_rejects_duplicates_and_missing(tmp_path):
    R.write_record(make_record("a"), tmp_path / "x")
    R.write_record(make_record("a"), tmp_path / "y")
    with pytest.raises(RecordError, match="duplicate run record a/synthetic/seed0"):
        R.load_records(tmp_path)
    with pytest.raises(RecordError, match="no such record file or folder"):
        R.load_records(tmp_path / "missing")


def test_record_exists_ignores_invalid_file(tmp_path):
    (tmp_path / R.record_filename("glccl", "synthetic", 0)).write_text("{}")
    assert not R.record_exists(tmp_path, "glccl", "synthetic", 0)


def test_records_to_frame():
    recs = [make_record("a", r1=40.0), make_record("b", seed=2, kind="cost", latency={"median": 3.0, "p90": 9.0})]
    df = R.records_to_frame(recs)
    assert list(df.columns[:4]) == ["method", "dataset", "seed", "kind"]
    for col in [
        "t2v_R@1", "t2v_R@5", "t2v_R@10", "t2v_MdR", "t2v_MnR", "t2v_RSum",
        "v2t_R@1", "v2t_RSum", "params_total", "params_trainable", "params_head",
        "flops_text_per_query", "flops_score_per_pair", "flops_per_query", "flops_video_per_video",
        "gallery_size", "memory_peak_bytes", "memory_kind", "latency_ms", "device",
    ]:  # fmt: skip
        assert col in df.columns, col
    assert len(df) == 2
    a, b = df.iloc[0], df.iloc[1]
    assert a["t2v_R@1"] == 40.0 and a["v2t_R@1"] == 39.0 and a["t2v_RSum"] == 40.0 + 60.0 + 70.0
    assert a["params_head"] == 1_500_000 and a["memory_kind"] == "cpu_peak_rss" and a["latency_ms"] == 1.5
    assert a["flops_per_query"] == pytest.approx(3.2e9) and a["gallery_size"] == 1000
    assert b["kind"] == "cost" and pd.isna(b["t2v_R@1"]) and b["latency_ms"] == 3.0 and b["seed"] == 2


def _with_ranks(rec: dict, seed: int = 0, n: int = 100) -> dict:
    """``rec`` with per-query ranks and the metrics that follow from them (what the runner writes)."""
    from tvr_bench.bench.metrics import summarize_ranks
    from tvr_bench.bench.rank_codec import encode_ranks

    rng = np.random.default_rng(seed)
    ranks = {d: rng.integers(1, 40, size=n).astype(float) for d in ("t2v", "v2t")}
    ranks["t2v"][0] = 3.5  # the mean tie policy's half ranks are kept exactly
    rec = copy.deepcopy(rec)
    rec["metrics"].update({d: summarize_ranks(r) for d, r in ranks.items()})
    rec["metrics"]["n_queries"] = {"t2v": n, "v2t": n}
    rec["metrics"]["ranks"] = {d: encode_ranks(r) for d, r in ranks.items()}
    return rec, ranks


def test_per_query_ranks_round_trip_and_must_match_the_metrics(tmp_path):
    from tvr_bench.bench.rank_codec import decode_ranks

    rec, ranks = _with_ranks(make_record())
    path = R.write_record(rec, tmp_path)
    back = R.load_record(path)
    for d in ("t2v", "v2t"):
        np.testing.assert_array_equal(decode_ranks(back["metrics"]["ranks"][d]), ranks[d])
    other, _ = _with_ranks(make_record(), seed=1)
    swapped = copy.deepcopy(rec)
    swapped["metrics"]["ranks"]["t2v"] = other["metrics"]["ranks"]["t2v"]  # another evaluation's ranks
    with pytest.raises(RecordError, match=r"ranks\.t2v give R@1 = .*the ranks are not this evaluation's"):
        R.validate_record(swapped)
    short, _ = _with_ranks(make_record(), n=100)
    short["metrics"]["n_queries"]["v2t"] = 99
    with pytest.raises(RecordError, match=r"ranks\.v2t holds 100 ranks for 99 queries"):
        R.validate_record(short)


@pytest.mark.parametrize("field,value,needle", [
    ("data", "!!!", "not valid zlib\\+base64"),
    ("n", 7, "holds 100 ranks, n says 7"),
    ("dtype", "<f8", "dtype"),
])
def test_damaged_rank_vector_is_named(field, value, needle):
    rec, _ = _with_ranks(make_record())
    rec["metrics"]["ranks"]["v2t"][field] = value
    with pytest.raises(RecordError, match=needle):
        R.validate_record(rec)


def test_rank_codec_picks_the_width_and_refuses_non_ranks():
    from tvr_bench.bench.rank_codec import decode_ranks, encode_ranks

    big = np.array([1.0, 40000.5, 7.0])
    block = encode_ranks(big)
    assert block["dtype"] == "<u4" and encode_ranks([1, 2])["dtype"] == "<u2"
    np.testing.assert_array_equal(decode_ranks(block), big)
    for bad in ([], [0.0, 1.0], [1.25], [[1.0]]):
        with pytest.raises(ValueError):
            encode_ranks(bad)
