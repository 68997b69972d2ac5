"""Torch datasets over a ``Split``: the single frame and text path for every dataset.

Frames: PyAV decode -> 1-fps sampling -> uniform slice to F -> the backbone's own preprocessing (resize,
centre crop, CLIP normalisation) -> zero padding with ``video_mask`` = 0 (``bench/video.py``).
Text: CLIP BPE ([SOT] tokens [EOT]), right-padded with 0 to ``max_words``; a caption that does not fit is an
error naming it, or — where the dataset's protocol says so (CLIP4Clip) — truncated to max_words-1 tokens + [EOT].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

from tvr_bench.datasets._base import Split

from .errors import CaptionTooLongError, DataError
from .video import frames_to_tensor, load_frames, probe_video


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


def preflight_videos(split: Split) -> None:
    """Open every video of a split before any work starts; the first bad file stops the run, named."""
    for v in split.videos:
        probe_video(v.path)


class FrameStore:
    """Decoded, preprocessed clips by video id, optionally kept in memory for the run."""

    def __init__(self, split: Split, preprocess, max_frames: int, sample_fps: float, memory_cache: bool):
        self.paths = {v.id: v.path for v in split.videos}
        self.preprocess = preprocess
        self.max_frames = max_frames
        self.sample_fps = sample_fps
        self.memory_cache = memory_cache
        self._cache: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}

    def get(self, video_id: str) -> tuple[torch.Tensor, torch.Tensor]:
        if video_id in self._cache:
            return self._cache[video_id]
        frames = load_frames(self.paths[video_id], self.max_frames, self.sample_fps)
        clip = frames_to_tensor(frames, self.preprocess, self.max_frames)
        if self.memory_cache:
            self._cache[video_id] = clip
        return clip


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
