"""Retrieval ranks and metrics (R@1/5/10, MdR, MnR, RSum) for text-to-video and video-to-text retrieval.

This module is the single place where ranks are computed; every convention below is fixed here, tested in
``tests/test_metrics.py`` and recorded in every result (``retrieval_metrics(...)["conventions"]``).
See ``docs/protocols.md`` sections 3.4, 5 and 7.

Conventions
-----------
* **Rank base.** Ranks are 1-based: rank 1 means the ground truth scored best.
* **Tie policy** (``TIE_POLICY = "pessimistic"``, the default). The rank of a query is
  ``1 + number of OTHER gallery items whose score is >= the ground-truth score``: ties count *against* the query.
  Named alternatives: ``"optimistic"`` (``1 + number of gallery items scoring strictly higher``) and ``"mean"``
  (average of the two; ranks may then be x.5). docs/protocols.md (metrics): a toy case gives optimistic 4, pessimistic 5.
* **NaN scores.** A NaN in the gallery never beats anything: it counts neither as ``>=`` nor as ``>`` the ground
  truth (i.e. it ranks below every real score, -inf included). A NaN *ground-truth* score is an error
  (:class:`DataError` naming the query); no query is ever silently dropped.
* **Median** (``MEDIAN_CONVENTION = "numpy"``). MdR is ``numpy.median`` of the 1-based ranks, which averages the two
  middle values for an even count (may be x.5; ``torch.median`` would take the lower one).
* **MnR** is the mean of the 1-based ranks. **R@K** = 100 x fraction of queries with rank <= K for K in (1, 5, 10)
  (a hit rate / success@K, not IR "recall"). **RSum** = R@1 + R@5 + R@10.
* **T2V.** Every caption is a query with exactly one relevant video (``text_to_video[i]``); the gallery is all videos.
* **V2T** (multi-caption convention, docs/protocols.md). Video ``j`` is the query; the gallery is the set of
  caption *groups* (group ``g`` = all captions of video ``g``); the score of (video ``j``, group ``g``) is
  ``max_{c in g} sim[c, j]`` and the rank of video ``j`` is the rank of its own group among all groups
  (best-positive semantics, ``v2t_rank="best_positive"``, ``v2t_gallery="caption_groups"``). With one caption per
  video this is exactly ranking the columns of ``sim``. NaN captions are ignored inside the group max; a group
  whose captions are all NaN for video ``j`` scores NaN (never beats anything).

The similarity may be a full ``[N_text, N_video]`` matrix (torch tensor, numpy array or nested lists), or a callable
``score_block(text_idx: slice) -> [n, N_video]`` so that the whole matrix never has to exist at once. Rows are
processed ``chunk_size`` at a time, all queries of a chunk vectorised.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence, Union

import numpy as np
import torch

from tvr_bench.bench.errors import ConfigError, DataError

__all__ = [
    "TIE_POLICY",
    "TIE_POLICIES",
    "MEDIAN_CONVENTION",
    "RECALL_KS",
    "METRIC_KEYS",
    "compute_ranks_t2v",
    "compute_ranks_v2t",
    "summarize_ranks",
    "retrieval_metrics",
]

TIE_POLICY = "pessimistic"
"""Default tie policy: rank = 1 + number of other gallery items scoring >= the ground truth."""

TIE_POLICIES = ("pessimistic", "optimistic", "mean")

MEDIAN_CONVENTION = "numpy"
"""MdR = numpy.median of the 1-based ranks (average of the two middle values for an even count)."""

RECALL_KS = (1, 5, 10)
METRIC_KEYS = ("R@1", "R@5", "R@10", "MdR", "MnR", "RSum")

ScoreBlock = Callable[[slice], Any]
Similarity = Union[torch.Tensor, np.ndarray, Sequence, ScoreBlock]


# ---------------------------------------------------------------------------------------------------------------
# input handling


def _check_policy(tie_policy: str) -> str:
    if tie_policy not in TIE_POLICIES:
        raise ConfigError(f"unknown tie_policy {tie_policy!r}; expected one of {', '.join(TIE_POLICIES)}")
    return tie_policy


def _check_chunk(chunk_size: int) -> int:
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ConfigError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    return int(chunk_size)


def _to_tensor(x: Any, what: str) -> torch.Tensor:
    """A score matrix/block as a torch tensor (zero-copy for tensors and most numpy arrays)."""
    if isinstance(x, torch.Tensor):
        t = x.detach()
    else:
        arr = np.asarray(x)
        if arr.dtype == object or arr.dtype.kind not in "biuf":
            raise DataError(f"{what}: scores must be a numeric array, got dtype {arr.dtype}")
        try:
            t = torch.from_numpy(arr)
        except (TypeError, ValueError):  # negative strides, unsupported dtype (e.g. uint16)
            arr = np.ascontiguousarray(arr)
            t = torch.from_numpy(arr.astype(np.float64) if arr.dtype.kind == "u" else arr)
    if t.is_complex():
        raise DataError(f"{what}: complex scores are not supported")
    if t.dtype == torch.bool:
        t = t.to(torch.int64)
    return t


def _as_mapping(text_to_video: Any, n_text: int | None) -> torch.Tensor:
    """``text_to_video`` as a 1-D int64 tensor; validates integrality (range is checked once N_video is known)."""
    if isinstance(text_to_video, torch.Tensor):
        arr = text_to_video.detach().cpu().numpy()
    else:
        arr = np.asarray(text_to_video)
    if arr.ndim != 1:
        raise DataError(f"text_to_video must be 1-D (one video index per caption), got shape {tuple(arr.shape)}")
    if arr.size == 0:
        raise DataError("empty input: text_to_video has no captions (no queries)")
    if arr.dtype.kind not in "iu":
        if arr.dtype.kind != "f":
            raise DataError(f"text_to_video must hold integer video indices, got dtype {arr.dtype}")
        bad = np.flatnonzero(~np.isfinite(arr) | (arr != np.round(arr)))
        if bad.size:
            i = int(bad[0])
            raise DataError(f"text_to_video[{i}] = {arr[i]!r} is not an integer video index")
    if n_text is not None and arr.shape[0] != n_text:
        raise DataError(
            f"shape mismatch: similarity has {n_text} text rows but text_to_video has {arr.shape[0]} entries"
        )
    return torch.from_numpy(arr.astype(np.int64, copy=False).copy())


def _check_mapping_range(t2v: torch.Tensor, n_video: int) -> None:
    """Every caption points at a video in range, every video has at least one caption."""
    bad = torch.nonzero((t2v < 0) | (t2v >= n_video)).flatten()
    if bad.numel():
        i = int(bad[0])
        raise DataError(
            f"text_to_video[{i}] = {int(t2v[i])} is out of range for {n_video} videos "
            f"({bad.numel()} caption(s) out of range)"
        )
    counts = torch.bincount(t2v, minlength=n_video)
    missing = torch.nonzero(counts == 0).flatten()
    if missing.numel():
        shown = ", ".join(str(int(v)) for v in missing[:5])
        more = f" and {missing.numel() - 5} more" if missing.numel() > 5 else ""
        raise DataError(
            f"video {int(missing[0])} has no caption (videos without captions: {shown}{more}); "
            "every gallery video needs at least one caption"
        )


def _matrix(sim: Any, t2v_raw: Any) -> tuple[torch.Tensor, torch.Tensor]:
    s = _to_tensor(sim, "similarity")
    if s.dim() != 2:
        raise DataError(f"similarity must be a 2-D [N_text, N_video] matrix, got shape {tuple(s.shape)}")
    if s.shape[0] == 0 or s.shape[1] == 0:
        raise DataError(f"empty input: similarity matrix has shape {tuple(s.shape)}")
    if t2v_raw is None:
        if s.shape[0] != s.shape[1]:
            raise DataError(
                f"text_to_video=None means a square 1:1 matrix, got shape {tuple(s.shape)}"
            )
        t2v = torch.arange(s.shape[0])
    else:
        t2v = _as_mapping(t2v_raw, s.shape[0])
    _check_mapping_range(t2v, s.shape[1])
    return s, t2v.to(s.device)


class _Blocks:
    """Uniform row-block access to a matrix or a ``score_block`` callable, with shape checks."""

    def __init__(self, sim: Any, text_to_video: Any):
        self.callable = callable(sim) and not isinstance(sim, (torch.Tensor, np.ndarray))
        if self.callable:
            if text_to_video is None:
                raise DataError("text_to_video is required when the similarity is a score_block callable")
            self.fn = sim
            self.t2v = _as_mapping(text_to_video, None)
            self.n_text = int(self.t2v.shape[0])
            self.n_video: int | None = None
        else:
            self.mat, self.t2v = _matrix(sim, text_to_video)
            self.n_text, self.n_video = map(int, self.mat.shape)

    def block(self, a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows ``a:b`` of the similarity and their ground-truth video indices (on the block's device)."""
        if not self.callable:
            return self.mat[a:b], self.t2v[a:b]
        blk = _to_tensor(self.fn(slice(a, b)), f"score_block(slice({a}, {b}))")
        if blk.dim() != 2 or blk.shape[0] != b - a:
            raise DataError(
                f"score_block(slice({a}, {b})) returned shape {tuple(blk.shape)}; expected ({b - a}, N_video)"
            )
        if self.n_video is None:
            if blk.shape[1] == 0:
                raise DataError("empty input: score_block returned a block with 0 videos")
            self.n_video = int(blk.shape[1])
            _check_mapping_range(self.t2v, self.n_video)
        elif blk.shape[1] != self.n_video:
            raise DataError(
                f"score_block(slice({a}, {b})) returned {blk.shape[1]} videos, earlier blocks had {self.n_video}"
            )
        self.t2v = self.t2v.to(blk.device)
        return blk, self.t2v[a:b]


