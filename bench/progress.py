"""Progress bars with ETA for the long phases (training steps, gallery encoding, query scoring).

tqdm decides by itself (``disable=None``): bars on a terminal, none in logs, pipes and tests. ``--quiet`` turns
them off everywhere through ``set_enabled(False)``.
"""

from __future__ import annotations

from tqdm.auto import tqdm

_enabled: bool | None = None  # None: tqdm's rule (only on a terminal); True: always (tests); False: never


def set_enabled(enabled: bool | None) -> None:
    global _enabled
    _enabled = enabled


def bar(total: int, desc: str, unit: str, *, show: bool = True) -> tqdm:
    """``show=False``: never (e.g. torchrun ranks other than 0)."""
    return tqdm(total=total, desc=desc, unit=unit, leave=False, dynamic_ncols=True,
                disable=True if not show else (None if _enabled is None else not _enabled))
