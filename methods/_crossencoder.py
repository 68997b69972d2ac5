"""CLIP4Clip's cross encoder (``modules/module_cross.py`` ``CrossModel`` + ``similarity_dense``), one score per row.

Input X [P, S, D] (already holding the position embeddings), key mask [P, S]. As the official module:
- embeddings: X + position embeddings (table of the text context length, initialised from CLIP's text
  positional embedding; added by the caller, which can do it per query / per video), then dropout 0.1. The
  token-type embeddings and the embedding LayerNorm are commented out in the official code: none here;
- 4 CLIP residual attention blocks initialised from CLIP text blocks 0-3 (deep copies of the backbone's own,
  so width, heads and activation match it), with the official TF-style LayerNorm epsilon 1e-12, additive
  -1e6 on padded keys (``repeat_interleave`` over heads, the fixed CLIP4Clip layout, PR #24);
- pooler: LayerNorm (eps 1e-12) -> first token -> Linear(D, D) -> QuickGELU; then Linear(D, 1).
New Linear layers: N(0, 0.02) weights, zero biases (``init_weights``).

The attention calls ``F.scaled_dot_product_attention`` on the block's own projections rather than
``nn.MultiheadAttention`` (whose eval fast path fuses everything): same arithmetic as the written-out softmax
(tested against a loop transcription), about half the time over [pairs, 1+F, D] in training, and
``bench/cost/flops.py`` counts its two S x S x D products on every device.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tvr_bench.bench.backbone import Backbone

from tvr_bench.methods._temporal import TF_LAYERNORM_EPS, clip_text_blocks


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


class CrossEncoder(nn.Module):
    def __init__(self, backbone: Backbone, num_layers: int = 4, dropout: float = 0.1):
        super().__init__()
        width = backbone.embed_dim
        blocks, pos = clip_text_blocks(backbone, num_layers, "the cross encoder")
        self.position_embeddings = nn.Embedding(pos.shape[0], width)
        with torch.no_grad():
            self.position_embeddings.weight.copy_(pos.detach())
        self.blocks = blocks
        for block in self.blocks:
            attn = block.attn
            if not attn._qkv_same_embed_dim or attn.in_proj_bias is None or attn.bias_k is not None or attn.dropout:
                raise ValueError("cross encoder: unexpected attention layout in the backbone's text blocks")
        self.n_head = self.blocks[0].attn.num_heads
        self.dropout = nn.Dropout(dropout)
        self.ln_pool = nn.LayerNorm(width, eps=TF_LAYERNORM_EPS)
        self.pool_dense = nn.Linear(width, width)
        self.similarity_dense = nn.Linear(width, 1)
        for layer in (self.pool_dense, self.similarity_dense):
            nn.init.normal_(layer.weight, std=0.02)
            nn.init.zeros_(layer.bias)

    def _attention(self, block: nn.Module, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        qkv = F.linear(x, block.attn.in_proj_weight, block.attn.in_proj_bias)
        return self._attend(block, *qkv.chunk(3, dim=-1), key_bias)

    def _attend(self, block: nn.Module, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                key_bias: torch.Tensor) -> torch.Tensor:
        """q [P, s, D] (s queries), k, v [P, S, D] -> out-projected attention [P, s, D]."""
        p, s, d = q.shape
        h = self.n_head
        q = q.reshape(p, s, h, d // h).transpose(1, 2)
        k, v = (t.reshape(p, t.shape[1], h, d // h).transpose(1, 2) for t in (k, v))  # each [P, H, S, d/H]
        # additive key bias, scale (d/H)^-0.5 (SDPA's default), no attention dropout (checked in __init__)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_bias[:, None, None, :].to(q.dtype))
        out = out.transpose(1, 2).reshape(p, s, d)
        return block.attn.out_proj(out)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """x [P, S, D] with positions added, key_mask [P, S] (1 = valid) -> scores [P]."""
        x = self.dropout(x)
        key_bias = (1.0 - key_mask.to(x.dtype)) * -1000000.0
        for block in self.blocks:
            x = x + block.ls_1(self._attention(block, block.ln_1(x), key_bias))
            x = x + block.ls_2(block.mlp(block.ln_2(x)))
        return self._head(x[:, 0])  # LayerNorm is per token: first token only

    def _head(self, first: torch.Tensor) -> torch.Tensor:
        pooled = quick_gelu(self.pool_dense(self.ln_pool(first)))
        return self.similarity_dense(pooled).squeeze(-1)

    def first_layer_qkv(self, x: torch.Tensor) -> torch.Tensor:
        """in_proj(ln_1(x)) of the first block, [n, s, 3D]: per token, so per query / per video when the
        embedding dropout is inactive (``forward_reusing``)."""
        block = self.blocks[0]
        return F.linear(block.ln_1(x), block.attn.in_proj_weight, block.attn.in_proj_bias)

    def forward_reusing(self, x: torch.Tensor, qkv0: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        """``forward`` without its pair-independent or unused work (exact; only without embedding dropout).

        x [P, S, D] with positions, qkv0 = ``first_layer_qkv(x)`` gathered from the per-query / per-video
        states. The first block's projections are not recomputed per pair, and the last block computes its
        query, attention, out-projection and MLP for the first token only (the pooler reads nothing else);
        its keys and values still need every token."""
        if self.training and self.dropout.p > 0:
            raise RuntimeError("cross encoder: forward_reusing is exact only without embedding dropout")
        key_bias = (1.0 - key_mask.to(x.dtype)) * -1000000.0
        d = x.shape[-1]
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            if i == 0:
                q, k, v = qkv0.chunk(3, dim=-1)
            else:
                h = block.ln_1(x)
                w, b = block.attn.in_proj_weight, block.attn.in_proj_bias
                if i == last:  # the first token's query only
                    q = F.linear(h[:, :1], w[:d], b[:d])
                    k, v = F.linear(h, w[d:], b[d:]).chunk(2, dim=-1)
                else:
                    q, k, v = F.linear(h, w, b).chunk(3, dim=-1)
            if i == last:
                q, x = q[:, :1], x[:, :1]
            x = x + block.ls_1(self._attend(block, q, k, v, key_bias))
            x = x + block.ls_2(block.mlp(block.ln_2(x)))
        return self._head(x[:, 0])
