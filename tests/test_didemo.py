"""DiDeMo: LocalizingMoments files as published (real test/val files), paragraphs, split lists, video lookup."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tvr_bench.bench.errors import DataError
from tvr_bench.cli import main

REAL = Path("/work/shared/data/didemo")
real = pytest.mark.skipif(not (REAL / "test_data.json").is_file(), reason="real DiDeMo annotations absent")


def _rf():
    return sys.modules["tvr_bench_real_fixtures"]  # tests/real_fixtures.py, loaded by conftest.py


def plugin(root: Path, *overrides: str):
    return _rf().dataset_plugin("didemo", root, *overrides)


@real
def test_real_test_file_gives_1037_paragraphs_from_4021_descriptions():
    p = plugin(REAL)
    test = p.annotate("test")
    assert test.counts == {"videos": 1037, "texts": 4021, "pairs": 1037}
    assert test.matches_expected() and not test.standard  # the CE test_list.txt (1,004) is not available
    assert any("1,004" in n for n in test.notes)
    records = json.loads((REAL / "test_data.json").read_text())
    first = records[0]["video"]
    own = [r["description"] for r in records if r["video"] == first]
    assert test.video_ids[0] == first and test.captions[0].text == " ".join(own)  # CLIP4Clip's join, file order
    assert test.captions[0].text.startswith("someone kicks the bug towards some rocks.")
    val = p.annotate("val")
    assert val.counts == {"videos": 1094, "texts": 4180, "pairs": 1094}
    with pytest.raises(DataError, match="train_data.json"):
        p.annotate("train")
    assert p.describe()["annotation_files"]["test_data"]["matches_reference"]


@real
def test_real_paragraphs_are_truncated_to_the_text_budget(tiny_backbone):
    from tvr_bench.bench.data.pipeline import tokenize_captions
    from tvr_bench.bench.api.dataset import Split, VideoItem

    ann = plugin(REAL).annotate("test")
    split = Split("didemo", "test", [VideoItem(v, REAL / v) for v in ann.video_ids], ann.captions)
    tok = tokenize_captions(split, tiny_backbone, 32, "truncate")  # tvr-tiny's context; 64 with CLIP
    assert tok.n_truncated > 0 and int(tok.mask.sum(1).max()) == 32
    assert bool((tok.tokens[tok.mask.sum(1) == 32, 31] == tiny_backbone.tokenizer.eot_token_id).all())


@pytest.fixture(scope="module")
def fixtures(tmp_path_factory):
    rf = _rf()
    base = tmp_path_factory.mktemp("didemo")
    return {"lm": rf.build_didemo(base / "lm"), "ce": rf.build_didemo(base / "ce", lists=True)}


def test_paragraphs_and_video_lookup_without_lists(fixtures):
    rf = _rf()
    p = plugin(fixtures["lm"])
    for split, n in rf.DIDEMO_SIZES.items():
        s = p.load_split(split)
        names = [rf.didemo_name(split, i) for i in range(n)]
        assert [v.id for v in s.videos] == names and len(s.captions) == n  # one paragraph per video
        records = rf.didemo_records(split)
        for c in s.captions:
            assert c.text == " ".join(r["description"] for r in records if r["video"] == c.video_id)
        assert s.protocol["caption_mode"] == "paragraph" and s.protocol["standard"] is False
    train = {v.id: v.path for v in p.load_split("train").videos}
    assert any(i.endswith(".") for i in train)  # a Flickr name without extension, found as is
    renamed = [i for i, path in train.items() if path.name != i]
    assert len(renamed) == 1 and train[renamed[0]].suffix == ".mp4"  # re-encoded copy <stem>.mp4


def test_split_lists_when_present(fixtures):
    rf = _rf()
    p = plugin(fixtures["ce"])
    for split, n in rf.DIDEMO_SIZES.items():
        a = p.annotate(split)
        assert a.video_ids == [rf.didemo_name(split, i) for i in range(n - 1)]  # the list's videos only
        assert a.standard and a.expected["videos"] == {"train": 8392, "val": 1065, "test": 1004}[split]


def test_listed_video_without_description_is_an_error(tmp_path, fixtures):
    root = tmp_path / "ce"
    shutil.copytree(fixtures["ce"], root, ignore=shutil.ignore_patterns("videos"))
    with open(root / "test_list.txt", "a") as fh:
        fh.write("ghost@N00_1_2.mov\n")
    with pytest.raises(DataError, match=r"test_list.txt have no description .*ghost@N00_1_2.mov"):
        plugin(root).annotate("test")


@pytest.mark.parametrize("damage,needle", [
    ("object", "expected a JSON list of records"),
    ("description", "expected a non-empty caption string"),
    ("video", "has no \"video\" file name"),
    ("latin1", "is not UTF-8 text"),
])
def test_malformed_records_name_the_file(tmp_path, fixtures, damage, needle):
    root = tmp_path / "bad"
    shutil.copytree(fixtures["lm"], root, ignore=shutil.ignore_patterns("videos"))
    path = root / "val_data.json"
    records = json.loads(path.read_text())
    if damage == "object":
        path.write_text(json.dumps({"records": records}))
    elif damage == "description":
        records[1]["description"] = None
        path.write_text(json.dumps(records))
    elif damage == "video":
        del records[2]["video"]
        path.write_text(json.dumps(records))
    else:
        records[0]["description"] = "caf\u00e9"
        path.write_bytes(json.dumps(records, ensure_ascii=False).encode("latin-1"))
    with pytest.raises(DataError) as err:
        plugin(root).annotate("val")
    assert needle in str(err.value) and "val_data.json" in str(err.value)


def test_run_end_to_end(tmp_path, fixtures):
    from tvr_bench.bench.records import load_record

    out = tmp_path / "out"
    res = CliRunner().invoke(main, _rf().run_args("didemo", fixtures["ce"], out, tmp_path / "cache"),
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rec = load_record(out / "glccl__didemo__seed0.json")
    assert rec["protocol"]["protocol"] == "paragraph" and rec["protocol"]["test"]["n_videos"] == 4
    assert rec["protocol"]["test"]["caption_mode"] == "paragraph" and rec["metrics"]["n_queries"]["t2v"] == 4
    assert rec["config"]["data"]["text_overflow"] == "truncate"
