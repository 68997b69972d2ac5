"""Byte sizes as users write them ('2GB', '512MiB', 1234) for the memory budgets of the config."""

from __future__ import annotations

from tvr_bench.bench.errors import ConfigError

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30}


def parse_bytes(value, key: str = "eval.memory_budget") -> int:
    """A byte count from an int or a string such as '2GB', '512MiB', '1.5 GiB' (units case-insensitive);
    a bad value is a ConfigError naming ``key``."""
    usage = f"{key} must be bytes or a size like '2GB', got {value!r}"
    if isinstance(value, bool):
        raise ConfigError(usage)
    if isinstance(value, (int, float)):
        n = value
    elif isinstance(value, str):
        text = value.strip().upper().replace(" ", "")
        digits = text.rstrip("KMGIB")
        unit = text[len(digits):]
        if unit not in _UNITS:
            raise ConfigError(f"{key}: unknown unit in {value!r} (use B, KB, MB, GB, KiB, MiB, GiB)")
        try:
            n = float(digits) * _UNITS[unit]
        except ValueError:
            raise ConfigError(usage) from None
    else:
        raise ConfigError(usage)
    if not n >= 1:
        raise ConfigError(f"{key} must be positive, got {value!r}")
    return int(n)