# ---------------------------------------------------------------------------------------------------------------
# rank kernels


def _ranks_from_counts(n_ge: torch.Tensor, n_gt: torch.Tensor | None, tie_policy: str) -> torch.Tensor:
    """``n_ge`` = # gallery items >= ground truth (self included), ``n_gt`` = # strictly greater."""
    if tie_policy == "pessimistic":
        return n_ge  # 1 + (n_ge - 1 others)
    if tie_policy == "optimistic":
        return 1 + n_gt
    return (n_ge + 1 + n_gt).to(torch.float64) / 2.0


def _count(scores: torch.Tensor, gt: torch.Tensor, dim: int, tie_policy: str) -> torch.Tensor:
    """Ranks of ``gt`` inside ``scores`` along ``dim`` (NaN gallery scores compare False, i.e. never count)."""
    g = gt.unsqueeze(dim)
    n_ge = (scores >= g).sum(dim) if tie_policy != "optimistic" else None
    n_gt = (scores > g).sum(dim) if tie_policy != "pessimistic" else None
    return _ranks_from_counts(n_ge, n_gt, tie_policy)


def _raise_nan_gt(caption: int, video: int, direction: str) -> None:
    if direction == "t2v":
        where = f"text query {caption}"
    else:
        where = f"V2T query video {video} (its caption {caption})"
    raise DataError(
        f"NaN ground-truth score sim[{caption}, {video}] for {where}; "
        "queries are never dropped, fix the scores"
    )


