"""VATEX: official JSON / ref_captions / vatex_data layouts with the HGR lists (fixtures), multi-caption protocol;
the partial real text (non-standard) for parsing and caption counts only."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from tvr_bench.bench.errors import DataError
from tvr_bench.cli import main

PARTIAL = Path("/work/shared/data/vatex_partial")
partial = pytest.mark.skipif(not (PARTIAL / "val.en").is_file(), reason="partial VATEX text absent")


def _rf():
    return sys.modules["tvr_bench_real_fixtures"]  # tests/real_fixtures.py, loaded by conftest.py


def plugin(root: Path, *overrides: str):
    return _rf().dataset_plugin("vatex", root, *overrides)


# --------------------------------------------------------------------------------------------------------------
# the partial real text: parsing and counts, never a retrieval split
# --------------------------------------------------------------------------------------------------------------


@partial
@pytest.mark.parametrize("name,lines,videos", [("val", 14050, 2810), ("public_test", 28275, 5655)])
def test_partial_text_parses_to_5_captions_per_video(name, lines, videos):
    from tvr_bench.datasets.vatex import read_partial_captions

    caps = read_partial_captions(PARTIAL / f"{name}.en", PARTIAL / f"{name}.id")
    assert len(caps) == videos and sum(map(len, caps.values())) == lines
    assert {len(v) for v in caps.values()} == {5}
    first = next(iter(caps.items()))
    if name == "val":
        assert first[0] == "G9zN5TTuGO4_000179_000189"
        assert first[1][0] == "a person is climbing down a snowy cliff with the help of a rope ."
    assert all(not c.startswith(" ") for c in first[1])


@partial
def test_partial_text_is_not_taken_for_the_retrieval_protocol():
    with pytest.raises(DataError) as err:
        plugin(PARTIAL).annotate("test")
    msg = str(err.value)
    assert "test_list.txt" in msg and "partial tokenised VATEX text is not the retrieval protocol" in msg


@partial
def test_partial_text_groups_captions_for_the_multi_caption_metric(tiny_backbone):
    """Real VATEX-like text through the tokenizer and the multi-caption ranking (a subset, random scores)."""
    from tvr_bench.bench.data.pipeline import tokenize_captions
    from tvr_bench.bench.metrics import retrieval_metrics
    from tvr_bench.bench.api.dataset import CaptionItem, Split, VideoItem
    from tvr_bench.datasets.vatex import read_partial_captions

    caps = dict(list(read_partial_captions(PARTIAL / "val.en", PARTIAL / "val.id").items())[:100])
    split = Split("vatex-partial", "val", [VideoItem(v, PARTIAL / v) for v in caps],
                  [CaptionItem(f"{v}#{k}", v, t) for v, ts in caps.items() for k, t in enumerate(ts)])
    t2v = split.text_to_video()
    assert len(t2v) == 500 and t2v[:6] == [0, 0, 0, 0, 0, 1]
    tok = tokenize_captions(split, tiny_backbone, 32, "truncate")
    assert tok.tokens.shape == (500, 32)
    res = retrieval_metrics(torch.randn(500, 100, generator=torch.Generator().manual_seed(0)), t2v)
    assert res["n_queries_t2v"] == 500 and res["n_queries_v2t"] == 100


# --------------------------------------------------------------------------------------------------------------
# fixtures in the published layouts
# --------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fixture_root(tmp_path_factory):
    return _rf().build_vatex(tmp_path_factory.mktemp("vatex") / "root")


def test_official_json_with_hgr_lists(fixture_root):
    rf = _rf()
    p = plugin(fixture_root)
    for split, n in rf.VATEX_SIZES.items():
        s = p.load_split(split)
        assert [v.id for v in s.videos] == [rf.vatex_id(split, i) for i in range(n)]
        assert len(s.captions) == n * rf.VATEX_CAPTIONS  # every English caption (Chinese ignored)
        assert s.text_to_video() == [i for i in range(n) for _ in range(rf.VATEX_CAPTIONS)]
    assert p.load_split("test").protocol["caption_mode"] == "multi-caption"
    assert p.annotate("test").expected == {"videos": 1500, "texts": 15000, "pairs": 15000}


@pytest.mark.parametrize("layout", ["ref_captions", "vatex_data"])
def test_lineage_caption_files_give_the_same_splits(tmp_path, fixture_root, layout):
    root = tmp_path / layout
    shutil.copytree(fixture_root, root, ignore=shutil.ignore_patterns("videos", "vatex_*.json"))
    records = [r for f in ("vatex_training_v1.0.json", "vatex_validation_v1.0.json")
               for r in json.loads((fixture_root / "annotations" / f).read_text())]
    if layout == "ref_captions":
        (root / "ref_captions.json").write_text(json.dumps({r["videoID"]: r["enCap"] for r in records}))
    else:
        (root / "vatex_data.json").write_text(json.dumps({r["videoID"]: {"enCap": r["enCap"]} for r in records}))
    ours, official = plugin(root), plugin(fixture_root)
    for split in ("train", "val", "test"):
        assert ours.annotate(split).captions == official.annotate(split).captions


def test_listed_video_without_captions_and_malformed_files(tmp_path, fixture_root):
    root = tmp_path / "bad"
    shutil.copytree(fixture_root, root, ignore=shutil.ignore_patterns("videos"))
    with open(root / "annotations" / "test_list.txt", "a") as fh:
        fh.write("NoSuchVideo_000001_000011\n")
    with pytest.raises(DataError, match="test_list.txt have no English captions.*NoSuchVideo"):
        plugin(root).annotate("test")
    train = root / "annotations" / "vatex_training_v1.0.json"
    data = json.loads(train.read_text())
    data[0]["enCap"] = "one caption, not a list"
    train.write_text(json.dumps(data))
    with pytest.raises(DataError, match="vatex_training_v1.0.json: expected|vatex_training_v1.0.json.*no English"):
        plugin(root).annotate("train")


def test_run_end_to_end_multi_caption(tmp_path, fixture_root):
    from tvr_bench.bench.records import load_record

    out = tmp_path / "out"
    res = CliRunner().invoke(main, _rf().run_args("vatex", fixture_root, out, tmp_path / "cache"),
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
    rec = load_record(out / "glccl__vatex__seed0.json")
    assert rec["metrics"]["n_queries"] == {"t2v": 15, "v2t": 3}  # every caption a query; V2T per video
    assert rec["protocol"]["test"]["n_videos"] == 3 and rec["protocol"]["test"]["n_captions"] == 15
    assert rec["metrics"]["conventions"]["v2t_gallery"] == "caption_groups"
