"""Per method: batched scoring against its loop-based spec transcription, at MSR-VTT paper shapes (`make benchmark`).

The transcriptions are the ones the unit tests prove the methods against (tests/test_*_spec.py: Python loops over
texts, videos, words, frames and often channels, sharing no batching code with the methods). Here they run at the
ViT-B/32 MSR-VTT shapes (D = 512, L = 32 words, F = 12 frames; random weights, random inputs, padded captions
and videos). Both sides start from the same inputs and end in the same score matrix: the sentence / word features
and the video features after the offline video encoder (the seqTransf output Z~, or TS2-Net's selected frames),
so the per-query text-side work, any per-video work after that encoder, and all per-pair work are on both sides.

- like for like: the transcription (fp64) and the batched method (fp32) on the same k x k block, k as large as
  the transcription's measured 1 x 1 time allows within ``SPEC_BUDGET_S`` -> pairs/s of each, the speed-up;
- the 1,000 x 1,000 MSR-VTT test matrix: the batched method's time as the harness evaluates it (the 1,000 query
  states once, then the gallery in chunks): measured whole when it fits ``BATCHED_TARGET_S``, else the query states
  plus 1,000 / n times the median of three n-video chunks against all queries; the transcription's projected
  linearly from its k x k block (an upper bound: it counts per-query and per-video work once per k pairs, not
  once per 1,000);
- same outputs: the method run in fp64 on the transcription's block equals it to 1e-7 relative, and the fp32
  batched scores equal it to 1e-3 of the score range.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (shared 2-core machine)

import copy  # noqa: E402
import functools  # noqa: E402
import math  # noqa: E402
import importlib.util  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from tvr_bench.bench.cost.efficiency import paper_shapes  # noqa: E402
from tvr_bench.bench.registry import METHODS  # noqa: E402

SHAPE = paper_shapes()["msrvtt"]
L, F = SHAPE.max_words, SHAPE.max_frames
N_QUERIES = N_GALLERY = 1000  # the MSR-VTT 1k-A test matrix
BATCHED_TARGET_S = 1.5
SPEC_BUDGET_S = 6.0
MAX_K = 32
TESTS = Path(__file__).resolve().parents[1] / "tests"


@functools.lru_cache(maxsize=None)
def spec_module(name: str):
    """tests/test_<name>_spec.py as a private module: the very transcriptions the unit tests use."""
    path = TESTS / f"test_{name}_spec.py"
    spec = importlib.util.spec_from_file_location(f"tvr_bench_spec_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@dataclass
class Inputs:
    t: torch.Tensor  # [N_t, D] sentence features
    W: torch.Tensor  # [N_t, L, D] word features
    Z: torch.Tensor  # [N_v, F, D] frame features
    Zt: torch.Tensor  # [N_v, F, D] temporally encoded frames (X-CLIP's Z~, given)
    tmask: torch.Tensor  # [N_t, L]
    vmask: torch.Tensor  # [N_v, F]

    def block(self, n_t: int, n_v: int, dtype=None) -> "Inputs":
        cast = (lambda x: x.to(dtype)) if dtype is not None else (lambda x: x)
        return Inputs(cast(self.t[:n_t]), cast(self.W[:n_t]), cast(self.Z[:n_v]), cast(self.Zt[:n_v]),
                      self.tmask[:n_t], self.vmask[:n_v])


def make_inputs(n_t: int, n_v: int, D: int, seed: int = 0) -> Inputs:
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: 0.3 * torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    tmask = torch.zeros(n_t, L, dtype=torch.long)
    for i in range(n_t):  # MSR-VTT captions are short: [SOT] + 6..16 words + [EOT], padded to 32
        tmask[i, : 8 + (5 * i) % 11] = 1
    vmask = torch.ones(n_v, F, dtype=torch.long)
    vmask[1::3, 7:] = 0  # every third video is shorter than 12 sampled frames
    return Inputs(r(n_t, D), r(n_t, L, D), r(n_v, F, D), r(n_v, F, D), tmask, vmask)


class _Identity(torch.nn.Module):
    def forward(self, z, mask):
        return z


def _text(m, x: Inputs, words: bool, mask=None):
    """The method's own text-side work on given features (the text tower is not what is compared)."""
    m.backbone.encode_text_tokens = lambda tokens: (x.t, x.W if words else None)
    n = x.t.shape[0]
    return m.encode_text(torch.zeros(n, L, dtype=torch.long), x.tmask if mask is None else mask)


# ---- one adapter per method: prepare (non-trivial weights), batched, transcription -------------------------

class Case:
    spec = ""

    def prepare(self, m, mod) -> None:
        pass

    def text(self, m, x: Inputs) -> dict:
        """The method's per-query work on the given text features (the text tower is not what is compared)."""
        return _text(m, x, False)

    def video(self, m, x: Inputs) -> dict:
        """The method's per-video work after the offline video encoder."""
        return m.video_from_frames(x.Z, x.vmask)

    def batched(self, m, x: Inputs) -> torch.Tensor:
        return m.score(self.text(m, x), self.video(m, x))

    def reference(self, m64, x: Inputs, mod) -> torch.Tensor:
        raise NotImplementedError


