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
        p, s, d = x.shape
        h = self.n_head
        qkv = F.linear(x, block.attn.in_proj_weight, block.attn.in_proj_bias)
        q, k, v = qkv.view(p, s, 3, h, d // h).permute(2, 0, 3, 1, 4)  # each [P, H, S, d/H]
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
        pooled = quick_gelu(self.pool_dense(self.ln_pool(x[:, 0])))  # LayerNorm is per token: first token only
        return self.similarity_dense(pooled).squeeze(-1)
