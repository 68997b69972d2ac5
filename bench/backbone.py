"""The CLIP backbone, always built through open_clip.

``build_backbone(name, pretrained)`` takes any open_clip model name with a pretrained tag (``openai``,
``laion2b_s34b_b79k``...), a local checkpoint path, or nothing (random init). The project's tiny configs
(``tvr-tiny``, ``tvr-small`` in ``model_configs/``) are registered with open_clip so tests and the embedded
benchmark never need downloaded weights. ``pretrained=embedded`` is the project's own tag: ``tvr-tiny`` weights
made by ``bench pretrain`` and shipped in ``weights/``, checked against their manifest's sha256 when loaded.

The text tower is run by :meth:`Backbone.encode_text_tokens`, which returns the projected hidden state at
*every* position (CLIP4Clip/X-CLIP/GLCCL need word features, open_clip's ``encode_text`` returns only the
pooled [EOT] feature). It truncates CLIP's positional table and causal mask to the protocol's ``max_words``
as the CLIP4Clip lineage does.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from tvr_bench.bench.digest import file_sha256
from tvr_bench.bench.errors import ConfigError, did_you_mean

MODEL_CONFIG_DIR = Path(__file__).with_name("model_configs")
WEIGHTS_DIR = Path(__file__).with_name("weights")
#: the project's own pretrained tags: tag -> (the model they fit, the safetensors file in WEIGHTS_DIR, which
#: has its manifest ``<file>.json`` beside it; bench/pretrain.py writes both)
SHIPPED_WEIGHTS = {"embedded": ("tvr-tiny", "tvr-tiny-embedded.safetensors")}
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
    quick_gelu: bool = False  # activation actually built (OpenAI CLIP weights need QuickGELU)


@dataclass(frozen=True)
class Architecture:
    """What a method's options are checked against before anything is built: read from the open_clip model
    config (no weights, no model), so a bad ``method.temporal_layers`` fails at config time, not after data."""
    name: str
    embed_dim: int
    text_width: int
    text_layers: int
    text_context: int
    vision_layers: int


def known_model(name: str):
    """open_clip, after checking ``name`` is one of its models (did-you-mean on a typo)."""
    open_clip = import_open_clip()
    available = open_clip.list_models()
    if name not in available:
        hint = did_you_mean(name, available, cutoff=0.6)
        raise ConfigError(f"unknown open_clip model {name!r} (backbone.name).{hint}")
    return open_clip


def architecture(name: str) -> Architecture:
    cfg = known_model(name).get_model_config(name) or {}
    text, vision = cfg.get("text_cfg", {}), cfg.get("vision_cfg", {})
    vision_layers = vision.get("layers", 12)
    if not isinstance(vision_layers, int):  # ResNet towers give a per-stage list; no transformer blocks
        vision_layers = 0
    return Architecture(name=name, embed_dim=int(cfg.get("embed_dim", 512)), text_width=int(text.get("width", 512)),
                        text_layers=int(text.get("layers", 12)), text_context=int(text.get("context_length", 77)),
                        vision_layers=int(vision_layers))


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

    @property
    def architecture(self) -> Architecture:
        """The built model's :class:`Architecture` (the same numbers :func:`architecture` reads from a config)."""
        vision = getattr(self.clip.visual, "transformer", None)
        return Architecture(name=self.spec.name, embed_dim=self.embed_dim, text_width=self.spec.text_width,
                            text_layers=len(self.text_blocks()), text_context=self.spec.text_context,
                            vision_layers=len(vision.resblocks) if vision is not None else 0)

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
        # in the inputs' dtype of the patch convolution: fp16 under train.precision=fp16-clip, as the official
        # encode_image casts the image to the model's dtype
        frames = frames.to(self.clip.visual.conv1.weight.dtype)
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


# Keys OpenAI's released (TorchScript) CLIP checkpoints carry besides the weights; open_clip's own
# checkpoints never have them, so they mark a state dict saved from OpenAI's CLIP.
OPENAI_META_KEYS = ("input_resolution", "context_length", "vocab_size")


def shipped_weights(pretrained: str, name: str | None = None) -> str:
    """The verified path of a shipped tag's file: present, and its sha256 the one its manifest records
    (the manifest travels with the file, so a damaged, replaced or half-updated file is one line, not odd
    accuracy). ``name``, when given, must be the model the weights fit."""
    import json

    model, filename = SHIPPED_WEIGHTS[pretrained]
    if name is not None and name != model:
        raise ConfigError(f"backbone.pretrained={pretrained} holds {model} weights, not {name} ones "
                          f"(set backbone.name={model}, or backbone.pretrained=none for a random init)")
    path = WEIGHTS_DIR / filename
    manifest = path.with_suffix(".json")
    try:
        expected = json.loads(manifest.read_text(encoding="utf-8"))["sha256"]
        digest = file_sha256(path)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"backbone.pretrained={pretrained}: cannot read {path} and its manifest "
                          f"{manifest.name} ({type(exc).__name__}: {exc})") from None
    if digest != expected:
        raise ConfigError(f"backbone.pretrained={pretrained}: {path} has sha256 {digest[:16]}..., its manifest "
                          f"{manifest.name} records {str(expected)[:16]}... (damaged or replaced: restore both "
                          f"files, or rewrite them with `bench pretrain --out {path}`)")
    return str(path)


