"""Reading ``eval.checkpoint``: a tvr-bench checkpoint, or a state dict saved by a method's official code.

``eval.checkpoint_format`` (``bench eval --checkpoint-format``): ``tvr-bench`` (a ``best.pt``/``last.pt``: a dict
with ``model`` and ``config_hash``), ``official`` (a bare state dict, as the official trainers save it, or one
wrapped under ``state_dict``/``model``...), or ``auto`` (the default: the first when it has tvr-bench's entries,
else the second). Official names are mapped by ``official.py``; a ``module.`` prefix (a DataParallel/DDP save)
is dropped; every tensor is cast to the dtype of the weight it fills (the official CLIP weights are fp16).
A key the file lacks, one it has that the method does not, or a shape that differs is one ConfigError listing
them, before anything is evaluated.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from tvr_bench.bench.checkpoints.official import (FAMILIES, IGNORABLE_ENTRIES, WEIGHT_ENTRIES, to_official,
                                                  to_tvr_bench)
from tvr_bench.bench.errors import ConfigError

FORMATS = ("auto", "tvr-bench", "official")
EVAL_ADVICE = "point eval.checkpoint (bench eval --checkpoint) at a best.pt or last.pt that tvr-bench wrote"


def few(keys, n: int = 3) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:n]) + (f" (+{len(keys) - n} more)" if len(keys) > n else "") if keys else "none"


def is_tvr_bench(ck) -> bool:
    return isinstance(ck, dict) and isinstance(ck.get("model"), dict) and "config_hash" in ck


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


@dataclass
class Weights:
    """What a checkpoint file holds for the model, and how it was read."""
    state: dict[str, torch.Tensor]
    format: str  # "tvr-bench" or "official"
    ignored: list[str] = field(default_factory=list)  # wrapper entries dropped (official.IGNORABLE_ENTRIES)
    epoch: int | None = None
    config_hash: str | None = None


def read_weights(ck, path: str | Path, fmt: str = "auto") -> Weights:
    """The weights in an already loaded checkpoint ``ck``; ``fmt`` as ``eval.checkpoint_format``."""
    if fmt not in FORMATS:
        raise ConfigError(f"eval.checkpoint_format={fmt!r}: expected one of {', '.join(FORMATS)}")
    if fmt == "tvr-bench" or (fmt == "auto" and is_tvr_bench(ck)):
        if not isinstance(ck, dict) or not isinstance(ck.get("model"), dict):
            raise ConfigError(f"eval.checkpoint: {path} is not a tvr-bench checkpoint (no model entry); "
                              f"{EVAL_ADVICE}, or give --checkpoint-format official for an official save")
        return Weights(ck["model"], "tvr-bench", epoch=ck.get("epoch"), config_hash=ck.get("config_hash"))
    if is_tvr_bench(ck):
        raise ConfigError(f"eval.checkpoint: {path} is a tvr-bench checkpoint, not an official one; use "
                          "--checkpoint-format tvr-bench (or auto)")
    if _is_state_dict(ck):
        return Weights(_strip_module(ck), "official")
    if isinstance(ck, dict):
        holders = [k for k in WEIGHT_ENTRIES if _is_state_dict(ck.get(k))]
        if holders:
            other = [k for k in ck if k != holders[0]]
            unknown = [k for k in other if k not in IGNORABLE_ENTRIES]
            if unknown:
                raise ConfigError(f"eval.checkpoint: {path} holds entries besides its weights ('{holders[0]}') that "
                                  f"are not known to be ignorable: {few(map(str, unknown))}")
            return Weights(_strip_module(ck[holders[0]]), "official", ignored=sorted(other))
    what = f"entries: {few(map(str, ck))}" if isinstance(ck, dict) else type(ck).__name__
    raise ConfigError(f"eval.checkpoint: {path} is neither a tvr-bench checkpoint nor an official state dict of "
                      f"tensors ({what}); {EVAL_ADVICE}")


def _strip_module(sd: dict) -> dict:
    """Keys without the ``module.`` that DataParallel / DistributedDataParallel saves put in front."""
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in sd.items()}


def official_to_native(weights: Weights, method_name: str, own: dict, path) -> dict[str, torch.Tensor]:
    """Rename an official state dict to ``own``'s (the method's state dict) names; mismatches in one error."""
    family = FAMILIES.get(method_name)
    if family is None:
        raise ConfigError(f"eval.checkpoint: no official name mapping for method {method_name!r} (mapped: "
                          f"{', '.join(FAMILIES)}); evaluate a tvr-bench checkpoint instead")
    native, unexpected = {}, []
    for key, value in weights.state.items():
        name = to_tvr_bench(key, family)
        if name is None or name not in own:
            unexpected.append(key)
        else:
            native[name] = value
    missing = [to_official(k, family) or f"{k} (tvr-bench name)" for k in own if k not in native]
    if missing or unexpected:
        raise ConfigError(f"eval.checkpoint: {path} does not fit {method_name} in {family.code} naming "
                          f"(missing: {few(missing)}; unexpected: {few(unexpected)})")
    return native


def load_weights(method: nn.Module, method_name: str, weights: Weights, path) -> None:
    """Load ``weights`` into ``method`` strictly, each tensor cast to the dtype of the weight it fills."""
    own = method.state_dict()
    family = FAMILIES.get(method_name)
    official = weights.format == "official"
    label = (lambda k: to_official(k, family) or k) if official else (lambda k: k)  # the file's names
    if official:
        state = official_to_native(weights, method_name, own, path)
        if not method.backbone.spec.quick_gelu:  # a GELU backbone would score these weights wrongly, silently
            raise ConfigError(f"eval.checkpoint: {path} was saved by the official code, whose CLIP uses QuickGELU "
                              f"(CLIP4Clip's module_clip.py); backbone {method.backbone.spec.name} is built with "
                              "GELU: choose its -quickgelu twin (e.g. backbone.name=ViT-B-32-quickgelu)")
    else:
        state = weights.state
        missing, unexpected = own.keys() - state.keys(), state.keys() - own.keys()
        if missing or unexpected:
            raise ConfigError(f"eval.checkpoint: {path} was not written for this method and config "
                              f"(missing: {few(missing)}; unexpected: {few(unexpected)})")
    shapes = [k for k in own if tuple(state[k].shape) != tuple(own[k].shape)]
    if shapes:
        show = [f"{label(k)} {list(state[k].shape)} vs {list(own[k].shape)}" for k in sorted(shapes)[:3]]
        more = f" (+{len(shapes) - 3} more)" if len(shapes) > 3 else ""
        raise ConfigError(f"eval.checkpoint: {path} does not fit this method and config (shape in the file vs the "
                          f"model: {'; '.join(show)}{more}; another backbone, max_frames or max_words?)")
    method.load_state_dict({k: v.to(own[k].dtype) for k, v in state.items()})
