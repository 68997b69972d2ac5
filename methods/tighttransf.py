"""CLIP4Clip tightTransf: a cross encoder scored per (text, video) pair (``--sim_header tightTransf``).

As the official ``_cross_similarity`` computes it (ArrowLuo/CLIP4Clip ``modules/modeling.py``, docs/methods.md):
- the text contributes only its projected [EOT] feature t (``encode_text`` without hidden states, attention
  mask forced to ones); the video contributes the raw CLIP frame features z_1..z_F (no temporal transformer,
  not normalised) with their frame mask;
- X = [t; z_1..z_F] + positions 0..F -> dropout -> 4-layer cross encoder (``methods/_crossencoder.py``) ->
  pooled first token -> Linear(D, 1) = the score. **No logit scale**: the official tight path returns the
  dense layer's output and trains on it directly, so ``score_with_parts`` does not multiply by kappa (the
  backbone's logit_scale gets no gradient);
- loss = (CrossEn(S) + CrossEn(S^T)) / 2 = the harness's symmetric InfoNCE on S. The tight path does not
  all-gather across GPUs: each GPU's loss uses its local batch (32 of 128 on MSR-VTT's 4 GPUs, 16 on
  DiDeMo's 8) and DDP averages the gradients. ``train_loss_groups = g`` reproduces that on one device: in
  training only the g diagonal blocks of the batch are scored and every other entry is -inf, so the symmetric
  InfoNCE equals the mean of the g per-block losses. Default 1 (the official code on one GPU); the
  ``official`` recipes set the GPU counts of the README commands.

Per-query and per-video work (adding the position embeddings) is done in encode_text / video_from_frames;
everything else runs per pair, in blocks of at most ``pair_chunk`` pairs ([pairs, 1+F, D] at once).

Default scoring (``pair_scoring="reuse"``, exact, used whenever the embedding dropout is inactive, i.e. at
evaluation): the first block's LayerNorm and q/k/v projections act per token, so they run once per query and
once per video (``text_qkv``, ``frame_qkv``) instead of once per pair; the last block's query, attention,
out-projection and MLP run for the first token only, the one the pooler reads (its keys and values still need
all 1+F tokens). That removes 3(1+F)D^2 + 10 F D^2 + 2 F (1+F) D of the per-pair MACs (25 % at MSR-VTT
shapes); everything else depends on the pair after the first attention, so no exact rewrite removes more.
``pair_scoring="as_written"`` runs the whole encoder per pair.
"""

from __future__ import annotations

from typing import Literal

import torch

from tvr_bench.bench.api.metadata import MethodInfo
from tvr_bench.bench.registry import register_method

from tvr_bench.bench.api.method import DROPOUT, POSITIVE_INT, RetrievalMethod, State, need_positions, need_text_blocks
from tvr_bench.methods._crossencoder import CrossEncoder


