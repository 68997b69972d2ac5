"""The embedded synthetic benchmark: short videos of coloured shapes, captions that describe only part of them.

Each video is a sequence of ``events_per_video`` distinct *events*, each ``seconds_per_event``
seconds long. An event is a (shape, colour, motion, background) combination: a filled shape of one
colour moving across (or pulsing on) a plain background. A caption describes only some of a video's
events (``caption_coverage``), in temporal order, e.g. ``"red circle left on black, then blue
square up on gray"``: the partial relevance between a caption and a video that GLCCL targets.
Hard negatives: some videos copy one or two events from another video of the same split, so a
caption can match a wrong video in part.

Everything is deterministic from the seed and the parameters: the same call writes the same
annotation file and videos that decode to the same frames. Random streams are derived per split and
per video (``SeedSequence([seed, split, video, purpose])``), so a split's videos do not depend on the
sizes of the other splits.

Layout under ``root``: ``videos/<split>/<video_id>.mp4`` and ``annotations.json``, written atomically and last
(no ``annotations.json`` = incomplete); the annotation file's fields are listed in docs/protocols.md.

A caption is ``ambiguous`` only when no event subset of its video avoids being wholly contained in
another video of the split (practically never); the generator prefers subsets that are not.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from tvr_bench.bench.atomic import atomic_write_text
from tvr_bench.bench.errors import ConfigError, DataError
from tvr_bench.bench.api.metadata import DatasetInfo
from tvr_bench.bench.registry import register_dataset
from tvr_bench.bench.data.cache_folder import materialise
from tvr_bench.bench.data.video import write_video
from tvr_bench.bench.api.dataset import CaptionItem, DatasetPlugin, Split, VideoItem
from tvr_bench.datasets._synthetic_world import (  # the world the videos show, and how captions say it
    _POOL,
    BACKGROUNDS,
    COLOURS,
    MOTIONS,
    SHAPES,
    Event,
    _CONNECTORS,
    _EVENT_TEMPLATES,
    _MOTION_WORDS,
    _caption_text,
    _event_dict,
    render_event_frames,
)

__all__ = [
    "GENERATOR_VERSION",
    "FORMAT_VERSION",
    "SPLITS",
    "SHAPES",
    "COLOURS",
    "MOTIONS",
    "BACKGROUNDS",
    "generate_synthetic",
    "ensure_synthetic",
    "load_synthetic_annotations",
    "synthetic_params",
    "params_fingerprint",
    "n_described",
    "render_event_frames",
]

FORMAT_VERSION = 1
# Bump when the drawing, the sampling or the caption text changes: it is part of the fingerprint,
# so cached benchmarks made by an older generator are not reused. 2: single-threaded, deterministic encoding.
GENERATOR_VERSION = 2
ANNOTATION_FILE = "annotations.json"
SPLITS = ("train", "val", "test")
_SPLIT_CODES = {"train": 1, "val": 2, "test": 3}
# Purposes of the per-video random streams.
_EVENTS, _CAPTIONS, _RENDER = 1, 2, 3
_HARD_NEGATIVES = 4  # per split

_DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "events_per_video": 4,
    "caption_coverage": 0.5,
    "captions_per_video_train": 4,
    "captions_per_video_eval": 1,
    "hard_negative_rate": 0.5,
    "frame_size": 64,
    "seconds_per_event": 2,
    "fps": 4,
}
_REQUIRED = ("n_train", "n_val", "n_test")
_INT_PARAMS = (
    "seed", "n_train", "n_val", "n_test", "events_per_video", "captions_per_video_train",
    "captions_per_video_eval", "frame_size", "seconds_per_event", "fps",
)
_FLOAT_PARAMS = ("caption_coverage", "hard_negative_rate")

# --------------------------------------------------------------------------------------------
# Parameters
# --------------------------------------------------------------------------------------------


def synthetic_params(**params: Any) -> dict[str, Any]:
    """Validate generator arguments, fill defaults, and return them in canonical form (sorted keys,
    ints as ``int``, rates as ``float``). Raises :class:`ConfigError` on unknown, missing or bad values.
    """
    unknown = sorted(set(params) - set(_DEFAULTS) - set(_REQUIRED))
    if unknown:
        raise ConfigError(f"unknown synthetic dataset parameter(s): {', '.join(unknown)}")
    missing = [k for k in _REQUIRED if k not in params]
    if missing:
        raise ConfigError(f"missing synthetic dataset parameter(s): {', '.join(missing)}")
    merged = {**_DEFAULTS, **params}
    out: dict[str, Any] = {}
    for key in _INT_PARAMS:
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                raise ConfigError(f"synthetic parameter {key} must be an integer, got {value!r}")
        out[key] = int(value)
    for key in _FLOAT_PARAMS:
        value = merged[key]
        if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
            raise ConfigError(f"synthetic parameter {key} must be a number, got {value!r}")
        out[key] = float(value)

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(f"synthetic parameter {message}")

    need(out["seed"] >= 0, f"seed must be >= 0, got {out['seed']}")
    for key in ("n_train", "n_val", "n_test"):
        need(out[key] >= 0, f"{key} must be >= 0, got {out[key]}")
    need(1 <= out["events_per_video"] <= len(_POOL),
         f"events_per_video must be in 1..{len(_POOL)}, got {out['events_per_video']}")
    need(0.0 < out["caption_coverage"] <= 1.0,
         f"caption_coverage must be in (0, 1], got {out['caption_coverage']}")
    for key in ("captions_per_video_train", "captions_per_video_eval"):
        need(out[key] >= 1, f"{key} must be >= 1, got {out[key]}")
    need(0.0 <= out["hard_negative_rate"] <= 1.0,
         f"hard_negative_rate must be in [0, 1], got {out['hard_negative_rate']}")
    need(out["frame_size"] >= 16 and out["frame_size"] % 2 == 0,
         f"frame_size must be an even number >= 16, got {out['frame_size']}")
    need(out["seconds_per_event"] >= 1, f"seconds_per_event must be >= 1, got {out['seconds_per_event']}")
    need(out["fps"] >= 1, f"fps must be >= 1, got {out['fps']}")
    return dict(sorted(out.items()))


def params_fingerprint(params: dict[str, Any], generator_version: int = GENERATOR_VERSION) -> str:
    """sha256 hex digest of the canonical JSON of the (canonical) params and the generator version."""
    payload = {"generator_version": generator_version, "params": params}
    canonical = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def n_described(events_per_video: int, caption_coverage: float) -> int:
    """How many events a caption describes: ``max(1, round(coverage * events))`` (halves round up)."""
    return min(events_per_video, max(1, math.floor(caption_coverage * events_per_video + 0.5)))


# --------------------------------------------------------------------------------------------
# Sampling
# --------------------------------------------------------------------------------------------


def _rng(*key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(list(key))))


def _candidate_subsets(n_events: int, k: int, rng: np.random.Generator, limit: int = 2000) -> list[tuple[int, ...]]:
    if math.comb(n_events, k) <= limit:
        subsets = list(itertools.combinations(range(n_events), k))
        return [subsets[i] for i in rng.permutation(len(subsets))]
    seen: dict[tuple[int, ...], None] = {}
    for _ in range(limit):
        seen.setdefault(tuple(sorted(int(x) for x in rng.choice(n_events, size=k, replace=False))), None)
    return list(seen)


def _build_split(split: str, n_videos: int, p: dict[str, Any]) -> tuple[list[dict], list[dict], list[list[Event]]]:
    seed, code = p["seed"], _SPLIT_CODES[split]
    n_events = p["events_per_video"]
    fps, spe = p["fps"], p["seconds_per_event"]
    ids = [f"{split}-{i:05d}" for i in range(n_videos)]

    # 1. Each video's own events: distinct draws from the pool.
    events: list[list[Event]] = []
    for i in range(n_videos):
        picks = _rng(seed, code, i, _EVENTS).choice(len(_POOL), size=n_events, replace=False)
        events.append([_POOL[int(j)] for j in picks])

    # 2. Hard negatives: some videos copy 1-2 events from an earlier video of the split (whose
    #    events are final by then). At least one own event always remains.
    copied_from: list[dict | None] = [None] * n_videos
    hn = _rng(seed, code, 0, _HARD_NEGATIVES)
    max_copy = min(2, n_events - 1)
    for i in range(1, n_videos):
        if max_copy < 1 or hn.random() >= p["hard_negative_rate"]:
            continue
        src = int(hn.integers(0, i))
        m = int(hn.integers(1, max_copy + 1))
        own = set(events[i])
        candidates = [j for j, e in enumerate(events[src]) if e not in own]
        if not candidates:
            continue
        m = min(m, len(candidates))
        src_idx = sorted(int(j) for j in hn.choice(candidates, size=m, replace=False))
        dst_idx = sorted(int(j) for j in hn.choice(n_events, size=m, replace=False))
        for d, s in zip(dst_idx, src_idx):
            events[i][d] = events[src][s]
        copied_from[i] = {"video_id": ids[src], "event_pairs": [[d, s] for d, s in zip(dst_idx, src_idx)]}

    # Which videos hold each event (copies and chance coincidences alike).
    holders: dict[Event, set[int]] = {}
    for i, evs in enumerate(events):
        for e in evs:
            holders.setdefault(e, set()).add(i)

    # 3. Captions: distinct event subsets, preferring subsets not wholly contained in another video.
    k = n_described(n_events, p["caption_coverage"])
    n_caps = p["captions_per_video_train"] if split == "train" else p["captions_per_video_eval"]
    n_styles = len(_EVENT_TEMPLATES) * len(_MOTION_WORDS) * len(_CONNECTORS)
    videos, captions = [], []
    for i in range(n_videos):
        rng = _rng(seed, code, i, _CAPTIONS)
        subsets = _candidate_subsets(n_events, k, rng)

        def ambiguous(sub: tuple[int, ...]) -> bool:
            common = set.intersection(*(holders[events[i][j]] for j in sub)) - {i}
            return bool(common)

        clear = [s for s in subsets if not ambiguous(s)]
        pool, is_ambiguous = (clear, False) if clear else (subsets, True)
        texts: set[str] = set()
        for c in range(n_caps):
            sub = pool[c % len(pool)]
            described = [events[i][j] for j in sub]
            text = ""
            for _ in range(4 * n_styles):
                style = int(rng.integers(n_styles))
                template, rest = divmod(style, len(_MOTION_WORDS) * len(_CONNECTORS))
                words, connector = divmod(rest, len(_CONNECTORS))
                text = _caption_text(described, template, words, connector)
                if text not in texts:
                    break
            texts.add(text)
            captions.append({
                "id": f"{ids[i]}-c{c}",
                "video_id": ids[i],
                "text": text,
                "event_indices": list(sub),
                "ambiguous": is_ambiguous,
            })
        shares = sorted(set().union(*(holders[e] for e in events[i])) - {i})
        videos.append({
            "id": ids[i],
            "file": f"videos/{split}/{ids[i]}.mp4",
            "n_seconds": n_events * spe,
            "n_frames": n_events * spe * fps,
            "fps": fps,
            "events": [_event_dict(e) for e in events[i]],
            "copied_from": copied_from[i],
            "shares_events_with": [ids[j] for j in shares],
        })
    return videos, captions, events


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def generate_synthetic(
    root: Path,
    *,
    seed: int = 0,
    n_train: int,
    n_val: int,
    n_test: int,
    events_per_video: int = 4,
    caption_coverage: float = 0.5,
    captions_per_video_train: int = 4,
    captions_per_video_eval: int = 1,
    hard_negative_rate: float = 0.5,
    frame_size: int = 64,
    seconds_per_event: int = 2,
    fps: int = 4,
) -> Path:
    """Generate the synthetic benchmark under ``root`` and return the path of its annotation file.

    Any existing ``annotations.json`` in ``root`` is removed first and the new one is written last
    (atomically), so an interrupted run leaves no annotation file behind. See the module docstring
    for the layout and the annotation format.
    """
    p = synthetic_params(
        seed=seed, n_train=n_train, n_val=n_val, n_test=n_test, events_per_video=events_per_video,
        caption_coverage=caption_coverage, captions_per_video_train=captions_per_video_train,
        captions_per_video_eval=captions_per_video_eval, hard_negative_rate=hard_negative_rate,
        frame_size=frame_size, seconds_per_event=seconds_per_event, fps=fps,
    )
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    ann_path = root / ANNOTATION_FILE
    ann_path.unlink(missing_ok=True)

    frames_per_event = p["seconds_per_event"] * p["fps"]
    splits: dict[str, dict[str, list]] = {}
    for split in SPLITS:
        videos, captions, events = _build_split(split, p[f"n_{split}"], p)
        (root / "videos" / split).mkdir(parents=True, exist_ok=True)
        for i, (video, evs) in enumerate(zip(videos, events)):
            rng = _rng(p["seed"], _SPLIT_CODES[split], i, _RENDER)
            frames = np.concatenate(
                [render_event_frames(e, frames_per_event, p["frame_size"], rng) for e in evs]
            )
            write_video(root / video["file"], frames, p["fps"])
        splits[split] = {"videos": videos, "captions": captions}

    annotations = {
        "name": "synthetic",
        "format_version": FORMAT_VERSION,
        "generator_version": GENERATOR_VERSION,
        "params": p,
        "fingerprint": params_fingerprint(p),
        "vocabulary": {
            "shapes": list(SHAPES),
            "colours": list(COLOURS),
            "motions": list(MOTIONS),
            "backgrounds": list(BACKGROUNDS),
        },
        "splits": splits,
    }
    atomic_write_text(ann_path, json.dumps(annotations, indent=1, ensure_ascii=False) + "\n",
                      point="synthetic_annotations")
    return ann_path


def load_synthetic_annotations(path: str | os.PathLike) -> dict:
    """Read and check a synthetic annotation file (or the folder holding ``annotations.json``).

    Raises :class:`DataError` naming the file if it is missing, not JSON, of another format version,
    inconsistent with its fingerprint, or malformed (missing fields, captions of unknown videos,
    event indices out of range). Video ``file`` entries are relative to the file's folder.
    """
    path = Path(path)
    if path.is_dir():
        path = path / ANNOTATION_FILE
    if not path.is_file():
        raise DataError(f"synthetic annotation file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read synthetic annotation file {path}: {exc}") from exc

    def bad(message: str) -> DataError:
        return DataError(f"malformed synthetic annotation file {path}: {message}")

    if not isinstance(data, dict) or data.get("name") != "synthetic":
        raise bad('expected a JSON object with "name": "synthetic"')
    if data.get("format_version") != FORMAT_VERSION:
        raise bad(f"format_version {data.get('format_version')!r}, expected {FORMAT_VERSION}")
    params = data.get("params")
    if not isinstance(params, dict):
        raise bad('missing "params"')
    expected = params_fingerprint(params, data.get("generator_version", GENERATOR_VERSION))
    if data.get("fingerprint") != expected:
        raise bad("fingerprint does not match params")
    splits = data.get("splits")
    if not isinstance(splits, dict) or any(s not in splits for s in SPLITS):
        raise bad(f'"splits" must hold {", ".join(SPLITS)}')
    all_ids: set[str] = set()
    for split in SPLITS:
        section = splits[split]
        if not isinstance(section, dict):
            raise bad(f"split {split} is not an object")
        videos, captions = section.get("videos"), section.get("captions")
        if not isinstance(videos, list) or not isinstance(captions, list):
            raise bad(f'split {split} needs "videos" and "captions" lists')
        n_events: dict[str, int] = {}
        for v in videos:
            if not isinstance(v, dict) or not all(k in v for k in ("id", "file", "n_seconds", "events")):
                raise bad(f"split {split}: video entry without id/file/n_seconds/events: {v!r:.200}")
            if v["id"] in all_ids:
                raise bad(f"duplicate video id {v['id']!r}")
            all_ids.add(v["id"])
            n_events[v["id"]] = len(v["events"])
        for c in captions:
            if not isinstance(c, dict) or not all(k in c for k in ("id", "video_id", "text", "event_indices")):
                raise bad(f"split {split}: caption entry without id/video_id/text/event_indices: {c!r:.200}")
            if c["video_id"] not in n_events:
                raise bad(f"split {split}: caption {c['id']!r} names unknown video {c['video_id']!r}")
            if not c["text"] or any(not 0 <= j < n_events[c["video_id"]] for j in c["event_indices"]):
                raise bad(f"split {split}: caption {c['id']!r} is empty or has event indices out of range")
    return data


# --------------------------------------------------------------------------------------------
# Cache
# --------------------------------------------------------------------------------------------


def _is_complete(ann_path: Path, fingerprint: str) -> bool:
    try:
        data = json.loads(ann_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(data, dict) and data.get("fingerprint") == fingerprint


def ensure_synthetic(cache_dir: str | os.PathLike, **params: Any) -> Path:
    """Return the annotation file of the synthetic benchmark for ``params``, generating it on first use.

    The benchmark lives in ``cache_dir/synthetic-<fingerprint[:12]>``; it is reused when its
    ``annotations.json`` exists and carries the same fingerprint. Generation happens in a temporary
    folder renamed into place, under a lock file, so concurrent processes neither duplicate the work
    nor see a half-written benchmark, and a killed generation's temp folder is removed
    (``bench/data/cache_folder.py``).
    """
    p = synthetic_params(**params)
    fp = params_fingerprint(p)
    target = materialise(Path(cache_dir) / f"synthetic-{fp[:12]}",
                         lambda folder: _is_complete(folder / ANNOTATION_FILE, fp),
                         lambda tmp: generate_synthetic(tmp, **p))
    return target / ANNOTATION_FILE


# --------------------------------------------------------------------------------------------------
# The dataset plugin: `bench run --dataset synthetic`
# --------------------------------------------------------------------------------------------------



@register_dataset
class SyntheticBenchmark(DatasetPlugin):
    """Generated once into the cache as real MP4 files + annotations, then read like any real dataset."""

    info = DatasetInfo(
        name="synthetic",
        description="Embedded benchmark: generated MP4 videos of several events (shape, colour, motion, "
        "background); each caption describes only some events (partial relevance); hard negatives share events.",
        protocol="1:1",
        reference="tvr_bench/datasets/synthetic.py",
        defaults={
            "data": {
                "max_frames": 8,
                "max_words": 32,
                "text_overflow": "error",
                # generator defaults, with the embedded benchmark's sizes
                "synthetic": {**_DEFAULTS, "n_train": 600, "n_val": 100, "n_test": 200, "captions_per_video_train": 6},
            },
            # the CLIP of the embedded world (`bench pretrain`, shipped in bench/weights/), frozen: every method
            # starts from the same pretrained towers and only its own modules train, on cached tower outputs, as
            # the methods' heads do on real CLIP (the official recipes train CLIP itself at lr 1e-7..1e-6)
            "backbone": {"pretrained": "embedded", "frozen": True},
            # the official heads' lr; 2 epochs x 112 steps keep all nine methods x 3 seeds within 15 minutes on
            # 2 CPU cores (tightTransf scores all 32 x 32 pairs of a batch through its cross encoder)
            "train": {"epochs": 2, "batch_size": 32, "lr": 1e-4, "weight_decay": 0.05},
            "eval": {"batch_size": 100, "chunk_size": 100},
        },
    )

    def __init__(self, cfg, *, cache_dir):
        super().__init__(cfg, cache_dir=cache_dir)
        self.params = dict(cfg["data"]["synthetic"])
        self._ann_path: Path | None = None
        self._ann: dict | None = None

    def _annotations(self) -> dict:
        if self._ann is None:
            self._ann_path = ensure_synthetic(self.cache_dir, **self.params)
            self._ann = load_synthetic_annotations(self._ann_path)
        return self._ann

    def load_split(self, split: str) -> Split:
        ann = self._annotations()
        if split not in ann["splits"]:
            raise DataError(f"synthetic: no split {split!r} in {self._ann_path}")
        root = self._ann_path.parent
        s = ann["splits"][split]
        videos = [VideoItem(v["id"], root / v["file"]) for v in s["videos"]]
        captions = [CaptionItem(c["id"], c["video_id"], c["text"]) for c in s["captions"]]
        return Split("synthetic", split, videos, captions,
                     protocol={"caption_mode": "1:1" if split != "train" else "all captions"})

    def describe(self) -> dict:
        ann = self._annotations()
        return {"dataset": "synthetic", "protocol": self.info.protocol, "generator_fingerprint": ann["fingerprint"],
                "params": ann["params"], "annotation_file": str(self._ann_path)}
