"""The contract between a method and the harness.

A method supplies three stages and nothing else (the harness owns data, optimisation, precision, seeding,
checkpoints, evaluation and cost measurement):

1. ``encode_text(tokens, mask) -> TextState``   query time (counted per query); a method writes
   ``text_from_features(sentence, words, mask)``, the part after the text tower;
2. ``encode_video(frames, mask) -> VideoState``  offline (cached per video; counted per video); a method writes
   ``video_from_frames(frame_features, mask)`` (or, with its own image-tower pass, ``video_features`` and
   ``video_from_features``);
3. ``score(text_state, video_state) -> [N_t, N_v]`` query time (counted per pair).

States are plain ``dict[str, Tensor]`` whose tensors share their first (batch) dimension, so the harness can
slice, concatenate, cache and all-gather them without knowing what they hold. ``score_with_parts`` and
``extra_losses`` let a method add training losses (e.g. GLCCL's CSC) on top of the harness's symmetric
InfoNCE over the returned logits.
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, ClassVar

import torch
from pydantic import Field
from torch import nn

from tvr_bench.bench.api.state import State
from tvr_bench.bench.api.metadata import MethodInfo
from tvr_bench.bench.backbone import Architecture, Backbone
from tvr_bench.bench.config_schema import check_section, method_options_model
from tvr_bench.bench.errors import ConfigError

#: option types for OPTION_TYPES (``Literal[...]`` for choices)
POSITIVE_INT = Annotated[int, Field(ge=1, strict=True)]
DROPOUT = Annotated[float, Field(ge=0, lt=1, allow_inf_nan=False)]


class RetrievalMethod(nn.Module):
    info: ClassVar[MethodInfo]
    #: method.* options and their defaults (the official behaviour); deviations are named options, off by default
    OPTIONS: ClassVar[dict[str, Any]] = {}

    #: pydantic types narrower than the one inferred from a default (choices, bounds); see method_options_model
    OPTION_TYPES: ClassVar[dict[str, Any]] = {}

    @classmethod
    def default_options(cls) -> dict[str, Any]:
        return copy.deepcopy(cls.OPTIONS)

    @classmethod
    def check_options(cls, options: dict[str, Any], arch: Architecture, *, max_frames: int) -> None:
        """Checks that need the backbone or several options at once; a ConfigError names the key. The harness
        calls it at config time, from the model config alone (no weights, no data), and again when the method is
        built. Subclasses extend it (``super().check_options(...)`` first). Every method whose seqTransf is
        initialised from CLIP text blocks 0..n-1 needs n text blocks and text width == embed dim."""
        layers = options.get("temporal_layers")
        if layers:
            need_text_blocks(arch, int(layers), "method.temporal_layers")
            need_positions(arch, max_frames, "seqTransf")

    def __init__(self, backbone: Backbone, options: dict[str, Any], *, max_frames: int, max_words: int):
        super().__init__()
        options = check_section("method", dict(options), method_options_model(type(self)))
        type(self).check_options(options, backbone.architecture, max_frames=max_frames)
        self.backbone = backbone
        self.options = options
        self.max_frames = max_frames
        self.max_words = max_words

    # ---- stage 1: text (query time) -------------------------------------------------------------------
    def encode_text(self, tokens: torch.Tensor, mask: torch.Tensor) -> State:
        sentence, words = self.backbone.encode_text_tokens(tokens)
        return self.text_from_features(sentence, words, mask)

    def text_from_features(self, sentence: torch.Tensor, words: torch.Tensor, mask: torch.Tensor) -> State:
        """Text-side work after the text tower: sentence [B, D] ([EOT] feature), words [B, L, D] (every position),
        mask [B, L]. Split from ``encode_text`` so that a frozen backbone's outputs can be computed once and
        cached (``bench/data/feature_cache.py``) while the method's own modules train on them."""
        return {"sentence": sentence, "words": words, "text_mask": mask}

    # ---- stage 2: video (offline) ---------------------------------------------------------------------
    def encode_video(self, frames: torch.Tensor, mask: torch.Tensor) -> State:
        return self.video_from_features(self.video_features(frames), mask)

    #: what ``video_features`` returns, as part of the feature-cache key: methods whose image-tower pass differs
    #: from the plain per-frame CLS (TS2-Net's token shift and patch tokens) name their variant here
    def video_feature_kind(self) -> str:
        return "frame-cls"

    def video_features(self, frames: torch.Tensor) -> torch.Tensor:
        """The image tower's part of ``encode_video``: frames [B, F, 3, S, S] -> per-frame CLS [B, F, D]."""
        return self.backbone.encode_frames(frames)

    def video_from_features(self, features: torch.Tensor, mask: torch.Tensor) -> State:
        """``encode_video`` after the image tower, from what ``video_features`` returned."""
        return self.video_from_frames(features, mask)

    def video_from_frames(self, frame_features: torch.Tensor, mask: torch.Tensor) -> State:
        """Video-side work after the image tower (temporal encoder, pooling). Offline."""
        return {"frames": frame_features, "video_mask": mask}

    # ---- stage 3: scoring (query time, per pair) ------------------------------------------------------
    def score(self, text: State, video: State) -> torch.Tensor:
        return self.score_with_parts(text, video)[0]

    def score_with_parts(self, text: State, video: State) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        raise NotImplementedError

    def extra_losses(self, logits: torch.Tensor, parts: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Weighted extra training losses; the harness adds them to the symmetric InfoNCE."""
        return {}

    def official_pair_flops(self, gallery_size: int) -> float | None:
        """Analytic FLOPs (2 x MAC, matmul-like ops: the counting convention of ``bench/cost/flops.py``) per
        (text, video) pair of the method's *official* evaluation code, at this method's shapes: its own eval
        block (``batch_size_val``), the work it re-does per block amortised over that block's pairs. Apart
        from ``score_per_pair``, which is FlopCounterMode's count of this implementation. None where the
        method does not declare it; ``gallery_size`` matters only where the official code scores the whole
        gallery in one call. Checked against the official-formulation ports of benchmarks/official."""
        return None

    def score_pair_bytes(self, itemsize: int = 4) -> int:
        """Bytes of scoring intermediates alive at once per (text, video) pair; the evaluator sizes its blocks
        from it (``eval.memory_budget``). This default is deliberately generous (eight per-pair (L + F) x D
        tensors); methods override it with their own count, checked by benchmarks/ against peak RSS."""
        return 8 * itemsize * (self.max_words + self.max_frames) * self.backbone.embed_dim

    # ---- bookkeeping ----------------------------------------------------------------------------------
    def head_modules(self) -> list[nn.Module]:
        """Modules outside the backbone that take part in scoring/pooling (the "similarity head")."""
        return [m for name, m in self.named_children() if name != "backbone"]

    def new_parameters(self) -> list[nn.Parameter]:
        backbone_ids = {id(p) for p in self.backbone.parameters()}
        return [p for p in self.parameters() if id(p) not in backbone_ids]


def need_text_blocks(arch: Architecture, n: int, key: str) -> None:
    """``key`` copies CLIP text blocks 0..n-1 into a video-side transformer (CLIP4Clip's initialisation)."""
    if n > arch.text_layers:
        raise ConfigError(f"{key}={n}: the blocks are copied from the text tower of {arch.name}, which has "
                          f"{arch.text_layers} blocks; at most {arch.text_layers}")
    if n and arch.text_width != arch.embed_dim:
        raise ConfigError(f"{key}={n} needs text width == embed dim; {arch.name} has width {arch.text_width}, "
                          f"embed {arch.embed_dim}")


def need_positions(arch: Architecture, n: int, who: str, fix: str = "lower data.max_frames") -> None:
    """``who`` adds a position table initialised from CLIP's text positions (``text_context`` rows) to n tokens."""
    if n > arch.text_context:
        raise ConfigError(f"{who} feeds {n} tokens to a position table of {arch.text_context} rows (the text "
                          f"context of {arch.name}); {fix}")


def l2norm(x: torch.Tensor) -> torch.Tensor:
    """x / ||x|| as the CLIP4Clip lineage writes it (no epsilon)."""
    return x / x.norm(dim=-1, keepdim=True)


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over dim 1 of valid positions; an all-padding row divides by 1 (CLIP4Clip convention)."""
    m = mask.to(x.dtype).unsqueeze(-1)
    denom = m.sum(dim=1)
    denom = torch.where(denom == 0, torch.ones_like(denom), denom)
    return (x * m).sum(dim=1) / denom
