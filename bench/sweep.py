"""Sweeps: ``--set key=a,b,c`` runs every listed value, and several swept keys run their product (Hydra's
multirun, without its flag: a config value never holds an unquoted top-level comma otherwise).

Each point of the sweep is a normal set of overrides; its runs go to their own folder under ``--out``, named
after the point (``runs/cov/data.synthetic.caption_coverage=0.25/``), so records of different points never
share a file name and a resumed sweep finds each point's records where it left them. A comma inside quotes or
brackets is part of the value (``--set 'data.root="/data/a,b"'``, ``--set 'method.k=[1,2]'``).
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from tvr_bench.bench.errors import ConfigError

_OPEN, _CLOSE = "[{(", "]})"
_UNSAFE = re.compile(r"[^A-Za-z0-9._=+-]")


def split_top_level(raw: str) -> list[str]:
    """``raw`` cut at the commas outside quotes and brackets (one piece when there is none)."""
    parts, depth, quote, start = [], 0, "", 0
    for i, ch in enumerate(raw):
        if quote:
            quote = "" if ch == quote else quote
        elif ch in "\"'":
            quote = ch
        elif ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth = max(depth - 1, 0)
        elif ch == "," and depth == 0:
            parts.append(raw[start:i])
            start = i + 1
    parts.append(raw[start:])
    return parts


@dataclass(frozen=True)
class _Swept:
    key: str


@dataclass(frozen=True)
class SweepPoint:
    """One point of a sweep: the swept (key, value) pairs and the full override list that sets them."""

    settings: tuple[tuple[str, str], ...]
    overrides: tuple

    @property
    def label(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.settings)

    @property
    def folder(self) -> str:
        """A file-system-safe folder name for the point (empty for the one point of a command with no sweep)."""
        return "__".join(_UNSAFE.sub("_", f"{k}={v}") for k, v in self.settings)

    def out_dir(self, out: Path) -> Path:
        return out / self.folder if self.settings else out


def expand(overrides: Sequence) -> list[SweepPoint]:
    """The sweep points of ``overrides`` (each ``"key=value"`` from --set, or ``(text, origin)`` from a file or a
    record, which are never swept), in command-line order: the product of every swept key's values."""
    swept: dict[str, list[str]] = {}
    slots: list = []  # each override's place: a fixed item, or a _Swept(key) to fill in per point
    for item in overrides:
        if not isinstance(item, str) or "=" not in item:
            slots.append(item)
            continue
        key, raw = item.split("=", 1)
        values = split_top_level(raw)
        if len(values) == 1:
            slots.append(item)
            continue
        key = key.strip()
        empty = [i for i, v in enumerate(values) if not v.strip()]
        if empty:
            raise ConfigError(f"--set {item}: empty value in the sweep list (a leading, trailing or doubled comma)")
        stripped = [v.strip() for v in values]
        if len(set(stripped)) != len(stripped):
            raise ConfigError(f"--set {item}: a value is listed twice")
        if key in swept:
            raise ConfigError(f"--set {key}: swept twice; give all its values in one --set")
        swept[key] = stripped
        slots.append(_Swept(key))
    if not swept:
        return [SweepPoint((), tuple(overrides))]
    points = []
    keys = list(swept)
    for combo in itertools.product(*(swept[k] for k in keys)):
        chosen = dict(zip(keys, combo))
        items = tuple(f"{s.key}={chosen[s.key]}" if isinstance(s, _Swept) else s for s in slots)
        points.append(SweepPoint(tuple(chosen.items()), items))
    folders = [p.folder for p in points]
    if len(set(folders)) != len(folders):
        raise ConfigError("sweep values that differ only in characters a folder name cannot hold: "
                          + ", ".join(sorted({f for f in folders if folders.count(f) > 1})))
    return points
