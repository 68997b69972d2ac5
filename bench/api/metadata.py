"""Typed metadata every plugin declares on its class (mteb-style): what the harness and the reports read."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class MethodInfo:
    """Metadata every method declares (mteb-style, on the class)."""

    name: str
    paper: str
    official_repo: str
    query_dependent: bool  # True when scoring must run per (text, video) pair at query time
    description: str = ""
    #: analytic parameter count of the modules added on top of CLIP at ViT-B/32 (D=512, L=32, F=12), as
    #: methods.md gives it; tests compare it with the built module
    extra_params: int | None = None
    #: the official recipe per dataset name (data/train/method keys from the official scripts). Applied only
    #: with ``--preset official``: the default comparison uses the shared harness recipe for every method.
    official: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: what the video stage starts from: "frame_features" (per-frame CLS features of the image tower, so the
    #: harness may share or cache them across methods) or "pixels" (the method runs its own image-tower pass,
    #: e.g. TS2-Net's token shift and patch-token selection); the harness reads this, never the class internals
    video_input: str = "frame_features"

    def published(self, dataset: str | None = None, *, include_unverified: bool = False) -> list:
        """Published results of this method with provenance tags (``bench/report/published.py``); [R] ones only on request."""
        from tvr_bench.bench.report.published import published_for

        return published_for(self.name, dataset, include_unverified=include_unverified)


@dataclass(frozen=True)
class PaperShape:
    """Frames, words and the test protocol's query x gallery counts of one dataset (docs/protocols.md)."""

    name: str
    max_frames: int
    max_words: int
    n_queries: int  # T2V queries of the test protocol
    n_videos: int  # test gallery
    protocol: str
    source: str
    train_batch: int  # the usual paper batch size (global) for the training-step measurement


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    protocol: str  # e.g. "1:1", "multi-caption", "paragraph"
    defaults: dict[str, Any] = field(default_factory=dict)  # data.* defaults (max_frames, max_words, ...)
    reference: str = ""
    #: the paper-scale shapes of the test protocol (``bench efficiency``); None for datasets with no paper setting
    paper_shape: PaperShape | None = None
