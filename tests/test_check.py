"""Regression check against a baseline (tvr_bench.bench.report.check)."""

from __future__ import annotations

import copy
import json

import pytest

from tvr_bench.bench.report.baseline import load_baseline
from tvr_bench.bench.report.check import check_records
from tvr_bench.bench.report.tolerance import DEFAULT_TOLERANCES, Tolerance, parse_tolerance_overrides
from tvr_bench.bench.errors import ConfigError, RecordError, RegressionError
from tvr_bench.bench.records import SCHEMA_VERSION, write_record


def _block(r1: float, mdr: float = 3.0, mnr: float = 20.0) -> dict:
    r5, r10 = min(100.0, r1 + 20.0), min(100.0, r1 + 30.0)
    return {"R@1": r1, "R@5": r5, "R@10": r10, "MdR": mdr, "MnR": mnr, "RSum": r1 + r5 + r10}


def make_record(method="glccl", dataset="synthetic", seed=0, r1=40.0, *, mdr=3.0, mnr=20.0, kind="run") -> dict:
    return {
        "schema_version": SCHEMA_VERSION,
        "method": method,
        "dataset": dataset,
        "seed": seed,
        "kind": kind,
        "metrics": None if kind == "cost" else {"t2v": _block(r1, mdr, mnr), "v2t": _block(r1, mdr, mnr)},
        "cost": {
            "params": {"total": 1000, "trainable": 100, "head": 50},
            "flops": {
                "text_per_query": 1.0e6,
                "score_per_pair": 2.0e3,
                "per_query": 1.0e6 + 100 * 2.0e3,
                "video_per_video": 5.0e6,
                "gallery_size": 100,
            },
            "memory": {"peak_bytes": 2**20, "kind": "cpu_peak_rss"},
            "latency_ms": 2.0,
            "device": "cpu",
        },
        "config": {},
        "provenance": {
            "git_sha": "abc",
            "git_dirty": False,
            "packages": {},
            "device": "cpu",
            "command": "bench run",
            "started_at": "2025-01-01T00:00:00",
            "finished_at": "2025-01-01T00:01:00",
        },
        "protocol": {"fingerprint": "p1"},
    }


def _with_t2v(rec: dict, **changes) -> dict:
    """Copy of rec with t2v metrics changed (RSum kept consistent)."""
    rec = copy.deepcopy(rec)
    t = rec["metrics"]["t2v"]
    t.update(changes)
    t["RSum"] = t["R@1"] + t["R@5"] + t["R@10"]
    return rec


@pytest.fixture
def baseline():
    return [make_record("glccl", seed=s) for s in (0, 1)] + [make_record("xpool", seed=0, r1=35.0)]


def test_identical_records_pass(baseline):
    report = check_records(copy.deepcopy(baseline), baseline)
    assert report.ok and report.failures == [] and report.improvements == []
    assert "PASSED" in report.render()
    report.raise_for_failures()  # no exception


def test_r1_drop_beyond_tolerance_fails(baseline):
    current = copy.deepcopy(baseline)
    current[0] = _with_t2v(current[0], **{"R@1": 36.5})  # -3.5 points, tolerance 2.0
    report = check_records(current, baseline)
    assert not report.ok
    [fail] = report.failures
    assert (fail.method, fail.dataset, fail.seed, fail.direction, fail.metric) == ("glccl", "synthetic", 0, "t2v", "R@1")
    assert fail.verdict == "regressed" and fail.delta == pytest.approx(-3.5)
    text = report.render()
    for piece in ("FAILED", "glccl", "synthetic", "t2v", "R@1", "40.00", "36.50", "-3.50", "REGRESSED"):
        assert piece in text, piece
    with pytest.raises(RegressionError) as ei:
        report.raise_for_failures()
    assert "R@1" in str(ei.value) and ei.value.exit_code == 1


def test_drop_within_tolerance_passes(baseline):
    current = copy.deepcopy(baseline)
    current[0] = _with_t2v(current[0], **{"R@1": 38.5})  # -1.5 < 2.0
    current[1]["metrics"]["v2t"]["MnR"] = 22.5  # +12.5 % < 15 %
    report = check_records(current, baseline)
    assert report.ok, report.render()
    # exactly at the tolerance still passes
    current[0] = _with_t2v(current[0], **{"R@1": 38.0})
    assert check_records(current, baseline).ok


