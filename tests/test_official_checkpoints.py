"""`bench eval --checkpoint` on state dicts saved by the official code (GLCCL, X-CLIP, CLIP4Clip).

The official-named dicts are built here independently of bench/checkpoints/official.py: the official names are
enumerated as the official modules define them (transcribed below, per file), and filled from a native model
through a hand-written, name-by-name table. They are saved as the official trainers would have them after a
DataParallel/DDP run (``module.`` prefix) with CLIP's weights in fp16 (CLIP4Clip's ``convert_weights``).
"""

from __future__ import annotations


import pytest
import torch
from click.testing import CliRunner

from tvr_bench.cli import main

# the residual block of CLIP4Clip's module_clip.py and module_cross.py (attn, ln_1, mlp.c_fc/c_proj, ln_2)
BLOCK = ["attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias",
         "ln_1.weight", "ln_1.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias",
         "ln_2.weight", "ln_2.bias"]
# what convert_weights (CLIP4Clip's module_clip.py) makes fp16: Conv/Linear weights and biases, attention
# in-projections, text_projection and the visual proj
FP16_LEAVES = ("conv1.weight", "attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight",
               "attn.out_proj.bias", "mlp.c_fc.weight", "mlp.c_fc.bias", "mlp.c_proj.weight", "mlp.c_proj.bias",
               "clip.text_projection", "clip.visual.proj")


def official_clip_names(vision_layers: int, text_layers: int) -> list[str]:
    """``self.clip`` (module_clip.py ``CLIP`` with a ``VisualTransformer``) as state_dict() names it."""
    names = ["clip.positional_embedding", "clip.text_projection", "clip.logit_scale", "clip.visual.class_embedding",
             "clip.visual.positional_embedding", "clip.visual.proj", "clip.visual.conv1.weight",
             "clip.visual.ln_pre.weight", "clip.visual.ln_pre.bias", "clip.visual.ln_post.weight",
             "clip.visual.ln_post.bias", "clip.token_embedding.weight", "clip.ln_final.weight", "clip.ln_final.bias"]
    names += [f"clip.visual.transformer.resblocks.{i}.{b}" for i in range(vision_layers) for b in BLOCK]
    names += [f"clip.transformer.resblocks.{i}.{b}" for i in range(text_layers) for b in BLOCK]
    return names


def native_of_clip(name: str) -> str:
    return "backbone." + name  # open_clip keeps OpenAI's CLIP names; tvr-bench holds it as backbone.clip


def seq_transf_table(layers: int) -> dict[str, str]:
    """CLIP4Clip's modeling.py seqTransf: frame_position_embeddings + transformerClip (module_cross Transformer)."""
    table = {"frame_position_embeddings.weight": "temporal.frame_position_embeddings.weight"}
    table.update({f"transformerClip.resblocks.{i}.{b}": f"temporal.blocks.{i}.{b}" for i in range(layers)
                  for b in BLOCK})
    return table


def cross_table(layers: int) -> dict[str, str]:
    """CLIP4Clip's modeling.py tightTransf: cross (module_cross CrossModel) + similarity_dense."""
    table = {"cross.embeddings.position_embeddings.weight": "cross.position_embeddings.weight",
             "cross.pooler.ln_pool.weight": "cross.ln_pool.weight", "cross.pooler.ln_pool.bias": "cross.ln_pool.bias",
             "cross.pooler.dense.weight": "cross.pool_dense.weight", "cross.pooler.dense.bias": "cross.pool_dense.bias",
             "similarity_dense.weight": "cross.similarity_dense.weight",
             "similarity_dense.bias": "cross.similarity_dense.bias"}
    table.update({f"cross.transformer.resblocks.{i}.{b}": f"cross.blocks.{i}.{b}" for i in range(layers)
                  for b in BLOCK})
    return table


# X-CLIP's modeling_xclip.py: the AOSM matrices are attributes of the model
XCLIP_TABLE = {"global_mat_weight": "scores.global_mat_weight", "word_logit_weight": "scores.word_logit_weight",
               "frame_logit_weight": "scores.frame_logit_weight", "local_mat_weight": "scores.local_mat_weight",
               "frame_mat_weight": "scores.frame_mat_weight", "word_mat_weight": "scores.word_mat_weight",
               "frame_mat_weight2": "scores.frame_mat_weight2", "word_mat_weight2": "scores.word_mat_weight2"}
