"""``bench pretrain``: contrastive pre-training of the tiny CLIP on the embedded world's image-caption corpus.

The embedded benchmark's equivalent of starting from pretrained CLIP: ``tvr-tiny`` (built by
:func:`~tvr_bench.bench.backbone.build_backbone`, random init under the seed) learns from the generated corpus of
``datasets/_pretrain_corpus.py`` (never a frame of a benchmark video) with open_clip's symmetric InfoNCE
(``open_clip.loss.ClipLoss``), AdamW and the harness's warm-up + cosine multiplier. Text goes through exactly the
harness's path: ``Backbone.token_ids`` checked against the benchmark's ``max_words`` (32), tokens padded to it,
the [EOT] feature of :meth:`Backbone.encode_text_tokens`. Images go through ``Backbone.encode_frames``' tower; a
two-image strip is pooled as meanP pools a video's frames (L2-normalised frames, mean, normalised again).

Deterministic: the seed fixes the initial weights, the corpus and the batch order, and the torch thread count is
fixed (``threads``, recorded), so the same command on the same machine writes the same bytes.

Output: the backbone's state dict as safetensors (fp16 by default: the 49408 x 64 token table is most of it),
written atomically, and a JSON manifest beside it (``<file>.json``) with the file's sha256 and everything the run
depended on. ``backbone.pretrained=embedded`` loads the file shipped in ``bench/weights/`` (bench/backbone.py).
"""

from __future__ import annotations

import json
import math
import platform
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from tvr_bench.bench import progress
from tvr_bench.bench.atomic import atomic_write_bytes, atomic_write_text
from tvr_bench.bench.digest import file_sha256
from tvr_bench.bench.errors import ConfigError

__all__ = ["PretrainSettings", "manifest_path", "run_pretrain", "sha256_file"]

BACKBONE = "tvr-tiny"
MAX_WORDS = 32  # the embedded benchmark's data.max_words
_DTYPES = {"fp16": torch.float16, "fp32": torch.float32}


@dataclass(frozen=True)
class PretrainSettings:
    seed: int = 0
    steps: int = 2000
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup: float = 0.05  # share of the steps
    threads: int = 2
    dtype: str = "fp16"  # of the written weights (training is fp32)
    n_items: int = 24000
    strip_rate: float = 0.4

    def check(self) -> "PretrainSettings":
        def need(ok: bool, message: str) -> None:
            if not ok:
                raise ConfigError(f"bench pretrain: {message}")

        need(self.n_items >= 1, f"--items must be >= 1, got {self.n_items}")
        need(0.0 <= self.strip_rate <= 1.0, f"--strip-rate must be in [0, 1], got {self.strip_rate}")
        need(self.steps >= 1, f"--steps must be >= 1, got {self.steps}")
        need(self.batch_size >= 2, f"--batch-size must be >= 2 (a contrastive batch needs negatives), "
                                   f"got {self.batch_size}")
        need(self.batch_size <= self.n_items, f"--batch-size {self.batch_size} exceeds the corpus "
                                              f"(--items {self.n_items})")
        need(math.isfinite(self.lr) and self.lr > 0, f"--lr must be > 0, got {self.lr}")
        need(math.isfinite(self.weight_decay) and self.weight_decay >= 0,
             f"--weight-decay must be >= 0, got {self.weight_decay}")
        need(0.0 <= self.warmup < 1.0, f"--warmup must be in [0, 1), got {self.warmup}")
        need(self.threads >= 1, f"--threads must be >= 1, got {self.threads}")
        need(self.dtype in _DTYPES, f"--dtype must be one of {', '.join(_DTYPES)}, got {self.dtype!r}")
        self.corpus_params().check()
        return self

    def corpus_params(self):
        from tvr_bench.datasets._pretrain_corpus import CorpusParams

        # the world's drawing at the embedded benchmark's defaults (frame size, event length, fps)
        return CorpusParams(seed=self.seed, n_items=self.n_items, strip_rate=self.strip_rate)


def manifest_path(weights: Path) -> Path:
    return weights.with_suffix(".json")


sha256_file = file_sha256

def _optimizer(clip: torch.nn.Module, s: PretrainSettings) -> torch.optim.AdamW:
    """open_clip's training rule: no decay for gains, biases, embeddings' 1-d parameters and the logit scale."""
    decay, no_decay = [], []
    for name, p in clip.named_parameters():
        exclude = p.ndim < 2 or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if exclude else decay).append(p)
    return torch.optim.AdamW([{"params": no_decay, "weight_decay": 0.0},
                              {"params": decay, "weight_decay": s.weight_decay}],
                             lr=s.lr, betas=(0.9, 0.98), eps=1e-6)


def _tokens(backbone, captions: list[str]) -> torch.Tensor:
    for text in captions:
        n = len(backbone.token_ids(text))
        if n > MAX_WORDS:  # the benchmark refuses such captions rather than truncating them; so does this
            raise ConfigError(f"bench pretrain: corpus caption has {n} tokens, more than max_words={MAX_WORDS}: "
                              f"{text!r}")
    return backbone.tokenize(captions, MAX_WORDS)


