"""train.precision=fp16-clip: CLIP's weights converted as CLIP4Clip's convert_weights does, trained that way; the
official preset asks for it on CUDA and keeps fp32 on a CPU; the record says which precision was used."""

from __future__ import annotations

import copy

import pytest
import torch
from click.testing import CliRunner

from tvr_bench.bench.precision import apply_precision, autocast_factory, resolve_precision

# the parameters convert_weights (CLIP4Clip's module_clip.py) casts, by the leaf of their name: Conv/Linear
# weights and biases (attention out_proj included), the attention in-projection, text_projection, visual proj
CONVERTED = ("conv1.weight", "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
             "attn.out_proj.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias",
             "clip.text_projection", "clip.visual.proj")


@pytest.mark.parametrize("name", ["glccl", "tighttransf"])
def test_clip_weights_are_fp16_and_everything_else_fp32(name, tiny_backbone, make_method):
    method = make_method(name, copy.deepcopy(tiny_backbone))
    apply_precision(method, "fp16-clip")
    half = {k for k, p in method.named_parameters() if p.dtype == torch.float16}
    want = {k for k, _ in method.named_parameters() if k.startswith("backbone.clip.") and k.endswith(CONVERTED)}
    assert half == want and len(want) > 20
    rest = {k: p.dtype for k, p in method.named_parameters() if k not in half}
    assert set(rest.values()) == {torch.float32}
    # LayerNorms, embeddings and the logit scale stay fp32, and so do the method's own copies of CLIP blocks
    for key in ("backbone.clip.ln_final.weight", "backbone.clip.token_embedding.weight",
                "backbone.clip.positional_embedding", "backbone.clip.logit_scale",
                "backbone.clip.visual.class_embedding"):
        assert rest[key] == torch.float32, key
    assert any(k.startswith(("temporal.blocks.", "cross.blocks.")) and k.endswith("in_proj_weight") for k in rest)


def test_fp16_clip_scores_are_the_fp32_ones_to_fp16_accuracy(tiny_backbone, make_method):
    """The converted model computes what the fp32 one does (LayerNorm in fp32, outputs cast back to fp32)."""
    ref = make_method("xclip", copy.deepcopy(tiny_backbone))
    half = copy.deepcopy(ref)
    apply_precision(half, "fp16-clip")
    torch.manual_seed(1)
    tokens = torch.randint(1, 400, (4, 5))
    tokens[:, -1] = 49407
    mask = torch.ones(4, 5, dtype=torch.long)
    frames, vmask = torch.randn(3, 6, 3, 32, 32), torch.ones(3, 6, dtype=torch.long)
    with torch.no_grad():
        want = ref.score(ref.encode_text(tokens, mask), ref.encode_video(frames, vmask))
        text, video = half.encode_text(tokens, mask), half.encode_video(frames, vmask)
        got = half.score(text, video)
    assert all(v.dtype != torch.float16 for v in (*text.values(), *video.values()) if v.is_floating_point())
    assert got.dtype == torch.float32 and not torch.equal(got, want)  # fp16 arithmetic did happen
    assert torch.allclose(got, want, atol=0.05 * want.abs().max().item())


def test_precision_resolution_and_autocast():
    assert resolve_precision("auto", "cpu") == "fp32" and resolve_precision("auto", torch.device("cuda")) == "amp"
    assert resolve_precision("fp16-clip", "cpu") == "fp16-clip"
    ctx, scaler = autocast_factory(torch.device("cpu"), "fp16-clip")
    assert scaler is False and ctx().__class__.__name__ == "nullcontext"  # no autocast, no loss scaling
    with pytest.raises(ValueError, match="needs a CUDA device"):
        autocast_factory(torch.device("cpu"), "amp")


@pytest.mark.parametrize("device, used", [("cuda", "fp16-clip"), ("cuda:1", "fp16-clip"), ("cpu", "fp32")])
def test_official_preset_resolves_precision_by_device(device, used):
    """The device string is all resolution reads, so a CUDA device is simulated by naming one."""
    from tvr_bench.bench.config import resolve_config
    from tvr_bench.bench.registry import DATASETS, METHODS
    from tvr_bench.bench.runner import precision_block

    kw = dict(method_cls=METHODS.get("glccl"), dataset_cls=DATASETS.get("msrvtt"), device=device)
    cfg, _ = resolve_config(preset="official", **kw)
    assert cfg["train"]["precision"] == used
    block = precision_block(cfg, torch.device(device), "official")
    assert block["used"] == used and "official recipe" in block["note"]
    assert ("CUDA setting" in block["note"]) == (used == "fp32")
    # an explicit setting wins over the preset's, and the default recipe keeps auto
    cfg, _ = resolve_config(preset="official", overrides=["train.precision=fp32"], **kw)
    assert cfg["train"]["precision"] == "fp32" and "note" not in precision_block(cfg, torch.device(device), "official")
    cfg, _ = resolve_config(preset="default", **kw)
    assert cfg["train"]["precision"] == "auto"


def test_a_training_step_under_fp16_clip_runs_on_cpu_and_is_recorded(tmp_path, monkeypatch):
    """The real run path on CPU: trains in fp16-clip (CLIP's weights change and stay fp16), evaluates, and the
    record names the precision used."""
    from tvr_bench.bench.records import load_record
    from tvr_bench.bench.train import load_checkpoint
    from tvr_bench.cli import main

    monkeypatch.setenv("TVR_BENCH_CACHE", str(tmp_path / "cache"))
    res = CliRunner().invoke(main, ["run", "--method", "seqtransf", "--dataset", "synthetic", "--preset", "smoke",
                                    "--set", "train.precision=fp16-clip", "--set", "train.epochs=1",
                                    "--set", "train.max_steps=2", "--set", "train.coef_lr=1",
                                    # CLIP trained from its random init (the embedded default is frozen, pretrained)
                                    "--set", "backbone.frozen=false", "--set", "backbone.pretrained=none",
                                    "--out", str(tmp_path / "out"), "--quiet", "--no-table"])
    assert res.exit_code == 0, res.output
    rec = load_record(tmp_path / "out" / "seqtransf__synthetic__seed0.json")
    assert rec["training"]["precision"] == {"setting": "fp16-clip", "used": "fp16-clip"}
    assert rec["training"]["history"][0]["steps"] == 2 and rec["config"]["train"]["precision"] == "fp16-clip"
    last = tmp_path / "out" / "checkpoints" / "seqtransf__synthetic__seed0" / "last.pt"
    model = load_checkpoint(last, "cpu")["model"]
    conv = model["backbone.clip.visual.conv1.weight"]
    assert conv.dtype == torch.float16 and model["temporal.blocks.0.attn.in_proj_weight"].dtype == torch.float32
    from tvr_bench.bench.backbone import build_backbone

    torch.manual_seed(0)  # the run's seed: the initial weights
    init = build_backbone("tvr-tiny", log=lambda m: None).clip.visual.conv1.weight.half()
    assert not torch.equal(conv, init)  # the fp16 weights themselves were updated (no fp32 master copy)
