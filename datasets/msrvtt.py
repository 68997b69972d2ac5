"""MSR-VTT: 9k (or 7k) training, 1k-A test (JSFusion), read from the files as published.

Accepted annotation files (found by name under ``data.root``, see ``datasets/_real.py``):

* captions — CLIP4Clip layout ``MSRVTT_data.json`` (the union of the two official files), else the official
  ``train_val_videodatainfo.json`` + ``test_videodatainfo.json``, or the published archives that hold them
  (``train_val_annotation.zip``, ``test_videodatainfo.json.zip``), read without unpacking;
* training ids — ``MSRVTT_train.9k.csv`` (CLIP4Clip) or ``train_list_jsfusion.txt`` (collaborative-experts) for
  ``data.msrvtt.train_split=9k``; ``MSRVTT_train.7k.csv`` for ``7k`` (its count is not verified: no reference);
* test — ``MSRVTT_JSFUSION_test.csv``: 1,000 videos with one caption each (its sha256 is checked against the
  reference: variant copies circulate, docs/protocols.md).

Protocol (docs/protocols.md): every training caption is a sample (9,000 x 20 = 180,000), captions in the order
of the sentence file, as CLIP4Clip's ``--expand_msrvtt_sentences``; the test is 1,000 (caption, video) pairs,
ground truth on the diagonal.

Validation. The 9k / 1k-A protocol has no validation split, and checkpoints are never selected on test
(docs/protocols.md). ``data.msrvtt.val``:

* ``official`` (default): the 497 official ``validate`` videos (video6513-video7009), first caption of each.
  They belong to the 9k training list, so selecting on them measures fit, not generalisation: MSR-VTT runs
  therefore default to ``train.select_on=last`` and report the last epoch (the training set stays the standard
  9,000 videos). The record notes the overlap.
* ``holdout``: the last ``data.msrvtt.holdout_videos`` ids of the training list (first caption each) are taken
  out of training and used for selection. The training split is then non-standard, and recorded as such.

Defaults (CLIP4Clip): 12 frames, 32 words, captions longer than the context truncated.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

from tvr_bench.bench.errors import ConfigError, DataError
from tvr_bench.bench.api.metadata import DatasetInfo, PaperShape
from tvr_bench.bench.registry import register_dataset
from tvr_bench.bench.api.dataset import CaptionItem
from tvr_bench.datasets._real import (
    AnnotatedSplit,
    RealDataset,
    read_csv_rows,
    read_id_list,
    read_json,
    read_json_member,
    require_text,
    sha256_file,
)

DATA_JSON = "MSRVTT_data.json"
TRAIN_VAL_JSON, TRAIN_VAL_ZIP = "train_val_videodatainfo.json", "train_val_annotation.zip"
TEST_JSON, TEST_ZIP = "test_videodatainfo.json", "test_videodatainfo.json.zip"
TRAIN_CSV = {"9k": "MSRVTT_train.9k.csv", "7k": "MSRVTT_train.7k.csv"}
TRAIN_LIST_9K = "train_list_jsfusion.txt"
TEST_CSV = "MSRVTT_JSFUSION_test.csv"
VAL_LIST_FULL = "val_list_full.txt"

#: sha256 of the published files (PROVENANCE.md; CLIP4Clip's Git-LFS oids for its CSVs)
REFERENCE_SHA256 = {
    TEST_CSV: "e61144b312c8a2fc2126f96504c981f8c23c05b3ba9655a56e2af50ac8a4b16a",
    TRAIN_CSV["9k"]: "0a7ece2418e1f7ac5680555a04ddfef8950293ac3c4bdd6584fb0fa6cc0ff7d3",
    TRAIN_LIST_9K: "6d34fc995c696c36efc89911eb6da41322ada4dd80941aa99e28a23cffcbb3c3",
    "val_list_jsfusion.txt": "49a09fb68f7ec52b3b9bbb7e856ffbd3f00233976ed435fded658309c3cd491a",
    TRAIN_VAL_ZIP: "ce2d97dd82d03e018c6f9ee69c96eb784397d1c83f734fdb8c17aafa5e27da31",
    TEST_ZIP: "0871bbe19dc9c13edeef4af5d7be39600a2e2b7d967e0206bb5911d633af24a0",
    "train_list_full.txt": "7f35fa96d45e94eed97dda0c2df98342a58fca769e7ffab352bd59c69c933251",
    VAL_LIST_FULL: "be5b1994f643740b80796c392d7b472deed45ddce69ce13fee87609ce303ab3f",
}

EXPECTED = {
    "9k": {"videos": 9000, "texts": 180000, "pairs": 180000},
    "test": {"videos": 1000, "texts": 1000, "pairs": 1000},
    "val_official": {"videos": 497, "texts": 497, "pairs": 497},
}


# --------------------------------------------------------------------------------------------------------------
# Builders of the CLIP4Clip files from the official ones (used by the tests; handy for users)
# --------------------------------------------------------------------------------------------------------------


def train_csv_bytes(ids: list[str]) -> bytes:
    """``MSRVTT_train.{9k,7k}.csv`` exactly as CLIP4Clip publishes it: ``video_id`` header, one id per line, LF."""
    return ("video_id\n" + "".join(f"{i}\n" for i in ids)).encode("utf-8")


def merge_videodatainfo(train_val: dict, test: dict) -> dict:
    """``MSRVTT_data.json`` content: the official files' ``videos`` and ``sentences`` lists concatenated."""
    return {**train_val, "videos": train_val["videos"] + test["videos"],
            "sentences": train_val["sentences"] + test["sentences"]}


