"""The CLIP backbone, always built through open_clip.

``build_backbone(name, pretrained)`` takes any open_clip model name with a pretrained tag (``openai``,
``laion2b_s34b_b79k``...), a local checkpoint path, or nothing (random init). The project's tiny configs
(``tvr-tiny``, ``tvr-small`` in ``model_configs/``) are registered with open_clip so tests and the embedded
benchmark never need downloaded weights.

The text tower is run by :meth:`Backbone.encode_text_tokens`, which returns the projected hidden state at
*every* position (CLIP4Clip/X-CLIP/GLCCL need word features, open_clip's ``encode_text`` returns only the
pooled [EOT] feature). It truncates CLIP's positional table and causal mask to the protocol's ``max_words``
as the CLIP4Clip lineage does.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from tvr_bench.bench.errors import ConfigError

MODEL_CONFIG_DIR = Path(__file__).with_name("model_configs")
_TORCHVISION_SHIM: Any = None


@functools.lru_cache(maxsize=None)
def import_open_clip():
    """Import open_clip, working around the CUDA-only torchvision wheel on CPU-only torch builds.

    Every torchvision wheel on PyPI for torch 2.13 is a CUDA build; with the CPU torch its compiled ops fail
    to load and ``import torchvision`` then dies registering a fake kernel for ``torchvision::nms``. Declaring
    the two op schemas first lets the pure-Python parts (transforms, ops.misc) that open_clip needs import.
    Nothing here uses torchvision's compiled ops.
    """
    global _TORCHVISION_SHIM
    try:
        import torchvision  # noqa: F401
    except (RuntimeError, OSError):
        import sys

        for mod in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
            del sys.modules[mod]
        _TORCHVISION_SHIM = torch.library.Library("torchvision", "DEF")  # kept alive for the process
        _TORCHVISION_SHIM.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        _TORCHVISION_SHIM.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        import torchvision  # noqa: F401
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    import open_clip

    open_clip.add_model_config(MODEL_CONFIG_DIR)
    return open_clip


@dataclass
class BackboneSpec:
    name: str
    pretrained: str | None
    embed_dim: int
    image_size: int
    text_context: int
    text_width: int
    vision_width: int


class Backbone(nn.Module):
    """An open_clip CLIP model plus the preprocessing and tokenizer that belong to it."""

    def __init__(self, clip: nn.Module, preprocess: Callable, tokenizer: Callable, spec: BackboneSpec):
        super().__init__()
        self.clip = clip
        self.preprocess = preprocess
        self.tokenizer = tokenizer
        self.spec = spec

    @property
    def embed_dim(self) -> int:
        return self.spec.embed_dim

    def logit_scale(self) -> torch.Tensor:
        return self.clip.logit_scale.exp()

    def clamp_logit_scale(self, max_scale: float = 100.0) -> None:
        """CLIP4Clip-lineage trainers clamp logit_scale to <= ln(100) after each step."""
        with torch.no_grad():
            self.clip.logit_scale.clamp_(max=float(torch.log(torch.tensor(max_scale))))

    def text_blocks(self) -> nn.ModuleList:
        return self.clip.transformer.resblocks

    def text_positional_embedding(self) -> torch.Tensor:
        return self.clip.positional_embedding

    def encode_text_tokens(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return (sentence [B, D], words [B, L, D]): projected [EOT] feature and every position's feature.

        Like CLIP4Clip: positions [0, L) of the positional table and an L×L causal mask; the [EOT] token is
        found by argmax over token ids (it has the largest id in CLIP's vocabulary).
        """
        clip = self.clip
        length = tokens.shape[1]
        if length > clip.positional_embedding.shape[0]:
            raise ConfigError(
                f"max_words={length} exceeds the text context of backbone {self.spec.name} "
                f"({clip.positional_embedding.shape[0]} tokens)"
            )
        cast_dtype = clip.transformer.get_cast_dtype()
        x = clip.token_embedding(tokens).to(cast_dtype)
        x = x + clip.positional_embedding[:length].to(cast_dtype)
        attn_mask = clip.attn_mask[:length, :length] if clip.attn_mask is not None else None
        x = clip.transformer(x, attn_mask=attn_mask)
        x = clip.ln_final(x)
        proj = clip.text_projection
        words = proj(x) if isinstance(proj, nn.Linear) else x @ proj
        words = words.float()
        sentence = words[torch.arange(words.shape[0], device=words.device), tokens.argmax(dim=-1)]
        return sentence, words

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """frames [B, F, 3, S, S] -> per-frame CLS embeddings [B, F, D] (fp32)."""
        b, f = frames.shape[:2]
        out = self.clip.encode_image(frames.reshape(b * f, *frames.shape[2:]))
        return out.float().reshape(b, f, -1)

    def tokenize(self, texts: list[str], length: int) -> torch.Tensor:
        """CLIP BPE tokens: [SOT] + tokens + [EOT], right-padded with 0 to ``length`` (no truncation here)."""
        out = torch.zeros(len(texts), length, dtype=torch.long)
        for i, text in enumerate(texts):
            seq = self.token_ids(text)
            out[i, : len(seq)] = torch.tensor(seq[:length])
        return out

    def token_ids(self, text: str) -> list[int]:
        """Full token id sequence of one caption, [SOT] ... [EOT], untruncated."""
        tok = self.tokenizer
        return [tok.sot_token_id, *tok.encode(text), tok.eot_token_id]


def _resolve_pretrained(pretrained: str | None) -> str | None:
    if pretrained in (None, "", "none", "None"):
        return None
    return str(pretrained)


def build_backbone(name: str, pretrained: str | None = None, *, device: str | torch.device = "cpu") -> Backbone:
    """Build an open_clip backbone: ``pretrained`` is None (random init), an open_clip tag or a local file."""
    open_clip = import_open_clip()
    available = open_clip.list_models()
    if name not in available:
        import difflib

        close = difflib.get_close_matches(name, available, n=3)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ConfigError(f"unknown open_clip model {name!r} (backbone.name).{hint}")
    pretrained = _resolve_pretrained(pretrained)
    if pretrained is not None and ("/" in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors"))):
        if not Path(pretrained).is_file():
            raise ConfigError(f"backbone.pretrained: checkpoint file not found: {pretrained}")
    else:
        tags = open_clip.list_pretrained_tags_by_model(name)
        if pretrained is not None and pretrained not in tags:
            raise ConfigError(
                f"backbone.pretrained={pretrained!r} is not a pretrained tag of {name!r} "
                f"(tags: {', '.join(tags) or 'none'}) nor an existing checkpoint file"
            )
    try:
        clip, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=pretrained, device=device)
    except RuntimeError as exc:  # download failures surface as RuntimeError in open_clip
        raise ConfigError(f"could not load backbone {name!r} with pretrained={pretrained!r}: {exc}") from exc
    tokenizer = open_clip.get_tokenizer(name)
    cfg = open_clip.get_model_config(name) or {}
    spec = BackboneSpec(
        name=name,
        pretrained=pretrained,
        embed_dim=int(cfg.get("embed_dim", clip.text_projection.shape[-1])),
        image_size=int(cfg.get("vision_cfg", {}).get("image_size", 224)),
        text_context=int(clip.positional_embedding.shape[0]),
        text_width=int(clip.transformer.width),
        vision_width=int(cfg.get("vision_cfg", {}).get("width", 0)),
    )
    return Backbone(clip, preprocess, tokenizer, spec)
