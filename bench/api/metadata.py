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

    def published(self, dataset: str | None = None, *, include_unverified: bool = False) -> list:
        """Published results of this method with provenance tags (``bench/report/published.py``); [R] ones only on request."""
        from tvr_bench.bench.report.published import published_for

        return published_for(self.name, dataset, include_unverified=include_unverified)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str
    protocol: str  # e.g. "1:1", "multi-caption", "paragraph"
    defaults: dict[str, Any] = field(default_factory=dict)  # data.* defaults (max_frames, max_words, ...)
    reference: str = ""
