"""CLIP4Clip's "seqTransf" temporal encoder, shared by every method built on it.

Z~ = Transformer_4(Z + P[:F]) + Z, with P a learnable frame-position table initialised from CLIP's *text*
positional embedding and the 4 blocks initialised from CLIP text-transformer blocks 0-3 (deep copies of the
backbone's own blocks, so width, heads and activation match the backbone; LayerNorm eps set to the 1e-12 of
CLIP4Clip's ``module_cross`` blocks). Padded key frames get an additive
-1e6 in attention; padded slots still produce outputs (official behaviour).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from tvr_bench.bench.backbone import Backbone
from tvr_bench.bench.errors import ConfigError


TF_LAYERNORM_EPS = 1e-12  # CLIP4Clip's module_cross blocks use its TF-style LayerNorm


def clip_text_blocks(backbone: Backbone, num_layers: int, who: str) -> tuple[nn.ModuleList, torch.Tensor]:
    """Deep copies of CLIP text blocks 0..num_layers-1 (LayerNorm eps set to CLIP4Clip's 1e-12) and the text
    positional table: how CLIP4Clip initialises both seqTransf and its cross encoder."""
    width = backbone.embed_dim
    text_blocks = backbone.text_blocks()
    if backbone.spec.text_width != width or len(text_blocks) < num_layers:
        raise ConfigError(
            f"{who} needs text width == embed dim and >= {num_layers} text blocks; backbone "
            f"{backbone.spec.name} has width {backbone.spec.text_width}, embed {width}, {len(text_blocks)} blocks"
        )
    blocks = nn.ModuleList(copy.deepcopy(text_blocks[i]) for i in range(num_layers))
    for block in blocks:
        block.ln_1.eps = block.ln_2.eps = TF_LAYERNORM_EPS
    return blocks, backbone.text_positional_embedding()


def transformer_macs(width: int, tokens: int, layers: int, mlp_width: int) -> int:
    """MACs of ``layers`` residual attention blocks over ``tokens`` tokens: q/k/v/out projections 4 S D^2, MLP
    2 S D M, attention scores and weighted sum 2 S^2 D (the FLOP convention of bench/cost/flops.py / 2)."""
    return layers * (4 * tokens * width * width + 2 * tokens * width * mlp_width + 2 * tokens * tokens * width)


class SeqTransf(nn.Module):
    def __init__(self, backbone: Backbone, num_layers: int = 4, *, init_from_text: bool = True):
        super().__init__()
        width = backbone.embed_dim
        self.blocks, pos = clip_text_blocks(backbone, num_layers, "seqTransf")
        self.frame_position_embeddings = nn.Embedding(pos.shape[0], width)
        if init_from_text:
            with torch.no_grad():
                self.frame_position_embeddings.weight.copy_(pos.detach())
        self.n_head = self.blocks[0].attn.num_heads

    def macs(self, tokens: int) -> int:
        """MACs of one forward pass over one video of ``tokens`` tokens."""
        width = self.frame_position_embeddings.embedding_dim
        return transformer_macs(width, tokens, len(self.blocks), self.blocks[0].mlp.c_fc.out_features)

    def forward(self, z: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, f, _ = z.shape
        if f > self.frame_position_embeddings.num_embeddings:
            raise ValueError(f"{f} frames exceed the frame position table ({self.frame_position_embeddings.num_embeddings})")
        x = z + self.frame_position_embeddings.weight[:f].unsqueeze(0).to(z.dtype)
        # additive key mask, one [F, F] per (video, head), as CLIP4Clip's cross Transformer builds it
        key_mask = (1.0 - mask.to(z.dtype)).unsqueeze(1) * -1000000.0
        attn_mask = key_mask.expand(-1, f, -1).repeat_interleave(self.n_head, dim=0)
        for block in self.blocks:
            x = block(x, attn_mask=attn_mask)
        return x + z
