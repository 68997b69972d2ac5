"""DiDeMo paragraph-to-video retrieval, read from LocalizingMoments' JSON files as published.

Files under ``data.root`` (found by name, see ``datasets/_real.py``): ``{train,val,test}_data.json``
(LocalizingMoments: a list of records ``video``, ``description``, ``times``, ``num_segments``, ``dl_link``,
``annotation_id``) and, when present, the collaborative-experts / CLIP4Clip split lists ``{train,val,test}_list.txt``.

Split handling. With a split list, the split is the list's videos, in list order — the standard split (train 8,392 /
val 1,065 / test 1,004 videos, docs/protocols.md). Without it, the split is every video of the JSON file, in order
of first appearance (LocalizingMoments' own split, e.g. 1,037 test videos): the run works and the record marks
the protocol as non-standard (the 33 test videos the standard split drops cannot be identified without the list).
A listed video with no description in the JSON file is an error.

Paragraphs (docs/protocols.md, as CLIP4Clip builds them): all descriptions of a video joined with single spaces,
in file order; the temporal annotations are ignored and the whole video is the target. One paragraph per video:
a square 1:1 protocol. (CLIP4Clip reads seconds 0-31 of each video; the harness samples the whole video at 1 fps,
which is the same for the usual <= 30 s DiDeMo clip.)

Defaults (CLIP4Clip, X-CLIP, GLCCL): 64 frames, 64 words, paragraphs longer than the context truncated.
"""

from __future__ import annotations

from tvr_bench.bench.errors import DataError
from tvr_bench.bench.api.metadata import DatasetInfo, PaperShape
from tvr_bench.bench.registry import register_dataset
from tvr_bench.bench.api.dataset import CaptionItem
from tvr_bench.datasets._real import AnnotatedSplit, RealDataset, read_id_list, read_json, require_text, sha256_file

#: counts of the collaborative-experts split lists (the standard retrieval split)
STANDARD_VIDEOS = {"train": 8392, "val": 1065, "test": 1004}
#: counts of LocalizingMoments' files as published (PROVENANCE.md); train_data.json was not available to check
FILE_COUNTS = {"test": {"videos": 1037, "texts": 4021, "pairs": 1037},
               "val": {"videos": 1094, "texts": 4180, "pairs": 1094}}
REFERENCE_SHA256 = {
    "test_data.json": "1891c04ec48b3d364c739594b2b6413806b74bd9027c092d896e7ebb930ff1cd",
    "val_data.json": "b0364cc256553332feb19d46bcc4cd2b09774949fe6c0b25e7ed0ff3c6aefebb",
}


def paragraphs(records: object, where: str) -> dict[str, list[str]]:
    """video -> its descriptions, in file order (videos in order of first appearance)."""
    if not isinstance(records, list):
        raise DataError(f"malformed DiDeMo file {where}: expected a JSON list of records")
    out: dict[str, list[str]] = {}
    for i, rec in enumerate(records):
        if not isinstance(rec, dict) or not isinstance(rec.get("video"), str) or not rec["video"]:
            raise DataError(f"malformed DiDeMo file {where}: record {i} has no \"video\" file name")
        text = require_text(rec.get("description"), f"{where}: record {i} (video {rec['video']})")
        out.setdefault(rec["video"], []).append(text)
    if not out:
        raise DataError(f"DiDeMo file {where} holds no records")
    return out


@register_dataset
class DiDeMo(RealDataset):
    files_needed = (
        "the DiDeMo annotations train_data.json / val_data.json / test_data.json (LisaAnne/LocalizingMoments, "
        "data/) and the videos, named by the annotations' video ids (the Flickr links of YFCC100M in that "
        "repository's data/video_licenses.txt)")
    info = DatasetInfo(
        paper_shape=PaperShape("didemo", 64, 64, 1_004, 1_004,
                               "DiDeMo paragraph-to-video: 1,004 paragraphs x 1,004 test videos",
                               "docs/protocols.md (DiDeMo)", 64),
        name="didemo",
        description="DiDeMo paragraph-to-video: a video's descriptions joined into one query; CE split lists when "
        "present (test 1,004), else LocalizingMoments' files (test 1,037); --root holds *_data.json.",
        protocol="paragraph",
        reference="docs/protocols.md; CLIP4Clip dataloader_didemo_retrieval.py",
        defaults={"data": {"max_frames": 64, "max_words": 64, "text_overflow": "truncate"}},
    )
    reference_sha256 = REFERENCE_SHA256

    def _annotate(self, split: str) -> AnnotatedSplit:
        data_name, list_name = f"{split}_data.json", f"{split}_list.txt"
        data_path = self.find(data_name)
        if data_path is None:
            raise self.missing_files(f"the DiDeMo {split} annotations", [data_name])
        descriptions = paragraphs(read_json(self.use_file(f"{split}_data", data_path)), str(data_path))
        list_path = self.find(list_name)
        notes: list[str] = []
        if list_path is not None:
            ids = read_id_list(self.use_file(f"{split}_list", list_path))
            lacking = [v for v in ids if v not in descriptions]
            if lacking:
                raise DataError(f"didemo/{split}: {len(lacking)} videos of {list_path} have no description in "
                                f"{data_path}: {', '.join(lacking[:10])}")
            source = f"{list_path.name} + {data_path.name}"
            expected: dict[str, int | None] = {"videos": STANDARD_VIDEOS[split], "texts": None,
                                               "pairs": STANDARD_VIDEOS[split]}
            standard = True
        else:
            ids = list(descriptions)
            source = f"{data_path.name} (no {list_name})"
            expected = dict(FILE_COUNTS.get(split, {"videos": None, "texts": None, "pairs": None}))
            standard = False
            notes.append(f"LocalizingMoments split: {list_name} (collaborative-experts) not found, so the standard "
                         f"{STANDARD_VIDEOS[split]:,}-video {split} split cannot be formed")
        ref = REFERENCE_SHA256.get(data_path.name)
        if ref is not None and list_path is None and sha256_file(data_path) != ref:
            notes.append(f"{data_path.name} differs from the published file; expected counts may not apply")
            expected = {"videos": None, "texts": None, "pairs": None}
        captions = [CaptionItem(v, v, " ".join(descriptions[v])) for v in ids]
        n_texts = sum(len(descriptions[v]) for v in ids)
        return AnnotatedSplit("didemo", split, ids, captions, n_texts, "descriptions", "paragraph", source,
                              expected, standard, notes)
