"""Build a cache folder once, atomically, whoever asks at the same time, whatever was killed before.

``materialise(target, is_complete, build)`` returns ``target`` when ``is_complete(target)``; otherwise it
builds it: under an exclusive lock file beside it, ``build(tmp)`` fills a fresh temp folder that is then
renamed into place. Concurrent processes wait on the lock instead of duplicating the work, readers never see
a half-built folder, and because only the lock holder builds, any temp or stale folder found while holding
it is what a killed build left behind (it is removed before building: up to a whole benchmark of videos).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Callable, Iterator

__all__ = ["materialise", "file_lock"]


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Exclusive advisory lock (POSIX ``flock``, released by the kernel when its holder dies); a no-op where
    ``fcntl`` is unavailable (the temp-folder-and-rename still keeps concurrent builds from corrupting each
    other)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX
        yield
        return
    with open(path, "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def materialise(target: str | os.PathLike, is_complete: Callable[[Path], bool],
                build: Callable[[Path], object]) -> Path:
    target = Path(target)
    if is_complete(target):
        return target
    parent, name = target.parent, target.name
    parent.mkdir(parents=True, exist_ok=True)
    with file_lock(parent / f".{name}.lock"):
        if is_complete(target):
            return target
        for litter in [*parent.glob(f".{name}.tmp-*"), *parent.glob(f".{name}.stale-*")]:
            shutil.rmtree(litter, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent))
        try:
            build(tmp)
            if target.exists():  # incomplete or stale: move it aside, then drop it
                stale = parent / f".{name}.stale-{uuid.uuid4().hex[:8]}"
                os.rename(target, stale)
                shutil.rmtree(stale, ignore_errors=True)
            try:
                os.rename(tmp, target)
            except OSError:
                if not is_complete(target):  # another process (without working locks) got there first
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return target
