"""The shared training loop: schedule, optimiser grouping, and resume after an interruption."""

from __future__ import annotations

import json
import math

import pytest
import torch

from tvr_bench.bench.optim import BertAdam, build_optimizer, warmup_cosine


def test_warmup_cosine_is_clip4clip_schedule():
    assert warmup_cosine(0.0, 0.1) == 0.0
    assert warmup_cosine(0.05, 0.1) == pytest.approx(0.5)
    # not rescaled after warm-up: the multiplier drops to 0.5(1 + cos(0.1 pi)) = 0.976 at x = 0.1
    assert warmup_cosine(0.1, 0.1) == pytest.approx(0.5 * (1 + math.cos(0.1 * math.pi)))
    assert warmup_cosine(1.0, 0.1) == pytest.approx(0.0, abs=1e-12)


def test_bertadam_step_matches_hand_computation():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = BertAdam([p], lr=0.1, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.2, max_grad_norm=0.0)
    p.grad = torch.tensor([0.5, 0.25])
    opt.step()
    m = 0.1 * torch.tensor([0.5, 0.25])
    v = 0.02 * torch.tensor([0.25, 0.0625])
    expected = torch.tensor([1.0, -2.0]) - 0.1 * (m / (v.sqrt() + 1e-6) + 0.2 * torch.tensor([1.0, -2.0]))
    torch.testing.assert_close(p.detach(), expected)  # no bias correction, decoupled decay


def test_batched_bertadam_is_bit_identical_to_the_per_tensor_loop():
    """step() batches the tensors of a group; reference_step below is the per-tensor loop of the official
    BertAdam (clip_grad_norm_ on each tensor, then Adam without bias correction). Same bits after many steps,
    with clipped and unclipped gradients, two groups, decay on and off, and a tensor without a gradient."""

    @torch.no_grad()
    def reference_step(opt):
        for group in opt.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = opt.state[p]
                if not state:
                    state["next_m"], state["next_v"] = torch.zeros_like(p), torch.zeros_like(p)
                if group["max_grad_norm"] > 0:
                    torch.nn.utils.clip_grad_norm_(p, group["max_grad_norm"])
                m, v = state["next_m"], state["next_v"]
                m.mul_(b1).add_(p.grad, alpha=1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                update = m / (v.sqrt() + group["eps"])
                if group["weight_decay"] > 0.0:
                    update = update + group["weight_decay"] * p
                p.add_(update, alpha=-group["lr"])

    torch.manual_seed(0)
    shapes = [(500, 16), (16,), (48, 16), (1,), (3, 4, 5)]
    a = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]

    def groups(ps):
        return [{"params": ps[:3], "weight_decay": 0.2, "lr": 1e-2}, {"params": ps[3:], "weight_decay": 0.0}]

    opt_a, opt_b = BertAdam(groups(a), lr=1e-3), BertAdam(groups(b), lr=1e-3)
    for step in range(12):
        for pa, pb in zip(a, b):
            g = torch.randn(pa.shape) * (10.0 if step % 3 == 0 else 0.01)  # above and below max_grad_norm
            pa.grad, pb.grad = g.clone(), g.clone()
        if step == 4:
            a[1].grad = b[1].grad = None
        opt_a.step()
        reference_step(opt_b)
    for pa, pb in zip(a, b):
        assert torch.equal(pa, pb)
        assert torch.equal(opt_a.state[pa]["next_v"], opt_b.state[pb]["next_v"])


def test_optimizer_groups_split_backbone_and_new_modules(tiny_backbone, make_method):
    m = make_method("glccl", tiny_backbone, max_frames=4, max_words=8)
    cfg = {"lr": 1e-4, "coef_lr": 1e-3, "weight_decay": 0.2, "betas": [0.9, 0.98], "eps": 1e-6,
           "grad_clip": 1.0, "optimizer": "bertadam"}
    opt = build_optimizer(m, cfg)
    by_name = {g["name"]: g for g in opt.param_groups}
    assert by_name["backbone"]["lr"] == pytest.approx(1e-7) and by_name["new"]["lr"] == 1e-4
    assert by_name["new_nodecay"]["weight_decay"] == 0.0 and by_name["new"]["weight_decay"] == 0.2
    n_all = sum(p.numel() for p in m.parameters())
    assert sum(p.numel() for g in opt.param_groups for p in g["params"]) == n_all
    # the identity score matrices are decayed (official quirk: only 'bias'/'LayerNorm' names are exempt)
    assert any(p is m.scores.global_mat_weight for p in by_name["new"]["params"])


