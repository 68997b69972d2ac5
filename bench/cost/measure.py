"""Cost of a method, measured the same way for every method.

- Parameters: total, trainable, and the similarity head (modules outside the backbone that pool or score).
- FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` (FLOPs = 2·MAC; matmul-like ops only: mm, bmm,
  addmm, baddbmm, convolution, attention; softmax, norms and element-wise ops count 0). Query time =
  text encoding per query + gallery_size x scoring per (text, video) pair; video-side work per video is
  offline and reported apart. Per-pair scoring is counted on a (texts x videos) block and divided by its size.
- Memory: on CUDA the allocator's peak (``max_memory_allocated``) over the measured phase; on CPU the process
  peak resident set size (VmHWM, reset through /proc/self/clear_refs where Linux allows), labelled as such.
- Latency: ``torch.utils.benchmark.Timer`` for one query (text encoding + scoring against the cached gallery).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Callable

import torch
from torch.utils.benchmark import Timer
from torch.utils.flop_counter import FlopCounterMode

# torch 2.13's FlopCounterMode has no formula for the two attention ops CPU inference dispatches to, so it
# would count them as 0: ``_scaled_dot_product_flash_attention_for_cpu`` (QK^T and AV of every CLIP / seqTransf
# block) and ``_native_multi_head_attention`` (nn.MultiheadAttention's eval fast path: in-projection, attention
# and out-projection fused; the ViT image tower takes it, so a third of its FLOPs vanished). These are the
# standard matmul counts (2 x MAC), the ones torch registers for its CUDA attention kernels.


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    from torch.utils.flop_counter import sdpa_flop_count

    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _native_mha_flops(query_shape, key_shape, value_shape, embed_dim, num_heads, *args, out_shape=None,
                      **kwargs) -> int:
    b, lq, e = query_shape  # the fast path is batch-first
    lk = key_shape[1]
    projections = 2 * b * (lq + 2 * lk) * e * e + 2 * b * lq * e * e  # q, k, v in-projection; out-projection
    attention = 2 * b * lq * lk * e * 2  # scores and the weighted sum (all heads together)
    return projections + attention


ATTENTION_FLOP_FORMULAS = {
    torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops,
    torch.ops.aten._native_multi_head_attention: _native_mha_flops,
}

FLOP_CONVENTION = ("torch.utils.flop_counter.FlopCounterMode, FLOPs = 2*MAC, matmul-like ops only "
                   "(softmax/norm/element-wise = 0), plus formulas for the CPU attention ops "
                   "aten._scaled_dot_product_flash_attention_for_cpu and aten._native_multi_head_attention "
                   "(uncounted by FlopCounterMode in torch 2.13); per_query = text_per_query + gallery_size * "
                   "score_per_pair; video_per_video is offline")


def count_flops(fn: Callable[[], object]) -> int:
    with FlopCounterMode(display=False, custom_mapping=ATTENTION_FLOP_FORMULAS) as counter:
        with torch.no_grad():
            fn()
    return int(counter.get_total_flops())


def param_counts(method) -> dict[str, int]:
    params = list(method.parameters())
    head_ids = set()
    head = 0
    for module in method.head_modules():
        for p in module.parameters():
            if id(p) not in head_ids:
                head_ids.add(id(p))
                head += p.numel()
    return {
        "total": sum(p.numel() for p in params),
        "trainable": sum(p.numel() for p in params if p.requires_grad),
        "head": head,
    }


def dummy_tokens(n: int, length: int, eot_id: int, vocab: int = 49408, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Full-length token rows ending in [EOT]: FLOPs depend only on shapes."""
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(1, min(vocab, eot_id) - 2, (n, length), generator=g)
    tokens[:, 0] = eot_id - 1  # [SOT]
    tokens[:, -1] = eot_id
    return tokens, torch.ones(n, length, dtype=torch.long)


def dummy_frames(n: int, frames: int, image_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, frames, 3, image_size, image_size, generator=g), torch.ones(n, frames, dtype=torch.long)