# GLCCL's modeling_glccl.py: the same, its frame matrices renamed word_frame_* (L x L), plus visual_logit_weight
GLCCL_TABLE = {"global_mat_weight": "scores.global_mat_weight", "word_logit_weight": "scores.word_logit_weight",
               "word_frame_logit_weight": "scores.frame_logit_weight", "local_mat_weight": "scores.local_mat_weight",
               "word_frame_mat_weight": "scores.frame_mat_weight", "word_mat_weight": "scores.word_mat_weight",
               "word_frame_mat_weight2": "scores.frame_mat_weight2", "word_mat_weight2": "scores.word_mat_weight2",
               "visual_logit_weight": "scores.visual_logit_weight"}


def official_table(method: str, vision_layers: int, text_layers: int) -> dict[str, str]:
    table = {n: native_of_clip(n) for n in official_clip_names(vision_layers, text_layers)}
    if method in ("seqtransf", "xclip", "glccl"):
        table.update(seq_transf_table(4))
    if method == "tighttransf":
        table.update(cross_table(4))
    table.update({"xclip": XCLIP_TABLE, "glccl": GLCCL_TABLE}.get(method, {}))
    return table


def official_shapes(method: str, d: int, words: int, frames: int, context: int) -> dict[str, tuple]:
    """Shapes the official constructors give the method-specific weights (D = embed dim)."""
    if method == "glccl":
        return {**{n: (words, words) for n in GLCCL_TABLE if n not in ("global_mat_weight", "local_mat_weight",
                                                                          "visual_logit_weight")},
                "global_mat_weight": (d, d), "local_mat_weight": (d, d), "visual_logit_weight": (frames, frames),
                "frame_position_embeddings.weight": (context, d)}
    if method == "xclip":
        return {"global_mat_weight": (d, d), "local_mat_weight": (d, d), "word_logit_weight": (words, words),
                "word_mat_weight": (words, words), "word_mat_weight2": (words, words),
                "frame_logit_weight": (frames, frames), "frame_mat_weight": (frames, frames),
                "frame_mat_weight2": (frames, frames), "frame_position_embeddings.weight": (context, d)}
    if method == "tighttransf":
        return {"cross.embeddings.position_embeddings.weight": (context, d), "cross.pooler.dense.weight": (d, d),
                "similarity_dense.weight": (1, d), "similarity_dense.bias": (1,)}
    return {"frame_position_embeddings.weight": (context, d)} if method == "seqtransf" else {}


# the official CLIP uses QuickGELU (module_clip.py); tvr-tiny's twin with it, as ViT-B-32-quickgelu is ViT-B-32's
QUICKGELU = "backbone.name=tvr-tiny-quickgelu"
# the synthetic dataset's default weights (`embedded`) are tvr-tiny's (GELU): these tests start from a random init
RANDOM_INIT = "backbone.pretrained=none"


def smoke_method(name: str):
    """The method ``bench eval --preset smoke`` builds on the synthetic dataset, with every weight moved off its
    initialisation (identity matrices would hide two swapped names) and CLIP's fp16 weights pre-rounded, so a
    native and an official save of it hold the very same numbers."""
    from tvr_bench.bench.backbone import build_backbone
    from tvr_bench.bench.config import resolve_config
    from tvr_bench.bench.registry import DATASETS, METHODS

    cls = METHODS.get(name)
    cfg, _ = resolve_config(method_cls=cls, dataset_cls=DATASETS.get("synthetic"), preset="smoke",
                            overrides=[QUICKGELU, RANDOM_INIT])
    backbone = build_backbone(cfg["backbone"]["name"], cfg["backbone"]["pretrained"], log=lambda m: None)
    method = cls(backbone, cfg["method"], max_frames=cfg["data"]["max_frames"], max_words=cfg["data"]["max_words"])
    gen = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for key, p in method.named_parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen) * (p.detach().abs().mean() + 0.02))
            if key.startswith("backbone.clip.") and key.endswith(FP16_LEAVES):
                p.copy_(p.half().float())
    return method, cfg


