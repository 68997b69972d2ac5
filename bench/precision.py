"""``train.precision``: how a run computes, in training and in evaluation.

- ``fp32``: everything in fp32.
- ``amp``: fp16 autocast + GradScaler (CUDA only); the weights stay fp32.
- ``fp16-clip``: the official recipe of the CLIP4Clip lineage (CLIP4Clip, X-CLIP, GLCCL, ...). CLIP4Clip's
  ``modules/module_clip.py`` ``convert_weights`` casts CLIP's Conv/Linear weights and biases, the attention
  in-projections and the ``text_projection`` / visual ``proj`` matrices to fp16, and the model trains that way:
  no autocast, no loss scaling, no fp32 master copy (the optimiser updates the fp16 tensors). LayerNorms keep
  fp32 weights and compute in fp32 (its ``LayerNorm`` casts the input up and the output back); embeddings and
  the logit scale stay fp32; every module outside CLIP (temporal transformers, score matrices, cross encoders)
  stays fp32 and receives CLIP's outputs cast to fp32.
- ``auto``: ``amp`` on CUDA, ``fp32`` elsewhere (the shared recipe's default).

``--preset official`` asks for ``fp16-clip`` on CUDA. On a CPU it keeps ``fp32``: fp16 is the official setting
on GPUs, and half-precision CPU kernels are slower than fp32 ones, so nothing would be gained by it. An explicit
``train.precision=fp16-clip`` on a CPU is honoured (torch has half matmul and convolution on CPU; the tests
train a step that way).
"""

from __future__ import annotations

import contextlib
from typing import Callable

import torch
from torch import nn

PRECISIONS = ("auto", "fp32", "amp", "fp16-clip")


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """The precision a run uses: ``auto`` made concrete for ``device`` (``fp32``, ``amp`` or ``fp16-clip``)."""
    if precision == "auto":
        return "amp" if torch.device(device).type == "cuda" else "fp32"
    return precision


def official_precision(device: torch.device | str) -> str:
    """What ``--preset official`` sets ``train.precision`` to on ``device`` (see the module docstring)."""
    return "fp16-clip" if str(device).startswith("cuda") else "fp32"


def autocast_factory(device: torch.device, precision: str) -> tuple[Callable, bool]:
    """(context manager for the forward passes, whether a GradScaler is used)."""
    used = resolve_precision(precision, device)
    if used == "amp":
        if device.type != "cuda":
            raise ValueError("train.precision=amp needs a CUDA device")
        return (lambda: torch.autocast("cuda", dtype=torch.float16)), True
    return contextlib.nullcontext, False  # fp32, and fp16-clip (its fp16 is in the weights themselves)


class _LayerNormFp32(nn.LayerNorm):
    """A LayerNorm that computes in fp32 whatever its input and returns the input's dtype, as the LayerNorm of
    CLIP4Clip's module_clip.py does; its weights stay fp32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).to(x.dtype)


def _half(t: torch.Tensor | None) -> None:
    if t is not None:
        t.data = t.data.half()


def convert_clip_to_fp16(clip: nn.Module) -> None:
    """Cast ``clip`` (the open_clip model) in place as CLIP4Clip's ``convert_weights`` does; LayerNorms are made
    to compute in fp32. Only ``clip`` is touched: a method's own modules, even those initialised from CLIP's
    blocks, are separate copies and stay fp32."""
    for module in clip.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)):  # attention out_proj is a Linear
            _half(module.weight)
            _half(module.bias)
        if isinstance(module, nn.MultiheadAttention):
            for name in ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight", "in_proj_bias",
                         "bias_k", "bias_v"):
                _half(getattr(module, name, None))
        for name in ("text_projection", "proj"):
            attr = getattr(module, name, None)
            if isinstance(attr, torch.Tensor):
                _half(attr)
        if isinstance(module, nn.LayerNorm) and not isinstance(module, _LayerNormFp32):
            module.__class__ = _LayerNormFp32  # same parameters; only the forward differs


def apply_precision(method: nn.Module, used: str) -> None:
    """Put ``method`` in the weight precision ``used`` asks for (only ``fp16-clip`` changes weights)."""
    if used == "fp16-clip":
        convert_clip_to_fp16(method.backbone.clip)

