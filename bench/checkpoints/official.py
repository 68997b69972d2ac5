"""Parameter names of checkpoints saved by the official code, mapped to tvr-bench's.

The official trainers save ``model.state_dict()`` of their model class (CLIP4Clip's main_task_retrieval.py
``save_model``, copied by X-CLIP and GLCCL), so a key is the attribute path in that class. A rule is
``(official, tvr-bench)``: a name ending in "." renames every key under it (the rest of the key is kept; the
blocks inside are CLIP residual blocks in both codes, ``attn.in_proj_weight``, ``ln_1``, ``mlp.c_fc``...), any
other name renames that one key. Keys no rule covers are unexpected; the loader names them.

Nothing in these state dicts is unused by the harness: CLIP4Clip's loss (``CrossEn``) has no buffers, and the
optimiser is saved to a separate file (``pytorch_opt.bin.N``). The wrapper entries in ``IGNORABLE_ENTRIES``,
which forks add around the weights, are the only things dropped, and the record lists them.
"""

from __future__ import annotations

from dataclasses import dataclass

Rule = tuple[str, str]

# CLIP4Clip's modules/module_clip.py ``CLIP`` is OpenAI's layout (visual.conv1, visual.transformer.resblocks.N,
# transformer.resblocks.N, token_embedding, text_projection, logit_scale ...), which open_clip keeps name for
# name; the model holds it as ``self.clip`` (modules/modeling.py, and X-CLIP's / GLCCL's modeling_*.py).
CLIP: list[Rule] = [("clip.", "backbone.clip.")]

# seqTransf in CLIP4Clip's modules/modeling.py: ``frame_position_embeddings`` (nn.Embedding) and
# ``transformerClip`` (modules/module_cross.py ``Transformer``: ``resblocks`` of ResidualAttentionBlock).
SEQ_TRANSF: list[Rule] = [
    ("frame_position_embeddings.", "temporal.frame_position_embeddings."),
    ("transformerClip.resblocks.", "temporal.blocks."),
]

# tightTransf in CLIP4Clip's modules/modeling.py: ``cross`` (module_cross.py ``CrossModel``: embeddings,
# transformer, pooler) and the model-level ``similarity_dense``.
CROSS: list[Rule] = [
    ("cross.embeddings.position_embeddings.", "cross.position_embeddings."),
    ("cross.transformer.resblocks.", "cross.blocks."),
    ("cross.pooler.ln_pool.", "cross.ln_pool."),
    ("cross.pooler.dense.", "cross.pool_dense."),
    ("similarity_dense.", "cross.similarity_dense."),
]

# X-CLIP's modules/modeling_xclip.py: the AOSM matrices are attributes of the model itself; tvr-bench keeps
# them, with the same names, in ``scores`` (methods/_multigrained.py MultiGrainedWeights).
XCLIP_MATRICES: list[Rule] = [(name, f"scores.{name}") for name in (
    "global_mat_weight", "local_mat_weight", "word_logit_weight", "frame_logit_weight",
    "word_mat_weight", "frame_mat_weight", "word_mat_weight2", "frame_mat_weight2")]

# GLCCL's modules/modeling_glccl.py renames X-CLIP's frame matrices (its fine axis holds word-guided features,
# so they are L x L): word_frame_logit_weight is the sentence-frame pool, word_frame_mat_weight and
# word_frame_mat_weight2 the frame-word pools over features; visual_logit_weight (F x F) serves an ablation only.
GLCCL_MATRICES: list[Rule] = [
    ("global_mat_weight", "scores.global_mat_weight"),
    ("local_mat_weight", "scores.local_mat_weight"),
    ("word_logit_weight", "scores.word_logit_weight"),
    ("word_frame_logit_weight", "scores.frame_logit_weight"),
    ("word_mat_weight", "scores.word_mat_weight"),
    ("word_frame_mat_weight", "scores.frame_mat_weight"),
    ("word_mat_weight2", "scores.word_mat_weight2"),
    ("word_frame_mat_weight2", "scores.frame_mat_weight2"),
    ("visual_logit_weight", "scores.visual_logit_weight"),
]

#: entries some saves put around the weights (epoch counters, optimiser state): not weights, dropped, recorded
IGNORABLE_ENTRIES = ("epoch", "global_step", "step", "loss", "optimizer", "optimizer_state_dict", "scheduler",
                     "lr_scheduler", "amp", "scaler")
#: where a wrapped save keeps the weights
WEIGHT_ENTRIES = ("state_dict", "model_state_dict", "model", "module")


@dataclass(frozen=True)
class Family:
    code: str  # the official repository whose naming this is
    rules: tuple[Rule, ...]


FAMILIES: dict[str, Family] = {
    "meanp": Family("CLIP4Clip (ArrowLuo/CLIP4Clip)", (*CLIP,)),
    "seqtransf": Family("CLIP4Clip (ArrowLuo/CLIP4Clip)", (*CLIP, *SEQ_TRANSF)),
    "tighttransf": Family("CLIP4Clip (ArrowLuo/CLIP4Clip)", (*CLIP, *CROSS)),
    "xclip": Family("X-CLIP (xuguohai/X-CLIP)", (*CLIP, *SEQ_TRANSF, *XCLIP_MATRICES)),
    "glccl": Family("GLCCL (JingXiaolun/GLCCL)", (*CLIP, *SEQ_TRANSF, *GLCCL_MATRICES)),
}


def _rename(key: str, rules: tuple[Rule, ...], src: int) -> str | None:
    for rule in rules:
        old, new = rule[src], rule[1 - src]
        if key == old or (old.endswith(".") and key.startswith(old)):
            return new + key[len(old):]
    return None


def to_tvr_bench(key: str, family: Family) -> str | None:
    """The tvr-bench name of an official key (None: no rule covers it)."""
    return _rename(key, family.rules, 0)


def to_official(key: str, family: Family) -> str | None:
    """The official name of a tvr-bench key (None: the official model has no such weight); names what is
    missing from a checkpoint in the names its user knows."""
    return _rename(key, family.rules, 1)