def official_state(method, name: str, *, prefix: str = "module.") -> dict[str, torch.Tensor]:
    clip = method.backbone.clip
    table = official_table(name, len(clip.visual.transformer.resblocks), len(clip.transformer.resblocks))
    native = method.state_dict()
    out = {}
    for official, own in table.items():
        t = native[own].clone()
        out[prefix + official] = t.half() if official.startswith("clip.") and official.endswith(FP16_LEAVES) else t
    return out


def save_native(method, path):
    torch.save({"model": method.state_dict(), "epoch": 3, "config_hash": "0123456789abcdef"}, path)


def bench_eval(name: str, ckpt, out, *extra, backbone=QUICKGELU):
    return CliRunner().invoke(main, ["eval", "--method", name, "--dataset", "synthetic", "--preset", "smoke",
                                     "--set", backbone, "--set", RANDOM_INIT, "--checkpoint", str(ckpt),
                                     "--out", str(out), "--quiet",
                                     "--no-table", *extra])


@pytest.mark.parametrize("name", ["meanp", "seqtransf", "tighttransf", "xclip", "glccl"])
def test_official_names_and_shapes_are_what_the_loader_fills(name, tmp_path):
    """Every official name transcribed above is consumed, every weight of the method is filled, with the official
    constructors' shapes, and the loaded weights are exactly the native ones (fp16 tensors cast back)."""
    from tvr_bench.bench.runner import load_eval_checkpoint

    method, cfg = smoke_method(name)
    state = official_state(method, name)
    d, words, frames = method.backbone.embed_dim, cfg["data"]["max_words"], cfg["data"]["max_frames"]
    for key, shape in official_shapes(name, d, words, frames, method.backbone.spec.text_context).items():
        assert tuple(state["module." + key].shape) == shape, key
    assert any(v.dtype == torch.float16 for v in state.values())
    path = tmp_path / "pytorch_model.bin.4"
    torch.save(state, path)
    fresh, _ = smoke_method(name)
    with torch.no_grad():
        for p in fresh.parameters():
            p.zero_()
    info = load_eval_checkpoint(fresh, name, str(path), "cpu", "auto", log=lambda m: None)
    assert info["format"] == "official" and len(info["sha256"]) == 64
    want, got = method.state_dict(), fresh.state_dict()
    assert want.keys() == got.keys()
    for key in want:
        assert got[key].dtype == want[key].dtype and torch.equal(got[key], want[key]), key


@pytest.mark.parametrize("name", ["glccl", "xclip", "seqtransf"])
def test_official_checkpoint_scores_like_the_native_one(name, tmp_path, cache_dir):
    """The issue's acceptance test: the same weights, saved in the official naming (module. prefix, fp16 CLIP)
    and natively, give the same record metrics and per-query ranks through `bench eval`."""
    from tvr_bench.bench.records import load_record

    method, _ = smoke_method(name)
    save_native(method, tmp_path / "native.pt")
    torch.save(official_state(method, name), tmp_path / "official.bin")
    res = bench_eval(name, tmp_path / "native.pt", tmp_path / "n")
    assert res.exit_code == 0, res.output
    res = bench_eval(name, tmp_path / "official.bin", tmp_path / "o", "--checkpoint-format", "official")
    assert res.exit_code == 0, res.output
    native = load_record(tmp_path / "n" / f"{name}__synthetic__seed0.json")
    official = load_record(tmp_path / "o" / f"{name}__synthetic__seed0.json")
    for key in ("t2v", "v2t", "ranks"):
        assert official["metrics"][key] == native["metrics"][key], key
    # the weights are not the zero-shot ones: the comparison is about these weights
    assert native["metrics"]["ranks"] != load_zero_shot(name, tmp_path)["metrics"]["ranks"]
    ev = official["training"]["evaluated_checkpoint"]
    assert ev["format"] == "official" and ev["official_family"].split()[0] in ("GLCCL", "X-CLIP", "CLIP4Clip")
    assert native["training"]["evaluated_checkpoint"]["format"] == "tvr-bench"
    assert "saved by the official" in official["metrics"]["selection"]


def load_zero_shot(name, tmp_path):
    from tvr_bench.bench.records import load_record

    res = CliRunner().invoke(main, ["eval", "--method", name, "--dataset", "synthetic", "--preset", "smoke",
                                    "--set", QUICKGELU, "--set", RANDOM_INIT, "--out", str(tmp_path / "z"), "--quiet",
                                    "--no-table"])
    assert res.exit_code == 0, res.output
    return load_record(tmp_path / "z" / f"{name}__synthetic__seed0.json")