def pretrained_sha256(pretrained: str | None) -> str | None:
    """sha256 of the file behind ``backbone.pretrained`` (a shipped tag's verified file, or a local checkpoint);
    None for random init and for open_clip's own tags (named, versioned downloads). Recorded with every run, so a
    record made with other weights under the same setting is never taken for this run's (bench/run_plan.py)."""

    pretrained = _resolve_pretrained(pretrained)
    if pretrained is None:
        return None
    if pretrained in SHIPPED_WEIGHTS:
        path = shipped_weights(pretrained)
    elif _is_local(pretrained):
        path = pretrained
    else:
        return None
    return file_sha256(path)


def _is_local(pretrained: str) -> bool:
    return "/" in pretrained or pretrained.endswith((".pt", ".pth", ".bin", ".safetensors"))


def check_pretrained_file(pretrained: str | None) -> None:
    """A local ``backbone.pretrained`` file is checked when the command starts, cheaply (the header of a
    safetensors file; a memory-mapped, weights-only read of a PyTorch file): one line naming it, not a
    traceback after the data is loaded. Tags are checked by :func:`build_backbone`."""
    pretrained = _resolve_pretrained(pretrained)
    if pretrained in SHIPPED_WEIGHTS:
        shipped_weights(pretrained)
        return
    if pretrained is None or not _is_local(pretrained):
        return
    import zipfile

    path = Path(pretrained)
    if not path.is_file():
        raise ConfigError(f"backbone.pretrained: checkpoint file not found: {pretrained}")
    if pretrained.endswith(".safetensors"):
        try:
            from safetensors import safe_open

            with safe_open(pretrained, framework="pt"):
                return
        except Exception as exc:
            raise ConfigError(f"backbone.pretrained: {pretrained} is not a readable safetensors file "
                              f"({(str(exc).splitlines() or [type(exc).__name__])[0][:120]})") from None
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as zf:
            if any(n.endswith("/constants.pkl") for n in zf.namelist()):
                return  # a TorchScript archive (OpenAI's released CLIP files): loaded by torch.jit later
        from tvr_bench.bench.train import checkpoint_read_problem

        try:
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            return
        except Exception as exc:
            raise ConfigError(f"backbone.pretrained: cannot read checkpoint {pretrained} "
                              f"({checkpoint_read_problem(path, exc)})") from None
    if path.stat().st_size == 0:
        raise ConfigError(f"backbone.pretrained: {pretrained} is empty")
    with open(path, "rb") as fh:
        if fh.read(1) != b"\x80":  # the legacy (pre-zip) torch.save format starts with a pickle opcode
            raise ConfigError(f"backbone.pretrained: {pretrained} is not a PyTorch, TorchScript or safetensors "
                              "checkpoint")


def _read_state_dict(path: str) -> tuple[dict, bool]:
    """Load a local checkpoint -> (state dict without meta keys or ``module.`` prefix, is OpenAI format)."""
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path), False
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # OpenAI's released .pt files are TorchScript archives
        try:
            obj = torch.jit.load(path, map_location="cpu").state_dict()
        except Exception as exc:
            raise ConfigError(f"backbone.pretrained: cannot read checkpoint {path}: {exc}") from exc
        obj = dict(obj, input_resolution=None)  # a TorchScript CLIP is OpenAI's
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise ConfigError(f"backbone.pretrained: {path} holds no state dict")
    is_openai = any(k in obj for k in OPENAI_META_KEYS)
    sd = {(k[7:] if k.startswith("module.") else k): v for k, v in obj.items() if k not in OPENAI_META_KEYS}
    return sd, is_openai


def _weights_quick_gelu(open_clip, name: str, pretrained: str | None, local_sd: dict | None,
                        local_openai: bool) -> bool | None:
    """The activation the weights were trained with: True (QuickGELU), False (GELU), None (not known)."""
    if pretrained is None:
        return None
    if local_sd is not None:
        return True if local_openai else None
    return bool(open_clip.get_pretrained_cfg(name, pretrained).get("quick_gelu", False))