class MeanP(Case):
    spec = "two_tower"

    def prepare(self, m, mod):
        if getattr(m, "temporal", None) is not None:
            m.temporal = _Identity()  # Z~ given: the seqTransf is offline per-video work (tested on its own)

    def reference(self, m64, x, mod):
        return mod.reference_loose(x.t, x.Z, x.vmask, m64.backbone.logit_scale().item())


class SeqTransf(MeanP):
    """At query time seqTransf is meanP's score on Z~."""


class TextPool(MeanP):
    spec = "textpool"

    def reference(self, m64, x, mod):
        o = m64.options
        return mod.reference_textpool(x.t.tolist(), x.Z.tolist(), x.vmask.tolist(), m64.backbone.logit_scale().item(),
                                      o["temperature"], o["normalize"], o["mask_mode"])


class XPool(Case):
    spec = "xpool"

    def prepare(self, m, mod):
        mod.perturb(m)

    def reference(self, m64, x, mod):
        P = {f"{short}_{k}": getattr(getattr(m64.pool, name), "weight" if k == "w" else "bias").detach().tolist()
             for name, short in mod.NAMES.items() for k in ("w", "b")}
        return mod.reference_xpool(x.t.tolist(), x.Z.tolist(), x.vmask.tolist(), P, m64.backbone.logit_scale().item(),
                                   heads=m64.options["num_heads"], padding=m64.options["padding"])


class XCLIP(Case):
    spec = "xclip"

    def prepare(self, m, mod):
        g = torch.Generator().manual_seed(3)
        with torch.no_grad():  # identity init would hide a transposed mixing matrix
            for p in m.scores.parameters():
                p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))

    def text(self, m, x):
        return _text(m, x, True, torch.ones_like(x.tmask))  # official X-CLIP ignores the text mask

    def video(self, m, x):
        m.temporal.forward = lambda z, mask: x.Zt  # Z~ given, as in the unit test
        return m.video_from_frames(x.Z, x.vmask)

    def reference(self, m64, x, mod):
        mats = {n: p.detach() for n, p in m64.scores.named_parameters()}
        ref = mod.reference_xclip(x.t, x.W, x.Z, x.Zt, x.vmask, mats, m64.backbone.logit_scale().item())
        return sum(ref.values()) / 4


class GLCCL(Case):
    spec = "glccl"

    def prepare(self, m, mod):
        mod._perturb_matrices(m)

    def text(self, m, x):
        return _text(m, x, True, torch.ones_like(x.tmask))  # official GLCCL ignores the text mask

    def video(self, m, x):
        return {"frames_tilde": x.Z, "video_mask": torch.ones_like(x.vmask)}

    def reference(self, m64, x, mod):
        mats = {n: p.detach() for n, p in m64.scores.named_parameters()}
        o = m64.options
        ref = mod.reference_glccl(x.t, x.W, x.Z, mats, m64.backbone.logit_scale().item(),
                                  T=o["glim_temperature"], tau=o["aosm_temperature"])
        return sum(ref.values()) / 4


class DRL(Case):
    spec = "drl"

    def prepare(self, m, mod):
        mod._randomise_weight_mlps(m)
        m.temporal = _Identity()  # the video side starts from Z~ (seqTransf is compared on its own)

    def text(self, m, x):
        m.backbone.encode_text_tokens = lambda tokens: (x.W[:, -1], x.W)
        return m.encode_text(torch.zeros(x.W.shape[0], L, dtype=torch.long), x.tmask)

    def reference(self, m64, x, mod):
        return mod.reference_drl(x.W, x.Z, x.tmask.tolist(), x.vmask.tolist(), m64,
                                 kappa=m64.backbone.logit_scale().item(), interaction=m64.options["interaction"])


class TS2Net(Case):
    spec = "ts2net"

    def video(self, m, x):  # the token selection is per-video (offline) work: the pair score starts after it
        return {"frames_hat": x.Z / x.Z.norm(dim=-1, keepdim=True), "frame_mask": x.vmask}

    def reference(self, m64, x, mod):
        return mod.ref_score(x.t, x.Z, x.vmask, m64.backbone.logit_scale().item(),
                             scale=m64.options["frame_softmax_scale"])


class TightTransf(Case):
    spec = "tighttransf"

    def prepare(self, m, mod):
        mod._randomise(m.cross)

    def reference(self, m64, x, mod):
        return mod.reference_scores(x.t, x.Z, x.vmask.tolist(), m64.cross)


CASES = {"meanp": MeanP(), "seqtransf": SeqTransf(), "textpool": TextPool(), "xpool": XPool(), "xclip": XCLIP(),
         "glccl": GLCCL(), "drl": DRL(), "ts2net": TS2Net(), "tighttransf": TightTransf()}