@torch.no_grad()
def flop_profile(method, *, max_words: int, max_frames: int, gallery_size: int, block=(4, 8),
                 device="cpu") -> dict:
    bb = method.backbone
    eot = bb.tokenizer.eot_token_id
    size = bb.spec.image_size
    was = method.training
    method.eval()
    try:
        tok1, m1 = dummy_tokens(1, max_words, eot)
        text_q = count_flops(lambda: method.encode_text(tok1.to(device), m1.to(device)))
        fr1, vm1 = dummy_frames(1, max_frames, size)
        video_v = count_flops(lambda: method.encode_video(fr1.to(device), vm1.to(device)))
        bt, bv = block
        tok, tm = dummy_tokens(bt, max_words, eot, seed=1)
        fr, vm = dummy_frames(bv, max_frames, size, seed=1)
        text = method.encode_text(tok.to(device), tm.to(device))
        video = method.encode_video(fr.to(device), vm.to(device))
        score_block = count_flops(lambda: method.score(text, video))
    finally:
        method.train(was)
    per_pair = score_block / (bt * bv)
    return {
        "text_per_query": text_q,
        "score_per_pair": per_pair,
        "per_query": text_q + gallery_size * per_pair,
        "video_per_video": video_v,
        "gallery_size": gallery_size,
        "block": [bt, bv],
        "convention": FLOP_CONVENTION,
    }


# ---- memory -------------------------------------------------------------------------------------------

def _read_status(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def _reset_cpu_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


@dataclass
class MemoryMeter:
    device: torch.device
    peak_bytes: int = 0
    baseline_bytes: int = 0
    kind: str = ""
    reset_ok: bool = True

    @contextlib.contextmanager
    def measure(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self.baseline_bytes = torch.cuda.memory_allocated(self.device)
            self.kind = "cuda_allocated_peak"
            yield self
            torch.cuda.synchronize(self.device)
            self.peak_bytes = int(torch.cuda.max_memory_allocated(self.device))
            self.reserved_bytes = int(torch.cuda.max_memory_reserved(self.device))
        else:
            self.kind = "cpu_peak_rss"
            self.reset_ok = _reset_cpu_peak()
            self.baseline_bytes = _read_status("VmRSS") or 0
            if not self.reset_ok:  # fall back to the lifetime high-water mark
                import resource

                self.baseline_bytes = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            yield self
            peak = _read_status("VmHWM")
            if peak is None:
                import resource

                peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            self.peak_bytes = int(peak)

    def as_dict(self) -> dict:
        d = {"peak_bytes": self.peak_bytes, "kind": self.kind, "baseline_bytes": self.baseline_bytes,
             "phase": "test evaluation (gallery encoding + chunked scoring + ranking)"}
        if self.kind == "cpu_peak_rss":
            d["note"] = "process peak RSS (whole process, libraries included)" + (
                "" if self.reset_ok else "; lifetime high-water mark (VmHWM reset unavailable)")
        if hasattr(self, "reserved_bytes"):
            d["reserved_bytes"] = self.reserved_bytes
        return d


# ---- latency ------------------------------------------------------------------------------------------

@torch.no_grad()
def query_latency(method, video_state: dict, *, max_words: int, chunk_size: int, device, autocast,
                  min_run_time: float = 0.5) -> dict:
    """Median wall time of one query: encode the text, score it against the whole cached gallery (chunked)."""
    from tvr_bench.bench.evaluate import slice_state

    tok, tm = dummy_tokens(1, max_words, method.backbone.tokenizer.eot_token_id, seed=2)
    tok, tm = tok.to(device), tm.to(device)
    n_v = next(iter(video_state.values())).shape[0]
    was = method.training
    method.eval()

    def one_query():
        with autocast():
            text = method.encode_text(tok, tm)
            out = [method.score(text, slice_state(video_state, slice(s, s + chunk_size)))
                   for s in range(0, n_v, chunk_size)]
        return out

    try:
        one_query()  # warm-up
        m = Timer(stmt="f()", globals={"f": one_query}, num_threads=torch.get_num_threads()).blocked_autorange(
            min_run_time=min_run_time)
    finally:
        method.train(was)
    return {"median": m.median * 1e3, "iqr": m.iqr * 1e3, "n_runs": len(m.times) * m.number_per_run,
            "gallery_size": n_v, "chunk_size": chunk_size, "threads": torch.get_num_threads(),
            "what": "one query: text encoding + scoring against the cached gallery"}
