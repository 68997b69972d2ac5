"""Per method: batched scoring against its loop-based spec transcription, at MSR-VTT paper shapes (`make benchmark`).

The transcriptions are the ones the unit tests prove the methods against (tests/test_*_spec.py: Python loops over
texts, videos, words, frames and often channels, sharing no batching code with the methods). Here they run at the
ViT-B/32 MSR-VTT shapes (D = 512, L = 32 words, F = 12 frames; random weights, random inputs, padded videos) and
both sides start from the same raw inputs (sentence/word features, frame features, masks) and end in the same
score matrix, so per-text and per-video work is on both sides.

- batched: the method in fp32 on a block of ``BATCHED_BLOCK`` texts x videos (median of 3 rounds);
- transcription: in fp64 on the largest block (from 1 x 1 up to ``SPEC_MAX_BLOCK``) that its measured 1 x 1 time
  says fits ``SPEC_BUDGET_S``;
- same outputs: the method run in fp64 on the transcription's block equals it to 1e-7 relative, and the fp32
  batched scores equal it to 1e-3 of the score range;
- pairs/s of each, the speed-up, and both projected linearly to the 1,000 x 1,000 MSR-VTT test matrix (a linear
  projection from a small block over-states the transcription's cost where it repeats per-video work: labelled).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch loads OpenMP (shared 2-core machine)

import copy  # noqa: E402
import functools  # noqa: E402
import importlib.util  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from tvr_bench.bench.efficiency import PAPER_SHAPES  # noqa: E402
from tvr_bench.bench.registry import METHODS  # noqa: E402

SHAPE = PAPER_SHAPES["msrvtt"]
L, F = SHAPE.max_words, SHAPE.max_frames
BATCHED_BLOCK = (16, 256)
SPEC_MAX_BLOCK = (4, 4)
SPEC_BUDGET_S = 8.0
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

    def batched(self, m, x: Inputs) -> torch.Tensor:
        raise NotImplementedError

    def reference(self, m64, x: Inputs, mod) -> torch.Tensor:
        raise NotImplementedError


class MeanP(Case):
    spec = "two_tower"

    def batched(self, m, x):
        return m.score(_text(m, x, False), m.video_from_frames(x.Z, x.vmask))

    def reference(self, m64, x, mod):
        return mod.reference_loose(x.t, x.Z, x.vmask, m64.backbone.logit_scale().item())


class SeqTransf(MeanP):
    def reference(self, m64, x, mod):
        zt = mod.reference_seqtransf(x.Z, x.vmask, m64.temporal)
        return mod.reference_loose(x.t, zt, x.vmask, m64.backbone.logit_scale().item())


class TextPool(Case):
    spec = "textpool"

    def batched(self, m, x):
        return m.score(_text(m, x, False), m.video_from_frames(x.Z, x.vmask))

    def reference(self, m64, x, mod):
        zt = spec_module("two_tower").reference_seqtransf(x.Z, x.vmask, m64.temporal)
        o = m64.options
        return mod.reference_textpool(x.t.tolist(), zt.tolist(), x.vmask.tolist(), m64.backbone.logit_scale().item(),
                                      o["temperature"], o["normalize"], o["mask_mode"])


class XPool(Case):
    spec = "xpool"

    def prepare(self, m, mod):
        mod.perturb(m)

    def batched(self, m, x):
        return m.score(_text(m, x, False), m.video_from_frames(x.Z, x.vmask))

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

    def batched(self, m, x):
        m.temporal.forward = lambda z, mask: x.Zt  # Z~ given, as in the unit test
        text = _text(m, x, True, torch.ones_like(x.tmask))  # official X-CLIP ignores the text mask
        return m.score(text, m.video_from_frames(x.Z, x.vmask))

    def reference(self, m64, x, mod):
        mats = {n: p.detach() for n, p in m64.scores.named_parameters()}
        ref = mod.reference_xclip(x.t, x.W, x.Z, x.Zt, x.vmask, mats, m64.backbone.logit_scale().item())
        return sum(ref.values()) / 4


class GLCCL(Case):
    spec = "glccl"

    def prepare(self, m, mod):
        mod._perturb_matrices(m)

    def batched(self, m, x):
        text = _text(m, x, True, torch.ones_like(x.tmask))  # official GLCCL ignores the text mask
        return m.score(text, {"frames_tilde": x.Z, "video_mask": torch.ones_like(x.vmask)})

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

    def batched(self, m, x):
        m.backbone.encode_text_tokens = lambda tokens: (x.W[:, -1], x.W)
        text = m.encode_text(torch.zeros(x.W.shape[0], L, dtype=torch.long), x.tmask)
        return m.score(text, m.video_from_frames(x.Z, x.vmask))

    def reference(self, m64, x, mod):
        return mod.reference_drl(x.W, x.Z, x.tmask.tolist(), x.vmask.tolist(), m64,
                                 kappa=m64.backbone.logit_scale().item(), interaction=m64.options["interaction"])


class TS2Net(Case):
    spec = "ts2net"

    def batched(self, m, x):  # the token selection is per-video (offline) work: the pair score starts after it
        return m.score(_text(m, x, False), {"frames_hat": x.Z / x.Z.norm(dim=-1, keepdim=True), "frame_mask": x.vmask})

    def reference(self, m64, x, mod):
        return mod.ref_score(x.t, x.Z, x.vmask, m64.backbone.logit_scale().item(),
                             scale=m64.options["frame_softmax_scale"])


class TightTransf(Case):
    spec = "tighttransf"

    def prepare(self, m, mod):
        mod._randomise(m.cross)

    def batched(self, m, x):
        return m.score(_text(m, x, False), m.video_from_frames(x.Z, x.vmask))

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
    x = make_inputs(max(BATCHED_BLOCK[0], SPEC_MAX_BLOCK[0]), max(BATCHED_BLOCK[1], SPEC_MAX_BLOCK[1]),
                    backbone.embed_dim)
    xb = x.block(*BATCHED_BLOCK, dtype=torch.float32)

    with torch.no_grad():
        times: list[float] = []

        def batched():
            t0 = time.perf_counter()
            out = case.batched(m, xb)
            times.append(time.perf_counter() - t0)
            return out

        batched_scores = benchmark.pedantic(batched, rounds=3, iterations=1, warmup_rounds=1)
        batched_s = sorted(times[-3:])[1]  # median of the 3 timed rounds
        # the transcription: the largest block that fits the budget, from its 1 x 1 time
        t0 = time.perf_counter()
        case.reference(m64, x.block(1, 1), mod)
        one = time.perf_counter() - t0
        n_t, n_v = SPEC_MAX_BLOCK
        while n_t * n_v > 1 and one * n_t * n_v > SPEC_BUDGET_S:
            n_t, n_v = (n_t, n_v // 2) if n_v >= n_t else (n_t // 2, n_v)
        xs = x.block(n_t, n_v)
        t0 = time.perf_counter()
        ref = case.reference(m64, xs, mod)
        spec_s = time.perf_counter() - t0
        exact = case.batched(m64, xs)

    # same outputs: fp64 method == transcription; fp32 batched == transcription within fp32 error
    ref = torch.as_tensor(ref, dtype=torch.float64)
    torch.testing.assert_close(exact, ref, rtol=1e-7, atol=1e-7 * float(ref.abs().max()))
    span = float(ref.max() - ref.min()) or 1.0
    torch.testing.assert_close(batched_scores[:n_t, :n_v].double(), ref, rtol=0, atol=1e-3 * span)

    batched_pps = BATCHED_BLOCK[0] * BATCHED_BLOCK[1] / batched_s
    spec_pps = n_t * n_v / spec_s
    benchmark.extra_info.update(
        shape=f"MSR-VTT D={backbone.embed_dim} L={L} F={F}", batched_block=list(BATCHED_BLOCK),
        batched_pairs_per_s=batched_pps, spec_block=[n_t, n_v], spec_pairs_per_s=spec_pps,
        speedup=batched_pps / spec_pps, projected_1k_batched_s=1e6 / batched_pps,
        projected_1k_spec_s=1e6 / spec_pps, spec=f"tests/test_{case.spec}_spec.py")
    print(f"\n{name}: batched {batched_pps:,.0f} pairs/s ({BATCHED_BLOCK[0]}x{BATCHED_BLOCK[1]}), transcription "
          f"{spec_pps:,.2f} pairs/s ({n_t}x{n_v}), {batched_pps / spec_pps:,.0f}x; 1k x 1k: "
          f"{1e6 / batched_pps:,.1f} s vs {_duration(1e6 / spec_pps)} (linear projection)")
    assert batched_pps > spec_pps


def _duration(s: float) -> str:
    return f"{s:,.0f} s" if s < 3600 else f"{s / 3600:,.1f} h" if s < 86400 * 3 else f"{s / 86400:,.0f} days"