def test_rank_metrics_are_lower_is_better(baseline):
    current = copy.deepcopy(baseline)
    current[0] = _with_t2v(current[0], MdR=5.0)  # +2 ranks, tolerance 1
    current[1]["metrics"]["v2t"]["MnR"] = 24.0  # +20 % > 15 %
    report = check_records(current, baseline)
    assert not report.ok
    assert {(f.direction, f.metric) for f in report.failures} == {("t2v", "MdR"), ("v2t", "MnR")}

    better = copy.deepcopy(baseline)
    better[0] = _with_t2v(better[0], MdR=1.0)  # -2 ranks: an improvement
    report = check_records(better, baseline)
    assert report.ok and [(r.metric, r.verdict) for r in report.improvements] == [("MdR", "improved")]


def test_improvement_is_reported_but_passes(baseline):
    current = copy.deepcopy(baseline)
    current[2] = _with_t2v(current[2], **{"R@1": 41.0})  # +6 points, and RSum +6 (> 5)
    report = check_records(current, baseline)
    assert report.ok
    assert {r.metric for r in report.improvements} == {"R@1", "RSum"}
    text = report.render()
    assert "improved" in text and "refresh the baseline" in text and "xpool" in text


def test_missing_run_fails_extra_run_is_info(baseline):
    report = check_records(baseline[:2], baseline)
    assert not report.ok
    [fail] = report.failures
    assert fail.verdict == "missing run" and fail.method == "xpool"
    assert "missing run" in report.render().lower()

    extra = baseline + [make_record("new_method")]
    report = check_records(extra, baseline)
    assert report.ok and [r.method for r in report.extras] == ["new_method"]
    assert "extra run" in report.render()


def test_missing_metric_fails(baseline):
    current = copy.deepcopy(baseline)
    del current[0]["metrics"]["v2t"]["MdR"]
    with pytest.raises(RecordError):  # records are validated first
        check_records(current, baseline)
    # a cost-only record is a different entry from the run record of the same seed
    cost = make_record("glccl", seed=0, kind="cost")
    report = check_records([cost] + baseline[1:], baseline)
    assert [f.verdict for f in report.failures] == ["missing run"]
    assert [r.kind for r in report.extras] == ["cost"]


def test_cost_metrics(baseline):
    current = copy.deepcopy(baseline)
    current[0]["cost"]["params"]["head"] = 51  # params are exact
    current[1]["cost"]["flops"]["score_per_pair"] = 2.0e3 * (1 + 1e-9)  # float noise: fine
    current[2]["cost"]["latency_ms"] = 50.0  # not checked by default
    current[2]["cost"]["memory"]["peak_bytes"] = 2**30
    report = check_records(current, baseline)
    assert [(f.metric, f.verdict, f.seed) for f in report.failures] == [("params_head", "changed", 0)]

    current[1]["cost"]["flops"]["score_per_pair"] = 2.5e3
    current[1]["cost"]["flops"]["per_query"] = 1.0e6 + 100 * 2.5e3
    report = check_records(current, baseline, tolerances={"latency_ms": "50%"})
    assert {f.metric for f in report.failures} == {"params_head", "flops_score_per_pair", "flops_per_query", "latency_ms"}


def test_protocol_change_fails(baseline):
    current = copy.deepcopy(baseline)
    current[0]["protocol"]["fingerprint"] = "p2"
    [fail] = check_records(current, baseline).failures
    assert fail.metric == "protocol fingerprint" and fail.verdict == "changed"


def test_tolerance_overrides(baseline):
    current = copy.deepcopy(baseline)
    current[0] = _with_t2v(current[0], **{"R@1": 37.0})  # -3 points (RSum -3 is within 5)
    assert not check_records(current, baseline).ok
    assert check_records(current, baseline, tolerances=parse_tolerance_overrides(["R@1=3.5"])).ok
    assert check_records(current, baseline, tolerances={"t2v.R@1": 4}).ok
    assert not check_records(current, baseline, tolerances={"v2t.R@1": 4}).ok  # other direction only
    assert check_records(current, baseline, tolerances={"R@1": None}).ok  # metric switched off


