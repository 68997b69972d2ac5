"""The dataset plugin contract: a dataset yields splits of (videos, captions) and declares its protocol.

Every dataset, real or embedded, is read through the same path afterwards (``bench/data/pipeline.py``): PyAV decoding,
1-fps sampling, uniform slicing to F frames with masks, CLIP tokenisation.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from tvr_bench.bench.errors import DataError
from tvr_bench.bench.api.metadata import DatasetInfo


@dataclass(frozen=True)
class VideoItem:
    id: str
    path: Path


@dataclass(frozen=True)
class CaptionItem:
    id: str
    video_id: str
    text: str


@dataclass
class Split:
    dataset: str
    name: str
    videos: list[VideoItem]
    captions: list[CaptionItem]
    protocol: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        ids = [v.id for v in self.videos]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
            raise DataError(f"{self.dataset}/{self.name}: duplicate video ids {dup}")
        known = set(ids)
        for c in self.captions:
            if c.video_id not in known:
                raise DataError(f"{self.dataset}/{self.name}: caption {c.id!r} refers to unknown video {c.video_id!r}")
        if not self.videos or not self.captions:
            raise DataError(f"{self.dataset}/{self.name}: split is empty ({len(self.videos)} videos, "
                            f"{len(self.captions)} captions)")

    def text_to_video(self) -> list[int]:
        index = {v.id: i for i, v in enumerate(self.videos)}
        return [index[c.video_id] for c in self.captions]

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for v in self.videos:
            h.update(f"v\t{v.id}\n".encode())
        for c in self.captions:
            h.update(f"c\t{c.id}\t{c.video_id}\t{c.text}\n".encode())
        return h.hexdigest()

    def summary(self) -> dict[str, Any]:
        return {"split": self.name, "n_videos": len(self.videos), "n_captions": len(self.captions),
                "fingerprint": self.fingerprint(), **self.protocol}


class DatasetPlugin:
    info: ClassVar[DatasetInfo]
    #: split used for checkpoint selection, and the one reported
    val_split: ClassVar[str] = "val"
    test_split: ClassVar[str] = "test"
    train_split: ClassVar[str] = "train"

    @classmethod
    def config_defaults(cls) -> dict[str, Any]:
        """Merged over the harness defaults (may add a ``data.<name>`` section and change train.* defaults)."""
        return copy.deepcopy(cls.info.defaults)

    def __init__(self, cfg: dict[str, Any], *, cache_dir: Path):
        self.cfg = cfg
        self.cache_dir = cache_dir

    def load_split(self, split: str) -> Split:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """Protocol description stored in the run record (name, caption mode, source fingerprint)."""
        return {"dataset": self.info.name, "protocol": self.info.protocol}