def _gt_of_rows(blk: torch.Tensor, idx: torch.Tensor, a: int, direction: str) -> torch.Tensor:
    gt = blk.gather(1, idx.unsqueeze(1)).squeeze(1)
    if gt.is_floating_point():
        bad = torch.nonzero(torch.isnan(gt)).flatten()
        if bad.numel():
            i = int(bad[0])
            _raise_nan_gt(a + i, int(idx[i]), direction)
    return gt


def _group_max(sub: torch.Tensor, groups: torch.Tensor, n_groups: int) -> torch.Tensor:
    """``out[g, j] = max over rows c with groups[c] == g of sub[c, j]``, NaN ignored; NaN where a group is all NaN."""
    index = groups.unsqueeze(1).expand(-1, sub.shape[1])
    if not sub.is_floating_point():
        out = torch.empty((n_groups, sub.shape[1]), dtype=sub.dtype, device=sub.device)
        return out.scatter_reduce_(0, index, sub, reduce="amax", include_self=False)
    nan = torch.isnan(sub)
    has_nan = bool(nan.any())
    src = sub.masked_fill(nan, float("-inf")) if has_nan else sub
    out = torch.empty((n_groups, sub.shape[1]), dtype=sub.dtype, device=sub.device)
    out.scatter_reduce_(0, index, src, reduce="amax", include_self=False)
    if has_nan:
        all_nan = torch.empty((n_groups, sub.shape[1]), dtype=torch.uint8, device=sub.device)
        all_nan.scatter_reduce_(0, index, nan.to(torch.uint8), reduce="amin", include_self=False)
        out.masked_fill_(all_nan.bool(), float("nan"))
    return out


def _rank_group_columns(m: torch.Tensor, a: int, tie_policy: str) -> torch.Tensor:
    """``m`` = group scores [n_groups, nj] for videos ``a:a+nj``; rank of group ``a+k`` in column ``k``."""
    nj = m.shape[1]
    cols = torch.arange(nj, device=m.device)
    gt = m[cols + a, cols]
    return _count(m, gt, 0, tie_policy)