def test_interrupted_run_resumes_and_matches_an_uninterrupted_one(tmp_path, monkeypatch):
    from tvr_bench.bench import train as T
    from tvr_bench.bench.runner import run_one

    monkeypatch.setenv("TVR_BENCH_CACHE", str(tmp_path / "cache"))
    over = ["train.epochs=3"]  # seqtransf: with the frozen default, meanP has nothing to train
    ref = run_one("seqtransf", "synthetic", 0, out_dir=tmp_path / "ref", preset="smoke", overrides=over, log=lambda m: None)

    real_step = T.Trainer._step
    calls = {"n": 0}

    def flaky_step(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 20:  # in epoch 2 (16 steps per epoch at the smoke preset)
            raise KeyboardInterrupt
        return real_step(self, *args, **kwargs)

    monkeypatch.setattr(T.Trainer, "_step", flaky_step)
    with pytest.raises(KeyboardInterrupt):
        run_one("seqtransf", "synthetic", 0, out_dir=tmp_path / "run", preset="smoke", overrides=over, log=lambda m: None)
    assert not list((tmp_path / "run").glob("*.json"))  # no record for an unfinished run
    assert (tmp_path / "run" / "checkpoints" / "seqtransf__synthetic__seed0" / "last.pt").exists()
    monkeypatch.setattr(T.Trainer, "_step", real_step)
    logs = []
    path = run_one("seqtransf", "synthetic", 0, out_dir=tmp_path / "run", preset="smoke", overrides=over, log=logs.append)
    assert any("resumed" in line and "after epoch 1" in line for line in logs)
    a, b = json.loads(ref.read_text()), json.loads(path.read_text())
    assert a["metrics"]["t2v"] == b["metrics"]["t2v"] and a["metrics"]["v2t"] == b["metrics"]["v2t"]
    assert [e["loss_total"] for e in a["training"]["history"]] == [e["loss_total"] for e in b["training"]["history"]]


def test_runs_of_one_invocation_decode_each_video_once_with_the_same_results(tmp_path, monkeypatch):
    from tvr_bench.bench.data.pipeline import DecodedClips
    from tvr_bench.bench.runner import run_one

    monkeypatch.setenv("TVR_BENCH_CACHE", str(tmp_path / "cache"))
    # the pixel path (a frozen backbone reads its features from the feature cache instead of decoding per epoch)
    over = ["train.epochs=1", "cost.enabled=false", "backbone.frozen=false"]

    def run(out, decoded=None):
        path = run_one("meanp", "synthetic", 0, out_dir=tmp_path / out, preset="smoke", overrides=over,
                       log=lambda m: None, decoded=decoded)
        return json.loads(path.read_text())["metrics"]

    alone = run("alone")
    shared = DecodedClips()
    first = run("first", shared)
    n_videos = len(shared)
    assert n_videos == 128 + 32 + 256 and shared.evictions == 0  # every video of the three smoke splits, once
    hits = shared.hits  # epochs and evaluations of the first run already read their clips from memory
    second = run("second", shared)
    assert shared.hits - hits >= n_videos and len(shared) == n_videos  # the second run decoded none
    assert alone == first == second


def test_streamed_text_side_gives_the_one_shot_matrix_bit_for_bit(tiny_backbone, make_method):
    """Evaluation streams query states in groups of lcm(batch, chunk): same batches, same blocks, same bits."""
    import contextlib

    from tvr_bench.bench.data.pipeline import TokenizedCaptions
    from tvr_bench.bench.evaluate import encode_texts, similarity_matrix, streamed_similarity

    m = make_method("glccl", tiny_backbone, max_frames=4, max_words=8)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, 400, (17, 8), generator=g)
    tokens[:, -1] = tiny_backbone.tokenizer.eot_token_id
    caps = TokenizedCaptions(tokens=tokens, mask=torch.ones_like(tokens), n_truncated=0)
    with torch.no_grad():
        video = m.encode_video(torch.randn(5, 4, 3, 32, 32, generator=g), torch.ones(5, 4, dtype=torch.long))
    nullctx = contextlib.nullcontext
    for batch, chunk in [(6, 4), (5, 5), (32, 3)]:
        one_shot = similarity_matrix(m, encode_texts(m, caps, batch, "cpu", nullctx), video, chunk, nullctx)
        streamed = streamed_similarity(m, caps, video, batch_size=batch, chunk_size=chunk, device="cpu",
                                       autocast=nullctx)
        assert torch.equal(streamed, one_shot)
