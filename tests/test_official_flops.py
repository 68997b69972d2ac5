"""The two FLOP counts of a record: ``score_per_pair`` counts this implementation, ``official_score_per_pair``
is the analytic per-pair cost of the method's *official* evaluation code (``RetrievalMethod.official_pair_flops``).

Each formula is checked here against the FLOPs counted (the project's one convention, bench/cost/flops.py) on
the official-formulation port of benchmarks/official/<method>.py, at small shapes and at the official eval
block, so a formula that forgets the official code's per-block re-work, or a port that drifts from the
formula, fails.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))  # the official ports

D, L, F = 64, 4, 5  # tvr-tiny width; small caption and video lengths


def _inputs(n: int, tokens_per_frame: int = 1, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    sentence, words = torch.randn(n, D, generator=g), torch.randn(n, L, D, generator=g)
    text_mask = torch.ones(n, L, dtype=torch.long)
    text_mask[::2, 2:] = 0
    frames = torch.randn(n, F * tokens_per_frame, D, generator=g)
    video_mask = torch.ones(n, F, dtype=torch.long)
    video_mask[::3, 3:] = 0
    return sentence, words, text_mask, frames, video_mask


def _port_flops(name: str, m, b: int) -> float:
    """FLOPs per pair of one b x b block of the port (the per-block work its eval loop does)."""
    import importlib

    from official.common import counted_flops

    port = importlib.import_module(f"official.{name}")
    s, w, tm, z, vm = _inputs(b, tokens_per_frame=int(m.options["topk"]) + 1 if name == "ts2net" else 1)
    with torch.no_grad():
        if name in ("xclip", "ts2net", "tighttransf"):
            args = {"xclip": (s, w, z, vm), "ts2net": (s, z, vm), "tighttransf": (s, z, vm)}[name]
            return counted_flops(lambda: port.official_block(m, *args)) / (b * b)
        if name == "glccl":
            return counted_flops(lambda: port.official_glccl_block(m, s, w, z, vm)) / (b * b)
        if name == "xpool":
            return counted_flops(lambda: port.official_matrix(m, s, z)) / (b * b)
        feats = m.temporal(z, vm)  # once per video, before the official block loop
        if name == "drl":
            return counted_flops(lambda: port.official_block(m, w, tm, feats, vm)) / (b * b)
        return counted_flops(lambda: port.official_block(s, feats, vm)) / (b * b)  # textpool


PORT_BLOCK = {"xclip": "BATCH_SIZE_VAL", "glccl": "BATCH_SIZE_VAL", "ts2net": "BATCH_SIZE_VAL",
              "tighttransf": "BATCH_SIZE_VAL", "drl": "MINI_BATCH", "textpool": "MINI_BATCH"}


@pytest.mark.parametrize("name", ["xclip", "glccl", "xpool", "drl", "textpool", "ts2net", "tighttransf"])
def test_official_formula_matches_the_port(tiny_backbone, make_method, name):
    import importlib

    m = make_method(name, tiny_backbone, max_frames=F, max_words=L)
    if name == "xpool":
        b = 12  # the official code pools the whole gallery in one call: the formula takes its size
    else:
        b = getattr(importlib.import_module(f"official.{name}"), PORT_BLOCK[name])
        assert getattr(type(m), "OFFICIAL_EVAL_BLOCK", b) == b  # the method's declared block is the port's
    formula = m.official_pair_flops(b)
    assert formula == pytest.approx(_port_flops(name, m, b), rel=1e-12)
    # and it is not the implementation's own count where an exact rewrite or the offline split saves work
    from tvr_bench.bench.cost import flop_profile

    ours = flop_profile(m, max_words=L, max_frames=F, gallery_size=b)
    assert ours["official_score_per_pair"] == pytest.approx(formula)
    assert ours["score_per_pair"] <= formula


def test_methods_without_a_declared_official_formulation_record_none(tiny_backbone, make_method):
    from tvr_bench.bench.cost import flop_profile

    m = make_method("meanp", tiny_backbone, max_frames=F, max_words=L)
    assert m.official_pair_flops(10) is None
    assert "official_score_per_pair" not in flop_profile(m, max_words=L, max_frames=F, gallery_size=10)