def _finish(parts: list[torch.Tensor]) -> np.ndarray:
    return torch.cat(parts).cpu().numpy()


# ---------------------------------------------------------------------------------------------------------------
# public API


def compute_ranks_t2v(
    sim: Similarity,
    text_to_video: Any,
    *,
    chunk_size: int = 1024,
    tie_policy: str = TIE_POLICY,
) -> np.ndarray:
    """1-based text-to-video rank of every caption's own video.

    Args:
        sim: ``[N_text, N_video]`` scores (torch tensor, numpy array or nested lists), or a callable
            ``score_block(text_idx: slice) -> [n, N_video]`` (rows ``text_idx`` of the matrix).
        text_to_video: ``text_to_video[i]`` = index of caption ``i``'s video. ``None`` for a square 1:1 matrix
            (ground truth on the diagonal; matrix form only).
        chunk_size: rows scored at once; memory is bounded by ``chunk_size * N_video``.
        tie_policy: ``"pessimistic"`` (default), ``"optimistic"`` or ``"mean"`` (see module docstring).

    Returns:
        ``np.ndarray`` of shape ``[N_text]``: int64 ranks, float64 for ``tie_policy="mean"``.

    Raises:
        DataError: empty input, inconsistent shapes, an out-of-range video index, a video without captions, or a
            NaN ground-truth score (the message names the query / video).
    """
    _check_policy(tie_policy)
    chunk = _check_chunk(chunk_size)
    src = _Blocks(sim, text_to_video)
    parts = []
    for a in range(0, src.n_text, chunk):
        b = min(a + chunk, src.n_text)
        blk, idx = src.block(a, b)
        gt = _gt_of_rows(blk, idx, a, "t2v")
        parts.append(_count(blk, gt, 1, tie_policy))
    return _finish(parts)


def _v2t_from_rows(src: _Blocks, chunk: int, tie_policy: str, t2v_parts: list | None) -> np.ndarray:
    """One pass over row blocks: accumulate the group-max matrix [n_groups, N_video] (and T2V ranks if asked)."""
    m: torch.Tensor | None = None
    seen: torch.Tensor | None = None  # groups with at least one caption in the blocks so far
    for a in range(0, src.n_text, chunk):
        b = min(a + chunk, src.n_text)
        blk, idx = src.block(a, b)
        gt = _gt_of_rows(blk, idx, a, "t2v" if t2v_parts is not None else "v2t")
        if t2v_parts is not None:
            t2v_parts.append(_count(blk, gt, 1, tie_policy))
        part = _group_max(blk, idx, src.n_video)  # groups absent from this block hold garbage, masked below
        present = torch.zeros(src.n_video, dtype=torch.bool, device=blk.device)
        present[idx] = True
        if m is None:
            m = part
            seen = present
        else:
            if part.dtype != m.dtype:
                m = m.to(torch.promote_types(m.dtype, part.dtype))
                part = part.to(m.dtype)
            both = (present & seen).unsqueeze(1)
            new = (present & ~seen).unsqueeze(1)
            if part.is_floating_point():
                merged = torch.fmax(m, part)  # NaN (all-NaN group so far) loses to a number
            else:
                merged = torch.maximum(m, part)
            m = torch.where(both, merged, torch.where(new, part, m))
            seen = seen | present
    parts = [
        _rank_group_columns(m[:, a : min(a + chunk, src.n_video)], a, tie_policy)
        for a in range(0, src.n_video, chunk)
    ]
    return _finish(parts)