def build_backbone(name: str, pretrained: str | None = None, *, device: str | torch.device = "cpu",
                   quick_gelu: bool | None = None, log: Callable[[str], None] = print) -> Backbone:
    """Build an open_clip backbone: ``pretrained`` is None (random init), an open_clip tag or a local file.

    ``quick_gelu`` None builds the activation the weights were trained with: OpenAI's CLIP (tag ``openai``,
    or a local OpenAI checkpoint) uses QuickGELU although open_clip's ``ViT-B-32`` config uses exact GELU,
    and open_clip would only warn about the mismatch. True/False forces it; a forced value that contradicts
    the weights is refused.
    """
    open_clip = known_model(name)
    pretrained = _resolve_pretrained(pretrained)
    local_sd, local_openai = None, False
    if pretrained in SHIPPED_WEIGHTS:
        local_sd, local_openai = _read_state_dict(shipped_weights(pretrained, name))
    elif pretrained is not None and _is_local(pretrained):
        check_pretrained_file(pretrained)
        local_sd, local_openai = _read_state_dict(pretrained)
    else:
        tags = open_clip.list_pretrained_tags_by_model(name)
        if pretrained is not None and pretrained not in tags:
            raise ConfigError(
                f"backbone.pretrained={pretrained!r} is not a pretrained tag of {name!r} "
                f"(tags: {', '.join(tags) or 'none'}) nor an existing checkpoint file"
            )
    cfg = open_clip.get_model_config(name) or {}
    config_qg = bool(cfg.get("quick_gelu", False))
    weights_qg = _weights_quick_gelu(open_clip, name, pretrained, local_sd, local_openai)
    if quick_gelu is not None and weights_qg is not None and quick_gelu != weights_qg:
        raise ConfigError(
            f"backbone.quick_gelu={quick_gelu} contradicts the weights {pretrained!r}, trained with "
            f"{'QuickGELU' if weights_qg else 'GELU'}; leave backbone.quick_gelu unset to build the right one"
        )
    use_qg = quick_gelu if quick_gelu is not None else (weights_qg if weights_qg is not None else config_qg)
    if use_qg != config_qg:
        log(f"  backbone: {name} with {pretrained!r} built with {'QuickGELU' if use_qg else 'GELU'} "
            f"(the weights' activation; open_clip's {name} config uses {'QuickGELU' if config_qg else 'GELU'})")
    try:
        with _quiet_random_init_warning(local_sd is not None):
            clip, _, preprocess = open_clip.create_model_and_transforms(
                name, pretrained=None if local_sd is not None else pretrained, device=device, force_quick_gelu=use_qg)
    except RuntimeError as exc:  # download failures surface as RuntimeError in open_clip
        raise ConfigError(f"could not load backbone {name!r} with pretrained={pretrained!r}: {exc}") from exc
    if not use_qg and config_qg:  # force_quick_gelu can only switch it on
        raise ConfigError(f"backbone.quick_gelu=False: {name!r} is a QuickGELU config; pick its GELU twin")
    if local_sd is not None:
        _load_local(clip, local_sd, pretrained)
        clip.to(device)
    tokenizer = open_clip.get_tokenizer(name)
    spec = BackboneSpec(
        name=name,
        pretrained=pretrained,
        embed_dim=int(cfg.get("embed_dim", clip.text_projection.shape[-1])),
        image_size=int(cfg.get("vision_cfg", {}).get("image_size", 224)),
        text_context=int(clip.positional_embedding.shape[0]),
        text_width=int(clip.transformer.width),
        vision_width=int(cfg.get("vision_cfg", {}).get("width", 0)),
        quick_gelu=bool(use_qg),
    )
    return Backbone(clip, preprocess, tokenizer, spec)


class _DropRandomInitWarning(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "No pretrained weights loaded" not in record.getMessage()


@contextlib.contextmanager
def _quiet_random_init_warning(active: bool):
    """open_clip warns "No pretrained weights loaded ... initialized randomly" whenever it builds without a tag;
    with a local or shipped file loaded right after, that line would be false, so it is dropped then."""
    if not active:
        yield
        return
    flt = _DropRandomInitWarning()
    root = logging.getLogger()
    root.addFilter(flt)
    try:
        yield
    finally:
        root.removeFilter(flt)


def _load_local(clip: nn.Module, sd: dict, path: str) -> None:
    """Strict load of a local checkpoint; a shape or key mismatch is one error naming the keys."""
    own = clip.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = sorted(k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
    if missing or unexpected or shapes:
        parts = [f"{label}: {', '.join(keys[:8])}{' ...' if len(keys) > 8 else ''}" for label, keys in
                 (("missing", missing), ("unexpected", unexpected), ("shape mismatch", shapes)) if keys]
        raise ConfigError(f"backbone.pretrained {path} does not fit the backbone: {'; '.join(parts)}")
    clip.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()})
