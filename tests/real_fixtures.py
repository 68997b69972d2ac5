"""Builders of tiny real-layout datasets (annotation files exactly as published + small real MP4 files).

Not a test module: tests/conftest.py loads it once by path (``load()`` below) as ``tvr_bench_real_fixtures``,
since the suite runs with ``--import-mode=importlib``. Every builder writes under the folder it is given
and returns facts the tests check against. Videos are 32x32, a few frames, written with ``bench/data/video.py``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import zipfile
from pathlib import Path

import numpy as np

from tvr_bench.bench.data.video import write_video

WORDS = ("red", "blue", "green", "cat", "dog", "car", "runs", "jumps", "sings", "on", "a", "the", "street", "stage")


def load():
    """This module, imported once per session by path."""
    name = "tvr_bench_real_fixtures"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__))
        mod = importlib.util.module_from_spec(spec)
        sys.modules[name] = mod
        spec.loader.exec_module(mod)
    return sys.modules[name]


def dataset_plugin(name: str, root: Path, *overrides: str):
    """The registered dataset plugin ``name`` reading ``root``, configured as ``bench run`` would (meanp)."""
    from tvr_bench.bench.config import resolve_config
    from tvr_bench.bench.registry import DATASETS, METHODS

    cls = DATASETS.get(name)
    cfg, _ = resolve_config(method_cls=METHODS.get("meanp"), dataset_cls=cls,
                            overrides=[f"data.root={json.dumps(str(root))}", *overrides])
    return cls(cfg, cache_dir=root / ".cache")


def tiny_video(path: Path, seed: int, *, seconds: int = 3, fps: int = 2, size: int = 32) -> Path:
    """A short clip: a coloured square moving over a background, both chosen by ``seed``."""
    rng = np.random.default_rng(seed)
    bg, fg = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    frames = np.empty((seconds * fps, size, size, 3), dtype=np.uint8)
    for t in range(frames.shape[0]):
        frames[t] = bg
        x = (4 + 3 * t) % (size - 8)
        frames[t, 8:16, x: x + 8] = fg
    return write_video(path, frames, fps)


def _sentence(rng: np.random.Generator) -> str:
    return " ".join(rng.choice(WORDS, size=int(rng.integers(4, 8))))


# --------------------------------------------------------------------------------------------------------------
# `bench run` on a fixture
# --------------------------------------------------------------------------------------------------------------


def preset_args(dataset: str) -> list[str]:
    """``--preset smoke`` when the config accepts it for ``dataset``. The smoke preset carries a
    ``data.synthetic`` section that the strict preset merge rejects for other datasets; until bench/config.py
    skips foreign dataset sections, the same values are passed as ``--set`` overrides."""
    from tvr_bench.bench.config import PRESETS, flat_keys, resolve_config
    from tvr_bench.bench.errors import ConfigError
    from tvr_bench.bench.registry import DATASETS, METHODS

    try:
        resolve_config(method_cls=METHODS.get("glccl"), dataset_cls=DATASETS.get(dataset), preset="smoke")
        return ["--preset", "smoke"]
    except ConfigError:
        out = ["--preset", "default"]
        for key in flat_keys(PRESETS["smoke"]):
            if key.startswith("data.synthetic."):
                continue
            node = PRESETS["smoke"]
            for part in key.split("."):
                node = node[part]
            out += ["--set", f"{key}={json.dumps(node)}"]
        return out


def run_args(dataset: str, root: Path, out: Path, cache_dir: Path, *extra: str) -> list[str]:
    """A fast `bench run` of glccl on a fixture: smoke settings, one epoch, 4 frames, 32 words (tvr-tiny's text
    context), the frame cache in ``cache_dir``."""
    return ["run", "--method", "glccl", "--dataset", dataset, "--root", str(root), "--out", str(out), "--quiet",
            "--no-table", *preset_args(dataset), "--set", f"data.cache_dir={cache_dir}", "--set", "train.epochs=1",
            "--set", "data.max_frames=4", "--set", "data.max_words=32", *extra]


# --------------------------------------------------------------------------------------------------------------
# MSR-VTT
# --------------------------------------------------------------------------------------------------------------

MSRVTT_OFFICIAL = {"train": range(0, 8), "validate": range(8, 10), "test": range(10, 16)}
MSRVTT_1KA = ["video14", "video11", "video15", "video12"]  # CSV order is not numeric, as in the real file
MSRVTT_CAPTIONS = 3


def msrvtt_official_json(seed: int = 0) -> tuple[dict, dict]:
    rng = np.random.default_rng(seed)
    info = {"year": "2016", "version": "1.0", "description": "fixture", "contributor": "tests",
            "data_created": "2016-04-14 14:30:20"}
    files = {"train_val": {"info": info, "videos": [], "sentences": []},
             "test": {"info": info, "videos": [], "sentences": []}}
    sen_id = 0
    for split, ids in MSRVTT_OFFICIAL.items():
        target = files["test" if split == "test" else "train_val"]
        for i in ids:
            target["videos"].append({"category": i % 20, "url": f"https://www.youtube.com/watch?v=x{i}",
                                     "video_id": f"video{i}", "start time": 1.0, "end time": 4.0,
                                     "split": split, "id": i})
    for key in ("train_val", "test"):
        vids = [v["video_id"] for v in files[key]["videos"]]
        for k in range(MSRVTT_CAPTIONS):  # sentences interleaved over videos, as in the real files
            for vid in vids:
                files[key]["sentences"].append({"caption": f"{vid} {_sentence(rng)} {k}", "video_id": vid,
                                                "sen_id": sen_id})
                sen_id += 1
    return files["train_val"], files["test"]


def msrvtt_9k_ids() -> list[str]:
    return [f"video{i}" for i in range(16) if f"video{i}" not in MSRVTT_1KA]


def _jsfusion_csv(test_json: dict) -> str:
    first = {}
    for s in test_json["sentences"]:
        first.setdefault(s["video_id"], s["caption"])
    rows = [f"ret{n},msr{vid[5:]},{vid},{first[vid]}" for n, vid in enumerate(MSRVTT_1KA)]
    return "key,vid_key,video_id,sentence\n" + "\n".join(rows) + "\n"


def build_msrvtt(root: Path, layout: str = "official", *, videos: bool = True) -> Path:
    """``official``: the train/val zip as published + the test JSON unzipped, CE lists, JSFusion CSV, videos in
    ``TrainValVideo/`` and ``TestVideo/``. ``clip4clip``: ``msrvtt_data/`` with MSRVTT_data.json, the 9k/7k CSVs
    and the JSFusion CSV, videos in ``videos/all/`` (video3 as .webm, CLIP4Clip's fallback extension)."""
    from tvr_bench.datasets.msrvtt import merge_videodatainfo, train_csv_bytes

    root.mkdir(parents=True, exist_ok=True)
    train_val, test = msrvtt_official_json()
    if layout == "official":
        with zipfile.ZipFile(root / "train_val_annotation.zip", "w") as zf:
            zf.writestr("train_val_videodatainfo.json", json.dumps(train_val))
            zf.writestr("readme.txt", "fixture")
        (root / "test_videodatainfo.json").write_text(json.dumps(test))
        lists = root / "lists"
        lists.mkdir()
        (lists / "train_list_jsfusion.txt").write_text("\n".join(msrvtt_9k_ids()))  # no trailing newline
        (lists / "val_list_jsfusion.txt").write_text("\n".join(sorted(MSRVTT_1KA, key=lambda v: int(v[5:]))))
        (root / "MSRVTT_JSFUSION_test.csv").write_text(_jsfusion_csv(test))
        if videos:
            for split, ids in MSRVTT_OFFICIAL.items():
                folder = root / ("TestVideo" if split == "test" else "TrainValVideo")
                for i in ids:
                    tiny_video(folder / f"video{i}.mp4", i)
    elif layout == "clip4clip":
        data = root / "msrvtt_data"
        data.mkdir()
        (data / "MSRVTT_data.json").write_text(json.dumps(merge_videodatainfo(train_val, test)))
        (data / "MSRVTT_train.9k.csv").write_bytes(train_csv_bytes(msrvtt_9k_ids()))
        official_7k = [f"video{i}" for r in (MSRVTT_OFFICIAL["train"], MSRVTT_OFFICIAL["validate"]) for i in r]
        (data / "MSRVTT_train.7k.csv").write_bytes(train_csv_bytes(official_7k))
        (data / "MSRVTT_JSFUSION_test.csv").write_text(_jsfusion_csv(test))
        if videos:
            for i in range(16):
                tiny_video(root / "videos" / "all" / f"video{i}.{'webm' if i == 3 else 'mp4'}", i)
    else:
        raise ValueError(layout)
    return root


# --------------------------------------------------------------------------------------------------------------
# DiDeMo
# --------------------------------------------------------------------------------------------------------------

DIDEMO_SIZES = {"train": 10, "val": 3, "test": 5}
_EXTS = ("mov", "avi", "mp4", "m4v", "3gp", "wmv", "mpg", "")


def didemo_name(split: str, i: int) -> str:
    code = {"train": 1, "val": 2, "test": 3}[split]
    ext = _EXTS[(i + code) % len(_EXTS)]
    return f"{1000 + code * 100 + i}@N0{i % 3}_{5000 + i}_{code}{i:02d}ab.{ext}"  # "x." when ext == ""


def didemo_records(split: str, seed: int = 0) -> list[dict]:
    """LocalizingMoments records: 1-4 descriptions per video, records of a video not contiguous."""
    rng = np.random.default_rng(seed + {"train": 1, "val": 2, "test": 3}[split])
    names = [didemo_name(split, i) for i in range(DIDEMO_SIZES[split])]
    counts = [1 + (i % 4) for i in range(len(names))]
    records, ann = [], 0
    for round_ in range(max(counts)):
        for name, n in zip(names, counts):
            if round_ < n:
                records.append({"num_segments": 6, "description": f"{_sentence(rng)} ({round_})",
                                "dl_link": "https://www.flickr.com/video_download.gne?id=1",
                                "times": [[0, 0], [1, 1], [0, 1], [2, 2]], "video": name, "annotation_id": ann})
                ann += 1
    return records


def build_didemo(root: Path, *, lists: bool = False, videos: bool = True) -> Path:
    """``{split}_data.json`` at the root (and, with ``lists``, CE-style ``{split}_list.txt`` that drop one video
    per split, as the CE split drops the undownloadable ones); videos in ``videos/`` under their Flickr names, one
    re-encoded as ``<stem>.mp4`` (rule 3 of the lookup)."""
    root.mkdir(parents=True, exist_ok=True)
    for split in DIDEMO_SIZES:
        (root / f"{split}_data.json").write_text(json.dumps(didemo_records(split)))
        names = [didemo_name(split, i) for i in range(DIDEMO_SIZES[split])]
        if lists:
            (root / f"{split}_list.txt").write_text("\n".join(names[:-1]) + "\n")
        if videos:
            for i, name in enumerate(names):
                if split == "train" and i == 0:  # (an .avi name)
                    name = name.rpartition(".")[0] + ".mp4"
                tiny_video(root / "videos" / name, 100 + i + 20 * len(split))
    return root


# --------------------------------------------------------------------------------------------------------------
# VATEX
# --------------------------------------------------------------------------------------------------------------

VATEX_SIZES = {"train": 6, "val": 3, "test": 3}
VATEX_CAPTIONS = 5


def vatex_id(split: str, i: int) -> str:
    return f"Yt{split[:2]}{i:02d}x_Q-{i}_{10 * i:06d}_{10 * i + 10:06d}"


def vatex_records(split_ids: dict[str, list[str]], seed: int = 0) -> tuple[list[dict], list[dict]]:
    rng = np.random.default_rng(seed)

    def rec(vid: str) -> dict:
        return {"videoID": vid, "enCap": [f"{_sentence(rng)} {k}" for k in range(VATEX_CAPTIONS)],
                "chCap": ["一个人" for _ in range(VATEX_CAPTIONS)]}

    training = [rec(v) for v in split_ids["train"]]
    validation = [rec(v) for v in split_ids["val"] + split_ids["test"]]  # HGR: val and test from official val
    return training, validation


def build_vatex(root: Path, *, videos: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    ids = {s: [vatex_id(s, i) for i in range(n)] for s, n in VATEX_SIZES.items()}
    training, validation = vatex_records(ids)
    ann = root / "annotations"
    ann.mkdir()
    (ann / "vatex_training_v1.0.json").write_text(json.dumps(training, ensure_ascii=False))
    (ann / "vatex_validation_v1.0.json").write_text(json.dumps(validation, ensure_ascii=False))
    for split, vids in ids.items():
        (ann / f"{split}_list.txt").write_text("\n".join(vids) + "\n")
        if videos:
            for i, vid in enumerate(vids):
                tiny_video(root / "videos" / f"{vid}.mp4", 200 + i + 20 * len(split))
    return root