def compute_ranks_v2t(
    sim: Similarity,
    text_to_video: Any,
    *,
    chunk_size: int = 1024,
    tie_policy: str = TIE_POLICY,
) -> np.ndarray:
    """1-based video-to-text rank of every video, over caption groups with best-positive semantics.

    Video ``j`` is the query; gallery item ``g`` is the caption group of video ``g``, scored
    ``max_{c: text_to_video[c] == g} sim[c, j]``; the rank is that of group ``j`` (docs/protocols.md). With one
    caption per video this ranks the columns of ``sim``.

    Args:
        sim: ``[N_text, N_video]`` scores, or a ``score_block(text_idx: slice)`` callable (then a
            ``[N_video, N_video]`` group-score matrix is accumulated over row blocks).
        text_to_video: caption -> video index (``None`` for a square 1:1 matrix).
        chunk_size: videos (columns) ranked at once; memory is bounded by ``N_text * chunk_size`` for a matrix.
        tie_policy: ``"pessimistic"`` (default), ``"optimistic"`` or ``"mean"``.

    Returns:
        ``np.ndarray`` of shape ``[N_video]``: int64 ranks, float64 for ``tie_policy="mean"``.

    Raises:
        DataError: as :func:`compute_ranks_t2v`; a NaN ``sim[c, text_to_video[c]]`` names caption and video.
    """
    _check_policy(tie_policy)
    chunk = _check_chunk(chunk_size)
    src = _Blocks(sim, text_to_video)
    if src.callable:
        return _v2t_from_rows(src, chunk, tie_policy, None)
    s, t2v = src.mat, src.t2v
    n_video = src.n_video
    parts = []
    for a in range(0, n_video, chunk):
        b = min(a + chunk, n_video)
        sub = s[:, a:b]
        if sub.is_floating_point():
            # ground-truth entries sim[c, t2v[c]] for the captions of videos a:b must not be NaN
            caps = torch.nonzero((t2v >= a) & (t2v < b)).flatten()
            gt_vals = sub[caps, t2v[caps] - a]
            bad = torch.nonzero(torch.isnan(gt_vals)).flatten()
            if bad.numel():
                c = int(caps[bad[0]])
                _raise_nan_gt(c, int(t2v[c]), "v2t")
        m = _group_max(sub, t2v, n_video)
        parts.append(_rank_group_columns(m, a, tie_policy))
    return _finish(parts)


def summarize_ranks(ranks: Any) -> dict[str, float]:
    """R@1, R@5, R@10 (percent hit rate), MdR (numpy median), MnR (mean) and RSum from 1-based ranks."""
    r = np.asarray(ranks.cpu() if isinstance(ranks, torch.Tensor) else ranks, dtype=np.float64).reshape(-1)
    if r.size == 0:
        raise DataError("empty input: no ranks to summarise")
    bad = np.flatnonzero(~np.isfinite(r) | (r < 1))
    if bad.size:
        i = int(bad[0])
        raise DataError(f"rank {i} = {r[i]!r} is not a 1-based rank (>= 1, finite)")
    out = {f"R@{k}": float(100.0 * np.mean(r <= k)) for k in RECALL_KS}
    out["MdR"] = float(np.median(r))
    out["MnR"] = float(np.mean(r))
    out["RSum"] = out["R@1"] + out["R@5"] + out["R@10"]
    return {k: out[k] for k in METRIC_KEYS}


def conventions(tie_policy: str = TIE_POLICY) -> dict[str, Any]:
    """The metric conventions recorded with every result."""
    return {
        "tie_policy": _check_policy(tie_policy),
        "median": MEDIAN_CONVENTION,
        "v2t_rank": "best_positive",
        "v2t_gallery": "caption_groups",
        "rank_base": 1,
    }


def retrieval_metrics(
    sim: Similarity,
    text_to_video: Any,
    *,
    chunk_size: int = 1024,
    tie_policy: str = TIE_POLICY,
) -> dict[str, Any]:
    """T2V and V2T metrics plus the conventions and the raw per-query rank vectors.

    A ``score_block`` callable is called once per row block (both directions come from the same pass).

    Returns:
        ``{"t2v": {R@1, R@5, R@10, MdR, MnR, RSum}, "v2t": {...}, "n_queries_t2v": N_text,
        "n_queries_v2t": N_video, "gallery_t2v": N_video, "gallery_v2t": n_groups, "conventions": {...},
        "ranks": {"t2v": np.ndarray, "v2t": np.ndarray}}``
    """
    _check_policy(tie_policy)
    chunk = _check_chunk(chunk_size)
    src = _Blocks(sim, text_to_video)
    if src.callable:
        t2v_parts: list[torch.Tensor] = []
        v2t = _v2t_from_rows(src, chunk, tie_policy, t2v_parts)
        t2v = _finish(t2v_parts)
    else:
        t2v = compute_ranks_t2v(src.mat, src.t2v, chunk_size=chunk, tie_policy=tie_policy)
        v2t = compute_ranks_v2t(src.mat, src.t2v, chunk_size=chunk, tie_policy=tie_policy)
    return {
        "t2v": summarize_ranks(t2v),
        "v2t": summarize_ranks(v2t),
        "n_queries_t2v": int(t2v.shape[0]),
        "n_queries_v2t": int(v2t.shape[0]),
        "gallery_t2v": int(src.n_video),
        "gallery_v2t": int(src.n_video),  # one caption group per video (every video must have a caption)
        "conventions": conventions(tie_policy),
        "ranks": {"t2v": t2v, "v2t": v2t},
    }
