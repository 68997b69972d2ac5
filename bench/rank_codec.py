"""Per-query ranks in a run record: compact, exact, one JSON line per direction.

A record keeps the rank of the correct item for every test query (T2V and V2T) so that confidence intervals
and paired tests can be computed afterwards (``bench/report/stats.py``), long after the model is gone. The
vector is stored as ``2 x rank`` (exact for the x.5 ranks of the ``mean`` tie policy) in the smallest unsigned
little-endian integer type that holds it, zlib-compressed and base64-encoded:

    {"encoding": "zlib+base64", "dtype": "<u2", "scale": 2, "n": 1000, "data": "eJz..."}

1000 MSR-VTT queries take about 2 KB, against ~5 KB as a JSON list (and one line instead of a thousand in an
indented record). :func:`decode_ranks` checks everything it reads, so a damaged vector is named, never used.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from typing import Any

import numpy as np

ENCODING = "zlib+base64"
SCALE = 2
_DTYPES = ("<u2", "<u4")


def encode_ranks(ranks: Any) -> dict[str, Any]:
    arr = np.asarray(ranks, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)) or np.any(arr < 1):
        raise ValueError(f"ranks must be a non-empty 1-D array of finite 1-based ranks, got shape {arr.shape}")
    doubled = arr * SCALE
    if not np.array_equal(doubled, np.round(doubled)):
        raise ValueError("ranks must be integers or halves (the tie policies' ranks)")
    dtype = "<u2" if doubled.max() < 2**16 else "<u4"
    data = zlib.compress(doubled.astype(dtype).tobytes(), 9)
    return {"encoding": ENCODING, "dtype": dtype, "scale": SCALE, "n": int(arr.size),
            "data": base64.b64encode(data).decode("ascii")}


def decode_ranks(block: Any) -> np.ndarray:
    """The float64 rank vector of an :func:`encode_ranks` block; ValueError saying what is wrong."""
    if not isinstance(block, dict):
        raise ValueError(f"expected an encoded rank vector (object), got {type(block).__name__}")
    if block.get("encoding") != ENCODING or block.get("scale") != SCALE or block.get("dtype") not in _DTYPES:
        raise ValueError(f"unknown rank encoding {block.get('encoding')!r}/{block.get('dtype')!r}/"
                         f"scale {block.get('scale')!r}; expected {ENCODING}, one of {_DTYPES}, scale {SCALE}")
    n = block.get("n")
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    try:
        raw = zlib.decompress(base64.b64decode(str(block.get("data", "")), validate=True))
    except (binascii.Error, zlib.error, ValueError) as exc:
        raise ValueError(f"rank data is not valid zlib+base64 ({exc})") from None
    arr = np.frombuffer(raw, dtype=block["dtype"])
    if arr.size != n:
        raise ValueError(f"rank data holds {arr.size} ranks, n says {n}")
    ranks = arr.astype(np.float64) / SCALE
    if np.any(ranks < 1):
        raise ValueError("rank data holds a rank below 1")
    return ranks
