"""Scoring block size from eval.memory_budget: parsing, the chosen side, and block-size independence."""

from __future__ import annotations

import copy

import pytest
import torch

from tvr_bench.bench.errors import ConfigError
from tvr_bench.bench.evaluate import block_side, parse_bytes, rows_block, similarity_matrix


def test_parse_bytes_units_and_errors():
    assert parse_bytes(1234) == 1234
    assert parse_bytes("2GB") == 2 * 10**9
    assert parse_bytes("512 MiB") == 512 << 20
    assert parse_bytes("1.5gib") == int(1.5 * (1 << 30))
    for bad in ("2 parsecs", "GB", "-1GB", 0, True, [1]):
        with pytest.raises(ConfigError, match="memory_budget"):
            parse_bytes(bad)


def test_block_side_is_largest_square_that_fits(tiny_backbone, make_method):
    m = make_method("glccl", tiny_backbone, max_frames=6, max_words=5)
    per_pair = m.score_pair_bytes(4)
    budget = 1_000_000
    side = block_side(m, memory_budget=budget)
    assert side * side * per_pair <= budget < (side + 1) ** 2 * per_pair
    assert block_side(m, memory_budget=budget, chunk_size=7) == 7  # explicit override wins
    assert block_side(m, memory_budget=budget, limit=3) == 3
    assert rows_block(m, 2, memory_budget=budget) == budget // (2 * per_pair)


def test_config_rejects_bad_budget():
    from tvr_bench.bench.config import resolve_config
    from tvr_bench.bench.registry import DATASETS, METHODS

    kw = {"method_cls": METHODS.get("glccl"), "dataset_cls": DATASETS.get("synthetic"), "preset": "smoke"}
    with pytest.raises(ConfigError, match="memory_budget"):
        resolve_config(**kw, overrides=["eval.memory_budget=lots"])
    cfg, _ = resolve_config(**kw, overrides=["eval.memory_budget=2GB"])
    assert cfg["eval"]["memory_budget"] == "2GB"


@pytest.mark.parametrize("name", ["glccl", "xclip"])
def test_score_matrix_does_not_depend_on_block_size(tiny_backbone, make_method, name):
    # a copy: .double() would convert the session-wide tiny backbone for every later test
    m = make_method(name, copy.deepcopy(tiny_backbone), max_frames=6, max_words=5).double().eval()
    g = torch.Generator().manual_seed(0)
    n_t, n_v, d = 11, 9, tiny_backbone.embed_dim
    t = torch.randn(n_t, d, generator=g, dtype=torch.float64)
    w = torch.randn(n_t, 5, d, generator=g, dtype=torch.float64)
    m.backbone.encode_text_tokens = lambda tokens: (t, w)
    text = m.encode_text(torch.zeros(n_t, 5, dtype=torch.long), torch.ones(n_t, 5, dtype=torch.long))
    video = m.video_from_frames(torch.randn(n_v, 6, d, generator=g, dtype=torch.float64), torch.ones(n_v, 6))
    nullctx = torch.autograd.grad_mode.no_grad
    ref = similarity_matrix(m, text, video, 64, nullctx)
    for side in (1, 4, block_side(m, memory_budget=40 * m.score_pair_bytes(8), itemsize=8)):
        assert torch.equal(similarity_matrix(m, text, video, side, nullctx), ref), side
