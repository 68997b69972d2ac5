"""Bad input in the MSR-VTT layout, end to end through ``bench run``: each damage ends either in a complete run
(with a record) or in one ``error:`` line naming the culprit file or id, exit 2, no traceback, nothing written.

The fixture is the CLIP4Clip layout (``msrvtt_data/MSRVTT_data.json``, the 9k CSV, the JSFusion CSV,
``videos/all``) with tiny real MP4s; each case damages one copy of it. The 1k-A test videos of the fixture are
video14, video11, video15 and video12; video11 is the damaged test video, video0 the damaged training video.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path
from typing import Callable

import pytest
from click.testing import CliRunner

from tvr_bench.cli import main


def _rf():
    return sys.modules["tvr_bench_real_fixtures"]  # tests/real_fixtures.py, loaded by conftest.py


DATA = "msrvtt_data"
JSON, TRAIN_CSV, TEST_CSV = f"{DATA}/MSRVTT_data.json", f"{DATA}/MSRVTT_train.9k.csv", f"{DATA}/MSRVTT_JSFUSION_test.csv"
TEST_VIDEO, TRAIN_VIDEO = "videos/all/video11.mp4", "videos/all/video0.mp4"


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> Path:
    return _rf().build_msrvtt(tmp_path_factory.mktemp("msrvtt") / "clean", "clip4clip")


def _edit_json(root: Path, fn: Callable[[dict], None]) -> None:
    data = json.loads((root / JSON).read_text())
    fn(data)
    (root / JSON).write_text(json.dumps(data))


def _edit_text(root: Path, rel: str, fn: Callable[[str], str]) -> None:
    (root / rel).write_text(fn((root / rel).read_text()))


def _caption(data: dict, video: str, text: str) -> None:
    next(s for s in data["sentences"] if s["video_id"] == video)["caption"] = text


def _replace_video(root: Path, rel: str, content: bytes | None) -> None:
    (root / rel).unlink()
    if content is not None:
        (root / rel).write_bytes(content)


def _truncate(root: Path, rel: str) -> None:
    raw = (root / rel).read_bytes()
    (root / rel).write_bytes(raw[: len(raw) // 2])


def _as_directory(root: Path, rel: str) -> None:
    (root / rel).unlink()
    (root / rel).mkdir()
    (root / rel / "frame.jpg").write_bytes(b"\xff\xd8")


def _drop_split_fields(data: dict) -> None:
    for v in data["videos"]:
        v.pop("split", None)


def _drop_key(key: str) -> Callable[[dict], None]:
    return lambda data: data.pop(key)


def _drop_video_id(data: dict) -> None:
    data["videos"][3].pop("video_id")


def _unknown_sentence_video(data: dict) -> None:
    data["sentences"].append({"caption": "a man talks", "video_id": "video99", "sen_id": 99999})


def _csv_row(rel: str, old: str, new: str) -> Callable[[Path], None]:
    return lambda root: _edit_text(root, rel, lambda t: t.replace(old, new, 1))


def _test_csv_caption(text: str) -> Callable[[Path], None]:
    def edit(root: Path) -> None:
        lines = (root / TEST_CSV).read_text().splitlines()
        key, vid_key, video, _ = lines[1].split(",", 3)
        lines[1] = ",".join([key, vid_key, video, text])
        (root / TEST_CSV).write_text("\n".join(lines) + "\n")
    return edit


def _duplicate_test_row(root: Path) -> None:
    lines = (root / TEST_CSV).read_text().splitlines()
    (root / TEST_CSV).write_text("\n".join(lines + [lines[1].replace("ret0", "ret9")]) + "\n")


OVERLONG = " ".join(["word"] * 400)

#: case -> (damage, None for a complete run | the substrings the one error line must hold)
CASES: dict[str, tuple[Callable[[Path], None], tuple[str, ...] | None]] = {
    # videos
    "test video missing": (lambda r: _replace_video(r, TEST_VIDEO, None), ("video11",)),
    "train video missing": (lambda r: _replace_video(r, TRAIN_VIDEO, None), ("video0",)),
    "test video empty": (lambda r: _replace_video(r, TEST_VIDEO, b""), ("video11.mp4",)),
    "test video corrupt": (lambda r: _replace_video(r, TEST_VIDEO, bytes(range(256)) * 64), ("video11.mp4",)),
    "train video corrupt": (lambda r: _replace_video(r, TRAIN_VIDEO, b"not a video\n" * 100), ("video0.mp4",)),
    "test video truncated": (lambda r: _truncate(r, TEST_VIDEO), ("video11.mp4",)),
    "test video is a directory": (lambda r: _as_directory(r, TEST_VIDEO), ("video11.mp4 is a directory",)),
    # the caption JSON
    "json malformed": (lambda r: _edit_text(r, JSON, lambda t: t[:-40]), ("MSRVTT_data.json",)),
    "json not utf-8": (lambda r: (r / JSON).write_bytes((r / JSON).read_bytes().replace(b"video1", b"vid\xffeo1", 1)),
                       ("MSRVTT_data.json",)),
    "json empty": (lambda r: (r / JSON).write_bytes(b""), ("MSRVTT_data.json",)),
    "json without sentences": (lambda r: _edit_json(r, _drop_key("sentences")), ("MSRVTT_data.json", "sentences")),
    # CLIP4Clip's loader reads only "sentences" of MSRVTT_data.json: without "videos" (so without the 'validate'
    # split, which the default last-epoch selection does not need) the run is complete
    "json without videos": (lambda r: _edit_json(r, _drop_key("videos")), None),
    "json video without id": (lambda r: _edit_json(r, _drop_video_id), ("MSRVTT_data.json", "videos[3]")),
    "json without split fields": (lambda r: _edit_json(r, _drop_split_fields), None),
    # captions of videos outside every split are never read (the file is the union of all captions), as in CLIP4Clip
    "json sentence of an unknown video": (lambda r: _edit_json(r, _unknown_sentence_video), None),
    # captions
    "empty train caption": (lambda r: _edit_json(r, lambda d: _caption(d, "video0", "  ")), ("video0",)),
    "overlong train caption": (lambda r: _edit_json(r, lambda d: _caption(d, "video0", OVERLONG)), None),
    "duplicated train captions": (lambda r: _edit_json(r, lambda d: d["sentences"].extend(
        [s for s in d["sentences"] if s["video_id"] == "video1"])), None),
    "empty test caption": (_test_csv_caption(""), ("MSRVTT_JSFUSION_test.csv", "line 2")),
    "overlong test caption": (_test_csv_caption(OVERLONG), None),
    # the CSVs
    "test csv empty": (lambda r: (r / TEST_CSV).write_bytes(b""), ("MSRVTT_JSFUSION_test.csv",)),
    "test csv not utf-8": (lambda r: (r / TEST_CSV).write_bytes((r / TEST_CSV).read_bytes().replace(b"ret1,", b"ret\xff1,")),
                           ("MSRVTT_JSFUSION_test.csv",)),
    "test csv unknown video": (_csv_row(TEST_CSV, ",video11,", ",video99,"), ("video99",)),
    "test csv duplicated video": (_duplicate_test_row, ("MSRVTT_JSFUSION_test.csv", "video14")),
    "train csv empty": (lambda r: (r / TRAIN_CSV).write_bytes(b""), ("MSRVTT_train.9k.csv",)),
    "train csv header only": (lambda r: (r / TRAIN_CSV).write_text("video_id\n"), ("MSRVTT_train.9k.csv",)),
    "train csv not utf-8": (lambda r: (r / TRAIN_CSV).write_bytes((r / TRAIN_CSV).read_bytes().replace(b"video1", b"vi\xffdeo1", 1)),
                            ("MSRVTT_train.9k.csv",)),
    "train csv unknown video": (_csv_row(TRAIN_CSV, "video1\n", "video98\n"), ("video98",)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_msrvtt_input_is_a_complete_run_or_one_line(tmp_path, clean, case):
    _check(tmp_path, clean, *CASES[case])


def _check(tmp_path: Path, clean: Path, damage: Callable[[Path], None], needles: tuple[str, ...] | None) -> None:
    root = tmp_path / "root"
    shutil.copytree(clean, root)
    damage(root)
    out = tmp_path / "out"
    args = _rf().run_args("msrvtt", root, out, tmp_path / "cache", "--set", "train.max_steps=2")
    args[args.index("glccl")] = "meanp"  # the cheapest method: the data path is what is under test
    res = CliRunner().invoke(main, args, catch_exceptions=False)
    records = sorted(out.glob("*.json")) if out.exists() else []
    if needles is None:
        assert res.exit_code == 0, res.output
        assert [p.name for p in records] == ["meanp__msrvtt__seed0.json"]
        return
    # the run's "[1/1] method / dataset / seed" header is on stdout; everything else said is the error line
    lines = [ln for ln in res.output.splitlines() if ln.strip() and not re.match(r"\[\d+/\d+\] ", ln)]
    assert res.exit_code == 2, res.output
    assert len(lines) == 1 and lines[0].startswith("error: "), res.output
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    assert "Traceback" not in res.output
    assert records == [], "an error run wrote a record"
    leftovers = [p for p in out.rglob("*") if p.is_file()] if out.exists() else []
    assert leftovers == [], leftovers


# the official layout: the train/val archive as published, the test JSON, the collaborative-experts lists
def _zip_without_member(root: Path) -> None:
    import zipfile

    with zipfile.ZipFile(root / "train_val_annotation.zip", "w") as zf:
        zf.writestr("readme.txt", "no annotation inside")


OFFICIAL_CASES: dict[str, tuple[Callable[[Path], None], tuple[str, ...] | None]] = {
    "zip corrupt": (lambda r: _truncate(r, "train_val_annotation.zip"), ("train_val_annotation.zip",)),
    "zip without its json": (_zip_without_member, ("train_val_annotation.zip",)),
    "test json truncated": (lambda r: _truncate(r, "test_videodatainfo.json"), ("test_videodatainfo.json",)),
    "train list unknown video": (lambda r: _edit_text(r, "lists/train_list_jsfusion.txt", lambda t: t + "\nvideo97"),
                                 ("video97",)),
    "train list empty": (lambda r: (r / "lists/train_list_jsfusion.txt").write_text(""), ("train_list_jsfusion.txt",)),
}


@pytest.fixture(scope="module")
def clean_official(tmp_path_factory) -> Path:
    return _rf().build_msrvtt(tmp_path_factory.mktemp("msrvtt") / "clean", "official")


@pytest.mark.parametrize("case", list(OFFICIAL_CASES))
def test_bad_official_layout_is_a_complete_run_or_one_line(tmp_path, clean_official, case):
    _check(tmp_path, clean_official, *OFFICIAL_CASES[case])
