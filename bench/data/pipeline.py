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
from collections import OrderedDict
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


#: default of ``data.memory_cache_budget``: what one process may hold of decoded clips
DEFAULT_MEMORY_CACHE_BUDGET = 4 << 30


def _nbytes(item) -> int:
    if isinstance(item, np.ndarray):
        return item.nbytes
    return sum(t.numel() * t.element_size() for t in item)  # (frames, mask) tensors of a non-splittable preprocess


class ClipMemory:
    """Decoded clips held in RAM, at most ``budget`` bytes: the least recently used clip goes first.

    Bounded so that memory does not grow with the dataset (MSR-VTT's uint8 crops at F = 12 are about 18 GB; VATEX
    and DiDeMo at F = 64 several times that): a gallery that fits is decoded once, a larger one keeps the budget's
    worth and decodes the rest again. The budget is per process; each DataLoader worker holds its own.
    """

    def __init__(self, budget: int = DEFAULT_MEMORY_CACHE_BUDGET) -> None:
        self.budget = int(budget)
        self._items: OrderedDict[tuple, Any] = OrderedDict()
        self.bytes = 0
        self.hits = self.evictions = 0

    def get(self, key: tuple):
        item = self._items.get(key)
        if item is not None:
            self._items.move_to_end(key)
            self.hits += 1
        return item

    def put(self, key: tuple, item) -> None:
        """Keep ``item`` (never changed in place: ``to_clip`` copies it into a new float tensor)."""
        old = self._items.pop(key, None)
        if old is not None:
            self.bytes -= _nbytes(old)
        size = _nbytes(item)
        if size > self.budget:
            return
        self._items[key] = item
        self.bytes += size
        self._shrink()

    def resize(self, budget: int) -> None:
        self.budget = int(budget)
        self._shrink()

    def _shrink(self) -> None:
        while self.bytes > self.budget:
            _, gone = self._items.popitem(last=False)
            self.bytes -= _nbytes(gone)
            self.evictions += 1

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0

    def describe(self) -> str:
        return (f"{len(self)} clips, {self.bytes / 2**20:.0f} MiB of {self.budget / 2**20:.0f} MiB, "
                f"{self.hits} hits, {self.evictions} evicted")

    def __len__(self) -> int:
        return len(self._items)


class DecodedClips(ClipMemory):
    """The clip memory shared by the runs of one ``bench run`` invocation on one dataset.

    ``--method all`` trains every method on the same videos; without this each run decodes them again (a sixth
    of meanp's training time on the embedded default). Keyed by everything the pixels depend on: the file (path,
    size, mtime), max_frames, sample_fps and the preprocess. ``for_dataset`` drops the clips when the invocation
    moves on to another dataset, so at most one dataset's clips are held, within the budget.
    """

    def __init__(self, budget: int = DEFAULT_MEMORY_CACHE_BUDGET) -> None:
        super().__init__(budget)
        self.dataset: str | None = None

    def for_dataset(self, name: str) -> "DecodedClips":
        if name != self.dataset:
            self.clear()
            self.dataset = name
        return self

    @staticmethod
    def key(path, max_frames: int, sample_fps: float, prep: Preprocessor) -> tuple:
        st = os.stat(path)
        return (os.fspath(path), st.st_size, st.st_mtime_ns, max_frames, float(sample_fps), prep.describe())


class FrameStore:
    """Preprocessed clips by video id: from the frame cache when it has the video (read memory-mapped, so the
    OS page cache, not this process, holds them), decoded otherwise. Decoded clips are kept in a bounded
    ``ClipMemory`` when ``memory_cache`` is on (as uint8 crops when the preprocess can be split: a quarter of the
    float size), shared with the later runs of the same invocation when ``shared`` is given."""

    def __init__(self, split: Split, preprocess, max_frames: int, sample_fps: float, memory_cache: bool,
                 cache: FrameCache | None = None, shared: DecodedClips | None = None,
                 memory_budget: int = DEFAULT_MEMORY_CACHE_BUDGET):
        self.paths = {v.id: v.path for v in split.videos}
        self.preprocess = preprocess
        self.prep = cache.preprocessor if cache is not None else Preprocessor(preprocess)
        self.max_frames = max_frames
        self.sample_fps = sample_fps
        self.memory_cache = memory_cache
        self.cache = cache
        self.memory: ClipMemory | None = None
        if memory_cache:
            self.memory = shared if shared is not None else ClipMemory(memory_budget)
            self.memory.resize(memory_budget)
        self.n_cached = self.n_decoded = 0
        self._keys: dict[str, tuple] = {}  # clip-memory key per video: one stat per video and run, not per read

    def _decoded(self, video_id: str):
        """A decoded clip, from the clip memory when it holds it: a uint8 crop, or (frames, mask) tensors."""
        path = self.paths[video_id]
        key = None
        if self.memory is not None:
            key = self._keys.get(video_id)
            if key is None:
                key = self._keys[video_id] = DecodedClips.key(path, self.max_frames, self.sample_fps, self.prep)
            item = self.memory.get(key)
            if item is not None:
                return item
        self.n_decoded += 1
        frames = load_frames(path, self.max_frames, self.sample_fps)
        item = (self.prep.crop(frames) if self.prep.splittable
                else frames_to_tensor(frames, self.preprocess, self.max_frames))
        if key is not None:
            self.memory.put(key, item)
        return item

    def frames(self, video_id: str) -> np.ndarray:
        """uint8 ``[T, S, S, 3]`` after resize and crop (needs a splittable preprocess)."""
        if self.cache is not None:
            stored = self.cache.load(video_id, self.paths[video_id])
            if stored is not None:
                self.n_cached += 1
                return stored
        return self._decoded(video_id)

    def get(self, video_id: str) -> tuple[torch.Tensor, torch.Tensor]:
        item = self.frames(video_id) if self.prep.splittable else self._decoded(video_id)
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

    @staticmethod
    def encode_batch(method, batch, device):
        """(text state, video state) of one collated batch, through the whole backbone."""
        tokens, tmask, frames, vmask = (x.to(device) for x in batch)
        return method.encode_text(tokens, tmask), method.encode_video(frames, vmask)


class VideoDataset(Dataset):
    def __init__(self, split: Split, store: FrameStore):
        self.split, self.store = split, store

    def __len__(self) -> int:
        return len(self.split.videos)

    def __getitem__(self, i: int):
        return self.store.get(self.split.videos[i].id)
