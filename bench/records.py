"""Run records: one JSON file per (method, dataset, seed).

A run record is the only thing the reporting side (``bench compare``, ``bench check``, reports)
reads, so its schema is validated on write *and* on read. ``SCHEMA_VERSION`` is bumped whenever a
required field changes meaning.

The schema is the typed model :class:`tvr_bench.bench.record_model.RunRecord` (pydantic); its JSON Schema is
shipped as ``bench/record.schema.json`` and printed by ``bench schema``. Extra keys are allowed everywhere;
non-finite numbers are rejected wherever a number is required. A problem is reported with its JSON path
(e.g. ``metrics.t2v.R@1: Input should be less than or equal to 100 (got 130)``).
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from tvr_bench.bench.atomic import atomic_write_text
from tvr_bench.bench.errors import RecordError, read_user_text
from tvr_bench.bench.record_model import SCHEMA_VERSION, record_problems

__all__ = [
    "SCHEMA_VERSION",
    "KINDS",
    "DIRECTIONS",
    "RANK_METRICS",
    "PARAM_KEYS",
    "FLOPS_KEYS",
    "MEMORY_KINDS",
    "PROVENANCE_KEYS",
    "RECORD_COLUMNS",
    "validate_record",
    "record_problems",
    "record_filename",
    "record_label",
    "record_key",
    "write_record",
    "load_record",
    "load_records",
    "record_exists",
    "latency_scalar",
    "flatten_record",
    "records_to_frame",
]


KINDS = ("run", "cost", "efficiency")
DIRECTIONS = ("t2v", "v2t")
RECALL_KEYS = ("R@1", "R@5", "R@10")
RANK_METRICS = ("R@1", "R@5", "R@10", "MdR", "MnR", "RSum")
PARAM_KEYS = ("total", "trainable", "head")
FLOPS_KEYS = ("text_per_query", "score_per_pair", "per_query", "video_per_video", "gallery_size")
MEMORY_KINDS = ("cuda_allocated_peak", "cpu_peak_rss")
PROVENANCE_KEYS = ("git_sha", "git_dirty", "packages", "device", "command", "started_at", "finished_at")
REQUIRED_TOP = ("schema_version", "method", "dataset", "seed", "kind", "metrics", "cost", "config", "provenance")

#: Preferred keys when ``cost.latency_ms`` is a dict and one number is needed (tables, checks).
LATENCY_KEYS = ("median", "p50", "mean", "per_query", "value")

#: Columns of :func:`records_to_frame`, in order.
RECORD_COLUMNS = (
    ["method", "dataset", "seed", "kind"]
    + [f"{d}_{m}" for d in DIRECTIONS for m in RANK_METRICS]
    + [f"params_{k}" for k in PARAM_KEYS]
    + [f"flops_{k}" for k in FLOPS_KEYS[:-1]]
    + ["gallery_size", "memory_peak_bytes", "memory_kind", "latency_ms", "device", "protocol_fingerprint"]
)



# --------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(float(x))


def record_label(rec: Any) -> str:
    """Short human name of a record, e.g. ``glccl/msrvtt/seed0`` (``... (cost)`` for cost records)."""
    if not isinstance(rec, dict):
        return "<not a record>"
    label = f"{rec.get('method', '?')}/{rec.get('dataset', '?')}/seed{rec.get('seed', '?')}"
    return label + f" ({rec['kind']})" if rec.get("kind") in ("cost", "efficiency") else label


def record_key(rec: dict) -> tuple[str, str, int, str]:
    """Identity of a record: ``(method, dataset, seed, kind)``."""
    return (rec["method"], rec["dataset"], int(rec["seed"]), rec["kind"])


def index_records(records: Sequence[dict], where: Callable[[int], str]) -> dict[tuple, dict]:
    """Validate ``records`` and key them by :func:`record_key`, in order; the first invalid or repeated record
    is a :class:`RecordError` prefixed with ``where(i)`` (its place, e.g. ``baseline.json: records[3]``)."""
    out: dict[tuple, dict] = {}
    first: dict[tuple, int] = {}
    for i, rec in enumerate(records):
        try:
            validate_record(rec)
        except RecordError as e:
            raise RecordError(f"{where(i)}: {e}") from None
        key = record_key(rec)
        if key in out:
            raise RecordError(f"{where(i)}: duplicate record {record_label(rec)} (also at index {first[key]})")
        out[key], first[key] = rec, i
    return out


def validate_record(rec: dict) -> dict:
    """Return ``rec`` unchanged if it follows the schema; otherwise raise :class:`RecordError`.

    The error message lists every problem with its JSON path (e.g.
    ``metrics.t2v.R@1: 130 not in [0, 100]``); the list is also on ``err.problems``.
    """
    problems = record_problems(rec)
    if problems:
        n = len(problems)
        msg = f"invalid run record {record_label(rec)} ({n} problem{'s' if n > 1 else ''}):\n" + "\n".join(
            f"  - {p}" for p in problems
        )
        err = RecordError(msg)
        err.problems = problems  # type: ignore[attr-defined]
        raise err
    return rec


# --------------------------------------------------------------------------------------------------
# files
# --------------------------------------------------------------------------------------------------

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def _sanitise(name: Any, what: str) -> str:
    s = _UNSAFE.sub("-", str(name).strip())
    s = re.sub(r"_{2,}", "_", s)  # "__" is the field separator of record file names
    s = re.sub(r"-{2,}", "-", s).strip("-._")
    if not s:
        raise RecordError(f"cannot build a record file name: {what} {name!r} has no usable characters")
    return s


def record_filename(method: str, dataset: str, seed: int) -> str:
    """File name of a record, e.g. ``glccl__synthetic__seed0.json``.

    Names are sanitised: characters outside ``[A-Za-z0-9._+-]`` become ``-`` and runs of ``_`` collapse
    to one (``__`` separates the fields), so the name is safe on every file system.
    """
    if not _is_int(seed):
        raise RecordError(f"cannot build a record file name: seed {seed!r} is not an integer")
    return f"{_sanitise(method, 'method')}__{_sanitise(dataset, 'dataset')}__seed{int(seed)}.json"


def _json_default(o: Any) -> Any:
    if hasattr(o, "item") and callable(o.item):  # numpy / torch scalars
        return o.item()
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    raise TypeError(f"object of type {type(o).__name__} is not JSON serialisable")


def write_record(rec: dict, out_dir: str | os.PathLike) -> Path:
    """Validate ``rec`` and write it atomically to ``out_dir/record_filename(...)``; return the path.

    On a validation or serialisation error nothing is written. An existing record for the same
    (method, dataset, seed) is replaced.
    """
    try:
        text = json.dumps(rec, indent=2, ensure_ascii=False, allow_nan=False, default=_json_default) + "\n"
    except (TypeError, ValueError) as e:
        raise RecordError(f"run record {record_label(rec)} cannot be written as JSON: {e}") from e
    validate_record(json.loads(text))  # what goes to disk (numpy scalars become JSON numbers)
    out = Path(out_dir) / record_filename(rec["method"], rec["dataset"], rec["seed"])
    return atomic_write_text(out, text, point="record_write")


def load_record(path: str | os.PathLike) -> dict:
    """Read and validate one record; :class:`RecordError` names the file on any problem."""
    path = Path(path)
    text = read_user_text(path, RecordError, str(path), "run record")
    try:
        rec = json.loads(text)
    except json.JSONDecodeError as e:
        raise RecordError(f"{path}: not valid JSON: {e}") from e
    try:
        return validate_record(rec)
    except RecordError as e:
        err = RecordError(f"{path}: {e}")
        err.problems = getattr(e, "problems", [])  # type: ignore[attr-defined]
        raise err from None


def skipped_in_folder(rel: Path) -> bool:
    """Whether a path relative to a records folder is left out (a part named `_...` or `.`: temps, notes)."""
    return any(part.startswith((".", "_")) for part in rel.parts)


def load_records(path_or_dir: str | os.PathLike) -> list[dict]:
    """Load one record file, or every ``*.json`` under a folder (recursively, sorted by path).

    In a folder, files and sub-folders whose name starts with ``_`` or ``.`` are skipped (temp files,
    notes, checkpoints); every other ``*.json`` must be a valid record, or :class:`RecordError` names
    it. Two files holding the same (method, dataset, seed, kind) also raise, naming both.
    """
    p = Path(path_or_dir)
    if p.is_file():
        return [load_record(p)]
    if not p.is_dir():
        raise RecordError(f"{p}: no such record file or folder")
    records: list[dict] = []
    seen: dict[tuple, Path] = {}
    for f in sorted(p.rglob("*.json")):
        if not f.is_file() or skipped_in_folder(f.relative_to(p)):
            continue
        rec = load_record(f)
        key = record_key(rec)
        if key in seen:
            raise RecordError(f"{f}: duplicate run record {record_label(rec)} (also in {seen[key]})")
        seen[key] = f
        records.append(rec)
    return records


def record_exists(out_dir: str | os.PathLike, method: str, dataset: str, seed: int) -> bool:
    """True when ``out_dir`` holds a *valid* record for (method, dataset, seed).

    An unreadable or invalid file counts as absent, so a resumed sweep redoes (and overwrites) it.
    """
    f = Path(out_dir) / record_filename(method, dataset, seed)
    if not f.is_file():
        return False
    try:
        load_record(f)
    except RecordError:
        return False
    return True


# --------------------------------------------------------------------------------------------------
# tables
# --------------------------------------------------------------------------------------------------


def latency_scalar(lat: Any) -> float | None:
    """One latency number in ms: the value itself, or from a dict its ``median``, ``p50``, ``mean``,
    ``per_query`` or ``value`` entry (first present), else its only numeric entry; ``None`` otherwise."""
    if _is_num(lat):
        return float(lat)
    if isinstance(lat, dict):
        for k in LATENCY_KEYS:
            if _is_num(lat.get(k)):
                return float(lat[k])
        nums = [v for v in lat.values() if _is_num(v)]
        if len(nums) == 1:
            return float(nums[0])
    return None


def _num(x: Any) -> float | None:
    return float(x) if _is_num(x) else None


def flatten_record(rec: dict) -> dict[str, Any]:
    """One flat row (keys :data:`RECORD_COLUMNS`) of a record; absent values are ``None``."""
    row: dict[str, Any] = {c: None for c in RECORD_COLUMNS}
    row.update(method=rec.get("method"), dataset=rec.get("dataset"), seed=rec.get("seed"), kind=rec.get("kind"))
    metrics = rec.get("metrics") or {}
    for d in DIRECTIONS:
        block = metrics.get(d) or {}
        for m in RANK_METRICS:
            row[f"{d}_{m}"] = _num(block.get(m))
    cost = rec.get("cost") or {}
    params = cost.get("params") or {}
    for k in PARAM_KEYS:
        v = params.get(k)
        row[f"params_{k}"] = int(v) if _is_int(v) else None
    flops = cost.get("flops") or {}
    for k in FLOPS_KEYS[:-1]:
        row[f"flops_{k}"] = _num(flops.get(k))
    row["gallery_size"] = _num(flops.get("gallery_size"))
    mem = cost.get("memory") or {}
    row["memory_peak_bytes"] = int(mem["peak_bytes"]) if _is_int(mem.get("peak_bytes")) else None
    row["memory_kind"] = mem.get("kind")
    row["latency_ms"] = latency_scalar(cost.get("latency_ms"))
    row["device"] = cost.get("device")
    proto = rec.get("protocol")
    if isinstance(proto, dict) and isinstance(proto.get("fingerprint"), str):
        row["protocol_fingerprint"] = proto["fingerprint"]
    return row


def records_to_frame(records: Iterable[dict]):
    """A pandas DataFrame with one row per record and the columns :data:`RECORD_COLUMNS`.

    Metric columns are ``<t2v|v2t>_<R@1|R@5|R@10|MdR|MnR|RSum>``; missing values (e.g. the metrics of
    a cost-only record) are NaN / None.
    """
    import pandas as pd

    rows = [flatten_record(r) for r in records]
    df = pd.DataFrame(rows, columns=list(RECORD_COLUMNS))
    float_cols = [c for c in RECORD_COLUMNS if c.startswith(("t2v_", "v2t_", "flops_"))] + [
        "gallery_size",
        "latency_ms",
    ]
    for c in float_cols:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("float64")
    for c in ["seed", "memory_peak_bytes"] + [f"params_{k}" for k in PARAM_KEYS]:
        df[c] = pd.to_numeric(df[c], errors="coerce").astype("Int64")
    return df
