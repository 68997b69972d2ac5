"""Comparison tables (tvr_bench.bench.report.compare)."""

from __future__ import annotations

import io
import os
import statistics

import pandas as pd
import pytest

from tvr_bench.bench.report.compare import FLOPS_CONVENTION, comparison_table
from tvr_bench.bench.report.report import write_comparison
from tvr_bench.bench.errors import BenchError
from tvr_bench.bench.records import SCHEMA_VERSION


def _block(r1: float, mdr: float = 2.0, mnr: float = 8.0) -> dict:
    r5, r10 = min(100.0, r1 + 20.0), min(100.0, r1 + 30.0)
    return {"R@1": r1, "R@5": r5, "R@10": r10, "MdR": mdr, "MnR": mnr, "RSum": r1 + r5 + r10}


def make_record(
    method="glccl",
    dataset="synthetic",
    seed=0,
    r1=40.0,
    *,
    kind="run",
    mnr=8.0,
    head=1_500_000,
    pair_flops=2.0e5,
    memory_kind="cpu_peak_rss",
    fingerprint="p1",
) -> dict:
    rec = {
        "schema_version": SCHEMA_VERSION,
        "method": method,
        "dataset": dataset,
        "seed": seed,
        "kind": kind,
        "metrics": None if kind == "cost" else {"t2v": _block(r1, mnr=mnr), "v2t": _block(r1 - 1.0, mnr=mnr)},
        "cost": {
            "params": {"total": 150_000_000, "trainable": 2_000_000, "head": head},
            "flops": {
                "text_per_query": 3.0e9,
                "score_per_pair": pair_flops,
                "per_query": 3.0e9 + 1000 * pair_flops,
                "video_per_video": 5.0e10,
                "gallery_size": 1000,
            },
            "memory": {"peak_bytes": 512 * 2**20, "kind": memory_kind},
            "latency_ms": 1.5,
            "device": "cpu",
        },
        "config": {},
        "provenance": {
            "git_sha": None,
            "git_dirty": None,
            "packages": {},
            "device": "cpu",
            "command": "bench run",
            "started_at": "2025-01-01T00:00:00",
            "finished_at": "2025-01-01T00:01:00",
        },
    }
    if fingerprint is not None:
        rec["protocol"] = {"fingerprint": fingerprint}
    return rec


SEED_R1 = [40.0, 42.0, 47.0]


@pytest.fixture
def records():
    recs = [make_record("glccl", seed=s, r1=r) for s, r in enumerate(SEED_R1)]
    recs.append(make_record("xpool_base", seed=0, r1=44.0, head=12_000_000, mnr=6.0))
    recs.append(make_record("glccl", dataset="msrvtt", seed=0, r1=30.0))
    return recs


def _md_row(md: str, dataset: str, method: str) -> list[str]:
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 2 and cells[0] == dataset and cells[1] == method:
            return cells
    raise AssertionError(f"no row for {dataset}/{method} in\n{md}")


def _md_header(md: str) -> list[str]:
    return [c.strip() for c in md.splitlines()[0].strip().strip("|").split("|")]


def test_markdown_has_every_method_and_mean_std(records):
    md = comparison_table(records)
    header = _md_header(md)
    for h in ["Dataset", "Method", "n_seeds", "T2V R@1", "T2V MdR", "T2V MnR", "V2T R@10", "V2T MnR", "T2V RSum",
              "Latency (ms)"]:  # fmt: skip
        assert h in header, h
    assert any(h.startswith("Peak mem (MiB, CPU peak RSS)") for h in header)
    assert "GFLOPs/query" in header and "kFLOPs/pair" in header and "Head params (M)" in header

    row = dict(zip(header, _md_row(md, "synthetic", "glccl")))
    mean, std = statistics.mean(SEED_R1), statistics.stdev(SEED_R1)  # ddof=1
    assert row["n_seeds"] == "3"
    assert row["T2V R@1"] == f"{mean:.1f} ± {std:.1f}"
    rsum = [r + (r + 20) + (r + 30) for r in SEED_R1]
    assert row["T2V RSum"] == f"{statistics.mean(rsum):.1f} ± {statistics.stdev(rsum):.1f}"
    assert row["Head params (M)"] == "1.50" and row["GFLOPs/query"] == "3.20" and row["kFLOPs/pair"] == "200"

    single = dict(zip(header, _md_row(md, "synthetic", "xpool_base")))
    assert single["T2V R@1"] == "44.0" and single["n_seeds"] == "1" and single["T2V MnR"] == "6.0"
    assert _md_row(md, "msrvtt", "glccl")[header.index("T2V R@1")] == "30.0"
    assert FLOPS_CONVENTION in md and "FlopCounterMode" in md and "2·MAC" in md
    assert "memory kind: CPU peak RSS" in md and "ddof=1" in md


def test_per_seed_rows(records):
    md = comparison_table(records, aggregate_seeds=False)
    header = _md_header(md)
    assert "Seed" in header and "n_seeds" not in header and "±" not in md.split("\n\n")[0]
    assert md.count("| synthetic | glccl ") == 3


