"""Tolerances of ``bench check``: which way each metric is better, the defaults, and the ``--tol`` syntax.

Default tolerances (:data:`DEFAULT_TOLERANCES`; the allowed move is ``max(abs, rel * |baseline|)``)
=====================  ==========  =====================  ===========================================
metric                 better      tolerance              why
=====================  ==========  =====================  ===========================================
R@1, R@5, R@10         higher      2.0 points             seed-to-seed noise of small test sets
RSum                   higher      5.0 points             sum of three recalls: noise adds up
MdR                    lower       1.0 rank               median rank moves in whole ranks
MnR                    lower       max(1.0, 15 %)         mean rank scales with the gallery size
params_total,          exact       0                      deterministic: any change is a different
params_trainable,                                         model
params_head
flops_text_per_query,  exact       rel 1e-6               deterministic (FlopCounterMode); the
flops_score_per_pair,                                     relative slack only absorbs float printing
flops_per_query,
flops_video_per_video
gallery_size           exact       0                      a different gallery changes every metric
memory_peak_bytes      lower       off                    machine-dependent; enable with ``--tol``
latency_ms             lower       off                    machine-dependent; enable with ``--tol``
=====================  ==========  =====================  ===========================================
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable, Mapping

from tvr_bench.bench.errors import ConfigError
from tvr_bench.bench.records import DIRECTIONS, RANK_METRICS

__all__ = ["Tolerance", "METRIC_DIRECTIONS", "DEFAULT_TOLERANCES", "COST_METRICS", "parse_tolerance_overrides",
           "parse_tolerance_value", "coerce_tolerances"]

HIGHER, LOWER, EQUAL = "higher", "lower", "equal"

COST_METRICS = (
    "params_total",
    "params_trainable",
    "params_head",
    "flops_text_per_query",
    "flops_score_per_pair",
    "flops_per_query",
    "flops_video_per_video",
    "gallery_size",
    "memory_peak_bytes",
    "latency_ms",
)

#: Which way is better, for every metric a tolerance can be given for.
METRIC_DIRECTIONS: dict[str, str] = {
    "R@1": HIGHER,
    "R@5": HIGHER,
    "R@10": HIGHER,
    "RSum": HIGHER,
    "MdR": LOWER,
    "MnR": LOWER,
    **{k: EQUAL for k in COST_METRICS if k.startswith(("params_", "flops_")) or k == "gallery_size"},
    "memory_peak_bytes": LOWER,
    "latency_ms": LOWER,
}


@dataclass(frozen=True)
class Tolerance:
    """Allowed move of one metric: ``max(abs, rel * |baseline|)`` in the bad direction.

    ``direction`` is ``"higher"`` / ``"lower"`` (which way is better) or ``"equal"`` (must not move).
    """

    direction: str
    abs: float = 0.0
    rel: float = 0.0

    def __post_init__(self) -> None:
        if self.direction not in (HIGHER, LOWER, EQUAL):
            raise ConfigError(f"tolerance direction {self.direction!r} not one of higher, lower, equal")
        for name in ("abs", "rel"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"tolerance {name}={v!r} must be a finite number >= 0")

    def allowed(self, baseline: float) -> float:
        return max(float(self.abs), float(self.rel) * abs(float(baseline)))

    def describe(self) -> str:
        parts = []
        if self.abs:
            parts.append(f"{self.abs:g}")
        if self.rel:
            parts.append(f"{self.rel * 100:g}%")
        if not parts:
            return "exact"
        return parts[0] if len(parts) == 1 else f"max({', '.join(parts)})"


#: Defaults; ``None`` = not checked unless enabled by an override. See the module docstring.
DEFAULT_TOLERANCES: dict[str, Tolerance | None] = {
    "R@1": Tolerance(HIGHER, abs=2.0),
    "R@5": Tolerance(HIGHER, abs=2.0),
    "R@10": Tolerance(HIGHER, abs=2.0),
    "RSum": Tolerance(HIGHER, abs=5.0),
    "MdR": Tolerance(LOWER, abs=1.0),
    "MnR": Tolerance(LOWER, abs=1.0, rel=0.15),
    "params_total": Tolerance(EQUAL),
    "params_trainable": Tolerance(EQUAL),
    "params_head": Tolerance(EQUAL),
    "flops_text_per_query": Tolerance(EQUAL, rel=1e-6),
    "flops_score_per_pair": Tolerance(EQUAL, rel=1e-6),
    "flops_per_query": Tolerance(EQUAL, rel=1e-6),
    "flops_video_per_video": Tolerance(EQUAL, rel=1e-6),
    "gallery_size": Tolerance(EQUAL),
    "memory_peak_bytes": None,
    "latency_ms": None,
}

# --------------------------------------------------------------------------------------------------
# tolerance parsing
# --------------------------------------------------------------------------------------------------

_CANON = {k.lower(): k for k in METRIC_DIRECTIONS}


def _canonical_key(key: str) -> str:
    """``"t2v.r@1"`` -> ``"t2v.R@1"``; ConfigError on an unknown metric."""
    raw = str(key).strip()
    prefix, _, name = raw.rpartition(".")
    if prefix and prefix.lower() not in DIRECTIONS:
        raise ConfigError(f"tolerance key {key!r}: unknown direction {prefix!r} (use t2v or v2t)")
    canon = _CANON.get(name.lower())
    if canon is None:
        raise ConfigError(f"tolerance key {key!r}: unknown metric; known: {', '.join(METRIC_DIRECTIONS)}")
    if prefix and canon not in RANK_METRICS:
        raise ConfigError(f"tolerance key {key!r}: only rank metrics take a t2v./v2t. prefix")
    return f"{prefix.lower()}.{canon}" if prefix else canon


def _base_name(key: str) -> str:
    return key.rpartition(".")[2]


def parse_tolerance_value(key: str, value: Any) -> Tolerance | None:
    """Turn a tolerance spec into a :class:`Tolerance` (or ``None`` = off) for metric ``key``.

    Accepted: a :class:`Tolerance`; ``None``; a number (absolute); a string ``"1.5"``, ``"10%"``,
    ``"1+15%"``, ``"exact"``, ``"off"``; a dict with ``abs`` / ``rel`` (and optional ``direction``).
    """
    key = _canonical_key(key)
    direction = METRIC_DIRECTIONS[_base_name(key)]
    if value is None or isinstance(value, Tolerance):
        return value
    if isinstance(value, bool):
        raise ConfigError(f"tolerance {key}: {value!r} is not a tolerance")
    if isinstance(value, (int, float)):
        return Tolerance(direction, abs=float(value))
    if isinstance(value, Mapping):
        unknown = set(value) - {"abs", "rel", "direction"}
        if unknown:
            raise ConfigError(f"tolerance {key}: unknown field(s) {', '.join(sorted(unknown))}")
        try:
            return Tolerance(
                str(value.get("direction", direction)),
                abs=float(value.get("abs", 0.0)),
                rel=float(value.get("rel", 0.0)),
            )
        except (TypeError, ValueError) as e:
            raise ConfigError(f"tolerance {key}: {e}") from e
    if isinstance(value, str):
        s = value.strip().lower()
        if s in ("off", "none", "skip", "ignore"):
            return None
        if s in ("exact", "0"):
            return Tolerance(direction)
        a = r = 0.0
        try:
            for part in s.split("+"):
                part = part.strip()
                if part.endswith("%"):
                    r = float(part[:-1]) / 100.0
                else:
                    a = float(part)
        except ValueError:
            raise ConfigError(
                f"tolerance {key}={value!r}: expected a number (1.5), a percentage (10%), both (1+15%), "
                "'exact' or 'off'"
            ) from None
        return Tolerance(direction, abs=a, rel=r)
    raise ConfigError(f"tolerance {key}: unsupported value {value!r}")


def coerce_tolerances(spec: Mapping[str, Any] | None) -> dict[str, Tolerance | None]:
    """Normalise a ``{metric: spec}`` mapping (see :func:`parse_tolerance_value`)."""
    if spec is None:
        return {}
    if not isinstance(spec, Mapping):
        raise ConfigError(f"tolerances must be an object mapping metric names to tolerances, got {type(spec).__name__}")
    return {_canonical_key(k): parse_tolerance_value(k, v) for k, v in spec.items()}


def parse_tolerance_overrides(items: Iterable[str] | str | None) -> dict[str, Tolerance | None]:
    """Parse ``--tol`` options such as ``["R@1=1.5", "MnR=10%", "t2v.MdR=2", "latency_ms=50%"]``.

    Items may also be comma-separated in one string. Raises :class:`ConfigError` on bad input.
    """
    if items is None:
        return {}
    if isinstance(items, str):
        items = [items]
    out: dict[str, Tolerance | None] = {}
    for item in items:
        for piece in str(item).split(","):
            piece = piece.strip()
            if not piece:
                continue
            key, eq, value = piece.partition("=")
            if not eq or not key.strip() or not value.strip():
                raise ConfigError(f"--tol {piece!r}: expected METRIC=VALUE, e.g. R@1=1.5 or MnR=10%")
            out[_canonical_key(key)] = parse_tolerance_value(key, value)
    return out


def resolve_tolerance(tolerances: Mapping[str, Tolerance | None], direction: str | None, metric: str) -> Tolerance | None:
    if direction is not None and f"{direction}.{metric}" in tolerances:
        return tolerances[f"{direction}.{metric}"]
    return tolerances.get(metric)


# --------------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------------