def test_parse_tolerance_overrides():
    tol = parse_tolerance_overrides(["R@1=1.5", "MnR=10%", "t2v.mdr=2", "RSum=2+5%, latency_ms=off", "params_head=exact"])
    assert tol["R@1"] == Tolerance("higher", abs=1.5)
    assert tol["MnR"] == Tolerance("lower", rel=0.10)
    assert tol["t2v.MdR"] == Tolerance("lower", abs=2.0)
    assert tol["RSum"] == Tolerance("higher", abs=2.0, rel=0.05)
    assert tol["latency_ms"] is None and tol["params_head"] == Tolerance("equal")
    assert tol["MnR"].allowed(40.0) == pytest.approx(4.0) and tol["RSum"].describe() == "max(2, 5%)"
    assert parse_tolerance_overrides(None) == {} and parse_tolerance_overrides("R@5=1")["R@5"].abs == 1.0
    for bad in ["R@2=1", "R@1", "R@1=abc", "R@1=-1", "x2v.R@1=1", "t2v.params_head=0"]:
        with pytest.raises(ConfigError):
            parse_tolerance_overrides([bad])


def test_defaults_are_direction_aware():
    assert DEFAULT_TOLERANCES["R@1"].direction == "higher" and DEFAULT_TOLERANCES["R@1"].abs == 2.0
    assert DEFAULT_TOLERANCES["RSum"].abs == 5.0
    assert DEFAULT_TOLERANCES["MdR"].direction == "lower" and DEFAULT_TOLERANCES["MnR"].rel == 0.15
    assert DEFAULT_TOLERANCES["params_total"].direction == "equal"
    assert DEFAULT_TOLERANCES["latency_ms"] is None


def test_load_baseline_formats(tmp_path, baseline):
    one = tmp_path / "one.json"
    one.write_text(json.dumps(baseline[0]))
    recs, tol = load_baseline(one)
    assert len(recs) == 1 and tol == {}

    many = tmp_path / "many.json"
    many.write_text(json.dumps(baseline))
    recs, tol = load_baseline(many)
    assert [r["method"] for r in recs] == ["glccl", "glccl", "xpool"] and tol == {}

    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps({"records": baseline, "tolerances": {"R@1": "3.5", "MnR": "25%", "MdR": 2}}))
    recs, tol = load_baseline(wrapped)
    assert len(recs) == 3
    assert tol["R@1"] == Tolerance("higher", abs=3.5) and tol["MnR"].rel == 0.25 and tol["MdR"].abs == 2.0
    current = [_with_t2v(baseline[0], **{"R@1": 37.0})] + baseline[1:]
    assert not check_records(current, recs).ok
    assert check_records(current, recs, tol).ok

    folder = tmp_path / "runs"
    for rec in baseline:
        write_record(rec, folder)
    recs, tol = load_baseline(folder)
    assert sorted((r["method"], r["seed"]) for r in recs) == [("glccl", 0), ("glccl", 1), ("xpool", 0)]
    assert check_records(baseline, recs).ok


def test_load_baseline_errors(tmp_path, baseline):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text("[")
    with pytest.raises(RecordError, match=r"bad\.json: baseline is not valid JSON"):
        load_baseline(bad_json)
    bad_rec = copy.deepcopy(baseline)
    bad_rec[1]["metrics"]["t2v"]["R@1"] = 130
    f = tmp_path / "list.json"
    f.write_text(json.dumps({"records": bad_rec}))
    with pytest.raises(RecordError, match=r"(?s)records\[1\].*metrics\.t2v\.R@1: Input should be less than or equal to 100"):
        load_baseline(f)
    f.write_text(json.dumps({"records": baseline, "tolerances": {"R@7": 1}}))
    with pytest.raises(RecordError, match="tolerances"):
        load_baseline(f)
    f.write_text(json.dumps(baseline + [baseline[0]]))
    with pytest.raises(RecordError, match="duplicate"):
        load_baseline(f)
    with pytest.raises(RecordError, match="not found"):
        load_baseline(tmp_path / "nope.json")


