"""The open_clip backbone path: tiny config, local checkpoints, and the all-positions text encoder."""

from __future__ import annotations

import pytest
import torch

from tvr_bench.bench.backbone import build_backbone
from tvr_bench.bench.errors import ConfigError


def test_text_tokens_match_open_clip_encode_text(tiny_backbone):
    """At full context length our per-position encoder's [EOT] feature is open_clip's encode_text."""
    bb = tiny_backbone
    tokens = bb.tokenize(["red circle left on black, then blue square up on gray", "a dog"], bb.spec.text_context)
    sentence, words = bb.encode_text_tokens(tokens)
    with torch.no_grad():
        ref = bb.clip.encode_text(tokens)
    torch.testing.assert_close(sentence, ref.float(), rtol=1e-5, atol=1e-5)
    assert words.shape == (2, bb.spec.text_context, bb.embed_dim)
    # shorter max_words (CLIP4Clip truncates the positional table and causal mask): causal attention means
    # the first positions do not depend on later padding
    s16, w16 = bb.encode_text_tokens(tokens[:, :16])
    torch.testing.assert_close(w16[1, :5], words[1, :5], rtol=1e-5, atol=1e-5)


def test_local_checkpoint_is_loaded(tmp_path, tiny_backbone):
    path = tmp_path / "tiny.pt"
    torch.save(tiny_backbone.clip.state_dict(), path)
    loaded = build_backbone("tvr-tiny", str(path))
    for (k, a), (_, b) in zip(tiny_backbone.clip.state_dict().items(), loaded.clip.state_dict().items()):
        torch.testing.assert_close(a, b, msg=k)


@pytest.mark.parametrize("name,pretrained,needle", [
    ("ViT-B-3", None, "Did you mean"),
    ("tvr-tiny", "laion9000", "not a pretrained tag"),
    ("tvr-tiny", "/nonexistent/ckpt.pt", "checkpoint file not found"),
])
def test_bad_backbone_settings_are_clear_errors(name, pretrained, needle):
    with pytest.raises(ConfigError, match=needle):
        build_backbone(name, pretrained)
