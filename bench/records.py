"""Run records: one JSON file per (method, dataset, seed).

A run record is the only thing the reporting side (``bench compare``, ``bench check``, reports)
reads, so its schema is validated on write *and* on read. ``SCHEMA_VERSION`` is bumped whenever a
required field changes meaning.

Schema (version 1)
==================

============================  ===============  ====================================================
JSON path                     type             meaning / constraint
============================  ===============  ====================================================
``schema_version``            int              must equal ``SCHEMA_VERSION`` (1)
``method``                    str              method name (non-empty)
``dataset``                   str              dataset name (non-empty)
``seed``                      int              random seed of the run
``kind``                      str              ``"run"`` (train + eval), ``"cost"`` (cost only) or
                                               ``"efficiency"`` (``bench efficiency``: cost at paper
                                               shapes, no training)
``metrics``                   dict / null      null only when ``kind`` is ``"cost"``; always null
                                               when ``kind == "efficiency"``
``metrics.t2v``               dict             text-to-video results, keys below
``metrics.v2t``               dict             video-to-text results, keys below
``metrics.<dir>.R@K``         float            recall (percent) for K in 1, 5, 10: in [0, 100],
                                               R@1 <= R@5 <= R@10
``metrics.<dir>.MdR``         float            median rank (1-based), >= 1
``metrics.<dir>.MnR``         float            mean rank (1-based), >= 1
``metrics.<dir>.RSum``        float            R@1 + R@5 + R@10 (checked to 1e-6)
``metrics.last_epoch``        dict, optional   same structure as ``metrics`` (t2v / v2t): results of
                                               the last epoch when the reported checkpoint is the
                                               best-on-validation one
``metrics.*``                 any, optional    free extras, e.g. ``selection`` (str),
                                               ``conventions`` (dict), ``n_queries`` (int)
``cost``                      dict             query-time cost, keys below
``cost.params``               dict             ``total``, ``trainable``, ``head``: ints >= 0,
                                               trainable <= total
``cost.flops``                dict             ``text_per_query``, ``score_per_pair``,
                                               ``per_query``, ``video_per_video``, ``gallery_size``:
                                               numbers >= 0; optional ``convention`` (str)
``cost.memory``               dict             ``peak_bytes`` (int >= 0), ``kind`` (one of
                                               ``cuda_allocated_peak``, ``cpu_peak_rss``)
``cost.latency_ms``           float / dict     >= 0; a dict maps names (``median``, ``mean``,
                                               ``p90``, ...) to numbers >= 0
``cost.device``               str              device the cost was measured on
``config``                    dict             the full resolved config of the run
``provenance``                dict             ``git_sha`` (str / null), ``git_dirty``
                                               (bool / null), ``packages`` (dict name -> version),
                                               ``device`` (str), ``command`` (str or list of str),
                                               ``started_at`` / ``finished_at`` (ISO-8601 str)
``efficiency``                dict             only (and required) when ``kind == "efficiency"``:
                                               ``latency.by_gallery`` is a non-empty list of
                                               rows, each with ``gallery_size`` (int > 0) and
                                               ``status`` ``"measured"`` (with ``median_ms``
                                               >= 0) or ``"skipped"`` (with a ``reason`` str and
                                               an ``extrapolated_ms`` >= 0): never a silent gap
(other top-level keys)        any              allowed, e.g. ``protocol`` (dict; its
                                               ``fingerprint`` str identifies the evaluation
                                               protocol), ``timings``, ``dataset_fingerprint``
============================  ===============  ====================================================

Extra keys are allowed everywhere; only the keys above are checked. Non-finite numbers (NaN, inf)
are rejected wherever a number is required.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any, Iterable

from tvr_bench.bench.errors import RecordError

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
    "atomic_write_text",
    "load_record",
    "load_records",
    "record_exists",
    "latency_scalar",
    "flatten_record",
    "records_to_frame",
]

SCHEMA_VERSION = 1

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

_RSUM_TOL = 1e-6


# --------------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------------


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(float(x))


def _fmt(x: Any) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) < 1e15:
        return str(int(x))
    return repr(x) if isinstance(x, str) else str(x)


def _type_name(x: Any) -> str:
    return "null" if x is None else type(x).__name__


def _check_rank_block(block: Any, path: str, problems: list[str]) -> None:
    """Validate one ``{"t2v": {...}, "v2t": {...}}`` block (``metrics`` or ``metrics.last_epoch``)."""
    if not isinstance(block, dict):
        problems.append(f"{path}: expected an object, got {_type_name(block)}")
        return
    for d in DIRECTIONS:
        p = f"{path}.{d}"
        sub = block.get(d)
        if d not in block:
            problems.append(f"{p}: missing")
            continue
        if not isinstance(sub, dict):
            problems.append(f"{p}: expected an object, got {_type_name(sub)}")
            continue
        ok: dict[str, float] = {}
        for m in RANK_METRICS:
            if m not in sub:
                problems.append(f"{p}.{m}: missing")
                continue
            v = sub[m]
            if not _is_num(v):
                problems.append(f"{p}.{m}: expected a finite number, got {_fmt(v)} ({_type_name(v)})")
                continue
            v = float(v)
            if m in RECALL_KEYS and not 0.0 <= v <= 100.0:
                problems.append(f"{p}.{m}: {_fmt(v)} not in [0, 100]")
                continue
            if m in ("MdR", "MnR") and v < 1.0:
                problems.append(f"{p}.{m}: {_fmt(v)} < 1 (ranks are 1-based)")
                continue
            ok[m] = v
        if all(k in ok for k in RECALL_KEYS):
            r1, r5, r10 = (ok[k] for k in RECALL_KEYS)
            if not r1 <= r5 <= r10:
                problems.append(
                    f"{p}: recalls not monotone: R@1={_fmt(r1)}, R@5={_fmt(r5)}, R@10={_fmt(r10)} "
                    "(need R@1 <= R@5 <= R@10)"
                )
            if "RSum" in ok and abs(ok["RSum"] - (r1 + r5 + r10)) > _RSUM_TOL:
                problems.append(f"{p}.RSum: {_fmt(ok['RSum'])} != R@1+R@5+R@10 = {_fmt(r1 + r5 + r10)}")


def _check_cost(cost: Any, problems: list[str]) -> None:
    if not isinstance(cost, dict):
        problems.append(f"cost: expected an object, got {_type_name(cost)}")
        return
    # params
    params = cost.get("params")
    if "params" not in cost:
        problems.append("cost.params: missing")
    elif not isinstance(params, dict):
        problems.append(f"cost.params: expected an object, got {_type_name(params)}")
    else:
        for k in PARAM_KEYS:
            v = params.get(k)
            if k not in params:
                problems.append(f"cost.params.{k}: missing")
            elif not _is_int(v) or v < 0:
                problems.append(f"cost.params.{k}: expected an integer >= 0, got {_fmt(v)} ({_type_name(v)})")
        t, tr = params.get("total"), params.get("trainable")
        if _is_int(t) and _is_int(tr) and tr > t:
            problems.append(f"cost.params.trainable: {tr} > total {t}")
    # flops
    flops = cost.get("flops")
    if "flops" not in cost:
        problems.append("cost.flops: missing")
    elif not isinstance(flops, dict):
        problems.append(f"cost.flops: expected an object, got {_type_name(flops)}")
    else:
        for k in FLOPS_KEYS:
            v = flops.get(k)
            if k not in flops:
                problems.append(f"cost.flops.{k}: missing")
            elif not _is_num(v) or v < 0:
                problems.append(f"cost.flops.{k}: expected a number >= 0, got {_fmt(v)} ({_type_name(v)})")
        if "convention" in flops and not isinstance(flops["convention"], str):
            problems.append(f"cost.flops.convention: expected a string, got {_type_name(flops['convention'])}")
    # memory
    mem = cost.get("memory")
    if "memory" not in cost:
        problems.append("cost.memory: missing")
    elif not isinstance(mem, dict):
        problems.append(f"cost.memory: expected an object, got {_type_name(mem)}")
    else:
        pb = mem.get("peak_bytes")
        if "peak_bytes" not in mem:
            problems.append("cost.memory.peak_bytes: missing")
        elif not _is_int(pb) or pb < 0:
            problems.append(f"cost.memory.peak_bytes: expected an integer >= 0, got {_fmt(pb)} ({_type_name(pb)})")
        kind = mem.get("kind")
        if "kind" not in mem:
            problems.append("cost.memory.kind: missing")
        elif kind not in MEMORY_KINDS:
            problems.append(f"cost.memory.kind: {_fmt(kind)} not one of {', '.join(MEMORY_KINDS)}")
    # latency
    lat = cost.get("latency_ms")
    if "latency_ms" not in cost:
        problems.append("cost.latency_ms: missing")
    elif isinstance(lat, dict):
        if not lat:
            problems.append("cost.latency_ms: empty object")
        for k, v in lat.items():
            if isinstance(v, (dict, list, str)) or v is None:
                continue  # free-form extras (e.g. "n_repeats", "samples") are allowed
            if not _is_num(v) or v < 0:
                problems.append(f"cost.latency_ms.{k}: expected a number >= 0, got {_fmt(v)}")
    elif not _is_num(lat) or lat < 0:
        problems.append(f"cost.latency_ms: expected a number >= 0 or an object, got {_fmt(lat)} ({_type_name(lat)})")
    # device
    dev = cost.get("device")
    if "device" not in cost:
        problems.append("cost.device: missing")
    elif not isinstance(dev, str) or not dev:
        problems.append(f"cost.device: expected a non-empty string, got {_fmt(dev)} ({_type_name(dev)})")


def _check_iso(v: Any, path: str, problems: list[str]) -> None:
    if not isinstance(v, str):
        problems.append(f"{path}: expected an ISO-8601 string, got {_type_name(v)}")
        return
    try:
        datetime.fromisoformat(v)
    except ValueError:
        problems.append(f"{path}: {v!r} is not an ISO-8601 timestamp")


def _check_provenance(prov: Any, problems: list[str]) -> None:
    if not isinstance(prov, dict):
        problems.append(f"provenance: expected an object, got {_type_name(prov)}")
        return
    for k in PROVENANCE_KEYS:
        if k not in prov:
            problems.append(f"provenance.{k}: missing")
    if "git_sha" in prov and not (prov["git_sha"] is None or isinstance(prov["git_sha"], str)):
        problems.append(f"provenance.git_sha: expected a string or null, got {_type_name(prov['git_sha'])}")
    if "git_dirty" in prov and not (prov["git_dirty"] is None or isinstance(prov["git_dirty"], bool)):
        problems.append(f"provenance.git_dirty: expected a boolean or null, got {_type_name(prov['git_dirty'])}")
    if "packages" in prov and not isinstance(prov["packages"], dict):
        problems.append(f"provenance.packages: expected an object, got {_type_name(prov['packages'])}")
    if "device" in prov and not isinstance(prov["device"], str):
        problems.append(f"provenance.device: expected a string, got {_type_name(prov['device'])}")
    if "command" in prov:
        c = prov["command"]
        if not (isinstance(c, str) or (isinstance(c, list) and all(isinstance(x, str) for x in c))):
            problems.append(f"provenance.command: expected a string or a list of strings, got {_type_name(c)}")
    for k in ("started_at", "finished_at"):
        if k in prov:
            _check_iso(prov[k], f"provenance.{k}", problems)


def _check_efficiency(eff: Any, present: bool, problems: list[str]) -> None:
    """The part of an efficiency record that makes a gap visible: every latency size measured or skipped."""
    if not present:
        problems.append("efficiency: missing")
        return
    if not isinstance(eff, dict):
        problems.append(f"efficiency: expected an object, got {_type_name(eff)}")
        return
    lat = eff.get("latency")
    rows = lat.get("by_gallery") if isinstance(lat, dict) else None
    if not isinstance(rows, list) or not rows:
        problems.append("efficiency.latency.by_gallery: expected a non-empty list")
        return
    for i, row in enumerate(rows):
        p = f"efficiency.latency.by_gallery[{i}]"
        if not isinstance(row, dict):
            problems.append(f"{p}: expected an object, got {_type_name(row)}")
            continue
        n = row.get("gallery_size")
        if not _is_int(n) or n <= 0:
            problems.append(f"{p}.gallery_size: expected an integer > 0, got {_fmt(n)}")
        status = row.get("status")
        if status == "measured":
            v = row.get("median_ms")
            if not _is_num(v) or v < 0:
                problems.append(f"{p}.median_ms: expected a number >= 0, got {_fmt(v)}")
        elif status == "skipped":
            if not isinstance(row.get("reason"), str) or not row["reason"].strip():
                problems.append(f"{p}.reason: a skipped size must say why")
            v = row.get("extrapolated_ms")
            if not _is_num(v) or v < 0:
                problems.append(f"{p}.extrapolated_ms: expected a number >= 0, got {_fmt(v)}")
        else:
            problems.append(f"{p}.status: {_fmt(status)} not one of measured, skipped")


def record_problems(rec: Any) -> list[str]:
    """Every schema problem of ``rec``, each prefixed with its JSON path; ``[]`` when valid."""
    if not isinstance(rec, dict):
        return [f"(record): expected a JSON object, got {_type_name(rec)}"]
    problems: list[str] = []
    for k in REQUIRED_TOP:
        if k not in rec:
            problems.append(f"{k}: missing")
    sv = rec.get("schema_version")
    if "schema_version" in rec and (not _is_int(sv) or sv != SCHEMA_VERSION):
        problems.append(f"schema_version: {_fmt(sv)} is not the supported version {SCHEMA_VERSION}")
    for k in ("method", "dataset"):
        if k in rec and (not isinstance(rec[k], str) or not rec[k].strip()):
            problems.append(f"{k}: expected a non-empty string, got {_fmt(rec[k])} ({_type_name(rec[k])})")
    if "seed" in rec and not _is_int(rec["seed"]):
        problems.append(f"seed: expected an integer, got {_fmt(rec['seed'])} ({_type_name(rec['seed'])})")
    kind = rec.get("kind")
    if "kind" in rec and kind not in KINDS:
        problems.append(f"kind: {_fmt(kind)} not one of {', '.join(KINDS)}")
    if "metrics" in rec:
        m = rec["metrics"]
        if m is None:
            if kind not in ("cost", "efficiency"):
                problems.append('metrics: null is only allowed when kind is "cost" or "efficiency"')
        elif kind == "efficiency":
            problems.append("metrics: must be null when kind is \"efficiency\" (cost only, no training)")
        else:
            _check_rank_block(m, "metrics", problems)
            if isinstance(m, dict) and "last_epoch" in m and m["last_epoch"] is not None:
                _check_rank_block(m["last_epoch"], "metrics.last_epoch", problems)
            if isinstance(m, dict) and "selection" in m and not isinstance(m["selection"], str):
                problems.append(f"metrics.selection: expected a string, got {_type_name(m['selection'])}")
            if isinstance(m, dict) and "conventions" in m and not isinstance(m["conventions"], dict):
                problems.append(f"metrics.conventions: expected an object, got {_type_name(m['conventions'])}")
    if "cost" in rec:
        _check_cost(rec["cost"], problems)
    if kind == "efficiency":
        _check_efficiency(rec.get("efficiency"), "efficiency" in rec, problems)
    if "config" in rec and not isinstance(rec["config"], dict):
        problems.append(f"config: expected an object, got {_type_name(rec['config'])}")
    if "provenance" in rec:
        _check_provenance(rec["provenance"], problems)
    if "protocol" in rec:
        proto = rec["protocol"]
        if not isinstance(proto, dict):
            problems.append(f"protocol: expected an object, got {_type_name(proto)}")
        elif "fingerprint" in proto and not isinstance(proto["fingerprint"], str):
            problems.append(f"protocol.fingerprint: expected a string, got {_type_name(proto['fingerprint'])}")
    return problems


def record_label(rec: Any) -> str:
    """Short human name of a record, e.g. ``glccl/msrvtt/seed0`` (``... (cost)`` for cost records)."""
    if not isinstance(rec, dict):
        return "<not a record>"
    label = f"{rec.get('method', '?')}/{rec.get('dataset', '?')}/seed{rec.get('seed', '?')}"
    return label + f" ({rec['kind']})" if rec.get("kind") in ("cost", "efficiency") else label


def record_key(rec: dict) -> tuple[str, str, int, str]:
    """Identity of a record: ``(method, dataset, seed, kind)``."""
    return (rec["method"], rec["dataset"], int(rec["seed"]), rec["kind"])


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


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically: temp file in the same folder, fsync, ``os.replace``.

    Readers see either the old file or the complete new one, never a partial file; on any error the
    temp file is removed. The temp name starts with ``.`` so folder scans skip it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename durable; not possible on every platform / file system
        dfd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
    return path


def write_record(rec: dict, out_dir: str | os.PathLike) -> Path:
    """Validate ``rec`` and write it atomically to ``out_dir/record_filename(...)``; return the path.

    On a validation or serialisation error nothing is written. An existing record for the same
    (method, dataset, seed) is replaced.
    """
    validate_record(rec)
    try:
        text = json.dumps(rec, indent=2, ensure_ascii=False, allow_nan=False, default=_json_default) + "\n"
    except (TypeError, ValueError) as e:
        raise RecordError(f"run record {record_label(rec)} cannot be written as JSON: {e}") from e
    out = Path(out_dir) / record_filename(rec["method"], rec["dataset"], rec["seed"])
    return atomic_write_text(out, text)


def load_record(path: str | os.PathLike) -> dict:
    """Read and validate one record; :class:`RecordError` names the file on any problem."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecordError(f"{path}: run record not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise RecordError(f"{path}: cannot read run record: {e}") from e
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


def _skipped(rel: Path) -> bool:
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
        if not f.is_file() or _skipped(f.relative_to(p)):
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
