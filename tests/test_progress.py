"""Progress bars: shown with counts and ETA while queries are scored, absent with --quiet and outside a terminal."""

from __future__ import annotations

import contextlib

import torch

from tvr_bench.bench import progress


def _score(tiny_backbone, make_method):
    from tvr_bench.bench.data.pipeline import TokenizedCaptions
    from tvr_bench.bench.evaluate import streamed_similarity

    m = make_method("meanp", tiny_backbone, max_frames=4, max_words=8)
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(1, 400, (9, 8), generator=g)
    tokens[:, -1] = tiny_backbone.tokenizer.eot_token_id
    caps = TokenizedCaptions(tokens=tokens, mask=torch.ones_like(tokens), n_truncated=0)
    with torch.no_grad():
        video = m.encode_video(torch.randn(5, 4, 3, 32, 32, generator=g), torch.ones(5, 4, dtype=torch.long))
    return streamed_similarity(m, caps, video, batch_size=2, chunk_size=2, device="cpu",
                               autocast=contextlib.nullcontext)


def test_scoring_shows_a_bar_with_the_query_count(tiny_backbone, make_method, capsys):
    try:
        progress.set_enabled(True)
        _score(tiny_backbone, make_method)
        err = capsys.readouterr().err
        assert "score 9 queries x 5 videos" in err and "/9 [" in err and "query/s" in err  # count, rate, ETA
        progress.set_enabled(False)  # --quiet
        _score(tiny_backbone, make_method)
        assert capsys.readouterr().err == ""
        progress.set_enabled(None)  # the default: tqdm shows nothing when stderr is not a terminal (tests, logs)
        _score(tiny_backbone, make_method)
        assert capsys.readouterr().err == ""
    finally:
        progress.set_enabled(None)