@register_method
class TightTransf(RetrievalMethod):
    info = MethodInfo(
        name="tighttransf",
        paper="Luo et al., CLIP4Clip: An Empirical Study of CLIP for End to End Video Clip Retrieval, "
        "Neurocomputing 2022 (arXiv 2104.08860)",
        official_repo="https://github.com/ArrowLuo/CLIP4Clip",
        extra_params=12_913_153,
        query_dependent=True,
        description="4-layer cross encoder over [EOT feature; frame features] per pair, pooled first token -> "
        "Linear(D,1) score (no logit scale); the cost ceiling.",
        # README of ArrowLuo/CLIP4Clip with --sim_header tightTransf (no --loose_type): MSR-VTT 4 GPUs, DiDeMo 8
        official={
            "msrvtt": {"data": {"max_frames": 12, "max_words": 32},
                       "train": {"epochs": 5, "batch_size": 128, "lr": 1e-4, "coef_lr": 1e-3},
                       "method": {"train_loss_groups": 4}},
            "didemo": {"data": {"max_frames": 64, "max_words": 64},
                       "train": {"epochs": 5, "batch_size": 128, "lr": 1e-4, "coef_lr": 1e-3},
                       "method": {"train_loss_groups": 8}},
        },
    )
    OPTIONS = {
        "cross_layers": 4,
        "embedding_dropout": 0.1,  # hidden_dropout_prob of cross-base, on the embeddings only
        "train_loss_groups": 1,  # per-GPU loss blocks of the official multi-GPU run (see module docstring)
        "pair_chunk": 4096,  # pairs per cross-encoder call (memory bound only; results do not depend on it)
        "pair_scoring": "reuse",  # exact: no per-pair recomputation of per-token or unused work (docstring)
    }

    OPTION_TYPES = {"cross_layers": POSITIVE_INT, "embedding_dropout": DROPOUT, "train_loss_groups": POSITIVE_INT,
                    "pair_chunk": POSITIVE_INT, "pair_scoring": Literal["reuse", "as_written"]}

    @classmethod
    def check_options(cls, options, arch, *, max_frames):
        super().check_options(options, arch, max_frames=max_frames)
        need_text_blocks(arch, options["cross_layers"], "method.cross_layers")
        need_positions(arch, max_frames + 1, "the cross encoder ([EOT] + max_frames)")

    def __init__(self, backbone, options, *, max_frames, max_words):
        super().__init__(backbone, options, max_frames=max_frames, max_words=max_words)
        self.cross = CrossEncoder(backbone, int(self.options["cross_layers"]),
                                  float(self.options["embedding_dropout"]))

    def _reuse(self) -> bool:
        """The reusing path is exact only without the embedding dropout (eval, or dropout 0)."""
        return self.options["pair_scoring"] == "reuse" and not (self.training and self.cross.dropout.p > 0)

    def text_from_features(self, sentence: torch.Tensor, words: torch.Tensor, mask: torch.Tensor) -> State:
        state = {"text_token": sentence + self.cross.position_embeddings.weight[0].to(sentence.dtype)}
        if self._reuse():
            state["text_qkv"] = self.cross.first_layer_qkv(state["text_token"].unsqueeze(1)).squeeze(1)
        return state

    def video_from_frames(self, frame_features: torch.Tensor, mask: torch.Tensor) -> State:
        f = frame_features.shape[1]
        pos = self.cross.position_embeddings.weight[1: f + 1].to(frame_features.dtype)
        state = {"frame_tokens": frame_features + pos, "video_mask": mask}
        if self._reuse():
            state["frame_qkv"] = self.cross.first_layer_qkv(state["frame_tokens"])
        return state

    def pair_scores(self, text: State, video: State) -> torch.Tensor:
        """[N_t, N_v] cross-encoder scores; pairs flattened row-major and encoded in blocks of pair_chunk."""
        t, z, m = text["text_token"], video["frame_tokens"], video["video_mask"]
        reuse = self._reuse() and "text_qkv" in text and "frame_qkv" in video
        n_t, n_v = t.shape[0], z.shape[0]
        chunk = max(1, int(self.options["pair_chunk"]))
        out = []
        for start in range(0, n_t * n_v, chunk):
            idx = torch.arange(start, min(start + chunk, n_t * n_v), device=t.device)
            ti, vj = idx // n_v, idx % n_v
            x = torch.cat([t[ti].unsqueeze(1), z[vj]], dim=1)  # [P, 1+F, D]
            mv = m[vj]
            key_mask = torch.cat([torch.ones_like(mv[:, :1]), mv], dim=1)  # the text token is always valid
            if reuse:
                qkv0 = torch.cat([text["text_qkv"][ti].unsqueeze(1), video["frame_qkv"][vj]], dim=1)
                out.append(self.cross.forward_reusing(x, qkv0, key_mask))
            else:
                out.append(self.cross(x, key_mask))
        return torch.cat(out).view(n_t, n_v)

    def score_with_parts(self, text: State, video: State):
        groups = int(self.options["train_loss_groups"])
        n = next(iter(text.values())).shape[0]
        if not (self.training and groups > 1):
            return self.pair_scores(text, video), {}
        if n != next(iter(video.values())).shape[0]:
            raise ValueError("tighttransf: train_loss_groups needs a square training batch")
        # only each group's own texts x videos are scored, as on one GPU of the official run
        bounds = torch.tensor_split(torch.arange(n), groups)
        blocks = [self.pair_scores({k: v[b] for k, v in text.items()}, {k: v[b] for k, v in video.items()})
                  for b in bounds if len(b)]
        scores = torch.block_diag(*blocks)
        group_id = torch.cat([torch.full((len(b),), g) for g, b in enumerate(bounds)]).to(scores.device)
        same = group_id[:, None] == group_id[None, :]
        outside = torch.full_like(scores, float("-inf"))  # pairs never scored together in the official run
        return torch.where(same, scores, outside), {}

    def official_pair_flops(self, gallery_size: int) -> float | None:
        """``_cross_similarity``: the whole cross encoder per pair over 1 + F tokens, pooler D^2 and the
        similarity head D (the official block of 16 x 16 pairs re-does nothing else)."""
        from tvr_bench.methods._temporal import transformer_macs

        d, blocks = self.backbone.embed_dim, self.cross.blocks
        encoder = transformer_macs(d, 1 + self.max_frames, len(blocks), blocks[0].mlp.c_fc.out_features)
        return 2.0 * (encoder + d * d + d)

    def score_pair_bytes(self, itemsize: int = 4) -> int:
        # a cross-encoder pass per pair: (L + F) tokens of width D through attention and the 4D-wide MLP
        return 12 * itemsize * (self.max_words + self.max_frames) * self.backbone.embed_dim

    def head_modules(self):
        return [self.cross]