def test_baseline_from_seed_spread_sets_per_method_tolerances(tmp_path):
    """build_baseline: seed-0 records; each method's tolerance = max(default, k * std over seeds)."""
    from tvr_bench.bench.report.baseline import build_baseline

    noisy = [make_record("glccl", seed=s, r1=r) for s, r in enumerate([20.0, 26.0, 14.0, 20.0])]
    stable = [make_record("meanp", seed=s, r1=r) for s, r in enumerate([10.0, 10.5, 9.5])]
    data = build_baseline(noisy + stable, k=3.0)
    assert [r["method"] for r in data["records"]] == ["glccl", "meanp"]
    assert all(r["seed"] == 0 for r in data["records"])
    sd = 4.898979  # sample std of 20, 26, 14, 20
    assert data["method_tolerances"]["glccl"]["t2v.R@1"]["abs"] == pytest.approx(3 * sd, abs=0.01)
    # meanp's own spread (std 0.5) is below the median over methods, which is the floor: 3 * (4.899 + 0.5) / 2
    assert data["method_tolerances"]["meanp"]["t2v.R@1"]["abs"] == pytest.approx(3 * (sd + 0.5) / 2, abs=0.01)
    path = tmp_path / "base.json"
    path.write_text(json.dumps(data))
    base = load_baseline(path)
    # a drop of 10 points is within glccl's spread but far outside meanp's
    cur = [make_record("glccl", r1=10.0), make_record("meanp", r1=0.5)]
    report = check_records(cur, base.records, base.tolerances, base.method_tolerances)
    failed = {(r.method, r.metric) for r in report.failures}
    assert ("meanp", "R@1") in failed and not any(m == "glccl" and k == "R@1" for m, k in failed)
    with pytest.raises(ConfigError, match="need >= 3"):
        build_baseline(noisy + stable[:2])
    # borrowing: a method with too few seeds gets the largest measured spread, and the file says so
    borrowed = build_baseline(noisy + stable[:1], k=3.0, borrow=True)
    assert borrowed["method_tolerances"]["meanp"]["t2v.R@1"]["abs"] == pytest.approx(3 * sd, abs=0.01)
    assert "borrowed" in borrowed["seed_spread"]["meanp"] and "borrowed" not in borrowed["seed_spread"]["glccl"]


# ---- paired tests when both records keep per-query ranks ---------------------------------------------------

def _ranked(ranks_t2v, ranks_v2t, method="glccl"):
    import numpy as np

    from tvr_bench.bench.metrics import summarize_ranks
    from tvr_bench.bench.rank_codec import encode_ranks

    rec = make_record(method)
    ranks = {"t2v": np.asarray(ranks_t2v, float), "v2t": np.asarray(ranks_v2t, float)}
    rec["metrics"] = {**{d: summarize_ranks(r) for d, r in ranks.items()},
                      "ranks": {d: encode_ranks(r) for d, r in ranks.items()}}
    return rec


def _paired_case(n: int, flip: int, seed: int = 0):
    """Baseline ranks and a current run that lost ``flip`` top-1 hits (found at rank 2 instead)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    base = rng.integers(1, 20, size=n).astype(float)
    base[: n // 2] = 1.0
    cur = base.copy()
    cur[:flip] = 2.0
    return base, cur


def test_a_consistent_small_loss_on_many_queries_fails_though_within_tolerance():
    base, cur = _paired_case(n=4000, flip=60)  # R@1 -1.5 points: inside the 2-point tolerance
    report = check_records([_ranked(cur, base)], [_ranked(base, base)])
    row = next(r for r in report.rows if r.direction == "t2v" and r.metric == "R@1")
    assert row.delta == pytest.approx(-1.5) and row.verdict == "regressed" and "paired p=" in row.tolerance
    assert not report.ok
    by_tolerance = check_records([_ranked(cur, base)], [_ranked(base, base)], paired=False)
    assert by_tolerance.ok  # the old rule lets it through


def test_a_large_move_the_test_cannot_separate_from_noise_passes():
    base, cur = _paired_case(n=20, flip=2)  # R@1 -10 points, but on 2 of 20 queries
    report = check_records([_ranked(cur, base)], [_ranked(base, base)])
    row = next(r for r in report.rows if r.direction == "t2v" and r.metric == "R@1")
    assert row.delta == pytest.approx(-10.0) and row.verdict == "ok"
    assert report.ok
    assert not check_records([_ranked(cur, base)], [_ranked(base, base)], paired=False).ok


def test_identical_ranks_pass_and_gains_are_improvements():
    base, cur = _paired_case(n=4000, flip=200)
    assert check_records([_ranked(base, base)], [_ranked(base, base)]).ok
    report = check_records([_ranked(base, base)], [_ranked(cur, cur)])  # current is the better one
    assert report.ok and {r.metric for r in report.improvements} >= {"R@1"}


def test_a_seed_spread_baseline_is_judged_by_its_tolerances(tmp_path):
    from tvr_bench.bench.report.baseline import build_baseline

    base, cur = _paired_case(n=4000, flip=60)
    recs = []
    for seed in range(3):
        rec = _ranked(base, base)
        rec["seed"] = seed
        recs.append(rec)
    data = build_baseline(recs)
    assert data["judge"] == "tolerance"
    path = tmp_path / "b.json"
    path.write_text(json.dumps(data))
    loaded = load_baseline(path)
    folder = tmp_path / "records"
    write_record(recs[0], folder)
    assert loaded.paired is False and load_baseline(folder).paired is True
