"""CLIP4Clip meanP: parameter-free mean pooling of frame embeddings, a two-tower model.

As the official ``_loose_similarity`` computes it: frames L2-normalised, masked mean over valid frames,
normalised again; the [EOT] text feature normalised; logits = kappa * t·v. Untrained with CLIP weights it is
the CLIP zero-shot baseline. (Papers write the pooling as a plain mean of z_f; the official code
normalises frames first and ignores padded frames, which is what is implemented.)
"""

from __future__ import annotations

import torch

from tvr_bench.bench.api.metadata import MethodInfo
from tvr_bench.bench.registry import register_method

from tvr_bench.bench.api.method import RetrievalMethod, State, l2norm, masked_mean


@register_method
class MeanPooling(RetrievalMethod):
    info = MethodInfo(
        name="meanp",
        paper="Luo et al., CLIP4Clip: An Empirical Study of CLIP for End to End Video Clip Retrieval, "
        "Neurocomputing 2022 (arXiv 2104.08860)",
        official_repo="https://github.com/ArrowLuo/CLIP4Clip",
        extra_params=0,
        query_dependent=False,
        description="Mean of normalised frame embeddings, cosine with the [EOT] text feature (two-tower).",
        # official CLIP4Clip settings per dataset (README of ArrowLuo/CLIP4Clip, docs/methods.md)
        official={
            "msrvtt": {"data": {"max_frames": 12, "max_words": 32}, "train": {"epochs": 5, "batch_size": 128}},
            "didemo": {"data": {"max_frames": 64, "max_words": 64}, "train": {"epochs": 5, "batch_size": 128}},
        },
    )

    def text_from_features(self, sentence: torch.Tensor, words: torch.Tensor, mask: torch.Tensor) -> State:
        return {"t_hat": l2norm(sentence)}

    def video_from_frames(self, frame_features: torch.Tensor, mask: torch.Tensor) -> State:
        pooled = masked_mean(l2norm(frame_features), mask)
        return {"v_hat": l2norm(pooled)}

    def score_pair_bytes(self, itemsize: int = 4) -> int:
        return 2 * itemsize  # one GEMM: the logits and their scaled copy

    def score_with_parts(self, text: State, video: State):
        logits = self.backbone.logit_scale() * (text["t_hat"] @ video["v_hat"].t())
        return logits, {}
