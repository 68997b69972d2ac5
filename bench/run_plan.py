"""What ``bench run`` will do with each (method, dataset, seed), decided before any work starts.

A record answers exactly the config it was made with. An existing record is reused ("skip") only when its
config equals the requested one on every key that can change what the record says; a record made with other
settings is never reported for this request: the command refuses, naming the file and the differing keys,
unless ``--overwrite`` asks to replace it. (Refusing rather than silently writing a second record keeps one
record per (method, dataset, seed) in a folder, which is what ``bench compare`` reads.)

The same preflight checks every path the run will touch: ``--out`` must be creatable, writable and valid
UTF-8 (it is recorded in JSON), and the run's checkpoints must be readable, so that a bad path or a damaged
file is one line at the start instead of a traceback after training.
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from tvr_bench.bench.backbone import pretrained_sha256
from tvr_bench.bench.digest import file_sha256  # noqa: F401  (re-exported: the runner imports it from here)
from tvr_bench.bench.errors import ConfigError, RecordError
from tvr_bench.bench.records import load_record, record_filename

#: Keys that change only where files go or how fast a run is, never a number in its record.
RESULT_NEUTRAL_KEYS = frozenset({
    "data.cache_dir",       # where decoded frames are cached
    "data.memory_cache",    # whether they are also kept in RAM
    "data.memory_cache_budget",  # and how many of them
    "train.num_workers",    # batch order is fixed by (seed, epoch), not by the loader's workers
    "train.log_every",      # console output only
    "eval.chunk_size",      # scoring block size: every pair's score is computed independently of the block
    "eval.memory_budget",   # the same, expressed in bytes
    "eval.checkpoint_format",  # how the file is read; the record names the format it had
    "run.preset",           # the effective values are compared, not how they were requested
    "run.overrides",
})


def _flatten(d: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _flatten(v, f"{prefix}.{k}" if prefix else str(k))
    else:
        yield prefix, list(d) if isinstance(d, tuple) else d


def _result_relevant(cfg: dict) -> dict[str, Any]:
    return {k: v for k, v in _flatten(cfg) if not any(k == n or k.startswith(n + ".") for n in RESULT_NEUTRAL_KEYS)}


def config_differences(requested: dict, recorded: dict) -> list[tuple[str, Any, Any]]:
    """``(key, recorded value, requested value)`` for every result-relevant key that differs (sorted)."""
    a, b = _result_relevant(recorded), _result_relevant(requested)
    missing = object()
    # A key added after the record was made and requested as None (an option that is off, e.g. eval.checkpoint)
    # is how the record's run behaved, not a different setting; any other new value is a difference.
    return [(k, a.get(k, missing), b.get(k, missing)) for k in sorted(a.keys() | b.keys())
            if a.get(k, missing) != b.get(k, missing) and not (k not in a and b.get(k) is None)]


def _describe(diffs: list[tuple[str, Any, Any]], limit: int = 3) -> str:
    def show(v: Any) -> str:
        return "(absent)" if not isinstance(v, (str, int, float, bool, list, dict, type(None))) else repr(v)

    parts = [f"{k}: {show(old)} in the record, {show(new)} requested" for k, old, new in diffs[:limit]]
    more = f", and {len(diffs) - limit} more" if len(diffs) > limit else ""
    return "; ".join(parts) + more


@dataclass(frozen=True)
class Planned:
    """``action`` is ``run`` or ``skip``; ``note`` is the one line to print (a warning or the skip reason)."""

    action: str
    note: str | None = None


def plan_run(out_dir: Path, cfg: dict, *, overwrite: bool) -> Planned:
    """Decide run or skip for one resolved config; raise :class:`ConfigError` for a record of other settings."""
    r = cfg["run"]
    path = Path(out_dir) / record_filename(r["method"], r["dataset"], r["seed"])
    if not path.exists():
        return Planned("run")
    try:
        rec = load_record(path)
    except RecordError as exc:
        first = str(exc).splitlines()[0]
        return Planned("run", f"warning: {first.removeprefix(f'{path}: ')} -- {path} is rerun and replaced")
    if overwrite:
        return Planned("run")
    diffs = config_differences(cfg, rec.get("config", {}))
    if diffs:
        raise ConfigError(f"{path} was made with other settings ({_describe(diffs)}); rerun with --overwrite to "
                          "replace it, or choose another --out")
    weights = (rec.get("training") or {}).get("backbone_weights")
    if isinstance(weights, dict) and weights.get("sha256"):
        # `backbone.pretrained` names a file (or a shipped tag): the record answers only for the weights it used
        if pretrained_sha256(cfg["backbone"]["pretrained"]) != weights["sha256"]:
            raise ConfigError(f"{path} was made with other backbone weights (backbone.pretrained="
                              f"{cfg['backbone']['pretrained']}: its sha256 differs now); rerun with --overwrite to "
                              "replace it, or choose another --out")
    evaluated = (rec.get("training") or {}).get("evaluated_checkpoint")
    if cfg["eval"].get("checkpoint") is not None and isinstance(evaluated, dict):
        # the same path may now hold other weights: the record answers only for the file it evaluated
        if file_sha256(cfg["eval"]["checkpoint"]) != evaluated.get("sha256"):
            raise ConfigError(f"{path} evaluated another file at {cfg['eval']['checkpoint']} (its sha256 "
                              "differs now); rerun with --overwrite to replace it, or choose another --out")
    return Planned("skip", f"skip {r['method']} on {r['dataset']} seed {r['seed']}: {path} exists with these "
                           "settings (use --overwrite to rerun)")


def check_out_dir(out_dir: Path) -> None:
    """``--out`` can hold records: valid UTF-8, not under a file, and creatable/writable (probed, then removed)."""
    text = str(out_dir)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ConfigError(f"--out {os.fsencode(out_dir)!r}: the path is not valid UTF-8 (records store it as "
                          "JSON text); choose a UTF-8 name") from None
    probe = Path(os.path.abspath(out_dir))
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        what = "is a file" if probe == Path(os.path.abspath(out_dir)) else f"is under the file {probe}"
        raise ConfigError(f"--out {out_dir}: {what}; choose a folder")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        raise ConfigError(f"--out {out_dir}: cannot write in {probe} ({exc.strerror or exc}); choose a writable "
                          "folder") from None


def read_eval_checkpoint(path: str | Path, device="cpu", *, mmap: bool = True, fmt: str = "auto"):
    """The weights ``bench eval --checkpoint`` evaluates (a ``bench.checkpoints.loading.Weights``): the file is
    readable, weights-only, and a tvr-bench checkpoint or an official state dict as ``fmt`` asks."""
    from tvr_bench.bench.checkpoints.loading import EVAL_ADVICE, read_weights
    from tvr_bench.bench.train import load_checkpoint

    ck = load_checkpoint(Path(path), device, mmap=mmap, advice=EVAL_ADVICE)
    return read_weights(ck, path, fmt)


def check_checkpoints(ckpt_dir: Path) -> None:
    """Every checkpoint a resumed run would read must be readable (checked cheaply: memory-mapped); a damaged
    one is one line naming it and what to do."""
    from tvr_bench.bench.train import load_checkpoint

    for name in ("last.pt", "best.pt"):
        path = ckpt_dir / name
        if path.exists():
            ck = load_checkpoint(path, "cpu", mmap=True)
            if not isinstance(ck, dict) or "model" not in ck or "config_hash" not in ck:
                raise ConfigError(f"checkpoint {path} is not a tvr-bench checkpoint (no model / config_hash "
                                  "entries); delete it, or rerun with --overwrite to start this run afresh")
