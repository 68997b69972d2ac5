"""MSR-VTT: the real annotation files (counts, the rebuilt 9k CSV) and generated fixtures in both layouts."""

from __future__ import annotations

import hashlib
import json
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from tvr_bench.bench.config import resolve_config
from tvr_bench.bench.errors import ConfigError, DataError
from tvr_bench.bench.registry import DATASETS, METHODS
from tvr_bench.cli import main

REAL = Path("/work/shared/data/msrvtt")
real = pytest.mark.skipif(not (REAL / "MSRVTT_JSFUSION_test.csv").is_file(), reason="real MSR-VTT annotations absent")


def _rf():
    return sys.modules["tvr_bench_real_fixtures"]  # tests/real_fixtures.py, loaded by conftest.py


def plugin(root: Path, *overrides: str):
    return _rf().dataset_plugin("msrvtt", root, *overrides)


# --------------------------------------------------------------------------------------------------------------
# real files (annotations only: no videos needed)
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_msrvtt():
    return plugin(REAL)


@real
def test_real_9k_train_and_1ka_test_counts(real_msrvtt):
    train = real_msrvtt.annotate("train")
    assert train.counts == {"videos": 9000, "texts": 180000, "pairs": 180000}
    per_video: dict[str, int] = {}
    for c in train.captions:
        per_video[c.video_id] = per_video.get(c.video_id, 0) + 1
    assert set(per_video.values()) == {20} and len(per_video) == 9000
    test = real_msrvtt.annotate("test")
    assert test.counts == {"videos": 1000, "texts": 1000, "pairs": 1000}
    assert test.video_ids[:2] == ["video9770", "video9771"]  # CSV order kept
    jsfusion_ids = (REAL / "val_list_jsfusion.txt").read_text().split("\n")
    assert sorted(test.video_ids) == sorted(jsfusion_ids) and not set(test.video_ids) & set(train.video_ids)
    assert train.standard and test.standard and train.matches_expected() and test.matches_expected()
    val = real_msrvtt.annotate("val")
    assert val.video_ids[0] == "video6513" and val.video_ids[-1] == "video7009" and len(val.video_ids) == 497
    assert any("training videos" in n for n in val.notes)
    files = real_msrvtt.describe()["annotation_files"]
    assert all(f["matches_reference"] for f in files.values() if "matches_reference" in f)


@real
def test_real_9k_csv_rebuilt_byte_identical():
    from tvr_bench.datasets.msrvtt import REFERENCE_SHA256, train_csv_bytes

    ids = (REAL / "train_list_jsfusion.txt").read_text().split("\n")
    data = train_csv_bytes(ids)
    assert len(data) == 88899
    assert hashlib.sha256(data).hexdigest() == REFERENCE_SHA256["MSRVTT_train.9k.csv"] == \
        "0a7ece2418e1f7ac5680555a04ddfef8950293ac3c4bdd6584fb0fa6cc0ff7d3"


@real
def test_real_merged_data_json_and_clip4clip_layout_give_the_same_splits(tmp_path, real_msrvtt):
    from tvr_bench.datasets.msrvtt import merge_videodatainfo, train_csv_bytes

    tv = json.loads(zipfile.ZipFile(REAL / "train_val_annotation.zip").read("train_val_videodatainfo.json"))
    te = json.loads(zipfile.ZipFile(REAL / "test_videodatainfo.json.zip").read("test_videodatainfo.json"))
    merged = json.dumps(merge_videodatainfo(tv, te))
    assert len(merged.encode()) == 23112234  # PROVENANCE.md: same content as CLIP4Clip's file
    root = tmp_path / "c4c"
    (root / "msrvtt_data").mkdir(parents=True)
    (root / "msrvtt_data" / "MSRVTT_data.json").write_text(merged)
    ids = (REAL / "train_list_jsfusion.txt").read_text().split("\n")
    (root / "msrvtt_data" / "MSRVTT_train.9k.csv").write_bytes(train_csv_bytes(ids))
    (root / "msrvtt_data" / "MSRVTT_JSFUSION_test.csv").write_bytes((REAL / "MSRVTT_JSFUSION_test.csv").read_bytes())
    c4c = plugin(root)
    for split in ("train", "val", "test"):
        a, b = c4c.annotate(split), real_msrvtt.annotate(split)
        assert a.video_ids == b.video_ids and a.captions == b.captions
    assert c4c.describe()["annotation_files"]["train_list"]["matches_reference"]


# --------------------------------------------------------------------------------------------------------------
# fixtures in both layouts
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    rf = _rf()
    base = tmp_path_factory.mktemp("msrvtt")
    return {"official": rf.build_msrvtt(base / "official", "official"),
            "clip4clip": rf.build_msrvtt(base / "clip4clip", "clip4clip")}


