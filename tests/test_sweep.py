"""Sweeps: ``--set key=a,b,c`` runs the product of the listed values, one folder per point; ``bench sweep``
reports the metric with its interval per (method, value) as a table and a figure."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner

from tvr_bench.bench.errors import ConfigError, RecordError
from tvr_bench.bench.sweep import expand, split_top_level
from tvr_bench.cli import main


@pytest.mark.parametrize("raw,parts", [
    ("0.25,0.5,1.0", ["0.25", "0.5", "1.0"]),
    ("[1,2]", ["[1,2]"]),
    ('"a,b"', ['"a,b"']),
    ("'a,b',c", ["'a,b'", "c"]),
    ("{x: 1, y: 2},[3]", ["{x: 1, y: 2}", "[3]"]),
    ("plain", ["plain"]),
])
def test_split_top_level_keeps_quoted_and_bracketed_commas(raw, parts):
    assert split_top_level(raw) == parts


def test_expand_is_the_product_in_command_line_order():
    fixed_from_file = ("train.epochs=2", "--config run.yaml")
    points = expand(["a.x=1,2", fixed_from_file, "b.y=[1,2]", "c.z=u,v,w"])
    assert [p.settings for p in points] == [(("a.x", x), ("c.z", z)) for x in "12" for z in "uvw"]
    assert points[0].overrides == ("a.x=1", fixed_from_file, "b.y=[1,2]", "c.z=u")
    assert points[-1].folder == "a.x=2__c.z=w"
    # no sweep: one point, the overrides untouched, the runs in --out itself
    (only,) = expand(["a.x=1", fixed_from_file])
    assert only.settings == () and only.overrides == ("a.x=1", fixed_from_file)
    from pathlib import Path
    assert only.out_dir(Path("runs")) == Path("runs") and points[0].out_dir(Path("runs")) == Path("runs/a.x=1__c.z=u")


def test_a_comma_in_a_config_file_value_is_never_a_sweep():
    (only,) = expand([("data.root=/a,b", "--config f.yaml")])
    assert only.settings == ()


@pytest.mark.parametrize("overrides,needle", [
    (["train.lr=1e-3,"], "empty value"),
    (["train.lr=,1e-3"], "empty value"),
    (["train.lr=1e-3,1e-3"], "listed twice"),
    (["train.lr=1e-3,2e-3", "train.lr=3e-3,4e-3"], "swept twice"),
    (["data.root=/a/b,/a_b"], "folder name"),
])
def test_bad_sweeps_are_one_line(overrides, needle):
    with pytest.raises(ConfigError, match=needle):
        expand(overrides)


FAST = ["run", "--method", "meanp", "--dataset", "synthetic", "--preset", "smoke", "--quiet",
        "--set", "train.epochs=1", "--set", "train.max_steps=2"]


def test_sweep_runs_every_point_into_its_folder_and_resumes(tmp_path):
    out = tmp_path / "runs"
    args = [*FAST, "--set", "train.lr=1e-3,2e-3", "--out", str(out)]
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    records = sorted(out.rglob("meanp__synthetic__seed0.json"))
    assert [p.parent.name for p in records] == ["train.lr=1e-3", "train.lr=2e-3"]
    lrs = [json.loads(p.read_text())["config"]["train"]["lr"] for p in records]
    assert lrs == [1e-3, 2e-3]
    assert "lr" in res.output and "95 % CI" in res.output  # the end-of-run table is the sweep's
    again = CliRunner().invoke(main, args, catch_exceptions=False)
    assert again.exit_code == 0 and again.output.count("skip") == 2, again.output

    rep = tmp_path / "report"
    res = CliRunner().invoke(main, ["sweep", str(out), "--by", "train.lr", "--out", str(rep)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("| synthetic")]
    assert len(lines) == 2 and "0.001 " in lines[0] and "0.002 " in lines[1]
    assert lines[0].count("[") == 1  # the value and its interval
    assert ET.parse(rep / "sweep.svg").getroot().tag.endswith("svg")
    assert (rep / "sweep.pdf").read_bytes().startswith(b"%PDF")
    assert (rep / "sweep.png").read_bytes().startswith(b"\x89PNG")
    csv = (rep / "sweep.csv").read_text().splitlines()
    assert csv[0].startswith("dataset,method,train.lr,seeds,t2v/R@1,ci_low,ci_high") and len(csv) == 3

    (out / "copy").mkdir()
    (out / "copy" / records[0].name).write_bytes(records[0].read_bytes())  # the same point twice
    res = CliRunner().invoke(main, ["sweep", str(out), "--by", "train.lr"])
    assert res.exit_code == 2 and "the same run as" in res.output and "copy" in res.output, res.output


def test_a_bad_value_in_a_sweep_fails_before_any_run(tmp_path):
    out = tmp_path / "runs"
    res = CliRunner().invoke(main, [*FAST, "--set", "train.lr=1e-3,abc", "--out", str(out)])
    assert res.exit_code == 2
    assert "train.lr='abc'" in res.output and "Traceback" not in res.output
    assert not list(out.rglob("*.json")) if out.exists() else True


def test_sweep_report_refuses_records_without_the_key(tmp_path):
    from tvr_bench.bench.report.sweep import config_value, load_sweep

    rec = {"method": "m", "dataset": "d", "seed": 0, "config": {"train": {"lr": 1e-3}}}
    assert config_value(rec, "train.lr") == 1e-3
    with pytest.raises(RecordError, match="no key 'train.batch'"):
        config_value(rec, "train.batch")
    with pytest.raises(RecordError, match="no such record"):
        load_sweep(tmp_path / "absent", ["train.lr"])