def _pooled_images(backbone, preprocessor, corpus, items: np.ndarray) -> torch.Tensor:
    """Normalised item embeddings [B, D]: each item's frames encoded, strips pooled like meanP pools frames."""
    spans = [(int(corpus.starts[k]), int(corpus.starts[k + 1])) for k in items]
    frames = np.concatenate([corpus.images[a:b] for a, b in spans])
    pixels, _ = preprocessor.to_clip(frames, len(frames))  # ToTensor + Normalize, as for decoded video frames
    feats = backbone.encode_frames(pixels.unsqueeze(0)).squeeze(0)
    feats = torch.nn.functional.normalize(feats, dim=-1)
    owner = torch.repeat_interleave(torch.arange(len(spans)), torch.tensor([b - a for a, b in spans]))
    pooled = torch.zeros(len(spans), feats.shape[1], dtype=feats.dtype).index_add_(0, owner, feats)
    return torch.nn.functional.normalize(pooled, dim=-1)


def run_pretrain(s: PretrainSettings, out: Path, *, command: list[str],
                 log: Callable[[str], None] = print) -> dict:
    """Train, write ``out`` (safetensors) and its manifest atomically; return the manifest."""
    s.check()
    out = Path(out)
    if out.suffix != ".safetensors":
        raise ConfigError(f"bench pretrain: --out must end in .safetensors, got {out}")
    if out.exists() and not out.is_file():
        raise ConfigError(f"bench pretrain: --out {out} exists and is not a file")

    from safetensors.torch import save as safetensors_bytes

    from tvr_bench.bench.backbone import build_backbone, import_open_clip
    from tvr_bench.bench.data.frame_cache import Preprocessor
    from tvr_bench.bench.optim import warmup_cosine
    from tvr_bench.bench.train import seed_everything
    from tvr_bench.datasets._pretrain_corpus import build_corpus

    open_clip = import_open_clip()
    from open_clip.loss import ClipLoss

    threads_before = torch.get_num_threads()
    torch.set_num_threads(s.threads)
    t0 = time.perf_counter()
    try:
        seed_everything(s.seed)
        backbone = build_backbone(BACKBONE, None, log=log)
        preprocessor = Preprocessor(backbone.preprocess)
        cp = s.corpus_params()
        with progress.bar(cp.n_items, "pretrain corpus", "item") as pbar:
            corpus = build_corpus(cp, preprocessor, progress=pbar)
        tokens = _tokens(backbone, corpus.captions)
        t_corpus = time.perf_counter() - t0
        log(f"  corpus: {len(corpus)} items, {len(corpus.images)} images ({corpus.fingerprint()[:12]}), "
            f"{t_corpus:.0f} s")

        clip = backbone.clip
        clip.train()
        optimizer = _optimizer(clip, s)
        # the harness's multiplier, per step; warm-up from lr/warmup_steps (not 0, which would waste a step)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine((step + 1) / s.steps, s.warmup))
        loss_fn = ClipLoss()
        order_gen = torch.Generator().manual_seed(s.seed)
        order: list[int] = []
        losses: list[float] = []
        with progress.bar(s.steps, "pretrain", "step") as pbar:
            for step in range(s.steps):
                if len(order) < s.batch_size:  # a new pass over the corpus; a short tail is carried over
                    order += torch.randperm(len(corpus), generator=order_gen).tolist()
                batch, order = np.asarray(order[:s.batch_size]), order[s.batch_size:]
                images = _pooled_images(backbone, preprocessor, corpus, batch)
                # the padding after the batch's longest caption is cut: under the causal mask no position
                # sees a later one, so the [EOT] features are those of the full 32-token context, for less work
                batch_tokens = tokens[batch]
                batch_tokens = batch_tokens[:, :int((batch_tokens != 0).sum(1).max())]
                texts = torch.nn.functional.normalize(backbone.encode_text_tokens(batch_tokens)[0], dim=-1)
                loss = loss_fn(images, texts, backbone.logit_scale())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                backbone.clamp_logit_scale()
                losses.append(float(loss.detach()))
                pbar.set_postfix(loss=f"{losses[-1]:.3f}")
                pbar.update(1)
        seconds = time.perf_counter() - t0

        dtype = _DTYPES[s.dtype]
        state = {k: v.detach().to(dtype if v.is_floating_point() else v.dtype).contiguous()
                 for k, v in clip.state_dict().items()}
        # one metadata entry: safetensors writes several in hash-map order, which differs between runs and
        # would make the same weights different bytes
        about = json.dumps({"backbone": BACKBONE, "seed": s.seed, "steps": s.steps}, sort_keys=True)
        atomic_write_bytes(out, safetensors_bytes(state, metadata={"tvr_bench": about}), point="pretrain_weights")
        tail = losses[-min(50, len(losses)):]
        manifest = {
            "weights": out.name,
            "sha256": sha256_file(out),
            "bytes": out.stat().st_size,
            "backbone": BACKBONE,
            "dtype": s.dtype,
            "command": command,
            "settings": asdict(s),
            "corpus": {**cp.as_dict(), "fingerprint": corpus.fingerprint(), "images": int(len(corpus.images))},
            "max_words": MAX_WORDS,
            "loss": {"first": losses[0], "final": losses[-1], "final_mean_last_50": sum(tail) / len(tail),
                     "every_10": [round(x, 4) for x in losses[::10]]},
            "logit_scale": float(backbone.logit_scale().detach()),
            "wall_seconds": {"corpus": round(t_corpus, 1), "total": round(seconds, 1)},
            "threads": s.threads,
            "versions": {"torch": torch.__version__, "open_clip": open_clip.__version__,
                         "numpy": np.__version__, "python": platform.python_version()},
            "machine": platform.machine(),
        }
        atomic_write_text(manifest_path(out), json.dumps(manifest, indent=1) + "\n", point="pretrain_manifest")
        return manifest
    finally:
        torch.set_num_threads(threads_before)
