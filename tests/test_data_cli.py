"""`bench data verify|prepare`, and how `bench run` treats missing, unreadable and cached videos."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tvr_bench.cli import main

REAL = Path("/work/shared/data")
real = pytest.mark.skipif(not (REAL / "msrvtt" / "MSRVTT_JSFUSION_test.csv").is_file(),
                          reason="real annotation files absent")


def _rf():
    return sys.modules["tvr_bench_real_fixtures"]  # tests/real_fixtures.py, loaded by conftest.py


def invoke(*args: str):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def msrvtt(tmp_path_factory) -> Path:
    return _rf().build_msrvtt(tmp_path_factory.mktemp("msrvtt") / "root", "clip4clip")


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


# --------------------------------------------------------------------------------------------------------------
# verify
# --------------------------------------------------------------------------------------------------------------


@real
def test_verify_real_msrvtt_annotations():
    res = invoke("data", "verify", "--dataset", "msrvtt", "--root", REAL / "msrvtt", "--annotations-only")
    assert res.exit_code == 0, res.output
    lines = {line.split()[0]: line for line in res.output.splitlines() if line.startswith("  ")}
    assert "9,000" in lines["train"] and "180,000" in lines["train"] and lines["train"].endswith("ok")
    assert lines["test"].split()[1:4] == ["1,000", "1,000", "1,000"] and lines["test"].endswith("ok")
    assert "matches the published file" in res.output and "verify: ok (annotations only)" in res.output


@real
def test_verify_real_didemo_test_and_missing_videos():
    res = invoke("data", "verify", "--dataset", "didemo", "--root", REAL / "didemo", "--split", "test",
                 "--annotations-only")
    assert res.exit_code == 0, res.output
    row = next(line for line in res.output.splitlines() if line.startswith("  test "))
    assert row.split()[1:4] == ["1,037", "4,021", "1,037"] and "non-standard split" in row
    assert "descriptions" in res.output and "paragraphs" in res.output
    # without --annotations-only the videos the protocol needs are missing: listed, exit 2
    res = invoke("data", "verify", "--dataset", "didemo", "--root", REAL / "didemo", "--split", "test")
    assert res.exit_code == 2
    assert "0 of 1,037 found, 1,037 missing" in res.output and "26292851@N04_4253489686_265c3c8051.m4v" in res.output
    assert "1,037 missing video(s)" in res.output


def test_verify_fixture_ok_then_missing_and_unreadable_listed(tmp_path, msrvtt):
    res = invoke("data", "verify", "--dataset", "msrvtt", "--root", msrvtt)
    assert res.exit_code == 0, res.output
    assert "opened 16 videos: 0 unreadable" in res.output and "verify: ok" in res.output
    root = _copy(msrvtt, tmp_path / "damaged")
    for vid in ("video0", "video5", "video14"):
        (root / "videos" / "all" / f"{vid}.mp4").unlink()
    (root / "videos" / "all" / "video7.mp4").write_bytes(b"")
    res = invoke("data", "verify", "--dataset", "msrvtt", "--root", root, "--list-missing")
    assert res.exit_code == 2
    assert "missing: video0, video5" in res.output and "missing: video14" in res.output
    assert "unreadable video7" in res.output and "video7.mp4" in res.output
    assert "3 missing video(s), 1 unreadable video(s)" in res.output


@pytest.mark.parametrize("args,needle", [
    (["--root", "/nonexistent/msrvtt"], "root folder not found: /nonexistent/msrvtt"),
    (["--dataset", "synthetic"], "bench data works on the real datasets"),
    (["--dataset", "msrvt"], "Did you mean: msrvtt"),
    (["--set", "data.msrvtt.train_split=5k"], "train_split must be 9k or 7k"),
])
def test_verify_bad_input(msrvtt, args, needle):
    base = {"--dataset": "msrvtt", "--root": str(msrvtt)}
    base.update(dict(zip(args[::2], args[1::2])))
    res = invoke("data", "verify", *[x for kv in base.items() for x in kv])
    assert res.exit_code == 2 and needle in res.output, res.output


def test_root_that_is_a_file_and_root_for_two_datasets(tmp_path, msrvtt):
    f = tmp_path / "file.txt"
    f.write_text("x")
    res = invoke("data", "verify", "--dataset", "msrvtt", "--root", f)
    assert res.exit_code == 2 and "root is not a folder" in res.output
    res = invoke("run", "--method", "glccl", "--dataset", "msrvtt,didemo", "--root", msrvtt, "--out", tmp_path / "o")
    assert res.exit_code == 2 and "--root names the files of one dataset" in res.output


# --------------------------------------------------------------------------------------------------------------
# prepare, and runs reading the cache
# --------------------------------------------------------------------------------------------------------------


def test_prepare_then_run_reads_the_cache(tmp_path, msrvtt):
    cache = tmp_path / "cache"
    prep = ["data", "prepare", "--dataset", "msrvtt", "--root", msrvtt, "--cache-dir", cache, "--workers", "2",
            "--no-progress", "--set", "data.max_frames=4"]
    res = invoke(*prep)
    assert res.exit_code == 0, res.output
    assert "prepared 16 videos" in res.output and "0 already cached; 0 failed" in res.output
    entries = list((cache / "frames" / "msrvtt").glob("F4-*/*.npy"))
    assert len(entries) == 16
    again = invoke(*prep)
    assert again.exit_code == 0 and "prepared 0 videos" in again.output and "16 already cached" in again.output
    out = tmp_path / "out"
    args = _rf().run_args("msrvtt", msrvtt, out, cache)
    args.remove("--quiet")
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert "16/16 videos cached" in res.output


def test_prepare_reports_corrupt_and_missing_videos_and_caches_the_rest(tmp_path, msrvtt):
    root = _copy(msrvtt, tmp_path / "root")
    (root / "videos" / "all" / "video2.mp4").write_bytes(b"\x00" * 1000)
    (root / "videos" / "all" / "video9.mp4").unlink()
    cache = tmp_path / "cache"
    res = invoke("data", "prepare", "--dataset", "msrvtt", "--root", root, "--cache-dir", cache, "--workers", "1",
                 "--no-progress", "--set", "data.max_frames=4")
    assert res.exit_code == 2, res.output
    assert "prepared 14 videos" in res.output and "2 failed" in res.output
    assert "failed video2:" in res.output and "video2.mp4" in res.output and "failed video9:" in res.output
    names = {p.name.split(".")[0] for p in (cache / "frames" / "msrvtt").glob("F4-*/*.npy")}
    assert len(names) == 14 and "video2" not in names


# --------------------------------------------------------------------------------------------------------------
# runs never shrink a split silently
# --------------------------------------------------------------------------------------------------------------


def test_run_stops_on_missing_videos_listing_all_of_them(tmp_path, msrvtt):
    root = _copy(msrvtt, tmp_path / "root")
    for vid in ("video11", "video12", "video15"):
        (root / "videos" / "all" / f"{vid}.mp4").unlink()
    out = tmp_path / "out"
    res = CliRunner().invoke(main, _rf().run_args("msrvtt", root, out, tmp_path / "cache"))
    assert res.exit_code == 2, res.output
    assert "msrvtt/test: 3 of 4 videos not found" in res.output
    assert all(v in res.output for v in ("video11", "video12", "video15")) and "data.allow_missing" in res.output
    assert not out.exists() or not list(out.glob("*.json"))


def test_allow_missing_runs_on_the_rest_and_records_the_reduction(tmp_path, msrvtt):
    from tvr_bench.bench.records import load_record

    root = _copy(msrvtt, tmp_path / "root")
    (root / "videos" / "all" / "video11.mp4").unlink()
    (root / "videos" / "all" / "video12.mp4").write_bytes(b"not a video at all")
    out = tmp_path / "out"
    res = CliRunner().invoke(main, _rf().run_args("msrvtt", root, out, tmp_path / "cache",
                                                  "--set", "data.allow_missing=true"), catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rec = load_record(out / "glccl__msrvtt__seed0.json")
    reduced = rec["protocol"]["reduced"]
    assert reduced["split"] == "test" and reduced["missing_videos"] == 2
    assert reduced["missing_ids"] == ["video11", "video12"] and reduced["reasons"] == {"missing": 1, "unreadable": 1}
    assert reduced["expected"] == {"videos": 4, "captions": 4} and reduced["used"] == {"videos": 2, "captions": 2}
    assert rec["protocol"]["test"]["n_videos"] == 2 and rec["metrics"]["gallery"]["t2v"] == 2


def test_run_with_a_zero_length_video_names_it_and_writes_nothing(tmp_path, msrvtt):
    root = _copy(msrvtt, tmp_path / "root")
    (root / "videos" / "all" / "video13.mp4").write_bytes(b"")
    (root / "videos" / "all" / "video1.mp4").write_bytes(b"\x01" * 4096)
    out, cache = tmp_path / "out", tmp_path / "cache"
    res = CliRunner().invoke(main, _rf().run_args("msrvtt", root, out, cache))
    assert res.exit_code == 2, res.output
    assert "2 unreadable video(s)" in res.output and "video13.mp4" in res.output and "video1.mp4" in res.output
    assert not list(out.glob("**/*.json")) if out.exists() else True
    assert not (cache / "frames").exists()


def test_run_without_root_is_a_clear_error(tmp_path):
    res = invoke("run", "--method", "meanp", "--dataset", "vatex", "--out", tmp_path)
    assert res.exit_code == 2 and "needs its files: pass --root PATH" in res.output
    # the line names the files and where they are published
    assert "vatex_training_v1.0.json" in res.output and "test_list.txt" in res.output and "HGR" in res.output
    for name in ("msrvtt", "didemo"):
        res = invoke("run", "--method", "meanp", "--dataset", name, "--out", tmp_path)
        assert res.exit_code == 2 and len([x for x in res.output.splitlines() if x.startswith("error:")]) == 1
        assert ("MSRVTT_JSFUSION_test.csv" if name == "msrvtt" else "LocalizingMoments") in res.output
    assert not list(tmp_path.glob("*.json"))


def test_root_override_is_recorded(tmp_path):
    from tvr_bench.bench.cli.data import root_override

    odd = tmp_path / "a: b" / "true"
    assert json.loads(root_override(odd).split("=", 1)[1]) == str(odd)