def _error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize("damage", ["missing", "unknown"])
def test_official_checkpoint_with_a_missing_or_unknown_key_is_one_error(damage, tmp_path, cache_dir):
    method, _ = smoke_method("glccl")
    state = official_state(method, "glccl")
    if damage == "missing":
        del state["module.word_frame_mat_weight2"]
        named = "word_frame_mat_weight2"
    else:
        state["module.clip.visual.conv2.weight"] = torch.zeros(64, 3, 3, 8, 8)  # linear_patch=3d's extra conv
        named = "clip.visual.conv2.weight"
    torch.save(state, tmp_path / "bad.bin")
    res = bench_eval("glccl", tmp_path / "bad.bin", tmp_path / "out")
    assert res.exit_code == 2, res.output
    lines = _error_lines(res.output)
    assert len(lines) == 1 and named in lines[0] and "GLCCL" in lines[0] and "Traceback" not in res.output, res.output
    assert not list((tmp_path / "out").glob("*.json"))


def test_formats_are_detected_and_contradictions_refused(tmp_path, cache_dir):
    from tvr_bench.bench.checkpoints.loading import read_weights
    from tvr_bench.bench.errors import ConfigError

    method, _ = smoke_method("meanp")
    official = official_state(method, "meanp", prefix="")
    assert read_weights(official, "f", "auto").format == "official"
    wrapped = read_weights({"state_dict": official, "epoch": 4, "optimizer": {}}, "f", "auto")
    assert wrapped.format == "official" and wrapped.ignored == ["epoch", "optimizer"]
    with pytest.raises(ConfigError, match="not known to be ignorable: args"):
        read_weights({"state_dict": official, "args": {"lr": 1}}, "f", "auto")
    native = {"model": method.state_dict(), "epoch": 1, "config_hash": "x"}
    assert read_weights(native, "f", "auto").format == "tvr-bench"
    with pytest.raises(ConfigError, match="is a tvr-bench checkpoint, not an official one"):
        read_weights(native, "f", "official")
    with pytest.raises(ConfigError, match="not a tvr-bench checkpoint"):
        read_weights(official, "f", "tvr-bench")
    with pytest.raises(ConfigError, match="neither a tvr-bench checkpoint nor an official state dict"):
        read_weights({"epoch": 3, "optimizer_state_dict": {}}, "f", "auto")  # CLIP4Clip's pytorch_opt.bin.N
    # through the CLI: a method with no official mapping, and the flag without a checkpoint
    torch.save(official, tmp_path / "o.bin")
    res = bench_eval("xpool", tmp_path / "o.bin", tmp_path / "x")
    assert res.exit_code == 2 and "no official name mapping for method 'xpool'" in res.output, res.output
    # the same file into a GELU backbone: refused, since the official CLIP is QuickGELU
    res = bench_eval("meanp", tmp_path / "o.bin", tmp_path / "x", backbone="backbone.name=tvr-tiny")
    assert res.exit_code == 2 and "uses QuickGELU" in res.output, res.output
    assert not (tmp_path / "x").exists() or not list((tmp_path / "x").glob("*.json"))
    res = CliRunner().invoke(main, ["eval", "--method", "meanp", "--dataset", "synthetic", "--checkpoint-format",
                                    "official", "--out", str(tmp_path / "x")])
    assert res.exit_code == 2 and "--checkpoint-format needs --checkpoint" in res.output


def test_a_shape_mismatch_names_the_official_key(tmp_path, cache_dir):
    method, cfg = smoke_method("xclip")
    frames = cfg["data"]["max_frames"]
    state = official_state(method, "xclip")
    state["module.frame_logit_weight"] = torch.eye(frames - 1)  # trained with another max_frames
    torch.save(state, tmp_path / "bad.bin")
    res = bench_eval("xclip", tmp_path / "bad.bin", tmp_path / "out")
    assert res.exit_code == 2, res.output
    lines = _error_lines(res.output)
    named = f"frame_logit_weight [{frames - 1}, {frames - 1}] vs [{frames}, {frames}]"
    assert len(lines) == 1 and named in lines[0], res.output