# --------------------------------------------------------------------------------------------------------------


class _Corpus:
    """All sentences (file order) and the per-video official split, from whichever caption files exist."""

    def __init__(self) -> None:
        self.sentences: list[tuple[Any, str, str]] = []  # (sen_id, video_id, caption)
        self.video_split: dict[str, str] = {}
        self.by_video: dict[str, list[int]] = {}

    def add(self, data: Any, where: str) -> None:
        if not isinstance(data, dict) or not isinstance(data.get("sentences"), list):
            raise DataError(f"malformed MSR-VTT annotation {where}: expected an object with a \"sentences\" list")
        videos = data.get("videos", [])
        if not isinstance(videos, list):
            raise DataError(f"malformed MSR-VTT annotation {where}: \"videos\" is not a list")
        for i, v in enumerate(videos):
            if not isinstance(v, dict) or not isinstance(v.get("video_id"), str):
                raise DataError(f"malformed MSR-VTT annotation {where}: videos[{i}] has no string video_id")
            if isinstance(v.get("split"), str):
                self.video_split[v["video_id"]] = v["split"]
        for i, s in enumerate(data["sentences"]):
            if not isinstance(s, dict) or not isinstance(s.get("video_id"), str):
                raise DataError(f"malformed MSR-VTT annotation {where}: sentences[{i}] has no string video_id")
            caption = require_text(s.get("caption"), f"{where}: sentences[{i}] (video {s['video_id']})")
            self.by_video.setdefault(s["video_id"], []).append(len(self.sentences))
            self.sentences.append((s.get("sen_id"), s["video_id"], caption))

    def captions(self, video_id: str) -> list[CaptionItem]:
        out = []
        for k, idx in enumerate(self.by_video.get(video_id, [])):
            sen_id, vid, text = self.sentences[idx]
            out.append(CaptionItem(f"sen{sen_id}" if isinstance(sen_id, int) else f"{vid}#{k}", vid, text))
        return out


