"""Intervals, "cannot be told apart" marking and paired tests in comparison tables, from per-query ranks."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from tvr_bench.bench.errors import BenchError
from tvr_bench.bench.metrics import summarize_ranks
from tvr_bench.bench.rank_codec import encode_ranks
from tvr_bench.bench.records import SCHEMA_VERSION, write_record
from tvr_bench.bench.report import stats as S
from tvr_bench.bench.report import uncertainty as U
from tvr_bench.bench.report.compare import comparison_table

N = 300  # queries (= gallery videos)


def ranked_record(method: str, seed: int, ranks_t2v: np.ndarray, ranks_v2t: np.ndarray) -> dict:
    ranks = {"t2v": ranks_t2v, "v2t": ranks_v2t}
    return {
        "schema_version": SCHEMA_VERSION, "method": method, "dataset": "synthetic", "seed": seed, "kind": "run",
        "metrics": {**{d: summarize_ranks(r) for d, r in ranks.items()}, "n_queries": {"t2v": N, "v2t": N},
                    "ranks": {d: encode_ranks(r) for d, r in ranks.items()}},
        "cost": {"params": {"total": 10, "trainable": 5, "head": 1},
                 "flops": {"text_per_query": 1.0, "score_per_pair": 1.0, "per_query": 1.0 + N,
                           "video_per_video": 1.0, "gallery_size": N},
                 "memory": {"peak_bytes": 1, "kind": "cpu_peak_rss"}, "latency_ms": 1.0, "device": "cpu"},
        "config": {},
        "provenance": {"git_sha": None, "git_dirty": None, "packages": {}, "device": "cpu",
                       "command": ["bench"], "started_at": "2026-01-01T00:00:00+00:00",
                       "finished_at": "2026-01-01T00:00:01+00:00"},
        "protocol": {"fingerprint": "p"},
    }


def _ranks(rng, easiness: np.ndarray, good: float) -> np.ndarray:
    """A method that finds a query first when the query is easy enough for it (query difficulty is shared by
    methods and seeds, as on a real test set; a little per-seed jitter), else ranks it anywhere in the gallery."""
    r = rng.integers(2, N + 1, size=N).astype(float)
    r[easiness + rng.normal(0, 0.03, size=N) < good] = 1.0
    return r


@pytest.fixture(scope="module")
def runs():
    """strong (R@1 ~ 60 %), twin (the same model, other seeds: not separable), weak (~ 20 %); 3 seeds each."""
    rng = np.random.default_rng(0)
    easiness = {d: rng.random(N) for d in ("t2v", "v2t")}
    recs, arrays = [], {}
    for method, good in (("strong", 0.60), ("twin", 0.60), ("weak", 0.20)):
        rows = []
        for seed in range(3):
            t, v = _ranks(rng, easiness["t2v"], good), _ranks(rng, easiness["v2t"], good)
            recs.append(ranked_record(method, seed, t, v))
            rows.append(t)
        arrays[method] = np.stack(rows)
    return recs, arrays


def _cells(md: str, method: str) -> dict[str, str]:
    lines = [ln for ln in md.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    for ln in lines[2:]:
        cells = [c.strip() for c in ln.strip("|").split("|")]
        if cells[1] == method:
            return dict(zip(header, cells))
    raise AssertionError(method)


def test_cells_show_the_two_stage_bootstrap_interval(runs):
    recs, arrays = runs
    md = comparison_table(recs)
    lo, hi = S.bootstrap_ci(arrays["strong"], "R@1", n_boot=U.N_BOOT)
    value = S.metric_from_ranks(arrays["strong"], "R@1")
    assert _cells(md, "strong")["T2V R@1"].strip("*") == f"{value:.1f} [{lo:.1f}, {hi:.1f}]"
    assert "two-stage" in md and "95 % CI" in md


def test_bold_marks_the_best_and_what_cannot_be_told_apart_from_it(runs):
    recs, _ = runs
    md = comparison_table(recs)
    strong, twin, weak = (_cells(md, m)["T2V R@1"] for m in ("strong", "twin", "weak"))
    assert strong.startswith("**") and twin.startswith("**")  # one leads by chance; the other is not separable
    assert not weak.startswith("**")  # 20 is
    assert "cannot separate" in md


def test_per_seed_rows_get_query_intervals_and_no_marking(runs):
    recs, arrays = runs
    md = comparison_table(recs, aggregate_seeds=False)
    lo, hi = S.bootstrap_ci(arrays["weak"][1], "R@1", n_boot=U.N_BOOT)
    assert any(f"[{lo:.1f}, {hi:.1f}]" in ln for ln in md.splitlines() if "| weak" in ln)
    assert "**" not in md.split("\n\n")[0]


def test_csv_has_interval_columns(runs):
    recs, arrays = runs
    df = pd.read_csv(io.StringIO(comparison_table(recs, fmt="csv")))
    row = df[df.method == "twin"].iloc[0]
    lo, hi = S.bootstrap_ci(arrays["twin"], "MnR", n_boot=U.N_BOOT)
    assert row["t2v_MnR_ci_low"] == pytest.approx(lo) and row["t2v_MnR_ci_high"] == pytest.approx(hi)
    cols = list(df.columns)
    assert cols.index("t2v_R@1_mean") < cols.index("t2v_R@1_ci_low") < cols.index("t2v_R@1_ci_high")


def test_versus_equals_the_paired_tests_with_holm(runs):
    recs, arrays = runs
    rows = U.versus(U.rank_arrays(recs), "strong", metrics=["R@1", "MnR"])
    got = {(r.method, r.direction, r.metric): r for r in rows}
    assert {m for m, _, _ in got} == {"twin", "weak"} and len(got) == 8
    raw = got[("weak", "t2v", "R@1")]
    assert raw.p == S.paired_test(arrays["weak"], arrays["strong"], "R@1", n_resamples=U.N_RESAMPLES_DEFAULT)
    assert raw.significant() and raw.difference < -30
    assert not got[("twin", "t2v", "R@1")].significant()
    assert {k: r.p_holm for k, r in got.items()} == S.holm({k: r.p for k, r in got.items()})


def test_cli_compare_vs(tmp_path, runs):
    from tvr_bench.cli import main

    recs, _ = runs
    for rec in recs:
        write_record(rec, tmp_path)
    res = CliRunner().invoke(main, ["compare", str(tmp_path), "--vs", "strong"])
    assert res.exit_code == 0, res.output
    assert "vs strong" in res.output and "Holm" in res.output
    weak = [ln for ln in res.output.splitlines() if "| weak " in ln and "| t2v " in ln]
    twin = [ln for ln in res.output.splitlines() if "| twin " in ln and "| t2v " in ln]
    assert len(weak) == 1 and weak[0].count("**") >= 2 and "**-" in weak[0]  # weak is significantly worse
    assert len(twin) == 1 and "**" not in twin[0].split("|")[4]  # twin's R@1: not separable
    bad = CliRunner().invoke(main, ["compare", str(tmp_path), "--vs", "nope"])
    assert bad.exit_code == 2 and "--vs nope: no run records of that method" in bad.output


def test_records_without_ranks_are_named_and_refused_by_vs(runs):
    recs, _ = runs
    old = [dict(r, metrics={k: v for k, v in r["metrics"].items() if k != "ranks"}) if r["method"] == "weak" else r
           for r in recs]
    md = comparison_table(old)
    assert "No interval and no best marking for: weak/synthetic" in md and "**" not in md.split("\n\n")[0]
    with pytest.raises(BenchError, match="records of weak on synthetic have none"):
        U.versus(U.rank_arrays(old), "strong")


def test_figure_points_and_report_carry_the_interval(tmp_path, runs):
    from tvr_bench.bench.report.report import plot_points, write_report

    recs, arrays = runs
    pts = {p["method"]: p for p in plot_points(recs)}
    assert pts["weak"]["r1_ci"] == S.bootstrap_ci(arrays["weak"], "R@1", n_boot=U.N_BOOT)
    md, png = write_report(recs, tmp_path / "r.md")
    lo, hi = pts["strong"]["r1_ci"]
    assert f"[{lo:.1f}, {hi:.1f}]" in md.read_text() and png.stat().st_size > 1000
