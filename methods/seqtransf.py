"""CLIP4Clip seqTransf: the 4-layer temporal transformer on frame embeddings, then meanP's pooling.

Official ``_loose_similarity`` with ``sim_header=seqTransf``: Z~ = Transformer_4(Z + P) + Z (blocks and P
initialised from CLIP's text transformer, ``methods/_temporal.py``), then exactly meanP: frames normalised,
masked mean, normalised, cosine with the [EOT] feature times kappa. All of it is video-side: two-tower.
"""

from __future__ import annotations

import torch

from tvr_bench.bench.api.metadata import MethodInfo
from tvr_bench.bench.api.method import POSITIVE_INT
from tvr_bench.bench.registry import register_method

from tvr_bench.methods._temporal import SeqTransf
from tvr_bench.methods.meanp import MeanPooling


@register_method
class SeqTransfPooling(MeanPooling):
    info = MethodInfo(
        name="seqtransf",
        paper="Luo et al., CLIP4Clip: An Empirical Study of CLIP for End to End Video Clip Retrieval, "
        "Neurocomputing 2022 (arXiv 2104.08860)",
        official_repo="https://github.com/ArrowLuo/CLIP4Clip",
        extra_params=12_648_960,
        query_dependent=False,
        description="4-layer temporal transformer (init from CLIP text blocks 0-3) + residual, then mean pooling "
        "and cosine (two-tower).",
        official={
            "msrvtt": {"data": {"max_frames": 12, "max_words": 32}, "train": {"epochs": 5, "batch_size": 128}},
            "didemo": {"data": {"max_frames": 64, "max_words": 64}, "train": {"epochs": 5, "batch_size": 128}},
        },
    )
    OPTIONS = {"temporal_layers": 4}
    OPTION_TYPES = {"temporal_layers": POSITIVE_INT}

    def __init__(self, backbone, options, *, max_frames, max_words):
        super().__init__(backbone, options, max_frames=max_frames, max_words=max_words)
        self.temporal = SeqTransf(backbone, int(self.options["temporal_layers"]))

    def video_from_frames(self, frame_features: torch.Tensor, mask: torch.Tensor):
        return super().video_from_frames(self.temporal(frame_features, mask), mask)

    def head_modules(self):
        return [self.temporal]
