"""Torch datasets over a ``Split``: the single frame and text path for every dataset.

Frames: PyAV decode -> 1-fps sampling -> uniform slice to F -> the backbone's own preprocessing (resize,
centre crop, CLIP normalisation) -> zero padding with ``video_mask`` = 0 (``bench/data/video.py``).
Text: CLIP BPE ([SOT] tokens [EOT]), right-padded with 0 to ``max_words``; a caption that does not fit is an
error naming it, or — where the dataset's protocol says so (CLIP4Clip) — truncated to max_words-1 tokens + [EOT].

Frame cache: when ``bench data prepare`` has filled a cache for the same decoding parameters
(``bench/data/frame_cache.py``), ``FrameStore`` reads the stored uint8 frames and applies only the normalisation; any
video without an entry is decoded. Both paths give bit-identical tensors.

Missing or unreadable videos never shrink a split silently: they stop the run with the list of them, unless
``data.allow_missing=true``, and then the reduction is written into ``split.protocol["reduced"]`` (and from there
into the run record).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable

import numpy as np
import torch
from torch.utils.data import Dataset

from tvr_bench.bench.api.dataset import Split

from tvr_bench.bench.errors import CaptionTooLongError, DataError
from tvr_bench.bench.data.frame_cache import FrameCache, Preprocessor
from tvr_bench.bench.data.video import frames_to_tensor, load_frames, probe_video

#: how many ids / files an error message lists before "... and N more"
LIST_LIMIT = 20


@dataclass
class TokenizedCaptions:
    tokens: torch.Tensor  # [N, L] long
    mask: torch.Tensor  # [N, L] long
    n_truncated: int


def tokenize_captions(split: Split, backbone, max_words: int, overflow: str) -> TokenizedCaptions:
    tokens = torch.zeros(len(split.captions), max_words, dtype=torch.long)
    mask = torch.zeros(len(split.captions), max_words, dtype=torch.long)
    n_truncated = 0
    eot = backbone.tokenizer.eot_token_id
    for i, cap in enumerate(split.captions):
        if not isinstance(cap.text, str) or not cap.text.strip():
            raise DataError(f"{split.dataset}/{split.name}: caption {cap.id!r} (video {cap.video_id!r}) is empty")
        ids = backbone.token_ids(cap.text)
        if len(ids) > max_words:
            if overflow == "error":
                raise CaptionTooLongError(
                    f"{split.dataset}/{split.name}: caption {cap.id!r} (video {cap.video_id!r}) has {len(ids)} "
                    f"tokens with [SOT]/[EOT], more than the text context max_words={max_words}: {cap.text!r}. "
                    "Raise data.max_words or set data.text_overflow=truncate."
                )
            ids = ids[: max_words - 1] + [eot]
            n_truncated += 1
        tokens[i, : len(ids)] = torch.tensor(ids)
        mask[i, : len(ids)] = 1
    return TokenizedCaptions(tokens, mask, n_truncated)


def format_list(items: Iterable[str], limit: int = LIST_LIMIT) -> str:
    items = list(items)
    shown = ", ".join(items[:limit])
    return shown + (f", ... and {len(items) - limit} more" if len(items) > limit else "")


def reduce_split(split: Split, drop: dict[str, str], *, expected: dict[str, Any] | None = None) -> Split:
    """``split`` without the videos in ``drop`` (id -> reason: "missing" / "unreadable") and their captions.

    The reduction is recorded in ``protocol["reduced"]`` (accumulated over calls): the split, how many videos
    are gone and why, the first ids, and the counts expected and used.
    """
    if not drop:
        return split
    prev = split.protocol.get("reduced")
    if expected is None:
        expected = prev["expected"] if prev else {"videos": len(split.videos), "captions": len(split.captions)}
    videos = [v for v in split.videos if v.id not in drop]
    captions = [c for c in split.captions if c.video_id not in drop]
    reasons = dict(prev["reasons"]) if prev else {}
    for reason in drop.values():
        reasons[reason] = reasons.get(reason, 0) + 1
    missing_ids = (prev["missing_ids"] if prev else []) + sorted(drop)
    reduced = {
        "split": split.name,
        "missing_videos": (prev["missing_videos"] if prev else 0) + len(drop),
        "missing_ids": missing_ids[:10],
        "reasons": reasons,
        "expected": expected,
        "used": {"videos": len(videos), "captions": len(captions)},
    }
    return replace(split, videos=videos, captions=captions, protocol={**split.protocol, "reduced": reduced})


def preflight_videos(split: Split, *, cache: FrameCache | None = None, allow_missing: bool = False,
                     log: Callable[[str], None] | None = None, seen: dict | None = None) -> Split:
    """Open every video of a split before any work starts (videos with a frame-cache entry were decoded by
    ``bench data prepare`` and are not opened again; ``seen`` carries results across splits that share videos).
    Every unreadable file is listed in one error, unless ``allow_missing``: then they are dropped and the reduction
    recorded. Returns the (possibly reduced) split."""
    seen = {} if seen is None else seen
    bad: dict[str, str] = {}
    for v in split.videos:
        if v.path not in seen:
            seen[v.path] = None
            if cache is None or not cache.has(v.id, v.path):
                try:
                    probe_video(v.path)
                except DataError as exc:
                    seen[v.path] = str(exc)
        if seen[v.path] is not None:
            bad[v.id] = seen[v.path]
    if not bad:
        return split
    if not allow_missing:
        detail = "; ".join(list(bad.values())[:5])
        raise DataError(f"{split.dataset}/{split.name}: {len(bad)} unreadable video(s) of {len(split.videos)}: "
                        f"{format_list(bad)}. {detail}{' ...' if len(bad) > 5 else ''} "
                        "(set data.allow_missing=true to run on the rest; the run record then says so)")
    if log:
        log(f"  warning: {split.dataset}/{split.name}: dropping {len(bad)} unreadable video(s) "
            f"(data.allow_missing): {format_list(bad, 5)}")
    return reduce_split(split, {k: "unreadable" for k in bad})


class DecodedClips:
    """uint8 crops decoded in this process, shared by the runs of one ``bench run`` invocation on one dataset.

    ``--method all`` trains every method on the same videos; without this each run decodes them again (a sixth
    of meanp's training time on the embedded default). Keyed by everything the pixels depend on: the file (path,
    size, mtime), max_frames, sample_fps and the geometric preprocess. ``for_dataset`` drops the clips when the
    invocation moves on to another dataset, so at most one dataset's clips are held (as one run's memory cache
    would hold them anyway).
    """

    def __init__(self) -> None:
        self.dataset: str | None = None
        self._clips: dict[tuple, np.ndarray] = {}
        self.hits = 0

    def for_dataset(self, name: str) -> "DecodedClips":
        if name != self.dataset:
            self._clips.clear()
            self.dataset = name
        return self

    @staticmethod
    def key(path, max_frames: int, sample_fps: float, prep: Preprocessor) -> tuple:
        st = os.stat(path)
        return (os.fspath(path), st.st_size, st.st_mtime_ns, max_frames, float(sample_fps), prep.describe())

    def get(self, key: tuple) -> np.ndarray | None:
        clip = self._clips.get(key)
        if clip is not None:
            self.hits += 1
        return clip

    def put(self, key: tuple, clip: np.ndarray) -> None:
        self._clips[key] = clip  # never changed in place: to_clip copies it into a new float tensor

    def __len__(self) -> int:
        return len(self._clips)


class FrameStore:
    """Preprocessed clips by video id: from the frame cache when it has the video, decoded otherwise; optionally
    kept in memory for the run (as uint8 crops when the preprocess can be split: a quarter of the float size),
    and shared with the later runs of the same invocation through ``shared`` (``DecodedClips``)."""

    def __init__(self, split: Split, preprocess, max_frames: int, sample_fps: float, memory_cache: bool,
                 cache: FrameCache | None = None, shared: DecodedClips | None = None):
        self.paths = {v.id: v.path for v in split.videos}
        self.preprocess = preprocess
        self.prep = cache.preprocessor if cache is not None else Preprocessor(preprocess)
        self.max_frames = max_frames
        self.sample_fps = sample_fps
        self.memory_cache = memory_cache
        self.cache = cache
        self._memory: dict[str, Any] = {}
        self.shared = shared if memory_cache else None
        self.n_cached = self.n_decoded = 0

    def frames(self, video_id: str) -> np.ndarray:
        """uint8 ``[T, S, S, 3]`` after resize and crop (needs a splittable preprocess)."""
        path = self.paths[video_id]
        if self.cache is not None:
            stored = self.cache.load(video_id, path)
            if stored is not None:
                self.n_cached += 1
                return stored
        key = None
        if self.shared is not None:
            key = DecodedClips.key(path, self.max_frames, self.sample_fps, self.prep)
            clip = self.shared.get(key)
            if clip is not None:
                return clip
        self.n_decoded += 1
        clip = self.prep.crop(load_frames(path, self.max_frames, self.sample_fps))
        if key is not None:
            self.shared.put(key, clip)
        return clip

    def get(self, video_id: str) -> tuple[torch.Tensor, torch.Tensor]:
        item = self._memory.get(video_id)
        if item is None:
            if self.prep.splittable:
                item = self.frames(video_id)
            else:
                self.n_decoded += 1
                item = frames_to_tensor(load_frames(self.paths[video_id], self.max_frames, self.sample_fps),
                                        self.preprocess, self.max_frames)
            if self.memory_cache:
                self._memory[video_id] = item
        if isinstance(item, np.ndarray):
            return self.prep.to_clip(item, self.max_frames)
        return item


class PairDataset(Dataset):
    """Training samples: every caption with its video (CLIP4Clip unfolds all captions as samples)."""

    def __init__(self, split: Split, captions: TokenizedCaptions, store: FrameStore):
        self.split, self.captions, self.store = split, captions, store

    def __len__(self) -> int:
        return len(self.split.captions)

    def __getitem__(self, i: int):
        frames, vmask = self.store.get(self.split.captions[i].video_id)
        return self.captions.tokens[i], self.captions.mask[i], frames, vmask


class VideoDataset(Dataset):
    def __init__(self, split: Split, store: FrameStore):
        self.split, self.store = split, store

    def __len__(self) -> int:
        return len(self.split.videos)

    def __getitem__(self, i: int):
        return self.store.get(self.split.videos[i].id)
