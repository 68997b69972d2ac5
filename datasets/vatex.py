"""VATEX multi-caption retrieval (English captions) with the HGR split, read from the files as published.

Captions (the first found under ``data.root``, see ``datasets/_real.py``):

* the official ``vatex_training_v1.0.json`` + ``vatex_validation_v1.0.json`` (+ ``vatex_public_test_english_v1.1.json``
  when present): JSON lists of ``{"videoID", "enCap": [10 English captions], "chCap": [...]}`` (Chinese unused);
* ``ref_captions.json`` (HGR / CLIP4Clip-lineage loaders): ``{video id: [captions]}``;
* ``vatex_data.json`` (CLIP2Video): ``{video id: {"enCap": [captions]}}``.

Split: the HGR lists ``train_list.txt`` / ``val_list.txt`` / ``test_list.txt`` (one video id a line). They are
required: without them the retrieval split (25,991 / 1,500 / 1,500, the last two from the official validation set)
cannot be formed. The expected counts (10 captions per video) are docs/protocols.md's, partly [R] (unverified).

Protocol (docs/protocols.md): every caption is a T2V query over the test videos; V2T ranks caption groups by their
best caption (``bench/metrics.py``); every training caption is a sample. Defaults: 12 frames, 32 words, truncate.

``read_partial_captions`` parses the partial, tokenised VATEX text included with the toolkit data
(``vatex_partial/*.en`` + ``*.id``, 5 captions per video): non-standard, for parsing and tokenizer tests only,
never a retrieval split (docs/protocols.md).
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from tvr_bench.bench.errors import DataError
from tvr_bench.bench.api.metadata import DatasetInfo, PaperShape
from tvr_bench.bench.registry import register_dataset
from tvr_bench.bench.api.dataset import CaptionItem
from tvr_bench.datasets._real import AnnotatedSplit, RealDataset, read_id_list, read_json, read_text, require_text

OFFICIAL = ("vatex_training_v1.0.json", "vatex_validation_v1.0.json", "vatex_public_test_english_v1.1.json")
REF_CAPTIONS, CLIP2VIDEO = "ref_captions.json", "vatex_data.json"
LISTS = {"train": "train_list.txt", "val": "val_list.txt", "test": "test_list.txt"}
HGR_VIDEOS = {"train": 25991, "val": 1500, "test": 1500}
CAPTIONS_PER_VIDEO = 10


def read_partial_captions(en_path: Path, id_path: Path) -> dict[str, list[str]]:
    """The partial VATEX text (``X.en`` aligned line by line with ``X.id`` = ``<videoID>&<k>``): video -> captions
    in k order, stripped of the leading space. Misaligned or malformed files are a DataError naming the file."""
    texts = read_text(en_path).split("\n")
    ids = read_text(id_path).split("\n")
    for lines in (texts, ids):
        if lines and lines[-1] == "":
            lines.pop()
    if len(texts) != len(ids):
        raise DataError(f"{en_path} has {len(texts)} lines but {id_path} has {len(ids)}: not aligned")
    out: dict[str, list[str]] = {}
    for n, (text, ident) in enumerate(zip(texts, ids), start=1):
        vid, sep, k = ident.strip().rpartition("&")
        if not sep or not vid or not k.isdigit():
            raise DataError(f"malformed id at {id_path}:{n}: {ident!r} (expected <videoID>&<k>)")
        caps = out.setdefault(vid, [])
        if int(k) != len(caps):
            raise DataError(f"{id_path}:{n}: caption index {k} of video {vid} out of order")
        caps.append(require_text(text.strip(), f"{en_path}:{n}"))
    return out


def _english(data: object, where: str, kind: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    if kind == "official":
        if not isinstance(data, list):
            raise DataError(f"malformed VATEX file {where}: expected a JSON list of {{videoID, enCap, ...}}")
        items = []
        for i, rec in enumerate(data):
            if not isinstance(rec, dict) or not isinstance(rec.get("videoID"), str):
                raise DataError(f"malformed VATEX file {where}: record {i} has no string videoID")
            items.append((rec["videoID"], rec.get("enCap")))
    else:
        if not isinstance(data, dict):
            raise DataError(f"malformed VATEX file {where}: expected a JSON object keyed by video id")
        items = [(k, v.get("enCap") if kind == "clip2video" and isinstance(v, dict) else v) for k, v in data.items()]
    for vid, caps in items:
        if not isinstance(caps, list) or not caps:
            raise DataError(f"malformed VATEX file {where}: video {vid} has no English caption list")
        out[vid] = [require_text(c, f"{where}: video {vid} caption {k}") for k, c in enumerate(caps)]
    return out


@register_dataset
class VATEX(RealDataset):
    files_needed = (
        "the VATEX captions (the release's vatex_training_v1.0.json + vatex_validation_v1.0.json, or the "
        "ref_captions.json / vatex_data.json of the HGR and CLIP2Video loaders), the HGR split lists train_list.txt / "
        "val_list.txt / test_list.txt (as the HGR code publishes them), and the videos named by their VATEX ids")
    info = DatasetInfo(
        paper_shape=PaperShape("vatex", 12, 32, 15_000, 1_500,
                               "VATEX HGR test: 1,500 videos x 10 English captions = 15,000 T2V queries",
                               "docs/protocols.md (VATEX)", 128),
        name="vatex",
        description="VATEX multi-caption (English): HGR split 25,991 / 1,500 / 1,500 videos x 10 captions; T2V over "
        "all captions, V2T by best caption; official JSON, ref_captions.json or vatex_data.json (--root).",
        protocol="multi-caption",
        reference="docs/protocols.md; CLIP4Clip-lineage VATEX loaders (TS2-Net, CLIP2Video)",
        defaults={"data": {"max_frames": 12, "max_words": 32, "text_overflow": "truncate"}},
    )

    @cached_property
    def captions_by_video(self) -> dict[str, list[str]]:
        official = [p for p in (self.find(n) for n in OFFICIAL) if p is not None]
        if official:
            out: dict[str, list[str]] = {}
            for i, path in enumerate(official):
                part = _english(read_json(self.use_file(f"captions_{i}", path)), str(path), "official")
                dup = set(out) & set(part)
                if dup:
                    raise DataError(f"VATEX video {sorted(dup)[0]} appears in two caption files ({path})")
                out.update(part)
            return out
        for name, kind in ((REF_CAPTIONS, "ref"), (CLIP2VIDEO, "clip2video")):
            path = self.find(name)
            if path is not None:
                return _english(read_json(self.use_file("captions", path)), str(path), kind)
        partial = self.find("val.en", "public_test.en")
        hint = (f" (found {partial}: the partial tokenised VATEX text is not the retrieval protocol)"
                if partial is not None else "")
        raise DataError(self.missing_files("VATEX English captions", [*OFFICIAL, REF_CAPTIONS, CLIP2VIDEO]).args[0]
                        + hint)

    def _annotate(self, split: str) -> AnnotatedSplit:
        list_path = self.find(LISTS[split])
        if list_path is None:
            problems = [f"the HGR split list {LISTS[split]} is not under {self.root} (the VATEX retrieval split "
                        "needs the HGR lists)"]
            try:
                self.captions_by_video
            except DataError as exc:
                problems.append(str(exc))
            raise DataError("; ".join(problems))
        captions_by_video = self.captions_by_video
        ids = read_id_list(self.use_file(f"{split}_list", list_path))
        lacking = [v for v in ids if v not in captions_by_video]
        if lacking:
            raise DataError(f"vatex/{split}: {len(lacking)} videos of {list_path} have no English captions in the "
                            f"caption file(s): {', '.join(lacking[:10])}")
        captions = [CaptionItem(f"{v}#{k}", v, text) for v in ids for k, text in enumerate(captions_by_video[v])]
        n = HGR_VIDEOS[split]
        expected = {"videos": n, "texts": n * CAPTIONS_PER_VIDEO, "pairs": n * CAPTIONS_PER_VIDEO}
        notes = ["expected counts from docs/protocols.md (val/test sizes [R], unverified)"]
        mode = "all captions" if split == "train" else "multi-caption"
        return AnnotatedSplit("vatex", split, ids, captions, len(captions), "captions", mode,
                              f"{list_path.name} + {self._caption_files()}", expected, True, notes)

    def _caption_files(self) -> str:
        return ", ".join(p.name for role, p in sorted(self._files.items()) if role.startswith("captions"))