def test_csv_parses_back_with_raw_numbers(records):
    df = pd.read_csv(io.StringIO(comparison_table(records, fmt="csv")))
    assert set(df["method"]) == {"glccl", "xpool_base"}
    g = df[(df.dataset == "synthetic") & (df.method == "glccl")].iloc[0]
    assert g["n_seeds"] == 3
    assert g["t2v_R@1_mean"] == pytest.approx(statistics.mean(SEED_R1))
    assert g["t2v_R@1_std"] == pytest.approx(statistics.stdev(SEED_R1))
    assert g["v2t_R@1_mean"] == pytest.approx(statistics.mean(SEED_R1) - 1.0)
    assert g["params_head_mean"] == 1_500_000 and g["flops_score_per_pair_mean"] == 2.0e5
    assert g["memory_peak_bytes_mean"] == 512 * 2**20 and g["memory_kind"] == "cpu_peak_rss"
    x = df[df.method == "xpool_base"].iloc[0]
    assert x["n_seeds"] == 1 and pd.isna(x["t2v_R@1_std"])
    assert df["t2v_R@1_mean"].dtype.kind == "f"  # no "±" strings in CSV

    per_seed = pd.read_csv(io.StringIO(comparison_table(records, fmt="csv", aggregate_seeds=False)))
    assert len(per_seed) == 5 and sorted(per_seed[per_seed.method == "glccl"]["t2v_R@1"]) == [30.0] + SEED_R1


def test_latex_tabular_with_bold_best(records):
    tex = comparison_table(records, fmt="latex")
    assert r"\begin{tabular}" in tex and r"\end{tabular}" in tex
    assert r"xpool\_base" in tex and r"n\_seeds" in tex  # underscores escaped
    assert r"$\pm$" in tex and "±" not in tex.split(r"\begin{tabular}")[1]
    syn_x = next(line for line in tex.splitlines() if line.startswith(r"synthetic & xpool\_base"))
    syn_g = next(line for line in tex.splitlines() if line.startswith("synthetic & glccl"))
    # these records keep no per-query ranks: no metric is bolded (a bare maximum would rank noise)
    assert r"\textbf{44.0}" not in syn_x and r"\textbf{6.0}" not in syn_x
    assert r"\textbf{1.50}" in syn_g  # fewer head parameters (lower is better)
    msr = next(line for line in tex.splitlines() if line.startswith("msrvtt"))
    assert r"\textbf" not in msr  # single-row dataset block: nothing to compare
    assert comparison_table(records, fmt="tex") == tex


def test_units_adapt_and_mixed_memory_kinds():
    recs = [
        make_record("a", pair_flops=512.0, head=4_000),
        make_record("b", pair_flops=2_000.0, head=8_000, memory_kind="cuda_allocated_peak"),
    ]
    md = comparison_table(recs)
    header = _md_header(md)
    assert "kFLOPs/pair" in header and "Head params (k)" in header
    assert "Memory kind" in header and "Peak mem (MiB)" in header
    assert dict(zip(header, _md_row(md, "synthetic", "b")))["Memory kind"] == "CUDA allocated peak"
    assert dict(zip(header, _md_row(md, "synthetic", "a")))["kFLOPs/pair"] == "0.512"


def test_run_and_cost_record_of_one_seed_count_once():
    run = make_record("a")
    cost = make_record("a", kind="cost", head=3_000_000)
    md = comparison_table([cost, run])
    row = dict(zip(_md_header(md), _md_row(md, "synthetic", "a")))
    assert row["n_seeds"] == "1" and row["T2V R@1"] == "40.0"
    assert row["Head params (M)"] == "1.50"  # the run record's own cost wins
    only_cost = comparison_table([make_record("c", kind="cost")])
    assert dict(zip(_md_header(only_cost), _md_row(only_cost, "synthetic", "c")))["T2V R@1"] == "–"


def test_refuses_mixed_protocols(records):
    bad = records + [make_record("other", seed=0, fingerprint="p2")]
    with pytest.raises(BenchError) as ei:
        comparison_table(bad)
    msg = str(ei.value)
    assert "glccl/synthetic/seed0" in msg and "other/synthetic/seed0" in msg and "p2" in msg
    # a different fingerprint on another dataset, or a record without one, is fine
    ok = [make_record("a", fingerprint="p1"), make_record("b", dataset="msrvtt", fingerprint="p9"),
          make_record("nofp", fingerprint=None)]  # fmt: skip
    assert "nofp" in comparison_table(ok)


def test_bad_inputs():
    with pytest.raises(BenchError, match="no run records"):
        comparison_table([])
    with pytest.raises(BenchError, match="unknown table format"):
        comparison_table([make_record()], fmt="html")
    with pytest.raises(BenchError, match="duplicate"):
        comparison_table([make_record(), make_record()])
    bad = make_record()
    bad["metrics"]["t2v"]["R@1"] = 130.0
    with pytest.raises(BenchError, match=r"metrics\.t2v\.R@1"):
        comparison_table([bad])


def test_write_comparison(tmp_path, records):
    paths = write_comparison(records, tmp_path / "report")
    assert [p.name for p in paths] == ["comparison.md", "comparison.csv", "comparison.tex"]
    assert sorted(os.listdir(tmp_path / "report")) == ["comparison.csv", "comparison.md", "comparison.tex"]
    assert paths[0].read_text(encoding="utf-8") == comparison_table(records)
    assert pd.read_csv(paths[1]).shape[0] == 3

    with pytest.raises(BenchError):
        write_comparison(records + [make_record("z", fingerprint="other")], tmp_path / "nothing")
    assert not (tmp_path / "nothing").exists()
    with pytest.raises(BenchError, match="unknown table format"):
        write_comparison(records, tmp_path / "nothing", formats=("md", "pdf"))
    assert not (tmp_path / "nothing").exists()