def test_every_registered_method_has_a_case():
    assert sorted(CASES) == sorted(METHODS.names())


@pytest.fixture(scope="module")
def backbone():
    from tvr_bench.bench.backbone import build_backbone

    torch.manual_seed(0)
    return build_backbone("ViT-B-32").eval()


@pytest.mark.parametrize("name", sorted(CASES))
def test_batched_scoring_vs_spec_transcription(benchmark, backbone, name):
    case = CASES[name]
    mod = spec_module(case.spec)
    cls = METHODS.get(name)
    torch.manual_seed(0)
    m = cls(backbone, cls.default_options(), max_frames=F, max_words=L).eval()
    case.prepare(m, mod)
    m64 = copy.deepcopy(m).double()
    x = make_inputs(N_QUERIES, N_GALLERY, backbone.embed_dim)
    x32 = x.block(N_QUERIES, N_GALLERY, dtype=torch.float32)

    with torch.no_grad():
        # like for like: the transcription's k x k block, scored both ways
        t0 = time.perf_counter()
        case.reference(m64, x.block(1, 1), mod)
        k = int(max(1, min(MAX_K, math.sqrt(SPEC_BUDGET_S / (time.perf_counter() - t0)))))
        xs = x.block(k, k)
        t0 = time.perf_counter()
        ref = case.reference(m64, xs, mod)
        spec_s = time.perf_counter() - t0
        exact = case.batched(m64, xs)
        xs32 = x32.block(k, k)
        same_block_s = _median_time(lambda: case.batched(m, xs32), 5)
        small = case.batched(m, xs32)

        # the 1k x 1k matrix as the harness evaluates it: the 1,000 query states once, then the gallery in chunks
        # (each chunk: its per-video work and its pairs); all chunks when they fit the target time
        t0 = time.perf_counter()
        text = case.text(m, x32)
        text_s = time.perf_counter() - t0
        probe = _median_time(lambda: m.score(text, case.video(m, x32.block(N_QUERIES, 1))), 1)
        n_v = int(max(1, min(N_GALLERY, BATCHED_TARGET_S / probe)))
        chunks = [x32.block(N_QUERIES, N_GALLERY)] if n_v >= N_GALLERY // 2 else \
            [_gallery_slice(x32, c * n_v, n_v) for c in range(3)]
        chunk_s = benchmark.pedantic(
            lambda: sorted(_median_time(lambda: m.score(text, case.video(m, c)), 1) for c in chunks)[len(chunks) // 2],
            rounds=1, iterations=1)
        n_chunk = chunks[0].Z.shape[0]
        full_batched_s = text_s + chunk_s * N_GALLERY / n_chunk
        how = "measured whole" if n_chunk == N_GALLERY else f"1,000 queries, median of 3 chunks of {n_chunk} videos"

    # same outputs: fp64 method == transcription; fp32 batched == transcription within fp32 error
    ref = torch.as_tensor(ref, dtype=torch.float64)
    torch.testing.assert_close(exact, ref, rtol=1e-7, atol=1e-7 * float(ref.abs().max()))
    span = float(ref.max() - ref.min()) or float(ref.abs().max()) or 1.0
    torch.testing.assert_close(small.double(), ref, rtol=0, atol=1e-3 * span)

    spec_pps, same_pps = k * k / spec_s, k * k / same_block_s
    full_spec_s = N_QUERIES * N_GALLERY / spec_pps
    benchmark.extra_info.update(
        shape=f"MSR-VTT D={backbone.embed_dim} L={L} F={F}", spec=f"tests/test_{case.spec}_spec.py", block=[k, k],
        spec_pairs_per_s=spec_pps, batched_same_block_pairs_per_s=same_pps, speedup_same_block=same_pps / spec_pps,
        full_matrix_batched_s=full_batched_s, full_matrix_batched=how,
        full_matrix_batched_pairs_per_s=N_QUERIES * N_GALLERY / full_batched_s,
        full_matrix_spec_s_linear_upper_bound=full_spec_s)
    print(f"\n{name}: {k} x {k} block: transcription {spec_pps:,.2f} pairs/s, batched {same_pps:,.0f} pairs/s "
          f"({same_pps / spec_pps:,.0f}x); 1k x 1k: batched {_duration(full_batched_s)} ({how}, "
          f"{N_QUERIES * N_GALLERY / full_batched_s:,.0f} pairs/s) vs transcription <= {_duration(full_spec_s)}")
    assert same_pps > spec_pps


def _gallery_slice(x: Inputs, start: int, n: int) -> Inputs:
    sl = slice(start, start + n)
    return Inputs(x.t, x.W, x.Z[sl], x.Zt[sl], x.tmask, x.vmask[sl])


def _median_time(fn, rounds: int) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def _duration(s: float) -> str:
    return f"{s:,.1f} s" if s < 3600 else f"{s / 3600:,.1f} h" if s < 86400 * 3 else f"{s / 86400:,.0f} days"
