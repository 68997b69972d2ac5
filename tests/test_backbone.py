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


# -- OpenAI-format weights build the QuickGELU architecture (issue 14) --

_OAI_TINY = {  # heads = width // 64 as OpenAI's CLIP (and open_clip's OpenAI loader) infer them
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "head_width": 64, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 64, "heads": 1, "layers": 2},
}


def _openai_state_dict(seed: int = 0) -> dict:
    """Random weights under the key names of OpenAI's clip/model.py (ViT), at a tiny width."""
    g = torch.Generator().manual_seed(seed)

    def r(*shape, scale=0.05):
        # fp16-representable values: open_clip's OpenAI loader stores the weights in fp16, as OpenAI ships them
        return (torch.randn(*shape, generator=g) * scale).half().float()

    w, emb, ctx, grid = 64, 32, 16, 2  # 32 px images, 16 px patches
    sd = {"visual.class_embedding": r(w), "visual.positional_embedding": r(grid * grid + 1, w),
          "visual.conv1.weight": r(w, 3, 16, 16), "visual.proj": r(w, emb),
          "positional_embedding": r(ctx, w), "token_embedding.weight": r(49408, w),
          "text_projection": r(w, emb), "logit_scale": torch.tensor(4.6052)}
    for p in ("visual.ln_pre", "visual.ln_post", "ln_final"):
        sd[f"{p}.weight"], sd[f"{p}.bias"] = 1 + r(w), r(w)
    for tower in ("visual.transformer", "transformer"):
        for i in range(2):
            b = f"{tower}.resblocks.{i}"
            sd.update({f"{b}.attn.in_proj_weight": r(3 * w, w), f"{b}.attn.in_proj_bias": r(3 * w),
                       f"{b}.attn.out_proj.weight": r(w, w), f"{b}.attn.out_proj.bias": r(w),
                       f"{b}.mlp.c_fc.weight": r(4 * w, w, scale=0.5), f"{b}.mlp.c_fc.bias": r(4 * w),
                       f"{b}.mlp.c_proj.weight": r(w, 4 * w), f"{b}.mlp.c_proj.bias": r(w)})
            for ln in ("ln_1", "ln_2"):
                sd[f"{b}.{ln}.weight"], sd[f"{b}.{ln}.bias"] = 1 + r(w), r(w)
    # OpenAI's released checkpoints carry these three entries besides the weights
    sd.update(input_resolution=torch.tensor(32), context_length=torch.tensor(ctx), vocab_size=torch.tensor(49408))
    return sd


@pytest.fixture
def oai_tiny(tmp_path):
    import json

    from tvr_bench.bench.backbone import import_open_clip

    open_clip = import_open_clip()
    (tmp_path / "cfg").mkdir()
    (tmp_path / "cfg" / "tvr-oai-test.json").write_text(json.dumps(_OAI_TINY))
    open_clip.add_model_config(tmp_path / "cfg")
    sd = _openai_state_dict()
    path = tmp_path / "openai_tiny.pt"
    torch.save(sd, path)  # plain state dict, no TorchScript
    return open_clip, sd, str(path)


def test_openai_checkpoint_builds_quickgelu_and_matches_open_clip(oai_tiny):
    open_clip, sd, path = oai_tiny
    lines: list[str] = []
    bb = build_backbone("tvr-oai-test", path, log=lines.append)  # a GELU config: QuickGELU chosen for it
    assert bb.spec.quick_gelu
    assert any("QuickGELU" in ln for ln in lines) and len(lines) == 1
    acts = {type(m).__name__ for m in bb.clip.modules()}
    assert "QuickGELU" in acts and "GELU" not in acts
    # the reference: open_clip's own loader of OpenAI state dicts (QuickGELU, architecture from the weights)
    from open_clip.model import build_model_from_openai_state_dict

    ref = build_model_from_openai_state_dict(dict(sd), cast_dtype=None).float().eval()
    gelu = open_clip.create_model("tvr-oai-test").eval()  # same weights, exact GELU: must differ
    gelu.load_state_dict({k: v for k, v in sd.items() if k not in ("input_resolution", "context_length",
                                                                   "vocab_size")})
    bb.clip.eval()
    img = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    tokens = bb.tokenize(["a dog runs", "red square"], 16)
    with torch.no_grad():
        for fn in ("encode_image", "encode_text"):
            x = img if fn == "encode_image" else tokens
            ours, theirs = getattr(bb.clip, fn)(x), getattr(ref, fn)(x)
            torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
            assert not torch.allclose(ours, getattr(gelu, fn)(x), rtol=1e-3, atol=1e-3), fn


def test_openai_checkpoint_refuses_forced_gelu(oai_tiny):
    _, _, path = oai_tiny
    with pytest.raises(ConfigError, match="contradicts the weights"):
        build_backbone("tvr-oai-test", path, quick_gelu=False)


def test_openai_tag_resolves_quickgelu_without_download():
    """The tag ``openai`` of ViT-B-32 declares QuickGELU in open_clip's registry; a GELU force is refused
    before any download is attempted."""
    with pytest.raises(ConfigError, match="trained with QuickGELU"):
        build_backbone("ViT-B-32", "openai", quick_gelu=False)


def test_mismatched_local_checkpoint_lists_keys(tmp_path, oai_tiny):
    _, sd, _ = oai_tiny
    bad = {k: v for k, v in sd.items() if k != "ln_final.bias"}
    bad["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pt"
    torch.save(bad, path)
    with pytest.raises(ConfigError, match=r"missing: ln_final\.bias; unexpected: extra\.weight"):
        build_backbone("tvr-oai-test", str(path))