@register_dataset
class MSRVTT(RealDataset):
    files_needed = (
        "the MSR-VTT annotations (CLIP4Clip's MSRVTT_data.json, or the official train_val_videodatainfo.json + "
        "test_videodatainfo.json of Microsoft Research's release, also mirrored by WingsBrokenAngel/"
        "MSR-VTT-DataCleaning), the 1k-A test CSV MSRVTT_JSFUSION_test.csv (ArrowLuo/CLIP4Clip, data/), the 9k "
        "list MSRVTT_train.9k.csv (CLIP4Clip) or train_list_jsfusion.txt (albanie/collaborative-experts) and the videos video0.mp4 ... video9999.mp4 "
        "(MSRVTT.zip of the release)")
    info = DatasetInfo(
        paper_shape=PaperShape("msrvtt", 12, 32, 1_000, 1_000,
                               "MSR-VTT 1k-A: 1,000 captions x 1,000 videos (one caption per video)",
                               "docs/protocols.md (MSR-VTT)", 128),
        name="msrvtt",
        description="MSR-VTT 9k/1k-A: train 9,000 videos x 20 captions (each a sample), test 1,000 JSFusion pairs; "
        "official JSON/zip or CLIP4Clip layout (--root).",
        protocol="1:1",
        reference="docs/protocols.md; CLIP4Clip dataloader_msrvtt_retrieval.py",
        defaults={
            "data": {
                "max_frames": 12,
                "max_words": 32,
                "text_overflow": "truncate",
                "msrvtt": {"train_split": "9k", "val": "official", "holdout_videos": 1000},
            },
            # the official val videos are training videos: report the last epoch (see the module docstring)
            "train": {"select_on": "last"},
        },
    )
    reference_sha256 = REFERENCE_SHA256

    def __init__(self, cfg, *, cache_dir):
        super().__init__(cfg, cache_dir=cache_dir)
        o = self.options
        if o.get("train_split") not in TRAIN_CSV:
            raise ConfigError(f"data.msrvtt.train_split must be 9k or 7k, got {o.get('train_split')!r}")
        if o.get("val") not in ("official", "holdout"):
            raise ConfigError(f"data.msrvtt.val must be 'official' or 'holdout', got {o.get('val')!r}")
        n = o.get("holdout_videos")
        if o["val"] == "holdout" and (not isinstance(n, int) or isinstance(n, bool) or n < 1):
            raise ConfigError(f"data.msrvtt.holdout_videos must be a positive integer, got {n!r}")

    # -- files --

    @cached_property
    def corpus(self) -> _Corpus:
        corpus = _Corpus()
        merged = self.find(DATA_JSON)
        if merged is not None:
            corpus.add(read_json(self.use_file("captions", merged)), str(merged))
            return corpus
        parts = []
        for json_name, zip_name, role in ((TRAIN_VAL_JSON, TRAIN_VAL_ZIP, "captions_train_val"),
                                          (TEST_JSON, TEST_ZIP, "captions_test")):
            path = self.find(json_name, zip_name)
            if path is None:
                raise self.missing_files("MSR-VTT captions", [DATA_JSON, json_name, zip_name])
            self.use_file(role, path)
            data = read_json_member(path, json_name) if path.suffix == ".zip" else read_json(path)
            parts.append((data, str(path)))
        for data, where in parts:
            corpus.add(data, where)
        return corpus

    @cached_property
    def train_list(self) -> tuple[list[str], str]:
        which = self.options["train_split"]
        csv_path = self.find(TRAIN_CSV[which])
        if csv_path is not None:
            self.use_file("train_list", csv_path)
            ids = [r["video_id"].strip() for r in read_csv_rows(csv_path, ["video_id"])]
            if len(set(ids)) != len(ids):
                raise DataError(f"duplicate video ids in {csv_path}")
            return ids, csv_path.name
        if which == "9k":
            lst = self.find(TRAIN_LIST_9K)
            if lst is not None:
                return read_id_list(self.use_file("train_list", lst)), lst.name
            raise self.missing_files("the 9k training list", [TRAIN_CSV["9k"], TRAIN_LIST_9K])
        raise self.missing_files("the 7k training list (no rebuild recipe exists)", [TRAIN_CSV["7k"]])

    def _checksum_note(self, role: str) -> str | None:
        path = self._files.get(role)
        ref = REFERENCE_SHA256.get(path.name) if path else None
        if ref is not None and sha256_file(path) != ref:
            return f"{path.name} differs from the published file (sha256 {ref[:8]}...): a variant copy?"
        return None

    # -- splits --

    def _annotate(self, split: str) -> AnnotatedSplit:
        return {"train": self._train, "val": self._val, "test": self._test}[split]()

    def _train(self) -> AnnotatedSplit:
        ids, source = self.train_list
        which = self.options["train_split"]
        notes, standard = [], True
        expected = dict(EXPECTED["9k"]) if which == "9k" else {"videos": None, "texts": None, "pairs": None}
        if which == "7k":
            notes.append("7k training list: count not verified (no reference checksum or count)")
        if self.options["val"] == "holdout":
            n = self.options["holdout_videos"]
            if n >= len(ids):
                raise ConfigError(f"data.msrvtt.holdout_videos={n} leaves no training video ({len(ids)} listed)")
            ids = ids[:-n]
            standard = False
            notes.append(f"last {n} training videos held out for validation (data.msrvtt.val=holdout)")
            expected = {k: None for k in expected}
        note = self._checksum_note("train_list")
        if note:
            notes.append(note)
            standard = False
        corpus = self.corpus
        wanted = set(ids)
        lacking = [v for v in ids if v not in corpus.by_video]
        if lacking:
            raise DataError(f"msrvtt/train: {len(lacking)} training ids of {source} have no caption in the caption "
                            f"file(s): {', '.join(lacking[:10])}")
        captions = []
        per_video: dict[str, int] = {}
        for idx, (sen_id, vid, text) in enumerate(corpus.sentences):
            if vid in wanted:
                k = per_video.get(vid, 0)
                per_video[vid] = k + 1
                captions.append(CaptionItem(f"sen{sen_id}" if isinstance(sen_id, int) else f"{vid}#{k}", vid, text))
        return AnnotatedSplit("msrvtt", "train", ids, captions, len(captions), "captions", "all captions",
                              f"{source} ({which}), captions of {self._caption_source()}", expected, standard, notes)

    def _caption_source(self) -> str:
        return ", ".join(p.name for role, p in sorted(self._files.items()) if role.startswith("captions"))

    def _val(self) -> AnnotatedSplit:
        corpus = self.corpus
        notes: list[str] = []
        if self.options["val"] == "holdout":
            train_ids, source = self.train_list
            n = self.options["holdout_videos"]
            ids = train_ids[-n:]
            src = f"last {n} ids of {source} (held out of training)"
            expected: dict[str, int | None] = {"videos": n, "texts": n, "pairs": n}
        else:
            ids = [v for v, s in corpus.video_split.items() if s == "validate"]
            src = "official 'validate' split of the caption file(s)"
            if not ids:
                lst = self.find(VAL_LIST_FULL)
                if lst is None:
                    raise DataError(f"msrvtt/val: the caption file(s) carry no 'validate' split and {VAL_LIST_FULL} "
                                    f"is not under {self.root}")
                ids = read_id_list(self.use_file("val_list", lst))
                src = lst.name
            expected = dict(EXPECTED["val_official"])
            try:
                overlap = len(set(ids) & set(self.train_list[0]))
            except DataError:
                overlap = 0
            if overlap:
                notes.append(f"{overlap} of the {len(ids)} validation videos are training videos: selecting a "
                             "checkpoint on them measures fit (MSR-VTT defaults to train.select_on=last)")
        lacking = [v for v in ids if v not in corpus.by_video]
        if lacking:
            raise DataError(f"msrvtt/val: {len(lacking)} validation videos have no caption: {', '.join(lacking[:10])}")
        captions = [corpus.captions(v)[0] for v in ids]
        return AnnotatedSplit("msrvtt", "val", ids, captions, len(captions), "captions", "1:1 (first caption)",
                              src, expected, True, notes)

    def _test(self) -> AnnotatedSplit:
        path = self.find(TEST_CSV)
        if path is None:
            hint = (" (val_list_jsfusion.txt holds the 1k-A ids but not their captions)"
                    if self.find("val_list_jsfusion.txt") else "")
            raise DataError(f"msrvtt: the 1k-A test file {TEST_CSV} was not found under {self.root}{hint}")
        self.use_file("test", path)
        rows = read_csv_rows(path, ["video_id", "sentence"])
        captions, ids = [], []
        for n, row in enumerate(rows):
            vid = row["video_id"].strip()
            text = require_text(row["sentence"], f"{path}: row {n + 1} (video {vid})")
            captions.append(CaptionItem((row.get("key") or f"test{n}").strip(), vid, text))
            ids.append(vid)
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})
            raise DataError(f"malformed 1k-A test file {path}: videos listed twice ({', '.join(dup[:10])}); "
                            "the protocol has one caption per video")
        notes, standard = [], True
        note = self._checksum_note("test")
        if note:
            notes.append(note)
            standard = False
        try:
            overlap = set(ids) & set(self.train_list[0])
        except DataError:
            overlap = set()
        if overlap:
            notes.append(f"{len(overlap)} test videos are also in the training list")
            standard = False
        return AnnotatedSplit("msrvtt", "test", ids, captions, len(captions), "captions", "1:1", path.name,
                              dict(EXPECTED["test"]), standard, notes)

