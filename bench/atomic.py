"""The one way the harness writes a file: a temp file beside the target, fsync, ``os.replace``.

Readers see the old file or the complete new one, never a partial one; an exception removes the temp file.
A ``kill -9`` cannot run cleanup code, so every temp name carries its writer's pid
(``.<name>.<pid>.<random>.tmp``) and :func:`remove_stale_temps` deletes those of dead writers on the next
run. Written files get the ordinary mode of a new file (``0666 & ~umask``), whatever wrote them: records,
checkpoints, tables and figures all look alike on disk.

``TVR_BENCH_FAILPOINT=<point>[:<n>]`` kills the process (SIGKILL) at the n-th pass (default 1) through a named
point, between writing a temp file and renaming it. The suite uses it to prove that a kill at those instants
is harmless; nothing else sets it.
"""

from __future__ import annotations

import os
import re
import secrets
import signal
from pathlib import Path
from typing import Any, Callable, IO

from tvr_bench.bench.errors import OutputError

__all__ = ["atomic_write", "atomic_write_text", "atomic_write_bytes", "atomic_torch_save", "temp_path",
           "remove_stale_temps", "failpoint", "file_mode"]

_TEMP = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp(?P<suffix>\.[A-Za-z0-9]+)?$")
_FAILPOINT_HITS: dict[str, int] = {}


def file_mode() -> int:
    """The mode ``open()`` gives a new file under the current umask."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def failpoint(name: str) -> None:
    """Die here with SIGKILL when ``TVR_BENCH_FAILPOINT`` names this point (fault injection for tests)."""
    spec = os.environ.get("TVR_BENCH_FAILPOINT")
    if not spec:
        return
    point, _, nth = spec.partition(":")
    if point != name:
        return
    _FAILPOINT_HITS[name] = _FAILPOINT_HITS.get(name, 0) + 1
    if _FAILPOINT_HITS[name] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)


def temp_path(path: Path, suffix: str = "") -> Path:
    """A fresh temp name beside ``path`` owned by this process (``suffix`` keeps e.g. ``.mp4`` for encoders)."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp{suffix}")


def _fsync_dir(folder: Path) -> None:
    try:  # make the rename durable; not possible on every platform / file system
        dfd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def atomic_write(path: str | os.PathLike, write: Callable[[Path], Any], *, suffix: str = "",
                 point: str = "write") -> Path:
    """Call ``write(tmp)`` to fill a temp file beside ``path``, then move it into place atomically.

    ``point`` names the failpoint between the write and the rename (see the module docstring).
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _cannot_write(path, exc) from None
    tmp = temp_path(path, suffix)
    try:
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp, file_mode())
        failpoint(point)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise _cannot_write(path, exc) from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _cannot_write(path: Path, exc: OSError) -> OutputError:
    """One line naming the file the user asked for (not the temp file), and why."""
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            return OutputError(f"cannot write {path}: {parent} is a file, not a folder")
    return OutputError(f"cannot write {path}: {exc.strerror or exc}")


def _write_with(opener: Callable[[Path], IO], fill: Callable[[IO], Any]) -> Callable[[Path], None]:
    def write(tmp: Path) -> None:
        with opener(tmp) as fh:
            fill(fh)
    return write


def atomic_write_text(path: str | os.PathLike, text: str, *, point: str = "write") -> Path:
    """Write ``text`` (UTF-8, ``\\n`` line ends) to ``path`` atomically."""
    return atomic_write(path, _write_with(lambda p: open(p, "x", encoding="utf-8", newline="\n"),
                                          lambda fh: fh.write(text)), point=point)


def atomic_write_bytes(path: str | os.PathLike, data: bytes, *, point: str = "write") -> Path:
    return atomic_write(path, _write_with(lambda p: open(p, "xb"), lambda fh: fh.write(data)), point=point)


def atomic_torch_save(obj: Any, path: str | os.PathLike, *, point: str = "checkpoint_save") -> Path:
    """``torch.save`` through a temp file: a kill mid-save leaves the previous checkpoint intact."""
    import torch

    return atomic_write(path, lambda tmp: torch.save(obj, tmp), point=point)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def remove_stale_temps(folder: str | os.PathLike) -> list[Path]:
    """Delete temp files of :func:`atomic_write` left in ``folder`` by writers that are no longer running.

    A live writer's temp files (this process's, or a concurrent run's) are kept. Returns what was removed.
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in folder.glob(".*.tmp*"):
        m = _TEMP.match(p.name)
        if m is None or not p.is_file() or _pid_alive(int(m.group("pid"))):
            continue
        p.unlink(missing_ok=True)
        removed.append(p)
    return removed
