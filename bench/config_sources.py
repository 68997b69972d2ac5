"""Where a run's settings can come from besides ``--preset`` and ``--set``: a config file (``--config run.yaml``)
and an earlier run record (``--from-record``).

Both are turned into the same ``key=value`` overrides ``--set`` produces, tagged with their origin, so they go
through the one typed path of :func:`bench.config.apply_overrides` (unknown key -> "did you mean", bad value ->
one line) and are recorded in ``run.overrides`` like any ``--set``. Precedence, lowest first: the preset, the
record, the config file, ``--set`` (and ``--root``).
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tvr_bench.bench.errors import ConfigError, read_user_text

#: One override: the ``key=value`` text and where it came from (named in error messages).
Override = tuple[str, str]


def _leaves(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in tree.items():
        if isinstance(v, dict) and v:
            out.update(_leaves(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _as_override(key: str, value: Any, origin: str) -> Override:
    # JSON is YAML: parse_override reads the value back with its type (a quoted string stays a string)
    return f"{key}={json.dumps(value)}", origin


def config_file_overrides(path: str | Path) -> list[Override]:
    """The leaves of a YAML/JSON config file as overrides. The file holds sections of the resolved config
    (``train:``, ``data:``, ``method:``, ``eval:``, ``backbone:``, ``cost:``), any subset, nested or dotted
    (``train.lr: 1e-4``)."""
    path = Path(path)
    origin = f"--config {path}"
    text = read_user_text(path, ConfigError, origin, "file")
    try:
        tree = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" at line {where.line + 1}" if where is not None else ""
        raise ConfigError(f"--config {path}: not valid YAML{at} ({getattr(exc, 'problem', exc)})") from None
    if tree is None:
        return []
    if not isinstance(tree, dict):
        raise ConfigError(f"--config {path}: expected a mapping of config sections, got {type(tree).__name__}")
    if "run" in tree:
        raise ConfigError(f"--config {path}: 'run' is set by the command line (--method, --dataset, --seed, "
                          "--preset, --device), not by a config file; to repeat a record's run use --from-record")
    return [_as_override(k, v, origin) for k, v in _leaves(tree).items()]


@dataclass(frozen=True)
class RecordRerun:
    """What ``--from-record`` takes from a record: its run identity and the settings that differ from what
    its preset resolves to today."""

    path: Path
    method: str
    dataset: str
    seed: int
    preset: str
    overrides: list[Override] = field(default_factory=list)
    # keys this version has and the record lacks, with a value that is not "off" (None)
    new_keys: list[str] = field(default_factory=list)


def record_rerun(path: str | Path) -> RecordRerun:
    """Read a run record and express its resolved config as overrides of its own preset, as resolved by this
    version: every leaf whose value differs becomes an override, so a changed default does not change the
    rerun. A key the record has and this version lacks is refused (the run cannot be reproduced as recorded);
    keys new since the record take this version's defaults and are listed in ``new_keys``."""
    from tvr_bench.bench.config import resolve_config
    from tvr_bench.bench.records import load_record
    from tvr_bench.bench.registry import DATASETS, METHODS

    path = Path(path)
    rec = load_record(path)  # RecordError names the file
    cfg = copy.deepcopy(rec["config"])
    run = cfg.pop("run")
    method, dataset, preset = run["method"], run["dataset"], run.get("preset", "default")
    method_cls, dataset_cls = METHODS.get(method), DATASETS.get(dataset)
    base, _ = resolve_config(method_cls=method_cls, dataset_cls=dataset_cls, preset=preset, seed=run["seed"])
    base.pop("run")
    recorded, current = _leaves(cfg), _leaves(base)
    gone = [k for k in recorded if k not in current]
    if gone:
        raise ConfigError(f"--from-record {path}: its config keys {', '.join(gone)} do not exist in this version; "
                          "the run cannot be repeated as recorded")
    origin = f"--from-record {path}"
    overrides = [_as_override(k, v, origin) for k, v in recorded.items() if current[k] != v]
    return RecordRerun(path, method, dataset, int(run["seed"]), preset, overrides,
                       sorted(k for k in current if k not in recorded and current[k] is not None))