def test_both_layouts_give_the_same_protocol(fixtures):
    rf = _rf()
    off, c4c = plugin(fixtures["official"]), plugin(fixtures["clip4clip"])
    for split in ("train", "val", "test"):
        a, b = off.load_split(split), c4c.load_split(split)
        assert [v.id for v in a.videos] == [v.id for v in b.videos]
        assert a.captions == b.captions
    train, test = off.load_split("train"), off.load_split("test")
    assert [v.id for v in train.videos] == rf.msrvtt_9k_ids()
    assert len(train.captions) == len(train.videos) * rf.MSRVTT_CAPTIONS  # every caption a sample
    assert [v.id for v in test.videos] == rf.MSRVTT_1KA and test.text_to_video() == [0, 1, 2, 3]
    assert off.load_split("val").protocol["caption_mode"].startswith("1:1")
    # videos found in the official folders and in CLIP4Clip's videos/all (video3 only as .webm)
    assert {v.path.parent.name for v in train.videos} == {"TrainValVideo", "TestVideo"}
    assert next(v for v in c4c.load_split("train").videos if v.id == "video3").path.suffix == ".webm"


def test_7k_and_holdout_options(fixtures):
    seven = plugin(fixtures["clip4clip"], "data.msrvtt.train_split=7k").annotate("train")
    assert seven.video_ids == [f"video{i}" for i in range(10)] and seven.expected["videos"] is None
    with pytest.raises(DataError, match="MSRVTT_train.7k.csv"):
        plugin(fixtures["official"], "data.msrvtt.train_split=7k").annotate("train")
    hold = plugin(fixtures["official"], "data.msrvtt.val=holdout", "data.msrvtt.holdout_videos=3")
    train, val = hold.annotate("train"), hold.annotate("val")
    ids = _rf().msrvtt_9k_ids()
    assert train.video_ids == ids[:-3] and val.video_ids == ids[-3:] and not train.standard
    assert not set(train.video_ids) & set(val.video_ids) and len(val.captions) == 3
    for bad in ("data.msrvtt.train_split=8k", "data.msrvtt.val=test"):
        with pytest.raises(ConfigError):
            plugin(fixtures["official"], bad)


def test_msrvtt_defaults_report_the_last_epoch():
    cfg, _ = resolve_config(method_cls=METHODS.get("glccl"), dataset_cls=DATASETS.get("msrvtt"))
    d = cfg["data"]
    assert (d["max_frames"], d["max_words"], d["text_overflow"]) == (12, 32, "truncate")
    assert cfg["train"]["select_on"] == "last"


def test_variant_jsfusion_copy_is_read_but_marked(tmp_path, fixtures):
    import shutil

    root = tmp_path / "variant"
    shutil.copytree(fixtures["official"], root)
    csv = root / "MSRVTT_JSFUSION_test.csv"
    csv.write_bytes(csv.read_text().replace(",", ";").replace("\n", "\r\n").encode())  # the ;-separated CRLF copy
    a, b = plugin(root).annotate("test"), plugin(fixtures["official"]).annotate("test")
    assert a.captions == b.captions
    assert not a.standard and any("differs from the published file" in n for n in a.notes)


@pytest.mark.parametrize("damage,needle", [
    ("json", "malformed JSON in"),
    ("utf8", "is not UTF-8 text"),
    ("header", "lacks column(s) sentence"),
    ("no_test", "MSRVTT_JSFUSION_test.csv was not found"),
    ("sentences", "has no string video_id"),
])
def test_bad_annotation_files_are_clear_errors(tmp_path, fixtures, damage, needle):
    import shutil

    root = tmp_path / "bad"
    shutil.copytree(fixtures["official"], root, ignore=shutil.ignore_patterns("*.mp4"))
    csv, js = root / "MSRVTT_JSFUSION_test.csv", root / "test_videodatainfo.json"
    if damage == "json":
        js.write_text(js.read_text()[:-20])
    elif damage == "utf8":
        csv.write_bytes(csv.read_bytes().replace(b"ret1,", b"ret1\xff,"))
    elif damage == "header":
        csv.write_text(csv.read_text().replace("sentence", "caption", 1))
    elif damage == "no_test":
        csv.unlink()
    elif damage == "sentences":
        data = json.loads(js.read_text())
        data["sentences"][0]["video_id"] = 7
        js.write_text(json.dumps(data))
    with pytest.raises(DataError) as err:
        p = plugin(root)
        for split in ("train", "val", "test"):
            p.annotate(split)
    assert needle in str(err.value)
    if damage in ("json", "sentences"):
        assert "test_videodatainfo.json" in str(err.value)
    if damage in ("utf8", "header"):
        assert "MSRVTT_JSFUSION_test.csv" in str(err.value)


def test_run_end_to_end_on_the_official_layout(tmp_path, fixtures):
    from tvr_bench.bench.records import load_record

    out = tmp_path / "out"
    res = CliRunner().invoke(main, _rf().run_args("msrvtt", fixtures["official"], out, tmp_path / "cache"),
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rec = load_record(out / "glccl__msrvtt__seed0.json")
    proto = rec["protocol"]
    assert proto["test"]["n_videos"] == 4 and proto["test"]["n_captions"] == 4 and "reduced" not in proto
    assert proto["test"]["expected"]["videos"] == 1000 and proto["test"]["standard"] is False
    assert proto["annotation_files"]["test"]["matches_reference"] is False
    assert rec["config"]["data"]["root"] == str(fixtures["official"].absolute())
    assert rec["metrics"]["selection"] == "last epoch" and rec["metrics"]["gallery"]["t2v"] == 4
