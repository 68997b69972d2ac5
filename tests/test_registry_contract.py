"""One contract test for every registered method (timm's test_models.py): whatever a plugin computes, the harness
relies on these properties. A new method is covered by registering it; a method that breaks one fails here.

- metadata: name as registered, paper and official code named, a known ``video_input`` capability;
- options: the defaults are plain JSON values and survive a build and a JSON round trip unchanged;
- stages: ``encode_text`` / ``encode_video`` return states whose tensors share the batch dimension, ``score``
  returns a finite [N_t, N_v] matrix;
- chunk invariance: the score matrix assembled in small blocks equals the one scored whole;
- gradients: InfoNCE over the logits plus the method's extra losses back-propagate finite gradients that reach
  the method's new parameters;
- parameter count at ViT-B/32 (D = 512, L = 32, F = 12) equals the analytic ``MethodInfo.extra_params``.
"""

from __future__ import annotations

import contextlib
import json

import pytest
import torch

from tvr_bench.bench.api.state import state_batch
from tvr_bench.bench.registry import METHODS

NAMES = METHODS.names()
F, L = 6, 5


def _inputs(backbone, n_text: int, n_video: int, seed: int = 0):
    from tvr_bench.bench.cost import dummy_frames, dummy_tokens

    tok, tmask = dummy_tokens(n_text, L, backbone.tokenizer.eot_token_id, seed=seed)
    tmask[1:, -2:] = 0  # padded words
    frames, vmask = dummy_frames(n_video, F, backbone.spec.image_size, seed=seed)
    vmask[1:, -2:] = 0  # padded frames
    return tok, tmask, frames, vmask


def test_every_method_is_covered():
    assert len(NAMES) >= 9, NAMES


@pytest.mark.parametrize("name", NAMES)
def test_metadata(name):
    cls = METHODS.get(name)
    info = cls.info
    assert info.name == name
    assert info.paper and info.official_repo.startswith("https://")
    assert info.video_input in ("frame_features", "pixels")
    assert isinstance(info.query_dependent, bool)


@pytest.mark.parametrize("name", NAMES)
def test_options_round_trip(name, tiny_backbone, make_method):
    cls = METHODS.get(name)
    defaults = cls.default_options()
    assert json.loads(json.dumps(defaults)) == defaults  # plain JSON values: recorded whole in every record
    m = make_method(name, tiny_backbone, max_frames=F, max_words=L)
    assert json.loads(json.dumps(dict(m.options))) == defaults


@pytest.mark.parametrize("name", NAMES)
def test_stages_and_chunk_invariance(name, tiny_backbone, make_method):
    from tvr_bench.bench.evaluate import similarity_matrix

    # TS2-Net's official perturbed top-k draws fresh noise per call; its deterministic option shows the blocking
    options = {"eval_topk": "hard"} if name == "ts2net" else {}
    m = make_method(name, tiny_backbone, max_frames=F, max_words=L, **options)
    tok, tmask, frames, vmask = _inputs(tiny_backbone, 5, 7)
    with torch.no_grad():
        text = m.encode_text(tok, tmask)
        video = m.encode_video(frames, vmask)
        assert {state_batch({k: v}) for k, v in text.items()} == {5}
        assert {state_batch({k: v}) for k, v in video.items()} == {7}
        whole = m.score(text, video)
        assert whole.shape == (5, 7) and torch.isfinite(whole).all()
        blocked = similarity_matrix(m, text, video, chunk_size=2, autocast=contextlib.nullcontext)
    torch.testing.assert_close(blocked, whole.float(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_finite_gradients_reach_new_parameters(name, tiny_backbone, make_method):
    from tvr_bench.bench.train import symmetric_infonce

    m = make_method(name, tiny_backbone, max_frames=F, max_words=L).train()
    tok, tmask, frames, vmask = _inputs(tiny_backbone, 4, 4)
    m.zero_grad(set_to_none=True)
    logits, parts = m.score_with_parts(m.encode_text(tok, tmask), m.encode_video(frames, vmask))
    assert logits.shape == (4, 4)
    loss = symmetric_infonce(logits)
    for extra in m.extra_losses(logits, parts).values():
        loss = loss + extra
    assert torch.isfinite(loss)
    loss.backward()
    grads = [p.grad for p in m.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    new = m.new_parameters()
    if new:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in new), "no gradient reaches the head"


@pytest.fixture(scope="module")
def vit_b32():
    from tvr_bench.bench.backbone import build_backbone

    torch.manual_seed(0)
    return build_backbone("ViT-B-32")


@pytest.mark.parametrize("name", NAMES)
def test_parameter_count_equals_analytic(name, vit_b32, make_method):
    from tvr_bench.bench.cost import param_counts

    info = METHODS.get(name).info
    assert info.extra_params is not None, f"{name}: declare the analytic extra_params at ViT-B/32"
    m = make_method(name, vit_b32, max_frames=12, max_words=32)
    assert param_counts(m)["head"] == info.extra_params


def test_config_time_architecture_matches_the_built_backbone(tiny_backbone, vit_b32):
    """Options are checked at config time against the model config; the numbers must be the built model's."""
    from tvr_bench.bench.backbone import architecture

    assert architecture("tvr-tiny") == tiny_backbone.architecture
    assert architecture("ViT-B-32") == vit_b32.architecture


@pytest.mark.parametrize("name", METHODS.names())
def test_official_defaults_pass_the_option_checks_at_paper_scale(name):
    """Every method's defaults (and its official recipes' options) are accepted on OpenAI's ViT-B/32."""
    from tvr_bench.bench.backbone import architecture
    from tvr_bench.bench.config_schema import check_section, method_options_model

    cls = METHODS.get(name)
    arch = architecture("ViT-B-32-quickgelu")
    for recipe in [{}, *cls.info.official.values()]:
        options = check_section("method", {**cls.default_options(), **recipe.get("method", {})},
                                method_options_model(cls))
        cls.check_options(options, arch, max_frames=recipe.get("data", {}).get("max_frames", 12))
